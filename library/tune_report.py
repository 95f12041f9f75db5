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
    to the winning code) with the plot of the metric per trial and the table of trials (trials.csv) as attachments.
  - Writes C(report.txt) and C(model.diff) into the run directory; with I(write_eml) also C(result.eml),
    the same message as the mail task would send, for sites without an SMTP server or when it cannot be reached.
  - With I(failure) it builds the mail of a pipeline run that stopped before tuning instead (no summary is
    needed) and writes C(failure.txt) and, with I(write_eml), C(failure.eml).
options:
  run_dir:
    description: The run directory written by M(tune_model).
    type: path
    required: true
  sender:
    description: The From address; default the configuration's C(notify.sender) (with I(config)), else autotune@localhost.
    type: str
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
  note:
    description: A line put at the top of the body, e.g. that this result was not delivered earlier.
    type: str
  failure:
    description: The one-line reason a pipeline run stopped before tuning; switches to the failure mail.
    type: str
  step:
    description: The step that failed (with I(failure)).
    type: str
    default: a step before tuning
  stage:
    description:
      - When the run failed (with I(failure)). C(before) tuning, no trial trained; C(during) tuning, after the study
        began (the storage lost, a full disk, a crash of the module), and the mail says what was kept and how to
        resume.
    type: str
    choices: [before, during]
    default: before
  study:
    description: The name the failure mail gives the run (with I(failure)); default the run directory's name.
    type: str
  context:
    description: Facts shown in the failure mail, e.g. repository and commit (with I(failure)).
    type: dict
    default: {}
  config:
    description:
      - The tune configuration whose C(notify.to) and C(notify.sender) are used, read leniently, when
        I(recipients) is empty; with I(failure) the configuration may be the invalid one.
    type: path
  pusher:
    description:
      - The author address of the pushed commit (the pipeline's). Added to the recipients when the run's
        configuration sets C(notify.pusher) true and it is a plain address (local@domain); left out with a warning
        otherwise.
    type: str
  dashboard_url:
    description:
      - Base address of the optuna-dashboard serving the study's storage; the mail then links the study's page there.
      - By default the mail gives the address M(tune_model) was told, if any.
    type: str
requirements:
  - optuna and SQLAlchemy (imported only with I(dashboard_url), to name the study's page; see requirements.txt)
  - PyYAML (to read notify.to from a configuration that failed its checks; see requirements.txt)
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

- name: Build the mail of a pipeline run that failed before tuning
  tune_report:
    run_dir: /srv/autotune/runs/model-abc1234
    failure: "configuration is invalid: target.goal is 1.5; expected a number from 0 to 1"
    step: Detect the model and its environment
    config: /srv/autotune/runs/workspaces/abc1234/autotune.yml
    context: {repository: /srv/git/model.git, commit: abc1234}
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
  description: Files to attach (the plot and trials.csv).
  returned: success
  type: list
  elements: str
report:
  description: Path of the text report (C(report.txt), or C(failure.txt) with I(failure)).
  returned: unless check mode
  type: str
recipients:
  description: The To addresses (I(recipients), or the configuration's with I(failure) when those are empty).
  returned: success
  type: list
  elements: str
sender:
  description: The From address.
  returned: success
  type: str
eml:
  description: Path of the .eml file when written.
  returned: when write_eml
  type: str
reached:
  description: Whether the goal was reached (false with I(failure)).
  returned: success
  type: bool
"""

import json
import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.autotune import report
from ansible.module_utils.autotune.printable import escape, escape_lines, valid_address

DEFAULT_SENDER = "autotune@localhost"


def _write(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


def _result_message(module, run_dir):
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
        # dashboard imports optuna and SQLAlchemy (0.3 s): only when a dashboard is configured.
        from ansible.module_utils.autotune import dashboard  # pylint: disable=import-outside-toplevel

        summary["dashboard_url"] = dashboard.study_url(module.params["dashboard_url"], summary["study_id"])
    subject, body = report.message(summary, summary["trials"], diff)
    # The plot, and the table of trials (trialtable.py); summary.json names only files the run wrote.
    attachments = [summary[key] for key in ("plot", "trials_csv") if summary.get(key) and os.path.isfile(summary[key])]
    return subject, body, attachments, diff, summary["reached"], (summary.get("notify") or {}).get("pusher") is True


def _failure_message(module, run_dir):
    params = module.params
    study = params["study"] or os.path.basename(os.path.normpath(run_dir))
    return report.failure_message(study, params["step"], params["failure"], run_dir, params["context"],
                                  during=params["stage"] == "during")


def _addresses(module, pusher_wanted=False):
    """(recipients, sender) fit for mail headers; the pushed commit's author joins the recipients when the run's
    configuration (``pusher_wanted``, or the one read leniently) sets notify.pusher. An address that is not one (CR/LF, a display name, a list:
    printable.valid_address) is left out with one warning, the sender replaced by DEFAULT_SENDER: the invalid
    configuration a failure mail reports may hold it, and the message must still be written."""
    params = module.params
    recipients, sender, wants_pusher = params["recipients"], params["sender"], pusher_wanted
    if params["config"]:
        configured_to, configured_sender, configured_pusher = report.notify_from_config(params["config"])
        recipients = recipients or configured_to
        sender = sender or configured_sender
        wants_pusher = wants_pusher or configured_pusher
    if wants_pusher and params["pusher"] and params["pusher"] not in recipients:
        recipients = recipients + [params["pusher"]]  # checked below like every other address
    refused = [r for r in recipients if not valid_address(r)]
    replaced = f"; the sender is {DEFAULT_SENDER} instead" if sender and not valid_address(sender) else ""
    if replaced:
        refused, sender = [sender] + refused, None
    if refused:
        module.warn(f"notify: left out {len(refused)} invalid e-mail address(es) "
                    f"({', '.join(repr(a) for a in refused[:3])}){replaced}; expected local@domain")
    return [r for r in recipients if valid_address(r)], sender or DEFAULT_SENDER


def main():
    module = AnsibleModule(
        argument_spec=dict(
            run_dir=dict(type="path", required=True),
            sender=dict(type="str"),
            recipients=dict(type="list", elements="str", default=[]),
            write_eml=dict(type="bool", default=False),
            diff=dict(type="str"),
            note=dict(type="str"),
            failure=dict(type="str"),
            step=dict(type="str", default="a step before tuning"),
            stage=dict(type="str", default="before", choices=["before", "during"]),
            study=dict(type="str"),
            context=dict(type="dict", default={}),
            config=dict(type="path"),
            dashboard_url=dict(type="str"),
            pusher=dict(type="str"),
        ),
        supports_check_mode=True,
    )
    params, run_dir = module.params, module.params["run_dir"]
    failed = params["failure"] is not None
    if failed:
        (subject, body), attachments, diff, reached, pusher = _failure_message(module, run_dir), [], None, False, False
    else:
        subject, body, attachments, diff, reached, pusher = _result_message(module, run_dir)
    if params["note"]:
        body = f"{escape_lines(params['note'])}\n\n{body}"
    recipients, sender = _addresses(module, pusher)
    result = dict(changed=False, subject=subject, body=body, attachments=attachments, reached=reached,
                  recipients=recipients, sender=sender)
    if not module.check_mode:
        os.makedirs(run_dir, exist_ok=True)
        result["report"] = os.path.join(run_dir, "failure.txt" if failed else "report.txt")
        _write(result["report"], f"Subject: {escape(subject)}\n\n{escape_lines(body)}\n")
        if diff is not None:
            _write(os.path.join(run_dir, "model.diff"), diff)
        result["changed"] = True
        if params["write_eml"]:
            eml = os.path.join(run_dir, "failure.eml" if failed else "result.eml")
            result["eml"] = report.write_eml(eml, sender, recipients, subject, body, attachments)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
