"""A user's build_model(hp) file, given this trial's values as fixed hyperparameters (hp.py)."""
from autotune_trainer import trialdir
from autotune_trainer.kinds.base import ModelTrial, load_model_module


class KerasTunerTrial(ModelTrial):
    name = "keras_tuner"
    model_words = "build_model(hp)'s model"
    failed_words = "build_model(hp) or its fit"

    def __init__(self, trial_dir, spec, data):
        super().__init__(trial_dir, spec, data)
        self.module = load_model_module(self.model_path)  # its import failing is the model's code failing

    def build(self):
        from autotune_trainer.diagnose import built_model  # pylint: disable=import-outside-toplevel
        from autotune_trainer.hp import FixedHyperParameters  # pylint: disable=import-outside-toplevel

        params, defaults = self.spec["params"], self.spec.get("defaults", {})
        hp = FixedHyperParameters(params)
        try:
            built = built_model(self.module.build_model(hp), "build_model(hp)")
        finally:  # names seen before a crash count too: the controller searches them from the next trial
            if hp.registered:
                trialdir.write_json(str(self.dir / trialdir.HP_SEEN), hp.registered)
        return (built, int(hp.values.get("epochs", defaults.get("epochs", 3))),
                int(hp.values.get("batch_size", defaults.get("batch_size", 64))))
