"""ansible-lint's production profile over all our playbooks and roles."""
import subprocess
import sys
from pathlib import Path

from conftest import REPO


def test_ansible_lint_production_profile_is_clean():
    lint = Path(sys.executable).parent / "ansible-lint"
    process = subprocess.run([str(lint), "--profile", "production", "--nocolor"], cwd=REPO,
                             capture_output=True, text=True, timeout=600, check=False)
    output = process.stdout + process.stderr
    assert process.returncode == 0, output[-4000:]
    assert "Profile 'production' was required, and it passed." in output
