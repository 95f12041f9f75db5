"""The template kind: model_templates/<name>.py.j2 (or one beside the configuration) and its metadata, rendered
for each trial in Jinja2's sandbox."""
import os
import re

import jinja2
import jinja2.sandbox
import yaml

from ansible.module_utils.autotune import bounded
from ansible.module_utils.autotune.config import param_lines, schema_lines
from ansible.module_utils.autotune.errors import AutotuneError
from ansible.module_utils.autotune.kinds.base import ModelKind, searched
from ansible.module_utils.autotune.kinds.source import SUPPORTED_FRAMEWORKS, facts

_HYPERPARAMETER = {
    "type": "object", "required": ["default", "type"], "additionalProperties": False,
    "description": "a hyperparameter: {default, type: int|float|categorical|bool, low, high, step, log, choices, help}",
    "properties": {
        "default": {"description": "the baseline value"},
        "type": {"enum": ["int", "float", "categorical", "bool"], "description": "one of int, float, categorical, bool"},
        "low": {"type": "number", "description": "a number, the lowest value"},
        "high": {"type": "number", "description": "a number, the highest value"},
        "step": {"type": "number", "exclusiveMinimum": 0, "description": "a positive number"},
        "log": {"type": "boolean", "description": "true or false"},
        "choices": {"type": "array", "minItems": 1, "description": "a non-empty list of values"},
        "help": {"type": "string", "description": "one line saying what it changes"},
    },
}
TEMPLATE_META_SCHEMA = {
    "type": "object", "required": ["framework", "hyperparameters"], "additionalProperties": False,
    "description": "a mapping with 'framework' and 'hyperparameters'",
    "properties": {
        "description": {"type": "string", "description": "one line describing the model"},
        "framework": {"enum": list(SUPPORTED_FRAMEWORKS), "description": "one of " + ", ".join(SUPPORTED_FRAMEWORKS)},
        "kind": {"type": "string", "description": "the model kind, e.g. cnn"},
        "hyperparameters": {"type": "object", "minProperties": 1, "additionalProperties": _HYPERPARAMETER,
                            "description": "a mapping of hyperparameter names to their default and range"},
        "search": {"type": "array", "items": {"type": "string"}, "description": "a list of hyperparameter names"},
        "ladder": {"type": "array", "items": {"type": "string"}, "description": "a list of hyperparameter names"},
        "metrics": {"type": "array", "items": {"type": "string"},
                    "description": "a list of the validation metrics the template can log (val_accuracy, val_loss, ...)"},
    },
}
# A hyperparameter value a template may print into model code: a number, true/false, or a plain word.
_PLAIN_WORD = re.compile(r"^[A-Za-z0-9_.+-]*$")


def template_path(templates_dir, name, model_dir=None):
    """A bare name means model_templates/<name>.py.j2; a path must stay in the templates folder or the model's own."""
    if os.sep not in name and not name.endswith(".j2"):
        return os.path.join(templates_dir, f"{name}.py.j2")
    path = os.path.realpath(os.path.join(model_dir or os.getcwd(), name))
    allowed = [os.path.realpath(d) for d in (templates_dir, model_dir) if d]
    if not any(path.startswith(folder + os.sep) for folder in allowed):
        raise AutotuneError(f"model.template: {name!r} is outside the templates folder and the model's folder; "
                            "expected a template name or a .py.j2 beside the configuration")
    return path


def template_meta(path):
    """The template's sidecar metadata (cnn.py.j2 -> cnn.yml), validated: defaults, ranges, ladder."""
    meta_path = path[: -len(".py.j2")] + ".yml" if path.endswith(".py.j2") else path + ".yml"
    if not os.path.isfile(path):
        raise AutotuneError(f"model.template: {path!r} does not exist; expected a Jinja2 model template (.py.j2)")
    if not os.path.isfile(meta_path):
        raise AutotuneError(f"model.template: {meta_path!r} is missing; expected the template's metadata beside it")
    try:
        with open(meta_path, encoding="utf-8") as handle:
            meta = yaml.safe_load(handle)
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise AutotuneError(f"{meta_path}: not valid YAML ({type(exc).__name__}); expected the template's metadata mapping")
    lines = schema_lines(TEMPLATE_META_SCHEMA, meta if isinstance(meta, dict) else [])
    for name, spec in (meta.get("hyperparameters") or {}).items() if not lines else ():
        lines.extend(param_lines(f"hyperparameters.{name}", spec))
    if lines:
        raise AutotuneError(f"{meta_path} is invalid: " + "; ".join(lines), lines)
    return meta


