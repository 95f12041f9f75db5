"""TensorBoard event files per trial (issue 23 item 2), read back with TensorBoard's own reader.

Real training with the local runner (tune.prepare / tune.run): one trial of two epochs of the cnn template, and one
of the user's own Keras script (examples/catsdogs_script/train.py, our callbacks attached to its fit). Each trial's
tensorboard/ folder must hold every epoch's scalars, equal to metrics.jsonl's, and every one of the trial's
hyperparameters (HParams plugin); a trainer killed and resumed writes each epoch once. Then `make tensorboard` serves
such a run on 127.0.0.1. (A build_model(hp) file trains through the template's Trial.fit and the same callbacks.)
"""
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import metadata as hparams_metadata
from tensorboard.util import tensor_util

from ansible.module_utils.autotune import trialcaps
from ansible.module_utils.autotune.tune import prepare, run
from conftest import BIN, REPO, SAMPLE_DATA, TEMPLATES, wait_until, write_config

EPOCHS = 2
TINY = {"blocks": 1, "filters": 4, "kernel_size": 3, "dense_units": 8, "learning_rate": 0.001, "epochs": EPOCHS}
# No goal stop: both epochs train whatever the first one scores.
ONE_TRIAL = {"target": {"metric": "val_accuracy", "goal": 0.8, "stop_at_goal": False},
             "budget": {"max_trials": 1, "trial_timeout": 300, "max_seconds": 600}}


def _script(folder):
    """The example script, reading the sample data by its absolute path, at 32x32 pixels, for EPOCHS epochs."""
    code = (REPO / "examples" / "catsdogs_script" / "train.py").read_text()
    for old, new in (('"../../data/catsdogs"', repr(str(SAMPLE_DATA))), ("(64, 64)", "(32, 32)"),
                     ("epochs=1", f"epochs={EPOCHS}")):
        assert old in code, f"the example script changed: {old} not found"
        code = code.replace(old, new)
    (folder / "train.py").write_text(code)
    return {"file": str(folder / "train.py")}


def _tune(folder, kind):
    if kind == "template":
        config_path = write_config(folder, model={"template": "cnn", "baseline": TINY}, **ONE_TRIAL)
    else:  # a script's space is read from its code: the sample's template space and ladder go
        config_path = write_config(folder, model=_script(folder), search={"strategy": "tpe", "space": None,
                                                                         "ladder": None}, **ONE_TRIAL)
        config_path.write_text(config_path.read_text().replace("  space: null\n", "").replace("  ladder: null\n", ""))
    config, plan, run_dir, storage = prepare(str(config_path), str(TEMPLATES), runs_root=str(folder / "runs"))
    return run(config, plan, run_dir, storage, trainer_path=str(REPO / "trainer")), Path(run_dir)


@pytest.fixture(scope="module", params=["template", "script"])
def tuned(request, tmp_path_factory, sample_data):
    """One trial of two epochs of each kind of model, trained for real."""
    return _tune(tmp_path_factory.mktemp(request.param), request.param)


