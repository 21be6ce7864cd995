"""Where a 2D-mixture run's samples that are not high quality lie: between modes, or in modes too wide.

    python scripts/analysis/mode_spread.py outputs/.../RUN_ID [--samples 20000] [--checkpoint last.ckpt]

Rebuilds the run from its saved config.yaml, loads a checkpoint and draws samples from G (eval mode):
prints the share of samples within r of their nearest mode for growing r (r = 3 sigma is PacGAN's
high-quality radius), then per mode the samples within 10 sigma, their mean offset and per-axis std
(the data's std is sigma) and the high-quality share among them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from lit_gan.cli import LitGANCLI


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--checkpoint", default="last.ckpt", help="a file in RUN_DIR/checkpoints")
    args = parser.parse_args()
    cli = LitGANCLI(args=["--config", str(args.run_dir / "config.yaml"), "--trainer.logger=false",
                          "--trainer.enable_progress_bar=false", "--trainer.max_steps=-1"])
    checkpoint = torch.load(args.run_dir / "checkpoints" / args.checkpoint, map_location="cpu", weights_only=False)
    cli.model.load_state_dict(checkpoint["state_dict"])
    data = cli.datamodule
    z = torch.randn(args.samples, cli.model.generator.latent_dim, generator=torch.Generator().manual_seed(1))
    samples = cli.model.generate(z)
    distance, nearest = torch.cdist(samples, data.centers).min(dim=1)
    sigma = data.std
    print(f"{args.samples} samples of generator iteration {checkpoint['gan_clock']['generator_step']}; sigma = {sigma}")
    print("within r of the nearest mode: " + ", ".join(
        f"{r:g} sigma {100 * (distance < r * sigma).float().mean():.1f}%" for r in (1, 2, 3, 5, 10, 20)))
    print("mode | samples within 10 sigma | mean offset / sigma | std / sigma (x, y) | high quality among them")
    for mode in range(len(data.centers)):
        near = (nearest == mode) & (distance < 10 * sigma)
        if not near.any():
            print(f"{mode:4d} | 0")
            continue
        offset = samples[near] - data.centers[mode]
        mean, std = (offset.mean(0) / sigma).tolist(), (offset.std(0) / sigma).tolist()
        quality = 100 * (distance[near] < 3 * sigma).float().mean()
        print(f"{mode:4d} | {int(near.sum()):5d} | ({mean[0]:+.2f}, {mean[1]:+.2f}) | ({std[0]:.2f}, {std[1]:.2f}) | {quality:.1f}%")


if __name__ == "__main__":
    main()
