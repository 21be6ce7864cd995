"""Training-step overhead: lit-gan's full training step against a hand-written PyTorch loop.

    python -m benchmarks.train_step            # all cases; --write updates docs/PERFORMANCE.md

Ours is ``train.py`` as shipped: the config's networks, data, optimisers and Trainer, with W&B
(offline) logging, the progress bar, the stability monitor, evaluation and checkpoint cadence. The
plain loop does the same math (same initial weights, same data stream, same batch size, same Adam
settings) with nothing else. Both run in this process, and each generator iteration is
timed (``n_critic`` discriminator steps and one generator step): after each of ours, one plain
iteration, so that the two alternate and a noisy machine slows both alike. The target compares medians, so
the periodic work (logging every ``log_every_n_steps``, evaluations) does not hide per-step
overhead; the mean ratio, with everything, is reported beside it.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import tempfile
import time
from typing import NamedTuple, Optional

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback

from benchmarks.common import command, commit, machine, median_ms, publish
from lit_gan.cli import LitGANCLI
from lit_gan.objectives import NonSaturatingGAN
from lit_gan.objectives.base import step_without_hooks


class Case(NamedTuple):
    config: str
    extra: list[str]  # CLI arguments after the config
    iterations: int  # generator iterations per timed run
    target: Optional[float]  # target ratio of medians
    bare: bool = False  # a Trainer with nothing attached instead of the config's


CASES = {
    "non-saturating GAN, grid, MLP": Case("configs/grid/nonsaturating.yaml", [], 1500, 1.10),
    "WGAN-GP, grid, MLP": Case("configs/grid/wgan_gp.yaml", [], 400, 1.10),
    # Opt-in: PyTorch's fused Adam, which rounds differently from the plain loop's default Adam.
    "non-saturating GAN, grid, MLP, `fused_adam: true`": Case(
        "configs/grid/nonsaturating.yaml", ["--model.init_args.fused_adam=true"], 1500, 1.10),
    # Not lit-gan's step: the plain loop's math as the module's training_step, inside Lightning's loop
    # with the same callbacks and logger. What is left over plain is Lightning's own per-batch cost.
    "Lightning floor: the plain math as training_step, grid, MLP": Case(
        "configs/grid/nonsaturating.yaml", ["--model.class_path=benchmarks.train_step.PlainMathModule"], 1500, None),
    # The same, in a Trainer with nothing attached (no logger, callbacks, progress bar or checkpoints):
    # Lightning's loop alone. The row above minus this one is what the shipped callbacks cost per batch.
    "Lightning alone: the same in a bare Trainer, grid, MLP": Case(
        "configs/grid/nonsaturating.yaml", ["--model.class_path=benchmarks.train_step.PlainMathModule"], 1500, None,
        bare=True),
    "DCGAN 32 px, random tensors": Case("configs/cifar10/dcgan.yaml", [
        '--data={"class_path": "benchmarks.common.RandomImages", "init_args": {"batch_size": 64, "num_workers": 0}}',
        # 110: past two of the config's 50-iteration logging and monitor checks, so the mean ratio holds them
        "--checkpoint.monitor=null"], 110, 1.03),
}


class IterationTimes(Callback):
    """Wall time between the ends of successive generator iterations (the whole loop in between).

    With ``plain`` it also runs one plain-PyTorch iteration right after each of ours and times it
    apart, so the two alternate iteration by iteration: a change in machine speed (a noisy VM, CPU
    frequency) hits both alike. The plain iteration's time is left out of ours.
    """

    def __init__(self, plain: "PlainLoop | None" = None):
        self.plain = plain
        self.seconds: list[float] = []
        self.plain_seconds: list[float] = []
        self.last: float | None = None
        self.step = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if pl_module.generator_step == self.step:
            return
        if pl_module.device.type == "cuda":  # kernels are launched ahead: time them done, not queued
            torch.cuda.synchronize(pl_module.device)
        now = time.perf_counter()
        if self.last is not None:
            self.seconds.append(now - self.last)
        if self.plain is not None:
            self.plain.iteration()
            done = time.perf_counter()
            self.plain_seconds.append(done - now)
            now = done
        self.last, self.step = now, pl_module.generator_step


class PlainMathModule(NonSaturatingGAN):
    """The plain loop's non-saturating iteration (:func:`plain_iteration`) as a training_step, with the
    optimizer steps counted for Lightning as lit-gan's own direct steps count them, and the plain loop's
    ``Adam()`` (not lit-gan's multi-tensor one): what is left over plain is Lightning's."""

    def configure_optimizers(self):
        return [PlainLoop.adam(self.discriminator, self.hparams, "d"), PlainLoop.adam(self.generator, self.hparams, "g")]

    def training_step(self, dataloader_iter) -> None:
        opt_d, opt_g = self.optimizers()
        self.real_batch = plain_iteration(self.generator, self.discriminator, opt_d, opt_g,
                                          lambda: next(dataloader_iter)[0], step=step_without_hooks)
        self.discriminator_step += 1
        self.generator_step += 1


def build(config: str, extra: list[str], iterations: int, directory: str) -> LitGANCLI:
    return LitGANCLI(args=["--config", config, *extra, f"--generator_steps={iterations}",
                           f"--trainer.logger.init_args.save_dir={directory}", f"--trainer.default_root_dir={directory}"])


def gradient_penalty(discriminator, real, fake, weight):
    """Gulrajani et al. (2017), Eq. 3, written out."""
    alpha = torch.rand(real.shape[0], *([1] * (real.dim() - 1)))
    mixed = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(discriminator(mixed).sum(), mixed, create_graph=True)
    return weight * ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()


class PlainLoop:
    """The module's math by hand, on copies of its initial networks and data: Adam, n_critic D steps, one
    G step; nothing else."""

    def __init__(self, cli: LitGANCLI):
        hp = cli.model.hparams
        self.generator = copy.deepcopy(cli.model.generator)
        self.discriminator = copy.deepcopy(cli.model.discriminator)
        self.n_critic, self.penalty_weight = hp.n_critic, getattr(hp, "gradient_penalty_weight", None)
        self.opt_d, self.opt_g = self.adam(self.discriminator, hp, "d"), self.adam(self.generator, hp, "g")
        # The first epoch again and again: it never runs dry, however many iterations --scale asks for.
        self.stream = itertools.cycle(copy.deepcopy(cli.datamodule).train_dataloader())

    @staticmethod
    def adam(network, hp, which: str) -> torch.optim.Adam:
        """Adam as a plain script writes it: the config's settings, torch's default kernel."""
        return torch.optim.Adam(network.parameters(), lr=getattr(hp, f"lr_{which}"), betas=tuple(getattr(hp, f"betas_{which}")))

    def batch(self):
        real = next(self.stream)
        return real[0] if isinstance(real, (list, tuple)) else real

    def iteration(self) -> None:
        plain_iteration(self.generator, self.discriminator, self.opt_d, self.opt_g, self.batch,
                        self.n_critic, self.penalty_weight)


def plain_iteration(generator, discriminator, opt_d, opt_g, next_batch, n_critic=1, penalty_weight=None,
                    step=lambda optimizer: optimizer.step()) -> torch.Tensor:
    """One generator iteration written out: ``n_critic`` D steps, one G step; non-saturating GAN, or
    WGAN-GP when ``penalty_weight`` is given. Returns the last real batch."""
    latent = generator.latent_dim
    for _ in range(n_critic):
        real = next_batch()
        with torch.no_grad():
            fake = generator(torch.randn(real.shape[0], latent))
        real_logits, fake_logits = discriminator(real), discriminator(fake)
        if penalty_weight is not None:
            loss = fake_logits.mean() - real_logits.mean() + gradient_penalty(discriminator, real, fake, penalty_weight)
        else:
            loss = F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
        opt_d.zero_grad(set_to_none=True)
        loss.backward()
        step(opt_d)
    discriminator.requires_grad_(False)
    fake_logits = discriminator(generator(torch.randn(real.shape[0], latent)))
    loss = -fake_logits.mean() if penalty_weight is not None else F.softplus(-fake_logits).mean()
    opt_g.zero_grad(set_to_none=True)
    loss.backward()
    step(opt_g)
    discriminator.requires_grad_(True)
    return real


def measure(name: str, repeats: int, scale: float) -> dict:
    config, extra, iterations, target, bare = CASES[name]
    iterations = max(10, int(iterations * scale))
    ours, plain = [], []
    with tempfile.TemporaryDirectory() as directory:
        for _ in range(repeats):
            cli = build(config, extra, iterations, directory)
            timer = IterationTimes(PlainLoop(cli))
            if bare:
                trainer = pl.Trainer(max_steps=cli.trainer.max_steps, callbacks=[timer], logger=False,
                                     enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                                     accelerator="cpu", devices=1)
                trainer.fit(cli.model, datamodule=cli.datamodule)
            else:
                cli.trainer.callbacks.append(timer)  # last: every other callback's work counts as ours
                cli.trainer.fit(cli.model, datamodule=cli.datamodule)
                cli.trainer.logger.experiment.finish()
            ours += timer.seconds
            plain += timer.plain_seconds[1:]
    result = {"case": name, "config": config, "iterations": iterations * repeats, "target": target,
              "ours_ms": median_ms(ours), "plain_ms": median_ms(plain),
              "ours_mean_ms": 1000 * sum(ours) / len(ours), "plain_mean_ms": 1000 * sum(plain) / len(plain)}
    result["ratio"] = result["ours_ms"] / result["plain_ms"]
    result["mean_ratio"] = result["ours_mean_ms"] / result["plain_mean_ms"]
    return result


def table(results: list[dict]) -> str:
    lines = ["| case | config | generator iterations timed | plain PyTorch (median ms / it) | lit-gan (median ms / it) "
             "| ratio of medians | target | ratio of means (all periodic work) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        target = "—" if r["target"] is None else (
            f"≤ {r['target']:.2f} ({'met' if r['ratio'] <= r['target'] else '**missed**'})")
        lines.append(f"| {r['case']} | `{r['config']}` | {r['iterations']} | {r['plain_ms']:.2f} | {r['ours_ms']:.2f} "
                     f"| **{r['ratio']:.3f}** | {target} | {r['mean_ratio']:.3f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--repeats", type=int, default=2, help="runs per case")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies each case's iterations")
    parser.add_argument("--write", action="store_true", help="update the section in docs/PERFORMANCE.md")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    results = [measure(name, args.repeats, args.scale) for name in args.cases]
    report = (f"Machine: {machine()}; commit {commit()}.\n"
              f"Command: `{command()}`\n\n" + table(results))
    publish("train_step", report, args.write)


if __name__ == "__main__":
    main()
