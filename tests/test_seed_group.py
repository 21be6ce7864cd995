"""Seed groups (``study --stack``): runs that make their updates as one stacked computation still give,
each, the numbers of the run alone, to the bit, and carry on alone when the group breaks up."""

from __future__ import annotations

import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from lit_gan.seed_group import SeedGroup
from lit_gan.cli import LitGANCLI
from lit_gan.stacking import NotStackable, check_stackable
import lit_gan.study
from lit_gan.study import (ROOT, looks_stackable, main, run_context, run_group, seed_groups, stack_directory,
                           train_process)

JOINED = "Seed group: this run makes its updates as one stacked computation"


def checkpoint(run_dir) -> dict:
    return torch.load(next(Path(run_dir).glob("checkpoints/last.ckpt")), weights_only=True)


def assert_same_run(ours: dict, theirs: dict) -> None:
    """Weights, batch-norm statistics, Adam state, clock and random state of two checkpoints, to the bit."""
    assert ours["gan_clock"] == theirs["gan_clock"] and ours["global_step"] == theirs["global_step"]
    assert ours["state_dict"].keys() == theirs["state_dict"].keys()
    for key, value in theirs["state_dict"].items():
        assert torch.equal(ours["state_dict"][key], value), key
    for mine, other in zip(ours["optimizer_states"], theirs["optimizer_states"]):
        assert mine["state"].keys() == other["state"].keys()
        for index, state in other["state"].items():
            for name, value in state.items():
                assert torch.equal(mine["state"][index][name], value), (index, name)
        assert mine["param_groups"] == other["param_groups"]
    assert torch.equal(ours["rng_states"]["torch"], theirs["rng_states"]["torch"])


@pytest.mark.slow
def test_runs_in_seed_groups_give_the_numbers_of_runs_alone(tmp_path):
    """The small non-saturating MLP; R1 with a batch-norm generator and learning-rate decay; WGAN-GP with
    5 critic steps per generator step."""
    configs = ["configs/grid/nonsaturating.yaml", "configs/ring/r1_sharp.yaml", "configs/grid/wgan_gp.yaml"]
    rows = {}
    for stack in (3, 1):
        rows[stack] = main(["--configs", *configs, "--seeds", "0", "1", "2", "--generator_steps", "20",
                            "--stack", str(stack), "--jobs", "2", "--threads", "1",  # as a group's members
                            "--out", str(tmp_path / f"out{stack}"),
                            "--runs_dir", str(tmp_path / f"runs{stack}")])
    logs = tmp_path / "runs3" / "logs"
    for row in rows[3]:  # every update made stacked: equal numbers are not those of runs that all went alone
        log = (logs / f"{Path(row['run_dir']).name}.log").read_text()
        n_critic = 5 if "wgan_gp" in row["config"] else 1
        assert JOINED in log and f"Seed group: {20 * n_critic} discriminator updates made stacked, 0 alone" in log
    scores = ("modes", "high_quality_pct", "reverse_kl")
    assert [[r[k] for k in scores] for r in rows[3]] == [[r[k] for k in scores] for r in rows[1]]
    for grouped, alone in zip(rows[3], rows[1]):
        assert_same_run(checkpoint(grouped["run_dir"]), checkpoint(alone["run_dir"]))
        # Each run saves its own tensors, not the group's shared buffers (every member's weights and moments).
        sizes = [(Path(r["run_dir"]) / "checkpoints" / "last.ckpt").stat().st_size for r in (grouped, alone)]
        assert sizes[0] < 1.1 * sizes[1], sizes
        history = [json.loads((Path(r["run_dir"]) / "evaluation.json").read_text()) for r in (grouped, alone)]
        assert json.dumps(history[0]) == json.dumps(history[1])  # as text: a NaN score equals a NaN score
    assert rows[1][0]["reverse_kl"] != rows[1][1]["reverse_kl"]  # the seeds differ: the comparison is not vacuous


ENVIRONMENT = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}


