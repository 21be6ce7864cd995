"""The sweep files in sweeps/: W&B's schema, W&B's own engine and agent expansion, our CLI; no W&B server."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from lit_gan.data import Digits, GridGaussians, StackedDigits
from lit_gan.sweep import SweepError, agent_command, check_sweep, generated_parameters, load_sweep
from lit_gan.wandb_offline import find_run_file, read_run
from tests.conftest import ROOT, quiet_args

SWEEPS = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "sweeps").glob("*.yaml"))
COMMAND = ["${env}", "${interpreter}", "${program}", "--config", "configs/grid/wgan_gp.yaml",
           "--trainer.logger.init_args.offline=false", "${args}"]


def test_there_are_the_sweeps_researchers_asked_for():
    names = {Path(p).stem for p in SWEEPS}
    assert {"objectives_toy", "objectives_digits", "wgan_gp_toy", "sngan_ttur_cifar10", "seeds"} <= names


@pytest.mark.parametrize("path", SWEEPS)
def test_every_sweep_passes_wandbs_schema_and_every_generated_command_builds(path):
    from sweeps import schema_violations_from_proposed_config

    sweep = load_sweep(path)
    assert schema_violations_from_proposed_config(sweep) == []
    commands = check_sweep(path, draws=2)  # raises SweepError naming every problem
    parameters = sweep["parameters"]
    if sweep["method"] == "grid":  # the whole grid, each combination once
        expected = math.prod(len(p["values"]) if "values" in p else 1 for p in parameters.values())
        assert len(commands) == len({tuple(c) for c in commands}) == expected
    else:  # two draws, then one set for each item of a values list that neither drew
        assert 2 <= len(commands) <= 2 + sum(len(p.get("values", [])) for p in parameters.values())
        for key, spec in parameters.items():
            assert {f"--{key}={value}" for value in spec.get("values", [])} <= {t for c in commands for t in c}
    config = sweep["command"][sweep["command"].index("--config") + 1]
    for line in commands:
        # What the agent runs: its fixed part, then one --key=value per parameter.
        assert line[:5] == ["/usr/bin/env", "python", "train.py", "--config", config]
        flags = [token.split("=", 1)[0] for token in line if token.startswith("--") and "=" in token]
        assert set(parameters) <= {flag[2:] for flag in flags}


def test_grid_commands_are_wandbs_enumeration_in_the_agents_format():
    sweep = load_sweep("sweeps/objectives_toy.yaml")
    sets = generated_parameters(sweep)
    assert len(sets) == 8 * 2 * 3
    assert len({tuple(sorted((k, str(v)) for k, v in s.items())) for s in sets}) == len(sets)
    line = agent_command(sweep, sets[0])
    assert line == ["/usr/bin/env", "python", "train.py", "--config", "configs/grid/nonsaturating.yaml",
                    "--trainer.logger.init_args.offline=false",
                    *[f"--{key}={value}" for key, value in sets[0].items()]]


def test_random_and_bayes_draws_respect_the_declared_ranges():
    sweep = load_sweep("sweeps/wgan_gp_toy.yaml")
    for method in ("random", "bayes"):
        for draw in generated_parameters({**sweep, "method": method}, draws=5):
            assert 1e-5 <= draw["model.init_args.lr_d"] <= 1e-3
            assert 0.01 <= draw["model.init_args.gradient_penalty_weight"] <= 10.0
            assert draw["model.init_args.n_critic"] in (1, 2, 5, 10)
            assert draw["model.init_args.betas_g"] in ([0.0, 0.9], [0.5, 0.9], [0.5, 0.999])


def write_sweep(tmp_path, **changes) -> Path:
    sweep = {"program": "train.py", "method": "grid", "metric": {"name": "eval/reverse_kl", "goal": "minimize"},
             "parameters": {"model.init_args.lr_d": {"values": [1e-4, 2e-4]}}, "command": COMMAND, **changes}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path


def problems(path) -> list[str]:
    with pytest.raises(SweepError) as error:
        check_sweep(path)
    return error.value.problems


def test_a_sweep_naming_an_unknown_parameter_is_caught_before_any_job_runs(tmp_path):
    path = write_sweep(tmp_path, parameters={"model.init_args.lr_dd": {"values": [1e-4, 2e-4, 3e-4]}})
    (problem,) = problems(path)  # once, not once per parameter set
    assert problem.startswith("the command for {'model.init_args.lr_dd': 0.0001} (and 2 other parameter set(s) "
                              "of the 3) fails: ")
    assert "model.init_args.lr_dd is not a key of lit_gan.objectives.WGANGP" in problem
    assert "did you mean lr_d?" in problem


def test_every_item_of_a_values_list_is_tried_in_a_random_search(tmp_path):
    # Three draws of six items left most untried: n_critic=0 last in the list passed the check.
    path = write_sweep(tmp_path, method="random", parameters={
        "model.init_args.n_critic": {"values": [1, 2, 3, 4, 5, 0]},
        "model.init_args.lr_d": {"distribution": "log_uniform_values", "min": 1e-5, "max": 1e-3}})
    sets = generated_parameters(load_sweep(path), draws=3)
    assert {s["model.init_args.n_critic"] for s in sets} == {0, 1, 2, 3, 4, 5} and len(sets) <= 3 + 6
    (problem,) = problems(path)
    assert "'model.init_args.n_critic': 0" in problem


def test_a_value_our_cli_refuses_is_caught(tmp_path):
    path = write_sweep(tmp_path, parameters={"model.init_args.n_critic": {"values": [5, 0]}})
    (problem,) = problems(path)
    assert "'model.init_args.n_critic': 0" in problem and "n_critic" in problem.split("fails: ")[1]


def test_a_metric_the_runs_do_not_log_or_the_wrong_direction_is_caught(tmp_path):
    (problem,) = problems(write_sweep(tmp_path, metric={"name": "eval/fid", "goal": "minimize"}))
    assert "metric.name='eval/fid' is not logged" in problem
    assert "eval/high_quality_pct, eval/modes, eval/reverse_kl, eval/reverse_kl_hq" in problem
    (problem,) = problems(write_sweep(tmp_path, metric={"name": "eval/modes", "goal": "minimize"}))
    assert problem.endswith("metric.goal='minimize' is not valid for eval/modes: expected 'maximize'")


def test_the_ema_generators_scores_are_valid_metrics_only_with_an_ema(tmp_path):
    metric = {"name": "eval_ema/reverse_kl", "goal": "minimize"}
    assert problems(write_sweep(tmp_path, metric=metric))
    assert check_sweep(write_sweep(tmp_path, metric=metric, command=[
        *COMMAND[:-1], "--model.init_args.ema_decay=0.999", "${args}"]))


def test_the_command_must_put_config_before_args_and_run_train_py(tmp_path):
    swapped = ["${env}", "${interpreter}", "${program}", "${args}", "--config", "configs/grid/wgan_gp.yaml"]
    assert problems(write_sweep(tmp_path, command=swapped)) == [
        "command must end with ${args}, but --config configs/grid/wgan_gp.yaml follows it (it would override the "
        "sweep's values)",
        "command must name --config FILE before ${args}, so the sweep's values override the file"]
    # A flag after ${args} overrode the swept value silently (it was reported ok).
    trailing = [*COMMAND, "--model.init_args.n_critic=1"]
    assert problems(write_sweep(tmp_path, command=trailing)) == [
        "command must end with ${args}, but --model.init_args.n_critic=1 follows it (it would override the sweep's "
        "values)"]
    offline = [token for token in COMMAND if "offline" not in token]  # the configs log offline by default
    assert problems(write_sweep(tmp_path, command=offline)) == [
        "the runs do not report to the W&B server, so the sweep never sees its metric: expected "
        "--trainer.logger.init_args.offline=false before ${args}"]
    assert problems(write_sweep(tmp_path, program="main.py")) == ["program='main.py' is not valid: expected 'train.py'"]
    missing = [*COMMAND[:4], "configs/grid/nope.yaml", "${args}"]
    assert problems(write_sweep(tmp_path, command=missing)) == [
        "--config configs/grid/nope.yaml is not valid: expected an existing file"]


class OwnGrid(GridGaussians):
    """A datamodule of one's own that does not declare the keys its metric logs."""

    metric_goals = None


