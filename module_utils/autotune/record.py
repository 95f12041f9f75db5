"""Each trial's record: what a re-run needs (playbooks/reproduce.yml, reproduce.py), written by the controller.

``run_dir/records/NNNN.json`` is written when the trial ends (StudyLoop.after_trial), beside ``code/NNNN.py`` and
outside the trial's folder, which the code under test may rewrite: the spec the controller gave the trainer (seed,
op determinism, parameters), the code's sha256, the data set's configuration with both its fingerprints (the
images' names, sizes and times, and the packed bytes), the runner's configuration, the trainer's environment (its
packages as a lock, the image's ID), the model folder's commit, and the epochs the controller read as the trial
ran. The trainer's environment comes from ``autotune_trainer.lock`` run where trials run, before any trial code;
the epoch values are what the trial reported (claims, compared with a re-run's, never trusted further).
"""
import concurrent.futures
import hashlib
import os
import subprocess
import time

from ansible.module_utils.autotune import trialdir, trialrun
from ansible.module_utils.autotune.dataset import pack_fingerprint
from ansible.module_utils.autotune.errors import AutotuneError

RECORDS = "records"
FORMAT = 1


def record_path(run_dir, number):
    return os.path.join(run_dir, RECORDS, f"{int(number):04d}.json")


def file_sha256(path):
    """sha256 of a regular file (never through a link)."""
    digest = hashlib.sha256()
    with trialdir.open_regular(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def commit_of(folder):
    """The git commit the model's folder is checked out at, or None outside a repository. ``rev-parse`` only: it
    runs no hook and no configured command of the repository (a pushed one)."""
    try:
        done = subprocess.run(["git", "-C", folder, "rev-parse", "--verify", "-q", "HEAD"],  # noqa: S603,S607
                              capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    line = done.stdout.strip()
    return line if done.returncode == 0 and len(line) in (40, 64) else None


def _environment_and_pack(runner, pack):
    """(the trainer's environment or {error}, the pack's fingerprint): asked once per run, beside trial 0."""
    try:
        environment = runner.environment()
    except AutotuneError as exc:
        environment = {"error": str(exc)[:500]}
    try:
        return environment, pack_fingerprint(pack)
    except (AutotuneError, OSError):
        return environment, None  # a re-run then refuses: nothing to compare the data with


class Recorder:
    """StudyLoop.after_trial: writes each ended trial's record. The trainer's environment and the pack's bytes are
    read once, in a thread started here, while trial 0 trains."""

    def __init__(self, config, plan, dataset, runner, run_dir):
        self.config, self.plan, self.run_dir = config, plan, run_dir
        self.common = {
            "format": FORMAT, "study": config["study"], "dataset": config["dataset"],
            "runner": config["runner"], "trial_timeout": config["budget"]["trial_timeout"],
            "framework": plan["facts"]["framework"], "read_only_paths": list(plan.get("read_only_paths", ())),
            "commit": commit_of(config["base_dir"]) if config.get("base_dir") else None,
        }
        self.data_fingerprint = dataset["fingerprint"]
        pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="autotune-record")
        self.facts = pool.submit(_environment_and_pack, runner, dataset["path"])
        pool.shutdown(wait=False)  # the thread ends when its one job does

    def __call__(self, trial, trial_dir, attrs):
        environment, pack = self.facts.result()
        user = trial.user_attrs
        params = user.get("params") or trial.params
        code = user.get("code")
        record = dict(self.common, number=trial.number, recorded=round(time.time(), 3),
                      trial_dir=os.path.relpath(trial_dir, self.run_dir),
                      spec=trialrun.spec_for(self.plan, self.config, trial.number, params, user.get("stop_goal")),
                      code=code, code_sha256=file_sha256(os.path.join(self.run_dir, code)) if code else None,
                      data={"fingerprint": self.data_fingerprint, "pack": pack}, environment=environment,
                      outcome=attrs.get("outcome"), epochs=attrs.get("epochs", []),
                      resumed_from_epoch=attrs.get("resumed_from_epoch"), resumed=bool(user.get("resumed")),
                      continues=user.get("continues"))
        os.makedirs(os.path.join(self.run_dir, RECORDS), exist_ok=True)
        trialdir.write_json(record_path(self.run_dir, trial.number), record)
