"""A user's own Keras script: detected, its tunable values found and rewritten, by parsing only (libcst).

The script is never imported or run on the controller. libcst keeps the file's
concrete syntax, so a trial's code differs from the user's file only at the
values tuned (and the Conv+activation+Pool blocks added or removed); formatting
and comments survive, and the mail's diff is of their own file.

Names of tunable points, in source order: ``conv<N>.filters``, ``conv<N>.kernel_size``,
``dense<N>.units`` (hidden layers only, never the last Dense), ``dropout<N>.rate``,
``optimizer.learning_rate``, ``fit.epochs``, ``fit.batch_size`` or ``data.batch_size``
(from image_dataset_from_directory) and ``crp_blocks``. A value given through a module-level name bound once
to a literal (``EPOCHS = 5`` ... ``fit(epochs=EPOCHS)``) is a point too: its assignment is rewritten.
"""
import os

import libcst as cst
# libcst loads its native parser on the first parse; loaded here, each bounded child (bounded.py) that parses a
# script inherits it instead of mapping it again under its memory limit.
from libcst import native  # noqa: F401  # pylint: disable=unused-import

from ansible.module_utils.autotune.errors import AutotuneError

CONV = {f"{base}{d}D" for base in ("Conv", "Convolution", "SeparableConv", "SeparableConvolution") for d in (1, 2, 3)}
POOL = {f"{base}{d}D" for base in ("MaxPooling", "MaxPool", "AveragePooling", "AvgPool") for d in (1, 2, 3)}
BETWEEN = {"Activation", "ReLU", "LeakyReLU", "ELU", "PReLU", "BatchNormalization"}  # may sit inside a block
MODEL_BUILDERS = {"Sequential", "Model", "Functional"}
LOADERS = {"image_dataset_from_directory"}
# optimizer="adam" -> its class and Keras' default learning rate.
OPTIMIZERS = {"adam": ("Adam", 0.001), "adamw": ("AdamW", 0.001), "nadam": ("Nadam", 0.001),
              "adamax": ("Adamax", 0.001), "rmsprop": ("RMSprop", 0.001), "sgd": ("SGD", 0.01),
              "adagrad": ("Adagrad", 0.001)}
OPTIMIZER_CLASSES = {cls: rate for cls, rate in OPTIMIZERS.values()}
ADDED_BLOCK_COMMENT = "# added by autotune: one more Conv+activation+Pool block"
# Conv+activation+Pool blocks a trial may have: each pooling at least halves the image (4096 px: 12 halvings), and
# rewriting a script to 20,000 blocks took 5 s and 420 MB of the controller (issue 20 row 7).
MAX_CRP_BLOCKS = 16
EXPECTED = "expected a Keras script that builds a model with Conv layers and calls fit() with validation data"


def _callee(func):
    """The called name: Conv2D for layers.Conv2D / keras.layers.Conv2D / Conv2D; None for anything else."""
    if isinstance(func, cst.Name):
        return func.value
    if isinstance(func, cst.Attribute):
        return func.attr.value
    return None


def _dotted(node):
    if isinstance(node, cst.Name):
        return node.value
    if isinstance(node, cst.Attribute):
        owner = _dotted(node.value)
        return f"{owner}.{node.attr.value}" if owner else None
    return None


def _number(node):
    """(value, type) of an int/float literal, or a tuple of equal ints (kernel (3, 3)); else None."""
    if isinstance(node, cst.Integer):
        return int(node.evaluated_value), "int"
    if isinstance(node, cst.Float):
        return float(node.evaluated_value), "float"
    if isinstance(node, cst.Tuple) and node.elements:
        values = [_number(e.value) for e in node.elements]
        if all(v and v[1] == "int" for v in values) and len({v[0] for v in values}) == 1:
            return values[0][0], "int"
    return None


