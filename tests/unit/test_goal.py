"""The goal check agrees with Keras' float32 metrics: 380 of 400 right is 95 %."""
import numpy as np

from ansible.module_utils.autotune.trialdir import reaches
from autotune_trainer.callbacks import GoalStop


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
