"""Toy-study throughput per core: what training several seeds in one process, or a faster Adam, would buy.

    python -m benchmarks.seed_batching            # --write updates docs/PERFORMANCE.md

Plain PyTorch only, one torch thread, the non-saturating GAN iteration of the benchmark's plain loop
(:func:`benchmarks.train_step.plain_iteration`) with the networks and batch size of
``configs/grid/nonsaturating.yaml``:

- one seed per process with ``torch.optim.Adam()`` as a plain script builds it (the baseline: a
  per-tensor loop on a CPU);
- the same with :class:`lit_gan.optim.ContiguousAdam`, lit-gan's default (the same numbers in one
  pass over all of a network's parameters), and with ``Adam(fused=True)``, PyTorch's single-kernel
  Adam (``model.fused_adam: true``);
- ``K`` seeds in one process: the K copies of each network with their weights stacked
  (:class:`StackedMLP`), so one batched matmul serves every seed; one fused Adam over the stacked
  weights. Each seed's math is unchanged (its loss is summed with the others', whose
  gradients do not touch it; Adam is elementwise); :func:`batched_iteration` says so in a test.

It reports seed-iterations per second on one core, the variants timed in turns (short blocks). These
are upper bounds: no logging, monitor, evaluation or checkpoints, which lit-gan runs per seed.
"""

from __future__ import annotations

import argparse
import copy
import functools
import tempfile
import statistics
import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmarks.common import commit, machine, publish
from benchmarks.train_step import build, plain_iteration
from lit_gan.data.toy import sample_mixture
from lit_gan.optim import ContiguousAdam

CONFIG = "configs/grid/nonsaturating.yaml"


