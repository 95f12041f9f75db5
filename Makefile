# The two commands of the README: `make run` and `make test`. Each sets itself up.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CONFIG ?= examples/catsdogs/autotune.yml
ANSIBLE_ARGS ?=

.PHONY: run test test-unit test-integration test-molecule venv lint sample-data bench clean

$(BIN)/.installed: requirements.txt requirements-test.txt requirements-sample.txt trainer/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-test.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -r requirements-sample.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e trainer
	touch $@

venv: $(BIN)/.installed

data/catsdogs: | venv
	$(BIN)/python tools/make_sample_data.py $@

sample-data: data/catsdogs

# Tune the sample model until it reaches its goal; progress lines stream from the run's progress.log.
run: venv data/catsdogs
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/ansible-playbook playbooks/tune.yml -e autotune_config=$(abspath $(CONFIG)) $(ANSIBLE_ARGS)

test: venv data/catsdogs
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest tests $(PYTEST_ARGS)

# Our own logic against an in-memory runner: no training, no engine; under a minute.
test-unit: venv
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

# Real training, Docker, SMTP, git and the roles (CI=true turns a missing engine into a failure).
test-integration: venv data/catsdogs
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest tests/integration $(PYTEST_ARGS)

# The roles' molecule scenarios in a local systemd image (about 5 minutes; not part of `make test`).
test-molecule: venv
	AUTOTUNE_MOLECULE=1 PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest tests/integration/test_molecule.py $(PYTEST_ARGS)

lint: venv
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/ansible-lint --profile production

bench: venv data/catsdogs
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python bench/tune_bench.py $(BENCH_ARGS)

clean:
	rm -rf runs
