"""A fixed-value stand-in for Keras Tuner's ``HyperParameters``.

A user's ``build_model(hp)`` written for Keras Tuner runs unchanged: each
``hp.Int``/``hp.Float``/``hp.Choice``/``hp.Boolean`` call returns the value the
controller chose for this trial, or the call's own default when the search
space does not cover that name.

A name the trial's parameters do not hold (one built at run time, such as
``hp.Choice(f"filters_{i}", ...)`` in a loop, which the controller cannot read
by parsing) is recorded with its range in ``registered``: the trainer writes them
to the trial folder (trialdir.HP_SEEN) and the controller searches them from the
next trial on, as Keras Tuner registers names when it first sees them.
"""


class FixedHyperParameters:
    def __init__(self, values):
        self.values = dict(values)
        self.registered = {}  # name -> {"spec": range as in search.space (None: not searched), "default": value}

    def _get(self, name, default, spec=None):
        if name not in self.values:
            self.values[name] = default
            self.registered[str(name)] = {"spec": spec, "default": default}
        return self.values[name]

    def Int(self, name, min_value, max_value, step=None, sampling="linear", default=None, **_):
        spec = {"type": "int", "low": min_value, "high": max_value, **_range_extras(step, sampling)}
        return int(self._get(name, min_value if default is None else default, spec))

    def Float(self, name, min_value, max_value, step=None, sampling="linear", default=None, **_):
        spec = {"type": "float", "low": min_value, "high": max_value, **_range_extras(step, sampling)}
        return float(self._get(name, min_value if default is None else default, spec))

    def Choice(self, name, values, ordered=None, default=None, **_):
        return self._get(name, values[0] if default is None else default, {"type": "categorical", "choices": list(values)})

    def Boolean(self, name, default=False, **_):
        return bool(self._get(name, default, {"type": "bool"}))

    def Fixed(self, name, value, **_):
        return self._get(name, value)

    def get(self, name):
        return self.values[name]

    def __getitem__(self, name):
        return self.values[name]


def _range_extras(step, sampling):
    extras = {"step": step} if step is not None else {}
    if sampling in ("log", "reverse_log"):
        extras["log"] = True
    return extras
