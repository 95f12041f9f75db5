"""Load and validate a tune configuration (one YAML file that lives with the model).

Validation runs before anything else: every wrong field gives one line naming
the field, the value and what was expected. Structure is checked with a JSON
Schema (the ``jsonschema`` library); cross-field rules (ranges, files that must
exist, the search space against the model) are checked in code below.
"""
import copy
import os

import yaml
from jsonschema import Draft202012Validator

from ansible.module_utils.autotune.errors import ConfigError
from ansible.module_utils.autotune.objective import DIRECTIONS, default_direction
from ansible.module_utils.autotune.printable import valid_address
from ansible.module_utils.autotune.runners import RUNNERS
from ansible.module_utils.autotune.strategies import EPOCH_MODES, PRUNERS, STRATEGIES

# target.metric: a metric the model logs on the validation data, as Keras names it in fit's logs.
METRIC = r"\Aval_[A-Za-z_][A-Za-z0-9_]*\Z"
# Metrics whose values are shares (0..1): a goal outside that range could never be met.
SHARES = ("accuracy", "binary_accuracy", "categorical_accuracy", "sparse_categorical_accuracy", "auc", "precision",
          "recall", "f1_score", "fbeta_score")


def _number(description, **extra):
    return dict({"type": "number", "description": description}, **extra)


def _integer(description, minimum=1, **extra):
    return dict({"type": "integer", "minimum": minimum, "description": description}, **extra)


def _string(description, **extra):
    return dict({"type": "string", "minLength": 1, "description": description}, **extra)


def _object(properties, required=(), description="a mapping"):
    return {
        "type": "object",
        "properties": properties,
        "required": list(required),
        "additionalProperties": False,
        "description": description,
    }


# Schema patterns match whole strings: jsonschema searches with Python's re, where "$" also matches before a
# trailing newline ("evil\n" would pass ^...$); \A and \Z do not. tests/unit/test_config.py checks every pattern.
ADDRESS = r"\A[^@\s\x00-\x1f\x7f-\x9f]+@[^@\s\x00-\x1f\x7f-\x9f]+\Z"
IMAGE_SIZE = "[height, width]: two whole numbers of pixels, each from 4 to 4096"

PARAM_SCHEMA = {
    "type": "object",
    "description": "a parameter range: {type: int|float, low, high[, step, log]}, {type: categorical, choices: [...]} or {type: bool}",
    "properties": {
        "type": {"enum": ["int", "float", "categorical", "bool"], "description": "one of int, float, categorical, bool"},
        "low": _number("a number, the lowest value"),
        "high": _number("a number, the highest value"),
        "step": _number("a positive number", exclusiveMinimum=0),
        "log": {"type": "boolean", "description": "true or false"},
        "choices": {"type": "array", "minItems": 1, "description": "a non-empty list of values"},
    },
    "required": ["type"],
    "additionalProperties": False,
}

