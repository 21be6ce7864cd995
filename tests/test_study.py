"""The study runner: real train.py runs, a table, and a rerun that skips finished cells."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from lit_gan import study as runner
from lit_gan.provenance import commit
from lit_gan.study import ROOT, config_fingerprint, main, mean_and_error, outcome, read_rows, run_to_end, write_csv
from lit_gan.wandb_offline import find_run_file, read_run, records


@pytest.mark.slow
def test_quick_suite_writes_table_and_plots_and_a_rerun_skips_finished_cells(tmp_path, capsys):
    args = ["--suite", "quick", "--jobs", "2", "--out", str(tmp_path / "out"), "--runs_dir", str(tmp_path / "runs")]
    rows = main(args)
    configs = ["configs/ring/nonsaturating.yaml", "configs/grid/nonsaturating.yaml", "configs/grid/ns_pacgan2.yaml"]
    assert [(r["config"], r["seed"]) for r in rows] == [(c, s) for c in configs for s in (0, 1)]
    assert all(r["generator_steps"] == 200 for r in rows)
    assert all(0 <= r["modes"] <= 8 for r in rows[:2]) and all(0 <= r["modes"] <= 25 for r in rows[2:])
    assert rows[0]["reverse_kl"] != rows[1]["reverse_kl"]  # the seed reaches the run
    table = (tmp_path / "out" / "table.md").read_text()
    assert "### ring" in table and "### grid" in table
    assert "| `configs/grid/ns_pacgan2.yaml` | 2 | 200 |" in table
    assert "*PacGAN Table 1: PacGAN2* (published) | 10 | | 23.8 ± 0.7 | 91.3 ± 0.8 |  | 0.13 ± 0.04 |" in table
    for plot in ("samples.png", "coverage.png"):
        assert (tmp_path / "out" / plot).read_bytes()[:4] == b"\x89PNG"
    config = read_run(find_run_file(next((tmp_path / "runs" / "wandb").glob("offline-run-*"))))["config"]
    assert config["trainer"]["logger"]["init_args"]["group"] == "quick"  # grouped by study in W&B
    capsys.readouterr()
    again = main(args)
    assert "Skipping 6 finished run(s)" in capsys.readouterr().out
    assert [r["run_dir"] for r in again] == [r["run_dir"] for r in rows]
    assert len(read_rows(tmp_path / "out" / "runs.csv")) == 6
    # A row whose config changed since it finished (another fingerprint) is trained again, and only it.
    stale = read_rows(tmp_path / "out" / "runs.csv")
    stale[0]["fingerprint"] = "changed"
    write_csv(stale, tmp_path / "out" / "runs.csv")
    third = main(args)
    out = capsys.readouterr().out
    assert "Skipping 5 finished run(s)" in out and "Rerunning 1 run(s)" in out
    assert third[0]["run_dir"] != rows[0]["run_dir"] and [r["run_dir"] for r in third[1:]] == [r["run_dir"] for r in rows[1:]]
    assert third[0]["fingerprint"] == config_fingerprint(ROOT / configs[0])


def test_a_study_run_is_the_run_train_py_gives(tmp_path):
    """Runs fork from a server that imported lit-gan once: the same weights as ``python train.py`` to the bit."""
    (row,) = main(["--configs", "configs/grid/nonsaturating.yaml", "--seeds", "3", "--generator_steps", "40",
                   "--jobs", "2", "--threads", "1", "--out", str(tmp_path / "out"), "--runs_dir", str(tmp_path / "runs")])
    direct = subprocess.run(
        [sys.executable, "train.py", "--config", "configs/grid/nonsaturating.yaml", "--generator_steps=40",
         "--seed_everything=3", "--data.init_args.seed=3", "--trainer.enable_progress_bar=false",
         f"--trainer.logger.init_args.save_dir={tmp_path / 'direct'}"],
        cwd=ROOT, capture_output=True, text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert "Run directory:" in (tmp_path / "runs" / "logs" / f"{Path(row['run_dir']).name}.log").read_text()
    ours, theirs = (torch.load(next(Path(d).glob("**/checkpoints/last.ckpt")), weights_only=True)
                    for d in (row["run_dir"], tmp_path / "direct"))
    assert ours["gan_clock"]["generator_step"] == theirs["gan_clock"]["generator_step"] == 40
    for key, value in theirs["state_dict"].items():
        assert torch.equal(ours["state_dict"][key], value), key
    assert "Final evaluation" in direct.stdout


@pytest.mark.slow
def test_runs_started_from_several_threads_report_their_own_exit_codes():
    """Unserialised, ~4% of such children read as exit code 255 (CPython gh-130895)."""
    context = multiprocessing.get_context("forkserver")
    with ThreadPoolExecutor(4) as pool:
        codes = list(pool.map(lambda _: run_to_end(context.Process(target=time.sleep, args=(0,))), range(300)))
    assert codes == [0] * 300


def test_a_run_sees_the_studys_environment_as_it_is_when_the_run_starts(tmp_path, monkeypatch):
    """The fork server keeps the environment it started with; each run gets the study's current one."""
    args = ["--configs", "configs/grid/nonsaturating.yaml", "--generator_steps", "5", "--jobs", "1"]
    notes = {}
    for study, value in (("first", "first study"), ("second", "set after the server started")):
        monkeypatch.setenv("WANDB_NOTES", value)  # W&B stores it with the run
        main([*args, "--out", str(tmp_path / study), "--runs_dir", str(tmp_path / study / "runs")])
        run_file = find_run_file(next((tmp_path / study / "runs" / "wandb").glob("offline-run-*")))
        notes[study] = next(r.run.notes for r in records(run_file) if r.WhichOneof("record_type") == "run")
    assert notes == {"first": "first study", "second": "set after the server started"}


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


