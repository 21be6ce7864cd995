"""Each objective's losses against its formula, and the alternating schedule."""

from __future__ import annotations

import math

import lightning.pytorch as pl
import pytest
import torch

from lit_gan.data import GridGaussians, RingGaussians
from lit_gan.nets import MLPDiscriminator, MLPGenerator
from lit_gan.objectives import (
    DRAGAN, LSGAN, WGAN, WGANGP, HingeGAN, MinimaxGAN, NonSaturatingGAN, optimizer_steps,
)
from lit_gan.penalties import DRAGANPenalty, GradientPenalty

REAL = torch.tensor([2.0, -1.0, 0.5])
FAKE = torch.tensor([-3.0, 0.0, 1.5])
sigmoid = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731


def make(cls, **kwargs):
    return cls(MLPGenerator(width=16, depth=2), MLPDiscriminator(width=16, depth=2), **kwargs)


def mean(values):
    return sum(values) / len(values)


def by_hand_bce_d(real, fake, real_label=1.0):
    real_term = [-(real_label * math.log(sigmoid(r)) + (1 - real_label) * math.log(1 - sigmoid(r))) for r in real]
    return mean(real_term) + mean([-math.log(1 - sigmoid(f)) for f in fake])


CASES = {
    "minimax": (make(MinimaxGAN), by_hand_bce_d(REAL.tolist(), FAKE.tolist()),
                mean([math.log(1 - sigmoid(f)) for f in FAKE.tolist()])),
    "nonsaturating": (make(NonSaturatingGAN), by_hand_bce_d(REAL.tolist(), FAKE.tolist()),
                      mean([-math.log(sigmoid(f)) for f in FAKE.tolist()])),
    "label_smoothing": (make(NonSaturatingGAN, real_label=0.9), by_hand_bce_d(REAL.tolist(), FAKE.tolist(), 0.9),
                        mean([-math.log(sigmoid(f)) for f in FAKE.tolist()])),
    "lsgan": (make(LSGAN), 0.5 * mean([(r - 1) ** 2 for r in REAL.tolist()]) + 0.5 * mean([f**2 for f in FAKE.tolist()]),
              0.5 * mean([(f - 1) ** 2 for f in FAKE.tolist()])),
    "wgan": (make(WGAN), mean(FAKE.tolist()) - mean(REAL.tolist()), -mean(FAKE.tolist())),
    "wgan_gp": (make(WGANGP), mean(FAKE.tolist()) - mean(REAL.tolist()), -mean(FAKE.tolist())),
    "dragan": (make(DRAGAN), by_hand_bce_d(REAL.tolist(), FAKE.tolist()),
               mean([-math.log(sigmoid(f)) for f in FAKE.tolist()])),
    "hinge": (make(HingeGAN), mean([max(0, 1 - r) for r in REAL.tolist()]) + mean([max(0, 1 + f) for f in FAKE.tolist()]),
              -mean(FAKE.tolist())),
}


@pytest.mark.parametrize("name", CASES)
def test_losses_match_their_formula(name):
    module, d_expected, g_expected = CASES[name]
    assert module.discriminator_loss(REAL, FAKE).item() == pytest.approx(d_expected, rel=1e-5)
    assert module.generator_loss(FAKE).item() == pytest.approx(g_expected, rel=1e-5)


def test_minimax_generator_saturates_where_nonsaturating_does_not():
    """The reason for the non-saturating loss: when D confidently rejects fakes, minimax G gets ~no gradient."""
    confident = torch.tensor([-10.0], requires_grad=True)
    minimax = torch.autograd.grad(make(MinimaxGAN).generator_loss(confident), confident)[0]
    nonsat = torch.autograd.grad(make(NonSaturatingGAN).generator_loss(confident), confident)[0]
    assert minimax.abs().item() < 1e-4 < 0.5 < nonsat.abs().item()


