"""The stability monitor stops diverged runs, flags collapsed ones, and leaves healthy ones alone."""

from __future__ import annotations

import json
import os
import math
import subprocess
import sys
import warnings

import pytest
import torch
from torch import nn

from lit_gan.callbacks import StabilityAlarm, StabilityMonitor
from lit_gan.callbacks.monitor import coverage_reason, mean_pairwise_distance, spectral_norms
from lit_gan.cli import main
from lit_gan.data import GridGaussians, StackedDigits
from lit_gan.nets import MLPDiscriminator
from lit_gan.objectives import NonSaturatingGAN
from lit_gan.wandb_offline import find_run_file, read_run, records
from tests.conftest import ROOT, quiet_args


class ConstantGenerator(nn.Module):
    """A generator that ignores z: every sample is the same learned point."""

    def __init__(self, latent_dim: int = 4, dims: int = 2):
        super().__init__()
        self.latent_dim = latent_dim
        self.point = nn.Parameter(torch.zeros(dims))

    def forward(self, z):
        return self.point.expand(z.shape[0], -1) + 0 * z[:, :1]


class GridWithNaNBatch(GridGaussians):
    """The grid, except that batch number ``nan_batch`` (from 1) is all NaN."""

    def __init__(self, nan_batch: int = 7, **kwargs):
        super().__init__(**kwargs)
        self.nan_batch = nan_batch

    def train_dataloader(self):
        def batches():
            for i, batch in enumerate(super(GridWithNaNBatch, self).train_dataloader(), start=1):
                yield torch.full_like(batch, float("nan")) if i == self.nan_batch else batch

        return batches()


def run(tmp_path, config: str, *args: str):
    """Train through the CLI and return (cli, alarms raised as warnings, alarms.json)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", StabilityAlarm)
        cli = main(["--config", config, *quiet_args(tmp_path, *args)])
    raised = [str(w.message) for w in caught if issubclass(w.category, StabilityAlarm)]
    path = next(tmp_path.glob("lit-gan/*/alarms.json"), None)
    return cli, raised, json.loads(path.read_text()) if path else []


def test_an_absurd_learning_rate_is_stopped_and_the_last_good_checkpoint_survives(tmp_path):
    cli, raised, alarms = run(
        tmp_path, "configs/grid/nonsaturating.yaml", "--generator_steps=60",
        "--model.init_args.lr_d=1e4", "--model.init_args.lr_g=1e4",
        "--trainer.log_every_n_steps=1", "--checkpoint.every_n_generator_steps=1",
        "--evaluation.every_n_generator_steps=100",
    )
    module = cli.model
    assert len(raised) == 1 and [a["alarm"] for a in alarms] == ["non_finite"]
    assert module.diverged is not None and module.generator_step < 60
    message = raised[0]
    assert "Training stopped: loss/" in message and ("became nan" in message or "became inf" in message)
    iteration = int(message.split("at generator iteration ")[1].split(".")[0])
    assert iteration <= module.generator_step
    last = next(tmp_path.glob("lit-gan/*/checkpoints/last.ckpt"))
    assert str(last) in message
    checkpoint = torch.load(last, weights_only=False)
    assert checkpoint["gan_clock"]["generator_step"] < iteration
    assert all(torch.isfinite(t).all() for t in checkpoint["state_dict"].values())
    restored = NonSaturatingGAN.load_from_checkpoint(last, generator=module.generator, discriminator=module.discriminator)
    assert torch.isfinite(restored.generate(torch.randn(10, 16))).all()


def test_a_nan_batch_is_reported_with_its_loss_and_generator_iteration(tmp_path):
    cli, raised, _ = run(
        tmp_path, "configs/grid/nonsaturating.yaml", "--generator_steps=30",
        "--data=tests.test_monitor.GridWithNaNBatch", "--data.init_args.nan_batch=7",
        "--trainer.log_every_n_steps=10", "--evaluation.every_n_generator_steps=100",
    )
    assert len(raised) == 1
    assert "loss/discriminator became nan at generator iteration 7" in raised[0]
    assert cli.model.generator_step == 10  # the check at iteration 10 stopped it


def test_a_run_resumed_before_its_alarm_keeps_no_stale_alarm(tmp_path):
    """Stopped by a NaN batch at iteration 7; resumed from the checkpoint at 5 on clean data, it finishes
    without alarm, and alarms.json no longer lists the abandoned run's."""
    _, raised, alarms = run(tmp_path, "configs/grid/nonsaturating.yaml", "--generator_steps=30",
                            "--data=tests.test_monitor.GridWithNaNBatch", "--data.init_args.nan_batch=7",
                            "--trainer.log_every_n_steps=10", "--evaluation.every_n_generator_steps=100",
                            "--checkpoint.every_n_generator_steps=5")
    assert [a["alarm"] for a in alarms] == ["non_finite"]
    before = next(tmp_path.glob("lit-gan/*/checkpoints/generator_step=0000005.ckpt"))
    cli, raised, alarms = run(tmp_path, "configs/grid/nonsaturating.yaml", "--generator_steps=30",
                              "--trainer.log_every_n_steps=10", "--evaluation.every_n_generator_steps=100",
                              "--checkpoint.every_n_generator_steps=5", f"--ckpt_path={before}")
    assert cli.model.generator_step == 30 and raised == [] and alarms == []
    assert not list(tmp_path.glob("lit-gan/*/alarms.json"))


