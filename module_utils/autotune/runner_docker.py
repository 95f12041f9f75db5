"""The docker runner: one container per trial, through the Docker SDK.

Each container gets labels naming the project, study, trial and run directory
(the health check finds containers by them), the packed data set mounted
read-only, its trial directory read-write and nothing else of the host, no
network unless asked, CPU and memory limits, and on GPU hosts one GPU. Its end
is classified (finished, failed with the log's last lines, timed out, killed
for memory); its log is kept in the trial directory and the container removed.
"""
import os
import time
import uuid

from ansible.module_utils.autotune.errors import AutotuneError

try:
    import docker
    from docker.errors import DockerException, ImageNotFound, NotFound
    from docker.types import DeviceRequest
    HAS_DOCKER = True
except ImportError:  # reported as a clear error when the docker runner is asked for
    HAS_DOCKER = False

LABEL_PREFIX = "io.autotune"
PROJECT_LABEL = f"{LABEL_PREFIX}.project"
PROJECT = "autotune"
TRIAL_MOUNT, DATA_MOUNT = "/trial", "/data/dataset.npz"
IMAGE_UID = 10001  # the trainer image's non-root user (roles/trainer_image)


def labels_for(study, trial, run_dir):
    return {PROJECT_LABEL: PROJECT, f"{LABEL_PREFIX}.study": study, f"{LABEL_PREFIX}.trial": str(trial),
            f"{LABEL_PREFIX}.run_dir": run_dir}


class DockerProcess:
    def __init__(self, container, log_path):
        self.container = container
        self.log_path = log_path
        self.state = {}

    def exit_code(self):
        self.container.reload()
        self.state = self.container.attrs.get("State", {})
        if self.state.get("Status") in ("exited", "dead"):
            return self.state.get("ExitCode")
        return None

    def stop(self, grace=5):
        try:
            self.container.stop(timeout=grace)
            self.exit_code()
        except NotFound:
            pass

    def outcome(self):
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
        except NotFound:
            pass


class DockerRunner:
    name = "docker"

    def __init__(self, image, cpus=None, memory=None, network=False, gpu_ids=None, base_url=None):
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

    def describe(self):
        return {"runner": self.name, "image": self.image_name, "image_id": self.image.id,
                "cpus": self.cpus, "memory": self.memory, "network": self.network, "gpu_ids": self.gpu_ids}

    def start(self, trial_dir, data_path, labels=None):
        labels = labels or {}
        trial = int(labels.get("trial", 0))
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
        return DockerProcess(container, os.path.join(trial_dir, "trainer.log"))