SCHEMA = _object(
    {
        "study": _string("a study name (letters, digits, '-', '_', '.')", pattern=r"\A[A-Za-z0-9][A-Za-z0-9_.-]*\Z"),
        "dataset": _object(
            {
                "path": _string("a folder of class sub-folders of images"),
                "image_size": {
                    # x-whole: an item's error is said once, of the whole list, in our words (not jsonschema's)
                    "type": "array", "items": {"type": "integer", "minimum": 4, "maximum": 4096, "x-whole": IMAGE_SIZE},
                    "minItems": 2, "maxItems": 2, "description": IMAGE_SIZE,
                },
                "color": {"enum": ["grayscale", "rgb"], "description": "grayscale or rgb"},
                "validation_split": _number("a fraction between 0.05 and 0.5", minimum=0.05, maximum=0.5),
                "test_split": _number("a fraction between 0.05 and 0.5", minimum=0.05, maximum=0.5),
                "test": _string("a folder of the same class sub-folders, held out for the final score"),
                "seed": _integer("an integer seed >= 0", minimum=0),
            },
            required=["path"], description="a mapping with at least 'path'",
        ),
        "model": _object(
            {
                "template": _string("a template name in model_templates/ (e.g. cnn) or a path to a .py.j2"),
                "file": _string("a path to your Keras script, a build_model(hp) file, or a folder holding one script"),
                "baseline": {"type": "object", "description": "a mapping of hyperparameter names to values"},
            },
            description="a mapping with 'template' or 'file' (none: the Keras script beside this file)",
        ),
        "target": _object(
            {
                "metric": _string("a metric the model logs on validation data: val_ and a name, e.g. val_accuracy, "
                                  "val_loss, val_auc", pattern=METRIC),
                "direction": {"enum": list(DIRECTIONS), "description": "one of " + ", ".join(DIRECTIONS)},
                "goal": _number("a number (between 0 and 1 for accuracy, AUC, precision and recall)"),
                "stop_at_goal": {"type": "boolean", "description": "true or false"},
            },
            description="a mapping with 'metric', 'goal' and optionally 'direction'",
        ),
        "search": _object(
            {
                "strategy": {"enum": list(STRATEGIES), "description": "one of " + ", ".join(STRATEGIES)},
                "seed": _integer("an integer seed >= 0", minimum=0),
                "pruner": {"enum": list(PRUNERS), "description": "one of " + ", ".join(PRUNERS)},
                "pruner_patience": _integer("epochs >= 1 a trial may stay below the pruner's line before it is "
                                            "pruned (Optuna's PatientPruner)"),
                "epochs": {"enum": list(EPOCH_MODES), "description": "scheduled (the pruner gives the promising "
                                                                      "trials more epochs) or sampled (drawn)"},
                "startup_trials": _integer("an integer >= 0", minimum=0),
                "chance_epochs": _integer("epochs >= 0 after which a trial still scoring what one constant answer "
                                          "scores is stopped (0: never)", minimum=0),
                "promote": {"type": "boolean", "description": "true or false"},
                "continue_refused": {"type": "boolean", "description": "true or false"},
                "deterministic": {"type": "boolean", "description": "true or false: TensorFlow's op determinism in "
                                                                   "every trial (docs/reproduce.md)"},
                "space": {
                    "type": "object", "additionalProperties": PARAM_SCHEMA,
                    "description": "a mapping of hyperparameter names to ranges",
                },
                "ladder": {
                    "type": "array", "items": {"type": "string"}, "minItems": 1,
                    "description": "a non-empty list of hyperparameter names",
                },
            },
        ),
        "budget": _object(
            {
                "max_trials": _integer("an integer >= 1"),
                "max_seconds": _integer("a whole number of seconds >= 1"),
                "trial_timeout": _integer("a whole number of seconds >= 1"),
                "max_consecutive_failures": _integer("an integer >= 1"),
            },
        ),
        "notify": _object(
            {
                "to": {"type": "array", "items": _string("an e-mail address (local@domain)", pattern=ADDRESS),
                       "description": "a list of e-mail addresses"},
                "sender": _string("an e-mail address (local@domain)", pattern=ADDRESS),
                "pusher": {"type": "boolean", "description": "true or false: mail the pushed commit's author too "
                                                            "(pipeline)"},
            },
        ),
        "runner": _object(
            dict({"kind": {"enum": list(RUNNERS), "description": "one of " + ", ".join(RUNNERS)},
                  "slots": _integer("trials at once on this host, an integer >= 1 (default: one per GPU, else 1)"),
                  "max_trial_bytes": _integer("bytes >= 1048576 a trial's folder may hold (default: 2 % of the run "
                                              "folder's disk, 1..20 GiB)", minimum=1048576),
                  "min_free_bytes": _integer("bytes >= 1 of free space under which the study stops (default: 1 % of "
                                             "the run folder's disk, 256 MiB..5 GiB)")},
                 **{name: _object(runner.CONFIG_SCHEMA, description=f"the {name} runner's settings")
                    for name, runner in RUNNERS.items()}),
            description="a mapping with 'kind' and that runner's own block",
        ),
        "workers": _object(
            {
                "heartbeat_interval": _integer("seconds >= 1 between a controller's heartbeats for its running trials"),
                "grace_period": _integer("seconds >= 1 without a heartbeat before another controller retries the trial"),
            },
            description="a mapping with heartbeat_interval and grace_period (a study shared by several hosts)",
        ),
        "run_dir": _string("a folder for the run's results"),
        "storage": _string("an Optuna storage URL, e.g. sqlite:///study.db or postgresql://host/db"),
    },
    required=["dataset"],
    description="a mapping with at least 'dataset'",
)

