"""A trainer leaves without the interpreter's teardown, except where a user's script ran (autotune_trainer.ending)."""
import subprocess
import sys
from pathlib import Path

TRAINER = Path(__file__).resolve().parents[2] / "trainer"

PROGRAM = """
import atexit, sys
from autotune_trainer import ending
atexit.register(lambda: open(sys.argv[1], "w").write("torn down"))
print("written before leaving", end="")  # buffered: leave() must flush it
if sys.argv[2] == "script":
    ending.ordinary_exit_needed()
ending.leave(3)
"""


def _leave(tmp_path, kind):
    marker = tmp_path / f"{kind}.teardown"
    done = subprocess.run([sys.executable, "-c", PROGRAM, str(marker), kind], cwd=TRAINER, capture_output=True,
                          text=True, timeout=60, check=False)
    return done, marker


def test_a_trainer_leaves_at_once_with_its_exit_code_and_its_output(tmp_path):
    done, marker = _leave(tmp_path, "template")
    assert done.returncode == 3
    assert done.stdout == "written before leaving"
    assert not marker.exists(), "no teardown: atexit handlers (and TensorFlow's) are skipped"


def test_a_users_script_process_ends_the_ordinary_way(tmp_path):
    done, marker = _leave(tmp_path, "script")
    assert done.returncode == 3
    assert done.stdout == "written before leaving"
    assert marker.read_text() == "torn down", "files a script left open are flushed by the teardown"
