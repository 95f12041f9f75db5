#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible module: turn a run directory's summary into the result mail (and an .eml when no SMTP is set)."""

DOCUMENTATION = r"""
---
module: tune_report
short_description: Build the result mail of a tuning run, and write it as an .eml file when asked
description:
  - Reads C(summary.json) of a run directory and builds the subject and body of the result mail
    (best metric, winning hyperparameters, a table of all trials, the diff from the baseline model code
    to the winning code) with the accuracy plot as attachment.
  - Writes C(report.txt) and C(model.diff) into the run directory; with I(write_eml) also C(result.eml),
    the same message as the mail task would send, for sites without an SMTP server.
options:
  run_dir:
    description: The run directory written by M(tune_model).
    type: path
    required: true
  sender:
    description: The From address.
    type: str
    default: autotune@localhost
  recipients:
    description: The To addresses.
    type: list
    elements: str
    default: []
  write_eml:
    description: Write C(result.eml) into the run directory.
    type: bool
    default: false
  diff:
    description:
      - The code diff the mail shows; by default the diff from the baseline model code to the winning code.
      - playbooks/pipeline.yml passes the git diff of the result commit against the pushed commit.
    type: str
  dashboard_url:
    description:
      - Base address of the optuna-dashboard serving the study's storage; the mail then links the study's page there.
      - By default the mail gives the address M(tune_model) was told, if any.
    type: str
attributes:
  check_mode:
    support: full
    description: Builds the message; writes no file.
  diff_mode:
    support: none
author:
  - autotune maintainers
"""

EXAMPLES = r"""
- name: Build the result mail
  tune_report:
    run_dir: "{{ tuned.run_dir }}"
    recipients: [ml-team@example.com]
    write_eml: true
  register: report
"""

RETURN = r"""
subject:
  description: The mail subject.
  returned: success
  type: str
body:
  description: The plain-text mail body.
  returned: success
  type: str
attachments:
  description: Files to attach (the plot).
  returned: success
  type: list
  elements: str
eml:
  description: Path of the .eml file when written.
  returned: when write_eml
  type: str
reached:
  description: Whether the goal was reached.
  returned: success
  type: bool
"""

import json
import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.autotune import dashboard, report


def _write(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            run_dir=dict(type="path", required=True),
            sender=dict(type="str", default="autotune@localhost"),
            recipients=dict(type="list", elements="str", default=[]),
            write_eml=dict(type="bool", default=False),
            diff=dict(type="str"),
            dashboard_url=dict(type="str"),
        ),
        supports_check_mode=True,
    )
    run_dir = module.params["run_dir"]
    summary_path = os.path.join(run_dir, report.SUMMARY_NAME)
    try:
        with open(summary_path, encoding="utf-8") as handle:
            summary = json.load(handle)
    except (OSError, ValueError) as exc:
        module.fail_json(msg=f"run_dir: cannot read {summary_path} ({exc}); expected a run directory written by tune_model")
    diff = module.params["diff"]
    if diff is None:
        diff = report.code_diff(summary.get("baseline_code"), summary.get("best_code"))
    if module.params["dashboard_url"] and summary.get("study_id") is not None:
        summary["dashboard_url"] = dashboard.study_url(module.params["dashboard_url"], summary["study_id"])
    subject, body = report.message(summary, summary["trials"], diff)
    attachments = [summary["plot"]] if summary.get("plot") and os.path.exists(summary["plot"]) else []
    result = dict(changed=False, subject=subject, body=body, attachments=attachments, reached=summary["reached"])
    if not module.check_mode:
        _write(os.path.join(run_dir, "report.txt"), f"Subject: {subject}\n\n{body}\n")
        _write(os.path.join(run_dir, "model.diff"), diff)
        result["changed"] = True
        if module.params["write_eml"]:
            result["eml"] = report.write_eml(os.path.join(run_dir, "result.eml"), module.params["sender"],
                                             module.params["recipients"], subject, body, attachments)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