class StackedMLP:
    """``K`` copies of one lit-gan MLP (:class:`~lit_gan.nets.MLPGenerator` without batch norm, or
    :class:`~lit_gan.nets.MLPDiscriminator` without maxout) as one network whose weights are stacked
    along a new first dimension: slice ``k`` of an input ``(K, batch, features)`` goes through copy
    ``k``, every linear layer being one batched matmul for all copies.
    """

    def __init__(self, networks: list[nn.Module]):
        self.latent_dim = getattr(networks[0], "latent_dim", None)
        self.layers: list = []
        for copies in zip(*map(layers_of, networks)):
            layer = copies[0]
            if isinstance(layer, nn.Linear):
                weight = torch.stack([c.weight.detach().T for c in copies]).contiguous().requires_grad_()
                bias = (None if layer.bias is None else
                        torch.stack([c.bias.detach() for c in copies]).unsqueeze(1).contiguous().requires_grad_())
                self.layers.append((weight, bias))
            elif isinstance(layer, (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.Tanh)):
                self.layers.append(layer)  # elementwise: the same for every copy
            else:
                raise ValueError(f"layer {type(layer).__name__} is not supported by StackedMLP: expected "
                                 "Linear, ReLU, LeakyReLU, ELU or Tanh (no batch norm, maxout or spectral norm)")

    def __call__(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            if not isinstance(layer, tuple):
                x = layer(x)
            else:
                x = torch.bmm(x, layer[0]) if layer[1] is None else torch.baddbmm(layer[1], x, layer[0])
        return x

    def parameters(self) -> list[Tensor]:
        return [tensor for layer in self.layers if isinstance(layer, tuple) for tensor in layer if tensor is not None]

    def requires_grad_(self, flag: bool) -> None:
        for tensor in self.parameters():
            tensor.requires_grad_(flag)


def layers_of(network: nn.Module) -> list[nn.Module]:
    """The layers of a lit-gan MLP in the order its forward applies them (2-D points: no flattening)."""
    if hasattr(network, "net"):
        return list(network.net)
    return [layer for layer in network.body if not isinstance(layer, nn.Flatten)] + [network.head]


def per_seed(losses: Tensor) -> Tensor:
    """Each seed's mean over its batch: ``(K, batch, ...)`` -> ``(K,)``."""
    return losses.flatten(1).mean(1)


def batched_iteration(generator: StackedMLP, discriminator: StackedMLP, opt_d, opt_g, real: Tensor,
                      noise=torch.randn) -> None:
    """:func:`benchmarks.train_step.plain_iteration` (non-saturating, one D step) for every seed at
    once; ``real`` is ``(K, batch, features)``. Per-seed losses are summed, so each seed's gradient is
    its own. ``noise(shape)`` draws the latents, once for D's step and once for G's."""
    seeds, batch = real.shape[:2]
    with torch.no_grad():
        fake = generator(noise((seeds, batch, generator.latent_dim)))
    loss = (per_seed(F.softplus(-discriminator(real))) + per_seed(F.softplus(discriminator(fake)))).sum()
    opt_d.zero_grad(set_to_none=True)
    loss.backward()
    opt_d.step()
    discriminator.requires_grad_(False)
    loss = per_seed(F.softplus(-discriminator(generator(noise((seeds, batch, generator.latent_dim)))))).sum()
    opt_g.zero_grad(set_to_none=True)
    loss.backward()
    opt_g.step()
    discriminator.requires_grad_(True)


ADAMS = {  # how each one-seed variant builds Adam
    "`Adam()`": torch.optim.Adam,
    "`ContiguousAdam` (lit-gan's default)": functools.partial(ContiguousAdam, foreach=True),
    "`Adam(fused=True)`": functools.partial(torch.optim.Adam, fused=True),
}


def adam(params, hp, which: str, kind: str):
    return ADAMS[kind](params, lr=getattr(hp, f"lr_{which}"), betas=tuple(getattr(hp, f"betas_{which}")))


BLOCK = 20  # one-seed iterations per turn: long enough to run from warm caches, short enough to share the VM's drift


def seconds_per_iteration(variants: dict, iterations: int) -> dict:
    """Each variant's median time per iteration over short blocks, after a warm-up.

    The variants take turns block by block (``BLOCK`` one-seed iterations, ``BLOCK // K`` for K batched
    seeds), so a VM whose speed drifts from second to second slows them alike, while each block runs
    on caches warmed by its own first iteration.
    """
    for iteration in variants.values():
        for _ in range(10):
            iteration()
    times = {name: [] for name in variants}
    for _ in range(max(1, iterations // BLOCK)):
        for (name, seeds), iteration in variants.items():
            block = max(1, BLOCK // seeds)
            start = time.perf_counter()
            for _ in range(block):
                iteration()
            times[name, seeds].append((time.perf_counter() - start) / block)
    return {name: statistics.median(seconds) for name, seconds in times.items()}


def measure(seed_counts: list[int], iterations: int) -> list[dict]:
    with tempfile.TemporaryDirectory() as directory:
        cli = build(CONFIG, [], 1, directory)
    hp, data = cli.model.hparams, cli.datamodule
    generator, discriminator = cli.model.generator, cli.model.discriminator
    stream = torch.Generator().manual_seed(0)

    def real(*shape):
        return sample_mixture(data.centers, data.std, torch.Size(shape).numel(), stream).view(*shape, -1)

    def one_seed(kind: str):
        g, d = copy.deepcopy(generator), copy.deepcopy(discriminator)
        opt_d, opt_g = adam(d.parameters(), hp, "d", kind), adam(g.parameters(), hp, "g", kind)
        return lambda: plain_iteration(g, d, opt_d, opt_g, lambda: real(data.batch_size))

    def batched(seeds: int):
        g = StackedMLP([copy.deepcopy(generator) for _ in range(seeds)])
        d = StackedMLP([copy.deepcopy(discriminator) for _ in range(seeds)])
        opt_d, opt_g = adam(d.parameters(), hp, "d", "`Adam(fused=True)`"), adam(g.parameters(), hp, "g", "`Adam(fused=True)`")
        return lambda: batched_iteration(g, d, opt_d, opt_g, real(seeds, data.batch_size))

    variants = {(f"one seed, {kind}", 1): one_seed(kind) for kind in ADAMS}
    variants.update({(f"{seeds} seeds batched (batched matmul), `Adam(fused=True)`", seeds): batched(seeds)
                     for seeds in seed_counts})
    seconds = seconds_per_iteration(variants, iterations)
    return [{"how": how, "seeds": seeds, "seconds": seconds[how, seeds]} for how, seeds in variants]


def table(rows: list[dict]) -> str:
    base = rows[0]["seeds"] / rows[0]["seconds"]
    lines = ["| one process, one thread | ms per iteration | seed-iterations / s | vs one seed, `Adam()` |",
             "|---|---|---|---|"]
    for r in rows:
        rate = r["seeds"] / r["seconds"]
        lines.append(f"| {r['how']} | {1000 * r['seconds']:.2f} | {rate:.0f} | {rate / base:.2f}× |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[2, 4, 8, 16], help="seed counts to batch")
    parser.add_argument("--iterations", type=int, default=2000, help="timed one-seed iterations per variant")
    parser.add_argument("--write", action="store_true", help="update the section in docs/PERFORMANCE.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    report = (f"Machine: {machine()}; commit {commit()}.\n"
              f"Command: `python -m benchmarks.seed_batching --seeds {' '.join(map(str, args.seeds))} --iterations "
              f"{args.iterations} --write` (networks and batch size of `{CONFIG}`).\n\n"
              + table(measure(args.seeds, args.iterations)))
    publish("seed_batching", report, args.write)


if __name__ == "__main__":
    main()