DEFAULTS = {
    "dataset": {"image_size": [28, 28], "color": "grayscale", "validation_split": 0.2, "test_split": 0.15, "seed": 1},
    "target": {"metric": "val_accuracy", "goal": 0.80, "stop_at_goal": True},
    "search": {"strategy": "tpe", "seed": 1, "epochs": "scheduled", "startup_trials": 4, "chance_epochs": 3,
               "promote": False, "continue_refused": True,
               "deterministic": True},
    "budget": {"max_trials": 20, "max_seconds": 3600, "trial_timeout": 900, "max_consecutive_failures": 3},
    "notify": {"to": [], "sender": "autotune@localhost", "pusher": False},
    # A dead host's trial is failed and retried within grace + interval (14 s); a live one is not: its heartbeats came
    # at most 2.3 s apart on a 2-core host under load 23 (bench/heartbeat_gaps.py, docs/fleet.md#take-over).
    "workers": {"heartbeat_interval": 2, "grace_period": 12},
    "runner": dict({"kind": "local"}, **{name: runner.CONFIG_DEFAULTS for name, runner in RUNNERS.items()}),
}


def _merge(base, override):
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _field(path):
    return ".".join(str(p) for p in path) or "(top level)"


def _at(document, path):
    for key in path:
        document = document[key]
    return document


def schema_lines(schema, document, prefix=()):
    """One line per field where ``document`` breaks ``schema``: the field, the value, what was expected.

    An error inside an item of a list whose items have ``x-whole`` (what the list must be) is said of the whole list; a field
    with several errors gets one line (the first)."""
    lines, said = [], set()
    validator = Draft202012Validator(schema)
    for error in sorted(validator.iter_errors(document), key=lambda e: [str(p) for p in e.absolute_path]):
        path = list(prefix) + list(error.absolute_path)
        if error.validator == "required":
            missing = error.message.split("'")[1]
            lines.append(f"{_field(path + [missing])}: missing; expected "
                         f"{error.schema['properties'][missing].get('description', 'a value')}")
        elif error.validator == "additionalProperties" and error.schema.get("properties"):
            known = ", ".join(error.schema["properties"])
            for extra in sorted(set(error.instance) - set(error.schema["properties"])):
                lines.append(f"{_field(path + [extra])}: unknown field; expected one of {known}")
        else:
            instance, expected = error.instance, error.schema.get("description") or error.message
            if error.schema.get("x-whole"):
                path, instance = path[:-1], _at(document, list(error.absolute_path)[:-1])
                expected = error.schema["x-whole"]
            if _field(path) not in said:
                said.add(_field(path))
                lines.append(f"{_field(path)}: {instance!r} is invalid; expected {expected}")
    return lines


def _resolve(base_dir, value):
    return value if os.path.isabs(value) else os.path.normpath(os.path.join(base_dir, value))


# What only the operator chooses (inventory, vault, playbook variables): from a pushed configuration these
# are ignored, so pushed code never picks where results land, which database it reaches or how it runs.
OPERATOR_ONLY = ("run_dir", "storage", "runner", "workers")