def test_wasserstein_objectives_log_the_estimate():
    metrics = make(WGANGP).discriminator_metrics(REAL, FAKE)
    assert metrics["wasserstein_estimate"].item() == pytest.approx(mean(REAL.tolist()) - mean(FAKE.tolist()))


def test_penalty_objectives_carry_their_penalty_first():
    assert isinstance(make(WGANGP, gradient_penalty_weight=5.0).penalties[0], GradientPenalty)
    assert make(WGANGP, gradient_penalty_weight=5.0).penalties[0].weight == 5.0
    assert isinstance(make(DRAGAN).penalties[0], DRAGANPenalty)


@pytest.mark.parametrize("kwargs, key", [
    ({"lr_d": 0.0}, "model.lr_d"), ({"lr_g": -1e-4}, "model.lr_g"), ({"n_critic": 0}, "model.n_critic"),
    ({"betas_d": (0.5, 1.0)}, "model.betas_d"), ({"betas_g": (-0.1, 0.9)}, "model.betas_g"),
])
def test_bad_hyperparameters_name_the_key(kwargs, key):
    with pytest.raises(ValueError, match=key):
        make(NonSaturatingGAN, **kwargs)


@pytest.mark.parametrize("cls, expected", [
    (WGAN, {"lr_d": 5e-5, "lr_g": 5e-5, "betas_d": (0.0, 0.999), "betas_g": (0.0, 0.999), "n_critic": 5}),  # Alg. 1
    (WGANGP, {"lr_d": 1e-4, "lr_g": 1e-4, "betas_d": (0.0, 0.9), "betas_g": (0.0, 0.9), "n_critic": 5}),  # Alg. 1
])
def test_wasserstein_objectives_built_bare_take_their_papers_settings(cls, expected):
    module = make(cls)
    assert {key: module.hparams[key] for key in expected} == expected and module.n_critic == 5
    optimizer_d, optimizer_g = module.configure_optimizers()  # constant learning rates: no schedulers
    assert optimizer_d.param_groups[0]["betas"] == expected["betas_d"] and optimizer_g.param_groups[0]["lr"] == expected["lr_g"]
    assert make(cls, n_critic=2, lr_d=3e-4).hparams["n_critic"] == 2  # and a config's values win


def test_wgan_rejects_non_positive_clip_value():
    with pytest.raises(ValueError, match="model.clip_value=0"):
        make(WGAN, clip_value=0)


class StepRecorder(pl.Callback):
    """Snapshots G and D parameters around every optimizer step."""

    def __init__(self):
        self.events = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        which = "D" if optimizer is trainer.optimizers[0] else "G"
        self.events.append((which, snapshot(pl_module.generator), snapshot(pl_module.discriminator)))


def snapshot(module):
    return torch.cat([p.detach().flatten().clone() for p in module.parameters()])


def fit(module, datamodule, generator_steps, callbacks=(), ckpt_path=None):
    trainer = pl.Trainer(
        max_steps=optimizer_steps(generator_steps, module.n_critic), logger=False, enable_progress_bar=False,
        enable_checkpointing=False, enable_model_summary=False, callbacks=list(callbacks),
    )
    trainer.fit(module, datamodule, ckpt_path=ckpt_path)
    return trainer


@pytest.mark.parametrize("n_critic", [1, 3])
def test_n_critic_schedule_and_frozen_parameters(n_critic):
    pl.seed_everything(0)
    module = make(NonSaturatingGAN, n_critic=n_critic)
    recorder = StepRecorder()
    trainer = fit(module, RingGaussians(), generator_steps=4, callbacks=[recorder])
    order = "".join(e[0] for e in recorder.events)
    assert order == ("D" * n_critic + "G") * 4
    assert module.generator_step == 4 and module.discriminator_step == 4 * n_critic
    assert trainer.global_step == optimizer_steps(4, n_critic)
    # Snapshots are taken before each step, so event i+1 holds the parameters after step i.
    events = recorder.events + [("end", snapshot(module.generator), snapshot(module.discriminator))]
    for (which, g_before, d_before), (_, g_after, d_after) in zip(events, events[1:]):
        if which == "D":
            assert torch.equal(g_before, g_after), "G changed during a D step"
            assert not torch.equal(d_before, d_after), "D did not change during its own step"
        else:
            assert torch.equal(d_before, d_after), "D changed during a G step"
            assert not torch.equal(g_before, g_after), "G did not change during its own step"


