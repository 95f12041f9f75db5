#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible module: relaunch autotune trial containers that died from outside while their study runs."""

DOCUMENTATION = r"""
---
module: trial_health
short_description: Relaunch autotune trial containers that died while their study still runs
description:
  - Finds the containers labelled C(io.autotune.project=autotune). One that stopped abnormally (killed,
    engine stopped, host rebooted) while its study's controller is alive is started again; the trial
    resumes from its last epoch checkpoint.
  - A warm spare container handed a trial is not started again (its bind mount names the spare folder,
    renamed to the trial's since) but replaced by a fresh container with the same image, user,
    environment, labels and host configuration, on the trial's folder; the spare's log is appended to
    the trial's log and the spare removed.
  - Never touches containers that finished or failed by themselves, that the controller stopped, of
    finished studies, or that are not labelled as ours.
  - A trial relaunched I(relaunch_limit) times is given up and its controller records the reason.
  - A warm spare container never handed a trial whose study's controller is gone (killed with it) is
    removed with its spare folder; a controller that resumes the study starts spares of its own.
  - Overlapping runs are safe; one holds I(lock_path) and acts, the others return at once unchanged.
options:
  relaunch_limit:
    description:
      - Relaunches allowed per trial before it is given up, 0 to 100. A trial whose C(health.json) holds a
        count that is not an integer 0..100 (the trial can write its folder) is never relaunched.
    type: int
    default: 3
  lock_path:
    description:
      - File that serialises overlapping health runs. Its folder is created 0700 when missing; keep it
        root-owned (not C(/tmp)), or any local user could hold the lock and stop the healing.
    type: path
    default: /var/lib/autotune/health.lock
  docker_host:
    description: Docker engine URL; the environment's by default.
    type: str
requirements:
  - docker (the Docker SDK for Python, on the host whose engine runs the trial containers; see requirements.txt)
attributes:
  check_mode:
    support: full
    description: Reports what it would relaunch or remove; starts and removes nothing.
  diff_mode:
    support: none
author:
  - autotune maintainers
"""

EXAMPLES = r"""
- name: Relaunch dead trial containers
  trial_health:
    relaunch_limit: 3
  register: health
"""

RETURN = r"""
actions:
  description: >-
    One entry per container looked at (action relaunched, gave_up, removed, left, bad_trial_file or error, and why);
    a replaced warm spare's entry names its fresh container in C(replacement). C(bad_trial_file) (a file of
    the trial folder that is not what the trainer or the health check writes, named with its field) and
    C(error) (anything else that went wrong with that container) concern that container alone: the pass
    goes on with the others.
  returned: success
  type: list
  elements: dict
relaunched:
  description: Number of containers started again or replaced by a fresh one.
  returned: success
  type: int
removed:
  description: Number of orphaned warm spares removed (never handed a trial, their controller gone).
  returned: success
  type: int
skipped_overlap:
  description: True when another health run held the lock and this one did nothing.
  returned: success
  type: bool
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.autotune import trialdir
from ansible.module_utils.autotune.errors import AutotuneError
from ansible.module_utils.autotune.health import HealthLock, heal

try:
    import docker
    HAS_DOCKER = True
except ImportError:
    HAS_DOCKER = False


def main():
    module = AnsibleModule(
        argument_spec=dict(
            relaunch_limit=dict(type="int", default=3),
            lock_path=dict(type="path", default="/var/lib/autotune/health.lock"),
            docker_host=dict(type="str"),
        ),
        supports_check_mode=True,
    )
    if not HAS_DOCKER:
        module.fail_json(msg="trial_health needs the Python 'docker' package; expected it installed")
    if not 0 <= module.params["relaunch_limit"] <= trialdir.MAX_RELAUNCHES:
        module.fail_json(msg=f"relaunch_limit: {module.params['relaunch_limit']} is invalid; "
                             f"expected an integer 0..{trialdir.MAX_RELAUNCHES}")
    with HealthLock(module.params["lock_path"]) as lock:
        if not lock.acquired:
            module.exit_json(changed=False, actions=[], relaunched=0, removed=0, skipped_overlap=True,
                             msg="another health run holds the lock; nothing done")
        try:
            client = docker.DockerClient(base_url=module.params["docker_host"]) if module.params["docker_host"] \
                else docker.from_env()
            actions = heal(client, module.params["relaunch_limit"], module.check_mode)
        except (AutotuneError, docker.errors.DockerException) as exc:
            module.fail_json(msg=f"health check could not run: {exc}")
    for action in actions:
        if action["action"] in ("bad_trial_file", "error"):
            module.warn(f"{action['container']}: {action['why']}")
    relaunched = sum(a["action"] == "relaunched" for a in actions)
    gave_up = sum(a["action"] == "gave_up" for a in actions)
    removed = sum(a["action"] == "removed" for a in actions)
    module.exit_json(changed=bool(relaunched or gave_up or removed), actions=actions, relaunched=relaunched,
                     removed=removed, skipped_overlap=False)


if __name__ == "__main__":
    main()
