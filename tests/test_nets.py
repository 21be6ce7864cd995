"""Every network at every resolution trains one step under every objective."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lit_gan.nets import (
    DCGANDiscriminator, DCGANGenerator, MLPDiscriminator, MLPGenerator, ResNetDiscriminator, ResNetGenerator,
)
from lit_gan.objectives import DRAGAN, LSGAN, WGAN, WGANGP, HingeGAN, MinimaxGAN, NonSaturatingGAN, optimizer_steps

OBJECTIVES = [MinimaxGAN, NonSaturatingGAN, LSGAN, WGAN, WGANGP, DRAGAN, HingeGAN]


def dcgan(resolution, channels):
    return (DCGANGenerator(latent_dim=16, resolution=resolution, channels=channels, width=8),
            DCGANDiscriminator(resolution=resolution, channels=channels, width=8))


def resnet(resolution, channels):
    return (ResNetGenerator(latent_dim=16, resolution=resolution, channels=channels, width=16),
            ResNetDiscriminator(resolution=resolution, channels=channels, width=16))


def mlp(resolution, channels):
    shape = (channels, resolution, resolution)
    return (MLPGenerator(latent_dim=16, output_shape=shape, width=32, depth=2, output_activation="tanh"),
            MLPDiscriminator(input_shape=shape, width=32, depth=2))


NETWORKS = [("dcgan", dcgan, 28, 1), ("dcgan", dcgan, 32, 3), ("dcgan", dcgan, 64, 3), ("dcgan", dcgan, 16, 1),
            ("resnet", resnet, 32, 3), ("mlp", mlp, 8, 1)]


@pytest.mark.parametrize("objective", OBJECTIVES, ids=lambda c: c.__name__)
@pytest.mark.parametrize("name, build, resolution, channels", NETWORKS,
                         ids=[f"{n}-{r}px-{c}ch" for n, _, r, c in NETWORKS])
def test_one_training_step(objective, name, build, resolution, channels):
    pl.seed_everything(0)
    generator, discriminator = build(resolution, channels)
    assert generator(torch.randn(2, 16)).shape == (2, channels, resolution, resolution)
    module = objective(generator, discriminator, n_critic=1)
    before = [p.detach().clone() for p in module.parameters()]
    images = torch.rand(8, channels, resolution, resolution) * 2 - 1
    trainer = pl.Trainer(max_steps=optimizer_steps(1, 1), logger=False, enable_progress_bar=False,
                         enable_checkpointing=False, enable_model_summary=False)
    trainer.fit(module, DataLoader(TensorDataset(images), batch_size=4))
    assert module.generator_step == 1
    after = list(module.parameters())
    assert all(torch.isfinite(p).all() for p in after)
    changed = sum(not torch.equal(a, b) for a, b in zip(before, after))
    assert changed >= len(after) // 2  # both networks moved


@pytest.mark.parametrize("make", [lambda: DCGANGenerator(resolution=30), lambda: DCGANDiscriminator(resolution=12),
                                  lambda: ResNetGenerator(resolution=28), lambda: ResNetDiscriminator(resolution=7)])
def test_impossible_resolutions_are_refused_with_the_accepted_sizes(make):
    with pytest.raises(ValueError, match=r"resolution=\d+ is not valid: expected an image size"):
        make()


def test_resnet_discriminator_is_spectrally_normalised_by_default():
    discriminator = ResNetDiscriminator(width=16)
    convs = [m for m in discriminator.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert convs and all(hasattr(m, "parametrizations") for m in convs)
