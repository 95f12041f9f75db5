"""Storage URLs shown in reports, mails and errors never carry a password."""
import pytest

from ansible.module_utils.autotune.storage import masked_storage


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