def _literal_like(node, value):
    """A literal node for ``value`` shaped like ``node`` (a tuple stays a tuple of that length)."""
    if isinstance(node, cst.Tuple):
        return node.with_changes(elements=[e.with_changes(value=cst.Integer(str(int(value)))) for e in node.elements])
    if isinstance(value, float) or isinstance(node, cst.Float):
        return cst.Float(repr(float(value)))
    return cst.Integer(str(int(value)))


def _find_arg(call, position, keyword):
    """Index in call.args of the argument given by keyword, or positionally at ``position``; None if absent."""
    for index, arg in enumerate(call.args):
        if arg.keyword is not None and arg.keyword.value == keyword:
            return index
    positional = [i for i, a in enumerate(call.args) if a.keyword is None and not a.star]
    if position is not None and position < len(positional) and positional[:position + 1] == list(range(position + 1)):
        return positional[position]
    return None


def _assigned_names(module):
    """How many times each plain name is bound anywhere in the module (assignments, loops, imports, defs)."""
    counts = {}

    class _Bindings(cst.CSTVisitor):
        def visit_AssignTarget(self, node):
            self._count(node.target)

        def visit_AugAssign(self, node):
            self._count(node.target)

        def visit_AnnAssign(self, node):
            self._count(node.target)

        def visit_For(self, node):
            self._count(node.target)

        def visit_Global(self, node):
            for item in node.names:
                counts[item.name.value] = counts.get(item.name.value, 0) + 2  # rebound elsewhere: not a constant

        @staticmethod
        def _count(target):
            for name in [target] if isinstance(target, cst.Name) else \
                    [e.value for e in getattr(target, "elements", ()) if isinstance(e.value, cst.Name)]:
                counts[name.value] = counts.get(name.value, 0) + 1

    module.visit(_Bindings())
    return counts


def _constants(module):
    """Module-level names bound once, to a number literal (``EPOCHS = 5``): {name: its literal node}.
    A value the script reads from such a name is tuned by rewriting the assignment, not the call."""
    counts, found = _assigned_names(module), {}
    for statement in module.body:
        body = getattr(statement, "body", ())
        if isinstance(statement, cst.SimpleStatementLine) and len(body) == 1 and isinstance(body[0], cst.Assign):
            targets = body[0].targets
            if len(targets) == 1 and isinstance(targets[0].target, cst.Name) and _number(body[0].value) and \
                    counts.get(targets[0].target.value) == 1:
                found[targets[0].target.value] = body[0].value
    return found


def _with_constants(module, values):
    """The module with its module-level ``NAME = literal`` assignments set to ``values`` ({name: value})."""
    body = []
    for statement in module.body:
        small = getattr(statement, "body", ())
        if isinstance(statement, cst.SimpleStatementLine) and len(small) == 1 and isinstance(small[0], cst.Assign) \
                and isinstance(small[0].targets[0].target, cst.Name) and small[0].targets[0].target.value in values:
            assign = small[0]
            literal = _literal_like(assign.value, values[assign.targets[0].target.value])
            statement = statement.with_changes(body=[assign.with_changes(value=literal)])
        body.append(statement)
    return module.with_changes(body=body)


