"""Issue 20, item 4: caps the operator sets and pushed code cannot lift (no training, no engine).

Hyperparameter names registered at run time, the operator's autotune_limits over a pushed budget, a container's
default memory, template rendering and script rewriting bounded in time and memory, the trial folder's size.
"""
import os
import re
import subprocess
import sys
import textwrap
import time

import pytest

from ansible.module_utils.autotune import space as search_space
from ansible.module_utils.autotune.errors import AutotuneError
from ansible.module_utils.autotune.storage import default_storage
from ansible.module_utils.autotune.study import StudyLoop
from conftest import REPO, TEMPLATES
from fakes import FakeRunner
from test_study_loop import _setup

MANY = 5000  # about 0.6 MB of hyperparameters_seen.json: under the 1 MiB cap on the file (trialdir), so the name cap is what holds


def _many_names(params):
    return {f"units_{i}": {"spec": {"type": "int", "low": 8, "high": 64}, "default": 8} for i in range(MANY)}


def test_twenty_thousand_names_built_at_run_time_register_at_most_a_hundred(tmp_path):
    config, plan, run_dir = _setup(tmp_path, search={"strategy": "random"}, budget={"max_trials": 3},
                                   target={"goal": 0.99})
    lines = []
    loop = StudyLoop(config, plan, {"path": "unused"}, FakeRunner(lambda params: [0.6], seen=_many_names), run_dir,
                     default_storage(run_dir), lines.append)
    started = time.time()
    study, _, new = loop.run()
    assert new == 3
    registered = [name for name in plan["space"] if name.startswith("units_")]
    assert len(registered) == search_space.MAX_REGISTERED, "a hundred in all, over every trial"
    assert len(study.trials[2].params) <= search_space.MAX_REGISTERED + 1
    assert max(len(line) for line in lines) < 2000, "no 500 KB lines"
    assert any(f"{MANY - 100} more names: at most 100 hyperparameters may be registered at run time" in line
               for line in lines)
    assert time.time() - started < 30


def test_a_name_that_is_not_a_printable_identifier_is_refused_and_shown_escaped():
    seen = {"\x1b]0;pwned\x07\r\nBcc: x": {"spec": {"type": "bool"}, "default": False},
            "ok_name": {"spec": {"type": "bool"}, "default": False}}
    space, _, lines = search_space.registered(seen, {})
    assert list(space) == ["ok_name"]
    assert len(lines) == 1 and "not a printable identifier" in lines[0]
    assert all(ch.isprintable() for ch in lines[0])


def test_a_containers_default_memory_is_never_the_whole_host():
    from ansible.module_utils.autotune.runners.docker import GIB, default_memory
    assert default_memory(1, host=24 * GIB) == 21 * GIB, "one slot: the host less an eighth for the controller"
    assert default_memory(2, host=24 * GIB) == 21 * GIB // 2
    assert default_memory(1, host=4 * GIB) == 3 * GIB, "at least 1 GiB left to the controller"
    assert default_memory(1, host=GIB) == GIB // 2, "at most half of a tiny host kept back"
    assert default_memory(1) < os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


HOSTILE_TEMPLATES = {
    "loops": "{% for a in range(100000) %}{% for b in range(100000) %}{% for c in range(100000) %}"
             "{% endfor %}{% endfor %}{% endfor %}import keras\n",
    "big_string": "{% set s = 'A' * 2**31 %}import keras\n# {{ s|length }}\n",
}


@pytest.mark.parametrize("name", sorted(HOSTILE_TEMPLATES))
def test_a_template_that_loops_for_ever_or_builds_gigabytes_is_one_line(tmp_path, name, monkeypatch):
    from ansible.module_utils.autotune import bounded
    from ansible.module_utils.autotune.kinds import template as template_kind
    monkeypatch.setattr(bounded, "CPU_SECONDS", 1)  # the default (5 s) is proved the same way, only slower
    path = tmp_path / "evil.py.j2"
    path.write_text(HOSTILE_TEMPLATES[name])
    started = time.time()
    with pytest.raises(AutotuneError) as caught:
        template_kind.render(str(path), {"blocks": 1})
    seconds = time.time() - started
    message = str(caught.value)
    assert "\n" not in message and message.startswith("model.template: rendering evil.py.j2 ")
    if name == "loops":
        assert f"took over {bounded.CPU_SECONDS} s of CPU" in message
        assert seconds < bounded.WALL_SECONDS + 2
    else:
        assert f"needed more than {bounded.MEMORY_MIB} MiB" in message
        assert seconds < 5