class NumberedBatches(pl.LightningDataModule):
    """A finite epoch of ``batches`` batches of 2-D points; every point of batch i equals i."""

    def __init__(self, batches: int):
        super().__init__()
        self.batches = batches

    def train_dataloader(self):
        data = torch.arange(self.batches, dtype=torch.float32).repeat_interleave(4)[:, None].expand(-1, 2)
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(data.contiguous()), batch_size=4)


class SeenBatches(NonSaturatingGAN):
    """Records which numbered batch each D step trains on."""

    def update_discriminator(self, real, optimizer, measure=True):
        self.seen = getattr(self, "seen", []) + [int(real[0, 0])]
        return super().update_discriminator(real, optimizer, measure)


def test_critic_cycles_run_across_epoch_ends_without_skipping_a_batch():
    """One training_step is one generator iteration drawing its n_critic batches itself; an epoch of
    5 batches ends inside the cycle of 3, and the cycle finishes on the next epoch's batches."""
    pl.seed_everything(0)
    module = SeenBatches(MLPGenerator(width=16, depth=2), MLPDiscriminator(width=16, depth=2), n_critic=3)
    recorder = StepRecorder()
    fit(module, NumberedBatches(5), generator_steps=7, callbacks=[recorder])
    assert module.seen == [i % 5 for i in range(21)]
    assert "".join(e[0] for e in recorder.events) == "DDDG" * 7
    assert module.generator_step == 7  # the 21 batches seen above span 5 epochs of 5


class BackwardListener(pl.Callback):
    calls = 0

    def on_before_backward(self, trainer, pl_module, loss):
        self.calls += 1


class StepListener(pl.Callback):
    calls = 0

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.calls += 1


@pytest.mark.parametrize("listener, precision, through_lightning", [
    (None, "32-true", False), (BackwardListener, "32-true", True), (StepListener, "32-true", True),
    (None, "bf16-mixed", True)])
def test_lightning_wrappers_are_skipped_only_where_nothing_needs_them(listener, precision, through_lightning):
    """A callback's backward or optimizer-step hook, or a precision plugin other than fp32, is still
    honoured; either way Lightning counts every optimizer step."""
    pl.seed_everything(0)
    module = make(NonSaturatingGAN)
    callbacks = [listener()] if listener else []
    trainer = pl.Trainer(max_steps=optimizer_steps(3, 1), logger=False, enable_progress_bar=False, precision=precision,
                         enable_checkpointing=False, enable_model_summary=False, callbacks=callbacks)
    trainer.fit(module, GridGaussians())
    assert module.direct_steps is not through_lightning
    if listener:
        assert callbacks[0].calls == 6  # one D and one G backward / step per iteration
    assert module.generator_step == 3 and trainer.global_step == optimizer_steps(3, 1)


class ShiftedGrid(GridGaussians):
    """Moves every batch after it reaches the device, as a user's datamodule hook might."""

    def on_after_batch_transfer(self, batch, dataloader_idx):
        return batch + 100.0


class SeenReal(NonSaturatingGAN):
    def update_discriminator(self, real, optimizer, measure=True):
        self.real_means = getattr(self, "real_means", []) + [real.mean().item()]
        return super().update_discriminator(real, optimizer, measure)


@pytest.mark.parametrize("data, precision, direct", [
    (GridGaussians, "32-true", True), (ShiftedGrid, "32-true", False), (GridGaussians, "bf16-mixed", False)])
