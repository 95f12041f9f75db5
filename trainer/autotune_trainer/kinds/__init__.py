"""Model kinds on the trainer's side, one file per kind (base.py says what one is): trial.json's ``model_api``
picks the class. Adding a kind: a ModelTrial subclass in a new file, named as its controller-side ModelKind
(module_utils/autotune/kinds/), and one line in KINDS below."""
from autotune_trainer.kinds.keras_tuner import KerasTunerTrial
from autotune_trainer.kinds.script import ScriptTrial
from autotune_trainer.kinds.template import TemplateTrial

KINDS = {kind.name: kind for kind in (TemplateTrial, KerasTunerTrial, ScriptTrial)}


def trial_class(name):
    """The trial class of a kind; an unknown one is a ValueError whose text is one line."""
    try:
        return KINDS[name]
    except (KeyError, TypeError):
        raise ValueError(f"model_api {name!r} is unknown; expected one of {', '.join(KINDS)}") from None
