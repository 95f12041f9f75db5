"""Model kinds: what a model is (a template, a build_model(hp) file, a script), one file per kind (base.py says what a
kind is).

Adding a kind: a new file with a ModelKind subclass (its name, how it is detected, planned and turned into each
trial's code), a trainer-side class of the same name (trainer/autotune_trainer/kinds/), and one line in KINDS below.
Planning, the study loop, the verifier's data and the reports pick it up from here; nothing else names a kind.
"""
import os

from ansible.module_utils.autotune.errors import AutotuneError
from ansible.module_utils.autotune.kinds.keras_tuner import KerasTunerKind
from ansible.module_utils.autotune.kinds.script import ScriptKind, find_script
from ansible.module_utils.autotune.kinds.source import read_model_file
from ansible.module_utils.autotune.kinds.template import TemplateKind

KINDS = {kind.name: kind for kind in (TemplateKind(), KerasTunerKind(), ScriptKind())}


def kind_named(name):
    try:
        return KINDS[name]
    except (KeyError, TypeError):
        raise AutotuneError(f"model kind: {name!r} is unknown; expected one of {', '.join(KINDS)}")


def kind_of(plan):
    """The kind a plan was made by (its ``api``)."""
    return kind_named(plan.get("api"))


def detect(model):
    """(kind, the user's file as read or None) of the configuration's ``model`` section: a template, or a file
    (a folder: the one Keras script in it) told apart by what its source defines."""
    model_file = None
    if model.get("file"):
        path = model["file"]
        model_file = read_model_file(find_script(path) if os.path.isdir(path) else path)
    for kind in KINDS.values():
        if kind.detects(model, model_file):
            return kind, model_file
    raise AutotuneError(f"model: {sorted(model)!r} is of no known kind; expected 'template' or 'file' "
                        f"(one of {', '.join(KINDS)})")
