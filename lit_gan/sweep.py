"""W&B sweep files for ``train.py``, checked without a W&B server.

    python -m lit_gan.sweep sweeps/*.yaml

checks each sweep file the way a cluster job would find out, but in seconds:

1. W&B's own schema (the ``sweeps`` package, the engine W&B's server runs);
2. it runs ``train.py`` with ``--config FILE`` before ``${args}`` (later flags override earlier ones,
   so the sweep's values win over the file's);
3. its metric is one the runs log (``eval/<key>``, or ``eval_ema/<key>`` with an EMA of G) and the
   goal is that metric's direction;
4. every set of parameters W&B's engine generates (all of a grid; ``draws`` of a random or bayes
   search) expands to the command line an agent would run, and that command builds with our CLI:
   an unknown key or a bad value is found here, not in a failed cluster job.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import sys
import warnings
from pathlib import Path

import yaml

from lit_gan.errors import ConfigError, plain  # plain: NumPy draws as JSON would send them

# The sweeps package's pydantic models use v1 option names; pydantic 2 warns on import, harmlessly.
warnings.filterwarnings("ignore", message="Valid config keys have changed in V2")

PROGRAM = "train.py"
MAX_GRID = 1000  # runs a grid may enumerate before the check refuses it


def engine():
    """W&B's sweep engine (the ``sweeps`` package), with a clear message where it is missing."""
    try:
        import sweeps  # the installed package: our sweeps/ folder has no __init__.py, so it never shadows it
    except ImportError:
        raise SystemExit("python -m lit_gan.sweep needs W&B's sweep engine: pip install --no-deps sweeps==0.3.0 "
                         "(--no-deps: it pins numpy<2, which nothing here needs; its other requirements "
                         "come with lit-gan[dev])") from None
    return sweeps


class SweepError(ConfigError):
    """Everything wrong with one sweep file, one problem per line."""

    def __init__(self, path: Path | str, problems: list[str]):
        self.path, self.problems = Path(path), problems
        super().__init__("\n".join(f"{path}: {problem}" for problem in problems))


def load_sweep(path: Path | str) -> dict:
    path = Path(path)
    try:
        sweep = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise SweepError(path, [f"cannot be read as YAML ({type(error).__name__}: {error})"]) from None
    if not isinstance(sweep, dict):
        raise SweepError(path, [f"expected a mapping of sweep keys (method, parameters, ...), got {sweep!r}"])
    return sweep


def agent_command(sweep: dict, parameters: dict) -> list[str]:
    """The command line ``wandb agent`` runs for one set of ``parameters``.

    Built from W&B's own helpers as ``wandb/wandb_agent.py`` (``Agent._command_run``) builds it:
    ``${envvar:NAME}`` macros filled in, then ``${env}``, ``${interpreter}``, ``${program}`` and
    ``${args}`` (``--key=value`` per parameter) replaced.
    """
    from wandb.sdk.launch.sweeps.utils import DEFAULT_SWEEP_COMMAND, create_sweep_command, create_sweep_command_args

    command = create_sweep_command(list(sweep.get("command") or DEFAULT_SWEEP_COMMAND))
    values = create_sweep_command_args({"args": {key: {"value": value} for key, value in parameters.items()}})
    values.update(env=["/usr/bin/env"], interpreter=["python"], program=[sweep.get("program", "")])
    line: list[str] = []
    for token in map(str, command):
        if token.startswith("${") and token.endswith("}"):
            line += values.get(token[2:-1]) or []
        else:
            line.append(token)
    return line


def generated_parameters(sweep: dict, draws: int = 3) -> list[dict]:
    """Parameter sets from W&B's engine: the whole grid, or ``draws`` suggestions of a random/bayes search
    and then one set per item of a ``values`` list that no draw took.

    A bayes search is fed each suggestion back as a finished run (with a metric value that gets
    worse run by run), so later draws come from its fitted model, not only from the prior.
    """
    sweeps = engine()
    runs, found = [], []
    limit = MAX_GRID + 1 if sweep.get("method") == "grid" else draws
    metric = (sweep.get("metric") or {}).get("name")
    for index in range(limit):
        run = sweeps.next_run(sweep, runs)
        if run is None:
            break
        run.state = sweeps.RunState.finished
        if metric:
            run.summary_metrics = {metric: float(index)}
        runs.append(run)
        found.append({key: plain(entry["value"]) for key, entry in run.config.items()})
    if len(found) > MAX_GRID:
        raise ValueError(f"the grid has more than {MAX_GRID} runs; split it or use method: random")
    if sweep.get("method") != "grid" and found:
        # A few draws leave most items of a values list untried: each untried one gets a set of its own (the
        # first draw with that item swapped in), so a bad item is found before a cluster job draws it.
        for key, spec in (sweep.get("parameters") or {}).items():
            for value in spec.get("values", []) if isinstance(spec, dict) and key in found[0] else []:
                if all(parameters[key] != value for parameters in found):
                    found.append({**found[0], key: plain(value)})
    return found


