"""GPU training throughput: images/s of lit-gan's full training step for DCGAN-32 and SNGAN ResNet-32.

    python -m benchmarks.gpu_throughput                  # ~3 minutes on one GPU (estimated); --write: PERFORMANCE.md

For each network pair (``configs/cifar10/dcgan.yaml``, ``configs/cifar10/sngan_resnet.yaml``) and
batch size (64, 256) it trains through ``train.py``'s CLI on random tensors and reports real images
per second through D (batch x D steps / s) in four settings: fp32,
bf16-mixed (``--trainer.precision=bf16-mixed``), channels_last (networks and batches), and
``torch.compile`` of both networks. The first ``--warmup`` generator iterations (compilation,
cuDNN autotuning) are not timed. ``--device cpu`` runs the same code on the CPU (a smoke test).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import command, commit, machine, publish
from benchmarks.train_step import IterationTimes
from lit_gan.cli import LitGANCLI

PAIRS = {"DCGAN-32": "configs/cifar10/dcgan.yaml", "ResNet-32 (SNGAN)": "configs/cifar10/sngan_resnet.yaml"}
SETTINGS = ("fp32", "bf16-mixed", "channels_last", "torch.compile")


class ChannelsLast(torch.nn.Module):
    """Wraps a network so that its input (and so its activations) are in channels_last layout."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net.to(memory_format=torch.channels_last)

    def forward(self, x):
        return self.net(x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x)

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.net, name)


# W&B offline, as every run logs; none where wandb is not installed (a bare GPU machine).
WANDB = importlib.util.find_spec("wandb") is not None


MOST_CRITIC_STEPS = 5  # SNGAN's n_critic: the data holds every batch a run draws, so no epoch ends while timed


def throughput(config: str, batch: int, setting: str, iterations: int, warmup: int, device: str) -> float:
    with tempfile.TemporaryDirectory() as directory:
        size = batch * MOST_CRITIC_STEPS * (warmup + iterations + 2)
        args = ["--config", config, f"--generator_steps={warmup + iterations}",
                '--data={"class_path": "benchmarks.common.RandomImages", "init_args": {"batch_size": %d, "size": %d, '
                '"num_workers": 0}}' % (batch, size),
                "--checkpoint.monitor=null", "--trainer.enable_progress_bar=false",
                f"--trainer.accelerator={'gpu' if device == 'cuda' else 'cpu'}", "--trainer.devices=1",
                "--trainer.precision=" + ("bf16-mixed" if setting == "bf16-mixed" else "32-true"),
                f"--trainer.logger.init_args.save_dir={directory}" if WANDB else "--trainer.logger=false",
                f"--trainer.default_root_dir={directory}",
                "--evaluation.at_start=false", f"--evaluation.every_n_generator_steps={10 * (warmup + iterations)}",
                "--evaluation.num_samples=64"]
        cli = LitGANCLI(args=args)
        model = cli.model
        if setting == "channels_last":
            model.generator, model.discriminator = ChannelsLast(model.generator), ChannelsLast(model.discriminator)
        if setting == "torch.compile":
            torch._dynamo.reset()  # no graphs of earlier cases: both discriminators share FeatureDiscriminator.forward
            # Static shapes: a graph per batch size, as a fixed-size training loop uses them (not dynamic ones).
            model.generator, model.discriminator = (torch.compile(model.generator, dynamic=False),
                                                    torch.compile(model.discriminator, dynamic=False))
        timer = IterationTimes()
        cli.trainer.callbacks.append(timer)
        cli.trainer.fit(model, datamodule=cli.datamodule)
        if cli.trainer.logger is not None:
            cli.trainer.logger.experiment.finish()
        # timer.seconds[i] is iteration i + 2 (the first has no start mark): skip iterations 1..warmup.
        seconds = statistics.median(timer.seconds[warmup - 1:])
    return batch * model.n_critic / seconds


def cases(settings: list[str], batches: list[int]):
    """(setting, networks, config, batch), the settings in turn and torch.compile last (its compilations are
    the slowest), so that a run stopped by its deadline has the other settings whole."""
    ordered = sorted(settings, key=lambda s: s == "torch.compile")
    return [(setting, name, config, batch) for setting in ordered for name, config in PAIRS.items() for batch in batches]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=30, help="timed generator iterations per setting")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--settings", nargs="+", choices=SETTINGS, default=list(SETTINGS))
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--deadline", type=float, default=270.0,
                        help="seconds after which no further case starts (the rest are reported as skipped)")
    parser.add_argument("--json", type=Path, help="also write the results so far to this file after every case")
    parser.add_argument("--write", action="store_true", help="update the section in docs/PERFORMANCE.md")
    args = parser.parse_args()
    if args.warmup < 1 or args.iterations < 1:
        parser.error(f"--warmup={args.warmup} --iterations={args.iterations}: both must be >= 1 (the first "
                     "iteration is never timed: there is nothing before it to time from)")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU here: run on a GPU machine, or pass --device cpu for a smoke test")
    start = time.perf_counter()
    results: dict[tuple[str, int], dict[str, float | str]] = {}
    for setting, name, config, batch in cases(args.settings, args.batches):
        cell = results.setdefault((name, batch), {})
        if time.perf_counter() - start > args.deadline:
            cell[setting] = "skipped (deadline)"
            continue
        began = time.perf_counter()
        try:  # one case failing (out of memory, a compiler error) leaves the others' numbers
            cell[setting] = throughput(config, batch, setting, args.iterations, args.warmup, args.device)
        except Exception as error:
            cell[setting] = f"{type(error).__name__}: {str(error).splitlines()[0][:100] if str(error) else ''}"
        if args.device == "cuda":
            torch.cuda.empty_cache()
        print(f"{setting}, {name}, batch {batch}: {cell[setting]} ({time.perf_counter() - began:.0f} s)", flush=True)
        if args.json is not None:
            args.json.write_text(json.dumps([{"networks": n, "batch": b, **c} for (n, b), c in results.items()],
                                            indent=1))
    logged = "W&B offline" if WANDB else "no logger (no wandb)"
    lines = [f"Machine: {machine()}; commit {commit()}; {time.perf_counter() - start:.0f} s in all; {logged}.",
             f"Command: `{command()}` (images/s through D: batch x n_critic per generator iteration, median; "
             "higher is better; fp32 is float32 weights with PyTorch's default TF32 cuDNN convolutions).", "",
             "| networks | batch | " + " | ".join(args.settings) + " |",
             "|---|---|" + "---|" * len(args.settings)]
    for (name, batch), speeds in results.items():
        numbers = [v for v in speeds.values() if isinstance(v, float)]
        best = max(numbers, default=None)
        lines.append(f"| {name} | {batch} | " + " | ".join(
            (f"**{v:,.0f}**" if v == best else f"{v:,.0f}") if isinstance(v, float) else v
            for v in (speeds.get(s, "") for s in args.settings)) + " |")
    publish("gpu_throughput", "\n".join(lines), args.write)


if __name__ == "__main__":
    main()
