"""The build_model(hp) kind: a user's file in Keras Tuner's style, trained as it is; its hp.* calls (read, never
run) bring the defaults and ranges, and the trainer hands build_model fixed values (autotune_trainer/hp.py)."""
from ansible.module_utils.autotune.errors import AutotuneError
from ansible.module_utils.autotune.kinds.base import ModelKind, ordered_ladder, searched

TRAINING_DEFAULTS = {"epochs": 3, "batch_size": 64}  # when build_model's hp names neither


class KerasTunerKind(ModelKind):
    """model.file defining build_model(...): the same file is every trial's code."""

    name = "keras_tuner"

    def detects(self, model, model_file):
        return model_file is not None and model_file.facts["build_model_args"] is not None

    def plan(self, config, templates_dir, model_file):
        path, found = model_file.path, model_file.facts
        if found["build_model_args"] != ["hp"]:
            raise AutotuneError(f"model.file: {path!r} defines build_model({', '.join(found['build_model_args'])}); "
                                "expected build_model(hp) in Keras Tuner's style")
        baseline = dict(found["hyperparameters"], **(config["model"].get("baseline") or {}))
        space, ladder = searched(config["search"], lambda: found["space"], ordered_ladder)
        return {"api": self.name, "file": path, "baseline": baseline, "source": model_file.source,
                "training_defaults": dict(TRAINING_DEFAULTS), "space": space, "ladder": ladder}, found

    def code(self, plan, params, trial_number):
        return plan["source"]
