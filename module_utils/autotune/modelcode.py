"""Model code: render a template for a trial, and read a model's facts by parsing it (never running it)."""
import ast
import os

import jinja2
import yaml

from ansible.module_utils.autotune.errors import AutotuneError

SUPPORTED_FRAMEWORKS = ("keras",)
# Top-level import name -> framework name reported to the user.
FRAMEWORK_IMPORTS = {
    "keras": "keras", "tensorflow": "keras", "tf_keras": "keras",
    "torch": "pytorch", "lightning": "pytorch", "pytorch_lightning": "pytorch",
    "jax": "jax", "flax": "jax", "sklearn": "scikit-learn", "xgboost": "xgboost",
}
_HP_METHODS = {"Int", "Float", "Choice", "Boolean", "Fixed"}


def template_path(templates_dir, name):
    """A bare name means model_templates/<name>.py.j2; anything else is a path."""
    if os.sep in name or name.endswith(".j2"):
        return name
    return os.path.join(templates_dir, f"{name}.py.j2")


def template_meta(path):
    """The template's sidecar metadata (cnn.py.j2 -> cnn.yml): defaults, ranges, ladder."""
    meta_path = path[: -len(".py.j2")] + ".yml" if path.endswith(".py.j2") else path + ".yml"
    if not os.path.isfile(path):
        raise AutotuneError(f"model.template: {path!r} does not exist; expected a Jinja2 model template (.py.j2)")
    if not os.path.isfile(meta_path):
        raise AutotuneError(f"model.template: {meta_path!r} is missing; expected the template's metadata beside it")
    with open(meta_path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def render(path, hp, trial_number=None):
    """Render a template to Python source; the result is compiled to prove it is valid Python."""
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(os.path.dirname(os.path.abspath(path))),
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False,
    )
    environment.filters["py"] = repr
    try:
        source = environment.get_template(os.path.basename(path)).render(hp=hp, trial_number=trial_number)
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


def facts(source, origin):
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
                            "(Keras 3 on TensorFlow), as a template or a build_model(hp) file")
    if build_model_args is None:
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
        path = template_path(templates_dir, model["template"])
        meta = template_meta(path)
        defaults = {n: spec["default"] for n, spec in meta["hyperparameters"].items()}
        unknown = sorted(set(model.get("baseline") or {}) - set(defaults))
        if unknown:
            raise AutotuneError(f"model.baseline: {unknown} are not hyperparameters of {path!r}; expected names from {sorted(defaults)}")
        baseline = dict(defaults, **(model.get("baseline") or {}))
        space = search.get("space") or _space_from_meta(meta, meta.get("search", []))
        ladder = search.get("ladder") or [n for n in meta.get("ladder", []) if n in space]
        source = render(path, baseline, trial_number=0)
        found = facts(source, path)
        found.update(kind=meta.get("kind", found["kind"]), description=meta.get("description"))
        result = {"api": "template", "template": path, "baseline": baseline}
    else:
        path = model["file"]
        try:
            with open(path, encoding="utf-8") as handle:
                source = handle.read()
        except OSError as exc:
            raise AutotuneError(f"model.file: cannot read {path!r} ({exc.strerror}); expected a Python file defining build_model(hp)")
        found = facts(source, path)
        if found["build_model_args"] != ["hp"]:
            raise AutotuneError(f"model.file: {path!r} defines build_model({', '.join(found['build_model_args'])}); "
                                "expected build_model(hp) in Keras Tuner's style")
        baseline = dict(found["hyperparameters"], **(model.get("baseline") or {}))
        space = search.get("space") or found["space"]
        ladder = search.get("ladder") or [n for n, s in space.items() if s["type"] != "float"]
        result = {"api": "keras_tuner", "file": path, "baseline": baseline, "source": source,
                  "training_defaults": {"epochs": 3, "batch_size": 64}}
    lines = search_space.check(space, baseline)
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


def code_for(model_plan, params, trial_number):
    """The model code of one trial: the template rendered with its values, or the user's file as is."""
    if model_plan["api"] == "template":
        return render(model_plan["template"], params, trial_number=trial_number)
    return model_plan["source"]
