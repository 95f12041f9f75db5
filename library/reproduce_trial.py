#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible module: train a trial again from its record and compare its per-epoch values with the recorded ones."""

DOCUMENTATION = r"""
---
module: reproduce_trial
short_description: Train an autotune trial again from its record and compare its values
description:
  - Reads the record the controller wrote when the trial ended, C(<run folder>/records/NNNN.json). It holds the
    seed, the op determinism setting, the parameters, the sha256 of the code, the data set's fingerprints, the
    runner, the trainer's environment (packages as a lock, the image's ID) and the per-epoch values the trial
    reported.
  - Refuses in one line, before training, when the code, the data set (fingerprint recomputed from the images, then
    the packed bytes), the trainer image (gone from the Docker host) or the trainer's packages no longer match.
  - Trains the trial again in C(<run folder>/reproduced/NNNN-rerun) through the same runner (the image by the ID it
    trained in), then sets each epoch's recorded and re-run values side by side.
  - Takes the run folder's lock, so it fails at once while a tune run uses that folder.
options:
  trial:
    description: The trial's folder, C(<run folder>/trials/<N>).
    type: path
    required: true
  trainer_path:
    description: Folder holding the C(autotune_trainer) package, for the local runner where it is not installed.
    type: path
requirements:
  - numpy and pillow (to fingerprint and pack the data set; see requirements.txt)
  - docker (the Docker SDK for Python, for a trial of the docker runner; see requirements.txt)
attributes:
  check_mode:
    support: full
    description: Checks the record, the code, the data set's fingerprint and the trainer's environment; trains nothing.
  diff_mode:
    support: none
author:
  - autotune maintainers
"""

EXAMPLES = r"""
- name: Train trial 3 again and compare
  reproduce_trial:
    trial: runs/catsdogs/trials/0003
    trainer_path: "{{ playbook_dir }}/../trainer"
  register: reproduced
"""

RETURN = r"""
reproduced:
  description: True when every re-run epoch value equals the recorded one; null in check mode.
  returned: success
  type: bool
lines:
  description: The trial's facts, one line per epoch (recorded / re-run validation values), and the verdict.
  returned: success
  type: list
  elements: str
epochs:
  description: Per epoch, C(epoch) (from 0), C(recorded) and C(rerun) (every logged value but the timing).
  returned: success
  type: list
  elements: dict
rerun_dir:
  description: The folder the re-run trained in; null in check mode.
  returned: success
  type: str
trial:
  description: The trial's number.
  returned: success
  type: int
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.autotune.errors import AutotuneError
from ansible.module_utils.autotune.printable import escape
from ansible.module_utils.autotune.reproduce import reproduce


def main():
    module = AnsibleModule(
        argument_spec=dict(
            trial=dict(type="path", required=True),
            trainer_path=dict(type="path"),
        ),
        supports_check_mode=True,
    )
    try:
        found = reproduce(module.params["trial"], module.params["trainer_path"], check_only=module.check_mode)
    except AutotuneError as exc:
        module.fail_json(msg=escape(str(exc)))
    module.exit_json(changed=not module.check_mode, **found)


if __name__ == "__main__":
    main()
