"""A rendered template: model.py defines build_model(input_shape, num_classes) and TRAINING (model_templates/)."""
from autotune_trainer.kinds.base import ModelTrial, load_model_module


class TemplateTrial(ModelTrial):
    name = "template"
    model_words = "the template's model"

    def __init__(self, trial_dir, spec, data):
        super().__init__(trial_dir, spec, data)
        self.module = load_model_module(self.model_path)  # its import failing is the model's code failing

    def build(self):
        built = self.module.build_model(input_shape=self.data.input_shape, num_classes=len(self.data.class_names))
        return built, int(self.module.TRAINING["epochs"]), int(self.module.TRAINING["batch_size"])