def test_lightning_batch_path_is_skipped_only_where_it_would_change_nothing(data, precision, direct):
    """A datamodule's batch hook, or a precision plugin other than fp32, still reaches every real batch."""
    pl.seed_everything(0)
    module = SeenReal(MLPGenerator(width=16, depth=2), MLPDiscriminator(width=16, depth=2))
    trainer = pl.Trainer(max_steps=optimizer_steps(3, 1), logger=False, enable_progress_bar=False, precision=precision,
                         enable_checkpointing=False, enable_model_summary=False)
    trainer.fit(module, data())
    assert module.direct_batches is direct
    shifted = data is ShiftedGrid
    assert len(module.real_means) == 3 and all((mean > 50) is shifted for mean in module.real_means)


def test_wgan_clipping_bounds_every_critic_weight():
    pl.seed_everything(0)
    module = make(WGAN, clip_value=0.02, lr_d=0.5)  # a huge step that would leave the box without clipping
    fit(module, GridGaussians(), generator_steps=2)
    weights = torch.cat([p.detach().flatten() for p in module.discriminator.parameters()])
    assert weights.abs().max().item() <= 0.02
    assert weights.abs().max().item() == pytest.approx(0.02)  # the bound is active, not vacuous


def test_spectral_norm_keeps_largest_singular_value_near_one():
    pl.seed_everything(0)
    module = HingeGAN(MLPGenerator(width=32, depth=2), MLPDiscriminator(width=32, depth=3, spectral_norm=True),
                      lr_d=2e-4)  # the SNGAN learning rate; one power iteration per forward keeps up with it
    fit(module, GridGaussians(), generator_steps=30)
    module.discriminator.eval()  # read the normalised weight without another power iteration
    linears = [m for m in module.discriminator.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 4
    raw_sigmas = []
    for layer in linears:
        sigma = torch.linalg.matrix_norm(layer.weight.detach(), ord=2).item()
        raw_sigmas.append(torch.linalg.matrix_norm(layer.parametrizations.weight.original.detach(), ord=2).item())
        assert sigma == pytest.approx(1.0, abs=0.02), f"normalised sigma {sigma}"
    # Without the normalisation the layers would be far from 1: the check above is not vacuous.
    assert max(abs(raw - 1.0) for raw in raw_sigmas) > 0.5, raw_sigmas


class LearningRates(pl.Callback):
    def __init__(self):
        self.rates = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.rates.append((pl_module.generator_step, [o.param_groups[0]["lr"] for o in trainer.optimizers]))


def test_linear_lr_decay_reaches_zero_at_the_last_generator_iteration():
    pl.seed_everything(0)
    module = make(WGANGP, n_critic=2, lr_d=4e-4, lr_g=2e-4, lr_decay="linear")
    recorder = LearningRates()
    fit(module, RingGaussians(), generator_steps=4, callbacks=[recorder])
    steps = [step for step, _ in recorder.rates]
    after_g_steps = [rates for i, (step, rates) in enumerate(recorder.rates) if step != (steps[i - 1] if i else 0)]
    flat = [rate for rates in after_g_steps for rate in rates]
    assert flat == pytest.approx([3e-4, 1.5e-4, 2e-4, 1e-4, 1e-4, 0.5e-4, 0.0, 0.0])


def test_constant_lr_is_the_default():
    pl.seed_everything(0)
    module = make(NonSaturatingGAN, lr_d=3e-4, lr_g=1e-4)
    recorder = LearningRates()
    fit(module, RingGaussians(), generator_steps=3, callbacks=[recorder])
    assert all(rates == [3e-4, 1e-4] for _, rates in recorder.rates)


def test_unknown_lr_decay_is_refused():
    with pytest.raises(ValueError, match="model.lr_decay='cosine' is not valid"):
        make(NonSaturatingGAN, lr_decay="cosine")


@pytest.mark.parametrize("key, value", [
    ("betas_d", 0.5), ("lr_g", float("inf")), ("n_critic", True), ("unrolled_steps", True), ("ema_start", 2.5),
    ("instance_noise_steps", 2.5), ("instance_noise", float("inf")), ("ema_decay", float("nan")),
    ("historical_averaging", "0.1")])
def test_python_callers_get_the_same_one_line_refusals_as_the_command_line(key, value):
    # The command line checks types; from Python betas_d=0.5 was a TypeError and the others were accepted.
    with pytest.raises(ValueError, match=rf"^model.{key}={value!r} is not valid: expected"):
        make(NonSaturatingGAN, **{key: value})


@pytest.mark.parametrize("objective, key", [(WGANGP, "gradient_penalty_weight"), (DRAGAN, "dragan_weight")])
def test_a_negative_penalty_weight_is_refused_by_its_config_key(objective, key):
    with pytest.raises(ValueError, match=rf"model.{key}=-1.0 is not valid: expected a number >= 0"):
        make(objective, **{key: -1.0})  # (was reported as a GradientPenalty.weight the config never names)


def test_gpu_count_skips_nvml_only_where_nvml_cannot_load():
    """Lightning's NVML-based GPU check stays wherever NVML loads; elsewhere torch's answer is unchanged."""
    import os

    import lit_gan  # noqa: F401

    nvml_works = torch.cuda._device_count_nvml() >= 0
    assert os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] == ("1" if nvml_works else "0")
    if not nvml_works:  # no NVIDIA driver: still no GPU, now answered without retrying NVML
        assert not torch.cuda.is_available()


