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
    moved = {name.split(".")[0] for (name, a), b in zip(module.named_parameters(), before) if not torch.equal(a, b)}
    assert moved == {"generator", "discriminator"}  # both networks (G alone has more tensors than D)


@pytest.mark.parametrize("make", [lambda: DCGANGenerator(resolution=30), lambda: DCGANDiscriminator(resolution=12),
                                  lambda: ResNetGenerator(resolution=28), lambda: ResNetDiscriminator(resolution=7)])
def test_impossible_resolutions_are_refused_with_the_accepted_sizes(make):
    with pytest.raises(ValueError, match=r"resolution=\d+ is not valid: expected an image size"):
        make()


@pytest.mark.parametrize("make, key", [
    (lambda: DCGANGenerator(latent_dim=0), "DCGANGenerator.latent_dim=0"),  # trained: every sample identical
    (lambda: DCGANDiscriminator(channels=0), "DCGANDiscriminator.channels=0"),
    (lambda: ResNetGenerator(width=0), "ResNetGenerator.width=0"),
    (lambda: MLPDiscriminator(activation="maxout", maxout_pieces=0), "MLPDiscriminator.maxout_pieces=0"),
], ids=["dcgan_latent_dim", "dcgan_channels", "resnet_width", "maxout_pieces"])
def test_network_sizes_below_one_are_refused(make, key):
    with pytest.raises(ValueError, match=rf"{key} is not valid: expected an integer >= 1"):
        make()


@pytest.mark.parametrize("build, scale", [
    (lambda: (DCGANGenerator(resolution=16, channels=1), DCGANDiscriminator(resolution=16, channels=1)), "dcgan"),
    (lambda: (ResNetGenerator(resolution=16, width=32), ResNetDiscriminator(resolution=16, width=32,
                                                                           spectral_norm=False)), "sngan"),
], ids=["dcgan", "sngan_resnet"])
def test_image_networks_start_from_their_papers_initialisation(build, scale):
    import math

    torch.manual_seed(0)
    for network in build():
        for name, layer in network.named_modules():
            if isinstance(layer, (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear)):
                weight = layer.weight.detach()
                if scale == "dcgan":  # N(0, 0.02) (Radford et al. 2015)
                    assert abs(weight.std().item() - 0.02) < 0.004, name
                else:  # Glorot uniform, gain sqrt(2) in residual branches (SNGAN's code)
                    fan_in, fan_out = torch.nn.init._calculate_fan_in_and_fan_out(weight)
                    gain = math.sqrt(2) if "residual" in name else 1.0
                    bound = gain * math.sqrt(6 / (fan_in + fan_out))
                    assert weight.abs().max().item() <= bound and weight.abs().max().item() > 0.9 * bound, name
                assert layer.bias is None or not layer.bias.any(), name


def test_resnet_discriminator_is_spectrally_normalised_by_default():
    discriminator = ResNetDiscriminator(width=16)
    convs = [m for m in discriminator.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert convs and all(hasattr(m, "parametrizations") for m in convs)


def test_resnet_discriminator_pools_by_sum_or_by_mean():
    # Sum over the 8x8 positions (SNGAN's code) or their mean (WGAN-GP's CIFAR-10 ResNet, mimicry's WGAN-GP).
    x = torch.randn(4, 3, 32, 32)
    torch.manual_seed(0)
    summed = ResNetDiscriminator(width=16, spectral_norm=False)
    torch.manual_seed(0)
    averaged = ResNetDiscriminator(width=16, spectral_norm=False, pooling="mean")
    torch.testing.assert_close(summed.features(x), 64 * averaged.features(x))
    with pytest.raises(ValueError, match="ResNetDiscriminator.pooling='max' is not valid: expected 'sum' or 'mean'"):
        ResNetDiscriminator(pooling="max")
