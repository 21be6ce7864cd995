"""Train many configs (x seeds) through ``train.py`` and tabulate their final evaluation.

    python -m lit_gan.study --suite toy --jobs 2          # a suite from configs/studies/
    python -m lit_gan.study --configs configs/ring/*.yaml --seeds 0 1 2 --generator_steps 5000

Each run is ``train.py`` in a process of its own (its own W&B run under
``--runs_dir``, grouped in W&B by the study's name, its output in
``--runs_dir``/logs/RUN_ID.log), forked from a server that imported lit-gan once
per study (a script that calls :func:`main` needs ``if __name__ == "__main__":``,
as with any ``multiprocessing`` code); ``--jobs`` (default: one per usable core) runs
that many (seed groups, with ``--stack``) at once with cores / jobs torch threads each. Writes into ``--out``:
``runs.csv`` (one row per run), ``table.md`` (mean ± standard error over
seeds per config, with the published rows for the same benchmark from
``docs/reference/``), ``samples.png`` (the final samples of every run) and
``coverage.png`` (modes and reverse KL against generator iterations).

Resumable: ``runs.csv`` is rewritten as each run finishes, and a rerun skips
every cell (config, seed, length) already there whose config files (the YAML
and the fragments it includes) have not changed since. A run that was
interrupted (Ctrl-C, SIGTERM to the study, which passes it on, a crash) continues from its last checkpoint:
``started.json`` names the W&B run of every cell started and not yet finished, and
a rerun passes that run's ``last.ckpt`` to ``train.py --ckpt_path``.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import math
import multiprocessing
import multiprocessing.connection
import os
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import yaml

from lit_gan.files import write_atomically
from lit_gan.provenance import commit

ROOT = Path(__file__).resolve().parents[1]
SUITES = ROOT / "configs" / "studies"
REFERENCES = ROOT / "docs" / "reference"
MAX_SEED = 2**32 - 1  # Lightning seeds NumPy too, which takes no more
# Benchmark (the config's folder) -> published rows to set beside it: (file, column, value, our column for
# their KL). PacGAN's 2-D reverse KL is of the high-quality samples (its code); Stacked MNIST's of every sample.
PUBLISHED = {
    "ring": ("toy2d.csv", "dataset", "ring8", "reverse_kl_hq"),
    "grid": ("toy2d.csv", "dataset", "grid25", "reverse_kl_hq"),
    "stacked_digits": ("stacked_mnist.csv", None, None, "reverse_kl"),
}

# runs.csv's columns other than the scores, in order: the first five before the scores, the rest after them.
FIXED = ("config", "seed", "generator_steps", "final_step", "fingerprint", "alarms", "seconds", "stack", "threads",
         "commit", "run_dir")
TEXT = ("config", "fingerprint", "run_dir", "alarms", "commit")


def load_config(path: Path):
    """A config's parsed content, with the YAML fragments it includes by relative path put in their place."""

    def resolve(value, directory: Path):
        if isinstance(value, dict):
            return {k: resolve(v, directory) for k, v in value.items()}
        if isinstance(value, list):
            return [resolve(v, directory) for v in value]
        if isinstance(value, str) and value.endswith((".yaml", ".yml")) and (directory / value).is_file():
            return load_config(directory / value)
        return value

    return resolve(yaml.safe_load(Path(path).read_text()), Path(path).parent)


def config_fingerprint(config: Path) -> str:
    """SHA-256 (12 hex digits) of a config's content, with the YAML fragments it includes by relative path.

    Parsed content, not text: editing a comment does not invalidate finished runs.
    """
    return hashlib.sha256(json.dumps(load_config(config), sort_keys=True).encode()).hexdigest()[:12]


def looks_stackable(config: Path) -> bool:
    """Whether a config's runs are worth starting as a seed group: lit-gan's MLPs (no spectral norm), none of
    the remedies a stack does not run (``lit_gan.stacking.UNSUPPORTED_OPTIONS``), on a CPU in float32. A cheap
    look at the YAML, without building the models; the runs themselves check everything (lit_gan.stacking) and
    train alone if they must.
    """
    from lit_gan.stacking import UNSUPPORTED_OPTIONS  # the one list; lit_gan has imported torch already

    content = load_config(config)
    model = (content.get("model") or {}).get("init_args") or {}
    trainer = content.get("trainer") or {}
    networks = [model.get(role) or {} for role in ("generator", "discriminator")]
    return (all(isinstance(n, dict) and str(n.get("class_path", "")).endswith(("MLPGenerator", "MLPDiscriminator"))
                for n in networks)
            and not (networks[1].get("init_args") or {}).get("spectral_norm")
            and all(model.get(key, off) == off for key, off in UNSUPPORTED_OPTIONS.items())
            and str(trainer.get("accelerator", "cpu")) in ("cpu", "auto")
            and str(trainer.get("precision", "32")) in ("32", "32-true"))


