"""A run resumed from a mid-run checkpoint ends exactly where the uninterrupted run ends."""

from __future__ import annotations

import json
import signal
import subprocess
import warnings

import lightning.pytorch as pl
import pytest
import torch

from lit_gan.callbacks import GeneratorCheckpoint, run_directory
from lit_gan.callbacks.checkpoint import prune_numbered
from lit_gan.cli import main
from lit_gan.objectives import NonSaturatingGAN, optimizer_steps
from tests.conftest import quiet_args, start_training

# WGAN-GP with n_critic 5 (the place in the critic cycle matters), a penalty that draws random
# interpolation weights, linear learning-rate decay (scheduler state) and a moving average of G.
ARGS = ["--config", "configs/grid/wgan_gp.yaml", "--generator_steps=12", "--model.init_args.lr_decay=linear",
        "--model.init_args.ema_decay=0.9", "--model.init_args.historical_averaging=0.01",
        "--evaluation.every_n_generator_steps=4", "--evaluation.num_samples=300",
        "--checkpoint.every_n_generator_steps=6", "--trainer.log_every_n_steps=2"]


def test_resuming_from_a_mid_run_checkpoint_reproduces_the_uninterrupted_run(tmp_path):
    uninterrupted = main([*ARGS, *quiet_args(tmp_path)])
    final = {k: v.clone() for k, v in uninterrupted.model.state_dict().items()}
    run_id = uninterrupted.trainer.logger.version
    run_dir = tmp_path / "lit-gan" / run_id
    midway = run_dir / "checkpoints" / "generator_step=0000006.ckpt"
    assert torch.load(midway, weights_only=False)["gan_clock"] == {"generator_step": 6, "discriminator_step": 30,
                                                                   "run_length": 12}
    history_before = json.loads((run_dir / "evaluation.json").read_text())

    resumed = main([*ARGS, *quiet_args(tmp_path), f"--ckpt_path={midway}"])

    assert resumed.model.generator_step == 12 and resumed.model.discriminator_step == 60
    for key, value in resumed.model.state_dict().items():
        torch.testing.assert_close(value, final[key], rtol=0, atol=0, msg=key)
    assert resumed.trainer.logger.version == run_id  # the same W&B run continues
    history = json.loads((run_dir / "evaluation.json").read_text())
    assert [row["generator_step"] for row in history] == [0, 4, 8, 12]
    assert json.dumps(history) == json.dumps(history_before)  # same scores at every evaluation (NaN equal to NaN)


def test_a_run_resumed_mid_epoch_counts_generator_iterations_from_where_it_stands(tmp_path, capsys):
    # Lightning calls no on_train_epoch_start for an epoch it resumes mid-way: its own bar showed "Training: 7/?".
    first = main(["--config", "configs/grid/nonsaturating.yaml", "--generator_steps=6", *quiet_args(tmp_path),
                  "--checkpoint.every_n_generator_steps=3"])
    midway = run_directory(first.trainer) / "checkpoints" / "generator_step=0000003.ckpt"
    capsys.readouterr()
    resumed = main(["--config", "configs/grid/nonsaturating.yaml", "--generator_steps=6", *quiet_args(tmp_path),
                    "--trainer.enable_progress_bar=true", f"--ckpt_path={midway}"])
    bar = resumed.trainer.progress_bar_callback.train_progress_bar
    assert (bar.desc, bar.initial, bar.n, bar.total) == ("Generator iterations: ", 3, 6, 6)
    assert "Generator iterations:  50%" in capsys.readouterr().out


def test_resuming_without_the_saved_state_would_differ(tmp_path):
    """The comparison above can fail: a restart from the same weights but fresh random state diverges."""
    first = main([*ARGS, *quiet_args(tmp_path)])
    final = first.model.state_dict()
    midway = next(tmp_path.glob("lit-gan/*/checkpoints/generator_step=0000006.ckpt"))
    checkpoint = torch.load(midway, weights_only=True)  # plain tensors and values only
    del checkpoint["rng_states"]
    for key in list(checkpoint):
        if key.endswith("GridGaussians"):
            checkpoint[key] = {"batches_consumed": 0}
    torch.save(checkpoint, tmp_path / "stateless.ckpt")
    restarted = main([*ARGS, *quiet_args(tmp_path / "again"), f"--ckpt_path={tmp_path / 'stateless.ckpt'}"])
    assert not torch.equal(restarted.model.generator.net[0].weight, final["generator.net.0.weight"])