def test_a_generator_that_ignores_z_raises_the_collapse_alarm(tmp_path):
    cli, raised, alarms = run(
        tmp_path, "configs/ring/nonsaturating.yaml", "--generator_steps=60",
        "--model.init_args.generator=tests.test_monitor.ConstantGenerator",
        "--trainer.log_every_n_steps=10", "--evaluation.every_n_generator_steps=30",
        "--stability.warmup_generator_steps=20", "--stability.patience=2",
    )
    assert [a["alarm"] for a in alarms] == ["collapse"]  # raised once, not at every check
    assert alarms[0]["generator_step"] == 30
    assert "sample diversity is 0 of the data's" in raised[0]
    assert "equivalent of 1.0 of 8 modes" in raised[0]
    assert cli.model.generator_step == 60  # a warning: training went on
    logged = read_run(find_run_file(next(tmp_path.glob("wandb/offline-run-*"))))
    assert [(a["title"], a["level"]) for a in logged["alerts"]] == [("lit-gan: collapse", "WARN")]
    checks = [r for r in logged["history"] if "monitor/diversity" in r]
    assert [r["generator_step"] for r in checks] == [10, 20, 30, 40, 50, 60]
    assert all(r["monitor/diversity"] == 0 for r in checks)
    assert [r["monitor/alarms"] for r in checks] == [0, 0, 1, 1, 1, 1]


@pytest.mark.parametrize("steps, every, expected_step", [
    (60, 25, 28),   # evaluations at 25 and 50, checks every 7 iterations: read at the check after the first
    (45, 100, 45),  # no evaluation after warm-up but the final one, at 45: read when training ends
])
def test_the_coverage_alarm_does_not_need_the_cadences_to_meet(tmp_path, steps, every, expected_step):
    cli, raised, alarms = run(
        tmp_path, "configs/ring/nonsaturating.yaml", f"--generator_steps={steps}",
        "--model.init_args.generator=tests.test_monitor.ConstantGenerator",
        "--trainer.log_every_n_steps=7", f"--evaluation.every_n_generator_steps={every}",
        "--stability.warmup_generator_steps=20", "--stability.collapse_diversity=0",  # coverage alone
    )
    assert [(a["alarm"], a["generator_step"]) for a in alarms] == [("collapse", expected_step)]
    assert "equivalent of 1.0 of 8 modes" in raised[0] and "sample diversity" not in raised[0]
    assert cli.model.generator_step == steps


def test_a_discriminator_that_wins_outright_is_flagged(tmp_path):
    _, raised, alarms = run(
        tmp_path, "configs/ring/nonsaturating.yaml", "--generator_steps=80",
        "--model.init_args.lr_g=1e-12", "--trainer.log_every_n_steps=5",
        "--evaluation.every_n_generator_steps=100", "--stability.win_generator_steps=20",
        "--stability.warmup_generator_steps=1000",
    )
    assert [a["alarm"] for a in alarms] == ["discriminator_wins"]
    assert "The discriminator has won outright since generator iteration" in raised[0]


def test_discriminator_wins_is_checked_when_the_monitor_and_logging_cadences_differ(tmp_path):
    # Logged every 5 iterations, checked every 7: they meet only at 35, and one reading cannot span 20 iterations.
    _, raised, alarms = run(
        tmp_path, "configs/ring/nonsaturating.yaml", "--generator_steps=60",
        "--model.init_args.lr_g=1e-12", "--trainer.log_every_n_steps=5", "--stability.every_n_generator_steps=7",
        "--evaluation.every_n_generator_steps=100", "--stability.win_generator_steps=20",
        "--stability.warmup_generator_steps=1000",
    )
    assert [a["alarm"] for a in alarms] == ["discriminator_wins"]
    assert "up to iteration" in raised[0]


@pytest.mark.slow
def test_a_healthy_wgan_gp_run_on_the_ring_raises_no_alarm(tmp_path):
    cli, raised, alarms = run(
        tmp_path, "configs/ring/wgan_gp.yaml", "--generator_steps=300", "--trainer.log_every_n_steps=25",
        "--evaluation.every_n_generator_steps=150", "--stability.warmup_generator_steps=150",
    )
    assert raised == [] and alarms == []
    assert cli.model.generator_step == 300
    monitor = next(c for c in cli.trainer.callbacks if isinstance(c, StabilityMonitor))
    assert monitor.last_checked_step == 300