def repo_path(config) -> Path:
    """A config as the study names it (its cell's key): relative to the repository root, where relative paths
    are taken from, when it lies inside it, else absolute; so ``configs/ring/x.yaml`` and
    ``/path/to/repo/configs/ring/x.yaml`` are one cell. Symbolic links are not resolved: a config keeps its name."""
    path = Path(os.path.normpath(ROOT / config))
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def cell_key(row: dict) -> tuple:
    return (str(row["config"]), int(row["seed"]), int(row["generator_steps"]), row["fingerprint"])


def read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        rows = [{k: (v if k in TEXT else number(v)) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]
    # Named as repo_path names it: runs.csv files from before it hold configs as they were typed.
    return [{**row, "config": str(repo_path(row["config"]))} for row in rows]


def number(text: str) -> int | float:
    """A runs.csv number as it was written: ``20000`` stays an int (a rewritten runs.csv keeps it so)."""
    try:
        return int(text)
    except ValueError:
        return float(text)


def save_started(run_ids: dict[tuple, str], path: Path, others: dict[str, str] | None = None) -> None:
    """Write the W&B run ids of the cells started and not finished (``others``: by name, of other studies) to
    ``path``; no file when none is left."""
    started = {**(others or {}), **{cell_name(key): run_id for key, run_id in run_ids.items()}}
    if not started:
        path.unlink(missing_ok=True)
        return
    write_atomically(path, json.dumps(started, indent=1))


def write_csv(rows: list[dict], path: Path) -> None:
    # Columns in one order whichever row comes first: rows read back from runs.csv lack their empty cells.
    keys = list(dict.fromkeys(k for r in rows for k in r))
    fieldnames = ([k for k in FIXED[:5] if k in keys] + [k for k in keys if k not in FIXED]
                  + [k for k in FIXED[5:] if k in keys])
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=fieldnames, restval="")
    writer.writeheader()
    writer.writerows(rows)
    write_atomically(path, text.getvalue())


def cell_name(key: tuple) -> str:
    return "|".join(map(str, key))


# Every run is train.py's main in a process forked from one that imported it (and W&B) once: a fresh
# interpreter spends ~12 s importing torch, Lightning and W&B before a toy run's first step (docs/PERFORMANCE.md).
# The fork is of a server that has only imported, never trained, so each run starts from the same
# clean state as `python train.py` and gives the same numbers (tests/test_study.py checks).
PRELOAD = ["lit_gan.cli", "wandb"]


