"""Loads the packed, already split data set the controller wrote (an .npz)."""
import numpy as np


def load_dataset(path):
    """Return (x_train, y_train, x_val, y_val, class_names), images scaled to [0, 1]."""
    with np.load(path, allow_pickle=False) as packed:
        x_train = packed["x_train"].astype("float32") / 255.0
        x_val = packed["x_val"].astype("float32") / 255.0
        return x_train, packed["y_train"], x_val, packed["y_val"], [str(c) for c in packed["class_names"]]