@pytest.mark.parametrize("content", [b"", b"not a checkpoint"])
def test_a_missing_or_corrupt_checkpoint_is_a_clear_error(tmp_path, capsys, content):
    path = tmp_path / "broken.ckpt"
    path.write_bytes(content)
    for bad in (tmp_path / "missing.ckpt", path):
        with pytest.raises(SystemExit):
            main([*ARGS, *quiet_args(tmp_path), f"--ckpt_path={bad}"])
        assert f"ckpt_path={bad} is not valid: expected" in capsys.readouterr().err


@pytest.mark.parametrize("signum, exit_code", [(signal.SIGINT, 1), (signal.SIGTERM, 143)], ids=["ctrl_c", "sigterm"])
def test_an_interrupted_run_saves_a_checkpoint_that_resumes(tmp_path, signum, exit_code):
    process = start_training(tmp_path, "--config", "configs/grid/nonsaturating.yaml")
    try:
        process.send_signal(signum)
        _, err = process.communicate(timeout=120)
    finally:
        process.kill()  # no-op when it has exited; never leave a training process behind
    assert process.returncode == exit_code, err[-2000:]
    last = next(tmp_path.glob("lit-gan/*/checkpoints/last.ckpt"))
    assert f"Saved {last}; resume with the same command plus --ckpt_path {last}" in err
    clock = torch.load(last, weights_only=True)["gan_clock"]
    step = clock["generator_step"]
    assert 0 < step < 100000
    assert clock["discriminator_step"] == step  # a whole iteration (n_critic 1): the signal waited for its end
    if signum == signal.SIGINT:
        assert "Ctrl-C: stopping after this generator iteration" in err
    resumed = main(["--config", "configs/grid/nonsaturating.yaml", f"--generator_steps={step + 5}",
                    f"--ckpt_path={last}", *quiet_args(tmp_path)])
    assert resumed.model.generator_step == step + 5


def test_an_unwritable_checkpoint_folder_gives_a_clear_error_and_keeps_the_previous_checkpoint(tmp_path, capsys):
    args = ["--config", "configs/grid/nonsaturating.yaml", "--evaluation.num_samples=200",
            f"--checkpoint.dirpath={tmp_path / 'ckpt'}", *quiet_args(tmp_path)]
    main([*args, "--generator_steps=4"])
    folder, last = tmp_path / "ckpt", tmp_path / "ckpt" / "last.ckpt"
    before = last.read_bytes()
    # Read-only even for root: the immutable attribute (ext4, xfs, btrfs).
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("this filesystem cannot be made read-only for the test (chattr +i)")
    try:
        with pytest.raises(SystemExit) as exit_info:
            main([*args, "--generator_steps=6", "--checkpoint.every_n_generator_steps=3"])
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert f"error: cannot write checkpoint {last} (" in err and "); the previous last.ckpt is intact" in err
    assert "Traceback" not in err
    assert last.read_bytes() == before
    assert torch.load(last, weights_only=True)["gan_clock"]["generator_step"] == 4


def test_resuming_from_an_earlier_checkpoint_keeps_the_checkpoint_it_writes(tmp_path):
    """Checkpoints at 2, 4 and 6; resumed from 2 and saving at 3 with keep=2, the run keeps its own 3 and
    leaves the abandoned trajectory's 4 and 6 alone."""
    base = ["--config", "configs/grid/nonsaturating.yaml", "--evaluation.num_samples=100", *quiet_args(tmp_path)]
    first = main([*base, "--generator_steps=6", "--checkpoint.every_n_generator_steps=2", "--checkpoint.keep=3"])
    folder = run_directory(first.trainer) / "checkpoints"
    main([*base, "--generator_steps=3", "--checkpoint.every_n_generator_steps=3", "--checkpoint.keep=2",
          f"--ckpt_path={folder / 'generator_step=0000002.ckpt'}"])
    assert sorted(p.name for p in folder.glob("generator_step=*.ckpt")) == [
        f"generator_step={step:07d}.ckpt" for step in (2, 3, 4, 6)]
    assert torch.load(folder / "generator_step=0000003.ckpt", weights_only=True)["gan_clock"]["generator_step"] == 3