class _Values(cst.CSTTransformer):
    """One pass over the script: records every tunable literal and, given ``values``, rewrites those that differ.

    A value held in a module-level constant (``FILTERS = 32`` ... ``Conv2D(FILTERS, 3)``) is the point of its
    first use; its new value is collected in ``constant_values`` for ``_with_constants``. Later uses of the
    same name follow it (they are not points of their own)."""

    def __init__(self, values=None, keras_ref=None, constants=None):
        super().__init__()
        self.values, self.keras_ref, self.constants = values or {}, keras_ref, constants or {}
        self.found, self.layers, self.counts = {}, [], {"conv": 0, "dense": 0, "dropout": 0}
        self.builds_model, self.fits, self.validated = False, 0, False
        self.claimed, self.constant_values = {}, {}

    def _point(self, call, name, position, keyword, kind=None):
        index = _find_arg(call, position, keyword)
        if index is None:
            return call
        node = call.args[index].value
        if isinstance(node, cst.Name) and node.value in self.constants:
            return self._constant_point(call, name, node.value, kind)
        parsed = _number(node)
        if parsed is None or (kind and parsed[1] != kind):
            return call
        self.found.setdefault(name, {"value": parsed[0], "type": parsed[1]})
        new = self.values.get(name)
        if new is None or new == parsed[0]:
            return call
        args = list(call.args)
        args[index] = args[index].with_changes(value=_literal_like(args[index].value, new))
        return call.with_changes(args=args)

    def _constant_point(self, call, name, variable, kind):
        parsed = _number(self.constants[variable])
        if (kind and parsed[1] != kind) or self.claimed.setdefault(variable, name) != name:
            return call
        self.found.setdefault(name, {"value": parsed[0], "type": parsed[1], "variable": variable})
        new = self.values.get(name)
        if new is not None and new != parsed[0]:
            self.constant_values[variable] = new
        return call

    def leave_Call(self, original_node, updated_node):
        name, call = _callee(updated_node.func), updated_node
        if name in CONV:
            self.counts["conv"] += 1
            prefix = f"conv{self.counts['conv']}"
            call = self._point(call, f"{prefix}.filters", 0, "filters", "int")
            call = self._point(call, f"{prefix}.kernel_size", 1, "kernel_size", "int")
        elif name == "Dense":
            self.counts["dense"] += 1
            call = self._point(call, f"dense{self.counts['dense']}.units", 0, "units", "int")
        elif name == "Dropout":
            self.counts["dropout"] += 1
            call = self._point(call, f"dropout{self.counts['dropout']}.rate", 0, "rate", "float")
        elif name in LOADERS:
            call = self._point(call, "data.batch_size", None, "batch_size", "int")
        elif name == "compile" and isinstance(updated_node.func, cst.Attribute):
            call = self._optimizer(call)
        elif name == "fit" and isinstance(updated_node.func, cst.Attribute):
            self.fits += 1
            keywords = {a.keyword.value for a in call.args if a.keyword is not None}
            self.validated = self.validated or bool(keywords & {"validation_data", "validation_split"})
            call = self._point(call, "fit.epochs", None, "epochs", "int")
            call = self._point(call, "fit.batch_size", None, "batch_size", "int")
        self.builds_model = self.builds_model or name in MODEL_BUILDERS
        if name in CONV | POOL | BETWEEN | {"Dense", "Dropout", "Flatten", "GlobalAveragePooling2D",
                                           "GlobalMaxPooling2D", "Rescaling", "Input", "InputLayer"}:
            self.layers.append(cst.Module([]).code_for_node(original_node))
        return call

    def _optimizer(self, call):
        """optimizer="adam" or optimizer=Adam(learning_rate=...): its learning rate is tunable."""
        index = _find_arg(call, 0, "optimizer")
        if index is None:
            return call
        node = call.args[index].value
        new = self.values.get("optimizer.learning_rate")
        if isinstance(node, cst.SimpleString) and node.evaluated_value.lower() in OPTIMIZERS and self.keras_ref:
            cls, default = OPTIMIZERS[node.evaluated_value.lower()]
            self.found.setdefault("optimizer.learning_rate", {"value": default, "type": "float"})
            if new is None or new == default:
                return call
            replacement = cst.parse_expression(f"{self.keras_ref}.optimizers.{cls}(learning_rate={float(new)!r})")
        elif isinstance(node, cst.Call) and _callee(node.func) in OPTIMIZER_CLASSES:
            rate_index = _find_arg(node, 0, "learning_rate")
            if rate_index is not None:
                return self._replace_arg(call, index, self._point(node, "optimizer.learning_rate", 0, "learning_rate"))
            self.found.setdefault("optimizer.learning_rate", {"value": OPTIMIZER_CLASSES[_callee(node.func)],
                                                               "type": "float"})
            if new is None or new == OPTIMIZER_CLASSES[_callee(node.func)]:
                return call
            replacement = node.with_changes(args=list(node.args) + [
                cst.Arg(keyword=cst.Name("learning_rate"), value=cst.Float(repr(float(new))),
                        equal=cst.AssignEqual(cst.SimpleWhitespace(""), cst.SimpleWhitespace("")))])
        else:
            return call
        return self._replace_arg(call, index, replacement)

    @staticmethod
    def _replace_arg(call, index, value):
        args = list(call.args)
        args[index] = args[index].with_changes(value=value)
        return call.with_changes(args=args)