def test_table_gives_mean_and_standard_error_over_seeds(tmp_path):
    from lit_gan.study import write_outputs

    def row(config, seed, modes, kl, alarms=""):
        return {"config": config, "seed": seed, "generator_steps": 100, "fingerprint": "f", "modes": modes,
                "reverse_kl": kl, "alarms": alarms, "seconds": 10.0, "run_dir": str(tmp_path / "none")}

    rows = [row("a.yaml", 0, 20, 0.1), row("a.yaml", 1, 22, 0.3, "collapse"), row("a.yaml", 2, 24, 0.2),
            {**row("b.yaml", 0, 8, 1.5), "seconds": 40.0, "stack": 4}]  # one of 4 runs trained as a seed group
    write_outputs(rows, tmp_path)
    table = (tmp_path / "table.md").read_text().splitlines()
    # modes: mean 22, sample std 2, standard error 2/sqrt(3) = 1.2; KL: mean 0.2, se 0.1/sqrt(3) = 0.058
    assert table[4] == "| `a.yaml` | 3 | 100 | 22 ± 1.2 | 0.2 ± 0.058 | 1/3 | 10 |"
    assert table[5] == "| `b.yaml` | 1 | 100 | 8 | 1.5 | 0/1 | 10 |"
    assert read_rows(tmp_path / "runs.csv")[1]["alarms"] == "collapse"