def test_diversity_and_spectral_norms_measure_what_they_say():
    points = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 0.0]])
    assert mean_pairwise_distance(points) == pytest.approx((5 + 0 + 5) / 3)
    d = MLPDiscriminator(width=8, depth=1)
    with torch.no_grad():
        d.head.weight.copy_(torch.tensor([[3.0, 4.0, 0, 0, 0, 0, 0, 0]]))
    assert spectral_norms(d)["head"] == pytest.approx(5.0)
    sn = MLPDiscriminator(width=8, depth=1, spectral_norm=True)
    u = sn.head.parametrizations.weight[0]._u.clone()
    norms = spectral_norms(sn)
    assert norms["head"] == pytest.approx(1.0, abs=0.05)  # what D computes with: the normalised weight
    assert torch.equal(sn.head.parametrizations.weight[0]._u, u)  # reading it ran no power iteration


def test_the_coverage_alarm_judges_the_samples_against_as_many_of_the_datas_own():
    # 400 real stacked digits fill only ~311 of 1000 modes' worth of histogram: against all 1000 modes the
    # data itself looked collapsed, and a healthy run with evaluation.num_samples=400 was always flagged.
    data = StackedDigits(resolution=8, size=400, seed=3)
    real = torch.stack([image for image, _ in data.train_dataset()])
    metric = data.evaluation_metric()
    metric.update(real)
    reverse_kl = float(metric.compute()["reverse_kl"])
    assert 1000 * math.exp(-reverse_kl) < 0.5 * 1000  # what the alarm compared with before
    assert coverage_reason(reverse_kl, 1000, 400, collapse_coverage=0.5) is None
    metric.reset()
    metric.update(real[:40].repeat(10, 1, 1, 1))  # 400 samples of at most 40 modes
    reason = coverage_reason(float(metric.compute()["reverse_kl"]), 1000, 400, collapse_coverage=0.5)
    assert reason is not None and "of the 311.4 that 400 samples of the data itself spread over" in reason


def test_the_monitor_state_can_be_saved_before_setup():
    # Ctrl-C during start-up saves a checkpoint, which asks every callback for its state (it crashed here).
    state = StabilityMonitor().state_dict()
    assert state["alarms"] == [] and state["real_checks"] == 0 and state["active"] == []


def test_divergence_found_after_the_last_iteration_says_the_run_ended_not_stopped(tmp_path):
    # A run shorter than the monitor's cadence is checked once, at its end: it was not stopped early.
    cli, raised, alarms = run(
        tmp_path, "configs/grid/nonsaturating.yaml", "--generator_steps=20",
        "--model.init_args.lr_d=1e30", "--model.init_args.lr_g=1e30", "--trainer.log_every_n_steps=50",
        "--evaluation.every_n_generator_steps=100",
    )
    assert cli.model.generator_step == 20 and [a["alarm"] for a in alarms] == ["non_finite"]
    assert raised[0].startswith("[lit-gan stability monitor] Training ended: loss/")


@pytest.mark.parametrize("sweep", [False, True], ids=["alone", "under_a_sweep_agent"])
def test_train_py_exits_with_status_3_when_the_run_diverged(tmp_path, sweep):
    # It exited 0: `train.py && next` and a SLURM job counted a NaN run a success. Under a sweep agent it exits
    # 0 (the agent stops itself after a few non-zero exits), and its W&B run is failed either way.
    environment = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    if sweep:
        environment["WANDB_SWEEP_ID"] = "abc123"
    finished = subprocess.run(
        [sys.executable, "train.py", "--config", "configs/grid/nonsaturating.yaml", "--generator_steps=20",
         "--model.init_args.lr_d=1e30", "--model.init_args.lr_g=1e30", "--trainer.log_every_n_steps=5",
         "--evaluation.every_n_generator_steps=100", *quiet_args(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, env=environment)
    assert finished.returncode == (0 if sweep else 3), finished.stderr[-2000:]
    assert "Training stopped: loss/" in finished.stderr
    run = next(tmp_path.glob("wandb/offline-run-*"))
    assert [r.exit.exit_code for r in records(run) if r.WhichOneof("record_type") == "exit"] == [3]


def test_a_collapse_alarm_names_the_evaluation_it_read(tmp_path):
    # Checked every 10 iterations, evaluated every 25: the alarm at the check of iteration 30 gave no hint that
    # its coverage came from the evaluation of iteration 25.
    _, raised, alarms = run(
        tmp_path, "configs/ring/nonsaturating.yaml", "--generator_steps=40",
        "--model.init_args.generator=tests.test_monitor.ConstantGenerator",
        "--trainer.log_every_n_steps=10", "--evaluation.every_n_generator_steps=25",
        "--stability.warmup_generator_steps=20", "--stability.patience=5",
    )
    assert [a["generator_step"] for a in alarms] == [30]
    assert ("Mode collapse at generator iteration 30: at the evaluation of generator iteration 25, the samples "
            "spread over the equivalent of 1.0 of 8 modes") in raised[0]