def test_the_generator_update_draws_generator_batch_size_samples():
    # SNGAN's code and WGAN-GP's CIFAR-10 ResNet script update G on 128 samples while D sees batches of 64.
    pl.seed_everything(0)
    module = make(NonSaturatingGAN, generator_batch_size=96)
    sizes = []
    module.generator.register_forward_hook(lambda network, inputs, output: sizes.append(inputs[0].shape[0]))
    fit(module, RingGaussians(batch_size=32), generator_steps=2)
    assert sizes == [32, 96, 32, 96]  # D's fakes as many as its real batch, G's update its own number
    with pytest.raises(ValueError, match="model.generator_batch_size=0 is not valid: expected null"):
        make(NonSaturatingGAN, generator_batch_size=0)


def test_numpy_numbers_are_accepted_and_a_huge_integer_is_no_crash(tmp_path):
    import numpy as np

    module = make(WGANGP, lr_d=np.float32(1e-3), ema_start=np.int64(5), betas_d=(np.float64(0.5), 0.9),
                  gradient_penalty_weight=np.float64(10.0))
    # Stored as Python numbers: checkpoints load with weights_only, which refused NumPy scalars on resume.
    assert (module.hparams.lr_d, module.hparams.ema_start, module.hparams.betas_d) == (np.float32(1e-3), 5, (0.5, 0.9))
    assert [type(v) for v in (module.hparams.lr_d, module.hparams.ema_start, *module.hparams.betas_d,
                              module.hparams.gradient_penalty_weight, module.penalties[0].weight)] == [
        float, int, float, float, float, float]
    trainer = pl.Trainer(max_steps=optimizer_steps(1, module.n_critic), logger=False, enable_progress_bar=False,
                         enable_checkpointing=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(module, RingGaussians(batch_size=16))
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    resumed = fit(module, RingGaussians(batch_size=16), generator_steps=2, ckpt_path=tmp_path / "last.ckpt")
    assert module.generator_step == 2 and resumed.state.finished
    hyper_parameters = torch.load(tmp_path / "last.ckpt", weights_only=True)["hyper_parameters"]
    assert type(hyper_parameters["lr_d"]) is float
    assert make(NonSaturatingGAN, ema_start=10**400).hparams.ema_start == 10**400  # math.isfinite overflowed
    with pytest.raises(ValueError, match="model.gradient_penalty_weight='1' is not valid"):
        make(WGANGP, gradient_penalty_weight="1")  # was a TypeError