def argv(seed: int, steps: int, save_dir: Path, *extra: str, config: str = "configs/grid/nonsaturating.yaml") -> list[str]:
    return ["--config", config, f"--generator_steps={steps}", f"--seed_everything={seed}",
            f"--data.init_args.seed={seed}", "--trainer.enable_progress_bar=false",
            f"--trainer.logger.init_args.save_dir={save_dir}", *extra]


def train_group(tmp_path: Path, name: str, members: list[list[str]]) -> list[str]:
    """Train ``members`` (train.py arguments) as one seed group; each one's log."""
    context, directory = run_context(), stack_directory()
    logs = [tmp_path / f"{name}{slot}.log" for slot in range(len(members))]
    try:
        group = SeedGroup.create(context, directory, len(members))
        with ThreadPoolExecutor(len(members)) as pool:
            codes = list(pool.map(lambda slot: train_process(context, members[slot], logs[slot], 1, ENVIRONMENT,
                                                             seed_group=group.member(slot)), range(len(members))))
    finally:
        shutil.rmtree(directory)
    assert codes == [0] * len(members), [log.read_text()[-2000:] for log in logs]
    return [log.read_text() for log in logs]


def train_alone(arguments: list[str], log: Path) -> None:
    assert train_process(run_context(), arguments, log, 1, ENVIRONMENT) == 0, log.read_text()[-2000:]


def last_checkpoint(save_dir: Path) -> dict:
    return torch.load(next(save_dir.glob("*/*/checkpoints/last.ckpt")), weights_only=True)


def test_a_member_that_finishes_first_leaves_the_other_to_go_on_alone(tmp_path):
    """The longer run trains stacked, then alone, and ends where it would have alone all along."""
    members = [(0, 15), (1, 40)]
    logs = train_group(tmp_path, "group", [argv(seed, steps, tmp_path / f"group{seed}") for seed, steps in members])
    assert all(JOINED in log for log in logs)
    assert "Seed group: 15 discriminator updates made stacked, 0 alone" in logs[0]
    assert "Seed group: 15 discriminator updates made stacked, 25 alone" in logs[1]
    for seed, steps in members:
        train_alone(argv(seed, steps, tmp_path / f"alone{seed}"), tmp_path / f"alone{seed}.log")
        assert_same_run(last_checkpoint(tmp_path / f"group{seed}"), last_checkpoint(tmp_path / f"alone{seed}"))


def test_runs_at_different_steps_train_alone_from_where_each_stands(tmp_path):
    """A run resumed from a checkpoint (Adam and the clock further on) and a fresh one do not stack; each
    trains alone, with its own Adam step count, as it would outside a group."""
    train_alone(argv(0, 10, tmp_path / "first"), tmp_path / "first.log")
    resume = f"--ckpt_path={next((tmp_path / 'first').glob('*/*/checkpoints/last.ckpt'))}"
    logs = train_group(tmp_path, "group", [argv(0, 20, tmp_path / "group0", resume), argv(1, 20, tmp_path / "group1")])
    assert "the runs are at different steps" in logs[0] and "cannot be stacked" in logs[1]
    assert not any(JOINED in log for log in logs)
    train_alone(argv(0, 20, tmp_path / "alone0", resume), tmp_path / "alone0.log")
    train_alone(argv(1, 20, tmp_path / "alone1"), tmp_path / "alone1.log")
    for seed in (0, 1):
        assert_same_run(last_checkpoint(tmp_path / f"group{seed}"), last_checkpoint(tmp_path / f"alone{seed}"))


def test_runs_that_cannot_be_stacked_train_alone_and_say_why(tmp_path):
    """The runner does not group such a config (below); members that find themselves grouped anyway say why
    and train alone."""
    logs = train_group(tmp_path, "group", [argv(seed, 5, tmp_path / f"group{seed}", config="configs/grid/hinge_sn.yaml")
                                           for seed in (0, 1)])  # spectral norm on D
    for log in logs:
        assert "Training alone, not stacked with the other seeds" in log and "spectral norm" in log
        assert JOINED not in log and "Final evaluation (generator iteration 5)" in log


