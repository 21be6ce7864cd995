"""The seed-batching benchmark trains each seed exactly as the plain loop would train it alone."""

import pytest
import torch
from torch import nn

from benchmarks.seed_batching import StackedMLP, batched_iteration, layers_of
from benchmarks.train_step import plain_iteration
from lit_gan.nets import MLPDiscriminator, MLPGenerator

SEEDS, BATCH, LATENT, ITERATIONS = 3, 8, 4, 3


def adam(params):
    return torch.optim.Adam(params, lr=1e-2, betas=(0.5, 0.9))


def test_batched_iteration_is_each_seeds_plain_iteration():
    torch.manual_seed(0)
    generators = [MLPGenerator(latent_dim=LATENT, width=16, depth=2, batch_norm=False) for _ in range(SEEDS)]
    discriminators = [MLPDiscriminator(width=16, depth=2) for _ in range(SEEDS)]
    stacked_g, stacked_d = StackedMLP(generators), StackedMLP(discriminators)  # copies the initial weights
    real = torch.randn(ITERATIONS, SEEDS, BATCH, 2)

    latents = []  # what each seed's plain loop draws: two latent batches per iteration
    for k, (g, d) in enumerate(zip(generators, discriminators)):
        torch.manual_seed(100 + k)
        latents.append([torch.randn(BATCH, LATENT) for _ in range(2 * ITERATIONS)])
        torch.manual_seed(100 + k)
        opt_d, opt_g = adam(d.parameters()), adam(g.parameters())
        for i in range(ITERATIONS):
            plain_iteration(g, d, opt_d, opt_g, lambda: real[i, k])

    draws = iter(torch.stack(step) for step in zip(*latents))
    opt_d, opt_g = adam(stacked_d.parameters()), adam(stacked_g.parameters())
    for i in range(ITERATIONS):
        batched_iteration(stacked_g, stacked_d, opt_d, opt_g, real[i], noise=lambda shape: next(draws))

    for stacked, networks in ((stacked_g, generators), (stacked_d, discriminators)):
        linears = [[layer for layer in layers_of(n) if isinstance(layer, nn.Linear)] for n in networks]
        weights = [layer for layer in stacked.layers if isinstance(layer, tuple)]
        assert len(weights) == len(linears[0]) == 3
        for j, (weight, bias) in enumerate(weights):
            for k in range(SEEDS):
                assert not torch.equal(weight[k].T, linears[(k + 1) % SEEDS][j].weight)  # the seeds differ
                torch.testing.assert_close(weight[k].T, linears[k][j].weight)
                torch.testing.assert_close(bias[k, 0], linears[k][j].bias)


def test_stacked_mlp_names_the_layer_it_cannot_batch():
    with pytest.raises(ValueError, match="BatchNorm1d is not supported"):
        StackedMLP([MLPGenerator(batch_norm=True)])
