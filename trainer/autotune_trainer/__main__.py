"""Entry point: ``python -m autotune_trainer TRIAL_DIR --data DATASET.npz``."""
import argparse
import importlib.util
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

from autotune_trainer import EXIT_BAD_INPUT, EXIT_CRASH, EXIT_NAN, EXIT_OK


def _write_json(path, payload):
    """Write atomically: a reader never sees half a file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True))
    os.replace(tmp, path)


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


def _completed_epochs(metrics_path):
    if not metrics_path.exists():
        return []
    lines = [line for line in metrics_path.read_text().splitlines() if line.strip()]
    return [json.loads(line) for line in lines]


def main(argv=None):
    parser = argparse.ArgumentParser(prog="autotune_trainer", description=__doc__)
    parser.add_argument("trial_dir", type=Path)
    parser.add_argument("--data", type=Path, required=True, help="packed data set (.npz)")
    args = parser.parse_args(argv)
    launched = _launch_time()

    trial_dir = args.trial_dir
    try:
        spec = json.loads((trial_dir / "trial.json").read_text())
    except (OSError, ValueError) as exc:
        print(f"autotune_trainer: cannot read {trial_dir / 'trial.json'}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if not args.data.is_file():
        print(f"autotune_trainer: data set {args.data} not found; expected a packed .npz", file=sys.stderr)
        return EXIT_BAD_INPUT

    # Heavy imports only after the cheap checks: a bad trial fails in milliseconds.
    import keras  # noqa: E402  pylint: disable=import-outside-toplevel

    from autotune_trainer.callbacks import GoalStop, MetricsWriter  # pylint: disable=import-outside-toplevel
    from autotune_trainer.data import load_dataset  # pylint: disable=import-outside-toplevel
    from autotune_trainer.hp import FixedHyperParameters  # pylint: disable=import-outside-toplevel

    keras.utils.set_random_seed(int(spec.get("seed", 1)))
    x_train, y_train, x_val, y_val, class_names = load_dataset(args.data)
    module = _load_model_module(trial_dir / spec.get("model_file", "model.py"))
    params = spec["params"]
    defaults = spec.get("defaults", {})

    def build():
        if spec.get("model_api") == "keras_tuner":
            hp = FixedHyperParameters(params)
            built = module.build_model(hp)
            return (built, int(hp.values.get("epochs", defaults.get("epochs", 3))),
                    int(hp.values.get("batch_size", defaults.get("batch_size", 64))))
        built = module.build_model(input_shape=x_train.shape[1:], num_classes=len(class_names))
        return built, int(module.TRAINING["epochs"]), int(module.TRAINING["batch_size"])

    metric = spec.get("metric", "val_accuracy")
    metrics_path = trial_dir / "metrics.jsonl"
    checkpoint_dir = trial_dir / "checkpoint"
    done_before = _completed_epochs(metrics_path) if checkpoint_dir.exists() else []
    if not done_before:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
        metrics_path.unlink(missing_ok=True)
    goal = spec.get("goal")
    result = {"status": "ok", "metric": metric}

    def fit():
        model, epochs, batch_size = build()
        writer = MetricsWriter(metrics_path, launched)
        callbacks = [
            # First, so a checkpoint exists for every epoch line the writer appends after it.
            keras.callbacks.BackupAndRestore(str(checkpoint_dir), delete_checkpoint=False),
            writer,
            keras.callbacks.TerminateOnNaN(),
        ]
        if goal is not None and spec.get("stop_at_goal", True):
            callbacks.append(GoalStop(metric, float(goal)))
        history = model.fit(x_train, y_train, validation_data=(x_val, y_val), epochs=epochs,
                            batch_size=batch_size, callbacks=callbacks, verbose=2)
        return model, epochs, batch_size, writer, history

    fit_started = time.time()
    try:
        model, epochs, batch_size, writer, history = fit()
    except Exception as exc:  # pylint: disable=broad-except
        if not done_before or len(_completed_epochs(metrics_path)) > len(done_before):
            raise
        # The checkpoint could not be restored: start this trial again from epoch 0, never crash on it.
        print(f"autotune_trainer: WARNING: checkpoint unreadable ({type(exc).__name__}: {exc}); "
              "restarting the trial from epoch 0", file=sys.stderr, flush=True)
        result["checkpoint_discarded"] = f"{type(exc).__name__}: {exc}"[:300]
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
        metrics_path.unlink(missing_ok=True)
        done_before = []
        keras.utils.set_random_seed(int(spec.get("seed", 1)))
        fit_started = time.time()
        model, epochs, batch_size, writer, history = fit()
    fit_seconds = time.time() - fit_started
    epochs_seen = _completed_epochs(metrics_path)
    losses = history.history.get("loss", []) + history.history.get("val_loss", [])
    result.update({
        "epochs_planned": epochs,
        "epochs_run": len(epochs_seen),
        "resumed_from_epoch": len(done_before) or None,
        "fit_seconds": round(fit_seconds, 3),
        "startup_seconds": round((writer.train_begin or fit_started) - launched, 3),
        "batch_size": batch_size,
    })
    if any(not math.isfinite(v) for v in losses) or not epochs_seen:
        result.update(status="nan", reason="loss became NaN or infinite; training stopped")
        _write_json(trial_dir / "result.json", result)
        return EXIT_NAN
    result["value"] = epochs_seen[-1].get(metric)
    if result["value"] is None:
        result.update(status="failed", reason=f"the model reports no '{metric}'; compile it with metrics=['accuracy']")
        _write_json(trial_dir / "result.json", result)
        return EXIT_BAD_INPUT
    model.save(trial_dir / "model.keras")
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    _write_json(trial_dir / "result.json", result)
    return EXIT_OK


def run():
    try:
        return main()
    except Exception as exc:  # pylint: disable=broad-except
        # The traceback goes to the log the runner keeps; the controller records the last lines.
        import traceback  # pylint: disable=import-outside-toplevel
        traceback.print_exc()
        print(f"autotune_trainer: trial crashed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_CRASH


if __name__ == "__main__":
    sys.exit(run())
