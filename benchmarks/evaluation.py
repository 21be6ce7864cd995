"""Evaluation cost: lit-gan's FID/KID/IS/precision-recall against torch-fidelity's own call, cached and not.

    python -m benchmarks.evaluation --samples 200 --real 200     # --write updates docs/PERFORMANCE.md

Ours is the path the ``Evaluation`` callback takes: ``FidelityMetrics.update`` on generated images in
[-1, 1], then ``compute()``. Theirs is ``torch_fidelity.calculate_metrics`` called directly on the
same images (already uint8) with the same extractor, weights, feature layer, batch size and metrics.
Each is timed with the real images' features not cached (a run's first evaluation) and cached
(every later one). Without ``--weights`` a randomly initialised Inception is built: the compute is
that of the real weights (same network, same resizing); only the scores differ.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import Dataset

from benchmarks.common import command, commit, machine, publish


class Images(Dataset):
    """uint8 RGB image tensors, one per item, as torch-fidelity reads them."""

    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=200, help="generated images")
    parser.add_argument("--real", type=int, default=200, help="real images")
    parser.add_argument("--weights", type=str, default=None, help="Inception weights file (default: random)")
    parser.add_argument("--repeats", type=int, default=3, help="paired timings per row; the ratio is their median")
    parser.add_argument("--write", action="store_true", help="update the section in docs/PERFORMANCE.md")
    args = parser.parse_args()
    if min(args.samples, args.real, args.repeats) < 1:
        parser.error(f"--samples={args.samples} --real={args.real} --repeats={args.repeats}: each must be >= 1")
    with tempfile.TemporaryDirectory() as scratch:
        os.environ["LIT_GAN_CACHE"] = scratch
        import torch_fidelity

        from lit_gan.metrics.fidelity import EXTRACTOR, FidelityMetrics, random_inception_weights, to_uint8_rgb

        weights = args.weights or str(random_inception_weights(Path(scratch) / "random_inception.pth"))
        generator = torch.Generator().manual_seed(0)
        real = list(torch.rand(args.real, 3, 32, 32, generator=generator) * 2 - 1)
        fake = torch.rand(args.samples, 3, 32, 32, generator=generator) * 2 - 1
        real_uint8, fake_uint8 = to_uint8_rgb(torch.stack(real)), to_uint8_rgb(fake)

        def ours(cache_name: str) -> tuple[float, dict]:
            metric = FidelityMetrics(real, cache_name=cache_name, weights_path=weights)
            start = time.perf_counter()
            metric.update(fake)
            scores = metric.compute()
            return time.perf_counter() - start, {k: v.item() for k, v in scores.items()}

        def theirs(cache_name: str) -> tuple[float, dict]:
            start = time.perf_counter()
            scores = torch_fidelity.calculate_metrics(
                input1=Images(fake_uint8), input2=Images(real_uint8), cuda=False, batch_size=64,
                feature_extractor=EXTRACTOR, feature_extractor_weights_path=weights, kid_subset_size=min(
                    1000, args.samples, args.real), fid=True, kid=True, isc=True, prc=True,
                cache_root=os.path.join(scratch, "theirs"), cache=True, input2_cache_name=cache_name, verbose=False)
            return time.perf_counter() - start, scores

        # One untimed call first: the first use of the extractor pays one-time costs (reading the weights
        # file, starting thread pools) that would otherwise land on whichever is timed first.
        theirs("warm-up")
        times = {key: [] for key in ("ours_miss", "theirs_miss", "ours_hit", "theirs_hit")}
        for repeat in range(args.repeats):
            # Each repeat a new cache (a miss, then a hit), the order turned round every other time (ABBA, then
            # BAAB): a drift in machine speed hits both alike, and neither is always first.
            calls = [("ours", ours), ("theirs", theirs)][:: 1 if repeat % 2 == 0 else -1]
            for name, call in calls:
                seconds, scores = call(f"bench-{name}-{repeat}")
                times[f"{name}_miss"].append(seconds)
                if name == "ours":
                    ours_scores = scores
                else:
                    their_scores = scores
            for name, call in reversed(calls):
                times[f"{name}_hit"].append(call(f"bench-{name}-{repeat}")[0])
    same = abs(ours_scores["fid"] - their_scores["frechet_inception_distance"]) <= 1e-6 * max(
        1.0, abs(their_scores["frechet_inception_distance"]))
    ours_miss, theirs_miss = statistics.median(times["ours_miss"]), statistics.median(times["theirs_miss"])
    ours_hit, theirs_hit = statistics.median(times["ours_hit"]), statistics.median(times["theirs_hit"])
    ratios = {kind: sorted(o / t for o, t in zip(times[f"ours_{kind}"], times[f"theirs_{kind}"]))
              for kind in ("miss", "hit")}
    rows = [("real features not cached (first evaluation)", ours_miss, theirs_miss, ratios["miss"]),
            ("real features cached (every later one)", ours_hit, theirs_hit, ratios["hit"])]
    lines = [f"Machine: {machine()}; commit {commit()}.",
             f"Command: `{command()}` "
             f"({args.samples} generated vs {args.real} real 32 px images; FID, KID, IS and precision/recall; "
             f"{'given' if args.weights else 'random'} Inception weights).", "",
             f"Medians of {args.repeats} paired timings; the ratio is the median of the {args.repeats} pairs' ratios "
             "(their range beside it).", "",
             "| evaluation | torch-fidelity `calculate_metrics` (s) | lit-gan `FidelityMetrics` (s) | ratio | range "
             "| target |",
             "|---|---|---|---|---|---|"]
    for label, o, t, pair_ratios in rows:
        ratio = statistics.median(pair_ratios)
        lines.append(f"| {label} | {t:.1f} | {o:.1f} | **{ratio:.3f}** | {pair_ratios[0]:.3f}-{pair_ratios[-1]:.3f} | "
                     f"≤ 1.05 ({'met' if ratio <= 1.05 else '**missed**'}) |")
    lines += ["", f"Cache hit vs miss: lit-gan {ours_hit:.1f} s vs {ours_miss:.1f} s "
              f"({ours_miss / ours_hit:.2f}× faster once the real features are cached). "
              f"Same FID from both: {'yes' if same else 'NO'} "
              f"({ours_scores['fid']:.6g} vs {their_scores['frechet_inception_distance']:.6g})."]
    publish("evaluation", "\n".join(lines), args.write)


if __name__ == "__main__":
    main()
