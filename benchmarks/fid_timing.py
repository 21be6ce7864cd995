"""Time one FID/KID/IS/PR evaluation of N generated images, with the real-set features cached and not.

    python benchmarks/fid_timing.py --samples 2000 --real 2000

Uses torch-fidelity's Inception on random 32 px images. Without --weights it
builds a randomly initialised weights file: the compute is the same as with
the real weights (same network, same resizing), only the scores differ.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--real", type=int, default=2000)
    parser.add_argument("--weights", type=str, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        os.environ["LIT_GAN_CACHE"] = scratch
        from lit_gan.metrics.fidelity import FidelityMetrics, random_inception_weights

        weights = args.weights or str(random_inception_weights(Path(scratch) / "random_inception.pth"))
        generator = torch.Generator().manual_seed(0)
        real = list(torch.rand(args.real, 3, 32, 32, generator=generator) * 2 - 1)
        timings = {}
        for label in ("real features not cached (first evaluation)", "real features cached (every later one)"):
            metric = FidelityMetrics(real, cache_name="timing-32px", weights_path=weights)
            metric.update(torch.rand(args.samples, 3, 32, 32, generator=generator) * 2 - 1)
            start = time.perf_counter()
            scores = metric.compute()
            timings[label] = time.perf_counter() - start
        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU threads, "
              f"torch {torch.__version__}, CUDA {'yes' if torch.cuda.is_available() else 'no'}")
        print(f"{args.samples} generated vs {args.real} real images, 32 px, FID+KID+IS+PR (torch-fidelity)")
        for label, seconds in timings.items():
            print(f"  {label}: {seconds:.1f} s")
        print(f"  scores (random weights, meaningless): { {k: round(v.item(), 3) for k, v in scores.items()} }")


if __name__ == "__main__":
    main()