def test_pruning_orders_numbered_checkpoints_by_iteration_past_seven_digits(tmp_path):
    """Past 10^7 iterations a name has eight digits and sorts before seven-digit ones by name."""
    for step in (9_999_998, 9_999_999, 10_000_000, 10_000_001):
        (tmp_path / f"generator_step={step:07d}.ckpt").touch()
    (tmp_path / "last.ckpt").touch()
    prune_numbered(tmp_path, 10_000_000, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "generator_step=10000000.ckpt", "generator_step=10000001.ckpt", "generator_step=9999999.ckpt", "last.ckpt"]


def test_a_checkpoint_knows_the_best_score_of_its_own_iteration(tmp_path):
    """At an iteration that is evaluated and checkpointed, best.ckpt is judged first, so last.ckpt carries the
    best score including that evaluation (a run resumed from it does not evaluate that iteration again)."""
    cli = main(["--config", "configs/quickstart.yaml", "--generator_steps=40", "--evaluation.every_n_generator_steps=20",
                "--evaluation.num_samples=500", "--checkpoint.every_n_generator_steps=20",
                "--checkpoint.monitor=eval/reverse_kl", "--checkpoint.mode=min", *quiet_args(tmp_path)])
    folder = run_directory(cli.trainer) / "checkpoints"
    scores = [row["eval/reverse_kl"] for row in json.loads((folder.parent / "evaluation.json").read_text())]
    assert scores[-1] < min(scores[:-1])  # the last evaluation is the best: what this test is about
    for name in ("last.ckpt", "generator_step=0000040.ckpt", "best.ckpt"):
        checkpoint = torch.load(folder / name, weights_only=False)
        (state,) = [v for k, v in checkpoint["callbacks"].items() if k.startswith("GeneratorCheckpoint")]
        assert state["best_score"] == pytest.approx(scores[-1]), name


@pytest.mark.parametrize("workers, resumed_from", [(0, (14, 28)), (2, (42,))])
def test_an_image_run_resumed_mid_epoch_reproduces_the_uninterrupted_run(tmp_path, workers, resumed_from):
    # 1,797 digits in batches of 64: 28 batches an epoch. Resumed from iteration 14 (mid epoch 0), 28 (the start
    # of epoch 1: the loader's seed draw once shifted G's noise) and 42 (mid epoch 1: worker processes once took
    # epoch 0's order); each epoch's order and the place in it come back.
    args = ["--config", "configs/digits/nonsaturating_dcgan.yaml", "--generator_steps=44",
            "--evaluation.every_n_generator_steps=100", "--evaluation.num_samples=200",
            "--checkpoint.every_n_generator_steps=14", "--checkpoint.keep=3", "--trainer.log_every_n_steps=5",
            f"--data.init_args.num_workers={workers}"]
    uninterrupted = main([*args, *quiet_args(tmp_path)])
    final = {k: v.clone() for k, v in uninterrupted.model.state_dict().items()}
    checkpoints = tmp_path / "lit-gan" / uninterrupted.trainer.logger.version / "checkpoints"
    for step in resumed_from:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            resumed = main([*args, *quiet_args(tmp_path / str(step)),
                            f"--ckpt_path={checkpoints / f'generator_step={step:07d}.ckpt'}"])
        assert resumed.model.generator_step == 44
        for key, value in resumed.model.state_dict().items():
            torch.testing.assert_close(value, final[key], rtol=0, atol=0, msg=f"{key}, resumed from {step}")
        assert not [w for w in caught if "dataloader is not resumable" in str(w.message)]


SLURM_JOB = {"SLURM_NTASKS": "1", "SLURM_JOB_NAME": "lit-gan", "SLURM_JOB_ID": "42", "SLURM_NODELIST": "localhost",
             "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0"}


