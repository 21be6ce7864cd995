"""The Lightning module does exactly the math of a hand-written PyTorch loop (same seeds, same order):
the same weights to the last bit, with lit-gan's multi-tensor Adam against the plain loop's default one."""

from __future__ import annotations

import copy

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F

from lit_gan.callbacks import Evaluation, StabilityMonitor
from lit_gan.data import RingGaussians
from lit_gan.nets import MLPDiscriminator, MLPGenerator
from lit_gan.objectives import WGANGP, NonSaturatingGAN, optimizer_steps
from lit_gan.penalties import GradientPenalty


def plain_loop(generator, discriminator, stream, iterations, n_critic, d_loss, g_loss, penalty=None):
    """Algorithm 1 of Gulrajani et al. (2017), written out by hand."""
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=1e-3, betas=(0.5, 0.9))
    opt_g = torch.optim.Adam(generator.parameters(), lr=1e-3, betas=(0.5, 0.9))
    for _ in range(iterations):
        for _ in range(n_critic):
            real = next(stream)
            with torch.no_grad():
                fake = generator(torch.randn(len(real), generator.latent_dim))
            loss = d_loss(discriminator(real), discriminator(fake))
            if penalty is not None:
                loss = loss + penalty(discriminator, real, fake)
            opt_d.zero_grad()
            loss.backward()
            opt_d.step()
        discriminator.requires_grad_(False)
        loss = g_loss(discriminator(generator(torch.randn(len(real), generator.latent_dim))))
        opt_g.zero_grad()
        loss.backward()
        opt_g.step()
        discriminator.requires_grad_(True)


CASES = {
    "nonsaturating": (NonSaturatingGAN, {}, 1,
                      lambda r, f: F.softplus(-r).mean() + F.softplus(f).mean(), lambda f: F.softplus(-f).mean(), None),
    "wgan_gp": (WGANGP, {"gradient_penalty_weight": 10.0}, 3,
                lambda r, f: f.mean() - r.mean(), lambda f: -f.mean(), GradientPenalty(10.0)),
}


@pytest.mark.parametrize("watched", [False, True], ids=["bare", "with_evaluation_and_monitor"])
@pytest.mark.parametrize("name", CASES)
def test_lightning_training_equals_a_plain_pytorch_loop(name, watched, tmp_path):
    """Also with the evaluation and stability-monitor callbacks attached: watching never changes training."""
    cls, extra, n_critic, d_loss, g_loss, penalty = CASES[name]
    torch.manual_seed(0)
    generator, discriminator = MLPGenerator(latent_dim=4, width=32, depth=2), MLPDiscriminator(width=32, depth=2)
    module = cls(copy.deepcopy(generator), copy.deepcopy(discriminator), lr_d=1e-3, lr_g=1e-3,
                 betas_d=(0.5, 0.9), betas_g=(0.5, 0.9), n_critic=n_critic, **extra)
    initial = copy.deepcopy(generator)
    iterations = 6

    torch.manual_seed(1)
    callbacks = [Evaluation(every_n_generator_steps=2, num_samples=100, plot=False),
                 StabilityMonitor(every_n_generator_steps=1, warmup_generator_steps=0)] if watched else []
    trainer = pl.Trainer(max_steps=optimizer_steps(iterations, n_critic), logger=False, enable_progress_bar=False,
                         enable_checkpointing=False, enable_model_summary=False, callbacks=callbacks,
                         log_every_n_steps=1, default_root_dir=tmp_path)
    trainer.fit(module, RingGaussians(seed=3))

    torch.manual_seed(1)
    plain_loop(generator, discriminator, iter(RingGaussians(seed=3).train_dataloader()), iterations, n_critic,
               d_loss, g_loss, penalty)

    assert_same_weights(module, generator, discriminator)
    moved = [not torch.equal(a, b) for a, b in zip(generator.parameters(), initial.parameters())]
    assert all(moved), "training did not move G: the comparison would be vacuous"


def assert_same_weights(module, generator, discriminator, **tolerance):
    tolerance = tolerance or {"rtol": 0, "atol": 0}
    for ours, theirs in ((module.generator, generator), (module.discriminator, discriminator)):
        for a, b in zip(ours.parameters(), theirs.parameters()):
            torch.testing.assert_close(a, b, **tolerance)


def test_fused_adam_does_the_same_math_up_to_rounding(tmp_path):
    """``fused_adam`` swaps Adam's kernel: the same training to float rounding, but not bit for bit."""
    torch.manual_seed(0)
    generator, discriminator = MLPGenerator(latent_dim=4, width=32, depth=2), MLPDiscriminator(width=32, depth=2)
    module = NonSaturatingGAN(copy.deepcopy(generator), copy.deepcopy(discriminator), lr_d=1e-3, lr_g=1e-3,
                              betas_d=(0.5, 0.9), betas_g=(0.5, 0.9), fused_adam=True)
    torch.manual_seed(1)
    trainer = pl.Trainer(max_steps=optimizer_steps(6, 1), logger=False, enable_progress_bar=False,
                         enable_checkpointing=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(module, RingGaussians(seed=3))
    assert all(opt.optimizer.defaults["fused"] for opt in module.optimizers())
    torch.manual_seed(1)
    _, d_loss, g_loss, _ = CASES["nonsaturating"][2:]
    plain_loop(generator, discriminator, iter(RingGaussians(seed=3).train_dataloader()), 6, 1, d_loss, g_loss)
    assert_same_weights(module, generator, discriminator, rtol=1e-5, atol=1e-6)
    assert any(not torch.equal(a, b) for a, b in zip(module.discriminator.parameters(), discriminator.parameters())), \
        "fused Adam matched the default bit for bit: the documented caveat would be wrong"