class UniqueKeyLoader(yaml.SafeLoader):  # pylint: disable=too-many-ancestors
    """PyYAML's safe loader, except that a key given twice in one mapping is an error (the safe loader keeps
    the last value without a word: a second ``goal:`` lower in the file would silently win)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _value in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # '<<: *anchor' merges; its keys may be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node.start_mark.line + 1)
            except TypeError:  # an unhashable key: the safe loader's own error says so
                break
            if first != key_node.start_mark.line + 1:
                raise DuplicateKeyError(key, first, key_node.start_mark.line + 1)
        return super().construct_mapping(node, deep=deep)


class DuplicateKeyError(yaml.YAMLError):
    def __init__(self, key, first, again):
        super().__init__(f"{key!r}")
        self.key, self.first, self.again = key, first, again


def load(path, overrides=None, pushed=False, data_roots=()):
    """Read, merge defaults and overrides, validate. Returns the config dict or raises ConfigError."""
    try:
        with open(path, encoding="utf-8") as handle:
            document = yaml.load(handle, Loader=UniqueKeyLoader)  # nosec B506: a SafeLoader subclass
    except OSError as exc:
        raise ConfigError(f"cannot read tune configuration {path}: {exc.strerror}; expected a readable YAML file")
    except DuplicateKeyError as exc:
        raise ConfigError(f"tune configuration {path}: key {exc.key!r} is given twice (lines {exc.first} and "
                          f"{exc.again}); expected each key once per mapping")
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"tune configuration {path} is not valid YAML{where}; expected a YAML mapping")
    if not isinstance(document, dict):
        raise ConfigError(f"tune configuration {path} holds {type(document).__name__}; expected a YAML mapping")
    return validate(document, base_dir=os.path.dirname(os.path.abspath(path)), overrides=overrides, source=path,
                    pushed=pushed, data_roots=data_roots)


def validate(document, base_dir, overrides=None, source="configuration", pushed=False, data_roots=()):
    """Merge defaults and overrides into the document and check it. A ``pushed`` document (from a model
    repository) loses its operator-only fields first and must keep its files in the checkout or ``data_roots``."""
    ignored = sorted(key for key in OPERATOR_ONLY if key in document) if pushed else []
    document = {k: v for k, v in document.items() if k not in ignored}
    document = _merge(document, overrides or {})
    lines = schema_lines(SCHEMA, document)
    if lines:
        raise ConfigError(f"{source} is invalid: " + "; ".join(lines), lines)
    config = _merge(DEFAULTS, document)
    config["target"].setdefault("direction", default_direction(config["target"]["metric"]))
    if "images" in document.get("runner", {}).get("docker", {}):
        config["runner"]["docker"]["images"] = copy.deepcopy(document["runner"]["docker"]["images"])  # replaces
    config["base_dir"] = base_dir
    config["source"] = os.path.abspath(source) if source != "configuration" else None
    lines = _target_lines(config["target"], document.get("target") or {})
    lines += _semantic_lines(config) + (_confinement_lines(config, data_roots) if pushed else [])
    if lines:
        raise ConfigError(f"{source} is invalid: " + "; ".join(lines), lines)
    config["ignored_fields"] = ignored
    kind = config["runner"]["kind"]
    config["runner"].setdefault("slots", max(1, len(config["runner"].get(kind, {}).get("gpu_ids") or [])))
    config["dataset"]["path"] = _resolve(base_dir, config["dataset"]["path"])
    if config["dataset"].get("test"):
        config["dataset"]["test"] = _resolve(base_dir, config["dataset"]["test"])
    if config["model"].get("file"):
        config["model"]["file"] = _resolve(base_dir, config["model"]["file"])
    if config.get("run_dir"):
        config["run_dir"] = _resolve(base_dir, config["run_dir"])
    config.setdefault("study", os.path.splitext(os.path.basename(source))[0] if config["source"] else "autotune")
    return config


def _within(path, roots):
    real = os.path.realpath(path)
    return any(real == os.path.realpath(root) or real.startswith(os.path.realpath(root) + os.sep) for root in roots)


def _confinement_lines(config, data_roots):
    """A pushed configuration reads its model from its own checkout and its data from the operator's data roots."""
    lines = []
    base = config["base_dir"]
    model_file = config["model"].get("file")
    if model_file and not _within(_resolve(base, model_file), [base]):
        lines.append(f"model.file: {model_file!r} is outside the pushed repository; expected a file of the checkout")
    for field in ("path", "test"):
        folder = config["dataset"].get(field)
        if folder and not _within(_resolve(base, folder), [base, *data_roots]):
            lines.append(f"dataset.{field}: {folder!r} is outside the checkout and the operator's data roots "
                         f"({', '.join(data_roots) or 'none set'}); expected a data set the operator allows")
    kind = config["runner"]["kind"]
    if kind in RUNNERS:  # an unknown kind is the schema's line
        lines += RUNNERS[kind].pushed_lines(config["runner"].get(kind, {}))
    return lines


def _semantic_lines(config):
    lines = []
    model = config.setdefault("model", {})
    if not model.get("template") and not model.get("file"):
        model["file"] = "."  # the Keras script found in the configuration's folder (scriptcode.find_script)
    if bool(model.get("template")) == bool(model.get("file")):
        lines.append(f"model: {sorted(model)!r} is invalid; expected exactly one of 'template' or 'file'")
    if model.get("file") and model.get("baseline") is None:
        model["baseline"] = {}
    dataset_path = _resolve(config["base_dir"], config["dataset"]["path"])
    if os.path.exists(dataset_path) and not os.path.isdir(dataset_path):
        lines.append(f"dataset.path: {dataset_path!r} is a file; expected a folder of class sub-folders of images")
    elif not os.path.isdir(dataset_path):
        lines.append(f"dataset.path: {dataset_path!r} does not exist; expected a folder of class sub-folders of images")
    lines.extend(_test_split_lines(config))
    lines.extend(_address_lines(config["notify"]))
    kind = config["runner"]["kind"]
    lines.extend(RUNNERS[kind].config_lines(config["runner"].get(kind, {}), f"runner.{kind}"))
    for name, spec in (config["search"].get("space") or {}).items():
        lines.extend(param_lines(f"search.space.{name}", spec))
    if "space" in config["search"] and not config["search"]["space"]:
        lines.append("search.space: {} is invalid; expected at least one hyperparameter to search")
    return lines


