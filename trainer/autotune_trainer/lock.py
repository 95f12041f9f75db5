"""``python -m autotune_trainer.lock``: the trainer's environment as one JSON line, for a trial's record.

Python's version, the machine and CPU model, every installed distribution and its version (TensorFlow, Keras,
NumPy and the rest: the environment as a lock) and a digest of this package's own source. The controller runs it
where trials run (the local runner's interpreter, the docker runner's image) before any trial code, and compares
it again before a re-run (module_utils/autotune/reproduce.py). It imports nothing heavy: about 0.15 s.
"""
import hashlib
import importlib.metadata
import json
import platform
import sys
from pathlib import Path


def trainer_digest():
    """sha256 of this package's .py files (names and bytes): the trainer code that trains a trial."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).resolve().parent.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def cpu_model():
    """The CPU's model name (Linux): another instruction set may round TensorFlow's oneDNN kernels otherwise."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()[:200]
    except OSError:
        pass
    return platform.processor()[:200]


def environment():
    packages = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:  # a broken install can leave a distribution without metadata
            packages[name.lower().replace("_", "-")] = dist.version
    return {"python": platform.python_version(), "machine": platform.machine(), "cpu": cpu_model(),
            "packages": dict(sorted(packages.items())), "trainer": trainer_digest()}


def main():
    sys.stdout.write(json.dumps(environment(), sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