def test_a_requeued_slurm_job_resumes_its_own_requeue_checkpoint_over_the_ckpt_path_it_was_given(
        tmp_path, monkeypatch, capsys):
    # 14 iterations (ARGS' linear decay is laid over the run's length, which a resume must keep).
    first = main([*ARGS[:2], "--generator_steps=14", *ARGS[3:], *quiet_args(tmp_path)])
    checkpoints = tmp_path / "lit-gan" / first.trainer.logger.version / "checkpoints"
    # What Lightning leaves in the job's folder at SIGUSR1 (saved at iteration 12, inside job 42).
    requeue = torch.load(checkpoints / "generator_step=0000012.ckpt", weights_only=True) | {"slurm_job_id": "42"}
    torch.save(requeue, tmp_path / "hpc_ckpt_1.ckpt")
    for name, value in SLURM_JOB.items():
        monkeypatch.setenv(name, value)
    # The job was submitted resuming from iteration 6; its rerun after the requeue must not go back there.
    again = [*ARGS[:2], "--generator_steps=14", *ARGS[3:], *quiet_args(tmp_path),
             f"--ckpt_path={checkpoints / 'generator_step=0000006.ckpt'}"]
    resumed = main(again)
    assert resumed.trainer.ckpt_path == str(tmp_path / "hpc_ckpt_1.ckpt")
    assert resumed.model.generator_step == 14 and resumed.trainer.global_step == optimizer_steps(14, 5)
    assert resumed.trainer.logger.version == first.trainer.logger.version
    # Another job pointed at the same folder is refused instead of taking over job 42's run.
    monkeypatch.setenv("SLURM_JOB_ID", "43")
    with pytest.raises(SystemExit):
        main(again)
    assert (f"trainer.default_root_dir={tmp_path} is not valid: expected this SLURM job's own folder, but it holds "
            "hpc_ckpt_1.ckpt of job 42 (this is job 43)") in capsys.readouterr().err


def test_a_saved_config_runs_again_and_a_checkpoint_of_another_model_is_refused_before_it_is_replaced(
        tmp_path, capsys):
    first = main([*ARGS, *quiet_args(tmp_path)])
    run_dir = run_directory(first.trainer)
    # Resumed, the run rewrites its config.yaml; that file still trains the run from the start, in a new folder
    # (it held the checkpoint and the W&B id, and resumed the finished run in place).
    main([*ARGS, *quiet_args(tmp_path), f"--ckpt_path={run_dir / 'checkpoints' / 'generator_step=0000006.ckpt'}"])
    saved = (run_dir / "config.yaml").read_text()
    again = main(["--config", str(run_dir / "config.yaml"), *quiet_args(tmp_path / "again")])  # as it was saved
    assert run_directory(again.trainer) != run_dir and again.trainer.ckpt_path is None
    assert again.model.generator_step == 12 and again.trainer.max_steps == optimizer_steps(12, 5)
    for key, value in again.model.state_dict().items():
        assert torch.equal(value, first.model.state_dict()[key]), key  # the same run, from its saved config
    # The grid run's checkpoint given to a config with other networks: one line, and its run keeps its config.
    with pytest.raises(SystemExit):
        main(["--config", "configs/quickstart.yaml", *quiet_args(tmp_path),
              f"--ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}"])
    assert "is not valid: expected a checkpoint of this config's model, but" in capsys.readouterr().err
    assert (run_dir / "config.yaml").read_text() == saved


def test_a_run_without_a_logger_refuses_a_folder_holding_another_runs_files_but_resumes_there(tmp_path, capsys):
    kept = tmp_path / "kept"  # beside the run's folder, not in it
    tmp_path = tmp_path / "run"
    args = ["--config", "configs/ring/nonsaturating.yaml", "--generator_steps=4", "--evaluation.num_samples=100",
            "--checkpoint.every_n_generator_steps=2", "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={tmp_path}", "--trainer.logger=false"]
    main(args)
    before = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}
    assert {"config.yaml", "evaluation.json", "last.ckpt"} <= {path.name for path in before}
    with pytest.raises(SystemExit):
        main([*args, "--seed_everything=1"])
    assert (f"trainer.default_root_dir={tmp_path} is not valid: expected a folder of this run's own when "
            "trainer.logger is false, but it holds another run's config.yaml, evaluation.json, checkpoints") in capsys.readouterr().err
    assert {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()} == before  # nothing lost
    resumed = main([*args[:2], "--generator_steps=6", *args[3:], f"--ckpt_path={tmp_path / 'checkpoints' / 'last.ckpt'}"])
    assert resumed.model.generator_step == 6
    # Its checkpoints kept elsewhere (checkpoint.dirpath): resuming from there continues in the same folder too.
    resumed = main([*args[:2], "--generator_steps=8", *args[3:], f"--checkpoint.dirpath={kept}",
                    f"--ckpt_path={tmp_path / 'checkpoints' / 'last.ckpt'}"])
    assert resumed.model.generator_step == 8 and (kept / "last.ckpt").is_file()
    resumed = main([*args[:2], "--generator_steps=10", *args[3:], f"--checkpoint.dirpath={kept}",
                    f"--ckpt_path={kept / 'last.ckpt'}"])
    assert resumed.model.generator_step == 10