def build(argv: list[str]):
    """Build model, data and trainer from ``train.py``'s arguments; the CLI's one-line error on failure."""
    from lit_gan.cli import LitGANCLI

    quiet = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric", "lightning")]
    levels = [logger.level for logger in quiet]
    for logger in quiet:
        logger.setLevel(logging.ERROR)
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()), \
                warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter")  # args= is the point here
            return LitGANCLI(args=argv)
    except SystemExit:
        lines = [line for line in errors.getvalue().splitlines() if line.strip()]
        raise ConfigError(next((line.split("error: ", 1)[1] for line in reversed(lines) if "error: " in line),
                               lines[-1] if lines else "the command does not parse")) from None
    finally:
        for logger, level in zip(quiet, levels):
            logger.setLevel(level)


def command_problems(sweep: dict) -> list[str]:
    problems = []
    if sweep.get("program") != PROGRAM:
        problems.append(f"program={sweep.get('program')!r} is not valid: expected {PROGRAM!r}")
    command = [str(token) for token in sweep.get("command") or []]
    if "${args}" not in command:
        return problems + ["command must end with ${args}, after --config FILE (the agent's flags go there)"]
    if "${program}" not in command:
        problems.append("command must contain ${program}")
    after = command[command.index("${args}") + 1:]
    if after:
        problems.append(f"command must end with ${{args}}, but {' '.join(after)} follows it (it would override the "
                        "sweep's values)")
    before = command[: command.index("${args}")]
    configs = [before[i + 1] for i, token in enumerate(before[:-1]) if token == "--config"]
    configs += [token.split("=", 1)[1] for token in before if token.startswith("--config=")]  # one token, as the CLI takes
    if not configs:
        problems.append("command must name --config FILE before ${args}, so the sweep's values override the file")
    problems += [f"--config {config} is not valid: expected an existing file" for config in configs
                 if not Path(config).is_file()]
    return problems


def check_sweep(path: Path | str, draws: int = 3) -> list[list[str]]:
    """Every problem in one sweep file (as a :class:`SweepError`); else the command lines it checked."""
    sweep = load_sweep(path)
    problems = [f"W&B sweep schema: {message}" for message in engine().schema_violations_from_proposed_config(sweep)]
    problems += command_problems(sweep)
    if problems:
        raise SweepError(path, problems)
    metric = sweep.get("metric") or {}
    if not metric.get("name"):
        raise SweepError(path, ["metric.name is missing: name the logged key to compare runs by, with its goal"])
    try:
        parameter_sets = generated_parameters(sweep, draws)
    except ValueError as error:
        raise SweepError(path, [str(error)]) from None
    from lightning.pytorch.loggers import WandbLogger  # (imports torch: only once the file is sound)

    from lit_gan.callbacks.evaluation import evaluation_goals

    commands, failures = [], {}  # error -> the parameter sets it came from (a misspelt key fails every one)
    for parameters in parameter_sets:
        line = agent_command(sweep, parameters)
        argv = line[line.index(PROGRAM) + 1:]
        try:
            cli = build(argv)
        except ConfigError as error:
            failures.setdefault(str(error), []).append(parameters)
            continue
        commands.append(line)
        if not any(isinstance(logger, WandbLogger) and not logger._offline for logger in cli.trainer.loggers):
            problems.append("the runs do not report to the W&B server, so the sweep never sees its metric: expected "
                            "--trainer.logger.init_args.offline=false before ${args}")
        logged = evaluation_goals(cli.datamodule, cli.model)
        if logged is None:  # a datamodule of one's own without metric_goals: the metric is the user's to get right
            continue
        name, goal = metric["name"], metric.get("goal", "minimize")
        if name not in logged:
            problems.append(f"metric.name={name!r} is not logged by these runs: expected one of "
                            f"{', '.join(sorted(logged))}")
        elif logged[name] != goal:
            problems.append(f"metric.goal={goal!r} is not valid for {name}: expected {logged[name]!r}")
    for error, sets in failures.items():
        others = f" (and {len(sets) - 1} other parameter set(s) of the {len(parameter_sets)})" if len(sets) > 1 else ""
        problems.append(f"the command for {sets[0]}{others} fails: {error}")
    if problems:
        raise SweepError(path, list(dict.fromkeys(problems)))
    return commands


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lit_gan.sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", type=Path, help="sweep files, e.g. sweeps/*.yaml")
    parser.add_argument("--draws", type=int, default=3, help="suggestions checked per random/bayes sweep")
    parser.add_argument("--show", action="store_true", help="print every command line an agent would run")
    args = parser.parse_args(argv)
    if args.draws < 1:
        parser.error(f"--draws={args.draws} is not valid: expected an integer >= 1 (suggestions checked per sweep)")
    failed = 0
    for path in args.files:
        try:
            commands = check_sweep(path, args.draws)
        except SweepError as error:
            print(error, file=sys.stderr)
            failed += 1
            continue
        print(f"{path}: ok ({len(commands)} command lines build)")
        for line in commands if args.show else ():
            print("  " + " ".join(line))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
