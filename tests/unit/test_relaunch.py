"""A dead warm spare's replacement, dict in, dict out, and the controller adopting it (fake engine objects;
tests/integration/test_health.py kills real containers)."""
import json
import re
import types

import pytest
from docker.errors import NotFound

from ansible.module_utils.autotune import relaunch
from ansible.module_utils.autotune.errors import AutotuneError
from ansible.module_utils.autotune.runners.docker import DockerProcess

SPARE = ".spare-0-abcdef"
HOST_CONFIG = {  # as the engine reports a spare the docker runner started (docker inspect), GPU host
    "Binds": ["/runs/s/trials/.spare-0-abcdef:/trial:rw", "/cache/data:/packs:ro"], "NetworkMode": "none",
    "CapDrop": ["ALL"], "SecurityOpt": ["no-new-privileges"], "ReadonlyRootfs": True,
    "Tmpfs": {"/tmp": "rw,nosuid,nodev,size=1g"}, "PidsLimit": 4096, "NanoCpus": 2000000000,
    "Memory": 2147483648, "MemorySwap": 2147483648, "Init": True, "LogConfig": {"Type": "json-file", "Config": {}},
    "DeviceRequests": [{"Driver": "nvidia", "DeviceIDs": ["1"], "Capabilities": [["gpu"]], "Count": 0, "Options": None}],
}
ATTRS = {
    "Image": "sha256:70801a8e", "HostConfig": HOST_CONFIG,
    "Config": {"User": "10001:10001", "WorkingDir": "/trial", "Image": "autotune-trainer-keras:gpu-latest",
               "Cmd": ["python", "-m", "autotune_trainer.warm", "--data", "/packs/ab12", "--folder", "/trial"],
               "Env": ["AUTOTUNE_LAUNCH_TIME=1.5", "HOME=/tmp", "PYTHONUNBUFFERED=1"],
               "Labels": {"io.autotune.project": "autotune", "io.autotune.study": "s", "io.autotune.trial": SPARE,
                          "io.autotune.run_dir": "/runs/s", "io.autotune.task": "train", "org.opencontainers.x": "y"}},
}


def test_the_replacement_is_the_spare_on_the_trial_folder_running_the_cold_trainer():
    options = relaunch.replacement_options(json.loads(json.dumps(ATTRS)), "/runs/s/trials/0003")
    host = options.pop("host_config")
    assert host["Binds"] == ["/runs/s/trials/0003:/trial:rw", "/cache/data:/packs:ro"]
    assert dict(host, Binds=None) == dict(HOST_CONFIG, Binds=None), "every limit and security option carries over"
    assert options["command"] == ["python", "-m", "autotune_trainer", "/trial", "--data", "/packs/ab12"]
    assert options["labels"] == dict(ATTRS["Config"]["Labels"], **{"io.autotune.trial": "0003"})
    assert re.fullmatch(r"autotune-s-0003-[0-9a-f]{6}", options["name"])
    assert (options["image"], options["user"], options["working_dir"]) == ("sha256:70801a8e", "10001:10001", "/trial")
    assert options["environment"][:2] == ["HOME=/tmp", "PYTHONUNBUFFERED=1"]
    assert [e for e in options["environment"] if e.startswith("AUTOTUNE_LAUNCH_TIME=")] != ["AUTOTUNE_LAUNCH_TIME=1.5"]
    assert ATTRS["HostConfig"]["Binds"][0].startswith("/runs/s/trials/.spare"), "the dead spare's record is not edited"


@pytest.mark.parametrize("config, host, says", [
    ({"Cmd": ["python", "-m", "autotune_trainer.warm", "--data"]}, HOST_CONFIG, "names no --data"),
    (ATTRS["Config"], dict(HOST_CONFIG, Binds=["/cache/data:/packs:ro"]), "no single /trial mount"),
])
def test_a_container_unlike_a_spare_is_refused_in_one_line(config, host, says):
    with pytest.raises(AutotuneError, match=says) as caught:
        relaunch.replacement_options(dict(ATTRS, Config=config, HostConfig=host), "/runs/s/trials/0003")
    assert "\n" not in str(caught.value)


def test_a_cold_container_is_started_again_in_place():
    started = []
    cold = types.SimpleNamespace(labels={"io.autotune.trial": "0003"}, start=lambda: started.append(True))
    assert relaunch.relaunch(client=None, container=cold, trial_dir="/runs/s/trials/0003") is None and started


class _Container:
    def __init__(self, cid, state, labels, client=None, gone=False):
        self.id, self.labels, self.client, self.gone = cid, labels, client, gone
        self.attrs = {"State": state, "Created": cid}

    @property
    def status(self):
        return self.attrs["State"]["Status"]

    def reload(self):
        if self.gone:
            raise NotFound("gone")


def _client(*containers):
    listing = types.SimpleNamespace(list=lambda **_: list(containers))
    return types.SimpleNamespace(containers=listing)


def test_the_controller_goes_on_with_the_replacement_of_a_spare_it_watched(tmp_path):
    run_dir, trial_dir = tmp_path, tmp_path / "trials" / "0003"
    trial_dir.mkdir(parents=True)
    (tmp_path / "spares.json").write_text(json.dumps({SPARE: "0003"}))
    killed = {"Status": "exited", "ExitCode": 137, "OOMKilled": False}
    spare = _Container("a", killed, {"io.autotune.trial": SPARE}, gone=True)
    replacement = _Container("b", {"Status": "running"}, {"io.autotune.trial": "0003"})
    spare.client = _client(replacement)
    process = DockerProcess(spare, str(trial_dir), relaunch_grace=60, run_dir=str(run_dir))
    assert process.exit_code() is None and process.container is replacement
    replacement.attrs["State"] = {"Status": "exited", "ExitCode": 0, "OOMKilled": False}
    assert process.exit_code() == 0 and process.outcome() == ("finished", None)


def test_two_dead_containers_of_a_trial_never_adopt_each_other(tmp_path):
    killed = {"Status": "exited", "ExitCode": 137, "OOMKilled": False}
    first, second = (_Container(cid, dict(killed), {"io.autotune.trial": "0003"}) for cid in "ab")
    first.client = second.client = _client(first, second)
    process = DockerProcess(first, str(tmp_path / "trials" / "0003"), relaunch_grace=0, run_dir=str(tmp_path))
    assert process.exit_code() == 137 and process.container is first and "not relaunched" in process.reason


def test_removed_without_a_replacement_ends_the_trial_after_the_grace(tmp_path):
    gone = _Container("a", {}, {"io.autotune.trial": "0003"}, gone=True)
    gone.client = _client()
    process = DockerProcess(gone, str(tmp_path / "trials" / "0003"), relaunch_grace=3600, run_dir=str(tmp_path))
    assert process.exit_code() is None, "the health check may still be starting its replacement"
    process.relaunch_grace = 0
    assert process.exit_code() == -1 and process.outcome()[1].startswith("the trial container was removed from outside")
