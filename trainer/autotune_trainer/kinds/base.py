"""What a model kind is on the trainer's side: how its trial builds and fits its model (the controller's side is
module_utils/autotune/kinds/; trial.json's ``model_api`` names the kind)."""
import importlib.util
import shutil

from autotune_trainer import trialdir


def load_model_module(path):
    spec = importlib.util.spec_from_file_location("autotune_trial_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class ModelTrial:
    """One trial's folder, spec and data, and how to fit its model: fed the packed data, with our callbacks.
    A kind gives ``build()``, or its own ``fit()`` (a script)."""

    name = None
    reads_pack = True            # False: the model reads its own images (a script), the pack is not loaded
    ordinary_exit = False        # True: the process ends the ordinary way (a user's code may leave files unflushed)
    model_words = "the model"    # names the model in the target.metric check's line
    failed_words = "the model's code"  # names the code in the line of a failure before the first epoch

    def __init__(self, trial_dir, spec, data):
        self.dir, self.spec, self.data = trial_dir, spec, data
        self.metric = spec.get("metric", "val_accuracy")
        self.direction = spec.get("direction") or trialdir.default_direction(self.metric)
        self.metrics_path = trial_dir / trialdir.METRICS
        self.checkpoint_dir = trial_dir / trialdir.CHECKPOINT
        self.model_path = trial_dir / spec.get("model_file", trialdir.MODEL)

    def completed_epochs(self):
        return trialdir.read_metrics(str(self.metrics_path))

    def forget_progress(self):
        shutil.rmtree(self.checkpoint_dir, ignore_errors=True)
        shutil.rmtree(self.dir / trialdir.TENSORBOARD, ignore_errors=True)  # its epochs restart at 0
        self.metrics_path.unlink(missing_ok=True)

    def build(self):
        """(compiled model, epochs, batch size) for this trial's parameters."""
        raise NotImplementedError

    def fit(self, launched):
        """Train (resuming from the checkpoint when there is one); returns (model, epochs, batch size, writer, history)."""
        from autotune_trainer.callbacks import goal_callbacks  # pylint: disable=import-outside-toplevel
        from autotune_trainer.labels import label_form  # pylint: disable=import-outside-toplevel

        model, epochs, batch_size = self.build()
        writer, callbacks = goal_callbacks(self, launched, self.model_words)
        # Batches stream from the packed files as pixels 0..255 (the model scales its own input, as with Keras'
        # image_dataset_from_directory), labels in the form the model's loss wants (labels.py); validation too.
        form = label_form(model, len(self.data.class_names))
        train = self.data.batches("train", batch_size, shuffle=True, seed=int(self.spec.get("seed", 1)), labels=form)
        history = model.fit(train, validation_data=self.data.batches("val", batch_size, labels=form), epochs=epochs,
                            shuffle=False, callbacks=callbacks, verbose=2)  # the pipeline shuffles, per epoch
        return model, epochs, batch_size, writer, history