def test_a_bounded_render_costs_milliseconds(tmp_path):
    """The fork is paid once per trial (its code) and once at the Detect step: measured here, kept small."""
    from ansible.module_utils.autotune.kinds import template as template_kind
    path = str(TEMPLATES / "cnn.py.j2")
    meta = template_kind.template_meta(path)
    hp = {n: spec["default"] for n, spec in meta["hyperparameters"].items()}
    template_kind._render(path, hp, 0)  # pylint: disable=protected-access  # warm Jinja2's own caches first
    started = time.perf_counter()
    for _ in range(10):
        template_kind.render(path, hp, 0)
    per_render = (time.perf_counter() - started) / 10
    assert per_render < 0.5, f"{per_render * 1000:.0f} ms per bounded render"


def test_a_script_asked_for_twenty_thousand_blocks_is_refused_before_any_rewrite(tmp_path, sample_data):
    from ansible.module_utils.autotune import config as tune_config
    from ansible.module_utils.autotune import modelcode, scriptcode
    script = REPO / "examples" / "catsdogs_script" / "train.py"
    for model, line in (
            ({"file": str(script), "baseline": {"crp_blocks": 20000}},
             f"model.baseline.crp_blocks: 20000 is invalid; expected at most {scriptcode.MAX_CRP_BLOCKS} blocks"),
            ({"file": str(script)}, "search.space.crp_blocks: high 20000 is invalid"),
    ):
        document = {"dataset": {"path": str(sample_data)}, "model": model}
        if "baseline" not in model:
            document["search"] = {"space": {"crp_blocks": {"type": "int", "low": 1, "high": 20000}}}
        config = tune_config.validate(document, base_dir=str(tmp_path))
        with pytest.raises(AutotuneError) as caught:
            modelcode.plan(config, str(TEMPLATES))
        assert any(detail.startswith(line) for detail in caught.value.details), caught.value.details


def _bounded_in_a_fresh_process(code):
    """The one line ``code`` raised, run in a fresh interpreter, as Ansible runs a module. bounded.py bounds the address
    space a child adds to its parent's; the free heap a long pytest session leaves behind is room the child takes
    without growing it, so a memory bound checked in-process passes or fails with the tests run before it."""
    prelude = ("import ansible.module_utils\n"
               f"ansible.module_utils.__path__.append({str(REPO / 'module_utils')!r})\n"
               "from ansible.module_utils.autotune import bounded, modelcode, scriptcode\n"
               "from ansible.module_utils.autotune import config as tune_config\n"
               "from ansible.module_utils.autotune.errors import AutotuneError\n"
               "try:\n" + textwrap.indent(textwrap.dedent(code), "    ") +
               "except AutotuneError as exc:\n    print(str(exc).splitlines()[0])\nelse:\n    print('no error')\n")
    ran = subprocess.run([sys.executable, "-c", prelude], capture_output=True, text=True, timeout=120, check=False)
    assert ran.returncode == 0, ran.stderr[-2000:]
    return ran.stdout.strip()


def test_rewriting_a_script_is_bounded_too():
    line = _bounded_in_a_fresh_process(f"""
        source = open({str(REPO / "examples" / "catsdogs_script" / "train.py")!r}).read()
        found = scriptcode.read(source, "train.py")
        plan = {{"api": "script", "file": "train.py", "source": source, "committed": found["baseline"],
                "block_sequence": found["block_sequence"]}}
        assert "added by autotune" in modelcode.code_for(plan, dict(found["baseline"], crp_blocks=4), 1)
        bounded.MEMORY_MIB = 16
        modelcode.code_for(plan, dict(found["baseline"], crp_blocks=2000), 2)
    """)
    assert re.match(r"model.file: rewriting train.py for trial 2 needed more than 16 MiB", line), line


class _Writer(FakeRunner):
    """Each trial 'writes' ``size`` bytes into its folder, then runs until stopped."""

    def __init__(self, size):
        super().__init__(lambda params: "hang")
        self.size = size

    def start(self, trial_dir, data_path, labels):
        with open(f"{trial_dir}/junk.bin", "wb") as handle:
            handle.write(os.urandom(self.size))
        return super().start(trial_dir, data_path, labels)


