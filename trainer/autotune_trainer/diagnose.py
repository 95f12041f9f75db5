"""One line for a trial whose model code failed before it trained: the cause, and what to change.

Written into result.json (status trialdir.MODEL_ERROR); the controller stops a study whose committed
model (trial 0) fails this way at once, instead of retrying the same crash (module_utils/autotune/budget.py).
"""

# Phrases of TensorFlow / Keras errors that mean the output layer, the loss and the labels do not fit.
SHAPE_PHRASES = ("incompatible shapes", "must have the same shape", "logits and labels", "received a label value",
                 "shapes are incompatible", "expected shape", "should have the same", "dimensions must be equal",
                 "is incompatible with the layer", "expects", "rank")
FIT_LABELS = ('end with Dense(<classes>, activation="softmax") and loss="sparse_categorical_crossentropy" '
              '(or "categorical_crossentropy"), or for two classes Dense(1, activation="sigmoid") and '
              'loss="binary_crossentropy"')


class NotAModel(TypeError):
    """build_model returned something that is not a Keras model: its message is the whole line."""


class MissingMetric(Exception):
    """The model's logs lack target.metric (callbacks.RequireMetric): its message is the whole line."""


def built_model(built, call):
    """``built`` when it is a model (it has fit); else NotAModel naming what ``call`` returned."""
    if built is None or not callable(getattr(built, "fit", None)):
        what = "None" if built is None else f"a {type(built).__name__}"
        raise NotAModel(f"{call} returned {what}; expected a keras Model (compiled), e.g. 'return model' at its end")
    return built


def model_error(exc, where, classes=None):
    """``where``: "build_model(hp)" or "the script"."""
    if isinstance(exc, (NotAModel, MissingMetric)):
        return str(exc)
    message = " ".join(str(exc).split())[:300]
    cause = f"{where} failed before training: {type(exc).__name__}: {message}"
    counted = f" ({classes} classes)" if classes else ""
    if isinstance(exc, (ValueError, TypeError)) and any(p in message.lower() for p in SHAPE_PHRASES):
        return f"{cause}; the model's output, loss and the labels{counted} do not fit: {FIT_LABELS}"
    return f"{cause}; fix the model code (trainer.log has the traceback) and push again"