def run_context():
    """Where runs start: forked from a preloaded server, or (without fork, e.g. Windows) a new interpreter."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context


# Process.start() polls every live child of the study, and with the forkserver a poll racing another
# thread's join() can read a finished run's exit code as 255 (CPython gh-130895): start and join in turn.
PROCESSES = threading.Lock()
LIVE: set = set()  # the runs' processes under way: children of the forkserver, not of the study


def run_to_end(process) -> int:
    """Start ``process``, wait for it to end and return its exit code; safe from several threads at once."""
    with PROCESSES:
        process.start()
        LIVE.add(process)
    multiprocessing.connection.wait([process.sentinel])
    with PROCESSES:
        process.join()
        LIVE.discard(process)
    return process.exitcode


def stop_runs(signum, frame) -> None:
    """SIGTERM to the study alone (a scheduler, ``kill``): pass it on to the runs, which are the forkserver's
    children and would otherwise train on unowned; each saves ``last.ckpt`` and stops, the study with them."""
    with PROCESSES:
        for process in LIVE:
            if process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)
    raise SystemExit(128 + signum)


def train_in_child(argv: list[str], log: str, threads: int, environment: dict, seed_group=None) -> None:
    from lit_gan.cli import train_with_output  # imported by the server already, not by the study

    os.environ.clear()  # the study's environment now, not the server's from when it started
    os.environ.update(environment)
    os.chdir(ROOT)  # config paths are relative to the repository
    train_with_output(argv, log, threads, seed_group)


def train_process(context, argv: list[str], log: Path, threads: int, environment: dict | None = None,
                  seed_group=None) -> int:
    """``train.py ARGV`` in a process of ``context`` with this environment (or ``environment``), its
    output appended to ``log``, a member of ``seed_group`` if given; returns its exit code."""
    log.parent.mkdir(parents=True, exist_ok=True)
    log.touch()  # there to read even when the process dies before it opens it
    arguments = (argv, str(log), threads, dict(os.environ if environment is None else environment), seed_group)
    try:
        return run_to_end(context.Process(target=train_in_child, args=arguments, name=f"train {log.stem}"))
    finally:
        if seed_group is not None:
            seed_group.break_up(seed_group.slot)  # the others go on alone, whatever became of this one


def stack_directory() -> str:
    """A new folder for a seed group's shared tensors: on the RAM disk where there is one with room (a few MB
    for the toy MLPs, ~25 MB for a 4 x 400 generator; containers often give /dev/shm only 64 MB, and a full
    one would crash the runs), else in the temporary folder."""
    ram = "/dev/shm"
    roomy = os.path.isdir(ram) and shutil.disk_usage(ram).free >= 1 << 30
    return tempfile.mkdtemp(prefix="lit-gan-stack-", dir=ram if roomy else None)


def run_group(cells: list[tuple], context, report, stop: threading.Event | None = None, **options) -> None:
    """:func:`run_one` for each ``(config, seed, run_id)`` of one config, at once as one seed group
    (lit_gan.seed_group) when there are several; ``report(index, row or the RuntimeError that ended it)`` as
    each run ends. A group that cannot be set up (no room or no semaphores) trains its seeds one by one,
    starting none once ``stop`` is set (the study was interrupted)."""
    def run(index, **extra):
        report(index, outcome(run_one, *cells[index], context=context, **options, **extra))

    if len(cells) == 1:
        return run(0)
    from lit_gan.seed_group import SeedGroup  # imports torch: only for studies that stack

    directory = None
    try:
        directory = stack_directory()
        group = SeedGroup.create(context, directory, len(cells))
    except OSError as error:
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)
        print(f"{cells[0][0]}: could not set up a seed group for seeds {[cell[1] for cell in cells]} "
              f"({type(error).__name__}: {error}); training them one after another", file=sys.stderr, flush=True)
        for index in range(len(cells)):
            if stop is not None and stop.is_set():
                return
            run(index)
        return
    # One torch thread each: the members wait for member 0 most of the time, and idle OpenMP threads spinning
    # in K processes would take the cores from it.
    options["threads"] = 1
    try:
        with ThreadPoolExecutor(len(cells)) as members:
            for future in [members.submit(run, slot, seed_group=group.member(slot), stack=len(cells))
                           for slot in range(len(cells))]:
                future.result()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def seed_groups(cells: list[tuple], stack: int) -> list[list[tuple]]:
    """``(key, (config, seed))`` cells in groups to train together: a config's seeds in as few groups of at most
    ``stack`` as hold them, of sizes as equal as can be (5 seeds, stack 4: 3 and 2); one cell per group for 1
    and for configs that cannot stack (:func:`looks_stackable`)."""
    groups = []
    for config in dict.fromkeys(c for _, (c, _) in cells):
        same = [cell for cell in cells if cell[1][0] == config]
        count = -(-len(same) // stack) if stack > 1 and looks_stackable(ROOT / config) else len(same)
        groups += [same[i::count] for i in range(count)]
    return groups


def outcome(function, *args, **kwargs):
    """``function(*args, **kwargs)``, or the error it raised as a RuntimeError: whatever goes wrong with one
    run fails that cell, not the study (which would lose the rows of the runs under way)."""
    try:
        return function(*args, **kwargs)
    except RuntimeError as error:
        return error
    except Exception as error:
        return RuntimeError(f"{type(error).__name__}: {error}")


def run_one(config: Path, seed: int, run_id: str, *, generator_steps: int, runs_dir: Path, threads: int, group: str,
            context, seed_group=None, stack: int = 1) -> dict:
    """Train one run in its own process (a member of a seed group of ``stack`` runs when ``seed_group`` is
    given) and return its row: final scores, alarms, and ``seconds``, the wall time of its process."""
    argv = [
        "--config", str(config),
        f"--generator_steps={generator_steps}", f"--seed_everything={seed}", f"--data.init_args.seed={seed}",
        "--trainer.enable_progress_bar=false", f"--trainer.logger.init_args.save_dir={runs_dir}",
        f"--trainer.logger.init_args.group={group}", f"--trainer.logger.init_args.job_type={Path(config).stem}",
        f"--trainer.logger.init_args.id={run_id}",
    ]
    last = next(runs_dir.glob(f"*/{run_id}/checkpoints/last.ckpt"), None)
    if last is not None:
        print(f"{config} seed {seed}: resuming its interrupted run from {last}", flush=True)
        argv.append(f"--ckpt_path={last}")
    log = runs_dir / "logs" / f"{run_id}.log"  # the run's output, as train.py prints it (a resumed run appends)
    fingerprint = config_fingerprint(ROOT / config)  # of what this run trains, whatever is edited while it does
    start = time.perf_counter()
    try:
        exitcode = train_process(context, argv, log, threads, seed_group=seed_group)
    except Exception as error:  # e.g. the server died importing lit-gan: say so for this run, keep the study
        raise RuntimeError(f"train.py {' '.join(argv)} could not start: {type(error).__name__}: {error}") from error
    seconds = time.perf_counter() - start
    output = log.read_text(errors="replace")
    if exitcode != 0:
        raise RuntimeError(f"train.py {' '.join(argv)} failed (exit code {exitcode}; its output is in "
                           f"{log}):\n{output[-3000:]}")
    # The run's folder is <runs_dir>/<W&B project>/<run id> (lit_gan.callbacks.output.run_directory): found by
    # its id, not read from the log, whose "Run directory: PATH" line cannot tell a space in PATH from its end.
    history = next(runs_dir.glob(f"*/{run_id}/evaluation.json"), None)
    if history is None:
        raise RuntimeError(f"train.py {' '.join(argv)} finished but left no {runs_dir}/*/{run_id}/evaluation.json "
                           f"(its output is in {log})")
    run_dir = history.parent
    final = json.loads(history.read_text())[-1]
    alarms = read_alarms(run_dir)
    diverged = next((a["generator_step"] for a in alarms if a["alarm"] == "non_finite"), None)
    if diverged is not None:  # no final scores: its last finite evaluation's are an earlier G's, even the untrained's
        final = {"generator_step": diverged}
    return {
        # The length asked for (the cell's key) and the one reached: a run stopped early (non-finite, or
        # stop_on_collapse) ends before it, and is not run again by a rerun of the study.
        "config": str(config), "seed": seed, "generator_steps": generator_steps, "final_step": final["generator_step"],
        "fingerprint": fingerprint,
        **{k.removeprefix("eval/"): v for k, v in final.items() if k.startswith("eval/")},
        **{"ema_" + k.removeprefix("eval_ema/"): v for k, v in final.items() if k.startswith("eval_ema/")},
        "alarms": alarm_names(alarms),
        "seconds": round(seconds, 1), "stack": stack, "threads": threads, "run_dir": str(run_dir),
    }


def mean_and_error(values: list[float | None]) -> str:
    """``mean ± standard error`` (sample standard deviation / sqrt(n)); just the mean for one value. A NaN (a
    score with nothing to score: ``reverse_kl_hq`` of a run without high-quality samples) and a None (a seed
    whose last evaluation had non-finite samples, so no scores) are left out and counted, "(k of n NaN)",
    "(k of n not scored)", instead of turning the whole cell into ``nan ± nan`` or a blank."""
    defined = [v for v in values if v is not None and not math.isnan(v)]
    counts = {"NaN": sum(v is not None and math.isnan(v) for v in values), "not scored": values.count(None)}
    missing = "".join(f" ({k} of {len(values)} {what})" for what, k in counts.items() if k)
    n = len(defined)
    if n == 0:
        return f"NaN{missing}"
    mean = sum(defined) / n
    if n == 1:
        return f"{significant(mean, 3)}{missing}"
    error = math.sqrt(sum((v - mean) ** 2 for v in defined) / (n - 1) / n)
    return f"{significant(mean, 3)} ± {significant(error, 2)}{missing}"


def significant(value: float, digits: int) -> str:
    """``value`` to ``digits`` significant digits, but in full where that takes an exponent (1000, not 1e+03)."""
    text = f"{value:.{digits}g}"
    return f"{value:.0f}" if "e+" in text else text


def benchmark(config: str) -> str:
    """The benchmark a config trains on: its folder under configs/ (ring, grid, stacked_digits ...)."""
    return Path(config).parent.name


def published_rows(name: str) -> list[dict]:
    """Published rows for a benchmark from docs/reference/, in our column names."""
    if name not in PUBLISHED:
        return []
    file, column, value, kl = PUBLISHED[name]
    with open(REFERENCES / file, newline="") as f:
        rows = [r for r in csv.DictReader(f) if column is None or r[column] == value]
    out = []
    for r in rows:
        cells = {}
        for ours, theirs in (("modes", "modes"), ("high_quality_pct", "high_quality_pct"), (kl, "reverse_kl"), (kl, "kl")):
            if r.get(f"{theirs}_mean"):
                error = r.get(f"{theirs}_err")
                cells[ours] = r[f"{theirs}_mean"] + (f" ± {error}" if error else "")
        out.append({"name": f"{r['source']}: {r['method']}", "trials": r.get("trials") or "", **cells})
    return out


def read_alarms(run_dir: Path) -> list[dict]:
    """The stability monitor's alarms in a run (its alarms.json; none without the file)."""
    path = Path(run_dir) / "alarms.json"
    return json.loads(path.read_text()) if path.is_file() else []