def test_config_as_one_token_and_a_datamodule_of_ones_own_are_accepted(tmp_path):
    one_token = ["${env}", "${interpreter}", "${program}", "--config=configs/grid/wgan_gp.yaml", *COMMAND[-2:]]
    assert len(check_sweep(write_sweep(tmp_path, command=one_token))) == 2
    own = [*COMMAND[:-1], "--data.class_path=tests.test_sweeps.OwnGrid", "${args}"]
    assert len(check_sweep(write_sweep(tmp_path, command=own, metric={"name": "eval/anything"}))) == 2


def test_no_draws_is_refused_rather_than_reported_ok(tmp_path, capsys):
    from lit_gan.sweep import main

    with pytest.raises(SystemExit):
        main(["sweeps/seeds.yaml", "--draws", "0"])
    assert "--draws=0 is not valid: expected an integer >= 1" in capsys.readouterr().err


def test_wandbs_schema_rejects_what_wandb_sweep_would(tmp_path):
    (problem,) = problems(write_sweep(tmp_path, metric={"name": "eval/modes", "goal": "maximise"}))
    assert problem == "W&B sweep schema: 'maximise' is not one of ['minimize', 'maximize']"


def test_the_command_line_tool_reports_every_file(tmp_path, capsys):
    from lit_gan.sweep import main

    bad = write_sweep(tmp_path, parameters={"model.init_args.lr_dd": {"values": [1e-4]}})
    assert main(["sweeps/seeds.yaml", str(bad)]) == 1
    out, err = capsys.readouterr()
    assert "sweeps/seeds.yaml: ok (10 command lines build)" in out
    assert f"{bad}: the command for" in err and "lr_dd" in err


