"""A trial that is the user's own Keras script, run as it is (``model_api: script``).

The controller rewrote only the tuned values (module_utils/autotune/scriptcode.py); here the
script runs as ``__main__`` in the trial folder, which is its working directory, so what it
writes (``model.save(...)``, plots) lands there. Nothing in its code is edited at run time:

* ``keras.Model.fit`` is wrapped for the run: the script's first ``fit`` gets our callbacks
  (target.metric check, checkpoint, per-epoch metrics, NaN stop, goal stop) after its own, and ``verbose=2``;
* the Keras image readers (``image_dataset_from_directory``, ``load_img``) resolve a relative
  path that does not exist in the trial folder against the script's own folder (``data_root``),
  so ``"cnn_dataset/training_set"`` reads what it reads when the user runs the script by hand;
* code after ``fit`` that fails (a missing prediction image, a mail call without network) is a
  warning in the log: the trained epochs stand.
"""
import contextlib
import functools
import importlib
import os
import runpy
import sys
import traceback

from autotune_trainer.kinds.base import ModelTrial

# (module, function, name of its path argument): the readers whose relative paths are resolved.
DATA_READERS = (
    ("keras.utils", "image_dataset_from_directory", "directory"),
    ("keras.utils", "load_img", "path"),
    ("keras.preprocessing", "image_dataset_from_directory", "directory"),
    ("keras.preprocessing.image", "load_img", "path"),
    ("keras._tf_keras.keras.utils", "image_dataset_from_directory", "directory"),
    ("keras._tf_keras.keras.utils", "load_img", "path"),
    ("keras._tf_keras.keras.preprocessing", "image_dataset_from_directory", "directory"),
    ("keras._tf_keras.keras.preprocessing.image", "load_img", "path"),
)


class ScriptError(Exception):
    """The script did something a trial cannot use (it never trained)."""


def _resolving(function, argument, root):
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        if args:
            args = (_resolve(args[0], root),) + tuple(args[1:])
        elif argument in kwargs:
            kwargs[argument] = _resolve(kwargs[argument], root)
        return function(*args, **kwargs)
    wrapper.autotune_original = function
    return wrapper


def _resolve(path, root):
    if isinstance(path, (str, os.PathLike)) and not os.path.isabs(path) and not os.path.exists(path):
        return os.path.join(root, os.fspath(path))
    return path


@contextlib.contextmanager
def data_paths(root):
    """While the script runs, its relative data paths are read from its own folder."""
    patched = []
    for module_name, name, argument in DATA_READERS if root else ():
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        original = getattr(module, name, None)
        if original is not None and not hasattr(original, "autotune_original"):
            setattr(module, name, _resolving(original, argument, root))
            patched.append((module, name, original))
    try:
        yield
    finally:
        for module, name, original in patched:
            setattr(module, name, original)


class ScriptTrial(ModelTrial):
    """The script runs as it is; its first fit gets our callbacks (the same interface as the other kinds)."""

    name = "script"
    reads_pack = False  # the script reads its own images
    ordinary_exit = True  # the script may leave files unflushed (ending.py)
    model_words = "the script's model"
    failed_words = "the script"

    def __init__(self, trial_dir, spec, data=None):
        super().__init__(trial_dir, spec, data)
        self.script = self.model_path
        self.data_root = (spec.get("defaults") or {}).get("data_root")

    def _callbacks(self, launched):
        from autotune_trainer.callbacks import goal_callbacks  # pylint: disable=import-outside-toplevel

        return goal_callbacks(self, launched, self.model_words)

    def fit(self, launched):
        """Run the script; returns (model, epochs, batch size, writer, history) of its first fit."""
        import keras  # pylint: disable=import-outside-toplevel

        seen, original_fit = {}, keras.Model.fit

        def fit(model, *args, **kwargs):
            if seen:
                print("autotune_trainer: WARNING: the script calls fit() again; only the first fit is tuned",
                      file=sys.stderr, flush=True)
                return original_fit(model, *args, **kwargs)
            writer, ours = self._callbacks(launched)
            seen.update(model=model, writer=writer, epochs=kwargs.get("epochs", 1), batch_size=kwargs.get("batch_size"))
            kwargs.update(callbacks=list(kwargs.get("callbacks") or []) + ours, verbose=2)
            seen["history"] = original_fit(model, *args, **kwargs)
            return seen["history"]

        keras.Model.fit = fit
        try:
            self._run(seen)
        finally:
            keras.Model.fit = original_fit
        if "history" not in seen:
            raise ScriptError("the script ended without calling fit(); expected it to train its model with fit()")
        return seen["model"], seen["epochs"], seen["batch_size"], seen["writer"], seen["history"]

    def _run(self, seen):
        argv = sys.argv
        sys.argv = [str(self.script)]
        try:
            with data_paths(self.data_root):
                runpy.run_path(str(self.script), run_name="__main__")
        except SystemExit as exc:
            if exc.code not in (None, 0) and "history" not in seen:
                raise ScriptError(f"the script exited with status {exc.code} before fit() finished") from exc
            if exc.code not in (None, 0):
                print(f"autotune_trainer: WARNING: the script exited with status {exc.code} after fit(); "
                      "its trained epochs stand", file=sys.stderr, flush=True)
        except Exception as exc:  # pylint: disable=broad-except
            if "history" not in seen:
                raise
            traceback.print_exc()
            print(f"autotune_trainer: WARNING: the script failed after fit() ({type(exc).__name__}: {exc}); "
                  "its trained epochs stand", file=sys.stderr, flush=True)
        finally:
            sys.argv = argv
