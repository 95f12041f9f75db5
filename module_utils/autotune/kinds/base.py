"""What a model kind is: how it is detected, planned, turned into each trial's code, checked and verified.

A kind is one subclass of ModelKind (template.py, keras_tuner.py, script.py) registered in KINDS
(kinds/__init__.py). Its ``name`` is the plan's ``api`` and the trial spec's ``model_api``: recorded in
trial.json, it picks the trainer's side of the same kind (trainer/autotune_trainer/kinds/). The kinds keep no
state: what one learns about a model is in its plan (a dict), which every later step is given back.
"""


class ModelKind:
    """The defaults a kind overrides where it differs; ``detects``, ``plan`` and ``code`` it must give."""

    name = None  # the registry key: plan["api"], trial.json's model_api
    # The trainer feeds the model the controller's pack, so its validation metric is on the pack's validation split
    # (what a constant answer scores there is known: strategies.chance_stop). False: it reads its own images.
    fed_the_pack = True

    def detects(self, model, model_file):
        """Whether the configuration's ``model`` section is of this kind; ``model_file`` is the user's file as
        read (source.ModelFile), None for a template."""
        raise NotImplementedError

    def plan(self, config, templates_dir, model_file):
        """(plan, facts): the plan holds api, baseline, space, ladder and what ``code`` needs; the search
        section's space and ladder override the kind's own (``searched``)."""
        raise NotImplementedError

    def code(self, plan, params, trial_number):
        """The model code of one trial, with ``params`` in it."""
        raise NotImplementedError

    def space_lines(self, baseline, space):  # pylint: disable=unused-argument
        """One line per value the kind cannot take, beyond the space's own checks (space.check)."""
        return []

    def check(self, plan, classes):  # pylint: disable=unused-argument
        """(errors, warnings) of this model on the data set's ``classes``, found before anything starts."""
        return [], []

    def verification_data(self, config, dataset):  # pylint: disable=unused-argument
        """What the verifier reads beyond the packs (study.verification_data): nothing, for a model fed the pack."""
        return {}

    def held_out_note(self, config, plan):  # pylint: disable=unused-argument
        """None when no trial could read the held-out images, else one line saying why the test score is not."""
        return None


def searched(search, default_space, default_ladder):
    """(space, ladder): the search section's, else the kind's defaults, ``default_space()`` and
    ``default_ladder(space)`` (called only when the section gives none)."""
    space = search.get("space") or default_space()
    return space, search.get("ladder") or default_ladder(space)


def ordered_ladder(space):
    """Every hyperparameter that is not a float, in the space's order: a ladder rung is a discrete step."""
    return [n for n, s in space.items() if s["type"] != "float"]
