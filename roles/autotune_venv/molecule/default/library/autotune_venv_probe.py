#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Molecule probe of roles/autotune_venv: run as our modules run on a trainer host (the host's
ansible_python_interpreter, our module_utils shipped by Ansible), it imports what they import and reports the
versions of the distributions it is asked about."""

DOCUMENTATION = r"""
---
module: autotune_venv_probe
short_description: Import what our modules import and report distribution versions (molecule only)
description:
  - Imports the module_utils our modules import (study loop, runners, health check, fleet, report) and the
    packages they import lazily (docker, matplotlib, optuna_dashboard, psycopg), then reports versions.
options:
  distributions:
    description: Distribution names whose installed versions are reported.
    type: list
    elements: str
    required: true
author:
  - autotune maintainers
"""

import importlib.metadata
import sys

from ansible.module_utils.basic import AnsibleModule
# What the six modules of library/ import at their top (each pulls in the rest of module_utils/autotune).
from ansible.module_utils.autotune import dashboard, fleet, report, trialdir  # noqa: F401 pylint: disable=unused-import
from ansible.module_utils.autotune.health import HealthLock  # noqa: F401 pylint: disable=unused-import
from ansible.module_utils.autotune.modelcode import plan  # noqa: F401 pylint: disable=unused-import
from ansible.module_utils.autotune.module_args import prepare_or_fail  # noqa: F401 pylint: disable=unused-import
from ansible.module_utils.autotune.runners import runner_facts  # noqa: F401 pylint: disable=unused-import
from ansible.module_utils.autotune.tune import run  # noqa: F401 pylint: disable=unused-import


def main():
    module = AnsibleModule(argument_spec={"distributions": {"type": "list", "elements": "str", "required": True}},
                           supports_check_mode=True)
    # Imported by our modules only when needed: the Docker engine's SDK (trial_health, the docker runner), the
    # result's plot, the dashboard's trial notes and PostgreSQL storage.
    import docker  # pylint: disable=import-outside-toplevel,unused-import
    import matplotlib  # pylint: disable=import-outside-toplevel,unused-import
    import optuna_dashboard  # pylint: disable=import-outside-toplevel,unused-import
    import psycopg  # pylint: disable=import-outside-toplevel

    module.exit_json(changed=False, python=sys.executable, psycopg_impl=psycopg.pq.__impl__,
                     versions={name: importlib.metadata.version(name) for name in module.params["distributions"]})


if __name__ == "__main__":
    main()
