"""Entry point: ``python -m autotune_trainer TRIAL_DIR --data PACKED_DATASET_FOLDER``."""
import argparse
import importlib.util
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

from autotune_trainer import ending, trialdir
from autotune_trainer.determinism import seed_everything
from autotune_trainer.trialdir import EXIT_BAD_INPUT, EXIT_CRASH, EXIT_NAN, EXIT_OK


def _launch_time():
    """When the runner started this trial (container start included), else now."""
    try:
        return float(os.environ["AUTOTUNE_LAUNCH_TIME"])
    except (KeyError, ValueError):
        return time.time()


def _load_model_module(path):
    spec = importlib.util.spec_from_file_location("autotune_trial_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Trial:
    """One trial's folder, spec and data, and how to build and fit its model."""

    def __init__(self, trial_dir, spec, data):
        self.dir, self.spec = trial_dir, spec
        self.data, self.class_names = data, data.class_names
        self.metric = spec.get("metric", "val_accuracy")
        self.direction = spec.get("direction") or trialdir.default_direction(self.metric)
        self.metrics_path = trial_dir / trialdir.METRICS
        self.checkpoint_dir = trial_dir / trialdir.CHECKPOINT
        self.module = _load_model_module(trial_dir / spec.get("model_file", trialdir.MODEL))

    def completed_epochs(self):
        return trialdir.read_metrics(str(self.metrics_path))

    def forget_progress(self):
        shutil.rmtree(self.checkpoint_dir, ignore_errors=True)
        self.metrics_path.unlink(missing_ok=True)

    def build(self):
        """(compiled model, epochs, batch size) for this trial's parameters."""
        params, defaults = self.spec["params"], self.spec.get("defaults", {})
        if self.spec.get("model_api") == "keras_tuner":
            from autotune_trainer.hp import FixedHyperParameters  # pylint: disable=import-outside-toplevel
            from autotune_trainer.diagnose import built_model  # pylint: disable=import-outside-toplevel
            hp = FixedHyperParameters(params)
            try:
                built = built_model(self.module.build_model(hp), "build_model(hp)")
            finally:  # names seen before a crash count too: the controller searches them from the next trial
                if hp.registered:
                    trialdir.write_json(str(self.dir / trialdir.HP_SEEN), hp.registered)
            return (built, int(hp.values.get("epochs", defaults.get("epochs", 3))),
                    int(hp.values.get("batch_size", defaults.get("batch_size", 64))))
        built = self.module.build_model(input_shape=self.data.input_shape, num_classes=len(self.class_names))
        return built, int(self.module.TRAINING["epochs"]), int(self.module.TRAINING["batch_size"])

    def fit(self, launched):
        """Train (resuming from the checkpoint when there is one); returns (model, epochs, batch size, writer, history)."""
        from autotune_trainer.callbacks import goal_callbacks  # pylint: disable=import-outside-toplevel
        from autotune_trainer.labels import label_form  # pylint: disable=import-outside-toplevel

        model, epochs, batch_size = self.build()
        where = "build_model(hp)'s model" if self.spec.get("model_api") == "keras_tuner" else "the template's model"
        writer, callbacks = goal_callbacks(self, launched, where)
        # Batches stream from the packed files as pixels 0..255 (the model scales its own input, as with Keras'
        # image_dataset_from_directory), labels in the form the model's loss wants (labels.py); validation too.
        form = label_form(model, len(self.class_names))
        train = self.data.batches("train", batch_size, shuffle=True, seed=int(self.spec.get("seed", 1)), labels=form)
        history = model.fit(train, validation_data=self.data.batches("val", batch_size, labels=form), epochs=epochs,
                            shuffle=False, callbacks=callbacks, verbose=2)  # the pipeline shuffles, per epoch
        return model, epochs, batch_size, writer, history


def _fit_resuming(trial, launched, result):
    """Fit, resuming earlier epochs; a checkpoint that cannot be restored restarts the trial from epoch 0."""
    done_before = trial.completed_epochs() if trial.checkpoint_dir.exists() else []
    if not done_before:
        trial.forget_progress()
    started = time.time()
    try:
        return trial.fit(launched), done_before, started
    except Exception as exc:  # pylint: disable=broad-except
        if not done_before or len(trial.completed_epochs()) > len(done_before):
            raise
        print(f"autotune_trainer: WARNING: checkpoint unreadable ({type(exc).__name__}: {exc}); "
              "restarting the trial from epoch 0", file=sys.stderr, flush=True)
        result["checkpoint_discarded"] = f"{type(exc).__name__}: {exc}"[:300]
        trial.forget_progress()
        seed_everything(trial.spec)
        started = time.time()
        return trial.fit(launched), [], started


def _finish(trial, fitted, done_before, fit_started, launched, result):
    """Write result.json (and the trained model); return the exit code."""
    model, epochs, batch_size, writer, history = fitted
    epochs_seen = trial.completed_epochs()
    losses = history.history.get("loss", []) + history.history.get("val_loss", [])
    result.update({
        "epochs_planned": epochs,
        "epochs_run": len(epochs_seen),
        "resumed_from_epoch": len(done_before) or None,
        "fit_seconds": round(time.time() - fit_started, 3),
        "startup_seconds": round((writer.train_begin or fit_started) - launched, 3),
        "batch_size": batch_size,
    })
    result_path = str(trial.dir / trialdir.RESULT)
    if any(not math.isfinite(v) for v in losses) or not epochs_seen:
        result.update(status="nan", reason="loss became NaN or infinite; training stopped")
        trialdir.write_json(result_path, result)
        return EXIT_NAN
    result["value"] = epochs_seen[-1].get(trial.metric)
    if result["value"] is None:
        result.update(status="failed", reason=f"the model reports no '{trial.metric}' (target.metric); expected it in "
                                              "its compile(metrics=[...])")
        trialdir.write_json(result_path, result)
        return EXIT_BAD_INPUT
    model.save(trial.dir / trialdir.SAVED_MODEL)
    shutil.rmtree(trial.checkpoint_dir, ignore_errors=True)
    trialdir.write_json(result_path, result)
    return EXIT_OK


def run_trial(trial_dir, load_data, launched):
    """Train the trial prepared in ``trial_dir``; ``load_data()`` gives the packed data set (already in memory
    when a warm spare runs this, see warm.py). Returns the exit code."""
    try:
        spec = json.loads((trial_dir / trialdir.SPEC).read_text())
    except (OSError, ValueError) as exc:
        print(f"autotune_trainer: cannot read {trial_dir / trialdir.SPEC}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT

    # Heavy imports (Keras, in seed_everything) only after the cheap checks: a bad trial fails in milliseconds.
    seed_everything(spec)
    script = spec.get("model_api") == "script"
    if script:
        ending.ordinary_exit_needed()
    data = None if script else load_data()  # the user's script reads its own data (script.py)
    result = {"status": "ok", "metric": spec.get("metric", "val_accuracy")}
    try:
        if script:
            from autotune_trainer.script import ScriptTrial  # pylint: disable=import-outside-toplevel
            trial = ScriptTrial(trial_dir, spec)
        else:
            trial = Trial(trial_dir, spec, data)
        fitted, done_before, fit_started = _fit_resuming(trial, launched, result)
    except Exception as exc:  # pylint: disable=broad-except
        if trialdir.read_metrics(str(trial_dir / trialdir.METRICS)) or _out_of_memory(exc):
            raise  # it trained, or memory ran out (a budget to raise, not code to fix): an ordinary failure
        where = {"script": "the script", "keras_tuner": "build_model(hp) or its fit"}.get(spec.get("model_api"),
                                                                                         "the model's code")
        return _model_failed(trial_dir, exc, where, None if script else len(data.class_names), result)
    return _finish(trial, fitted, done_before, fit_started, launched, result)


def _out_of_memory(exc):
    return isinstance(exc, MemoryError) or type(exc).__name__ == "ResourceExhaustedError"


def _model_failed(trial_dir, exc, where, classes, result):
    """The model's own code failed before its first epoch: one line with the cause and the fix, in result.json."""
    import traceback  # pylint: disable=import-outside-toplevel

    from autotune_trainer.diagnose import model_error  # pylint: disable=import-outside-toplevel

    traceback.print_exc()
    line = model_error(exc, where, classes)
    print(f"autotune_trainer: {line}", file=sys.stderr, flush=True)
    result.update(status=trialdir.MODEL_ERROR, reason=line)
    trialdir.write_json(str(trial_dir / trialdir.RESULT), result)
    return EXIT_CRASH


def main(argv=None):
    parser = argparse.ArgumentParser(prog="autotune_trainer", description=__doc__)
    parser.add_argument("trial_dir", type=Path)
    parser.add_argument("--data", type=Path, required=True, help="packed data set (a folder)")
    args = parser.parse_args(argv)
    launched = _launch_time()
    if not args.data.is_dir():
        print(f"autotune_trainer: data set {args.data} not found; expected a packed data set folder", file=sys.stderr)
        return EXIT_BAD_INPUT

    def load_data():
        from autotune_trainer.data import load_dataset  # pylint: disable=import-outside-toplevel
        return load_dataset(args.data)

    return run_trial(args.trial_dir, load_data, launched)


def run(entry=None):
    try:
        return (entry or main)()
    except Exception as exc:  # pylint: disable=broad-except
        # The traceback goes to the log the runner keeps; the controller records the last lines.
        import traceback  # pylint: disable=import-outside-toplevel
        traceback.print_exc()
        print(f"autotune_trainer: trial crashed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_CRASH


if __name__ == "__main__":
    ending.leave(run())