def test_a_study_refuses_an_out_folder_holding_another_studys_runs(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    kept = {"config": "configs/grid/r1.yaml", "seed": 3, "generator_steps": 5000, "fingerprint": "f",
            "modes": 25, "seconds": 1.0, "run_dir": "somewhere", "alarms": ""}
    write_csv([kept], out / "runs.csv")
    before = (out / "runs.csv").read_text()
    with pytest.raises(SystemExit):
        main(["--configs", "configs/grid/nonsaturating.yaml", "--generator_steps", "10", "--out", str(out),
              "--runs_dir", str(tmp_path / "runs")])
    error = capsys.readouterr().err
    assert "holds 1 finished run(s) this study does not include (configs/grid/r1.yaml seed 3, 5000 generator steps)" in error
    assert (out / "runs.csv").read_text() == before and not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_an_interrupted_study_resumes_its_unfinished_run_from_the_last_checkpoint(tmp_path, capsys):
    args = ["--configs", "configs/grid/nonsaturating.yaml", "--generator_steps", "2000", "--jobs", "2",
            "--out", str(tmp_path / "out"), "--runs_dir", str(tmp_path / "runs")]
    # SIGTERM to the study alone (a scheduler, kill PID): it passes it on to its runs, children of the
    # forkserver, which would otherwise train on; train.py saves last.ckpt on SIGTERM.
    study = subprocess.Popen([sys.executable, "-m", "lit_gan.study", *args], cwd=ROOT, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env={**os.environ, "WANDB_MODE": "offline"})
    try:
        def evaluated_steps() -> list[int]:  # evaluation.json is written atomically: whole or absent
            files = list(tmp_path.glob("runs/lit-gan/*/evaluation.json"))
            return [row["generator_step"] for row in json.loads(files[0].read_text())] if files else []

        deadline = time.monotonic() + 180
        while 500 not in evaluated_steps():  # mid-run however fast the machine (a timed wait could miss the run)
            assert time.monotonic() < deadline and study.poll() is None, "the study ended or stalled before 500"
            time.sleep(0.2)
        os.kill(study.pid, signal.SIGTERM)
        assert study.wait(timeout=120) == 128 + signal.SIGTERM
    finally:
        os.killpg(study.pid, signal.SIGKILL)  # whatever is left of the group, also if the test failed
    last = next(tmp_path.glob("runs/lit-gan/*/checkpoints/last.ckpt"))
    interrupted_at = torch.load(last, weights_only=True)["gan_clock"]["generator_step"]
    assert 0 < interrupted_at < 2000 and not (tmp_path / "out" / "runs.csv").exists()
    assert last.parts[-3] in json.loads((tmp_path / "out" / "started.json").read_text()).values()

    (row,) = main(args)
    assert f"resuming its interrupted run from {last}" in capsys.readouterr().out
    assert row["generator_steps"] == 2000 and row["run_dir"] == str(last.parents[1])
    history = json.loads((last.parents[1] / "evaluation.json").read_text())
    assert [h["generator_step"] for h in history] == list(range(0, 2001, 500))  # no step evaluated twice
    assert not (tmp_path / "out" / "started.json").exists()  # nothing left unfinished


def test_a_runs_dir_with_a_space_is_found_and_an_error_fails_one_cell(tmp_path):
    runs = tmp_path / "runs with a space"
    (row,) = main(["--configs", "configs/ring/nonsaturating.yaml", "--generator_steps", "5", "--jobs", "1",
                   "--out", str(tmp_path / "out"), "--runs_dir", str(runs)])
    assert Path(row["run_dir"]).parent.parent == runs and row["final_step"] == 5
    assert [r["run_dir"] for r in read_rows(tmp_path / "out" / "runs.csv")] == [row["run_dir"]]
    # Whatever a run raises is that cell's failure (named by the study), not a traceback that ends the study.
    error = outcome(json.loads, "")
    assert isinstance(error, RuntimeError) and str(error).startswith("JSONDecodeError: ")


def finished_row(config: str, seed: int, run_dir: Path, **extra) -> dict:
    """A runs.csv row of a finished run, as run_one writes it."""
    return {"config": config, "seed": seed, "generator_steps": 10, "final_step": 10,
            "fingerprint": config_fingerprint(ROOT / config), "modes": 5.0, "reverse_kl": 0.5, "alarms": "",
            "seconds": 1.5, "stack": 1, "run_dir": str(run_dir), **extra}


def test_a_rerun_without_its_run_folders_keeps_the_figures_and_runs_csv(tmp_path, capsys):
    """A fresh clone of committed results (docs/results/), or big run folders deleted, then the same command."""
    config, out = "configs/grid/nonsaturating.yaml", tmp_path / "out"
    present = tmp_path / "runs" / "lit-gan" / "aaaa"
    present.mkdir(parents=True)
    history = [{"generator_step": 10, "eval/modes": 5, "eval/reverse_kl": 0.5}]
    (present / "evaluation.json").write_text(json.dumps(history))
    out.mkdir()
    write_csv([finished_row(config, 0, present), finished_row(config, 1, tmp_path / "gone")], out / "runs.csv")
    for figure in ("samples.png", "coverage.png"):
        (out / figure).write_bytes(b"the committed figure")
    before = (out / "runs.csv").read_text()
    args = ["--configs", config, "--seeds", "0", "1", "--generator_steps", "10", "--out", str(out),
            "--runs_dir", str(tmp_path / "runs")]
    for gone, missing in ((1, f"{config} seed 1: {tmp_path / 'gone'}"), (2, f"{config} seed 0: {present}; ")):
        main(args)
        assert f"not redrawn: {gone} of 2 run folder(s) have no evaluation.json ({missing}" in capsys.readouterr().err
        # Not blank, nor seed 0 alone under "mean over seeds".
        assert all((out / figure).read_bytes() == b"the committed figure" for figure in ("samples.png", "coverage.png"))
        assert (out / "runs.csv").read_text() == before  # 10, not 10.0; every column, in its order
        shutil.rmtree(present, ignore_errors=True)  # then every run folder is gone


def test_a_config_given_by_its_absolute_path_is_the_same_cell(tmp_path, capsys):
    config, out = "configs/grid/nonsaturating.yaml", tmp_path / "out"
    out.mkdir()
    write_csv([finished_row(config, 0, tmp_path / "gone")], out / "runs.csv")
    (row,) = main(["--configs", str(ROOT / config), "--generator_steps", "10", "--out", str(out),
                   "--runs_dir", str(tmp_path / "runs")])
    assert "Skipping 1 finished run(s)" in capsys.readouterr().out and row["config"] == config


def test_a_failed_run_is_reported_and_the_finished_ones_are_kept(tmp_path, capsys):
    broken = tmp_path / "broken.yaml"
    broken.write_text(f"model: {ROOT}/configs/models/toy/nonsaturating.yaml\n"
                      "data: {class_path: lit_gan.data.NoSuchData}\n")
    out = tmp_path / "out"
    with pytest.raises(SystemExit, match=rf"1 run\(s\) failed \({broken} seed 0\)"):
        main(["--configs", str(broken), "configs/grid/nonsaturating.yaml", "--generator_steps", "10", "--jobs", "2",
              "--out", str(out), "--runs_dir", str(tmp_path / "runs")])
    assert "NoSuchData" in capsys.readouterr().err
    assert [r["config"] for r in read_rows(out / "runs.csv")] == ["configs/grid/nonsaturating.yaml"]
    assert list(json.loads((out / "started.json").read_text())) == [
        f"{broken}|0|10|{config_fingerprint(broken)}"]  # a rerun resumes it, if it got to a checkpoint


@pytest.mark.parametrize("extra, expected", [
    (["--configs", "configs/grid/nonsaturating.yaml", "configs/grid/../grid/nonsaturating.yaml"],
     "nonsaturating.yaml given more than once: expected each once"),
    (["--configs", "configs/grid/nonsaturating.yaml", "--seeds", "0", "0"], "--seeds: 0 given more than once"),
    (["--configs", "configs/grid/nonsaturating.yaml", "--generator_steps", "0"],
     "--generator_steps=0 is not valid: expected an integer >= 1"),
    (["--suite", "SUITE"], "seeds=3 in SUITE is not valid: expected a non-empty list of integer seeds"),
    (["--configs", "configs/grid/nonsaturating.yaml", "--seeds", "0", "-1"],
     "--seeds=-1 is not valid: expected integers in [0, 4294967295] (NumPy's seeds)"),  # was every run's traceback
    (["--configs", "configs/grid/nonsaturating.yaml", "--threads", "0"],
     "--threads=0 is not valid: expected an integer >= 1"),
    (["--configs", "configs/grid/nope.yaml"], ("no such file(s): configs/grid/nope.yaml: expected config files, "
                                               f"relative paths taken from the repository root ({ROOT})")),
])
def test_bad_study_input_is_refused_before_anything_runs(tmp_path, capsys, extra, expected):
    suite = tmp_path / "bad.yaml"
    suite.write_text("configs: [configs/grid/nonsaturating.yaml]\nseeds: 3\n")
    extra = [str(suite) if e == "SUITE" else e for e in extra]
    with pytest.raises(SystemExit):
        main([*extra, "--out", str(tmp_path / "out"), "--runs_dir", str(tmp_path / "runs")])
    assert expected.replace("SUITE", str(suite)) in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("suite, out, expected", [
    ("seeds: []", "out", "seeds=[] in SUITE is not valid: expected a non-empty list of integer seeds"),
    ("name: [a, b]", None, "name=['a', 'b'] in SUITE is not valid: expected a non-empty string"),
    ("seeds: [true]", None, "seeds=[True] in SUITE is not valid: expected a non-empty list of integer seeds"),
    ("generator_steps: true", None, "generator_steps=True in SUITE is not valid: expected an integer >= 1"),
    ("seeds: [0, -1]", None, "--suite=SUITE: seeds=-1 is not valid: expected integers in [0, 4294967295]"),
    ("seeds: [0]", "a file", ("--out OUT is not valid: expected a folder the study can create or write into "
                              "(File exists)")),
])
def test_a_bad_suite_or_out_is_one_line_not_a_traceback(tmp_path, capsys, suite, out, expected):
    path = tmp_path / "suite.yaml"
    path.write_text(f"configs: [configs/grid/nonsaturating.yaml]\n{suite}\n")
    (tmp_path / "a file").write_text("not a folder")
    with pytest.raises(SystemExit):
        main(["--suite", str(path), "--runs_dir", str(tmp_path / "runs"),
              *(["--out", str(tmp_path / out)] if out else [])])
    assert expected.replace("SUITE", str(path)).replace("OUT", str(tmp_path / (out or ""))) in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_a_suite_key_misspelt_is_named(tmp_path, capsys):
    suite = tmp_path / "typo.yaml"
    suite.write_text("configs: [configs/grid/nonsaturating.yaml]\nseed: [0, 1]\n")
    with pytest.raises(SystemExit):
        main(["--suite", str(suite), "--out", str(tmp_path / "out")])
    assert "unknown key(s) seed: expected name, configs, seeds, generator_steps, description" in capsys.readouterr().err


def test_two_studies_cannot_write_one_out_folder(tmp_path, capsys):
    from lit_gan.study import hold_out_folder

    out = tmp_path / "out"
    out.mkdir()
    held = hold_out_folder(out, None)
    try:
        with pytest.raises(SystemExit):
            main(["--configs", "configs/grid/nonsaturating.yaml", "--out", str(out), "--runs_dir", str(tmp_path / "r")])
        assert f"--out {out} is in use by another study" in capsys.readouterr().err
    finally:
        held.close()


def test_another_studys_unfinished_runs_stay_in_started_json(tmp_path):
    from lit_gan.study import save_started

    path = tmp_path / "started.json"
    save_started({("configs/grid/r1.yaml", 0, 10, "f"): "aaaa"}, path, others={"configs/ring/r1.yaml|1|10|g": "bbbb"})
    assert json.loads(path.read_text()) == {"configs/ring/r1.yaml|1|10|g": "bbbb", "configs/grid/r1.yaml|0|10|f": "aaaa"}


@pytest.mark.slow
def test_a_run_that_stops_early_keeps_its_cell_and_is_marked(tmp_path, capsys):
    # An absurd learning rate: the monitor stops the run long before its 300 iterations.
    fragment = (ROOT / "configs/models/toy/nonsaturating.yaml").read_text()
    (tmp_path / "model.yaml").write_text(fragment.replace("../../nets/", f"{ROOT}/configs/nets/")
                                         .replace("lr_d: 1.0e-3", "lr_d: 1.0e+4").replace("lr_g: 1.0e-3", "lr_g: 1.0e+4"))
    config = tmp_path / "absurd.yaml"
    config.write_text(f"model: {tmp_path / 'model.yaml'}\ndata: {ROOT}/configs/data/grid.yaml\n"
                      "evaluation: {every_n_generator_steps: 100, num_samples: 500}\n")
    args = ["--configs", str(config), "--generator_steps", "300", "--out", str(tmp_path / "out"),
            "--runs_dir", str(tmp_path / "runs")]
    (row,) = main(args)
    assert row["generator_steps"] == 300 and row["final_step"] < 300 and row["alarms"] == "non_finite"
    # Its scores were the last finite evaluation's, the untrained G's (1 mode, 100% high quality), in the mean.
    assert "modes" not in row and "high_quality_pct" not in row
    assert "| 300 (1 stopped early) | 1/1 |" in (tmp_path / "out" / "table.md").read_text()  # (no score columns)
    capsys.readouterr()
    (again,) = main(args)  # the rerun finds the cell finished: it neither refuses nor retrains it
    assert "Skipping 1 finished run(s)" in capsys.readouterr().out and again == row


def test_coverage_plot_takes_a_seed_whose_evaluation_has_no_scores(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from lit_gan.study import write_outputs

    curves = []
    close = plt.close

    def read_then_close(fig):  # the coverage figure's curves: (x, y) of each line, modes then reverse KL
        if "modes covered" in fig.axes[0].get_title():
            curves.extend([(list(line.get_xdata()), list(line.get_ydata())) for ax in fig.axes for line in ax.lines])
        close(fig)

    monkeypatch.setattr(plt, "close", read_then_close)
    rows = []
    for seed, history in enumerate([[{"generator_step": 0, "eval/modes": 3, "eval/reverse_kl": 1.0},
                                      {"generator_step": 10, "eval/modes": 5, "eval/reverse_kl": 0.5}],
                                     [{"generator_step": 0, "eval/modes": 4, "eval/reverse_kl": 0.9},
                                      {"generator_step": 10}]]):  # non-finite samples at 10: no scores
        run_dir = tmp_path / f"run{seed}"
        run_dir.mkdir()
        (run_dir / "evaluation.json").write_text(json.dumps(history))
        rows.append({"config": "configs/grid/a.yaml", "seed": seed, "generator_steps": 10, "fingerprint": "f",
                     "modes": 5, "seconds": 1.0, "run_dir": str(run_dir), "alarms": ""})
    write_outputs(rows, tmp_path)
    assert (tmp_path / "coverage.png").stat().st_size > 0
    # At 0 the mean of both seeds; at 10 seed 0's alone (seed 1 is not a 0 in the mean, nor a NaN).
    assert curves == [([0, 10], [3.5, 5.0]), ([0, 10], [0.95, 0.5])]


def test_a_seed_without_a_score_is_counted_not_spread_over_the_cell():
    # reverse_kl_hq is NaN for a run without high-quality samples; the cell read "nan ± nan" for the whole config.
    nan = float("nan")
    assert mean_and_error([1.0, nan, 3.0]) == "2 ± 1 (1 of 3 NaN)"
    assert mean_and_error([nan, 0.5]) == "0.5 (1 of 2 NaN)"
    assert mean_and_error([nan, nan]) == "NaN (2 of 2 NaN)"
    assert mean_and_error([1.0, None, nan]) == "1 (1 of 3 NaN) (1 of 3 not scored)"
    assert mean_and_error([1.0, 3.0]) == "2 ± 1"


def test_large_scores_are_written_in_full_not_in_powers_of_ten():
    # Stacked digits has 1000 modes: "1e+03 ± 0" and "1.37e+03 ± 1.3e+02" read badly in a table.
    assert mean_and_error([1000.0, 1000.0]) == "1000 ± 0"
    assert mean_and_error([1234.5, 1500.2]) == "1367 ± 133"
    assert mean_and_error([999.7]) == "1000"
    assert mean_and_error([0.0123, 0.0125]) == "0.0124 ± 0.0001"  # 3 significant digits below 1000, as before


def test_a_seed_without_scores_leaves_the_other_seeds_scores(tmp_path):
    from lit_gan.study import write_outputs

    def row(config, seed, **scores):
        return {"config": config, "seed": seed, "generator_steps": 100, "final_step": 100, "fingerprint": "f",
                **scores, "alarms": "", "seconds": 10.0, "run_dir": str(tmp_path / "none")}

    # Seed 2's last evaluation had non-finite samples: only its generator_step, no scores.
    a = "configs/grid/a.yaml"
    rows = [row(a, 0, modes=20, reverse_kl=0.1), row(a, 1, modes=22, reverse_kl=0.3),
            {**row(a, 2), "final_step": 40, "alarms": "non_finite"}, row("configs/ring/b.yaml", 0),
            row("configs/grid/c.yaml", 0, modes=25),  # c logs no reverse_kl at all: a blank, not "not scored"
            {**row("configs/grid/d.yaml", 0), "alarms": "non_finite"}]  # d's one seed has no scores at all
    write_outputs(rows, tmp_path)
    table = (tmp_path / "table.md").read_text()
    assert ("| `configs/grid/a.yaml` | 3 | 100 (1 stopped early) | 21 ± 1 (1 of 3 not scored) | "
            "0.2 ± 0.1 (1 of 3 not scored) | 1/3 | 10 |") in table
    assert "| `configs/grid/c.yaml` | 1 | 100 | 25 |  | 0/1 | 10 |" in table
    assert "| `configs/grid/d.yaml` | 1 | 100 | NaN (1 of 1 not scored) | NaN (1 of 1 not scored) | 1/1 | 10 |" in table
    # A benchmark none of whose runs was scored: its header has as many columns as its other lines.
    ring = table.split("### ring\n\n")[1].split("\n\n")[0].splitlines()
    assert ring[0] == "| config | seeds | generator iterations | alarms | seconds per run |"
    assert {line.count("|") for line in ring} == {6} and len(ring) > 3  # with the published rows


@pytest.mark.slow
def test_ctrl_c_to_a_study_says_how_to_continue_in_one_line_per_run(tmp_path):
    args = ["--configs", "configs/grid/nonsaturating.yaml", "--seeds", "0", "1", "--generator_steps", "100000",
            "--jobs", "2", "--out", str(tmp_path / "out"), "--runs_dir", str(tmp_path / "runs")]
    study = subprocess.Popen([sys.executable, "-m", "lit_gan.study", *args], cwd=ROOT, start_new_session=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "WANDB_MODE": "offline"},
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as in a terminal
    try:
        deadline = time.monotonic() + 120
        while len(list(tmp_path.glob("runs/lit-gan/*/evaluation.json"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(2)
        os.killpg(study.pid, signal.SIGINT)  # Ctrl-C reaches the whole foreground group: the study and its runs
        _, err = study.communicate(timeout=120)
    finally:
        os.killpg(study.pid, signal.SIGKILL)
    assert study.returncode == 1 and "Traceback" not in err, err[-3000:]
    assert "Interrupted: the runs under way saved their last checkpoint. Rerun the same command" in err
    assert err.count("stopped, with its last checkpoint") == 2  # was each run's whole log, as a failure
    assert len(list(tmp_path.glob("runs/lit-gan/*/checkpoints/last.ckpt"))) == 2


def test_a_rerun_says_when_the_runs_it_keeps_were_measured_by_other_code(tmp_path, capsys):
    # The fingerprint is the config's: a study rerun into its old --out after a code change kept the old rows
    # and said only "Skipping" (measurements believed new were a session old).
    args = ["--configs", "configs/ring/nonsaturating.yaml", "--generator_steps", "10", "--out", str(tmp_path / "out"),
            "--runs_dir", str(tmp_path / "runs"), "--threads", "1"]
    (row,) = main(args)
    assert row["commit"] == commit() and read_rows(tmp_path / "out" / "runs.csv")[0]["commit"] == commit()
    assert row["threads"] == 1 == read_rows(tmp_path / "out" / "runs.csv")[0]["threads"]
    capsys.readouterr()
    main(args)
    assert capsys.readouterr().out.splitlines()[0] == f"Skipping 1 finished run(s) found in {tmp_path / 'out' / 'runs.csv'}"
    older = read_rows(tmp_path / "out" / "runs.csv")
    older[0]["commit"] = "0123abc"
    write_csv(older, tmp_path / "out" / "runs.csv")
    main(args)
    assert (f"Skipping 1 finished run(s) found in {tmp_path / 'out' / 'runs.csv'}, measured with lit-gan at 0123abc "
            f"(this is {commit()}): to measure this code, give a fresh --out") in capsys.readouterr().out
    # The thread count rounds sums differently: 2 threads gave 10 modes where 1 gave 13 (grid/r1_sharp, 300 its).
    older[0]["commit"], older[0]["threads"] = commit(), 2
    write_csv(older, tmp_path / "out" / "runs.csv")
    main(args)
    assert (f"Skipping 1 finished run(s) found in {tmp_path / 'out' / 'runs.csv'}, measured in 2 torch thread(s) a "
            "run (this study: 1): to measure this code, give a fresh --out") in capsys.readouterr().out


def test_a_run_whose_config_was_edited_after_the_study_started_is_not_recorded(tmp_path, monkeypatch, capsys):
    """Seed 1 trains the config as edited after seed 0 finished: filed under the study's start, one table row
    averaged two configs."""
    config = tmp_path / "x.yaml"
    text = (ROOT / "configs/ring/nonsaturating.yaml").read_text()
    config.write_text(text.replace("../", str(ROOT / "configs") + "/"))  # its fragments by absolute path
    start = config_fingerprint(config)

    def run_one(config_path, seed, run_id, **options):  # a run as the study sees it, without training
        if seed == 1:
            config.write_text(config.read_text() + "\ngenerator_steps: 11\n")
        return {"config": str(config_path), "seed": seed, "generator_steps": options["generator_steps"],
                "final_step": 10, "fingerprint": config_fingerprint(config), "modes": 8.0, "seconds": 1.0,
                "stack": 1, "threads": options["threads"], "run_dir": str(tmp_path / f"run{seed}")}

    monkeypatch.setattr(runner, "run_one", run_one)
    with pytest.raises(SystemExit, match=r"1 run\(s\) failed"):
        main(["--configs", str(config), "--seeds", "0", "1", "--generator_steps", "10", "--jobs", "1",
              "--out", str(tmp_path / "out"), "--runs_dir", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert f"seed 1: its config changed while the study ran (fingerprint {start} at the start" in err
    assert [(row["seed"], row["fingerprint"]) for row in read_rows(tmp_path / "out" / "runs.csv")] == [(0, start)]
    # Not left to resume: with the config edited back, a rerun would have taken seed 1's run as the start's.
    started = tmp_path / "out" / "started.json"
    assert not started.exists() or "|1|" not in started.read_text()


def test_an_interrupted_study_starts_no_further_seed_of_a_group_trained_one_by_one(monkeypatch):
    """A group that cannot be set up trains its seeds in turn: after Ctrl-C it went on to the next seed."""
    started, stop = [], threading.Event()

    def run_one(config, seed, run_id, **options):
        started.append(seed)
        stop.set()  # Ctrl-C during the first seed
        raise RuntimeError("stopped")

    def no_room():
        raise OSError("no space left on device")

    monkeypatch.setattr(runner, "run_one", run_one)
    monkeypatch.setattr(runner, "stack_directory", no_room)
    cells = [("configs/grid/nonsaturating.yaml", seed, f"run{seed}") for seed in range(3)]
    runner.run_group(cells, None, lambda index, result: None, stop)
    assert started == [0]