@pytest.mark.parametrize("override, expected", [
    (["--model.class_path=lit_gan.objectives.LSGAN"], "_class_path 'lit_gan.objectives.WGANGP' there, "
     "'lit_gan.objectives.LSGAN' here"),
    (["--model.init_args.lr_g=5e-5"], "lr_g 0.0001 there, 5e-05 here"),
    (["--model.init_args.penalties=[{class_path: lit_gan.penalties.R1Penalty, init_args: {weight: 1.0}}]"],
     "penalties ['GradientPenalty(weight=0.1)'] there, ['GradientPenalty(weight=0.1)', 'R1Penalty(weight=1.0)'] here"),
    (["--generator_steps=5"], "generator_steps=5 is not valid: expected at least the 6 generator iterations"),
    # Linear decay had reached lr 0 at iteration 6; twice the length would restart it from half the rate.
    (["--generator_steps=12"], "generator_steps=12 is not valid: expected 6, the length its run's "
     "model.lr_decay=linear was scheduled over"),
], ids=["objective", "learning_rate", "penalty", "shorter", "longer_decay"])
def test_a_resume_that_would_not_continue_the_checkpoints_run_is_refused(tmp_path, capsys, override, expected):
    # Same networks, so the weights fit; but Lightning would restore the old optimizers (new learning rates
    # recorded in config.yaml, not used), another objective would train on the old one's state, and a shorter
    # run would train nothing.
    first = main([*ARGS, *quiet_args(tmp_path), "--generator_steps=6"])
    last = run_directory(first.trainer) / "checkpoints" / "last.ckpt"
    saved = (run_directory(first.trainer) / "config.yaml").read_text()
    with pytest.raises(SystemExit):
        main([*ARGS, *quiet_args(tmp_path), *override, f"--ckpt_path={last}"])
    assert expected in capsys.readouterr().err
    assert (run_directory(first.trainer) / "config.yaml").read_text() == saved


class CtrlCTwiceAfterDiscriminatorStep(NonSaturatingGAN):
    """Presses Ctrl-C twice between D's Adam step and the clock of generator iteration 6."""

    def after_discriminator_step(self) -> None:
        if self.generator_step == 5:
            checkpoint = next(c for c in self.trainer.callbacks if isinstance(c, GeneratorCheckpoint))
            checkpoint._interrupt(signal.SIGINT, None)  # the first asks for a stop at the iteration's end
            checkpoint._interrupt(signal.SIGINT, None)  # the second stops at once, mid-iteration


def test_a_second_ctrl_c_stops_at_once_and_keeps_the_last_whole_iterations_checkpoint(tmp_path, capsys):
    # It saved the mid-iteration state over iteration 4's last.ckpt (D's Adam one step ahead of the clock: D would
    # train on that batch twice), and said it resumed.
    args = ["--config", "configs/grid/nonsaturating.yaml", "--generator_steps=8", "--evaluation.num_samples=200",
            "--checkpoint.every_n_generator_steps=2", *quiet_args(tmp_path)]
    with pytest.raises(SystemExit):
        main([*args, "--model.class_path=tests.test_resume.CtrlCTwiceAfterDiscriminatorStep"])
    last = next(tmp_path.glob("lit-gan/*/checkpoints/last.ckpt"))
    saved = torch.load(last, weights_only=False)
    assert saved["gan_clock"] == {"generator_step": 4, "discriminator_step": 4, "run_length": 8}
    assert all(state["step"] == 4 for state in saved["optimizer_states"][0]["state"].values())  # D's Adam in step
    assert f"Stopped at once, inside generator iteration 6: nothing saved; resume from {last}" in capsys.readouterr().err