def _capped_loop(tmp_path, size, runner_caps):
    config, plan, run_dir = _setup(tmp_path, budget={"max_trials": 2, "trial_timeout": 60, "max_consecutive_failures": 5},
                                   target={"goal": 0.99})
    config["runner"].update(runner_caps)
    lines = []
    loop = StudyLoop(config, plan, {"path": "unused"}, _Writer(size), run_dir, default_storage(run_dir), lines.append)
    started = time.time()
    study, reason, _ = loop.run()
    return study, reason, lines, time.time() - started


def test_a_trial_whose_folder_passes_max_trial_bytes_is_stopped_too_big(tmp_path):
    study, reason, _, seconds = _capped_loop(tmp_path, 3 * 2**20, {"max_trial_bytes": 2**20})
    assert seconds < 20, "stopped at once, not at its 60 s timeout"
    assert [t.user_attrs["outcome"] for t in study.trials] == ["too_big", "too_big"]
    assert study.trials[0].user_attrs["reason"].startswith(
        "its folder passed 1.0 MiB (runner.max_trial_bytes): stopped with more than")
    assert reason == "trial budget spent (2 trials)", "the study goes on after a trial that was too big"


def test_a_run_folder_disk_under_its_floor_stops_the_study_in_one_line(tmp_path):
    study, reason, lines, _ = _capped_loop(tmp_path, 1024, {"min_free_bytes": 2**62})
    assert reason.startswith("the run folder's disk has ") and "under runner.min_free_bytes" in reason
    assert reason.endswith(f"stopped; the finished trials, their folders and the study are kept in {tmp_path / 'run'}")
    assert len(study.trials) == 0, "no trial started on a full disk"


def test_measuring_a_trial_folder_costs_little(tmp_path):
    from ansible.module_utils.autotune import trialcaps
    for i in range(200):  # more files than a Keras trial's folder holds (model, checkpoint, logs)
        (tmp_path / f"f{i}").write_bytes(b"x" * 4096)
    started = time.perf_counter()
    for _ in range(20):
        used, entries = trialcaps.folder_usage(str(tmp_path))
    per_walk = (time.perf_counter() - started) / 20
    assert entries == 200 and used >= 200 * 4096
    assert per_walk < 0.05, f"{per_walk * 1000:.1f} ms per walk"


def test_a_model_file_of_many_megabytes_is_refused_before_it_is_parsed(tmp_path, sample_data):
    """Parsing this 2.3 MB file took the controller 11 s (ast) and 113 s with 3.6 GB at its peak (libcst)."""
    from ansible.module_utils.autotune import config as tune_config
    from ansible.module_utils.autotune import modelcode
    big = tmp_path / "train.py"
    big.write_text("import keras\n" + "x = 1\n" * 400000)
    config = tune_config.validate({"dataset": {"path": str(sample_data)}, "model": {"file": str(big)}},
                                  base_dir=str(tmp_path))
    started = time.time()
    with pytest.raises(AutotuneError, match=r"^model.file: .* holds 2343 KiB; expected a Python file under 256 KiB"):
        modelcode.plan(config, str(TEMPLATES))
    assert time.time() - started < 1


def test_reading_a_script_is_bounded(tmp_path, sample_data):
    script = tmp_path / "train.py"
    script.write_text((REPO / "examples" / "catsdogs_script" / "train.py").read_text() + "PAD = [1, 2, 3]\n" * 2000)
    line = _bounded_in_a_fresh_process(f"""
        config = tune_config.validate({{"dataset": {{"path": {str(sample_data)!r}}}, "model": {{"file": {str(script)!r}}}}},
                                      base_dir={str(tmp_path)!r})
        bounded.MEMORY_MIB = 1
        modelcode.plan(config, {str(TEMPLATES)!r})
    """)
    assert re.match(r"model.file: reading train.py needed more than 1 MiB", line), line


def test_a_template_that_prints_megabytes_of_code_is_one_line(tmp_path):
    from ansible.module_utils.autotune.kinds import template as template_kind
    path = tmp_path / "wordy.py.j2"
    path.write_text("import keras\n# {{ 'x' * 1800000 }}\n")  # a comment: compiled at once, but 1.8 MB
    with pytest.raises(AutotuneError, match=r"^model.template: rendering wordy.py.j2 produced 1757 KiB of code, "
                                            r"more than 1024 KiB; expected"):
        template_kind.render(str(path), {})
