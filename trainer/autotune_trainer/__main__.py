"""Entry point: ``python -m autotune_trainer TRIAL_DIR --data PACKED_DATASET_FOLDER``."""
import argparse
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

from autotune_trainer import ending, trialdir
from autotune_trainer.checkpoint import resume_point
from autotune_trainer.determinism import seed_everything
from autotune_trainer.kinds import trial_class
from autotune_trainer.trialdir import EXIT_BAD_INPUT, EXIT_CRASH, EXIT_NAN, EXIT_OK


def _launch_time():
    """When the runner started this trial (container start included), else now."""
    try:
        return float(os.environ["AUTOTUNE_LAUNCH_TIME"])
    except (KeyError, ValueError):
        return time.time()


def _fit_resuming(trial, launched, result):
    """Fit, resuming earlier epochs; a checkpoint that cannot be restored restarts the trial from epoch 0."""
    done_before, why = resume_point(trial.checkpoint_dir, trial.metrics_path)
    if not done_before:
        if why:
            _discard(result, why)
        trial.forget_progress()
    started = time.time()
    try:
        return trial.fit(launched), done_before, started
    except Exception as exc:  # pylint: disable=broad-except
        if not done_before or len(trial.completed_epochs()) > len(done_before):
            raise
        _discard(result, f"{type(exc).__name__}: {exc}")
        trial.forget_progress()
        seed_everything(trial.spec)
        started = time.time()
        return trial.fit(launched), [], started


def _discard(result, why):
    print(f"autotune_trainer: WARNING: checkpoint unreadable ({why}); restarting the trial from epoch 0",
          file=sys.stderr, flush=True)
    result["checkpoint_discarded"] = why[:300]


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
    if not _epochs_left(epochs_seen, epochs):
        # Kept when the goal stop ended the fit with epochs left: if the held-out split refuses the claim, the
        # controller lets another trial train on from it (module_utils/autotune/continuation.py).
        shutil.rmtree(trial.checkpoint_dir, ignore_errors=True)
    trialdir.write_json(result_path, result)
    return EXIT_OK


def _epochs_left(epochs_seen, planned):
    """Whether the fit ended before the epochs it was given (a script's fit(epochs=...) may be anything)."""
    try:
        return len(epochs_seen) < int(planned)
    except (TypeError, ValueError, OverflowError):
        return False


def run_trial(trial_dir, load_data, launched):
    """Train the trial prepared in ``trial_dir``; ``load_data()`` gives the packed data set (already in memory
    when a warm spare runs this, see warm.py). Returns the exit code."""
    try:
        spec = json.loads((trial_dir / trialdir.SPEC).read_text())
    except (OSError, ValueError) as exc:
        print(f"autotune_trainer: cannot read {trial_dir / trialdir.SPEC}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT

    try:
        kind = trial_class(spec.get("model_api", "template"))
    except ValueError as exc:
        print(f"autotune_trainer: {trialdir.SPEC}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT

    # Heavy imports (Keras, in seed_everything) only after the cheap checks: a bad trial fails in milliseconds.
    seed_everything(spec)
    if kind.ordinary_exit:
        ending.ordinary_exit_needed()
    data = load_data() if kind.reads_pack else None  # a script reads its own data (kinds/script.py)
    result = {"status": "ok", "metric": spec.get("metric", "val_accuracy")}
    try:
        trial = kind(trial_dir, spec, data)
        fitted, done_before, fit_started = _fit_resuming(trial, launched, result)
    except Exception as exc:  # pylint: disable=broad-except
        if trialdir.read_metrics(str(trial_dir / trialdir.METRICS)) or _out_of_memory(exc):
            raise  # it trained, or memory ran out (a budget to raise, not code to fix): an ordinary failure
        return _model_failed(trial_dir, exc, kind.failed_words, len(data.class_names) if data is not None else None,
                             result)
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
