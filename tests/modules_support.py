"""Our Ansible modules run in-process for tests: exit_json/fail_json patched to raise, arguments fed with
ansible.module_utils.testing.patch_module_args (ansible-core 2.19; the old _ANSIBLE_ARGS patch breaks under data
tagging). Shared by the modules' unit tests and the integration tests that run a module on a real run folder."""
import pytest
from ansible.module_utils import basic
from ansible.module_utils.testing import patch_module_args


class ModuleExit(Exception):
    """What a module ended with: ``result`` (its keyword arguments, ``msg`` included) and ``failed``."""

    def __init__(self, kwargs, failed):
        super().__init__(kwargs)
        self.result, self.failed = kwargs, failed


def raise_on_exit(monkeypatch):
    """Patch AnsibleModule so a module's exit is a ModuleExit; returns the list its warnings go to."""
    warnings = []

    def exit_json(self, **kwargs):
        raise ModuleExit(kwargs, failed=False)

    def fail_json(self, msg, **kwargs):
        raise ModuleExit(dict(kwargs, msg=msg), failed=True)

    monkeypatch.setattr(basic.AnsibleModule, "exit_json", exit_json)
    monkeypatch.setattr(basic.AnsibleModule, "fail_json", fail_json)
    monkeypatch.setattr(basic.AnsibleModule, "warn", lambda self, line: warnings.append(line))
    return warnings


def run_module(module, args, check_mode=False):
    """Run ``module.main()`` with ``args``; returns its ModuleExit (raise_on_exit must be in effect)."""
    if check_mode:
        args = dict(args, _ansible_check_mode=True)
    with patch_module_args(args), pytest.raises(ModuleExit) as caught:
        module.main()
    return caught.value
