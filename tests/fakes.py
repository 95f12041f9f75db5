"""An in-memory runner for unit tests of the study loop: no process, no container, no training.

A script maps a trial's parameters to what its trainer "does": a list of per-epoch
metric values (one is revealed per poll, like a trainer writing metrics.jsonl), or
'crash' / 'hang' / 'model_error' (the model's own code failed before it trained). ``seen`` maps
parameters to the hyperparameters a build_model(hp) named at run time (written as the trainer does). Real runners are tested with real training in tests/integration/.
"""
from ansible.module_utils.autotune import trialdir
from ansible.module_utils.autotune.runners.base import Runner, TrialProcess


class FakeProcess(TrialProcess):
    def __init__(self, trial_dir, values, log, flight, metric="val_accuracy"):
        super().__init__(trial_dir)
        self.values, self.log, self.flight, self.metric = values, log, flight, metric
        self.shown, self.stopped, self.ended = 0, False, False
        flight["now"] += 1
        flight["most"] = max(flight["most"], flight["now"])

    def exit_code(self):
        code = self._code()
        if code is not None and not self.ended:
            self.ended = True
            self.flight["now"] -= 1
        return code

    def _code(self):
        if self.stopped:
            return -15
        if self.values in ("crash", "model_error"):
            return 1
        if self.values == "hang" or self.shown < len(self.values):
            return None
        return 0

    def new_epochs(self):
        if self.values in ("crash", "hang", "model_error") or self.shown >= len(self.values):
            return []
        self.shown += 1
        return [{"epoch": self.shown - 1, self.metric: self.values[self.shown - 1]}]

    def stop(self, grace=5.0):
        self.stopped = True
        self.log.append(("stopped", self.trial_dir))

    def outcome(self):
        if self.stopped or self.values in ("crash", "model_error"):
            return "failed", f"exit status {self.exit_code()}"
        return "finished", None

    def result(self):
        if self.values == "model_error":
            return {"status": trialdir.MODEL_ERROR, "reason": "build_model(hp) or its fit failed before training: "
                    "ValueError: Arguments `target` and `output` must have the same shape; the model's output ..."}
        if self.values in ("crash", "hang") or self.stopped:
            return {}
        return {"status": "ok", "value": self.values[-1], "fit_seconds": 0.0, "startup_seconds": 0.0}

    def health(self):
        return {}

    def log_tail(self, lines=12):
        return ["Traceback (most recent call last):", "RuntimeError: scripted crash"] if self.values == "crash" else []


class FakeScorer(TrialProcess):
    """The verifier's run: it 'measures' the score the script says the saved model really has, in the metric the
    controller asked for (score.json), under verified.json's keys for it (val_<name>, test_<name>)."""

    def __init__(self, out_dir, measured, tested=None, polls=0):
        super().__init__(out_dir)
        self.measured, self.tested, self.polls = measured, tested, polls  # polls: how many it runs for

    def exit_code(self):
        if self.polls > 0:
            self.polls -= 1
            return None
        if self.measured is not None:
            metric = trialdir.read_json(f"{self.trial_dir}/score.json", {}).get("metric", "val_accuracy")
            name = metric[len("val_"):]
            scores = {"metric": metric, f"val_{name}": self.measured}
            if self.tested is not None:
                scores.update({f"test_{name}": self.tested, "n_test": 300})
            trialdir.write_json(f"{self.trial_dir}/verified.json", scores)
        return 0 if self.measured is not None else 1

    def stop(self, grace=5.0):
        """Ends at once."""

    def outcome(self):
        return "finished", None

    def log_tail(self, lines=12):
        return [] if self.measured is not None else ["ValueError: unsafe model file"]


class FakeRunner(Runner):
    name = "fake"
    CONFIG_SCHEMA = {"script": {"type": "string", "description": "unused; the script is given in Python"}}

    def __init__(self, script, measure=None, seen=None, test=None, scoring_polls=0):
        self.script, self.seen, self.scoring_polls = script, seen, scoring_polls
        self.measure = measure or (lambda params, reported: reported)  # the saved model scores what was reported
        self.test = test or self.measure  # its score on the held-out split (when the verifier is given one)
        self.verified = []  # trial folders scored apart
        self.started = []  # (trial folder, labels) per start, in order
        self.data_given = []  # the data folder each trial was started with
        self.log = []
        self.flight = {"now": 0, "most": 0}  # trials in flight now, and the most at once

    @classmethod
    def from_config(cls, block, framework, trainer_path=None):
        return cls(lambda params: [0.5])

    def start(self, trial_dir, data_path, labels):
        self.started.append((trial_dir, dict(labels)))
        self.data_given.append(data_path)
        if self.seen and self.seen(self.params_of(trial_dir)):
            trialdir.write_json(f"{trial_dir}/{trialdir.HP_SEEN}", self.seen(self.params_of(trial_dir)))
        return FakeProcess(trial_dir, self.script(self.params_of(trial_dir)), self.log, self.flight,
                           self.spec_of(trial_dir).get("metric", "val_accuracy"))

    def verify(self, trial_dir, data_path, out_dir, labels, test_path=None, read_only=()):
        import os  # pylint: disable=import-outside-toplevel
        os.makedirs(out_dir, exist_ok=True)
        self.verified.append(trial_dir)
        params, reported = self.params_of(trial_dir), self.script(self.params_of(trial_dir))[-1]
        return FakeScorer(out_dir, self.measure(params, reported), self.test(params, reported) if test_path else None,
                          self.scoring_polls)

    @classmethod
    def params_of(cls, trial_dir):
        return cls.spec_of(trial_dir)["params"]

    @staticmethod
    def spec_of(trial_dir):
        import json  # pylint: disable=import-outside-toplevel
        with open(f"{trial_dir}/trial.json", encoding="utf-8") as handle:
            return json.load(handle)
