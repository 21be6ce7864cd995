"""Atomic writes: a reader sees the old file or the new one, never half of one."""

import json
import multiprocessing

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


def _write_and_read(path, writer, start, errors):
    """One of two processes writing the same file: each write, then a read that must parse."""
    start.wait(timeout=60)
    try:
        for n in range(300):
            # Sizes vary, so a read of two writes mixed (or of one cut short) is not valid JSON.
            write_atomically(path, json.dumps({"writer": writer, "n": n, "padding": "x" * (n % 7 * 4000)}))
            json.loads(path.read_text())
    except Exception as error:
        errors.put(f"writer {writer}: {type(error).__name__}: {error}")
    else:
        errors.put(None)


def test_two_processes_writing_one_file_never_collide(tmp_path):
    """A study's two runs on one image folder write the same scan cache, nodes sharing $HOME the same
    classifier: with one fixed temporary name they moved each other's file away and read torn JSON."""
    path = tmp_path / "folder-scan.json"
    # Fork: a spawned process would spend seconds importing lit_gan (torch, Lightning) again.
    context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    start, errors = context.Barrier(2), context.Queue()
    workers = [context.Process(target=_write_and_read, args=(path, w, start, errors)) for w in range(2)]
    for worker in workers:
        worker.start()
    reports = [errors.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
    assert reports == [None, None], reports
    json.loads(path.read_text())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder-scan.json"]  # no temporary file left
