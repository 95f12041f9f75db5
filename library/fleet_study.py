#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible module: the controller's side of a fleet study (create it; collect it for the report)."""

DOCUMENTATION = r"""
---
module: fleet_study
short_description: Create a study that many trainer hosts share, or collect it into one run folder
description:
  - The controller's side of C(playbooks/fleet.yml) (docs/fleet.md).
  - C(create) validates the configuration, the model and the data set, packs the data set once into the run folder,
    creates the study in a database server with the packed data set's fingerprint, and enqueues the committed
    baseline as trial 0, once. A study created earlier with other data is refused in one line.
  - For a C(model.file) model (a script or a C(build_model(hp)) file), C(create) also packs the model's folder into
    one archive for the hosts and records its fingerprint in the study; a script's images (C(dataset.path)) must be
    inside that folder.
  - C(collect) reads the study and downloads every trial's files from Optuna's artifact store (I(artifacts), a
    shared folder or an S3 bucket) into
    the run folder at the paths a single-host run uses, then writes C(summary.json), the plot and the best model,
    so C(tune_report) and the mail work as for one host, even when the host that trained a trial is gone.
extends_documentation_fragment:
  - autotune_config
  - autotune_config.pushed
  - autotune_config.artifact_store
options:
  action:
    description: C(create) the study before the workers start, or C(collect) it after they ended.
    type: str
    choices: [create, collect]
    default: create
  storage:
    description:
      - Optuna storage URL of a database server every trainer host reaches (C(postgresql://...)).
      - Holds the database password, so it is never logged; give it from the vault or the environment.
    type: str
    required: true
  workers:
    description: The workers' results (C(fleet_worker)'s return values; C(lost) true for a host that vanished).
    type: list
    elements: dict
    default: []
requirements:
  - optuna (the shared study; see requirements.txt)
  - SQLAlchemy and psycopg (for the postgresql:// storage; see requirements.txt)
  - PyYAML and jsonschema (to read and check the tune configuration; see requirements.txt)
  - Jinja2 (to render the model templates; see requirements.txt)
  - libcst (to read and rewrite a user's Keras script; see requirements.txt)
  - numpy and pillow (to pack the image data set; see requirements.txt)
  - matplotlib (for the result's optimisation plot at collect; see requirements.txt)
  - boto3 (for an s3:// artifact store; see requirements.txt)
attributes:
  check_mode:
    support: full
    description: Validates the configuration, the model and the data set; creates and writes nothing.
  diff_mode:
    support: none
author:
  - autotune maintainers
"""

EXAMPLES = r"""
- name: Create the study and enqueue the baseline once
  fleet_study:
    action: create
    config: examples/catsdogs/autotune.yml
    templates_dir: model_templates
    storage: "{{ vault_autotune_storage }}"
  register: fleet

- name: Collect the study and its artifacts
  fleet_study:
    action: collect
    config: examples/catsdogs/autotune.yml
    templates_dir: model_templates
    storage: "{{ vault_autotune_storage }}"
    artifacts: /srv/autotune-artifacts
    workers: "{{ fleet_workers }}"
"""

RETURN = r"""
run_dir:
  description: The controller's run folder.
  returned: always
  type: str
study:
  description: The study's name.
  returned: success
  type: str
dataset:
  description: The packed data set on the controller (create), shipped to each host.
  returned: success and action is create
  type: str
fingerprint:
  description: Digest of the packed data set's bytes, recorded in the study; a host with another refuses to join.
  returned: success and action is create
  type: str
  sample: 3f2a9c0d1e4b5a67
limits:
  description: The operator's caps given as I(limits) (C(autotune_limits)), for the play to hand each worker (C(fleet_worker)).
  returned: success and action is create
  type: dict
pushed:
  description: Whether the configuration came from a pushed commit (I(pushed)), for the play to hand each worker.
  returned: success and action is create
  type: bool
model:
  description:
    - A C(model.file) model's folder packed for the hosts (create); null for a C(model.template) model.
    - C(archive) (the tar file in the run folder), C(folder) (the name to unpack it under), C(file) (the model file
      in it), C(data) (a script's image folder in it, or null), C(fingerprint) (of its files' names and bytes;
      recorded in the study), C(files) (how many).
  returned: success and action is create
  type: dict
  sample: {"archive": "runs/original_pipeline/model-5b1c0e9a7d3f2468.tar", "folder": "model-5b1c0e9a7d3f2468",
           "file": "train.py", "data": "cnn_dataset/test_set", "fingerprint": "5b1c0e9a7d3f2468", "files": 2003}
baseline_enqueued:
  description: Whether this call enqueued the baseline (false when the study already had trials).
  returned: success and action is create
  type: bool
n_trials:
  description: Trials in the study.
  returned: success
  type: int
reached:
  description: Whether the best trial reached the goal on the held-out test split, scored by the controller (collect).
  returned: success and action is collect
  type: bool
best_value:
  description: The best trial's validation metric, as a worker's verifier measured it (collect).
  returned: success and action is collect
  type: float
best_test_value:
  description: The best trial's target metric on the held-out test split, which the workers never hold (collect).
  returned: success and action is collect
  type: float
verdict:
  description: The run's last line for a person (collect), as for one host (M(tune_model)'s I(verdict)).
  returned: success and action is collect
  type: str
summary_path:
  description: Path of summary.json (collect).
  returned: success and action is collect
  type: str
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.autotune import fleet
from ansible.module_utils.autotune.errors import AutotuneError
from ansible.module_utils.autotune.module_args import ARTIFACT_ARGUMENTS, CONFIG_ARGUMENTS, prepare_or_fail
from ansible.module_utils.autotune.report import SUMMARY_NAME


def main():
    module = AnsibleModule(
        argument_spec=dict(
            CONFIG_ARGUMENTS,
            action=dict(type="str", choices=["create", "collect"], default="create"),
            storage=dict(type="str", required=True, no_log=True),
            **ARTIFACT_ARGUMENTS,
            workers=dict(type="list", elements="dict", default=[]),
        ),
        supports_check_mode=True,
    )
    params = module.params
    config, plan, run_dir, storage = prepare_or_fail(module, params["runs_root"], params["storage"])
    if module.check_mode:
        module.exit_json(changed=False, run_dir=run_dir, study=config["study"],
                         msg="configuration, model and data set are valid")
    try:
        if params["action"] == "create":
            result = fleet.create(config, plan, run_dir, storage)
            module.exit_json(changed=result["baseline_enqueued"], limits=params["limits"] or {},
                             pushed=params["pushed"], **result)
        summary = fleet.collect(config, plan, run_dir, storage, params["artifacts"], params["workers"],
                                params["s3"])
    except AutotuneError as exc:
        module.fail_json(msg=str(exc), run_dir=run_dir)
    module.exit_json(changed=summary["artifacts_fetched"] > 0, run_dir=run_dir, study=config["study"],
                     n_trials=summary["n_trials"], reached=summary["reached"], best_value=summary["best_value"],
                     best_test_value=summary["best_test_value"], verdict=summary["verdict"],
                     stop_reason=summary["stop_reason"], summary_path=os.path.join(run_dir, SUMMARY_NAME))


if __name__ == "__main__":
    main()
