"""Mixed precision: every objective's penalties use the GradScaler correctly, and runs stay finite."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.plugins import MixedPrecision

from lit_gan.callbacks import StabilityMonitor
from lit_gan.data import GridGaussians
from lit_gan.nets import MLPDiscriminator, MLPGenerator
from lit_gan.objectives import DRAGAN, LSGAN, WGAN, WGANGP, HingeGAN, MinimaxGAN, NonSaturatingGAN, optimizer_steps
from lit_gan.penalties import GradientPenalty, R1Penalty
from lit_gan.stabilizers import unrolled_discriminator


def scaler_plugin() -> MixedPrecision:
    """16-mixed on the CPU, with the GradScaler a GPU run would get (Lightning gives the CPU none)."""
    return MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu", init_scale=2.0**12))


OBJECTIVES = {
    "minimax": (MinimaxGAN, {}),
    "nonsaturating_r1": (NonSaturatingGAN, {"penalties": [R1Penalty(1.0)]}),
    "lsgan": (LSGAN, {}),
    "wgan": (WGAN, {"n_critic": 5}),
    "wgan_gp": (WGANGP, {"n_critic": 5, "gradient_penalty_weight": 10.0}),
    "dragan": (DRAGAN, {}),
    "hinge": (HingeGAN, {}),
}


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
@pytest.mark.parametrize("name", OBJECTIVES)
def test_every_objective_trains_finite_under_mixed_precision(name, precision, tmp_path):
    cls, kwargs = OBJECTIVES[name]
    torch.manual_seed(0)
    module = cls(MLPGenerator(latent_dim=8, width=32, depth=2, batch_norm=False), MLPDiscriminator(width=32, depth=2),
                 lr_d=1e-4, lr_g=1e-4, betas_d=(0.5, 0.9), betas_g=(0.5, 0.9), **kwargs)
    plugins = [scaler_plugin()] if precision == "16-mixed" else []
    trainer = pl.Trainer(max_steps=optimizer_steps(4, module.n_critic), logger=False, enable_progress_bar=False,
                         enable_checkpointing=False, enable_model_summary=False, default_root_dir=tmp_path,
                         precision=None if plugins else precision, plugins=plugins, log_every_n_steps=1)
    before = {n: p.clone() for n, p in module.named_parameters()}
    trainer.fit(module, GridGaussians(batch_size=32))
    assert all(torch.isfinite(p).all() for p in module.parameters())
    moved = {n.split(".")[0] for n, p in module.named_parameters() if not torch.equal(p, before[n])}
    assert moved == {"generator", "discriminator"}
    assert torch.isfinite(torch.stack(list(module.step_losses.values()))).all()
    for penalty in module.penalties:  # under 16-mixed each penalty scales its own inner gradient
        assert penalty.scaler is (trainer.precision_plugin.scaler if plugins else None)


@pytest.mark.parametrize("penalty", [GradientPenalty(10.0), R1Penalty(1.0)], ids=["wgan_gp", "r1"])
def test_scaled_penalty_gradient_matches_fp32(penalty):
    torch.manual_seed(0)
    discriminator = MLPDiscriminator(width=64, depth=3)
    real, fake = torch.randn(64, 2), torch.randn(64, 2) * 2
    params = list(discriminator.parameters())

    torch.manual_seed(1)
    penalty.scaler = None
    reference = torch.autograd.grad(penalty(discriminator, real, fake), params, allow_unused=True)

    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**14)
    penalty.scaler = scaler
    torch.manual_seed(1)
    with torch.autocast("cpu", dtype=torch.float16):
        value = penalty(discriminator, real, fake)
    scaled = torch.autograd.grad(scaler.scale(value), params, allow_unused=True)
    compared = 0
    for ours, theirs in zip(scaled, reference):
        assert (ours is None) == (theirs is None)  # the last bias never reaches a gradient norm
        if ours is not None:
            unscaled = ours.float() / scaler.get_scale()
            assert (unscaled - theirs).norm() <= 2e-2 * theirs.norm()  # float16 arithmetic, ~3 digits
            compared += 1
    assert compared == len(params) - 1


def fp16_run_with_monitor(module, generator_steps: int, tmp_path):
    """16-mixed with the GradScaler a GPU run gets (initial scale 2^16), checked by the monitor every iteration."""
    plugin = MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))
    monitor = StabilityMonitor(every_n_generator_steps=1, warmup_generator_steps=0)
    trainer = pl.Trainer(max_steps=optimizer_steps(generator_steps, module.n_critic), logger=False,
                         enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False,
                         default_root_dir=tmp_path, plugins=[plugin], callbacks=[monitor], log_every_n_steps=1)
    trainer.fit(module, GridGaussians(batch_size=64))
    return plugin.scaler, monitor


def test_a_float16_overflow_the_scaler_skips_is_not_divergence(tmp_path):
    torch.manual_seed(0)  # at scale 2^16 DRAGAN's inner gradient overflows float16 and its penalty is NaN
    module = DRAGAN(MLPGenerator(latent_dim=8, width=32, depth=2, batch_norm=False), MLPDiscriminator(width=32, depth=2),
                    lr_d=1e-4, lr_g=1e-4, betas_d=(0.0, 0.9), betas_g=(0.0, 0.9))
    scaler, monitor = fp16_run_with_monitor(module, 10, tmp_path)
    assert scaler.get_scale() < 2.0**16  # steps were skipped for overflows
    assert module.diverged is None and module.generator_step == 10
    assert "non_finite" not in [alarm["alarm"] for alarm in monitor.alarms]  # (an untrained G's spread is a collapse)
    assert all(torch.isfinite(p).all() for p in module.parameters())


def test_a_float16_run_whose_every_step_overflows_is_stopped_once_the_loss_scale_falls_below_one(tmp_path):
    torch.manual_seed(0)
    module = NonSaturatingGAN(MLPGenerator(latent_dim=8, width=32, depth=2, batch_norm=False),
                              MLPDiscriminator(width=32, depth=2), lr_d=1e-4, lr_g=1e-4)
    with torch.no_grad():
        module.generator.net[-1].bias.fill_(1e30)  # finite in float32, inf in float16: every sample overflows
    scaler, monitor = fp16_run_with_monitor(module, 40, tmp_path)
    assert scaler.get_scale() < 1.0 and module.generator_step < 40
    assert "the 16-mixed loss scale fell to" in module.diverged and "at generator iteration" in module.diverged
    assert [alarm["alarm"] for alarm in monitor.alarms][-1] == "non_finite"


def test_unrolled_look_ahead_under_float16_takes_the_scaled_gradient():
    torch.manual_seed(0)
    discriminator = MLPDiscriminator(width=64, depth=3)
    optimizer = torch.optim.Adam(discriminator.parameters(), lr=1e-2, betas=(0.5, 0.9))
    real, fake, probe = torch.randn(64, 2), torch.randn(64, 2) * 2, torch.randn(16, 2)

    def loss(d):  # D's loss, small enough that its float16 gradients underflow unless scaled (Adam's step does not shrink)
        return 1e-5 * (F.softplus(-d(real)).mean() + F.softplus(d(fake)).mean())

    reference = unrolled_discriminator(discriminator, optimizer, loss, steps=2)(probe)
    moved = (reference - discriminator(probe)).abs().max()
    with torch.autocast("cpu", dtype=torch.float16):
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
        scaled = unrolled_discriminator(discriminator, optimizer, loss, 2, scaler)(probe).float()
    # float16 arithmetic, the same look-ahead (unscaled, 84% of the look-ahead's move was lost to underflow)
    assert (scaled - reference).abs().max() <= 0.05 * moved


@pytest.mark.parametrize("precision", ["bf16-true", "64-true"])
def test_a_run_with_weights_of_another_dtype_is_evaluated_and_monitored(precision, tmp_path):
    """The fixed noise is float32; callbacks run outside the precision plugin's context: every evaluation of a
    bf16-true or 64-true run failed ("mat1 and mat2 must have the same dtype")."""
    import json

    from lit_gan.callbacks import run_directory
    from lit_gan.cli import main
    from tests.conftest import quiet_args

    cli = main(["--config", "configs/quickstart.yaml", "--generator_steps=4", "--evaluation.every_n_generator_steps=2",
                "--evaluation.num_samples=200", "--trainer.log_every_n_steps=2", f"--trainer.precision={precision}",
                *quiet_args(tmp_path)])
    rows = json.loads((run_directory(cli.trainer) / "evaluation.json").read_text())
    assert [row["generator_step"] for row in rows] == [0, 2, 4]
    assert all(0 <= row["eval/modes"] <= 25 and row["eval/reverse_kl"] >= 0 for row in rows)
    dtype = {"bf16-true": torch.bfloat16, "64-true": torch.float64}[precision]
    assert next(cli.model.generator.parameters()).dtype == dtype  # trained in that dtype, scored from it


def test_float16_weights_are_refused_before_training(tmp_path):
    """Adam on float16 weights: eps 1e-8 rounds to 0, so a zero gradient's step is 0/0."""
    from lit_gan.errors import ConfigError

    module = NonSaturatingGAN(MLPGenerator(latent_dim=4, width=16, depth=2, batch_norm=False),
                              MLPDiscriminator(width=16, depth=2))
    trainer = pl.Trainer(max_steps=2, logger=False, enable_progress_bar=False, enable_checkpointing=False,
                         enable_model_summary=False, default_root_dir=tmp_path, precision="16-true")
    with pytest.raises(ConfigError, match=r"trainer.precision='16-true' is not valid: expected 16-mixed"):
        trainer.fit(module, GridGaussians(batch_size=16, seed=0))


def test_a_scaled_gradient_reads_the_loss_scale_once(monkeypatch):
    """Reading the scale is a host sync on a GPU: once per call, not once per parameter (the unrolled look-ahead
    differentiates every parameter of D at each of its steps)."""
    from lit_gan.penalties import differentiable_grad

    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    reads = []
    get_scale = scaler.get_scale
    monkeypatch.setattr(scaler, "get_scale", lambda: reads.append(1) or get_scale())
    network = MLPDiscriminator(width=8, depth=2)
    parameters = list(network.parameters())
    output = network(torch.randn(4, 2)).sum()
    gradients = differentiable_grad(output, parameters, scaler)
    assert len(reads) == 1 and len(gradients) == len(parameters) > 1
    for ours, exact in zip(gradients, torch.autograd.grad(output, parameters)):  # (the graph was kept)
        torch.testing.assert_close(ours, exact)  # unscaled: the plain gradient
