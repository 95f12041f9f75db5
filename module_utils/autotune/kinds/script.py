"""The script kind: a user's own Keras script, tuned as it is (docs/scripts.md). scriptcode.py reads and rewrites
it (libcst, in a bounded child); the trainer runs it with our callbacks on its fit (autotune_trainer/kinds/script.py).
It reads its own images, so the verifier is given them as files and its folders are mounted read-only."""
import os

from ansible.module_utils.autotune import bounded, scriptcode
from ansible.module_utils.autotune import dataset as tune_dataset
from ansible.module_utils.autotune.kinds.base import ModelKind, searched

find_script = scriptcode.find_script  # a checkout folder as model.file: its one Keras script


class ScriptKind(ModelKind):
    """model.file with no build_model(): a script whose values scriptcode finds and rewrites per trial."""

    name = "script"
    fed_the_pack = False  # it reads its own images: its validation metric may be on another split

    def detects(self, model, model_file):
        return model_file is not None and model_file.facts["build_model_args"] is None

    def plan(self, config, templates_dir, model_file):
        path = model_file.path
        plan, found = bounded.run(scriptcode.plan, (model_file.source, path, config["model"].get("baseline") or {},
                                                    model_file.facts),
                                  f"model.file: reading {os.path.basename(path)}",
                                  "expected a Keras script of ordinary size (a few hundred lines)")
        # A script reads its own data: a container sees its folder and the data set, read-only, at their paths.
        plan["read_only_paths"] = [os.path.dirname(os.path.abspath(plan["file"])), config["dataset"]["path"]]
        default_space = plan.pop("default_space")
        plan["space"], plan["ladder"] = searched(config["search"], lambda: default_space, scriptcode.default_ladder)
        return plan, found

    def code(self, plan, params, trial_number):
        return bounded.run(scriptcode.rewrite, (plan["source"], params, plan["committed"], plan["block_sequence"]),
                           f"model.file: rewriting {os.path.basename(plan['file'])} for trial {trial_number}",
                           "expected a script of ordinary size and values within their ranges")

    def space_lines(self, baseline, space):
        return scriptcode.limit_lines(baseline, space)

    def check(self, plan, classes):
        errors, surplus = scriptcode.output_lines(plan, classes, plan["file"])
        return errors, [] if errors else plan["warnings"] + surplus

    def verification_data(self, config, dataset):
        """The verifier scores the images themselves, as the script reads them: the same splits, as files."""
        parts = ("val", "test") if dataset.get("test_path") else ("val",)
        return {"split": {part: tune_dataset.split_files(config["dataset"], part) for part in parts},
                "read_only": [config["dataset"]["test"]] if config["dataset"].get("test") else []}

    def held_out_note(self, config, plan):
        """A script reads its own folders (mounted read-only into its container): a test split inside them is
        not held out."""
        test = config["dataset"].get("test")
        readable = [os.path.realpath(p) for p in plan.get("read_only_paths", ())]
        if not test or any(os.path.realpath(test) == p or os.path.realpath(test).startswith(p + os.sep)
                           for p in readable):
            return ("verified on images the script could read (they are in its data or its own folder); set "
                    "dataset.test to a folder outside both for a held-out score")
        return None
