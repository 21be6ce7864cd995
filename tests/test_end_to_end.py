"""A short real run through train.py's entry point, read back from the W&B files it leaves on disk."""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path

import pytest
import torch

from lit_gan.callbacks import run_directory
from lit_gan.cli import evaluation_callback, main
from lit_gan.wandb_offline import find_run_file, read_run
from tests.conftest import ROOT, quiet_args

LOSSES = {"loss/discriminator", "loss/generator", "discriminator/real", "discriminator/fake",
          "grad_norm/discriminator", "grad_norm/generator", "penalty/r1_penalty"}
SCORES = {"eval/modes", "eval/high_quality_pct", "eval/reverse_kl"}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("run")
    # Module-scoped, so set up before conftest's per-test isolation: its own, for the one run.
    with pytest.MonkeyPatch.context() as isolate:
        isolate.chdir(ROOT)
        isolate.setenv("WANDB_DIR", str(tmp_path))
        isolate.delenv("WANDB_SERVICE", raising=False)
        torch.manual_seed(0)
        cli = main(["--config", "configs/quickstart.yaml", "--generator_steps=40",
                    "--evaluation.every_n_generator_steps=20", "--evaluation.num_samples=500",
                    "--checkpoint.every_n_generator_steps=20", "--trainer.log_every_n_steps=10", *quiet_args(tmp_path)])
    wandb_dirs = list(Path(tmp_path, "wandb").glob("offline-run-*"))
    assert len(wandb_dirs) == 1
    return cli, read_run(find_run_file(wandb_dirs[0])), wandb_dirs[0]


def test_history_holds_losses_and_mode_metrics_on_the_generator_clock(finished_run):
    _, run, _ = finished_run
    train_rows = [row for row in run["history"] if "loss/discriminator" in row]
    eval_rows = [row for row in run["history"] if "eval/modes" in row]
    assert [row["generator_step"] for row in train_rows] == [10, 20, 30, 40]
    assert all(LOSSES <= row.keys() for row in train_rows)
    assert [row["generator_step"] for row in eval_rows] == [0, 20, 40]
    assert all(SCORES <= row.keys() for row in eval_rows)
    assert all(0 <= row["eval/modes"] <= 25 for row in eval_rows)
    # No "trainer/global_step" column: Lightning's would hold generator iterations under another count's name.
    assert all("trainer/global_step" not in row for row in run["history"])


def test_a_run_file_cut_short_reads_up_to_its_last_whole_record(finished_run, tmp_path):
    # A run killed while writing (or read while it runs) ends in part of a record: read_run raised on it.
    from lit_gan.wandb_offline import records

    _, run, wandb_dir = finished_run
    data = find_run_file(wandb_dir).read_bytes()
    whole = list(records(find_run_file(wandb_dir)))
    cut = tmp_path / "cut.wandb"
    for end in range(len(data) - 2000, len(data), 97):
        cut.write_bytes(data[:end])
        read = list(records(cut))
        assert 0 < len(read) < len(whole) and read == whole[:len(read)]
    history = read_run(cut)["history"]
    assert history == run["history"][:len(history)]


def test_sample_plots_are_stored_in_the_run(finished_run):
    _, run, wandb_dir = finished_run
    images = [row["samples/path"] for row in run["history"] if "samples/path" in row]
    assert len(images) == 3
    for image in images:
        assert (wandb_dir / "files" / image).read_bytes()[:4] == b"\x89PNG"


def test_config_and_summary_are_recorded(finished_run):
    cli, run, _ = finished_run
    assert run["config"]["model"]["class_path"] == "lit_gan.objectives.NonSaturatingGAN"
    assert run["config"]["generator_steps"] == 40
    # The model's settings once, under model.init_args (Lightning also logged them flat, with _instantiator).
    assert run["config"]["model"]["init_args"]["lr_d"] == cli.model.hparams.lr_d
    assert not {"lr_d", "n_critic", "_instantiator"} & set(run["config"])
    assert run["summary"]["generator_step"] == 40
    assert run["summary"]["eval/modes"] == evaluation_callback(cli.trainer).latest["eval/modes"]


