"""A model file's Python source, read without running it: framework, kind, layers and hp.* calls (``facts``).

Every kind reads its model through here: a template's rendered code, a build_model(hp) file, a script. A user's
file is read once (``read_model_file``), bounded in size, and the registry (kinds/__init__.py) tells its kind
from these facts.
"""
import ast
import collections
import os

from ansible.module_utils.autotune.errors import AutotuneError

SUPPORTED_FRAMEWORKS = ("keras",)
# Top-level import name -> framework name reported to the user.
FRAMEWORK_IMPORTS = {
    "keras": "keras", "tensorflow": "keras", "tf_keras": "keras",
    "torch": "pytorch", "lightning": "pytorch", "pytorch_lightning": "pytorch",
    "jax": "jax", "flax": "jax", "sklearn": "scikit-learn", "xgboost": "xgboost",
}
_HP_METHODS = {"Int", "Float", "Choice", "Boolean", "Fixed"}

# A model file larger than this is refused before it is parsed: a Keras script is a few KB, and parsing a pushed
# 2.3 MB one took 11 s (ast) and 113 s with 3.6 GB (libcst) of the controller. A script is also read in a bounded
# child (bounded.py).
MAX_MODEL_BYTES = 256 * 1024


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


# A user's model file as read once: its path (a folder's script resolved), its text and its facts (build_model
# not required: the registry tells a build_model(hp) file from a script by them).
ModelFile = collections.namedtuple("ModelFile", "path source facts")


def read_model_file(path):
    """The file at ``path``, bounded in size, as text, and its facts."""
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
    return ModelFile(path, source, facts(source, path, require_build_model=False))
