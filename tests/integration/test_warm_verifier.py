"""The local runner's warm verifier (issue 21 item 2): a verifier started ahead, TensorFlow imported, scores a real
trained model exactly as a cold one does, and is the process that scores it."""
import json
import time

from ansible.module_utils.autotune import dataset as tune_dataset
from ansible.module_utils.autotune.kinds import template
from ansible.module_utils.autotune.runners.local import LocalRunner
from conftest import REPO, TEMPLATES


def _ended(process, folder, seconds=180):
    deadline = time.time() + seconds
    while process.exit_code() is None and time.time() < deadline:
        time.sleep(0.1)
    assert process.exit_code() == 0, (folder / "trainer.log").read_text()[-2000:]
    process.cleanup()


def test_a_warm_verifier_scores_a_trained_model_as_a_cold_one_does(tmp_path, sample_data):
    data = tune_dataset.prepare({"path": str(sample_data), "image_size": [28, 28], "color": "grayscale",
                                 "validation_split": 0.2, "test_split": 0.15, "seed": 1}, str(tmp_path / "cache"))
    runner = LocalRunner(trainer_path=str(REPO / "trainer"), warm=True)
    labels = {"study": "warm-verify", "trial": "0000", "run_dir": str(tmp_path), "slot": "0"}
    runner.warm_up(data["path"], labels)
    warm_pid = runner.verifier.popen.pid
    trial_dir = tmp_path / "trials" / "0000"
    trial_dir.mkdir(parents=True)
    meta = template.template_meta(str(TEMPLATES / "cnn.py.j2"))
    params = dict({n: s["default"] for n, s in meta["hyperparameters"].items()}, filters=4, dense_units=8, epochs=1)
    (trial_dir / "model.py").write_text(template.render(str(TEMPLATES / "cnn.py.j2"), params, 0))
    (trial_dir / "trial.json").write_text(json.dumps({"number": 0, "params": params, "model_api": "template",
                                                      "metric": "val_accuracy", "goal": None, "seed": 1}))
    _ended(runner.start(str(trial_dir), data["path"], labels), trial_dir)

    verified = {}
    for name in ("warm", "cold"):  # the second finds no verifier waiting: one is started ahead only with a trial
        out = tmp_path / "verify" / name
        process = runner.verify(str(trial_dir), data["path"], str(out), labels, test_path=data["test_path"])
        assert (process.popen.pid == warm_pid) == (name == "warm"), name
        _ended(process, out)
        verified[name] = json.loads((out / "verified.json").read_text())
    assert verified["warm"] == verified["cold"] and verified["warm"]["n_test"] > 0, verified
    runner.close()
    assert runner.verifier is None
