"""How a compiled model wants its labels, decided from its loss after ``build_model(hp)`` compiled it.

The packed data set holds class indices. ``sparse_categorical_crossentropy`` takes them as they are;
``categorical_crossentropy`` (the keras.io getting-started shape) needs one-hot rows; a one-unit
sigmoid with ``binary_crossentropy`` needs one float column. Keras' ``"accuracy"`` then resolves to
the matching accuracy (categorical, binary) from those shapes.
"""

ONE_HOT_LOSSES = {"categorical_crossentropy", "categoricalcrossentropy", "categorical_focal_crossentropy",
                  "categoricalfocalcrossentropy", "categorical_hinge", "categoricalhinge",
                  "kl_divergence", "kldivergence", "kullback_leibler_divergence"}
BINARY_LOSSES = {"binary_crossentropy", "binarycrossentropy", "binary_focal_crossentropy",
                 "binaryfocalcrossentropy", "hinge", "squared_hinge"}


def loss_name(loss):
    """The loss' name in lower case: a string as given, a Loss instance's class, a function's name."""
    if isinstance(loss, dict):  # one output is all a trial trains: take the first entry
        loss = next(iter(loss.values()), None)
    if isinstance(loss, (list, tuple)):
        loss = loss[0] if loss else None
    if loss is None:
        return ""
    if isinstance(loss, str):
        return loss.lower()
    return getattr(loss, "__name__", type(loss).__name__).lower()


def label_form(model, classes):
    """"one_hot", "binary" or "int": the labels ``model`` (compiled) trains on, for ``classes`` classes."""
    name = loss_name(getattr(model, "loss", None))
    units = model.output_shape[-1] if model.outputs else None
    if name in ONE_HOT_LOSSES:
        return "one_hot"
    if name in BINARY_LOSSES:
        # One sigmoid unit: a float column; one unit per class (a softmax given binary_crossentropy): one-hot.
        return "binary" if units == 1 or classes <= 1 else "one_hot"
    return "int"
