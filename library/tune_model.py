#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible module: train -> evaluate -> mutate on an Optuna study until the goal or the budget."""

DOCUMENTATION = r"""
---
module: tune_model
short_description: Tune a Keras model until its validation metric reaches the goal
description:
  - Runs the train, evaluate, mutate loop on an Optuna study. Trial 0 is the committed baseline; later
    trials come from the search strategy (C(tpe), C(random), or C(escalate), the original pipeline's
    rule ladder applied to the best trial so far).
  - Each trial trains in a fresh process (runner C(local)) or container (runner C(docker)) under a
    timeout. A trial that crashes, reaches NaN or times out is recorded as failed with its reason and
    the loop goes on; consecutive failures past the budget stop the study.
  - The study lives in an Optuna storage, so running again with the same storage resumes it.
  - Writes C(summary.json), the plot of the metric per trial, C(best_model.keras) and one directory per trial into the
    run directory, and one line per finished trial into its C(progress.log).
  - A missed goal is reported (C(reached) false), not failed; the playbooks fail after the report and mail.
extends_documentation_fragment:
  - autotune_config
  - autotune_config.pushed
options:
  storage:
    description:
      - Optuna storage URL; defaults to the configuration's C(storage), else SQLite in the run directory.
      - May hold a database password, so it is never logged.
    type: str
  trainer_path:
    description: Folder holding the C(autotune_trainer) package, for hosts where it is not installed.
    type: path
  dashboard_url:
    description:
      - Base address of the optuna-dashboard serving this study's storage (role C(dashboard)), e.g. C(http://127.0.0.1:8080).
      - The progress header line then gives the study's page there, and C(summary.json) keeps it for the mail.
      - The study's user attributes and the trials' notes are written whether or not it is set.
    type: str
  learn:
    description:
      - Start a new study from earlier ones (docs/pipeline.md, "A second push learns from the first"). Read once,
        when the study is created; a study that already has trials resumes as it is.
      - The best configuration of each earlier study is tried right after the committed baseline (trial 0), its
        hyperparameters matched by name (names no longer searched are dropped, new ones take their committed value);
        its finished trials whose values fit the new space are given to the sampler (Optuna's C(add_trials)), unless
        they were scored on other data or for another target.
      - Earlier studies are looked for in the study's storage and, with the default storage (SQLite in each run
        folder), in the sibling run folders under the same parent (C(<repository>-*) and the named studies).
    type: dict
    suboptions:
      repository:
        description:
          - The repository this study tunes a commit of, recorded on the study (with I(commit)), so the studies of
            its later commits find it. pipeline.yml sets it to the repository's name (its studies are named
            C(<repository>-<sha7>)).
        type: str
      commit:
        description: The commit this study tunes, recorded on the study.
        type: str
      earlier:
        description: Learn from the most recent studies of the same I(repository) (the operator's switch).
        type: bool
        default: false
      latest:
        description: How many of the repository's earlier studies (those with a finished trial) to learn from.
        type: int
        default: 3
      studies:
        description: Studies to learn from, by name (C(tune.yml -e autotune_learn_from=NAME)).
        type: list
        elements: str
        default: []
requirements:
  - optuna (the study; see requirements.txt)
  - SQLAlchemy (the study storage; see requirements.txt)
  - psycopg (for a postgresql:// storage; see requirements.txt)
  - PyYAML and jsonschema (to read and check the tune configuration; see requirements.txt)
  - Jinja2 (to render the model templates; see requirements.txt)
  - libcst (to read and rewrite a user's Keras script; see requirements.txt)
  - numpy and pillow (to check the image data set; see requirements.txt)
  - matplotlib (for the result's optimisation plot; see requirements.txt)
  - optuna-dashboard (for the trial notes; see requirements.txt)
  - docker (the Docker SDK for Python, for runner.kind docker only; see requirements.txt)
attributes:
  check_mode:
    support: full
    description: Validates the configuration, the model and the data set; trains nothing.
  diff_mode:
    support: none
author:
  - autotune maintainers
"""

EXAMPLES = r"""
- name: Tune until the goal is reached
  tune_model:
    config: examples/catsdogs/autotune.yml
    templates_dir: model_templates
    overrides:
      target: {goal: 0.9}
      budget: {max_trials: 10}
  register: tuned
"""

