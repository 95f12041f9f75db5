#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible module: read a model's facts from its tune configuration, by parsing, never executing."""

DOCUMENTATION = r"""
---
module: model_facts
short_description: Read what a model is (framework, kind, layers, hyperparameters) without running it
description:
  - Loads and validates a tune configuration, then reads its model, either a Jinja2 template rendered
    with its baseline hyperparameters, a user file defining C(build_model(hp)) in Keras Tuner's style,
    or the user's own Keras script (a CNN that calls C(fit)), whose literal values become the search space.
  - With no C(model) entry, the one Keras script in the configuration's folder is used.
  - The code is parsed into a syntax tree, never imported or executed.
  - Fails with one line per problem when the configuration is invalid or the framework is unsupported.
extends_documentation_fragment:
  - autotune_config
  - autotune_config.pushed
requirements:
  - optuna (for the search space; see requirements.txt)
  - SQLAlchemy (imported with the study storage; see requirements.txt)
  - PyYAML and jsonschema (to read and check the tune configuration; see requirements.txt)
  - Jinja2 (to render the model templates; see requirements.txt)
  - libcst (to read and rewrite a user's Keras script; see requirements.txt)
  - numpy and pillow (to check the image data set; see requirements.txt)
attributes:
  check_mode:
    support: full
    description: Reads only; runs the same in check mode.
  diff_mode:
    support: none
author:
  - autotune maintainers
"""

EXAMPLES = r"""
- name: Read the model's facts
  model_facts:
    config: examples/catsdogs/autotune.yml
    templates_dir: model_templates
  register: model
"""

RETURN = r"""
framework:
  description: The ML framework the model uses.
  returned: success
  type: str
  sample: keras
kind:
  description: The model kind read from its layers (cnn, mlp, rnn, unknown).
  returned: success
  type: str
  sample: cnn
layers:
  description: The layer constructor calls in source order.
  returned: success
  type: list
  elements: str
  sample: ["Conv2D(4, kernel_size=3, padding='same')", "ReLU()"]
hyperparameters:
  description: The baseline value of every hyperparameter the model exposes.
  returned: success
  type: dict
space:
  description: The search space the tuning will explore.
  returned: success
  type: dict
api:
  description: C(template), C(keras_tuner) (a user file with build_model(hp)) or C(script) (the user's own Keras script).
  returned: success
  type: str
environment:
  description: What the trainer needs (framework and image flavour).
  returned: success
  type: dict
study:
  description: The study name.
  returned: success
  type: str
run_dir:
  description: Where the study's results land (with I(runs_root)).
  returned: success
  type: str
ignored:
  description: Fields of a I(pushed) configuration that were ignored because only the operator sets them.
  returned: success
  type: list
  elements: str
  sample: [runner, storage]
limited:
  description: One line per budget value lowered to the operator's cap (I(limits), C(autotune_limits)).
  returned: success
  type: list
  elements: str
  sample: ["budget.max_trials: 5000 lowered to 200 trials (the operator's autotune_limits.max_trials)"]
runner:
  description:
    - How trials will run; for C(docker), the trainer image the model's framework picks.
    - For C(local), the account trials run as (C(user), C(uid)); C(shares_controller_user) says why they run as the
      controller's own user when they cannot run as C(runner.local.user) (a pushed configuration is then refused).
  returned: success
  type: dict
  sample: {kind: docker, image: "autotune-trainer-keras:cpu-latest"}
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.autotune.module_args import CONFIG_ARGUMENTS, prepare_or_fail
from ansible.module_utils.autotune.runners import runner_facts


def main():
    module = AnsibleModule(argument_spec=CONFIG_ARGUMENTS,
                           supports_check_mode=True)
    config, plan, run_dir, _storage = prepare_or_fail(module, module.params["runs_root"])
    found = plan["facts"]
    runner = runner_facts(config["runner"], found["framework"])  # checked already by prepare_or_fail
    module.exit_json(
        changed=False,
        framework=found["framework"], kind=found["kind"], layers=found["layers"],
        hyperparameters=plan["baseline"], space=plan["space"], ladder=plan["ladder"], api=plan["api"],
        environment=found["environment"], study=config["study"], run_dir=run_dir, runner=runner,
        ignored=config["ignored_fields"], limited=config.get("limited", []),
    )


if __name__ == "__main__":
    main()