def _keras_ref(module):
    """How the script names Keras (``keras`` or ``tf.keras``), for optimizer="adam" -> <ref>.optimizers.Adam."""
    for statement in module.body:
        for small in getattr(statement, "body", ()):
            if isinstance(small, cst.Import):
                for alias in small.names:
                    if _dotted(alias.name) in ("keras", "tensorflow"):
                        ref = alias.asname.name.value if alias.asname else _dotted(alias.name)
                        return ref if _dotted(alias.name) == "keras" else f"{ref}.keras"
            elif isinstance(small, cst.ImportFrom) and _dotted(small.module) == "tensorflow" and \
                    not isinstance(small.names, cst.ImportStar):
                for alias in small.names:
                    if alias.name.value == "keras":
                        return alias.asname.name.value if alias.asname else "keras"
    return None


def _layer_kind(node):
    """'C' (conv), 'P' (pool), 'A' (activation / normalisation) for an item holding exactly one layer call."""
    calls = []

    class _Calls(cst.CSTVisitor):
        def visit_Call(self, call):
            calls.append(_callee(call.func))

    node.visit(_Calls())
    layers = [name for name in calls if name in CONV | POOL | BETWEEN]
    if len(layers) != 1:
        return None
    return "C" if layers[0] in CONV else "P" if layers[0] in POOL else "A"


def _groups(kinds):
    """(start, end) of each Conv [activation...] Pool run, in order."""
    found, index = [], 0
    while index < len(kinds):
        if kinds[index] == "C":
            end = index + 1
            while end < len(kinds) and kinds[end] == "A":
                end += 1
            if end < len(kinds) and kinds[end] == "P":
                found.append((index, end))
                index = end
        index += 1
    return found


def _assignment(statement):
    """(target, input name) of ``y = Layer(...)(x)``, else None."""
    body = getattr(statement, "body", ())
    if not isinstance(statement, cst.SimpleStatementLine) or len(body) != 1 or not isinstance(body[0], cst.Assign):
        return None
    small = body[0]
    if len(small.targets) != 1 or not isinstance(small.targets[0].target, cst.Name):
        return None
    value = small.value
    if isinstance(value, cst.Call) and len(value.args) == 1 and isinstance(value.args[0].value, cst.Name):
        return small.targets[0].target.value, value.args[0].value.value
    return None


def _is_add(statement):
    body = getattr(statement, "body", ())
    return isinstance(statement, cst.SimpleStatementLine) and len(body) == 1 and isinstance(body[0], cst.Expr) \
        and isinstance(body[0].value, cst.Call) and _callee(body[0].value.func) == "add"


def _repeatable(statements):
    """A block of statements can be repeated: model.add(...) lines, or a functional chain y = L(...)(x)."""
    if all(_is_add(s) for s in statements):
        return True
    chain = [_assignment(s) for s in statements]
    return all(chain) and all(chain[k][1] == chain[k - 1][0] for k in range(1, len(chain)))


def _fed_from(statement, name):
    """The chain's first statement, taking ``name`` (the block's output) as its input."""
    assign = statement.body[0]
    call = assign.value
    args = [call.args[0].with_changes(value=cst.Name(name))]
    return statement.with_changes(body=[assign.with_changes(value=call.with_changes(args=args))])


