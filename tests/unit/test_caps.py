"""Issue 20, item 4: caps the operator sets and pushed code cannot lift (no training, no engine).

Hyperparameter names registered at run time, the operator's autotune_limits over a pushed budget, a container's
default memory, template rendering and script rewriting bounded in time and memory, the trial folder's size.
"""
import os
import time

from ansible.module_utils.autotune import space as search_space
from ansible.module_utils.autotune.storage import default_storage
from ansible.module_utils.autotune.study import StudyLoop
from fakes import FakeRunner
from test_study_loop import _setup

MANY = 20000


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
