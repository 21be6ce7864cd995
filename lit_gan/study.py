"""Train many configs (x seeds) through ``train.py`` and tabulate their final evaluation.

    python -m lit_gan.study --configs configs/ring/*.yaml configs/grid/*.yaml \
        --generator_steps 5000 --seeds 0 --jobs 2 --out docs/results/objectives

Each run is a separate ``train.py`` process (its own W&B run under
``--runs_dir``); ``--jobs`` runs that many at once with one torch thread each.
Writes ``runs.csv`` (one row per run), ``table.md`` (one row per config) and
``samples.png`` (the final samples of every run) into ``--out``.

Resumable: ``runs.csv`` is rewritten as each run finishes, and a rerun skips
every cell (config, seed, length) already there whose config files (the YAML
and the fragments it includes) have not changed since.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

FIXED = ("config", "seed", "generator_steps", "fingerprint", "seconds", "run_dir", "alarms")
TEXT = ("config", "fingerprint", "run_dir", "alarms")


def config_fingerprint(config: Path) -> str:
    """SHA-256 (12 hex digits) of a config's content, with the YAML fragments it includes by relative path.

    Parsed content, not text: editing a comment does not invalidate finished runs.
    """

    def resolve(value, directory: Path):
        if isinstance(value, dict):
            return {k: resolve(v, directory) for k, v in value.items()}
        if isinstance(value, list):
            return [resolve(v, directory) for v in value]
        if isinstance(value, str) and value.endswith((".yaml", ".yml")) and (directory / value).is_file():
            return load(directory / value)
        return value

    def load(path: Path):
        return resolve(yaml.safe_load(path.read_text()), path.parent)

    return hashlib.sha256(json.dumps(load(config), sort_keys=True).encode()).hexdigest()[:12]


def cell_key(row: dict) -> tuple:
    return (str(row["config"]), int(row["seed"]), int(row["generator_steps"]), row["fingerprint"])


def read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [{k: (v if k in TEXT else float(v)) for k, v in row.items() if v != ""}
                for row in csv.DictReader(f)]


def write_csv(rows: list[dict], path: Path) -> None:
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in rows for k in r)), restval="")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(temporary, path)


def run_one(config: Path, seed: int, generator_steps: int, runs_dir: Path, threads: int) -> dict:
    command = [
        sys.executable, "train.py", "--config", str(config),
        f"--generator_steps={generator_steps}", f"--seed_everything={seed}", f"--data.init_args.seed={seed}",
        "--trainer.enable_progress_bar=false", f"--trainer.logger.init_args.save_dir={runs_dir}",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "WANDB_SILENT": "true"}
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    run_dir = Path(re.search(r"^Run directory: (\S+)", result.stdout, re.M).group(1))
    final = json.loads((run_dir / "evaluation.json").read_text())[-1]
    alarms_file = run_dir / "alarms.json"
    alarms = json.loads(alarms_file.read_text()) if alarms_file.is_file() else []
    return {
        "config": str(config), "seed": seed, "generator_steps": final["generator_step"],
        "fingerprint": config_fingerprint(config),
        **{k.removeprefix("eval/"): v for k, v in final.items() if k.startswith("eval/")},
        **{"ema_" + k.removeprefix("eval_ema/"): v for k, v in final.items() if k.startswith("eval_ema/")},
        "alarms": " ".join(sorted({a["alarm"] for a in alarms})),
        "seconds": round(seconds, 1), "run_dir": str(run_dir),
    }


def mean_and_error(values: list[float]) -> str:
    """``mean ± standard error`` (sample standard deviation / sqrt(n)); just the mean for one value."""
    n = len(values)
    mean = sum(values) / n
    if n == 1:
        return f"{mean:.3g}"
    error = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n)
    return f"{mean:.3g} ± {error:.2g}"


def write_outputs(rows: list[dict], out: Path) -> None:
    write_csv(rows, out / "runs.csv")
    scores = [k for k in dict.fromkeys(k for r in rows for k in r) if k not in FIXED]
    lines = ["| config | seeds | generator iterations | " + " | ".join(scores) + " | alarms | seconds per run |",
             "|---|---|---|" + "---|" * len(scores) + "---|---|"]
    for config in dict.fromkeys(r["config"] for r in rows):
        group = [r for r in rows if r["config"] == config]
        cells = " | ".join(mean_and_error([r[k] for r in group]) if all(k in r for r in group) else "" for k in scores)
        alarms = sum(bool(r.get("alarms")) for r in group)
        seconds = sum(r["seconds"] for r in group) / len(group)
        lines.append(f"| `{config}` | {len(group)} | {group[0]['generator_steps']:.0f} | {cells} | "
                     f"{alarms}/{len(group)} | {seconds:.0f} |")
    (out / "table.md").write_text("\n".join(lines) + "\n")
    plot_final_samples(rows, out / "samples.png")


def plot_final_samples(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(len(rows), 6)
    lines = -(-len(rows) // columns)
    fig, axes = plt.subplots(lines, columns, figsize=(3 * columns, 3 * lines), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, row in zip(axes.flat, rows):
        pictures = sorted((Path(row["run_dir"]) / "samples").glob("*.png"))
        if pictures:
            ax.imshow(plt.imread(pictures[-1]))
            ax.set_title(f"{Path(row['config']).parent.name}/{Path(row['config']).stem} seed {row['seed']:.0f}",
                         fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", type=Path, required=True)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--generator_steps", type=int, default=5000)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("outputs/study"), help="where the table, CSV and plot go")
    parser.add_argument("--runs_dir", type=Path, default=Path("outputs/study-runs"), help="where each run's files go")
    args = parser.parse_args(argv)
    missing = [str(c) for c in args.configs if not c.is_file()]
    if missing:
        parser.error(f"--configs: no such file(s): {', '.join(missing)}")
    args.out.mkdir(parents=True, exist_ok=True)
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    cells = [(config, seed) for config in args.configs for seed in args.seeds]
    keys = [(str(c), s, args.generator_steps, config_fingerprint(c)) for c, s in cells]
    finished = {cell_key(row): row for row in read_rows(args.out / "runs.csv")}
    results = {key: finished[key] for key in keys if key in finished}
    if results:
        print(f"Skipping {len(results)} finished run(s) found in {args.out / 'runs.csv'}")
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = {key: pool.submit(run_one, c, s, args.generator_steps, args.runs_dir, threads)
                   for key, (c, s) in zip(keys, cells) if key not in results}
        for key, future in futures.items():
            results[key] = future.result()
            print(f"{key[0]} seed {key[1]}: {results[key]}", flush=True)
            write_csv([results[k] for k in keys if k in results], args.out / "runs.csv")
    rows = [results[key] for key in keys]
    write_outputs(rows, args.out)
    print(f"Wrote {args.out / 'runs.csv'}, {args.out / 'table.md'}, {args.out / 'samples.png'}")
    return rows


if __name__ == "__main__":
    main()
