"""Seed groups (``study --stack``): runs that make their updates as one stacked computation still give,
each, the numbers of the run alone, to the bit, and carry on alone when the group breaks up."""

from __future__ import annotations

import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from lit_gan.seed_group import SeedGroup
from lit_gan.study import main, run_context, seed_groups, stack_directory, train_process

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


def test_runs_in_seed_groups_give_the_numbers_of_runs_alone(tmp_path):
    """The small non-saturating MLP, and R1 with a batch-norm generator and learning-rate decay."""
    configs = ["configs/grid/nonsaturating.yaml", "configs/ring/r1_sharp.yaml"]
    rows = {}
    for stack in (3, 1):
        rows[stack] = main(["--configs", *configs, "--seeds", "0", "1", "2", "--generator_steps", "30",
                            "--stack", str(stack), "--jobs", "2", "--out", str(tmp_path / f"out{stack}"),
                            "--runs_dir", str(tmp_path / f"runs{stack}")])
    logs = tmp_path / "runs3" / "logs"
    assert all(JOINED in (logs / f"{Path(r['run_dir']).name}.log").read_text() for r in rows[3])
    scores = ("modes", "high_quality_pct", "reverse_kl")
    assert [[r[k] for k in scores] for r in rows[3]] == [[r[k] for k in scores] for r in rows[1]]
    for grouped, alone in zip(rows[3], rows[1]):
        assert_same_run(checkpoint(grouped["run_dir"]), checkpoint(alone["run_dir"]))
        history = [json.loads((Path(r["run_dir"]) / "evaluation.json").read_text()) for r in (grouped, alone)]
        assert history[0] == history[1]
    assert rows[1][0]["reverse_kl"] != rows[1][1]["reverse_kl"]  # the seeds differ: the comparison is not vacuous


def test_a_member_that_finishes_first_leaves_the_other_to_go_on_alone(tmp_path):
    """The longer run trains stacked, then alone, and ends where it would have alone all along."""
    context = run_context()
    environment = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}

    def argv(seed: int, steps: int, where: str) -> list[str]:
        return ["--config", "configs/grid/nonsaturating.yaml", f"--generator_steps={steps}",
                f"--seed_everything={seed}", f"--data.init_args.seed={seed}", "--trainer.enable_progress_bar=false",
                f"--trainer.logger.init_args.save_dir={tmp_path / where}"]

    directory = stack_directory()
    try:
        group = SeedGroup.create(context, directory, 2)
        with ThreadPoolExecutor(2) as pool:
            codes = list(pool.map(
                lambda member: train_process(context, argv(*member[1], f"group{member[0]}"),
                                             tmp_path / f"group{member[0]}.log", 1, environment,
                                             seed_group=group.member(member[0])),
                enumerate([(0, 15), (1, 40)])))
    finally:
        shutil.rmtree(directory)
    assert codes == [0, 0]
    for slot, (seed, steps) in enumerate([(0, 15), (1, 40)]):
        assert JOINED in (tmp_path / f"group{slot}.log").read_text()
        assert train_process(context, argv(seed, steps, f"alone{slot}"), tmp_path / f"alone{slot}.log", 1,
                             environment) == 0
        assert_same_run(checkpoint(next((tmp_path / f"group{slot}").glob("*/*"))),
                        checkpoint(next((tmp_path / f"alone{slot}").glob("*/*"))))


def test_runs_that_cannot_be_stacked_train_alone_and_say_why(tmp_path):
    rows = main(["--configs", "configs/grid/hinge_sn.yaml", "--seeds", "0", "1", "--generator_steps", "5",
                 "--stack", "2", "--jobs", "1", "--out", str(tmp_path / "out"), "--runs_dir", str(tmp_path / "runs")])
    assert [r["generator_steps"] for r in rows] == [5, 5]
    for row in rows:
        log = (tmp_path / "runs" / "logs" / f"{Path(row['run_dir']).name}.log").read_text()
        assert "Training alone, not stacked with the other seeds" in log and "spectral norm" in log
        assert JOINED not in log


def test_seeds_are_grouped_by_config_in_groups_of_nearly_equal_size():
    cells = [(("a", seed), ("a", seed)) for seed in range(5)] + [(("b", 0), ("b", 0))]
    sizes = lambda stack: [[key[1] for key, _ in group] for group in seed_groups(cells, stack)]  # noqa: E731
    assert sizes(4) == [[0, 2, 4], [1, 3], [0]]
    assert sizes(5) == [[0, 1, 2, 3, 4], [0]]
    assert sizes(1) == [[0], [1], [2], [3], [4], [0]]