RETURN = r"""
reached:
  description: Whether the best trial reached the goal.
  returned: success
  type: bool
direction:
  description: Which way target.metric is better, maximize or minimize (inferred from its name when not set).
  returned: success
  type: str
  sample: maximize
best_value:
  description: The best trial's validation metric, as the verifier measured it (the split the search saw).
  returned: success
  type: float
  sample: 0.8925
best_test_value:
  description: The best trial's target metric on the held-out test split, measured by the controller's verifier; the goal is judged on it.
  returned: success
  type: float
  sample: 0.8833
best_params:
  description: The winning hyperparameters.
  returned: success
  type: dict
n_trials:
  description: Trials in the study, earlier runs included.
  returned: success
  type: int
new_trials:
  description: Trials run by this invocation.
  returned: success
  type: int
dashboard_url:
  description: The study's page in optuna-dashboard, when I(dashboard_url) is set.
  returned: success
  type: str
  sample: http://127.0.0.1:8080/dashboard/studies/1
run_dir:
  description: Where results landed.
  returned: always
  type: str
summary_path:
  description: Path of summary.json.
  returned: success
  type: str
stop_reason:
  description: Why the loop stopped.
  returned: success
  type: str
verdict:
  description:
    - One line for a person, whether the goal was reached and why; when no trial completed, it says so and gives
      the first trial's outcome and reason.
  returned: success
  type: str
  sample: "Goal not reached: no trial completed (1 trial(s); trial 0 failed: ...); stopped: trial budget spent (1 trials)"
learned:
  description:
    - What a study created with I(learn) started from; null when nothing was asked. C(studies) has one entry per
      earlier study (its name, commit, best trial and the trial number its best configuration got here, C(imported)
      finished trials given to the sampler, C(values_not_given) why none were), C(lines) the same in words.
  returned: success
  type: dict
progress:
  description: One line per finished trial.
  returned: success
  type: list
  elements: str
"""

import os
import traceback

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.autotune.errors import AutotuneError
from ansible.module_utils.autotune.learn import settings as learn_settings
from ansible.module_utils.autotune.report import SUMMARY_NAME
from ansible.module_utils.autotune.module_args import CONFIG_ARGUMENTS, prepare_or_fail
from ansible.module_utils.autotune.printable import escape
from ansible.module_utils.autotune.storage import redacted
from ansible.module_utils.autotune.tune import run


def main():
    module = AnsibleModule(
        argument_spec=dict(
            CONFIG_ARGUMENTS,
            storage=dict(type="str", no_log=True),
            trainer_path=dict(type="path"),
            dashboard_url=dict(type="str"),
            learn=dict(type="dict", options=dict(
                repository=dict(type="str"), commit=dict(type="str"), earlier=dict(type="bool", default=False),
                latest=dict(type="int", default=3), studies=dict(type="list", elements="str", default=[]))),
        ),
        supports_check_mode=True,
    )
    params = module.params
    config, plan, run_dir, storage = prepare_or_fail(module, params["runs_root"], params["storage"])
    try:
        config["learn"] = learn_settings(params["learn"])  # read by the study loop when it creates the study
    except AutotuneError as exc:
        module.fail_json(msg=escape(str(exc)), errors=[escape(str(exc))])
    if module.check_mode:
        module.exit_json(changed=True, run_dir=run_dir, study=config["study"], msg="configuration, model and data set are valid")
    try:
        summary = run(config, plan, run_dir, storage, trainer_path=params["trainer_path"],
                      dashboard_url=params["dashboard_url"])
    except AutotuneError as exc:
        module.fail_json(msg=str(exc), errors=exc.details or [str(exc)], run_dir=run_dir)
    except Exception as exc:  # pylint: disable=broad-except  # the storage lost, a full disk: one line, then word by mail
        url = storage if isinstance(storage, str) else getattr(storage, "url", None)
        line = escape(redacted(f"{type(exc).__name__}: {exc}", url))
        module.fail_json(msg=f"the study stopped while tuning ({line.splitlines()[0][:400]}); what finished is kept "
                             f"in {run_dir} and its storage: run the same command again to resume",
                         run_dir=run_dir, exception=redacted(traceback.format_exc(), url))
    result = {k: summary[k] for k in ("study", "metric", "direction", "goal", "reached", "best_value", "best_test_value", "best_params", "best_trial",
                                      "n_trials", "new_trials", "stop_reason", "runner", "plot", "best_model",
                                      "progress", "seconds", "notify", "dashboard_url", "verdict", "learned")}
    result.update(changed=summary["new_trials"] > 0, run_dir=run_dir, summary_path=os.path.join(run_dir, SUMMARY_NAME))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
