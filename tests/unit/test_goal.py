"""The goal check agrees with Keras' float32 metrics (380 of 400 right is 95 %) and follows target.direction."""
import numpy as np
import pytest

from ansible.module_utils.autotune.trialdir import reaches
from autotune_trainer.callbacks import GoalStop, RequireMetric
from autotune_trainer.diagnose import MissingMetric, model_error


def test_float32_accuracy_equal_to_the_goal_reaches_it():
    exactly = float(np.float32(380 / 400))
    assert exactly < 0.95  # what Keras hands over
    assert reaches(exactly, 0.95)
    assert not reaches(float(np.float32(379 / 400)), 0.95)
    assert not reaches(None, 0.5)


def test_trainer_goal_stop_agrees():
    class Model:
        stop_training = False

    stop = GoalStop("val_accuracy", 0.95)
    stop.set_model(Model())
    stop.on_epoch_end(0, {"val_accuracy": np.float32(379 / 400)})
    assert stop.model.stop_training is False
    stop.on_epoch_end(1, {"val_accuracy": np.float32(380 / 400)})
    assert stop.model.stop_training is True


def test_a_minimised_goal_is_reached_at_or_below_it():
    assert reaches(0.3, 0.3, "minimize") and reaches(float(np.float32(0.3)), 0.3, "minimize")
    assert reaches(0.1, 0.3, "minimize") and not reaches(0.31, 0.3, "minimize")
    assert not reaches(None, 0.3, "minimize")


def test_trainer_goal_stop_follows_the_direction():
    class Model:
        stop_training = False

    stop = GoalStop("val_loss", 0.3, "minimize")
    stop.set_model(Model())
    stop.on_epoch_end(0, {"val_loss": np.float32(0.9)})
    assert stop.model.stop_training is False
    stop.on_epoch_end(1, {"val_loss": np.float32(0.29)})
    assert stop.model.stop_training is True


def test_a_metric_the_model_does_not_log_fails_its_first_epoch_in_one_line_naming_what_it_logs():
    check = RequireMetric("val_auc", "build_model(hp)'s model")
    check.on_epoch_end(0, {"val_auc": 0.7, "val_loss": 0.5})  # logged: nothing to say
    with pytest.raises(MissingMetric) as caught:
        check.on_epoch_end(0, {"accuracy": 0.6, "loss": 0.7, "val_accuracy": 0.55, "val_loss": 0.69})
    line = model_error(caught.value, "build_model(hp) or its fit", classes=2)
    assert line == ("target.metric 'val_auc' is not logged by build_model(hp)'s model (its validation metrics: "
                    "val_accuracy, val_loss); expected one of those, or 'auc' in its compile(metrics=[...])")