def _check_values(path, hp):
    for name, value in hp.items():
        if not (value is None or isinstance(value, (bool, int, float)) or
                (isinstance(value, str) and _PLAIN_WORD.match(value))):
            raise AutotuneError(f"model.baseline.{name}: {value!r} cannot go into {os.path.basename(path)}; "
                                "expected a number, true/false or a plain word (letters, digits, _ . + -)")


def _python_literal(value):
    if value is None or isinstance(value, (bool, int, float, str)):
        return repr(value)
    raise TypeError(f"py filter: {type(value).__name__} is not a Python literal")


def render(path, hp, trial_number=None, metric=None):
    """Render a template to Python source in Jinja2's sandbox; the result is compiled to prove it is valid Python.
    ``metric`` (target.metric) lets the template compile the model with it (cnn.py.j2: val_auc adds Keras' AUC).

    The template may be pushed code: the sandbox keeps it from reaching the controller's Python while it
    renders, and the values it prints are checked to be literals, so a configuration value never becomes code.
    It renders in a child bounded in time and memory (bounded.py): a template that loops for ever or builds a
    2 GiB string costs one line.
    """
    _check_values(path, hp)
    return bounded.run(_render, (path, hp, trial_number, metric), f"model.template: rendering {os.path.basename(path)}",
                       "expected a template that prints model code from its hyperparameters (small loops only)")


def _render(path, hp, trial_number, metric=None):
    environment = jinja2.sandbox.SandboxedEnvironment(
        loader=jinja2.FileSystemLoader(os.path.dirname(os.path.abspath(path))),
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False,
    )
    environment.filters["py"] = _python_literal
    try:
        source = environment.get_template(os.path.basename(path)).render(hp=hp, trial_number=trial_number,
                                                                          metric=metric or "val_accuracy")
    except jinja2.exceptions.SecurityError as exc:
        raise AutotuneError(f"model.template: {path!r} tried an unsafe operation ({exc}); expected a template that "
                            "only prints hyperparameters")
    except jinja2.TemplateError as exc:
        raise AutotuneError(f"model.template: {path!r} does not render ({type(exc).__name__}: {exc}); "
                            "expected a template using only the hyperparameters it is given")
    except (TypeError, ValueError, KeyError) as exc:
        raise AutotuneError(f"model.template: {path!r} does not render with {hp!r} ({exc}); expected valid hyperparameter values")
    try:
        compile(source, path, "exec")
    except SyntaxError as exc:
        raise AutotuneError(f"model.template: {path!r} renders invalid Python at line {exc.lineno} ({exc.msg}); expected valid Python")
    return source


def _space_from_meta(meta, names):
    return {n: {k: v for k, v in meta["hyperparameters"][n].items() if k not in ("default", "help")} for n in names}


def _template_metric(metric, meta, path):
    """target.metric, when the template says it can log it (its metadata's ``metrics``; a template that does not say
    is trusted, and the trainer stops trial 0 in one line when the metric is not in its logs)."""
    known = meta.get("metrics")
    if known is not None and metric not in known:
        raise AutotuneError(f"target.metric: {metric!r} is not a metric the template {os.path.basename(path)} logs; "
                            f"expected one of {', '.join(known)}, or model.file with your own compile()")
    return metric



class TemplateKind(ModelKind):
    """model.template: its metadata brings defaults and ranges; each trial's code is the template rendered."""

    name = "template"

    def detects(self, model, model_file):
        return bool(model.get("template"))

    def plan(self, config, templates_dir, model_file):
        model = config["model"]
        path = template_path(templates_dir, model["template"], config.get("base_dir"))
        meta = template_meta(path)
        defaults = {n: spec["default"] for n, spec in meta["hyperparameters"].items()}
        unknown = sorted(set(model.get("baseline") or {}) - set(defaults))
        if unknown:
            raise AutotuneError(f"model.baseline: {unknown} are not hyperparameters of {path!r}; expected names from {sorted(defaults)}")
        baseline = dict(defaults, **(model.get("baseline") or {}))
        space, ladder = searched(config["search"], lambda: _space_from_meta(meta, meta.get("search", [])),
                                 lambda space: [n for n in meta.get("ladder", []) if n in space])
        metric = _template_metric((config.get("target") or {}).get("metric", "val_accuracy"), meta, path)
        found = facts(render(path, baseline, trial_number=0, metric=metric), path)
        found.update(kind=meta.get("kind", found["kind"]), description=meta.get("description"),
                     framework=meta["framework"])
        return {"api": self.name, "template": path, "baseline": baseline, "metric": metric,
                "space": space, "ladder": ladder}, found

    def code(self, plan, params, trial_number):
        return render(plan["template"], params, trial_number=trial_number, metric=plan.get("metric"))
