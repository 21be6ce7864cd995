"""Toy-study throughput: how a study's runs start, and how many run at once.

    python -m benchmarks.study_throughput --runs 4 --generator_steps 1500    # --write updates docs/PERFORMANCE.md

First, a run's fixed cost: a one-iteration run of ``configs/grid/nonsaturating.yaml`` (set-up, W&B,
final evaluation, checkpoint), started as ``python train.py`` in a fresh interpreter and as the study
runner starts it, forked from a server that imported lit-gan once; the two alternate ``--repeats`` times.
Then whole studies: ``--runs`` seeds through ``python -m lit_gan.study``, with ``--jobs 1`` (each
run gets every core as torch threads), with ``--jobs`` equal to the number of cores (one thread per
run), and with seed groups (``--stack``: the seeds' updates as one stacked computation per group, one
group per core, and all seeds in one group), twice each in mirrored order (A B C D D C B A), in runs
per hour. Tiny MLPs cannot keep several threads busy, so parallel processes should win; the study
runner's defaults follow this measurement.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import ROOT, command, commit, machine, publish
from lit_gan.study import run_context, train_process

ENV = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}


def startup_seconds(repeats: int) -> tuple[list[float], list[float]]:
    """Seconds of a one-iteration run started fresh and forked from the preloaded server, alternating."""
    context = run_context()
    fresh, forked = [], []
    with tempfile.TemporaryDirectory() as directory:
        argv = ["--config", "configs/grid/nonsaturating.yaml", "--generator_steps=1",
                "--trainer.enable_progress_bar=false", f"--trainer.logger.init_args.save_dir={directory}"]

        def fork() -> float:
            log = Path(directory) / "run.log"
            start = time.perf_counter()
            exitcode = train_process(context, argv, log, 1, ENV)
            assert exitcode == 0, log.read_text()[-2000:]
            return time.perf_counter() - start

        fork()  # starts the server (it imports lit-gan once per study)
        for _ in range(repeats):
            start = time.perf_counter()
            subprocess.run([sys.executable, "train.py", *argv], cwd=ROOT, check=True, capture_output=True,
                           env={**ENV, "OMP_NUM_THREADS": "1"})
            fresh.append(time.perf_counter() - start)
            forked.append(fork())
    return fresh, forked


def study_seconds(jobs: int, stack: int, runs: int, generator_steps: int) -> float:
    with tempfile.TemporaryDirectory() as out:
        study = [sys.executable, "-m", "lit_gan.study", "--configs", "configs/grid/nonsaturating.yaml",
                   "--seeds", *map(str, range(runs)), "--generator_steps", str(generator_steps),
                   "--jobs", str(jobs), "--stack", str(stack), "--out", out, "--runs_dir", f"{out}/runs",
                   "--name", f"throughput-{jobs}-{stack}"]
        start = time.perf_counter()
        finished = subprocess.run(study, cwd=ROOT, capture_output=True, text=True, env=ENV)
        if finished.returncode:  # say why, rather than CalledProcessError without the study's output
            raise SystemExit(f"the study {' '.join(study[1:])} failed (exit {finished.returncode}):\n"
                             f"{finished.stderr[-3000:]}")
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--generator_steps", type=int, default=1500)
    parser.add_argument("--repeats", type=int, default=5, help="one-iteration runs timed per way of starting")
    parser.add_argument("--settings", nargs="+", metavar="JOBSxSTACK",
                        help="study runner settings to time, e.g. 2x1 2x4 (default: 1x1, one job per core, one seed "
                             "group per core, all seeds in one group)")
    parser.add_argument("--write", action="store_true", help="update the section in docs/PERFORMANCE.md")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    bad = [s for s in args.settings or () if not re.fullmatch(r"[1-9]\d*x[1-9]\d*", s)]
    if bad:  # before the start-up timing, not after it
        parser.error(f"--settings {' '.join(bad)} is not valid: expected JOBSxSTACK with both >= 1, e.g. 2x4")
    # (jobs, stack): one run at a time; one per core; a seed group per core; all seeds in one group.
    settings = [tuple(map(int, s.split("x"))) for s in args.settings] if args.settings else list(dict.fromkeys(
        [(1, 1), (cores, 1), (cores, -(-args.runs // cores)), (1, args.runs)]))
    fresh, forked = startup_seconds(args.repeats)
    # In mirrored order, each setting's time the mean of its two studies, so a drifting VM slows all alike.
    study_times = {setting: [] for setting in settings}
    for jobs, stack in settings + settings[::-1]:
        study_times[jobs, stack].append(study_seconds(jobs, stack, args.runs, args.generator_steps))
    rows = [(setting, statistics.mean(times)) for setting, times in study_times.items()]
    lines = [f"Machine: {machine()}; commit {commit()}.",
             f"Command: `{command()}` ({args.runs} seeds of "
             "`configs/grid/nonsaturating.yaml`).", "",
             f"| a one-iteration run, one thread | median of {args.repeats} (s) | min (s) | max (s) |",
             "|---|---|---|---|"]
    lines += [f"| {how} | {statistics.median(seconds):.1f} | {min(seconds):.1f} | {max(seconds):.1f} |"
              for how, seconds in (("`python train.py` (a fresh interpreter)", fresh),
                                   ("forked from the study's preloaded server", forked))]
    lines += ["", f"Each run of a study starts {statistics.median(fresh) - statistics.median(forked):.1f} s sooner.",
              "", "| study runner | torch threads per run | wall time (s, mean of 2) | runs per hour | vs the first |",
              "|---|---|---|---|---|"]
    for (jobs, stack), seconds in rows:
        threads = 1 if stack > 1 else max(1, cores // jobs)  # group members run one thread each
        lines.append(f"| `--jobs {jobs} --stack {stack}` | {threads} | {seconds:.0f} | {3600 * args.runs / seconds:.0f} "
                     f"| {rows[0][1] / seconds:.2f}× |")
    publish("study_throughput", "\n".join(lines), args.write)


if __name__ == "__main__":
    main()
