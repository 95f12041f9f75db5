"""Storage URLs shown in reports, mails and errors never carry a password."""
import pytest

from ansible.module_utils.autotune.errors import AutotuneError
from ansible.module_utils.autotune.storage import check_storage, masked_storage


@pytest.mark.parametrize("url, shown", [
    ("postgresql://u:p@ss@db.example.com/autotune", "postgresql://u:***@db.example.com/autotune"),
    ("postgresql+psycopg2://autotune:s3cret@127.0.0.1:5432/autotune", "postgresql+psycopg2://autotune:***@127.0.0.1:5432/autotune"),
    ("mysql://root:pw@h/db?password=also", "mysql://root:***@h/db?password=***"),
    ("redis://:pw@h:6379/0", "redis://:***@h:6379/0"),
    ("sqlite:////runs/x/study.db", "sqlite:////runs/x/study.db"),
    ("postgresql://h/db?sslmode=require&password=pw&user=u", "postgresql://h/db?sslmode=require&password=***&user=u"),
])
def test_passwords_are_masked_wherever_they_sit(url, shown):
    assert masked_storage(url) == shown
    assert "pw" not in masked_storage(url).replace("password", "") and "s3cret" not in masked_storage(url)


@pytest.mark.parametrize("url, line", [
    ("mongodb://u:pw@db.example.com:27017/x", "storage: 'mongodb://u:***@db.example.com:27017/x' has the unknown "
     "scheme 'mongodb'; expected an Optuna storage URL"),
    ("postgresql://u:pw@127.0.0.1:1/x", "storage: cannot connect to the postgresql server at 127.0.0.1:1 ("),
    ("mysql+nosuchdriver://u:pw@127.0.0.1:1/x", "storage: 'mysql+nosuchdriver://u:***@127.0.0.1:1/x' has the "
     "unknown scheme 'mysql+nosuchdriver'"),
    ("postgresql+psycopg2://u:p@ss@127.0.0.1:1/x", "storage: the user name or password of "
     "'postgresql+psycopg2://u:***@127.0.0.1:1/x' holds an '@'; expected it percent-encoded (%40)"),
])
def test_a_storage_that_cannot_work_is_one_line_naming_storage_host_and_port(url, line):
    with pytest.raises(AutotuneError) as caught:
        check_storage(url)
    message = str(caught.value)
    assert message.startswith(line) and "\n" not in message
    assert "pw" not in message and "ss@" not in message
    assert message.count("Connection refused") <= 1, "the driver's text once, not twice"


def test_sqlite_and_check_mode_do_not_connect(tmp_path):
    check_storage(f"sqlite:///{tmp_path}/not-yet/study.db")
    check_storage("postgresql://u:pw@127.0.0.1:1/x", connect=False)
    assert list(tmp_path.iterdir()) == [], "nothing is created"
