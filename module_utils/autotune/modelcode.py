"""Model code: render a template for a trial, and read a model's facts by parsing it (never running it)."""
import ast
import os
import re

import jinja2
import jinja2.sandbox
import yaml

from ansible.module_utils.autotune import bounded, scriptcode
from ansible.module_utils.autotune.config import param_lines, schema_lines
from ansible.module_utils.autotune.errors import AutotuneError

SUPPORTED_FRAMEWORKS = ("keras",)
# Top-level import name -> framework name reported to the user.
FRAMEWORK_IMPORTS = {
    "keras": "keras", "tensorflow": "keras", "tf_keras": "keras",
    "torch": "pytorch", "lightning": "pytorch", "pytorch_lightning": "pytorch",
    "jax": "jax", "flax": "jax", "sklearn": "scikit-learn", "xgboost": "xgboost",
}
_HP_METHODS = {"Int", "Float", "Choice", "Boolean", "Fixed"}


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
# A model file larger than this is refused before it is parsed: a Keras script is a few KB, and parsing a pushed
# 2.3 MB one took 11 s (ast) and 113 s with 3.6 GB (libcst) of the controller. A script is also read in a bounded
# child (bounded.py).
MAX_MODEL_BYTES = 256 * 1024
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


def _literal(node):
    try:
        return ast.literal_eval(node)
    except ValueError:
        return None


def _hp_spec(call):
    """Turn hp.Int/Float/Choice/Boolean(...) into (name, range spec, default) or None if not literal."""
    method = call.func.attr
    arg_names = {
        "Int": ["name", "min_value", "max_value", "step", "sampling", "default"],
        "Float": ["name", "min_value", "max_value", "step", "sampling", "default"],
        "Choice": ["name", "values", "ordered", "default"],
        "Boolean": ["name", "default"],
        "Fixed": ["name", "value"],
    }[method]
    args = dict(zip(arg_names, (_literal(a) for a in call.args)))
    args.update({k.arg: _literal(k.value) for k in call.keywords if k.arg})
    name = args.get("name")
    if not isinstance(name, str):
        return None
    if method in ("Int", "Float"):
        spec = {"type": method.lower(), "low": args.get("min_value"), "high": args.get("max_value")}
        if args.get("step") is not None:
            spec["step"] = args["step"]
        if args.get("sampling") in ("log", "reverse_log"):
            spec["log"] = True
        default = args.get("default", spec["low"])
    elif method == "Choice":
        spec = {"type": "categorical", "choices": args.get("values") or []}
        default = args.get("default", (spec["choices"] or [None])[0])
    elif method == "Boolean":
        spec, default = {"type": "bool"}, args.get("default", False)
    else:
        spec, default = None, args.get("value")
    return name, spec, default


