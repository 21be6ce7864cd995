"""Toy-study throughput: the same runs one after another with all cores each, or in parallel processes.

    python -m benchmarks.study_throughput --runs 4 --generator_steps 1500    # --write updates docs/PERFORMANCE.md

Trains ``--runs`` seeds of ``configs/grid/nonsaturating.yaml`` through ``python -m lit_gan.study``,
once with ``--jobs 1`` (each run gets every core as torch threads) and once with ``--jobs`` equal to
the number of cores (one thread per run), and reports runs per hour. Tiny MLPs cannot keep several
threads busy, so parallel processes should win; the study runner's default follows this measurement.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

from benchmarks.common import ROOT, commit, machine, publish


def study_seconds(jobs: int, runs: int, generator_steps: int) -> float:
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "lit_gan.study", "--configs", "configs/grid/nonsaturating.yaml",
                   "--seeds", *map(str, range(runs)), "--generator_steps", str(generator_steps),
                   "--jobs", str(jobs), "--out", out, "--name", f"throughput-{jobs}"]
        start = time.perf_counter()
        subprocess.run(command, cwd=ROOT, check=True, capture_output=True,
                       env={**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"})
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--generator_steps", type=int, default=1500)
    parser.add_argument("--write", action="store_true", help="update the section in docs/PERFORMANCE.md")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    rows = [(jobs, study_seconds(jobs, args.runs, args.generator_steps)) for jobs in (1, cores)]
    lines = [f"Machine: {machine()}; commit {commit()}.",
             f"Command: `python -m benchmarks.study_throughput --runs {args.runs} --generator_steps "
             f"{args.generator_steps} --write` ({args.runs} seeds of `configs/grid/nonsaturating.yaml`).", "",
             "| study runner | torch threads per run | wall time (s) | runs per hour |", "|---|---|---|---|"]
    lines += [f"| `--jobs {jobs}` | {max(1, cores // jobs)} | {seconds:.0f} | {3600 * args.runs / seconds:.0f} |"
              for jobs, seconds in rows]
    lines += ["", f"Parallel processes: {rows[0][1] / rows[1][1]:.2f}× the throughput of one run at a time."]
    publish("study_throughput", "\n".join(lines), args.write)


if __name__ == "__main__":
    main()
