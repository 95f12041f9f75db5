"""Runners: how a trial's trainer is started, one file per kind (base.py says what a runner is).

Adding a kind: a new file with a Runner subclass (its name, its configuration
block's schema and defaults, start()) and a TrialProcess subclass, plus one line
in RUNNERS below. The configuration schema, model_facts and the study loop pick
it up from here.
"""
from ansible.module_utils.autotune.errors import AutotuneError
from ansible.module_utils.autotune.runners.docker import DockerRunner
from ansible.module_utils.autotune.runners.local import LocalRunner

RUNNERS = {runner.name: runner for runner in (LocalRunner, DockerRunner)}


def runner_class(kind):
    try:
        return RUNNERS[kind]
    except KeyError:
        raise AutotuneError(f"runner.kind: {kind!r} is unknown; expected one of {', '.join(RUNNERS)}")


def runner_facts(runner_config, framework):
    """Where trials will run, checked before anything starts (model_facts shows it)."""
    kind = runner_config["kind"]
    return dict(runner_class(kind).facts(runner_config.get(kind, {}), framework), kind=kind)


def make_runner(runner_config, framework, trainer_path=None, read_only_paths=()):
    """The configured runner; ``read_only_paths`` are host folders a trial must read (a script's folder, its data)."""
    kind = runner_config["kind"]
    runner = runner_class(kind).from_config(runner_config.get(kind, {}), framework, trainer_path,
                                            slots=runner_config.get("slots") or 1)
    runner.read_only_paths = list(read_only_paths)
    return runner