def _target_lines(target, given):
    """The goal must be given for any metric but the default one (0.80 means nothing for a loss), and within
    0..1 for a share (accuracy, AUC, precision, recall)."""
    metric, goal = target["metric"], target["goal"]
    if metric != DEFAULTS["target"]["metric"] and "goal" not in given:
        return [f"target.goal: missing; expected the value of {metric} to reach (the default "
                f"{DEFAULTS['target']['goal']:g} is {DEFAULTS['target']['metric']}'s)"]
    if metric[len("val_"):] in SHARES and not 0 <= goal <= 1:
        return [f"target.goal: {goal!r} is invalid; expected a number between 0 and 1"]
    return []


def _test_split_lines(config):
    """The held-out test set: its own folder, or a share of dataset.path that leaves most images to train on."""
    dataset = config["dataset"]
    if dataset.get("test"):
        test = _resolve(config["base_dir"], dataset["test"])
        if not os.path.isdir(test):
            return [f"dataset.test: {test!r} is not a folder; expected a folder of the same class sub-folders "
                    "as dataset.path, held out for the final score"]
        if _within(test, [_resolve(config["base_dir"], dataset["path"])]):
            return [f"dataset.test: {test!r} is inside dataset.path; expected a folder the trials never read"]
        return []
    if dataset["validation_split"] + dataset["test_split"] > 0.7:
        return [f"dataset: validation_split {dataset['validation_split']:g} + test_split {dataset['test_split']:g} "
                "leave under 30 % of the images to train on; expected a sum of at most 0.7"]
    return []


def _address_lines(notify):
    """What the schema's pattern lets through but a mail header cannot hold ("<a@b>", "a@", quotes)."""
    fields = [("notify.sender", notify.get("sender"))] + [(f"notify.to.{i}", a) for i, a in enumerate(notify.get("to", []))]
    return [f"{field}: {value!r} is invalid; expected an e-mail address (local@domain)"
            for field, value in fields if value is not None and not valid_address(value)]


def param_lines(field, spec):
    """Cross-field checks of one search-space entry (also used for template metadata)."""
    kind = spec.get("type")
    if kind in ("int", "float"):
        if "low" not in spec or "high" not in spec:
            return [f"{field}: {spec!r} is invalid; expected both 'low' and 'high' for type {kind}"]
        if spec["low"] > spec["high"]:
            return [f"{field}: low {spec['low']!r} > high {spec['high']!r}; expected low <= high"]
        if spec.get("log") and spec["low"] <= 0:
            return [f"{field}: low {spec['low']!r} is invalid with log: true; expected low > 0"]
        if kind == "int" and not all(float(spec[k]).is_integer() for k in ("low", "high")):
            return [f"{field}: {spec!r} is invalid; expected whole numbers for type int"]
    if kind == "categorical" and not spec.get("choices"):
        return [f"{field}: {spec!r} is invalid; expected 'choices' with at least one value"]
    return []


def merged(base, override):
    """``override`` merged deeply into a copy of ``base`` (the way overrides meet the file)."""
    return _merge(base, override)


# The operator's caps (autotune_limits): where they live in a configuration, and what each bounds.
LIMITS = {
    "max_trials": ("budget", "max_trials", "trials"),
    "max_seconds": ("budget", "max_seconds", "seconds"),
    "trial_timeout": ("budget", "trial_timeout", "seconds per trial"),
    "slots": ("runner", "slots", "trials at once"),
}


def apply_limits(config, limits):
    """Lower every value of ``config`` above the operator's cap in ``limits`` (max_trials, max_seconds,
    trial_timeout, slots; unset or None: no cap) to that cap, whatever the file, a push or an override asked.
    Returns one line per value lowered (the Detect step shows them); also kept as ``config["limited"]``."""
    lines = []
    unknown = sorted(set(limits or {}) - set(LIMITS))
    if unknown:
        raise ConfigError(f"autotune_limits: unknown {unknown}; expected some of {', '.join(LIMITS)}")
    for name, cap in sorted((limits or {}).items()):
        if cap is None:
            continue
        if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
            raise ConfigError(f"autotune_limits.{name}: {cap!r} is invalid; expected a whole number >= 1")
        section, key, unit = LIMITS[name]
        asked = config[section].get(key)
        if asked is not None and asked > cap:
            config[section][key] = cap
            lines.append(f"{section}.{key}: {asked} lowered to {cap} {unit} (the operator's autotune_limits.{name})")
    config["limited"] = lines
    return lines
