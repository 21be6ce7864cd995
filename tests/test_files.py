"""Atomic writes: a reader sees the old file or the new one, never half of one."""

import pytest

from lit_gan.files import replacing, write_atomically


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "runs.csv"
    write_atomically(path, "old\n")
    with pytest.raises(RuntimeError, match="disk full"):
        with replacing(path) as temporary:
            temporary.write_text("half a fi")
            raise RuntimeError("disk full")
    assert path.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs.csv"]


def test_a_finished_write_replaces_the_file(tmp_path):
    path = tmp_path / "alarms.json"
    write_atomically(path, "[]")
    write_atomically(path, '[{"kind": "collapse"}]')
    assert path.read_text() == '[{"kind": "collapse"}]'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alarms.json"]