def test_seeds_are_grouped_by_config_in_groups_of_nearly_equal_size():
    stackable, other = "configs/grid/nonsaturating.yaml", "configs/grid/hinge_sn.yaml"  # spectral norm: alone
    cells = [((stackable, seed), (stackable, seed)) for seed in range(5)] + [((other, s), (other, s)) for s in (0, 1)]
    sizes = lambda stack: [[key[1] for key, _ in group] for group in seed_groups(cells, stack)]  # noqa: E731
    assert sizes(4) == [[0, 2, 4], [1, 3], [0], [1]]
    assert sizes(5) == [[0, 1, 2, 3, 4], [0], [1]]
    assert sizes(1) == [[0], [1], [2], [3], [4], [0], [1]]


@pytest.mark.parametrize("config", sorted(str(p.relative_to(ROOT)) for p in (ROOT / "configs" / "grid").glob("*.yaml"))
                         + ["configs/stacked_digits/nonsaturating_dcgan.yaml", "configs/quickstart.yaml"])
def test_the_runner_groups_exactly_the_configs_that_stack(config, tmp_path):
    """The runner's look at the YAML agrees with what the runs find when they try (lit_gan.stacking)."""
    cli = LitGANCLI(args=["--config", config, f"--trainer.default_root_dir={tmp_path}",
                          f"--trainer.logger.init_args.save_dir={tmp_path}"])
    cli.model.trainer = cli.trainer  # the learning-rate schedule reads the run's length
    optimizers = cli.model.configure_optimizers()
    try:
        check_stackable(cli.model, optimizers[0] if isinstance(optimizers, tuple) else optimizers)
        stacks = True
    except NotStackable:
        stacks = False
    assert looks_stackable(ROOT / config) == stacks


@pytest.mark.parametrize("flag", ["--stack", "--jobs"])
def test_a_study_refuses_fewer_than_one_seed_per_group_or_job(flag, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--configs", "configs/grid/nonsaturating.yaml", flag, "0", "--out", str(tmp_path / "out")])
    assert f"{flag}=0 is not valid: expected an integer >= 1" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_each_run_of_a_group_is_reported_when_it_ends(tmp_path):
    """A member that fails at once (its checkpoint is unreadable) is reported while the other still trains,
    alone, to its end."""
    runs = tmp_path / "runs"
    broken = runs / "lit-gan" / "bbbb1111" / "checkpoints" / "last.ckpt"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"not a checkpoint")
    reports = []

    def report(index, result):
        reports.append((index, result, "Final evaluation" in (runs / "logs" / "aaaa0000.log").read_text()))

    config = ROOT / "configs/grid/nonsaturating.yaml"
    # 1,500 iterations: seconds of training after the other's failure at its start, on any machine
    run_group([(config, 0, "aaaa0000"), (config, 1, "bbbb1111")], run_context(), report, generator_steps=1500,
              runs_dir=runs, threads=1, group="test")
    (first, error, other_done), (second, row, _) = reports
    assert (first, second) == (1, 0)
    assert isinstance(error, RuntimeError) and "failed" in str(error) and not other_done
    assert row["seed"] == 0 and row["generator_steps"] == 1500


def test_a_group_that_cannot_be_set_up_trains_its_seeds_one_by_one(tmp_path, monkeypatch, capsys):
    def no_room():
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(lit_gan.study, "stack_directory", no_room)
    rows = main(["--configs", "configs/grid/nonsaturating.yaml", "--seeds", "0", "1", "--generator_steps", "5",
                 "--stack", "2", "--jobs", "1", "--out", str(tmp_path / "out"), "--runs_dir", str(tmp_path / "runs")])
    assert [r["seed"] for r in rows] == [0, 1] and all(r["generator_steps"] == 5 for r in rows)
    assert "could not set up a seed group for seeds [0, 1] (OSError: [Errno 28] No space left on device); " \
           "training them one after another" in capsys.readouterr().err
    assert not any(JOINED in log.read_text() for log in (tmp_path / "runs" / "logs").glob("*.log"))