def facts(source, origin, require_build_model=True):
    """What a model file is, read from its syntax tree: framework, kind, layers, hyperparameters."""
    try:
        tree = ast.parse(source, filename=origin)
    except SyntaxError as exc:
        raise AutotuneError(f"model: {origin!r} is not valid Python (line {exc.lineno}: {exc.msg}); expected a Python model file")
    frameworks = set()
    layers, space, baseline = [], {}, {}
    build_model_args = None
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            frameworks.update(FRAMEWORK_IMPORTS.get(a.name.split(".")[0]) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            frameworks.add(FRAMEWORK_IMPORTS.get(node.module.split(".")[0]))
        elif isinstance(node, ast.FunctionDef) and node.name == "build_model":
            build_model_args = [a.arg for a in node.args.args]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            if node.func.attr in _HP_METHODS and isinstance(owner, ast.Name) and owner.id == "hp":
                parsed = _hp_spec(node)
                if parsed:
                    name, spec, default = parsed
                    baseline[name] = default
                    if spec:
                        space[name] = spec
            elif isinstance(owner, (ast.Name, ast.Attribute)) and ast.unparse(owner).split(".")[-1] == "layers":
                layers.append((node.lineno, node.col_offset, f"{node.func.attr}({', '.join(ast.unparse(a) for a in node.args + node.keywords)})"))
    frameworks.discard(None)
    unsupported = sorted(frameworks - set(SUPPORTED_FRAMEWORKS))
    if unsupported or not frameworks:
        found = ", ".join(unsupported) if unsupported else "no known ML framework"
        raise AutotuneError(f"model: {origin!r} uses {found}; supported: {', '.join(SUPPORTED_FRAMEWORKS)} "
                            "(Keras 3 on TensorFlow), as a template, a build_model(hp) file or a Keras script")
    if build_model_args is None and require_build_model:
        raise AutotuneError(f"model: {origin!r} defines no build_model(); expected build_model(hp) returning a compiled Keras model")
    names = [summary.split("(")[0] for _, _, summary in sorted(layers)]
    if any(n.startswith("Conv") for n in names):
        kind = "cnn"
    elif any(n in ("LSTM", "GRU", "SimpleRNN") for n in names):
        kind = "rnn"
    elif "Dense" in names:
        kind = "mlp"
    else:
        kind = "unknown"
    return {
        "framework": "keras",
        "kind": kind,
        "layers": [summary for _, _, summary in sorted(layers)],
        "build_model_args": build_model_args,
        "hyperparameters": baseline,
        "space": space,
        "environment": {"framework": "keras", "image_flavour": "keras", "packages": ["tensorflow", "keras"]},
    }


def _space_from_meta(meta, names):
    return {n: {k: v for k, v in meta["hyperparameters"][n].items() if k not in ("default", "help")} for n in names}


def plan(config, templates_dir):
    """Everything the loop needs about the model: API, baseline, space, ladder, facts.

    A template brings defaults and ranges in its metadata; a user's
    build_model(hp) file brings them in its hp.* calls. The configuration's
    model.baseline and search.space/ladder override either.
    """
    from ansible.module_utils.autotune import space as search_space  # local: avoids an import cycle

    model, search = config["model"], config["search"]
    if model.get("template"):
        path = template_path(templates_dir, model["template"], config.get("base_dir"))
        meta = template_meta(path)
        defaults = {n: spec["default"] for n, spec in meta["hyperparameters"].items()}
        unknown = sorted(set(model.get("baseline") or {}) - set(defaults))
        if unknown:
            raise AutotuneError(f"model.baseline: {unknown} are not hyperparameters of {path!r}; expected names from {sorted(defaults)}")
        baseline = dict(defaults, **(model.get("baseline") or {}))
        space = search.get("space") or _space_from_meta(meta, meta.get("search", []))
        ladder = search.get("ladder") or [n for n in meta.get("ladder", []) if n in space]
        metric = _template_metric((config.get("target") or {}).get("metric", "val_accuracy"), meta, path)
        source = render(path, baseline, trial_number=0, metric=metric)
        found = facts(source, path)
        found.update(kind=meta.get("kind", found["kind"]), description=meta.get("description"),
                     framework=meta["framework"])
        result = {"api": "template", "template": path, "baseline": baseline, "metric": metric}
    else:
        result, found = _file_plan(model)
        if result["api"] == "script":
            # A script reads its own data: a container sees its folder and the data set, read-only, at their paths.
            result["read_only_paths"] = [os.path.dirname(os.path.abspath(result["file"])), config["dataset"]["path"]]
        baseline = result["baseline"]
        default_space = result.pop("default_space")
        space = search.get("space") or default_space
        ladder = search.get("ladder") or (scriptcode.default_ladder(space) if result["api"] == "script" else
                                          [n for n, s in space.items() if s["type"] != "float"])
    lines = search_space.check(space, baseline)
    if result["api"] == "script":
        lines.extend(scriptcode.limit_lines(baseline, space))
    if not space:
        lines.append("search.space: empty; expected at least one hyperparameter to search")
    if lines:
        raise AutotuneError("; ".join(lines), lines)
    if search["strategy"] == "escalate":
        if not ladder:
            raise AutotuneError("search.ladder: empty; expected hyperparameter names for the escalate strategy")
        search_space.check_ladder(ladder, space)
    result.update(space=space, ladder=ladder, facts=found)
    return result


def _template_metric(metric, meta, path):
    """target.metric, when the template says it can log it (its metadata's ``metrics``; a template that does not say
    is trusted, and the trainer stops trial 0 in one line when the metric is not in its logs)."""
    known = meta.get("metrics")
    if known is not None and metric not in known:
        raise AutotuneError(f"target.metric: {metric!r} is not a metric the template {os.path.basename(path)} logs; "
                            f"expected one of {', '.join(known)}, or model.file with your own compile()")
    return metric


def _file_plan(model):
    """A user's file: build_model(hp) in Keras Tuner's style, or a plain Keras script (scriptcode.py)."""
    path = model["file"]
    if os.path.isdir(path):
        path = scriptcode.find_script(path)
    try:
        if os.path.getsize(path) > MAX_MODEL_BYTES:
            raise AutotuneError(f"model.file: {path!r} holds {os.path.getsize(path) // 1024} KiB; expected a Python "
                                f"file under {MAX_MODEL_BYTES // 1024} KiB (a Keras script or build_model(hp))")
        with open(path, encoding="utf-8") as handle:
            source = handle.read()
    except OSError as exc:
        raise AutotuneError(f"model.file: cannot read {path!r} ({exc.strerror}); "
                            "expected a Keras script or a Python file defining build_model(hp)")
    except UnicodeDecodeError:
        raise AutotuneError(f"model.file: {path!r} is not UTF-8 text; expected a Python file (a Keras script or "
                            "build_model(hp))")
    found = facts(source, path, require_build_model=False)
    if found["build_model_args"] is None:
        script_plan, found = bounded.run(scriptcode.plan, (source, path, model.get("baseline") or {}, found),
                                         f"model.file: reading {os.path.basename(path)}",
                                         "expected a Keras script of ordinary size (a few hundred lines)")
        return script_plan, found
    if found["build_model_args"] != ["hp"]:
        raise AutotuneError(f"model.file: {path!r} defines build_model({', '.join(found['build_model_args'])}); "
                            "expected build_model(hp) in Keras Tuner's style")
    baseline = dict(found["hyperparameters"], **(model.get("baseline") or {}))
    return {"api": "keras_tuner", "file": path, "baseline": baseline, "source": source,
            "training_defaults": {"epochs": 3, "batch_size": 64}, "default_space": found["space"]}, found


def code_for(model_plan, params, trial_number):
    """The model code of one trial: the template rendered, the user's script rewritten, or their file as is."""
    if model_plan["api"] == "template":
        return render(model_plan["template"], params, trial_number=trial_number, metric=model_plan.get("metric"))
    if model_plan["api"] == "script":
        return bounded.run(scriptcode.rewrite, (model_plan["source"], params, model_plan["committed"],
                                                model_plan["block_sequence"]),
                           f"model.file: rewriting {os.path.basename(model_plan['file'])} for trial {trial_number}",
                           "expected a script of ordinary size and values within their ranges")
    return model_plan["source"]
