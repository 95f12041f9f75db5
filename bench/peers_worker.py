#!/usr/bin/env python3
"""One in-process peer run for bench/peers.py: Keras Tuner (Hyperband, BayesianOptimization) or plain Optuna.

Every trial of the run shares this process, as these tools do. The first epoch whose val_accuracy
reaches the goal, confirmed on the held-out split unless --stop validation, saves that model, writes the result file
(the epoch's wall-clock time) and ends the process; so does the budget.
"""
import argparse
import json
import os
import threading
import time
from pathlib import Path

import ansible.module_utils

REPO = Path(__file__).resolve().parent.parent
ansible.module_utils.__path__.append(str(REPO / "module_utils"))

import keras  # noqa: E402
import optuna  # noqa: E402

from ansible.module_utils.autotune import dataset as tune_dataset  # noqa: E402
from ansible.module_utils.autotune.kinds import template as template_kind  # noqa: E402
from ansible.module_utils.autotune import space as search_space  # noqa: E402
import workloads  # noqa: E402

TEMPLATE = str(REPO / "model_templates" / "cnn.py.j2")
COUNT = {"trials": 0, "epochs": 0, "refused": 0}
TRACE = []  # (wall-clock time, val_accuracy) of every epoch: how fast the best grows, to choose a workload's goal


def finish(out, reached_at):
    Path(out).write_text(json.dumps(dict(COUNT, reached_at=reached_at, trace=TRACE)))
    os._exit(0)  # pylint: disable=protected-access  # stop the whole search at once, as a goal stop does


class Goal(keras.callbacks.Callback):
    """Ends the search at the first epoch whose val_accuracy reaches the goal. Given the held-out pack (--stop
    held-out, the default), only once the model's accuracy there confirms it, as our verifier does: a refused
    candidate is counted and the search goes on. Either way the check's seconds are on the peer's clock."""

    def __init__(self, goal, out, held_out=None):
        super().__init__()
        self.goal, self.out, self.held_out = goal, out, held_out

    def on_epoch_end(self, epoch, logs=None):
        COUNT["epochs"] += 1
        value = float((logs or {}).get("val_accuracy", 0))
        TRACE.append((round(time.time(), 2), round(value, 4)))
        if value < self.goal - 1e-6:
            return
        from autotune_trainer.verify import predicted_accuracy  # pylint: disable=import-outside-toplevel  # ours
        if self.held_out and predicted_accuracy(self.model, (self.held_out, "test"), None)[0] < self.goal - 1e-6:
            COUNT["refused"] += 1
            return
        reached_at = time.time()
        # The result in hand, as a user of this tool has it: the best model saved (the user's clock, peers.py).
        self.model.save(str(Path(self.out).with_suffix(".keras")))
        finish(self.out, reached_at)


def build(params, data):
    """The cnn template rendered with these values: the same model code our trials run."""
    baseline = {n: s["default"] for n, s in template_kind.template_meta(TEMPLATE)["hyperparameters"].items()}
    namespace = {}
    exec(compile(template_kind.render(TEMPLATE, dict(baseline, **params)), TEMPLATE, "exec"), namespace)  # noqa: S102
    COUNT["trials"] += 1
    return namespace["build_model"](data.input_shape, len(data.class_names)), namespace["TRAINING"]["batch_size"]


def keras_tuner(kind, seed, data, goal, work, max_epochs):
    import keras_tuner as kt  # pylint: disable=import-outside-toplevel

    def hypermodel(hp):
        params = {"blocks": hp.Int("blocks", 1, 3), "filters": hp.Int("filters", 4, 32, sampling="log"),
                  "kernel_size": hp.Choice("kernel_size", [3, 5]),
                  "dense_units": hp.Int("dense_units", 8, 128, sampling="log"),
                  "learning_rate": hp.Float("learning_rate", 3e-4, 1e-2, sampling="log")}
        return build(params, data)[0]

    class Bayes(kt.BayesianOptimization):
        def run_trial(self, trial, *args, **kwargs):
            kwargs["epochs"] = trial.hyperparameters.Int("epochs", 1, max_epochs)
            return super().run_trial(trial, *args, **kwargs)

    common = {"objective": "val_accuracy", "seed": seed, "directory": str(work), "project_name": f"{kind}-{seed}",
              "overwrite": True}
    # Brackets repeated (hyperband_iterations) rather than one: a user after a goal runs it again until it is reached.
    tuner = (kt.Hyperband(hypermodel, max_epochs=max_epochs, factor=3, hyperband_iterations=100, **common)
             if kind == "kt-hyperband"
             else Bayes(hypermodel, max_trials=500, **common))
    # The same streaming input pipeline our trainer feeds (autotune_trainer.data): same batches, same scaling.
    tuner.search(data.batches("train", 64, shuffle=True, seed=seed), validation_data=data.batches("val", 64),
                 epochs=max_epochs, callbacks=[goal], verbose=0)


class Report(keras.callbacks.Callback):
    """Optuna's per-epoch report and prune, as our controller does it across the process boundary."""

    def __init__(self, trial):
        super().__init__()
        self.trial = trial

    def on_epoch_end(self, epoch, logs=None):
        self.trial.report(float((logs or {})["val_accuracy"]), step=epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned()


def plain_optuna(seed, data, goal, pruner, space):
    from ansible.module_utils.autotune import strategies  # pylint: disable=import-outside-toplevel
    plan = {"space": space, "baseline": {"epochs": 1}}
    config = {"search": {"startup_trials": 4, "pruner": pruner}}
    study = optuna.create_study(direction="maximize", pruner=strategies.make_pruner(config, plan),
                                sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=4, constant_liar=True))
    def objective(trial):
        keras.backend.clear_session()
        params = search_space.suggest(trial, space, {})
        model, batch_size = build(params, data)
        history = model.fit(data.batches("train", batch_size, shuffle=True, seed=seed),
                            validation_data=data.batches("val", batch_size), epochs=params["epochs"],
                            callbacks=[Report(trial), goal], verbose=0)
        return history.history["val_accuracy"][-1]

    study.optimize(objective, n_trials=500)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("system", choices=["kt-hyperband", "kt-bayes", "optuna"])
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--goal", type=float, required=True)
    parser.add_argument("--budget", type=int, required=True)
    parser.add_argument("--pruner", default="median")
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--workload", type=workloads.workload, required=True, help="bench/workloads.py")
    parser.add_argument("--stop", choices=("held-out", "validation"), default="held-out",
                        help="stop at the goal once the held-out split confirms it (ours' contract), or on validation")
    args = parser.parse_args()
    threading.Timer(args.budget, finish, (args.out, None)).start()
    # Packed afresh in every run, as our runs pack it: reading the image folder is on each user's clock.
    packed = tune_dataset.prepare(args.workload.dataset(), str(args.work / f"data-{args.system}-{args.seed}"))
    from autotune_trainer.data import load_dataset  # noqa: E402  pylint: disable=import-outside-toplevel
    data = load_dataset(packed["path"])
    goal = Goal(args.goal, args.out, packed["test_path"] if args.stop == "held-out" else None)
    keras.utils.set_random_seed(args.seed)
    if args.system == "optuna":
        plain_optuna(args.seed, data, goal, args.pruner, args.workload.space())
    else:
        keras_tuner(args.system, args.seed, data, goal, args.work, args.workload.max_epochs)
    finish(args.out, None)


if __name__ == "__main__":
    import sys
    sys.path.insert(0, str(REPO / "trainer"))
    sys.path.insert(0, str(REPO / "bench"))
    main()