@pytest.mark.slow
def test_an_agents_command_trains_and_logs_the_sweeps_metric(tmp_path):
    """The first run of the toy objective sweep, started exactly as ``wandb agent`` starts it (shortened)."""
    sweep = load_sweep("sweeps/objectives_toy.yaml")
    parameters = generated_parameters(sweep)[0]
    line = agent_command(sweep, parameters) + [
        "--generator_steps=20", "--evaluation.every_n_generator_steps=10", "--evaluation.num_samples=200",
        *quiet_args(tmp_path)]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}  # the agent's `python` is this interpreter
    finished = subprocess.run(line, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-3000:]
    run = read_run(find_run_file(next(Path(tmp_path, "wandb").glob("offline-run-*"))))
    metric = sweep["metric"]["name"]
    assert [row["generator_step"] for row in run["history"] if metric in row] == [0, 10, 20]
    assert math.isfinite(run["summary"][metric])
    # The run is the one the parameters asked for: the swapped-in objective, data and seed.
    model = yaml.safe_load(Path(parameters["model"]).read_text())
    assert run["config"]["model"]["class_path"] == model["class_path"]
    assert run["config"]["data"]["class_path"] == "lit_gan.data.RingGaussians"
    assert run["config"]["seed_everything"] == parameters["seed_everything"]


def test_each_datamodule_declares_the_keys_its_metric_logs_with_their_directions():
    """``metric_goals`` (what a sweep may name) equals what ``compute()`` returns; the goal points from bad to good."""
    grid = GridGaussians()
    good = grid.centers[torch.arange(2500) % 25] + 0.05 * torch.randn(2500, 2)
    # Nearly every sample between modes, all nearest to one, and the few high-quality ones on one mode.
    bad = torch.cat([torch.full((2400, 2), 0.9), grid.centers[12].expand(100, 2)])
    digits, stacked = Digits(), StackedDigits()
    stacked_real = torch.stack([stacked.train_dataset()[i][0] for i in range(2000)])
    cases = [(grid, good, bad), (digits, digits.images, (digits.images + 1.0).clamp(-1, 1)),
             (stacked, stacked_real, stacked_real[:1].expand(2000, -1, -1, -1))]
    for datamodule, good_samples, bad_samples in cases:
        scores = []
        for samples in (good_samples, bad_samples):
            metric = datamodule.evaluation_metric()
            metric.update(samples)
            scores.append({k: v.item() for k, v in metric.compute().items()})
        assert set(scores[0]) == set(datamodule.metric_goals), type(datamodule).__name__
        for key, goal in datamodule.metric_goals.items():
            better, worse = scores[0][key], scores[1][key]
            assert (better > worse) if goal == "maximize" else (better < worse), (type(datamodule).__name__, key)


def test_the_slurm_agent_array_script_checks_its_arguments():
    script = ROOT / "scripts" / "slurm" / "sweep_agent.sbatch"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    usage = subprocess.run(["bash", str(script)], capture_output=True, text=True)
    assert usage.returncode == 2 and "ENTITY/PROJECT/SWEEP_ID [RUNS_PER_AGENT]" in usage.stderr
    count = subprocess.run(["bash", str(script), "me/lit-gan/abc123", "many"], capture_output=True, text=True)
    assert count.returncode == 2 and "RUNS_PER_AGENT=many is not valid: expected a positive integer" in count.stderr


@pytest.mark.parametrize("script", ["train.sbatch", "sweep_agent.sbatch"])
def test_the_folder_of_a_slurm_job_log_exists_in_a_fresh_checkout(script):
    # SLURM opens --output before the script runs: a missing folder failed the job with no log at all
    # (outputs/ is ignored, so a fresh clone had no outputs/slurm/).
    text = (ROOT / "scripts" / "slurm" / script).read_text()
    folder = Path(re.search(r"^#SBATCH --output=(.+)/[^/]+$", text, re.M).group(1))
    assert (ROOT / folder).is_dir()
    tracked = subprocess.run(["git", "ls-files", "--error-unmatch", str(folder / ".gitkeep")], cwd=ROOT,
                             capture_output=True)
    assert tracked.returncode == 0, f"{folder}/.gitkeep is not in the repository"
