"""How the health check brings a dead training container back.

A cold container (labelled with its trial folder) is started again: its bind mount is the trial's
folder. A warm spare handed a trial is not: ``docker start`` re-resolves its bind mount, made on the
spare folder (``trials/.spare-SLOT-ID``) that the controller renamed to the trial's when it handed
the trial over, so the restarted spare would wait on an empty folder. It is replaced by a fresh
container on the trial's folder running the cold trainer, which resumes from the checkpoint; the
dead spare's log is kept in the trial folder and the spare removed, so no later pass acts on it again.
The controller's DockerProcess adopts the replacement (runners/docker.py).
"""
import os
import time

from ansible.module_utils.autotune import trialdir
from ansible.module_utils.autotune.errors import AutotuneError
from ansible.module_utils.autotune.runners import spares
from ansible.module_utils.autotune.runners.docker import (
    ENGINE_ERRORS, LABEL_PREFIX, TRIAL_LABEL, TRIAL_MOUNT, container_name)

_LAUNCH_TIME = "AUTOTUNE_LAUNCH_TIME="


def relaunch(client, container, trial_dir):
    """Bring the container's trial back; the replacement's name, or None when the container itself was started."""
    if not spares.SPARE_NAME.match(container.labels.get(TRIAL_LABEL, "")):
        container.start()
        return None
    return replace(client, container, trial_dir)


def replace(client, container, trial_dir):
    """Start the replacement first (the controller looks for it once the spare is gone), then remove the spare."""
    options = replacement_options(container.attrs, trial_dir)
    # The low-level API takes the HostConfig as the engine reported it: every limit and security option
    # carries over as it is, where containers.run would need each one translated back into its keyword.
    created = client.api.create_container(use_config_proxy=False, **options)
    try:
        client.api.start(created["Id"])
    except ENGINE_ERRORS:
        client.api.remove_container(created["Id"], force=True)
        raise
    keep_log(container, trial_dir)
    container.remove(force=True)
    return options["name"]


def replacement_options(attrs, trial_dir):
    """create_container() arguments for a dead spare's trial: its Config and HostConfig, on the trial folder."""
    config, folder = attrs.get("Config") or {}, os.path.basename(trial_dir)
    labels = dict(config.get("Labels") or {}, **{TRIAL_LABEL: folder})
    # The spare's launch time is from before its trial existed: the trainer measures start-up from this one.
    env = [e for e in config.get("Env") or [] if not e.startswith(_LAUNCH_TIME)] + [f"{_LAUNCH_TIME}{time.time()!r}"]
    return {"image": attrs["Image"], "command": cold_command(config.get("Cmd") or []), "user": config.get("User"),
            "working_dir": config.get("WorkingDir"), "environment": env, "labels": labels,
            "name": container_name(labels.get(f"{LABEL_PREFIX}.study", ""), folder),
            "host_config": dict(attrs.get("HostConfig") or {}, Binds=_trial_binds(attrs, trial_dir))}


def cold_command(warm_command):
    """The cold trainer on /trial, given the data set the warm one was (under the spare's pack folder mount)."""
    if "--data" not in warm_command[:-1]:
        raise AutotuneError(f"relaunch: the spare's command {warm_command!r} names no --data; expected autotune_trainer.warm's")
    data = warm_command[warm_command.index("--data") + 1]
    return ["python", "-m", "autotune_trainer", TRIAL_MOUNT, "--data", data]


def _trial_binds(attrs, trial_dir):
    """The spare's binds with its spare folder's mount on /trial made the trial folder's (same mode)."""
    binds = list((attrs.get("HostConfig") or {}).get("Binds") or [])
    at = [i for i, bind in enumerate(binds) if bind.split(":")[1:2] == [TRIAL_MOUNT]]
    if len(at) != 1:
        raise AutotuneError(f"relaunch: the spare's binds {binds!r} have no single {TRIAL_MOUNT} mount; expected one")
    binds[at[0]] = ":".join([trial_dir] + binds[at[0]].split(":")[1:])
    return binds


def keep_log(container, trial_dir):
    """The dead spare's output, appended to the trial's log as the controller does; a link there is refused."""
    logs = container.logs(stdout=True, stderr=True)
    try:
        with trialdir.open_regular(os.path.join(trial_dir, trialdir.LOG), "ab") as handle:
            if os.geteuid() == 0:  # the controller appends to it later: it stays the trial folder owner's
                owner = os.lstat(trial_dir)
                os.fchown(handle.fileno(), owner.st_uid, owner.st_gid)
            handle.write(logs)
    except OSError:
        pass  # a link or other non-file planted in the trial folder: the log is lost, never written through it