class EvaluationFileAtFirstBatch(pl.Callback):
    """What evaluation.json says while the first resumed iteration trains."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if not hasattr(self, "steps"):
            rows = json.loads((run_directory(trainer) / "evaluation.json").read_text())
            self.steps = [row["generator_step"] for row in rows]


def test_a_run_resumed_from_an_earlier_checkpoint_drops_the_abandoned_evaluations_at_once(tmp_path):
    # They stayed in evaluation.json until the next evaluation: a resumed run diverging before it left them there.
    args = ["--config", "configs/ring/nonsaturating.yaml", "--generator_steps=8", "--evaluation.num_samples=100",
            "--evaluation.every_n_generator_steps=2", "--checkpoint.every_n_generator_steps=4", *quiet_args(tmp_path)]
    first = main(args)
    earlier = run_directory(first.trainer) / "checkpoints" / "generator_step=0000004.ckpt"
    resumed = main([*args, f"--ckpt_path={earlier}",
                    "--trainer.callbacks+=tests.test_resume.EvaluationFileAtFirstBatch"])
    watcher = next(c for c in resumed.trainer.callbacks if isinstance(c, EvaluationFileAtFirstBatch))
    assert watcher.steps == [0, 2, 4]  # not 6 and 8 of the trajectory it left


class CtrlCOnceAtIterationThree(NonSaturatingGAN):
    def after_discriminator_step(self) -> None:
        if self.generator_step == 2:
            next(c for c in self.trainer.callbacks if isinstance(c, GeneratorCheckpoint))._interrupt(signal.SIGINT, None)


def test_a_checkpoint_callback_used_for_a_second_fit_starts_without_the_first_ones_stop(tmp_path):
    # A notebook: one fit stopped cleanly by Ctrl-C, the next (same callback) stopped by a double Ctrl-C. The first
    # stop's flag was never cleared, so the second saved its mid-iteration state as if cleanly stopped.
    from lightning.pytorch import Trainer

    from lit_gan.data import GridGaussians
    from lit_gan.nets import MLPDiscriminator, MLPGenerator

    checkpoint = GeneratorCheckpoint(every_n_generator_steps=4, dirpath=str(tmp_path))

    def fit(objective):
        trainer = Trainer(max_steps=optimizer_steps(8, 1), logger=False, enable_progress_bar=False,
                          enable_model_summary=False, callbacks=[checkpoint], default_root_dir=tmp_path)
        with pytest.raises(SystemExit):  # Lightning's exit after a KeyboardInterrupt
            trainer.fit(objective(MLPGenerator(width=16, depth=2), MLPDiscriminator(width=16, depth=2)), GridGaussians())

    fit(CtrlCOnceAtIterationThree)
    assert torch.load(tmp_path / "last.ckpt", weights_only=False)["gan_clock"]["generator_step"] == 3
    fit(CtrlCTwiceAfterDiscriminatorStep)  # saves at 4, stopped at once inside iteration 6
    assert torch.load(tmp_path / "last.ckpt", weights_only=False)["gan_clock"]["generator_step"] == 4


def test_a_run_logging_to_a_list_of_loggers_resumes_its_wandb_run_and_folder(tmp_path):
    # With W&B and a CSV logger the resumed run started a new W&B run in a new folder (only one logger was read).
    loggers = ("--trainer.logger=[{class_path: lightning.pytorch.loggers.WandbLogger, init_args: {project: lit-gan, "
               f"offline: true, save_dir: '{tmp_path}'}}}}, {{class_path: lightning.pytorch.loggers.CSVLogger, "
               f"init_args: {{save_dir: '{tmp_path / 'csv'}'}}}}]")
    args = ["--config", "configs/ring/nonsaturating.yaml", "--evaluation.num_samples=100",
            "--checkpoint.every_n_generator_steps=2", "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={tmp_path}", loggers]
    first = main([*args, "--generator_steps=2"])
    run_id = first.trainer.loggers[0].version
    resumed = main([*args, "--generator_steps=4",
                    f"--ckpt_path={run_directory(first.trainer) / 'checkpoints' / 'last.ckpt'}"])
    assert resumed.trainer.loggers[0].version == run_id and resumed.model.generator_step == 4
    assert run_directory(resumed.trainer) == run_directory(first.trainer)


def test_a_checkpoint_keeps_the_random_state_of_its_own_gpu_alone(monkeypatch):
    """Every visible GPU's state was saved and set back: resumed where fewer GPUs are visible, the restore hit an
    index past them. Now this process's GPU's alone; older checkpoints give up the one of this GPU's index."""
    from lit_gan.objectives.base import rng_states, set_rng_states

    state, restored = torch.arange(8, dtype=torch.uint8), []
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)  # as in a run on a GPU (no GPU here)
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda: state)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_rng_state", restored.append)
    saved = rng_states()
    assert saved["cuda"] is state
    set_rng_states(saved)
    older = [torch.zeros(8, dtype=torch.uint8), torch.ones(8, dtype=torch.uint8)]
    set_rng_states({**saved, "cuda": older})  # a checkpoint of two GPUs' states: this is GPU 1
    set_rng_states({**saved, "cuda": older[:1]})  # of one GPU's, resumed on GPU 1: nothing of its own to restore
    assert [r.tolist() for r in restored] == [state.tolist(), [1] * 8]