def test_run_directory_holds_config_evaluation_and_a_loadable_checkpoint(finished_run):
    cli, _, _ = finished_run
    directory = run_directory(cli.trainer)
    assert (directory / "config.yaml").is_file()
    history = json.loads((directory / "evaluation.json").read_text())
    assert [row["generator_step"] for row in history] == [0, 20, 40]
    names = sorted(p.name for p in (directory / "checkpoints").iterdir())
    assert names == ["generator_step=0000020.ckpt", "generator_step=0000040.ckpt", "last.ckpt"]  # no .tmp left
    checkpoint = torch.load(directory / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["gan_clock"] == {"generator_step": 40, "discriminator_step": 40, "run_length": 40}
    restored = copy.deepcopy(cli.model)
    for parameter in restored.parameters():
        parameter.data.zero_()
    restored.load_state_dict(checkpoint["state_dict"])
    for a, b in zip(restored.parameters(), cli.model.parameters()):
        assert torch.equal(a, b)


def test_a_short_digits_run_leaves_sample_grids_and_metric_history(tmp_path):
    cli = main(["--config", "configs/digits/nonsaturating_dcgan.yaml", "--generator_steps=10",
                "--evaluation.every_n_generator_steps=5", "--evaluation.num_samples=200",
                "--trainer.log_every_n_steps=5", "--checkpoint.monitor=eval/frechet_distance", *quiet_args(tmp_path)])
    run_dir = next(Path(tmp_path, "wandb").glob("offline-run-*"))
    history = read_run(find_run_file(run_dir))["history"]
    assert read_run(run_dir)["history"] == history  # the folder the run summary prints reads the same
    eval_rows = [row for row in history if "eval/frechet_distance" in row]
    assert [row["generator_step"] for row in eval_rows] == [0, 5, 10]
    assert eval_rows[-1]["eval/frechet_distance"] < eval_rows[0]["eval/frechet_distance"]  # G already learns
    assert [row["generator_step"] for row in history if "loss/generator" in row] == [5, 10]
    for row in eval_rows:
        picture = run_dir / "files" / row["samples/path"]
        assert picture.read_bytes()[:4] == b"\x89PNG"
        assert (row["samples/width"], row["samples/height"]) == (137, 137)  # 8 x 8 grid of 16 px + padding
    assert cli.model.generator_step == 10
    best = min(eval_rows, key=lambda row: row["eval/frechet_distance"])
    checkpoint = torch.load(run_directory(cli.trainer) / "checkpoints" / "best.ckpt", weights_only=False)
    assert checkpoint["gan_clock"]["generator_step"] == best["generator_step"]


def test_an_evaluation_without_the_untrained_baseline_starts_at_its_first_cadence(tmp_path):
    cli = main(["--config", "configs/ring/nonsaturating.yaml", "--generator_steps=10", "--evaluation.at_start=false",
                "--evaluation.every_n_generator_steps=5", "--evaluation.num_samples=100", *quiet_args(tmp_path)])
    rows = json.loads((run_directory(cli.trainer) / "evaluation.json").read_text())
    assert [row["generator_step"] for row in rows] == [5, 10]


def test_wandb_without_login_or_network_runs_offline_from_the_config_alone(tmp_path):
    """No WANDB_MODE, no API key, an empty home (no ~/.netrc) and an unreachable server: the default config works."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(HOME=str(tmp_path / "home"), WANDB_BASE_URL="http://127.0.0.1:9", WANDB_DIR=str(tmp_path))
    (tmp_path / "home").mkdir()
    result = subprocess.run(
        [sys.executable, "train.py", "--config", "configs/quickstart.yaml", "--generator_steps=3",
         "--evaluation.num_samples=100", "--trainer.enable_progress_bar=false",
         f"--trainer.logger.init_args.save_dir={tmp_path}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "W&B run: " in result.stdout
    assert len(list(tmp_path.glob("wandb/offline-run-*/run-*.wandb"))) == 1


def test_progress_bar_counts_generator_iterations_and_redraws_at_a_bounded_rate(tmp_path, capsys):
    """One bar in generator iterations, with the losses; tqdm redraws it at most every 0.1 s, not per step."""
    import time

    args = [a for a in quiet_args(tmp_path) if "enable_progress_bar" not in a]
    start = time.monotonic()
    main(["--config", "configs/quickstart.yaml", "--generator_steps=300", "--evaluation.every_n_generator_steps=300",
          "--trainer.log_every_n_steps=100", *args])
    seconds = time.monotonic() - start
    out = capsys.readouterr().out
    frames = [frame for frame in out.replace("\n", "\r").split("\r") if frame.startswith("Generator iterations")]
    assert "300/300" in frames[-1] and "loss_D=" in frames[-1] and "loss_G=" in frames[-1]
    # At most one redraw per 0.1 s, plus the first and the last frames (a redraw per iteration gave 302
    # frames in a few seconds); bounded by the run's own duration, so a slow machine cannot fail it.
    assert 2 <= len(frames) <= seconds / 0.1 + 3


def test_mode_spread_script_reads_a_finished_run(finished_run):
    """scripts/analysis/mode_spread.py rebuilds the run from its config and reports every mode."""
    import re
    import subprocess
    import sys

    cli, _, _ = finished_run
    out = subprocess.run([sys.executable, "scripts/analysis/mode_spread.py", str(run_directory(cli.trainer)),
                          "--samples", "2000"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "2000 samples of generator iteration 40; sigma = 0.05" in out
    shares = [float(x) for x in re.findall(r"sigma ([\d.]+)%", out)]
    assert len(shares) == 6 and shares == sorted(shares) and shares[-1] <= 100
    assert len(re.findall(r"^ +\d+ \|", out, re.M)) == 25


def test_a_second_logger_gets_every_score_and_none_of_w_and_b_images(tmp_path):
    config = tmp_path / "two_loggers.yaml"
    config.write_text(f"""
trainer:
  logger:
    - {{class_path: lightning.pytorch.loggers.WandbLogger, init_args: {{project: lit-gan, save_dir: {tmp_path}, offline: true}}}}
    - {{class_path: lightning.pytorch.loggers.CSVLogger, init_args: {{save_dir: {tmp_path / 'csv'}}}}}
""")
    main(["--config", "configs/ring/nonsaturating.yaml", "--config", str(config), "--generator_steps=4",
          "--evaluation.every_n_generator_steps=2", "--evaluation.num_samples=100", "--trainer.log_every_n_steps=2",
          "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={tmp_path}"])
    rows = list(csv.DictReader(next(tmp_path.glob("csv/**/metrics.csv")).open()))
    assert sorted({row["generator_step"] for row in rows if row["eval/modes"]}) == ["0", "2", "4"]
    assert "samples" not in rows[0]  # the W&B image objects went to W&B alone


def test_a_scatter_plot_title_with_every_score_fits_the_figure(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from lit_gan.callbacks.samples import scatter_over_modes
    from lit_gan.data import GridGaussians

    titles = []
    close = plt.close
    def measure_then_close(fig):  # the title's drawn extent, in pixels, against the figure's
        fig.canvas.draw()
        extent = fig.axes[0].title.get_window_extent()
        titles.append((extent.x0, extent.x1, fig.bbox.width))
        close(fig)
    monkeypatch.setattr(plt, "close", measure_then_close)
    title = ("NonSaturatingGAN, generator iteration 6000\n"
             "modes 24, high_quality_pct 22.4, reverse_kl 0.0132, reverse_kl_hq 0.273")  # ran off the edge
    scatter_over_modes(torch.randn(100, 2), GridGaussians().centers, tmp_path / "plot.png", title)
    (left, right, width), = titles
    assert 0 <= left and right <= width


def test_a_scatter_plot_counts_the_samples_outside_its_frame(tmp_path, monkeypatch):
    # The frame is the benchmark's (1.5 x the outermost mode), the same in every plot; samples beyond it
    # (a generator drifting away) vanished without a word.
    import matplotlib.pyplot as plt

    from lit_gan.callbacks.samples import scatter_over_modes
    from lit_gan.data import GridGaussians

    legends = []
    close = plt.close
    def read_then_close(fig):
        legends.append([text.get_text() for text in fig.axes[0].get_legend().get_texts()])
        close(fig)
    monkeypatch.setattr(plt, "close", read_then_close)
    samples = torch.zeros(100, 2)
    samples[:3] = torch.tensor([[7.0, 0.0], [0.0, -9.0], [50.0, 50.0]])  # the grid's frame is [-6, 6]^2
    scatter_over_modes(samples, GridGaussians().centers, tmp_path / "plot.png", "title")
    scatter_over_modes(samples[3:], GridGaussians().centers, tmp_path / "inside.png", "title")
    assert legends == [["generated (3 of 100 outside the frame)", "modes"], ["generated", "modes"]]
