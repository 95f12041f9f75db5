#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible module: one trainer host's worker on a study the fleet shares."""

DOCUMENTATION = r"""
---
module: fleet_worker
short_description: Train trials of a shared study on this host until the study stops
description:
  - The trainer hosts' side of C(playbooks/fleet.yml) (docs/fleet.md). Runs the same study loop as C(tune_model)
    against a study in a database server that C(fleet_study) created, with I(slots) trials at once, each in a
    fresh local process; other hosts' workers ask the same study at the same time.
  - Joins only when the shipped packed data set (I(dataset)) matches I(fingerprint) and the study's recorded one,
    and, for a C(model.file) model, when the shipped copy of its folder (I(model)) matches the controller's
    fingerprint and the study's; otherwise fails in one line and trains nothing.
  - Records Optuna heartbeats for its running trials and fails and retries (C(RetryHeartbeatStaleTrialCallback))
    the trials of hosts whose heartbeat stopped; a reached goal anywhere stops its trials within one poll.
  - Each ended trial's files (code, metrics, result, log, saved model) go to Optuna's artifact store
    (I(artifacts), a folder every host and the controller share or an S3 bucket), so they outlive the host.
  - With an artifact store, each running trial's checkpoint goes there after each epoch (as often as its upload
    allows), and a trial retried here from a dead host resumes from the newest one instead of epoch 0.
  - I(config) and I(templates_dir) are this host's copies, shipped by the play.
extends_documentation_fragment:
  - autotune_config
  - autotune_config.artifact_store
options:
  runs_root:
    description: Parent of this worker's run folder (C(<runs_root>/<study>/<worker>)).
    type: path
    default: runs
  storage:
    description: Optuna storage URL of the database server (holds the password, so it is never logged).
    type: str
    required: true
  dataset:
    description: The packed data set on this host (the folder C(fleet_study) packed, shipped by the play).
    type: path
    required: true
  fingerprint:
    description: The packed data set's fingerprint the controller computed (C(fleet_study)'s C(fingerprint)).
    type: str
    required: true
  worker:
    description: This worker's name (the inventory host name); it names the run folder and is recorded on each trial.
    type: str
    required: true
  slots:
    description: Trials this host trains at once.
    type: int
    default: 1
  model:
    description:
      - The shipped copy of a C(model.file) model's folder (C(fleet_study)'s C(model), unpacked on this host);
        unset for a C(model.template) model. Its I(file) replaces the configuration's C(model.file), and for a
        script its I(data) replaces C(dataset.path) (the images the script reads, inside that folder).
    type: dict
    suboptions:
      path:
        description: The folder on this host the model's archive was unpacked into.
        type: path
        required: true
      file:
        description: The model file, relative to I(path).
        type: str
        required: true
      data:
        description: A script's image folder, relative to I(path); unset for a C(build_model(hp)) file.
        type: str
      fingerprint:
        description: The folder's fingerprint the controller computed; a copy that differs is refused.
        type: str
        required: true
  pushed:
    description:
      - The configuration and model came from a pushed commit (C(fleet_study)'s C(pushed)); its trials must then not
        share this worker's user, as on one host (the local runner's rule, docs/security.md), or the worker refuses.
    type: bool
    default: false
  trainer_path:
    description: Folder holding the C(autotune_trainer) package, where it is not installed (the worker image has it).
    type: path
  limits:
    description:
      - The operator's caps (C(autotune_limits)) over the shipped configuration's budget, as for C(tune_model);
        unset suboptions cap nothing.
    type: dict
    suboptions:
      max_trials:
        description: At most this many trials in the study.
        type: int
      max_seconds:
        description: At most this many seconds of this worker's tuning.
        type: int
      trial_timeout:
        description: At most this many seconds per trial.
        type: int
      slots:
        description: At most this many trials at once on this host.
        type: int
requirements:
  - optuna (the shared study; see requirements-worker.txt)
  - SQLAlchemy and psycopg (for the postgresql:// storage; see requirements-worker.txt)
  - PyYAML and jsonschema (to read and check the shipped configuration; see requirements-worker.txt)
  - Jinja2 (to render the model templates; see requirements-worker.txt)
  - libcst (to read and rewrite a user's Keras script; see requirements-worker.txt)
  - numpy and pillow (to check the packed data set; see requirements-worker.txt)
  - optuna-dashboard (for the trial notes; see requirements-worker.txt)
  - boto3 (for an s3:// artifact store; see requirements-worker.txt)
attributes:
  check_mode:
    support: full
    description: Checks the configuration and that the data set matches the study's; trains nothing.
  diff_mode:
    support: none
author:
  - autotune maintainers
"""

