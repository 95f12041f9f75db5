# The two commands of the README: `make run` and `make test`. Each sets itself up.
PYTHON ?= python3
VENV   ?= .venv
BENCH_VENV ?= .venv-bench
BIN    := $(VENV)/bin
CONFIG ?= examples/catsdogs/autotune.yml
ANSIBLE_ARGS ?=
RUN_DIR ?= runs/catsdogs
DASHBOARD_PORT ?= 8080
TENSORBOARD_PORT ?= 6006
# The run folder `make tensorboard` serves: the one whose trials/ changed last under runs/, unless RUN names one.
RUN ?= $(patsubst %/trials,%,$(firstword $(shell ls -dt runs/*/trials 2>/dev/null)))

.PHONY: run test test-unit test-integration test-molecule venv lint sample-data bench bench-peers bench-fleet clean dashboard dashboard-service tensorboard ee

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

# Watch the sample study (after `make run`, or while it runs) at http://127.0.0.1:8080 ; Ctrl-C stops it.
# Read-only, as the role serves it: other users of this host reach the port too (docs/dashboard.md).
dashboard: venv
	@test -f $(RUN_DIR)/study.db || { echo "no study in $(RUN_DIR)/study.db yet: start 'make run' first" >&2; exit 1; }
	$(BIN)/python roles/dashboard/files/autotune_dashboard.py --host 127.0.0.1 --port $(DASHBOARD_PORT) --storage sqlite:///$(abspath $(RUN_DIR))/study.db

# The same as a service that outlives the shell (roles/dashboard; as root: it writes /etc and /var/log).
dashboard-service: venv
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/ansible-playbook playbooks/dashboard.yml -e dashboard_port=$(DASHBOARD_PORT) -e dashboard_run_dir=$(abspath $(RUN_DIR)) $(ANSIBLE_ARGS)

# Every trial's TensorBoard event files (per-epoch scalars; hyperparameters in the HParams tab) at http://127.0.0.1:6006 ;
# Ctrl-C stops it. RUN=runs/NAME picks a run folder (default: the latest). The files are written by the trials' code:
# TensorBoard only displays them, on loopback (docs/tensorboard.md).
tensorboard: venv
	@test -n "$(RUN)" && test -d "$(RUN)/trials" || { echo "no trials in $(or $(RUN),runs/): start 'make run' first, or name a run folder with RUN=runs/NAME" >&2; exit 1; }
	$(BIN)/tensorboard --logdir "$(abspath $(RUN))/trials" --host 127.0.0.1 --port $(TENSORBOARD_PORT)

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

# The execution environment AWX runs the job templates in (execution-environment.yml, docs/awx.md), built by
# ansible-builder from the local base image autotune-base:bookworm that playbooks/trainer_host.yml builds; pip in the
# build trusts EE_CA_BUNDLE, as the trainer images trust trainer_image_ca_bundle.
EE_IMAGE ?= autotune-ee:latest
EE_BASE ?= autotune-base:bookworm
EE_CA_BUNDLE ?= /etc/ssl/certs/ca-certificates.crt
EE_RUNTIME ?= docker
ee: venv
	@$(EE_RUNTIME) image inspect $(EE_BASE) >/dev/null 2>&1 || { echo "no $(EE_BASE) on $(EE_RUNTIME): build it first with playbooks/trainer_host.yml" >&2; exit 1; }
	install -d build/ee
	install -m 0644 $(EE_CA_BUNDLE) build/ee/ca-bundle.crt
	$(BIN)/ansible-builder build --file execution-environment.yml --context build/ee/context \
		--container-runtime $(EE_RUNTIME) --build-arg EE_BASE_IMAGE=$(EE_BASE) --tag $(EE_IMAGE) --verbosity 2

lint: venv
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/ansible-lint --profile production

# Time to the goal against Keras Tuner and plain Optuna, side by side (docs/measurements.md); an idle machine.
# The peers' own packages (Keras Tuner, scipy, scikit-learn, tensorboard) live in a venv of their own that
# sees the product's packages through a .pth file: installed into .venv they would slow our trainers
# (Keras imports scipy when it is there) and the measurement would not be of the product as shipped.
$(BENCH_VENV)/.installed: requirements-bench.txt $(BIN)/.installed
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' > "$$($(BENCH_VENV)/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/autotune-product.pth"
	$(BENCH_VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-bench.txt
	touch $@

bench-peers: venv data/catsdogs $(BENCH_VENV)/.installed
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python bench/peers.py --peer-python $(BENCH_VENV)/bin/python $(BENCH_ARGS)

# The fleet's figures (docs/measurements.md): needs root, Docker with the worker image and PostgreSQL (.ci/run's set-up).
bench-fleet: venv data/catsdogs
	PATH="$(abspath $(BIN)):$$PATH" AUTOTUNE_TEST_PG_URL_FILE=$${AUTOTUNE_TEST_PG_URL_FILE:-$$HOME/.autotune-ci/pg.url} \
		$(BIN)/python bench/fleet_bench.py $(BENCH_ARGS)

bench: venv data/catsdogs
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python bench/tune_bench.py $(BENCH_ARGS)

clean:
	rm -rf runs
