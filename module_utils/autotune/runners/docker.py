"""The docker runner: one container per trial, through the Docker SDK.

Each container gets labels naming the project, study, trial folder and run
directory (the health check finds containers by them), the packed data set
mounted read-only, its trial folder read-write and nothing else of the host, no
network unless asked, CPU, memory and process limits, no capabilities, a
read-only root file system, and on GPU hosts one GPU. Its end is classified
(finished, failed, timed out, killed for memory); its log is kept in the trial
folder and the container removed.
"""
import functools
import os
import shutil
import stat
import time
import uuid

from ansible.module_utils.autotune import trialdir
from ansible.module_utils.autotune.errors import AutotuneError
from ansible.module_utils.autotune.runners import spares
from ansible.module_utils.autotune.runners.base import Runner, SparePool, TrialProcess, hand_over, parse_lock
from ansible.module_utils.autotune.runners.local import GPU_ALLOW_GROWTH

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

# --- the container contract, shared with the health check (health.py) ---------------------
LABEL_PREFIX = "io.autotune"
PROJECT_LABEL = f"{LABEL_PREFIX}.project"
PROJECT = "autotune"
NAME_PREFIX = "autotune-"
TRIAL_MOUNT, DATA_MOUNT, VERIFY_MOUNT = "/trial", "/data/dataset", "/verify"  # the packed folder (dataset.py)
TEST_MOUNT = "/data/held-out"  # the held-out test pack: mounted into a verify container only, never a trial's
DATA_PARENT_MOUNT = "/packs"  # a warm spare's view of the folder the pack is (being) written into
IMAGE_UID = 10001  # the trainer image's non-root user (roles/trainer_image)
PIDS_LIMIT = 4096  # threads count too: TensorFlow starts a few per core


TASK_LABEL = f"{LABEL_PREFIX}.task"  # train (relaunched by the health check when it dies) or verify (never)
TRIAL_LABEL = f"{LABEL_PREFIX}.trial"  # the trial folder's name, or a warm spare's folder name (runners/spares.py)


def labels_for(study, trial, run_dir, task="train"):
    return {PROJECT_LABEL: PROJECT, f"{LABEL_PREFIX}.study": study, TRIAL_LABEL: str(trial),
            f"{LABEL_PREFIX}.run_dir": run_dir, TASK_LABEL: task}


def container_name(study, trial, task="train"):
    return f"{NAME_PREFIX}{study}-{trial}-{'' if task == 'train' else task + '-'}{uuid.uuid4().hex[:6]}"


def training_containers(client, run_dir, folder):
    """Training containers of this run folder's trial ``folder``, warm ones handed it included."""
    found = client.containers.list(all=True, filters={"label": [
        f"{PROJECT_LABEL}={PROJECT}", f"{LABEL_PREFIX}.run_dir={run_dir}", f"{TASK_LABEL}=train"]})
    return [c for c in found if spares.folder_of(run_dir, c.labels.get(TRIAL_LABEL)) == folder]


def abnormal_end(state):
    """A trainer container that died from outside (kill, daemon stop, reboot) rather than ending itself."""
    return (state.get("Status") in ("exited", "dead") and not state.get("OOMKilled")
            and state.get("ExitCode") not in trialdir.TRAINER_EXITS)


def _not_dead_from_outside(container):
    """Two dead containers of one trial must not adopt each other back and forth."""
    container.reload()
    return not abnormal_end(container.attrs.get("State", {}))


def gpu_for_slot(gpu_ids, slot):
    """A slot always gets the same GPU, and no two of the first len(gpu_ids) slots share one."""
    return gpu_ids[slot % len(gpu_ids)]


def thread_environment(cpus):
    """TensorFlow's thread pools (and OpenMP's) sized to the trial's CPU share. Left alone, TensorFlow sizes them by
    the cores it can schedule on, which in a container limited by quota (nano_cpus) are all the host's: every
    parallel trial then runs a pool per host core and waits on its quota (measured in docs/measurements.md)."""
    threads = str(max(1, int(float(cpus))))
    return {"TF_NUM_INTRAOP_THREADS": threads, "TF_NUM_INTEROP_THREADS": threads, "OMP_NUM_THREADS": threads}


def _host_memory_bytes():
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return None


GIB = 1024 ** 3