EXAMPLES = r"""
- name: Train trials of the shared study on this host
  fleet_worker:
    config: ~/autotune-fleet/catsdogs/autotune.yml
    templates_dir: ~/autotune-fleet/model_templates
    runs_root: ~/autotune-runs
    storage: "{{ autotune_storage }}"
    dataset: ~/autotune-fleet/catsdogs/dataset-0123456789abcdef
    fingerprint: 3f2a9c0d1e4b5a67
    model:
      path: ~/autotune-fleet/catsdogs/model-5b1c0e9a7d3f2468
      file: train.py
      data: cnn_dataset/test_set
      fingerprint: 5b1c0e9a7d3f2468
    worker: "{{ inventory_hostname }}"
    slots: 2
    artifacts: s3://autotune-artifacts/fleet
    s3:
      access_key: "{{ vault_autotune_s3_access_key }}"
      secret_key: "{{ vault_autotune_s3_secret_key }}"
  async: 3600
  poll: 5
"""

RETURN = r"""
worker:
  description: This worker's name.
  returned: success
  type: str
run_dir:
  description: This worker's run folder on the host.
  returned: always
  type: str
stop_reason:
  description: Why this worker stopped (the study's goal or budget).
  returned: success
  type: str
new_trials:
  description: Trials this worker asked for (duplicates answered at once included).
  returned: success
  type: int
trained:
  description: Numbers of the trials this worker trained.
  returned: success
  type: list
  elements: int
progress:
  description: One line per trial this worker finished.
  returned: success
  type: list
  elements: str
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.autotune import config as tune_config
from ansible.module_utils.autotune import fleet
from ansible.module_utils.autotune.errors import AutotuneError
from ansible.module_utils.autotune.modelcode import plan as model_plan
from ansible.module_utils.autotune.module_args import ARTIFACT_ARGUMENTS, CONFIG_ARGUMENTS, CONFIG_FILE_ARGUMENTS


def main():
    module = AnsibleModule(
        argument_spec=dict(
            CONFIG_FILE_ARGUMENTS,
            storage=dict(type="str", required=True, no_log=True),
            dataset=dict(type="path", required=True),
            fingerprint=dict(type="str", required=True),
            worker=dict(type="str", required=True),
            slots=dict(type="int", default=1),
            model=dict(type="dict", options=dict(path=dict(type="path", required=True),
                                                 file=dict(type="str", required=True), data=dict(type="str"),
                                                 fingerprint=dict(type="str", required=True))),
            pushed=dict(type="bool", default=False),
            **ARTIFACT_ARGUMENTS,
            trainer_path=dict(type="path"),
            limits=CONFIG_ARGUMENTS["limits"],
        ),
        supports_check_mode=True,
    )
    params = module.params
    if params["slots"] < 1:
        module.fail_json(msg=f"slots: {params['slots']} is invalid; expected an integer >= 1")
    # The host trains from the shipped pack, in fresh local processes (the worker image holds the trainer).
    here = {"dataset": {"path": params["dataset"]}, "runner": {"kind": "local", "slots": params["slots"]}}
    model = params["model"]
    try:
        if model:  # a model.file model: this host's copy of its folder, once it is the controller's
            here = tune_config.merged(here, fleet.shipped_model(model, params["worker"]))
        config = tune_config.load(params["config"], tune_config.merged(params["overrides"], here))
        tune_config.apply_limits(config, params["limits"])
        if params["pushed"]:
            fleet.check_pushed(config, params["worker"])
        plan = model_plan(config, params["templates_dir"])
        run_dir = os.path.join(os.path.abspath(params["runs_root"]), config["study"], params["worker"])
        model_print = model["fingerprint"] if model else None
        if module.check_mode:
            fleet.check_data(params["dataset"], params["fingerprint"], config["study"], params["storage"],
                             params["worker"], model_print)
            module.exit_json(changed=False, run_dir=run_dir, msg="the data set matches the study's; this host may join")
        result = fleet.work(config, plan, run_dir, params["storage"], params["worker"], params["dataset"],
                            params["fingerprint"], params["artifacts"], params["trainer_path"], model_print,
                            params["s3"])
    except AutotuneError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(changed=bool(result["trained"]), **result)


if __name__ == "__main__":
    main()