def _scalars(folder):
    """{tag: [(step, value), ...]} of the event files in ``folder``, read by TensorBoard's own accumulator."""
    events = EventAccumulator(str(folder), size_guidance={"tensors": 0})
    events.Reload()
    return {tag: [(e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in events.Tensors(tag)]
            for tag in events.Tags()["tensors"]}


def _hparams(folder):
    """(trial id, {name: value}) of the HParams plugin's session-start record in ``folder``."""
    events = EventAccumulator(str(folder))
    events.Reload()
    content = events.PluginTagToContent(hparams_metadata.PLUGIN_NAME)[hparams_metadata.SESSION_START_INFO_TAG]
    start = hparams_metadata.parse_session_start_info_plugin_data(content)
    values = {name: getattr(value, value.WhichOneof("kind")) for name, value in start.hparams.items()}
    return start.group_name, values


def test_every_epoch_and_every_hyperparameter_reach_tensorboard(tuned):
    summary, run_dir = tuned
    assert summary["n_trials"] == 1, summary.get("stop_reason")
    trial = run_dir / "trials" / "0000"
    assert json.loads((trial / "result.json").read_text())["status"] == "ok"
    epochs = [json.loads(line) for line in (trial / "metrics.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in epochs] == list(range(EPOCHS))

    board = trial / "tensorboard"
    logged = {"train": _scalars(board / "train"), "validation": _scalars(board / "validation")}
    for name in ("loss", "accuracy", "val_loss", "val_accuracy"):
        split, tag = ("validation", name[4:]) if name.startswith("val_") else ("train", name)
        points = logged[split][f"epoch_{tag}"]
        assert [step for step, _ in points] == list(range(EPOCHS)), f"{name}: one point per epoch"
        assert [value for _, value in points] == pytest.approx([e[name] for e in epochs], rel=1e-5), name

    params = json.loads((trial / "trial.json").read_text())["params"]
    group, hparams = _hparams(board)
    assert params and hparams == pytest.approx(params), "every hyperparameter, with the trial's value"
    assert group == "0000"
    used, _ = trialcaps.folder_usage(str(board))
    assert used < 256 * 1024, f"event files stay small: {used} bytes"
    # The controller's records of the trial did not choke on the sub-folder.
    assert (run_dir / "summary.json").is_file() and len(summary["trials"][0]["epochs"]) == EPOCHS


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("tuned", ["template"], indirect=True)
def test_make_tensorboard_serves_a_run_on_loopback(tuned):
    """`make tensorboard RUN=<run folder>` lists the trial's scalars, on 127.0.0.1 only."""
    _summary, run_dir = tuned
    port = _free_port()
    server = subprocess.Popen(_make("tensorboard", f"RUN={run_dir}", f"TENSORBOARD_PORT={port}"), cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_until(lambda: "0000/tensorboard/validation" in (_get(port, "/data/runs") or []), 90,
                   "TensorBoard listing the trial's runs on 127.0.0.1")
        tags = _get(port, "/data/plugin/scalars/tags")
        assert "epoch_accuracy" in tags["0000/tensorboard/validation"]
        listening = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, check=False)
        if listening.returncode == 0:  # ss (iproute2) where it is installed: the local address of each socket
            assert [line.split()[3] for line in listening.stdout.splitlines()] == [f"127.0.0.1:{port}"]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_make_tensorboard_without_a_run_says_so(tmp_path):
    process = subprocess.run(_make("tensorboard", f"RUN={tmp_path / 'nothing'}"), cwd=REPO, capture_output=True,
                             text=True, check=False)
    assert process.returncode != 0
    assert f"no trials in {tmp_path / 'nothing'}" in process.stderr, process.stderr


def _make(*arguments):
    # -o: the test's own virtual environment is used as it is, never reinstalled.
    return ["make", "-s", "-o", f"{BIN}/.installed", f"VENV={BIN.parent}", *arguments]


def _get(port, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as answer:
            return json.loads(answer.read())
    except OSError:
        return None


@pytest.mark.parametrize("tuned", ["template"], indirect=True)
def test_a_resumed_trial_writes_each_epoch_once(tmp_path, tuned):
    """A trainer killed after its first epoch (as the health check finds it) resumes from its checkpoint: TensorBoard
    holds every epoch once, as metrics.jsonl does. The tuned trial's code, for three epochs, on its packed data."""
    _summary, run_dir = tuned
    done, trial = run_dir / "trials" / "0000", tmp_path / "trial"
    trial.mkdir()
    spec = json.loads((done / "trial.json").read_text())
    (trial / "trial.json").write_text(json.dumps(dict(spec, params=dict(spec["params"], epochs=3))))
    code = (done / "model.py").read_text()
    assert f'TRAINING = {{"epochs": {EPOCHS},' in code
    (trial / "model.py").write_text(code.replace(f'TRAINING = {{"epochs": {EPOCHS},', 'TRAINING = {"epochs": 3,'))
    [data] = (run_dir / "data").glob("dataset-*")
    first = _trainer(trial, data)
    wait_until(lambda: (trial / "metrics.jsonl").is_file() and (trial / "metrics.jsonl").read_text().strip(), 120,
               "the first epoch")
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert _trainer(trial, data).wait(timeout=300) == 0
    result = json.loads((trial / "result.json").read_text())
    assert result["resumed_from_epoch"] and result["epochs_run"] == 3, result
    epochs = [json.loads(line) for line in (trial / "metrics.jsonl").read_text().splitlines()]
    points = sorted(_scalars(trial / "tensorboard" / "validation")["epoch_accuracy"])
    assert [step for step, _ in points] == [0, 1, 2], "each epoch once"
    assert [value for _, value in points] == pytest.approx([e["val_accuracy"] for e in epochs], rel=1e-5)


def _trainer(trial, data):
    env = dict(os.environ, PYTHONPATH=str(REPO / "trainer"), TF_CPP_MIN_LOG_LEVEL="2")
    with open(trial / "trainer.log", "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "autotune_trainer", str(trial), "--data", str(data)],
                                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