def default_memory(slots, host=None):
    """A slot's memory when runner.docker.memory is unset: its share of the host less the controller's reserve
    (an eighth of the host, at least 1 GiB, at most half of it), never the whole host, so a runaway trial leaves
    the controller, the verifier's container and the other slots theirs. None when the host's size is unknown."""
    host = host if host is not None else _host_memory_bytes()
    if not host:
        return None
    reserve = min(max(GIB, host // 8), host // 2)
    return max(1, (host - reserve) // max(1, slots))


class DockerProcess(TrialProcess):
    """A trial container as the study loop sees it.

    A container that dies from outside is not final at once: the health check
    (playbooks/health.yml, every minute from cron) relaunches it and the trial
    continues from its checkpoint, so the loop waits ``relaunch_grace`` seconds
    for that. A warm spare handed the trial is not started again but replaced by
    a fresh container on the trial's folder (relaunch.py): given ``run_dir``, the
    process adopts that container and goes on with it. While the engine does not
    answer, the loop waits as well.
    """

    def __init__(self, container, trial_dir, relaunch_grace, run_dir=None):
        super().__init__(trial_dir)
        self.container = container
        self.relaunch_grace = relaunch_grace
        self.run_dir = run_dir  # None (a verify container): nothing replaces it
        self.state = {}
        self.dead_since = None
        self.reason = None

    def exit_code(self):
        try:
            self.container.reload()
        except NotFound:
            return self._removed()
        except ENGINE_ERRORS:
            return None  # the engine is down or restarting: the health check brings it back
        self.state = self.container.attrs.get("State", {})
        if self.state.get("Status") not in ("exited", "dead"):
            self.dead_since = None
            return None
        if abnormal_end(self.state) and not os.path.lexists(self._path(trialdir.STOPPED_MARKER)):
            return None if self._adopt() else self._dead_from_outside()
        return self.state.get("ExitCode")

    def _removed(self):
        """None while a replacement may still come (the health check removes a spare it replaced), else -1."""
        if self._adopt():
            return None
        self.dead_since = self.dead_since or time.time()
        if time.time() - self.dead_since < self.relaunch_grace:
            return None
        self.state = {"Status": "removed", "ExitCode": -1}
        self.reason = f"the trial container was removed from outside and not replaced within {self.relaunch_grace} s"
        return -1

    def _adopt(self):
        """Go on with the container the health check started in this one's place; False when there is none."""
        if not self.run_dir:
            return False
        try:
            found = [c for c in training_containers(self.container.client, self.run_dir,
                                                    os.path.basename(self.trial_dir))
                     if c.id != self.container.id and _not_dead_from_outside(c)]
        except ENGINE_ERRORS:
            return False
        if not found:
            return False
        # Running first: one that ended by itself between two polls is adopted too, for its exit status.
        self.container = max(found, key=lambda c: (c.status == "running", c.attrs.get("Created", "")))
        self.dead_since = None
        return True

    def _dead_from_outside(self):
        """None while the health check may still relaunch it, else its exit code with the reason set."""
        gave_up = self.health().get("gave_up")
        if gave_up:
            self.reason = gave_up
            return self.state.get("ExitCode")
        self.dead_since = self.dead_since or time.time()
        if time.time() - self.dead_since < self.relaunch_grace:
            return None
        self.reason = (f"the container died (exit {self.state.get('ExitCode')}) and was not relaunched "
                       f"within {self.relaunch_grace} s; is the health check scheduled?")
        return self.state.get("ExitCode")

    def stop(self, grace=5.0):
        # Marked first, so the health check never relaunches a trial the controller ended on purpose.
        marker = self._path(trialdir.STOPPED_MARKER)
        if os.path.lexists(marker):
            os.unlink(marker)  # whatever the container put there, links included, is replaced
        with trialdir.open_regular(marker, "w") as handle:
            handle.write(str(time.time()))
        try:
            self.container.stop(timeout=int(grace))
            self.exit_code()
        except ENGINE_ERRORS:
            pass

    def outcome(self):
        if self.reason:
            return "killed", self.reason
        if self.state.get("OOMKilled"):
            return "killed", "killed for memory (OOM): raise runner.docker.memory or shrink the model"
        code = self.state.get("ExitCode")
        if code == trialdir.EXIT_OK:
            return "finished", None
        if code == 137:
            return "killed", "killed by SIGKILL (exit 137)"
        return "failed", f"exit status {code}"

    def cleanup(self):
        """Keep the log in the trial folder, then remove the container."""
        try:
            logs = self.container.logs(stdout=True, stderr=True)
            log_path = self._path(trialdir.LOG)
            if os.path.lexists(log_path) and not stat.S_ISREG(os.lstat(log_path).st_mode):
                os.unlink(log_path)  # a link or a FIFO the trial planted: replaced, never written through
            with trialdir.open_regular(log_path, "ab") as handle:
                handle.write(logs)
        except (OSError,) + ENGINE_ERRORS:
            pass  # the log is lost (a folder planted in its place); the container is removed all the same
        try:
            self.container.remove(force=True)
        except ENGINE_ERRORS:
            pass


def _hand_over(trial_dir):
    """A root controller gives the trial folder to the image's user (never root)."""
    hand_over(trial_dir, IMAGE_UID, IMAGE_UID)


class DockerRunner(Runner):
    name = "docker"
    CONFIG_SCHEMA = {
        "image": {"type": "string", "minLength": 1, "description": "a trainer image name:tag (overrides images)"},
        "images": {
            "type": "object", "description": "a mapping framework -> {cpu: image, gpu: image}",
            "additionalProperties": {"type": "object", "additionalProperties": {"type": "string"},
                                     "description": "a mapping {cpu: image, gpu: image}"},
        },
        "cpus": {"type": "number", "exclusiveMinimum": 0, "description": "a positive number of CPUs"},
        "memory": {"type": "string", "pattern": r"\A[0-9]+[bkmgBKMG]?\Z", "description": "a memory limit such as 2g or 512m"},
        "network": {"type": "boolean", "description": "true or false"},
        "gpu_ids": {"type": "array", "items": {"type": ["integer", "string"]},
                    "description": "a list of GPU ids; one is given to each trial in turn"},
        "docker_host": {"type": "string", "minLength": 1, "description": "a Docker engine URL, e.g. unix:///var/run/docker.sock"},
        "relaunch_grace": {"type": "integer", "minimum": 1,
                           "description": "seconds >= 1 to wait for the health check to relaunch a dead container"},
        "warm": {"type": "boolean", "description": "true or false: keep trainer containers started ahead per slot"},
        "spares": {"type": "integer", "minimum": 1, "maximum": 4,
                   "description": "an integer 1-4: trainer containers kept started ahead per slot when warm"},
    }
    CONFIG_DEFAULTS = {
        "network": False, "gpu_ids": [], "relaunch_grace": 180, "warm": True, "spares": 1,
        "images": {"keras": {"cpu": "autotune-trainer-keras:cpu-latest", "gpu": "autotune-trainer-keras:gpu-latest"}},
    }

    @classmethod
    def facts(cls, block, framework):
        return {"image": cls.image_for(block, framework)}

    @staticmethod
    def image_for(block, framework):
        """The image for this model: image, else images[framework][gpu or cpu flavour]."""
        if block.get("image"):
            return block["image"]
        images = block.get("images") or {}
        if framework not in images:
            raise AutotuneError(f"runner.docker.images: no trainer image for framework {framework!r}; "
                                f"images exist for: {', '.join(sorted(images)) or 'none'}")
        flavour = "gpu" if block.get("gpu_ids") else "cpu"
        if flavour not in images[framework]:
            raise AutotuneError(f"runner.docker.images.{framework}: no {flavour} image; expected a {flavour!r} entry")
        return images[framework][flavour]

    @classmethod
    def from_config(cls, block, framework, trainer_path=None, slots=1):
        return cls(cls.image_for(block, framework), cpus=block.get("cpus"), memory=block.get("memory"),
                   network=block.get("network", False), gpu_ids=block.get("gpu_ids"),
                   base_url=block.get("docker_host"), relaunch_grace=block.get("relaunch_grace", 180), slots=slots,
                   warm=block.get("warm", True), spares=block.get("spares", 1))

    def __init__(self, image, cpus=None, memory=None, network=False, gpu_ids=None, base_url=None, relaunch_grace=180,
                 slots=1, warm=True, spares=1):
        if not HAS_DOCKER:
            raise AutotuneError("runner.kind: docker needs the Python 'docker' package on the controller; expected it installed")
        try:
            self.client = docker.DockerClient(base_url=base_url) if base_url else docker.from_env()
            self.client.ping()
            self.image = self.client.images.get(image)
        except ImageNotFound:
            raise AutotuneError(f"runner.docker.image: {image!r} is not on the Docker host; expected an image built by "
                                "roles/trainer_image (playbooks/trainer_host.yml)")
        except DockerException as exc:
            raise AutotuneError(f"runner.kind: docker: the Docker engine does not answer ({exc}); expected a running engine")
        self.image_name = image
        # Unset limits default to each slot's share of the host: a runaway trial cannot take another slot's part.
        self.cpus = cpus or max(0.5, (os.cpu_count() or 1) / slots)
        self.memory = memory or default_memory(slots)
        self.network = network
        self.gpu_ids = list(gpu_ids or [])
        self.relaunch_grace = relaunch_grace
        self.slots, self.warm = slots, warm
        self.spares = SparePool(spares, warm)  # of (container, spare folder)

    def describe(self):
        return {"runner": self.name, "image": self.image_name, "image_id": self.image.id, "cpus": self.cpus,
                "memory": self.memory, "network": self.network, "gpu_ids": self.gpu_ids, "warm": self.warm,
                "spares": self.spares.per_slot}

    def start(self, trial_dir, data_path, labels):
        """Adopt the container still training this trial, else hand it to the slot's warm spare, else start one."""
        for container in training_containers(self.client, labels["run_dir"], os.path.basename(trial_dir)):
            if container.status in ("running", "created", "restarting"):
                # A controller resuming its study adopts the container still training the trial.
                return DockerProcess(container, trial_dir, self.relaunch_grace, labels["run_dir"])
            container.remove(force=True)
        slot = int(labels.get("slot", 0))
        process = self.spares.take(slot, lambda spare: self._hand(spare, trial_dir, labels))
        if process is None:
            command = ["python", "-m", "autotune_trainer", TRIAL_MOUNT, "--data", DATA_MOUNT]
            volumes = {trial_dir: {"bind": TRIAL_MOUNT, "mode": "rw"}, data_path: {"bind": DATA_MOUNT, "mode": "ro"}}
            process = DockerProcess(self._run(command, volumes, trial_dir, labels, "train"), trial_dir,
                                    self.relaunch_grace, labels["run_dir"])
        self.spares.top_up(slot, lambda: self._spare(data_path, labels))
        return process

    def warm_up(self, data_path, labels):
        for slot in range(self.slots):
            self.spares.first(slot, functools.partial(self._spare, data_path, dict(labels, slot=str(slot))))

    def _spare(self, data_path, labels):
        """The slot's next trainer, started now: Keras imported and data loaded before its trial exists.

        It mounts the folder the data set is packed into, not the pack: a spare started during the packing
        sees the finished pack appear there (the pack is renamed into place when complete)."""
        folder = spares.new_folder(labels["run_dir"], labels.get("slot", 0))
        cache = os.path.dirname(os.path.abspath(data_path))
        os.makedirs(cache, exist_ok=True)
        command = ["python", "-m", "autotune_trainer.warm", "--data", f"{DATA_PARENT_MOUNT}/{os.path.basename(data_path)}",
                   "--folder", TRIAL_MOUNT]
        volumes = {folder: {"bind": TRIAL_MOUNT, "mode": "rw"}, cache: {"bind": DATA_PARENT_MOUNT, "mode": "ro"}}
        return self._run(command, volumes, folder, dict(labels, trial=os.path.basename(folder)), "train"), folder

    def _hand(self, spare, trial_dir, labels):
        """The trial, handed to a waiting spare; None when it died (the next spare, or a cold start, takes it)."""
        container, folder = spare
        try:
            container.reload()
            alive = container.status == "running"
        except ENGINE_ERRORS:
            alive = False
        if not alive:
            self._discard(container, folder)
            return None
        spares.hand(folder, trial_dir, labels["run_dir"])
        if os.geteuid() == 0:
            _hand_over(trial_dir)
        spares.go(trial_dir)
        if os.geteuid() == 0:
            os.lchown(os.path.join(trial_dir, trialdir.HANDED), IMAGE_UID, IMAGE_UID)
        return DockerProcess(container, trial_dir, self.relaunch_grace, labels["run_dir"])

    def _discard(self, container, folder):
        try:
            container.remove(force=True)
        except ENGINE_ERRORS:
            pass
        shutil.rmtree(folder, ignore_errors=True)

    def close(self):
        """Spares not handed a trial are removed with their folders: nothing is left running after the study."""
        for container, folder in self.spares.drain():
            self._discard(container, folder)

    def environment(self):
        """The image's trainer environment (autotune_trainer.lock in a throw-away container, no network, nothing
        mounted) and the image itself: its ID as ``docker image inspect`` gives it, and its repository digests."""
        try:
            out = self.client.containers.run(self.image.id, ["python", "-m", "autotune_trainer.lock"], remove=True,
                                             network_mode="none", cap_drop=["ALL"], read_only=True,
                                             security_opt=["no-new-privileges"], user=f"{IMAGE_UID}:{IMAGE_UID}",
                                             environment={"HOME": "/tmp"}, stdout=True, stderr=False)
        except DockerException as exc:
            raise AutotuneError(f"runner.docker.image: {self.image_name!r} cannot run autotune_trainer.lock "
                                f"({str(exc)[:200]}); expected a trainer image built by roles/trainer_image") from None
        return dict(parse_lock(out), image=self.image_name, image_id=self.image.id,
                    repo_digests=list(self.image.attrs.get("RepoDigests") or []))

    def verify(self, trial_dir, data_path, out_dir, labels, test_path=None, read_only=()):
        os.makedirs(out_dir, exist_ok=True)
        test = ["--test", TEST_MOUNT] if test_path else []
        command = ["python", "-m", "autotune_trainer.verify", TRIAL_MOUNT, "--data", DATA_MOUNT, *test,
                   "--out", VERIFY_MOUNT]
        # The trial folder is read-only here: the scorer's container cannot be handed anything by the trial's.
        volumes = {trial_dir: {"bind": TRIAL_MOUNT, "mode": "ro"}, data_path: {"bind": DATA_MOUNT, "mode": "ro"},
                   out_dir: {"bind": VERIFY_MOUNT, "mode": "rw"},
                   **({test_path: {"bind": TEST_MOUNT, "mode": "ro"}} if test_path else {}),
                   **{path: {"bind": os.path.abspath(path), "mode": "ro"} for path in read_only}}
        container = self._run(command, volumes, out_dir, labels, "verify")
        return DockerProcess(container, out_dir, relaunch_grace=0)

    def _run(self, command, volumes, writable, labels, task):
        if os.geteuid() == 0:
            _hand_over(writable)
            user = f"{IMAGE_UID}:{IMAGE_UID}"
        else:
            user = f"{os.getuid()}:{os.getgid()}"
        options = self._options(command, volumes, labels, user, task)
        try:
            return self.client.containers.run(self.image_name, **options)
        except DockerException as exc:
            raise AutotuneError(f"runner: cannot start a {task} container from {self.image_name!r} ({exc})")

    def _options(self, command, volumes, labels, user, task):
        trial = labels["trial"]
        options = {
            "command": command,
            "detach": True,
            "init": True,  # docker-init as PID 1 forwards signals: a stop ends the trainer at once
            "name": container_name(labels["study"], trial, task),
            "labels": labels_for(labels["study"], trial, labels["run_dir"], task),
            "user": user,
            "working_dir": TRIAL_MOUNT,
            "volumes": dict({os.path.abspath(p): {"bind": os.path.abspath(p), "mode": "ro"} for p in self.read_only_paths},
                            **{os.path.abspath(host): bind for host, bind in volumes.items()}),
            "environment": {"AUTOTUNE_LAUNCH_TIME": repr(time.time()), "PYTHONUNBUFFERED": "1",
                            "TF_CPP_MIN_LOG_LEVEL": "2", "HOME": "/tmp", "TF_FORCE_GPU_ALLOW_GROWTH": GPU_ALLOW_GROWTH,
                            **thread_environment(self.cpus)},
            "network_mode": "bridge" if self.network else "none",
            # Pushed model code runs here: no capabilities, no privilege gain, nothing writable but the trial folder.
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges"],
            "read_only": True,
            "tmpfs": {"/tmp": "rw,nosuid,nodev,size=1g"},
            "pids_limit": PIDS_LIMIT,
            "nano_cpus": int(float(self.cpus) * 1e9),
            "mem_limit": self.memory,
            "memswap_limit": self.memory,  # no swap: over the limit means OOM, not a crawl
        }
        if self.gpu_ids:
            gpu = gpu_for_slot(self.gpu_ids, int(labels.get("slot", 0)))
            options["device_requests"] = [DeviceRequest(driver="nvidia", device_ids=[str(gpu)], capabilities=[["gpu"]])]
        return options