class _Blocks(cst.CSTTransformer):
    """Finds the sequence (statements or a list) holding the most Conv+activation+Pool blocks; sets their number."""

    def __init__(self, target=None, chosen=None):
        super().__init__()
        self.target, self.chosen = target, chosen
        self.seen = []  # per sequence, in visit order: (number of blocks, whether the last one can be repeated)

    def _sequence(self, items, statements):
        kinds = [_layer_kind(item) for item in items]
        groups = _groups(kinds)
        repeatable = bool(groups) and (not statements or _repeatable(items[groups[-1][0]:groups[-1][1] + 1]))
        ordinal = len(self.seen)
        self.seen.append((len(groups), repeatable))
        if self.target is None or ordinal != self.chosen or self.target == len(groups):
            return items
        if self.target < len(groups):
            cut, end = groups[self.target][0], groups[-1][1] + 1
            return list(items[:cut]) + list(items[end:])
        start, end = groups[-1][0], groups[-1][1] + 1
        last = list(items[start:end])
        if statements:
            comment = cst.EmptyLine(comment=cst.Comment(ADDED_BLOCK_COMMENT))
            first = last[0] if _is_add(last[0]) else _fed_from(last[0], _assignment(last[-1])[0])
            copy = [first.with_changes(leading_lines=[comment])] + last[1:]
        else:  # list elements: each copy needs the comma (and line break) the block's first element has
            last[-1] = last[-1].with_changes(comma=last[0].comma)
            copy = last
        return list(items[:start]) + last + copy * (self.target - len(groups)) + list(items[end:])

    def leave_Module(self, original_node, updated_node):
        return updated_node.with_changes(body=self._sequence(updated_node.body, True))

    def leave_IndentedBlock(self, original_node, updated_node):
        return updated_node.with_changes(body=self._sequence(updated_node.body, True))

    def leave_List(self, original_node, updated_node):
        return updated_node.with_changes(elements=self._sequence(updated_node.elements, False))


def _parse(source, origin):
    try:
        return cst.parse_module(source)
    except cst.ParserSyntaxError as exc:
        raise AutotuneError(f"model.file: {origin!r} is not valid Python (line {exc.raw_line}: {exc.message}); "
                            "expected a Python script")


def _block_sequence(module):
    """(ordinal of the sequence whose blocks are tuned, their number) or (None, 0) when none can be repeated."""
    blocks = _Blocks()
    module.visit(blocks)
    best = max(range(len(blocks.seen)), key=lambda i: blocks.seen[i][0], default=None)
    if best is None or not blocks.seen[best][0] or not blocks.seen[best][1]:
        return None, 0
    return best, blocks.seen[best][0]


def read(source, origin):
    """What the script is and what of it can be tuned: layers, baseline values, block sequence.

    Raises one line saying what was found and what is needed when it is not a Keras CNN script with a
    fit() on validation data.
    """
    module = _parse(source, origin)
    values = _Values(keras_ref=_keras_ref(module), constants=_constants(module))
    module.visit(values)
    names = [layer.split("(")[0].split(".")[-1] for layer in values.layers]
    if not values.builds_model:
        raise AutotuneError(f"model.file: {origin!r} imports Keras but builds no model (no Sequential or keras.Model "
                            f"call) and defines no build_model(hp); {EXPECTED}")
    if not values.counts["conv"]:
        found = ", ".join(sorted(set(names))) or "no layers"
        raise AutotuneError(f"model.file: {origin!r} builds a Keras model with {found} but no convolution layer; "
                            "expected Conv2D (or Conv1D/Conv3D/Convolution2D) layers: a CNN")
    if not values.fits:
        raise AutotuneError(f"model.file: {origin!r} builds a Keras CNN but never calls fit(); "
                            "expected model.fit(...) with validation_data= or validation_split=")
    if not values.validated:
        raise AutotuneError(f"model.file: {origin!r} calls fit() without validation data; expected validation_data= "
                            "or validation_split= in fit() (target.metric is a metric on validation data)")
    baseline = {name: point["value"] for name, point in values.found.items()}
    output = baseline.pop(f"dense{values.counts['dense']}.units", None)  # the output layer: its size is the class count
    sequence, blocks = _block_sequence(module)
    if blocks:
        baseline["crp_blocks"] = blocks
    last = values.layers[-1] if values.layers else ""
    return {"layers": values.layers, "baseline": baseline, "block_sequence": sequence,
            "types": {name: point["type"] for name, point in values.found.items()},
            # The last layer when it is a Dense with a literal size (else None): checked against the classes.
            "output": {"layer": last, "units": output} if output and last.split("(")[0].endswith("Dense") else None,
            "warnings": _fit_warnings(origin, values.fits)}


