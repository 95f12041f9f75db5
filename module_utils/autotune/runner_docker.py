"""The docker runner: one container per trial, through the Docker SDK.

Each container gets labels naming the project, study, trial and run directory
(the health check finds containers by them), the packed data set mounted
read-only, its trial directory read-write and nothing else of the host, no
network unless asked, CPU and memory limits, and on GPU hosts one GPU. Its end
is classified (finished, failed with the log's last lines, timed out, killed
for memory); its log is kept in the trial directory and the container removed.
"""
import json
import os
import time
import uuid

from ansible.module_utils.autotune.errors import AutotuneError

try:
    import docker
    from docker.errors import DockerException, ImageNotFound, NotFound
    from docker.types import DeviceRequest
    from requests.exceptions import RequestException
    HAS_DOCKER = True
    ENGINE_ERRORS = (DockerException, RequestException)
except ImportError:  # reported as a clear error when the docker runner is asked for
    HAS_DOCKER = False
    ENGINE_ERRORS = (OSError,)

LABEL_PREFIX = "io.autotune"
PROJECT_LABEL = f"{LABEL_PREFIX}.project"
PROJECT = "autotune"
TRIAL_MOUNT, DATA_MOUNT = "/trial", "/data/dataset.npz"
IMAGE_UID = 10001  # the trainer image's non-root user (roles/trainer_image)
# Files in the trial directory through which the controller and the health check (health.py) agree.
STOPPED_MARKER = "stopped_by_controller"  # the controller stopped it (timeout, pruning): never relaunch
HEALTH_FILE = "health.json"                # relaunch count and history, written by the health check
GENUINE_EXITS = (0, 1, 2, 3)               # autotune_trainer's own exit codes: the trial really ended


def labels_for(study, trial, run_dir):
    return {PROJECT_LABEL: PROJECT, f"{LABEL_PREFIX}.study": study, f"{LABEL_PREFIX}.trial": str(trial),
            f"{LABEL_PREFIX}.run_dir": run_dir}


def abnormal_end(state):
    """A trainer container that died from outside (kill, daemon stop, reboot) rather than ending itself."""
    return (state.get("Status") in ("exited", "dead") and not state.get("OOMKilled")
            and state.get("ExitCode") not in GENUINE_EXITS)


