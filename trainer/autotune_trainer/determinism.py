"""Seeds and op determinism: what makes a trial's re-run (playbooks/reproduce.yml) give the same values.

``keras.utils.set_random_seed`` seeds Python, NumPy and TensorFlow; TensorFlow's op determinism makes the ops
themselves (and tf.data) deterministic, raising instead of running an op that has no deterministic kernel. On CPU
it cost nothing measurable on the sample data (docs/reproduce.md has the figures), so trial.json's
``deterministic`` is on unless the configuration turns it off.
"""


def seed_everything(spec):
    """Seed every generator from trial.json's ``seed``, and turn op determinism on when ``deterministic`` says so."""
    import sys  # pylint: disable=import-outside-toplevel

    import keras  # pylint: disable=import-outside-toplevel

    keras.utils.set_random_seed(int(spec.get("seed", 1)))
    deterministic = bool(spec.get("deterministic", True)) and keras.backend.backend() == "tensorflow"
    if deterministic:
        import tensorflow as tf  # pylint: disable=import-outside-toplevel

        tf.config.experimental.enable_op_determinism()
    print(f"autotune_trainer: seed {int(spec.get('seed', 1))}, op determinism {'on' if deterministic else 'off'}",
          file=sys.stderr, flush=True)
