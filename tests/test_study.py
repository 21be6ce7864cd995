"""The study runner: real train.py runs, a table, and a rerun that skips finished cells."""

from __future__ import annotations

import pytest

from lit_gan.study import config_fingerprint, main, read_rows


@pytest.mark.slow
def test_study_writes_table_and_skips_finished_runs(tmp_path, capsys):
    args = ["--configs", "configs/ring/nonsaturating.yaml", "configs/ring/lsgan.yaml", "--generator_steps", "3",
            "--jobs", "2", "--out", str(tmp_path / "out"), "--runs_dir", str(tmp_path / "runs")]
    rows = main(args)
    assert [r["config"] for r in rows] == ["configs/ring/nonsaturating.yaml", "configs/ring/lsgan.yaml"]
    assert all(r["generator_steps"] == 3 and 0 <= r["modes"] <= 8 for r in rows)
    table = (tmp_path / "out" / "table.md").read_text()
    assert "`configs/ring/lsgan.yaml` | 1 | 3 |" in table
    assert (tmp_path / "out" / "samples.png").read_bytes()[:4] == b"\x89PNG"
    capsys.readouterr()
    again = main(args)
    assert "Skipping 2 finished run(s)" in capsys.readouterr().out
    assert [r["run_dir"] for r in again] == [r["run_dir"] for r in rows]
    assert len(read_rows(tmp_path / "out" / "runs.csv")) == 2


def test_fingerprint_follows_content_not_comments(tmp_path):
    (tmp_path / "nets").mkdir()
    (tmp_path / "nets" / "g.yaml").write_text("class_path: G\ninit_args: {width: 8}\n")
    config = tmp_path / "x.yaml"
    config.write_text("model:\n  generator: nets/g.yaml\n")
    before = config_fingerprint(config)
    config.write_text("# a comment\nmodel:\n  generator: nets/g.yaml   # the net\n")
    assert config_fingerprint(config) == before
    (tmp_path / "nets" / "g.yaml").write_text("class_path: G\ninit_args: {width: 16}\n")
    assert config_fingerprint(config) != before