def read_health(trial_dir):
    try:
        with open(os.path.join(trial_dir, HEALTH_FILE), encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return {"relaunches": 0, "history": []}


class DockerProcess:
    """A trial container as the study loop sees it.

    A container that dies from outside is not final at once: the health check
    (playbooks/health.yml, every minute from cron) relaunches it and the trial
    continues from its checkpoint, so the loop waits ``relaunch_grace`` seconds
    for that. While the engine does not answer, the loop waits as well.
    """

    def __init__(self, container, trial_dir, relaunch_grace):
        self.container = container
        self.trial_dir = trial_dir
        self.log_path = os.path.join(trial_dir, "trainer.log")
        self.relaunch_grace = relaunch_grace
        self.state = {}
        self.dead_since = None
        self.reason = None

    def exit_code(self):
        try:
            self.container.reload()
        except NotFound:
            self.state = {"Status": "removed", "ExitCode": -1}
            self.reason = "the trial container was removed from outside"
            return -1
        except ENGINE_ERRORS:
            return None  # the engine is down or restarting: the health check brings it back
        self.state = self.container.attrs.get("State", {})
        if self.state.get("Status") not in ("exited", "dead"):
            self.dead_since = None
            return None
        if abnormal_end(self.state) and not os.path.exists(os.path.join(self.trial_dir, STOPPED_MARKER)):
            gave_up = read_health(self.trial_dir).get("gave_up")
            if gave_up:
                self.reason = gave_up
                return self.state.get("ExitCode")
            self.dead_since = self.dead_since or time.time()
            if time.time() - self.dead_since < self.relaunch_grace:
                return None
            self.reason = (f"the container died (exit {self.state.get('ExitCode')}) and was not relaunched "
                           f"within {self.relaunch_grace} s; is the health check scheduled?")
        return self.state.get("ExitCode")

    def stop(self, grace=5):
        # Marked first, so the health check never relaunches a trial the controller ended on purpose.
        with open(os.path.join(self.trial_dir, STOPPED_MARKER), "w", encoding="utf-8") as handle:
            handle.write(str(time.time()))
        try:
            self.container.stop(timeout=grace)
            self.exit_code()
        except ENGINE_ERRORS:
            pass

    def outcome(self):
        if self.reason:
            return "killed", self.reason
        if self.state.get("OOMKilled"):
            return "killed", "killed for memory (OOM): raise runner.memory or shrink the model"
        code = self.state.get("ExitCode")
        if code == 0:
            return "finished", None
        if code == 137:
            return "killed", "killed by SIGKILL (exit 137)"
        return "failed", f"exit status {code}"

    def cleanup(self):
        """Keep the log in the trial directory, then remove the container."""
        try:
            with open(self.log_path, "ab") as handle:
                handle.write(self.container.logs(stdout=True, stderr=True))
            self.container.remove(force=True)
        except ENGINE_ERRORS:
            pass


class DockerRunner:
    name = "docker"

    def __init__(self, image, cpus=None, memory=None, network=False, gpu_ids=None, base_url=None, relaunch_grace=180):
        if not HAS_DOCKER:
            raise AutotuneError("runner.kind: docker needs the Python 'docker' package on the controller; expected it installed")
        try:
            self.client = docker.DockerClient(base_url=base_url) if base_url else docker.from_env()
            self.client.ping()
            self.image = self.client.images.get(image)
        except ImageNotFound:
            raise AutotuneError(f"runner.image: {image!r} is not on the Docker host; expected an image built by "
                                "roles/trainer_image (playbooks/trainer_host.yml)")
        except DockerException as exc:
            raise AutotuneError(f"runner.kind: docker: the Docker engine does not answer ({exc}); expected a running engine")
        self.image_name = image
        self.cpus, self.memory, self.network = cpus, memory, network
        self.gpu_ids = list(gpu_ids or [])
        self.relaunch_grace = relaunch_grace

    def describe(self):
        return {"runner": self.name, "image": self.image_name, "image_id": self.image.id,
                "cpus": self.cpus, "memory": self.memory, "network": self.network, "gpu_ids": self.gpu_ids}

    def _existing(self, run_dir, trial):
        return self.client.containers.list(all=True, filters={"label": [
            f"{PROJECT_LABEL}={PROJECT}", f"{LABEL_PREFIX}.run_dir={run_dir}", f"{LABEL_PREFIX}.trial={trial}"]})

    def start(self, trial_dir, data_path, labels=None):
        labels = labels or {}
        trial = int(labels.get("trial", 0))
        for container in self._existing(labels.get("run_dir", ""), trial):
            if container.status in ("running", "created", "restarting"):
                # A controller resuming its study adopts the container still training the trial.
                return DockerProcess(container, trial_dir, self.relaunch_grace)
            container.remove(force=True)
        if os.geteuid() == 0:
            # A root controller hands the trial directory to the image's user, which is never root.
            for root, dirs, files in os.walk(trial_dir):
                for name in [root] + [os.path.join(root, n) for n in dirs + files]:
                    os.chown(name, IMAGE_UID, IMAGE_UID)
            user = f"{IMAGE_UID}:{IMAGE_UID}"
        else:
            user = f"{os.getuid()}:{os.getgid()}"
        options = {
            "command": ["python", "-m", "autotune_trainer", TRIAL_MOUNT, "--data", DATA_MOUNT],
            "detach": True,
            "init": True,  # docker-init as PID 1 forwards signals: a stop ends the trainer at once
            "name": f"autotune-{labels.get('study', 'study')}-{trial:04d}-{uuid.uuid4().hex[:6]}",
            "labels": labels_for(labels.get("study", ""), trial, labels.get("run_dir", "")),
            "user": user,
            "working_dir": TRIAL_MOUNT,
            "volumes": {os.path.abspath(trial_dir): {"bind": TRIAL_MOUNT, "mode": "rw"},
                        os.path.abspath(data_path): {"bind": DATA_MOUNT, "mode": "ro"}},
            "environment": {"AUTOTUNE_LAUNCH_TIME": repr(time.time()), "PYTHONUNBUFFERED": "1",
                            "TF_CPP_MIN_LOG_LEVEL": "2", "HOME": "/tmp"},
            "network_mode": "bridge" if self.network else "none",
        }
        if self.cpus:
            options["nano_cpus"] = int(float(self.cpus) * 1e9)
        if self.memory:
            options["mem_limit"] = self.memory
            options["memswap_limit"] = self.memory  # no swap: over the limit means OOM, not a crawl
        if self.gpu_ids:
            gpu = self.gpu_ids[trial % len(self.gpu_ids)]  # one GPU per trial
            options["device_requests"] = [DeviceRequest(driver="nvidia", device_ids=[str(gpu)], capabilities=[["gpu"]])]
        try:
            container = self.client.containers.run(self.image_name, **options)
        except DockerException as exc:
            raise AutotuneError(f"runner: cannot start a trial container from {self.image_name!r} ({exc})")
        return DockerProcess(container, trial_dir, self.relaunch_grace)
