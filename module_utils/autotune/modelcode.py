"""The model's plan and each trial's code, through its kind (kinds/: a template, a build_model(hp) file, a script).

The model is read by parsing it, never by running it (kinds/source.py); what differs by kind is in its class.
"""
from ansible.module_utils.autotune import space as search_space
from ansible.module_utils.autotune.errors import AutotuneError
from ansible.module_utils.autotune.kinds import detect, kind_of


def plan(config, templates_dir):
    """Everything the loop needs about the model: API (its kind), baseline, space, ladder, facts.

    A template brings defaults and ranges in its metadata; a user's
    build_model(hp) file brings them in its hp.* calls, a script in its values. The configuration's
    model.baseline and search.space/ladder override either.
    """
    kind, model_file = detect(config["model"])
    result, found = kind.plan(config, templates_dir, model_file)
    space, baseline, ladder, search = result["space"], result["baseline"], result["ladder"], config["search"]
    lines = search_space.check(space, baseline) + kind.space_lines(baseline, space)
    if not space:
        lines.append("search.space: empty; expected at least one hyperparameter to search")
    if lines:
        raise AutotuneError("; ".join(lines), lines)
    if search["strategy"] == "escalate":
        if not ladder:
            raise AutotuneError("search.ladder: empty; expected hyperparameter names for the escalate strategy")
        search_space.check_ladder(ladder, space)
    result["facts"] = found
    return result


def code_for(model_plan, params, trial_number):
    """The model code of one trial: the template rendered, the user's script rewritten, or their file as is."""
    return kind_of(model_plan).code(model_plan, params, trial_number)
