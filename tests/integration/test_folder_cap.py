"""Issue 20, item 4, in a real container: a trial that fills its folder is stopped too_big, and a container's
default memory is its slot's share of the host less the controller's reserve (never the whole host)."""
import os
import threading

from ansible.module_utils.autotune.runners.docker import default_memory
from ansible.module_utils.autotune.trialcaps import folder_usage
from ansible.module_utils.autotune.tune import prepare, run
from conftest import REPO, TEMPLATES, write_config

FILLER = REPO / "tests" / "fixtures" / "big_folder_model.py"
CAP = 8 * 2 ** 20


def _memory_of_trial_containers(client, study, seen, done):
    while not done.is_set():
        for container in client.containers.list(filters={"label": [f"io.autotune.study={study}",
                                                                    "io.autotune.task=train"]}):
            seen.add(container.attrs["HostConfig"]["Memory"])
        done.wait(0.3)


def test_a_trial_that_fills_its_folder_is_stopped_too_big(docker_engine, tmp_path, sample_data):
    config_path = write_config(
        tmp_path, model={"file": str(FILLER)}, study="filler",
        search={"strategy": "random", "space": {"megabytes": {"type": "categorical", "choices": [64]}}},
        budget={"max_trials": 1, "trial_timeout": 60}, target={"goal": 0.99},
        runner={"kind": "docker", "max_trial_bytes": CAP, "docker": {"cpus": 1, "warm": False}})
    config, plan, run_dir, storage = prepare(str(config_path), str(TEMPLATES), runs_root=str(tmp_path / "runs"))
    seen, done = set(), threading.Event()
    watcher = threading.Thread(target=_memory_of_trial_containers, args=(docker_engine, "filler", seen, done))
    watcher.start()
    try:
        summary = run(config, plan, run_dir, storage, trainer_path=str(REPO / "trainer"))
    finally:
        done.set()
        watcher.join()
    trial = summary["trials"][0]
    assert trial["outcome"] == "too_big", trial
    assert trial["reason"].startswith("its folder passed 8.0 MiB (runner.max_trial_bytes): stopped with more than")
    assert trial["seconds"] < 40, "stopped when it passed the cap, not at its timeout"
    used, _ = folder_usage(os.path.join(run_dir, "trials", "0000"))
    assert used < 64 * 2 ** 20, "stopped before it wrote all it meant to"
    assert seen == {default_memory(1)}, "no runner.docker.memory: the slot's share less the controller's reserve"
    assert default_memory(1) < os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
