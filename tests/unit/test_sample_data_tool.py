"""tools/make_sample_data.py: safe unpickling, all-or-nothing output."""
import gzip
import io
import pickle

import pytest

from conftest import REPO

import importlib.util

_spec = importlib.util.spec_from_file_location("make_sample_data", REPO / "tools" / "make_sample_data.py")
make_sample_data = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_sample_data)


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


class _Resource:
    name = "evil.gz"

    def __init__(self, payload):
        self.payload = payload

    def read_bytes(self):
        buffer = io.BytesIO()
        with gzip.GzipFile(fileobj=buffer, mode="wb") as handle:
            handle.write(self.payload)
        return buffer.getvalue()


def test_unpickler_refuses_anything_but_arrays():
    with pytest.raises(pickle.UnpicklingError, match="refusing to load builtins.print"):
        make_sample_data._load(_Resource(pickle.dumps(_Evil())))


def test_existing_output_is_refused(tmp_path, capsys):
    assert make_sample_data.main([str(tmp_path)]) == 2
    assert "already exists" in capsys.readouterr().err
