"""A fixed-value stand-in for Keras Tuner's ``HyperParameters``.

A user's ``build_model(hp)`` written for Keras Tuner runs unchanged: each
``hp.Int``/``hp.Float``/``hp.Choice``/``hp.Boolean`` call returns the value the
controller chose for this trial, or the call's own default when the search
space does not cover that name.
"""


class FixedHyperParameters:
    def __init__(self, values):
        self.values = dict(values)

    def _get(self, name, default):
        if name not in self.values:
            self.values[name] = default
        return self.values[name]

    def Int(self, name, min_value, max_value, step=None, sampling="linear", default=None, **_):
        return int(self._get(name, min_value if default is None else default))

    def Float(self, name, min_value, max_value, step=None, sampling="linear", default=None, **_):
        return float(self._get(name, min_value if default is None else default))

    def Choice(self, name, values, ordered=None, default=None, **_):
        return self._get(name, values[0] if default is None else default)

    def Boolean(self, name, default=False, **_):
        return bool(self._get(name, default))

    def Fixed(self, name, value, **_):
        return self._get(name, value)

    def get(self, name):
        return self.values[name]

    def __getitem__(self, name):
        return self.values[name]