def _fit_warnings(origin, fits):
    if fits < 2:
        return []
    return [f"model.file: {os.path.basename(origin)!r} calls fit() {fits} times; only the first fit is tuned and "
            "scored (later ones train on, unwatched); expected one fit() call"]


def output_lines(script, classes, origin):
    """(errors, warnings) for a script whose output layer does not match the data set's classes.

    Fewer units than classes cannot train (an error, one line); more train but waste the extra outputs on
    classes that do not exist, usually a layer copied from a 10-class example (a warning). One sigmoid unit
    on two classes is the binary form and matches."""
    output, n = script.get("output"), len(classes)
    if not output or output["units"] == n or (output["units"] == 1 and n == 2):
        return [], []
    line = (f"model.file: {os.path.basename(origin)!r} ends in {' '.join(output['layer'].split())}: {output['units']} output(s) for "
            f"{n} classes in dataset.path ({', '.join(repr(c) for c in list(classes)[:5])}"
            f"{', ...' if n > 5 else ''}); expected Dense({n}, activation='softmax')"
            f"{' or Dense(1, activation=' + repr('sigmoid') + ')' if n == 2 else ''}")
    return ([line], []) if output["units"] < n else ([], [line])


def default_space(baseline):
    """Ranges around the committed values (the configuration's search.space narrows or replaces them)."""
    space = {}
    for name, value in baseline.items():
        field = name.split(".")[-1]
        if field in ("filters", "units"):
            space[name] = {"type": "int", "low": max(1, value // 2), "high": max(value * 4, 8), "log": True}
        elif field == "kernel_size":
            space[name] = {"type": "categorical", "choices": sorted({value, 3, 5})}
        elif field == "rate":  # choices, not a float range: the diff shows 0.3, not 0.28374619
            space[name] = {"type": "categorical", "choices": sorted({value, 0.0, 0.1, 0.2, 0.3, 0.4, 0.5})}
        elif field == "learning_rate":
            space[name] = {"type": "categorical", "choices": sorted({float(f"{value * f:.3g}") for f in (0.1, 0.3, 1, 3, 10)})}
        elif field == "epochs":
            space[name] = {"type": "int", "low": 1, "high": max(10, value * 3)}
        elif field == "batch_size":
            space[name] = {"type": "categorical", "choices": sorted({value, 16, 32, 64, 128})}
        elif name == "crp_blocks":
            space[name] = {"type": "int", "low": 1, "high": value + 1}
    return space


def limit_lines(baseline, space):
    """Values whose rewrite would cost the controller more than any model needs: one line each."""
    lines = []
    if isinstance(baseline.get("crp_blocks"), (int, float)) and baseline["crp_blocks"] > MAX_CRP_BLOCKS:
        lines.append(f"model.baseline.crp_blocks: {baseline['crp_blocks']!r} is invalid; expected at most "
                     f"{MAX_CRP_BLOCKS} blocks (each pooling halves the image)")
    high = (space.get("crp_blocks") or {}).get("high")
    if isinstance(high, (int, float)) and high > MAX_CRP_BLOCKS:
        lines.append(f"search.space.crp_blocks: high {high!r} is invalid; expected at most {MAX_CRP_BLOCKS} blocks "
                     "(each pooling halves the image)")
    return lines


def default_ladder(space):
    """The original pipeline's ladder: filters, kernel size, one more block, epochs."""
    order = ("filters", "kernel_size", "crp_blocks", "epochs")
    return [name for field in order for name in space if name.split(".")[-1] == field]


def rewrite(source, params, committed, block_sequence=None):
    """The user's source with only the values in ``params`` that differ from the ``committed`` ones changed."""
    changed = {name: value for name, value in params.items() if committed.get(name) != value}
    if not changed:
        return source
    module = cst.parse_module(source)
    values = _Values(values=changed, keras_ref=_keras_ref(module), constants=_constants(module))
    module = module.visit(values)
    if values.constant_values:
        module = _with_constants(module, values.constant_values)
    if "crp_blocks" in changed and block_sequence is not None:
        module = module.visit(_Blocks(target=int(changed["crp_blocks"]), chosen=block_sequence))
    code = module.code
    compile(code, "model.py", "exec")  # proves the rewrite is valid Python; never run here
    return code


def _is_script_candidate(path):
    try:
        with open(path, encoding="utf-8") as handle:
            source = handle.read()
    except (OSError, UnicodeDecodeError):
        return None
    imports_keras = any(word in source for word in ("import keras", "from keras", "tensorflow"))
    return "fit(" in source if imports_keras and ("Sequential" in source or "Model(" in source) else None


# Folders of a checkout that hold no model code: its history, environments, run folders (hidden ones are skipped too).
# A fleet ships a model's folder without them (fleet.py).
SKIPPED_FOLDERS = frozenset({".git", ".venv", "venv", "__pycache__", "node_modules", "runs"})


def find_script(folder):
    """The one Python file of a checkout folder that builds a Keras model and calls fit (cheap text scan, then parsed)."""
    candidates = {}
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_FOLDERS and not d.startswith("."))
        if os.path.relpath(root, folder).count(os.sep) >= 1:  # the folder and two levels below it
            dirs[:] = []
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(root, name)
                fits = _is_script_candidate(path)
                if fits is not None:
                    candidates[os.path.relpath(path, folder)] = fits
    with_fit = [name for name, fits in candidates.items() if fits]
    if len(with_fit) == 1:
        return os.path.join(folder, with_fit[0])
    if len(with_fit) > 1:
        raise AutotuneError(f"model.file: {folder!r} holds several Keras scripts that call fit(): {', '.join(with_fit)}; "
                            "expected one, or model.file naming the script to tune")
    found = f"Keras models without fit() in {', '.join(candidates)}" if candidates else "no Keras script"
    raise AutotuneError(f"model.file: {folder!r} holds {found}; {EXPECTED}")


def plan(source, path, overrides, found):
    """The model plan of a script: (plan without space/ladder, facts). ``found``: its facts (kinds/source.py)."""
    script = read(source, path)
    unknown = sorted(set(overrides) - set(script["baseline"]))
    if unknown:
        raise AutotuneError(f"model.baseline: {unknown} are not tunable values of {path!r}; "
                            f"expected names from {sorted(script['baseline'])}")
    baseline = dict(script["baseline"], **overrides)
    tunable = ", ".join(script["baseline"])
    found = dict(found, kind="cnn", layers=script["layers"], hyperparameters=baseline,
                 description=f"keras cnn (script {os.path.basename(path)}), {len(script['layers'])} layers, "
                             f"tunable: {tunable}")
    found["space"] = default_space(script["baseline"])
    return {"api": "script", "file": path, "baseline": baseline, "source": source,
            "committed": script["baseline"], "block_sequence": script["block_sequence"], "default_space": found["space"],
            "output": script["output"], "warnings": script["warnings"],
            # The trainer resolves the script's relative data paths against its own folder (trainer script.py).
            "training_defaults": {"data_root": os.path.dirname(os.path.abspath(path))}}, found
