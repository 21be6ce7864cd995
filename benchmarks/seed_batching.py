"""Toy-study throughput per core: what training several seeds as one stack, or a faster Adam, buys.

    python -m benchmarks.seed_batching            # --write updates docs/PERFORMANCE.md

One torch thread, the math of one generator iteration without Lightning's loop around it:

- Adam: the plain loop's non-saturating iteration (:func:`benchmarks.train_step.plain_iteration`) with
  the networks and batch size of ``configs/grid/nonsaturating.yaml``, with ``torch.optim.Adam()`` as a
  plain script builds it (a per-tensor loop on a CPU), with :class:`lit_gan.optim.ContiguousAdam`,
  lit-gan's default (the same numbers in one pass over all of a network's parameters), and with
  ``Adam(fused=True)``, PyTorch's single-kernel Adam (``model.fused_adam: true``).
- Seed stacking: lit-gan's own D and G updates (``GANModule.update_discriminator`` /
  ``update_generator``) of one seed, against K seeds' updates as one
  :class:`lit_gan.stacking.SeedStack` (each seed's numbers its own to the bit: tests/test_stacking.py),
  for ``configs/grid/nonsaturating.yaml`` (3 x 128 MLPs, batch 100) and ``configs/grid/r1_sharp.yaml``
  (a 4 x 400 batch-norm generator, R1, batch 256).

It reports seed-iterations per second, the variants timed in turns (short blocks). A study's run adds
Lightning's loop, logging, monitor, evaluation and checkpoints per seed (``benchmarks.study_throughput``
times whole studies).
"""

from __future__ import annotations

import argparse
import copy
import functools
import statistics
import tempfile
import time

import torch

from benchmarks.common import command, commit, machine, publish
from benchmarks.train_step import build, plain_iteration
from lit_gan.data.toy import sample_mixture
from lit_gan.optim import ContiguousAdam
from lit_gan.stacking import SeedStack

ADAM_CONFIG = "configs/grid/nonsaturating.yaml"
STACK_CONFIGS = ["configs/grid/nonsaturating.yaml", "configs/grid/r1_sharp.yaml"]


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


def seeds_of(config: str, seeds: int, directory: str) -> list:
    """``seeds`` modules of ``config`` as train.py builds them (seeds 0, 1, ...), with their optimizers."""
    built = []
    for seed in range(seeds):
        cli = build(config, [f"--seed_everything={seed}"], 1000, directory)
        cli.model.trainer = cli.trainer  # the learning-rate schedule reads the run's length
        cli.model.direct_steps = True  # no Trainer running: plain backward() and optimizer steps
        optimizers = cli.model.configure_optimizers()
        built.append((cli.model, tuple(optimizers[0] if isinstance(optimizers, tuple) else optimizers), cli.datamodule))
    return built


def adam_variants(directory: str) -> dict:
    cli = build(ADAM_CONFIG, [], 1, directory)
    hp, data = cli.model.hparams, cli.datamodule
    stream = torch.Generator().manual_seed(0)

    def one_seed(kind: str):
        g, d = copy.deepcopy(cli.model.generator), copy.deepcopy(cli.model.discriminator)
        opt_d, opt_g = adam(d.parameters(), hp, "d", kind), adam(g.parameters(), hp, "g", kind)
        return lambda: plain_iteration(g, d, opt_d, opt_g,
                                       lambda: sample_mixture(data.centers, data.std, data.batch_size, stream))

    return {(f"plain iteration, {kind}", 1): one_seed(kind) for kind in ADAMS}


def stack_variants(config: str, seed_counts: list[int], directory: str) -> dict:
    from lightning.pytorch.core.optimizer import LightningOptimizer

    stream = torch.Generator().manual_seed(0)
    (module, (opt_d, opt_g), data), = seeds_of(config, 1, directory)
    opt_d, opt_g = LightningOptimizer(opt_d), LightningOptimizer(opt_g)

    def real(*shape):
        return sample_mixture(data.centers, data.std, torch.Size(shape).numel(), stream).view(*shape, -1)

    def alone():
        batch = real(data.batch_size)
        module.update_discriminator(batch, opt_d, measure=False)
        module.update_generator(batch, opt_g, measure=False)

    variants = {(f"`{config}`: one seed, the module's own updates", 1): alone}
    for seeds in seed_counts:
        built = seeds_of(config, seeds, directory)
        stack = SeedStack([m for m, _, _ in built], [o for _, o, _ in built])
        generators = [torch.Generator().manual_seed(k) for k in range(seeds)]

        def together(stack=stack, generators=generators, seeds=seeds):
            stack.update_discriminator(real(seeds, data.batch_size), generators, measure=False)
            stack.update_generator(data.batch_size, generators, measure=False)

        variants[f"`{config}`: {seeds} seeds as one `SeedStack`", seeds] = together
    return variants


def measure(seed_counts: list[int], iterations: int) -> list[list[dict]]:
    """One table per group of variants timed together: the Adams, then each config's stacks."""
    tables = []
    with tempfile.TemporaryDirectory() as directory:
        groups = [adam_variants(directory)] + [stack_variants(c, seed_counts, directory) for c in STACK_CONFIGS]
        for variants in groups:
            seconds = seconds_per_iteration(variants, iterations)
            tables.append([{"how": how, "seeds": seeds, "seconds": seconds[how, seeds]} for how, seeds in variants])
    return tables


def table(rows: list[dict], baseline: str) -> str:
    base = rows[0]["seeds"] / rows[0]["seconds"]
    lines = [f"| one process, one thread | ms per iteration | seed-iterations / s | vs {baseline} |",
             "|---|---|---|---|"]
    for r in rows:
        rate = r["seeds"] / r["seconds"]
        lines.append(f"| {r['how']} | {1000 * r['seconds']:.2f} | {rate:.0f} | {rate / base:.2f}× |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[2, 4, 8], help="seed counts to stack")
    parser.add_argument("--iterations", type=int, default=1000, help="timed one-seed iterations per variant")
    parser.add_argument("--write", action="store_true", help="update the section in docs/PERFORMANCE.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    adams, *stacks = measure(args.seeds, args.iterations)
    report = (f"Machine: {machine()}; commit {commit()}.\n"
              f"Command: `{command()}`.\n\n" + table(adams, "`Adam()`")
              + "".join("\n\n" + table(rows, "one seed") for rows in stacks))
    publish("seed_batching", report, args.write)


if __name__ == "__main__":
    main()