def alarm_names(alarms: list[dict]) -> str:
    """The kinds of ``alarms``, space-separated, as runs.csv's ``alarms`` column holds them."""
    return " ".join(sorted({a["alarm"] for a in alarms}))


def write_outputs(rows: list[dict], out: Path) -> list[Path]:
    """runs.csv, table.md and, when every run's folder is there, the figures; returns the files written."""
    for row in rows:
        if "alarms" not in row:  # an empty cell read back, or a runs.csv from before alarms: "" without the folder
            row["alarms"] = alarm_names(read_alarms(row["run_dir"]))
    write_csv(rows, out / "runs.csv")
    scores = [k for k in dict.fromkeys(k for r in rows for k in r) if k not in FIXED and k != "seed"]
    lines = []
    for name in dict.fromkeys(benchmark(r["config"]) for r in rows):
        bench = [r for r in rows if benchmark(r["config"]) == name]
        columns = [k for k in scores if any(k in r for r in bench)]
        header = ["config", "seeds", "generator iterations", *columns, "alarms", "seconds per run"]
        lines += [f"### {name}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for config in dict.fromkeys(r["config"] for r in bench):
            group = [r for r in bench if r["config"] == config]
            # A seed without scores (its last evaluation had non-finite samples) counts as not scored, alone;
            # a score the scored seeds of this config do not log (eval_ema/ without an EMA) is a blank.
            scored = [r for r in group if any(c in r for c in columns)]
            cells = "".join(f"{mean_and_error([r.get(k) for r in group])} | "
                            if any(k in r for r in group) or not scored else " | " for k in columns)
            alarms = sum(bool(r.get("alarms")) for r in group)
            short = sum(r.get("final_step", r["generator_steps"]) < r["generator_steps"] for r in group)
            length = f"{group[0]['generator_steps']:.0f}" + (f" ({short} stopped early)" if short else "")
            # A seed group's runs share one wall time: each costs its share of it.
            seconds = sum(r["seconds"] / r.get("stack", 1) for r in group) / len(group)
            lines.append(f"| `{config}` | {len(group)} | {length} | {cells}{alarms}/{len(group)} | {seconds:.0f} |")
        for ref in published_rows(name):
            cells = "".join(f"{ref.get(k, '')} | " for k in columns)
            lines.append(f"| *{ref['name']}* (published) | {ref['trials']} | | {cells}| |")
        lines.append("")
    (out / "table.md").write_text("\n".join(lines))
    # The figures are drawn from the run folders: without some (a fresh clone of committed results, big run
    # folders deleted) they would come out blank or average only some seeds, so the ones there are kept.
    gone = [r for r in rows if not (Path(r["run_dir"]) / "evaluation.json").is_file()]
    if gone:
        listed = "; ".join(f"{r['config']} seed {r['seed']}: {r['run_dir']}" for r in gone[:3])
        print(f"warning: {out / 'samples.png'} and {out / 'coverage.png'} not redrawn: {len(gone)} of {len(rows)} "
              f"run folder(s) have no evaluation.json ({listed}{'; ...' if len(gone) > 3 else ''})",
              file=sys.stderr, flush=True)
        return [out / "runs.csv", out / "table.md"]
    plot_final_samples(rows, out / "samples.png")
    plot_coverage(rows, out / "coverage.png")
    return [out / "runs.csv", out / "table.md", out / "samples.png", out / "coverage.png"]


def plot_coverage(rows: list[dict], path: Path) -> None:
    """Modes and reverse KL against generator iterations, mean over seeds, one column per benchmark."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    benchmarks = list(dict.fromkeys(benchmark(r["config"]) for r in rows))
    fig, axes = plt.subplots(2, len(benchmarks), figsize=(6 * len(benchmarks), 7), squeeze=False)
    for column, name in enumerate(benchmarks):
        bench = [r for r in rows if benchmark(r["config"]) == name]
        for config in dict.fromkeys(r["config"] for r in bench):
            curves: dict[int, list[dict]] = {}
            for r in (r for r in bench if r["config"] == config):
                history = Path(r["run_dir"]) / "evaluation.json"
                for point in json.loads(history.read_text()) if history.is_file() else []:
                    curves.setdefault(point["generator_step"], []).append(point)
            steps = sorted(curves)
            for row, key in enumerate(("eval/modes", "eval/reverse_kl")):
                # Mean over the seeds scored at each step (an evaluation of non-finite samples has no scores).
                points = [(s, [p[key] for p in curves[s] if key in p]) for s in steps]
                points = [(s, sum(v) / len(v)) for s, v in points if v]
                if points:
                    axes[row, column].plot(*zip(*points), marker=".", label=Path(config).stem)
        axes[0, column].set_title(f"{name}: modes covered (mean over seeds)")
        axes[1, column].set_title(f"{name}: reverse KL (mean over seeds)")
        axes[1, column].set_yscale("log")
        axes[1, column].set_xlabel("generator iterations")
        if axes[0, column].get_legend_handles_labels()[0]:  # runs without an evaluation history draw nothing
            axes[0, column].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


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
        pictures = sorted(p for p in (Path(row["run_dir"]) / "samples").glob("*.png") if "_ema" not in p.name)
        if pictures:
            ax.imshow(plt.imread(pictures[-1]))
            ax.set_title(f"{Path(row['config']).parent.name}/{Path(row['config']).stem} seed {row['seed']:.0f}",
                         fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def load_suite(name: str, parser: argparse.ArgumentParser) -> dict:
    """A suite file: ``name``, ``configs`` (paths from the repository root), ``seeds``, ``generator_steps``."""
    path = Path(name) if name.endswith((".yaml", ".yml")) else SUITES / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in SUITES.glob("*.yaml")))
        parser.error(f"--suite={name} is not valid: expected one of {known} or a suite YAML file")
    suite = yaml.safe_load(path.read_text())
    if not isinstance(suite, dict):
        parser.error(f"--suite={name}: {path} is not valid: expected a mapping with configs, seeds, generator_steps")
    unknown = sorted(set(suite) - {"name", "configs", "seeds", "generator_steps", "description"})
    if unknown:
        parser.error(f"--suite={name}: {path} has unknown key(s) {', '.join(unknown)}: expected name, configs, "
                     "seeds, generator_steps, description")
    def listing(item):
        # type(), not isinstance: YAML's true is a bool, which Python counts as an int
        return lambda value: isinstance(value, list) and len(value) > 0 and all(type(v) is item for v in value)

    checks = {"name": (lambda value: isinstance(value, str) and value != "", "a non-empty string"),
              "configs": (listing(str), "a non-empty list of config paths"),
              "seeds": (listing(int), "a non-empty list of integer seeds"),
              "generator_steps": (lambda value: type(value) is int and value >= 1, "an integer >= 1")}
    for key, (valid, expected) in checks.items():
        if key in suite and not valid(suite[key]):
            parser.error(f"--suite={name}: {key}={suite[key]!r} in {path} is not valid: expected {expected}")
    suite.setdefault("name", path.stem)
    return suite


def usable_cores() -> int:
    """The cores this process may run on (a SLURM job's share, a taskset), not every core of the machine."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def hold_out_folder(out: Path, parser: argparse.ArgumentParser):
    """An exclusive lock on ``out`` for the study's lifetime: two studies writing one runs.csv lose rows."""
    try:
        import fcntl
    except ImportError:  # no POSIX locks (Windows): unguarded
        return None
    handle = open(out / ".study.lock", "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        parser.error(f"--out {out} is in use by another study (it holds {out / '.study.lock'}); wait for it, or "
                     "give another --out")
    return handle


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", help=f"a suite: a name in {SUITES.relative_to(ROOT)}/ "
                        f"({', '.join(sorted(p.stem for p in SUITES.glob('*.yaml')))}) or a YAML file")
    parser.add_argument("--configs", nargs="+", type=Path, help="configs to train (instead of, or on top of, a suite)")
    parser.add_argument("--seeds", nargs="+", type=int, help="default: the suite's, else 0")
    parser.add_argument("--generator_steps", type=int, help="default: the suite's, else 5000")
    # One single-threaded run per core: 1.52-2.15x the runs per hour of one run at a time with every core on
    # the toy MLPs (benchmarks/study_throughput.py, docs/PERFORMANCE.md).
    parser.add_argument("--jobs", type=int, default=usable_cores(),
                        help="runs (with --stack: seed groups) at once, each with cores / jobs torch threads "
                             "(default: one per core this process may use)")
    parser.add_argument("--threads", type=int,
                        help="torch threads per run (default: cores / jobs; 1 in seed groups). Numbers are "
                             "bit-identical only at equal thread counts: the published rows used 1")
    parser.add_argument("--stack", type=int, default=1,
                        help="train up to this many seeds of a config as one stacked computation, each seed still "
                             "its own run with its own numbers (lit_gan/seed_group.py; default 1: each alone)")
    parser.add_argument("--name", help="the study's name: its W&B group (default: the suite's name, else 'study')")
    parser.add_argument("--out", type=Path, help="where the table, CSV and plots go (default: outputs/studies/NAME)")
    parser.add_argument("--runs_dir", type=Path, default=Path("outputs/study-runs"), help="where each run's files go")
    args = parser.parse_args(argv)
    suite = load_suite(args.suite, parser) if args.suite else {}
    args.configs = [repo_path(c) for c in suite.get("configs", []) + (args.configs or [])]
    seeds_given = args.seeds is not None
    args.seeds = args.seeds or suite.get("seeds", [0])
    if args.generator_steps is None:
        args.generator_steps = suite.get("generator_steps", 5000)
    args.name = args.name or suite.get("name", "study")
    args.out = args.out or Path("outputs/studies") / args.name
    if not args.configs:
        parser.error("give --suite or --configs")
    for flag in ("jobs", "stack", "generator_steps", "threads"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            parser.error(f"--{flag}={getattr(args, flag)} is not valid: expected an integer >= 1")
    bad_seeds = [seed for seed in args.seeds if not 0 <= seed <= MAX_SEED]
    if bad_seeds:
        key = "--seeds" if seeds_given else f"--suite={args.suite}: seeds"
        parser.error(f"{key}={bad_seeds[0]} is not valid: expected integers in [0, {MAX_SEED}] (NumPy's seeds)")
    missing = [str(c) for c in args.configs if not (ROOT / c).is_file()]
    if missing:
        parser.error(f"--configs: no such file(s): {', '.join(missing)}: expected config files, relative paths "
                     f"taken from the repository root ({ROOT})")
    # A cell listed twice would train twice into one run directory and count as two seeds.
    for flag, values in (("--configs (with the suite's)", [(ROOT / c).resolve() for c in args.configs]),
                         ("--seeds", args.seeds)):
        repeated = sorted({str(v) for v in values if values.count(v) > 1})
        if repeated:
            parser.error(f"{flag}: {', '.join(repeated)} given more than once: expected each once")
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # e.g. a file of that name
        parser.error(f"--out {args.out} is not valid: expected a folder the study can create or write into "
                     f"({error.strerror})")
    lock = hold_out_folder(args.out, parser)
    try:
        return run_study(args, parser)
    finally:
        if lock is not None:
            lock.close()  # releases it (a study run twice in one process, as the tests do, takes it again)


def run_study(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[dict]:
    """The runs of a checked study (``main``'s arguments), with ``--out`` held."""
    threads = args.threads or max(1, usable_cores() // args.jobs)
    cells = [(config, seed) for config in args.configs for seed in args.seeds]
    keys = [(str(c), s, args.generator_steps, config_fingerprint(ROOT / c)) for c, s in cells]
    finished = {cell_key(row): row for row in read_rows(args.out / "runs.csv")}
    # runs.csv is rewritten with this study's cells only: refuse rather than drop another study's rows.
    outside = sorted({key[:3] for key in finished} - {key[:3] for key in keys})
    if outside:
        listed = "; ".join(f"{c} seed {s}, {n} generator steps" for c, s, n in outside[:3])
        parser.error(f"--out {args.out}: its runs.csv holds {len(outside)} finished run(s) this study does not "
                     f"include ({listed}{'; ...' if len(outside) > 3 else ''}); add those configs, seeds and "
                     f"--generator_steps to the study, or give another --out (nothing was changed)")
    results = {key: finished[key] for key in keys if key in finished}
    code = commit()
    if results:
        # The fingerprint is the configs', not the code's or the thread count's (which rounds sums differently):
        # say when the rows kept were measured otherwise.
        others = sorted({str(row.get("commit", "an unrecorded commit")) for row in results.values()} - {code})
        counts = {threads} | ({1} if args.stack > 1 else set())  # seed groups train in one thread each
        other_threads = sorted({str(row.get("threads", "unrecorded")) for row in results.values()}
                               - {str(n) for n in counts})
        differences = ([f"with lit-gan at {', '.join(others)} (this is {code})"] if others else []) + (
            [f"in {', '.join(other_threads)} torch thread(s) a run (this study: {threads})"] if other_threads else [])
        print(f"Skipping {len(results)} finished run(s) found in {args.out / 'runs.csv'}"
              + (f", measured {' and '.join(differences)}: to measure this code, give a fresh --out"
                 if differences else ""))
    changed = len({key[:3] for key in finished} - {key[:3] for key in results})
    if changed:
        print(f"Rerunning {changed} run(s) of {args.out / 'runs.csv'} whose config changed since they finished")
    # The W&B run of each cell started but not finished: an interrupted run resumes from its checkpoints.
    started_path = args.out / "started.json"
    started = json.loads(started_path.read_text()) if started_path.is_file() else {}
    run_ids = {key: started.get(cell_name(key)) or secrets.token_hex(4) for key in keys if key not in results}
    # Cells another study (with other seeds or configs) left unfinished keep their runs, to resume later.
    others = {name: run_id for name, run_id in started.items() if name not in {cell_name(k) for k in keys}}
    save_started(run_ids, started_path, others)
    failed = []
    context = run_context()
    options = dict(generator_steps=args.generator_steps, runs_dir=args.runs_dir.resolve(), threads=threads,
                   group=args.name)
    lock = threading.Lock()
    interrupted = threading.Event()

    def record(key, result):  # each run's row goes to runs.csv as soon as it ends, even inside a seed group
        with lock:
            if isinstance(result, RuntimeError):
                failed.append(f"{key[0]} seed {key[1]}")
                # A run stopped by Ctrl-C exits non-zero too: one line, not its log as if it had crashed.
                print(f"{key[0]} seed {key[1]}: " + ("stopped, with its last checkpoint" if interrupted.is_set()
                                                      else str(result)), file=sys.stderr, flush=True)
                return
            if result["fingerprint"] != key[3]:  # its config was edited after the study started
                failed.append(f"{key[0]} seed {key[1]}")
                print(f"{key[0]} seed {key[1]}: its config changed while the study ran (fingerprint {key[3]} at "
                      f"the start, {result['fingerprint']} when the run started): not recorded, so one row does "
                      f"not average two configs; rerun the study to train it as the config is now (its files "
                      f"are in {result['run_dir']})", file=sys.stderr, flush=True)
                del run_ids[key]  # not resumed by a rerun either, should the config be edited back
                save_started(run_ids, started_path, others)
                return
            results[key] = {**result, "commit": code}
            print(f"{key[0]} seed {key[1]}: {result}", flush=True)
            del run_ids[key]
            write_csv([results[k] for k in keys if k in results], args.out / "runs.csv")
            save_started(run_ids, started_path, others)

    in_main_thread = threading.current_thread() is threading.main_thread()
    previous_sigterm = signal.signal(signal.SIGTERM, stop_runs) if in_main_thread else None
    try:
        with ThreadPoolExecutor(args.jobs) as pool:
            futures = [pool.submit(run_group, [(c, s, run_ids[k]) for k, (c, s) in group], context,
                                   lambda index, result, group=group: record(group[index][0], result),
                                   interrupted, **options)
                       for group in seed_groups([(k, cell) for k, cell in zip(keys, cells) if k in run_ids],
                                                args.stack)]
            try:
                for future in as_completed(futures):
                    future.result()
            except BaseException:  # Ctrl-C (the runs get it too: one process group) or SIGTERM (stop_runs passes
                interrupted.set()  # it on): start no queued run, wait for those under way to save and stop
                for future in futures:
                    future.cancel()
                raise
    except KeyboardInterrupt:
        raise SystemExit(f"Interrupted: the runs under way saved their last checkpoint. Rerun the same command to "
                         f"continue them; finished runs are in {args.out / 'runs.csv'}.") from None
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous_sigterm)
    if failed:
        raise SystemExit(f"{len(failed)} run(s) failed ({'; '.join(failed)}); the others are in "
                         f"{args.out / 'runs.csv'}. Rerunning the same command retrains the failed ones, from "
                         "their last checkpoint where they saved one.")
    rows = [results[key] for key in keys]
    print(f"Wrote {', '.join(map(str, write_outputs(rows, args.out)))}")
    return rows


if __name__ == "__main__":
    main()
