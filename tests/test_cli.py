"""The command line: every config parses and trains a step; mistakes fail before training with a clear message."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.plugins.environments import LightningEnvironment
from lightning.pytorch.strategies.launchers import _SubprocessScriptLauncher

from lit_gan.callbacks import GeneratorCheckpoint
from lit_gan.callbacks.output import find_callback
from lit_gan.cli import LitGANCLI, main, stop_local_ranks
from lit_gan.objectives import GANModule, optimizer_steps
from tests.conftest import ROOT, quiet_args

SHARED = ("nets", "data", "models", "studies", "trainer")  # folders of fragments, not experiments
EXPERIMENTS = sorted(
    str(p.relative_to(ROOT)) for p in (ROOT / "configs").rglob("*.yaml")
    if p.relative_to(ROOT / "configs").parts[0] not in SHARED
)
TRAINER_FRAGMENTS = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "configs" / "trainer").glob("*.yaml"))
MODELS = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "configs" / "models").rglob("*.yaml"))
FRAGMENTS = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "configs").glob("*/*.yaml")
                   if p.parent.name in ("nets", "data")) + MODELS


def test_every_objective_has_a_ring_and_a_grid_config():
    ring = {Path(p).name for p in EXPERIMENTS if p.startswith("configs/ring/")}
    grid = {Path(p).name for p in EXPERIMENTS if p.startswith("configs/grid/")}
    assert ring == grid and len(ring) >= 8


NEEDS_DATA = [c for c in EXPERIMENTS if "TorchvisionImages" in (ROOT / c).read_text()
              or "ImageFolder" in (ROOT / c).read_text()]
OFFLINE = [c for c in EXPERIMENTS if c not in NEEDS_DATA]


@pytest.mark.parametrize("config", NEEDS_DATA)
def test_configs_for_downloaded_data_parse_and_build(config, tmp_path):
    """CIFAR-10, CelebA, ... are not on CI machines: build model, data and trainer without fitting."""
    cli = LitGANCLI(args=["--config", config, *quiet_args(tmp_path), "--trainer.logger=false"])
    assert isinstance(cli.model, GANModule)
    shape = cli.datamodule.sample_shape
    assert cli.model.generator(cli.model.sample_noise(2)).shape == (2, *shape)
    assert cli.model.discriminator(torch.zeros(2, *shape)).shape == (2,)


@pytest.mark.parametrize("config", OFFLINE)
def test_every_config_parses_and_trains_one_generator_iteration(config, tmp_path):
    cli = main(["--config", config, "--generator_steps=1", "--evaluation.num_samples=200", *quiet_args(tmp_path),
                "--trainer.logger=false"])
    assert isinstance(cli.model, GANModule)
    assert cli.model.generator_step == 1
    assert cli.trainer.global_step == optimizer_steps(1, cli.model.n_critic)
    parameters = torch.cat([p.flatten() for p in cli.model.parameters()])
    assert torch.isfinite(parameters).all()


@pytest.mark.parametrize("fragment", TRAINER_FRAGMENTS)
def test_trainer_fragments_combine_with_any_experiment(fragment, tmp_path):
    """E.g. ``--config configs/ring/nonsaturating.yaml --config configs/trainer/ddp.yaml`` (built on 1 CPU here)."""
    from lightning.pytorch.plugins import MixedPrecision
    from lightning.pytorch.strategies import DDPStrategy

    cli = LitGANCLI(args=["--config", "configs/ring/nonsaturating.yaml", "--config", fragment,
                          "--trainer.accelerator=cpu", "--trainer.devices=1", *quiet_args(tmp_path),
                          "--trainer.logger=false"])
    if "ddp" in fragment:
        assert isinstance(cli.trainer.strategy, DDPStrategy)
        assert cli.trainer.strategy._ddp_kwargs["find_unused_parameters"] is True
    else:
        assert isinstance(cli.trainer.precision_plugin, MixedPrecision)  # (Lightning runs 16-mixed as bf16 on CPUs)
        assert cli.config.trainer.precision == ("bf16-mixed" if "bf16" in fragment else "16-mixed")


@pytest.mark.parametrize("fragment", FRAGMENTS)
def test_every_fragment_is_used_by_some_config(fragment):
    name = Path(fragment).name
    users = [c for c in EXPERIMENTS + MODELS if c != fragment and name in (ROOT / c).read_text()]
    assert users, f"{fragment} is used by no config"


def parse_error(capsys, args):
    with pytest.raises(SystemExit) as exit_info:
        LitGANCLI(args=args)
    assert exit_info.value.code != 0
    return capsys.readouterr().err


def test_unknown_key_fails_before_training_in_one_sentence(capsys):
    err = parse_error(capsys, ["--config", "configs/quickstart.yaml", "--model.init_args.learning_rate=1e-3"])
    assert ("error: model.init_args.learning_rate is not a key of lit_gan.objectives.NonSaturatingGAN: "
            "expected one of real_label, generator, discriminator, lr_d, lr_g,") in err
    assert "Union" not in err and "usage:" not in err and len(err.strip().splitlines()) == 2


@pytest.mark.parametrize("every", [0, -1])
def test_logging_every_zero_iterations_is_refused(capsys, every):
    # Lightning accepts it, and then no loss was logged and the discriminator-wins alarm never ran.
    err = parse_error(capsys, ["--config", "configs/quickstart.yaml", f"--trainer.log_every_n_steps={every}"])
    assert f"trainer.log_every_n_steps={every} is not valid: expected an integer >= 1" in err


def test_a_misspelt_nested_key_gets_a_suggestion(capsys):
    err = parse_error(capsys, ["--config", "configs/quickstart.yaml", "--model.init_args.generator.init_args.widht=3"])
    assert "model.init_args.generator.init_args.widht is not a key of lit_gan.nets.MLPGenerator" in err
    assert "(did you mean width?)" in err


@pytest.mark.parametrize("override, expected", [
    ("--model.init_args.generator.init_args.channels=3",
     "model.generator='DCGANGenerator making [3, 16, 16]' is not valid: expected a generator of the data's "
     "sample shape [1, 16, 16]"),
    ("--model.init_args.discriminator.init_args.resolution=8",
     "model.discriminator='DCGANDiscriminator reading [1, 8, 8]' is not valid: expected a discriminator of the "
     "data's sample shape [1, 16, 16]"),
], ids=["generator_channels", "discriminator_resolution"])
def test_networks_that_do_not_fit_the_data_are_refused_before_training(capsys, override, expected):
    err = parse_error(capsys, ["--config", "configs/digits/nonsaturating_dcgan.yaml", override])
    assert expected in err


@pytest.mark.parametrize("override, expected", [
    (["--checkpoint.monitor=eval/FID"], "checkpoint.monitor='eval/FID' is not valid: expected a score the "
     "evaluation logs for RingGaussians: eval/high_quality_pct, eval/modes, eval/reverse_kl, eval/reverse_kl_hq"),
    (["--checkpoint.monitor=eval/modes", "--checkpoint.mode=min"], "checkpoint.mode='min' is not valid: expected "
     "'max' (eval/modes is a score to maximize), or leave it out"),
], ids=["unknown_score", "mode_against_goal"])
def test_a_best_checkpoint_score_that_would_never_be_kept_is_refused(capsys, override, expected):
    # Before, a misspelt score never wrote best.ckpt and a wrong mode kept the worst generator, both silently.
    err = parse_error(capsys, ["--config", "configs/ring/nonsaturating.yaml", *override])
    assert expected in err


def test_the_best_checkpoint_mode_follows_the_scores_goal(tmp_path):
    cli = LitGANCLI(args=["--config", "configs/ring/nonsaturating.yaml", "--checkpoint.monitor=eval/modes",
                          *quiet_args(tmp_path), "--trainer.logger=false"])
    assert find_callback(cli.trainer, GeneratorCheckpoint).mode == "max"


def test_a_batch_larger_than_a_finite_dataset_is_refused_before_training(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["--config", "configs/digits/nonsaturating_dcgan.yaml", "--data.init_args.batch_size=5000",
              *quiet_args(tmp_path), "--trainer.logger=false"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "error: data.batch_size=5000 is not valid: expected" in err and "Traceback" not in err


def test_bad_value_type_fails_with_the_key(capsys):
    err = parse_error(capsys, ["--config", "configs/quickstart.yaml", "--model.init_args.n_critic=five"])
    assert "error: model.init_args.n_critic=five is not valid: expected an integer" in err


def test_a_misspelt_dataset_name_lists_the_known_ones(capsys):
    err = parse_error(capsys, ["--config", "configs/cifar10/dcgan.yaml", "--data.init_args.name=cifar100"])
    assert ("data.init_args.name=cifar100 is not valid: expected one of 'mnist', 'fashion_mnist', 'cifar10', "
            "'celeba'") in err


def test_invalid_value_fails_with_key_value_and_what_is_accepted(capsys):
    err = parse_error(capsys, ["--config", "configs/quickstart.yaml", "--model.init_args.lr_d=-0.001"])
    assert "model.lr_d=-0.001 is not valid: expected a learning rate > 0" in err


def test_unknown_objective_class_fails(capsys):
    err = parse_error(capsys, ["--config", "configs/quickstart.yaml", "--model.class_path=lit_gan.objectives.NonSaturatingGANN"])
    assert ("model=lit_gan.objectives.NonSaturatingGANN is not valid: expected a class that exists "
            "(lit_gan.objectives has no NonSaturatingGANN) (did you mean NonSaturatingGAN?)") in err


def test_max_steps_is_refused_in_favour_of_generator_steps(capsys):
    err = parse_error(capsys, ["--config", "configs/quickstart.yaml", "--trainer.max_steps=100"])
    assert "generator_steps" in err


def test_dotted_overrides_reach_the_model(tmp_path):
    cli = LitGANCLI(args=["--config", "configs/quickstart.yaml", "--model.init_args.lr_d=3e-4",
                          "--model.init_args.n_critic=2", "--generator_steps=7", *quiet_args(tmp_path)])
    assert cli.model.hparams.lr_d == 3e-4 and cli.model.n_critic == 2
    assert cli.trainer.max_steps == optimizer_steps(7, 2)


def test_every_constructor_argument_of_a_configured_class_appears_in_some_config():
    """DESIGN.md: every public config key is shown in at least one file under configs/ (and parsed above)."""
    import importlib
    import inspect

    from lit_gan.callbacks import Evaluation, GeneratorCheckpoint, StabilityMonitor

    texts = "\n".join(p.read_text() for p in (ROOT / "configs").rglob("*.yaml"))
    classes = {Evaluation, GeneratorCheckpoint, StabilityMonitor}
    for path in set(re.findall(r"class_path: (lit_gan\.[\w.]+)", texts)):
        module, name = path.rsplit(".", 1)
        classes.add(getattr(importlib.import_module(module), name))
    missing = []
    for cls in classes:
        for klass in cls.__mro__:  # a parent's arguments are keys only where the child forwards **kwargs
            parameters = inspect.signature(klass.__init__).parameters.values()
            for parameter in parameters:
                if parameter.kind == parameter.POSITIONAL_OR_KEYWORD and parameter.name != "self":
                    if not re.search(rf"\b{parameter.name}:", texts):
                        missing.append(f"{klass.__name__}.{parameter.name}")
            if not any(p.kind == p.VAR_KEYWORD for p in parameters):
                break
    assert not missing, f"keys shown in no config: {sorted(set(missing))}"


def test_a_key_in_the_wrong_case_is_matched_to_its_own_player(capsys):
    # lr_D is lr_d mistyped; matched with case, difflib tied it with lr_g and suggested the generator's key.
    err = parse_error(capsys, ["--config", "configs/quickstart.yaml", "--model.init_args.lr_D=1e-3"])
    assert "(did you mean lr_d?)" in err


def test_an_abbreviated_option_is_refused(capsys):
    # argparse expanded it: --generator=5 trained 5 generator iterations without a word.
    err = parse_error(capsys, ["--config", "configs/quickstart.yaml", "--generator=5"])
    assert err.startswith("error: unrecognized arguments: --generator=5")


def test_the_gpu_trainer_fragment_on_a_machine_without_gpu_is_refused_in_one_sentence(capsys, monkeypatch):
    from lightning.pytorch.accelerators import CUDAAccelerator, MPSAccelerator

    # (Lightning: "No supported gpu backend found!")
    monkeypatch.setattr(CUDAAccelerator, "is_available", staticmethod(lambda: False))
    monkeypatch.setattr(MPSAccelerator, "is_available", staticmethod(lambda: False))
    err = parse_error(capsys, ["--config", "configs/quickstart.yaml", "--config", "configs/trainer/ddp.yaml"])
    assert err.startswith("error: trainer.accelerator=gpu is not valid: expected cpu or auto on this machine")
    assert "configs/trainer/ddp_cpu.yaml" in err


@pytest.mark.parametrize("strategy, expected", [
    ("auto", "a DDP strategy that finds unused parameters"), ("ddp", "a DDP strategy that finds unused parameters"),
    ("ddp_spawn_find_unused_parameters_true", "DDP started as processes of their own"),
])
def test_ddp_that_would_fail_at_the_first_update_is_refused(capsys, tmp_path, strategy, expected):
    # Lightning's default for devices > 1 does not look for unused parameters: D's update leaves G's unused, and
    # every process died at the first step with a RuntimeError. Spawned workers train copies: a diverged run
    # exited 0 and the report had no scores.
    err = parse_error(capsys, ["--config", "configs/quickstart.yaml", "--trainer.accelerator=cpu",
                               "--trainer.devices=2", f"--trainer.strategy={strategy}", *quiet_args(tmp_path)])
    assert err.startswith(f"error: trainer.devices=2 with trainer.strategy={strategy} is not valid: expected {expected}")


def test_lightning_says_the_end_in_generator_iterations_and_checkpoints_without_a_note(tmp_path, caplog):
    import logging

    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    rank_zero.addHandler(caplog.handler)  # (Lightning's loggers do not propagate to pytest's root handler)
    checkpoints = logging.getLogger("lightning.pytorch.trainer.connectors.checkpoint_connector")
    checkpoints.addHandler(caplog.handler)
    caplog.set_level(logging.INFO, rank_zero.name)
    caplog.set_level(logging.INFO, checkpoints.name)
    try:
        main(["--config", "configs/grid/wgan_gp.yaml",
              "--generator_steps=3", "--evaluation.every_n_generator_steps=3", *quiet_args(tmp_path),
              "--trainer.logger=false"])
    finally:
        rank_zero.removeHandler(caplog.handler)
        checkpoints.removeHandler(caplog.handler)
    messages = [record.getMessage() for record in caplog.records]
    assert "`Trainer.fit` stopped: generator_steps=3 reached." in messages  # Lightning: max_steps=18 (n_critic 5)
    assert not [m for m in messages if "max_steps=" in m or "litlogger" in m or "weights_only" in m]
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    from lit_gan.cli import LIGHTNING_MESSAGES

    assert LIGHTNING_MESSAGES.generator_steps is None  # a later Trainer in this process keeps Lightning's words


def test_a_run_stopped_while_preparing_its_data_leaves_no_empty_wandb_run(capsys, tmp_path):
    # The W&B run was started by finishing it, after the error: an empty offline run per mistake.
    with pytest.raises(SystemExit) as exit_info:
        main(["--config", "configs/mnist/wgan_gp_dcgan.yaml", f"--data.init_args.root={tmp_path / 'nodata'}",
              "--trainer.accelerator=cpu", *quiet_args(tmp_path)])
    assert exit_info.value.code == 2
    assert "expected the mnist files in" in capsys.readouterr().err
    assert not list(tmp_path.glob("wandb/offline-run-*"))


def test_a_wandb_run_that_fails_after_starting_is_finished_as_failed(capsys, tmp_path):
    from lit_gan.wandb_offline import records

    with pytest.raises(SystemExit) as exit_info:  # refused in the datamodule's setup, after the W&B run started
        main(["--config", "configs/digits/nonsaturating_dcgan.yaml", "--data.init_args.batch_size=5000",
              *quiet_args(tmp_path)])
    assert exit_info.value.code == 2
    run = next(tmp_path.glob("wandb/offline-run-*"))
    exits = [r.exit.exit_code for r in records(run) if r.WhichOneof("record_type") == "exit"]
    assert exits == [2]


def test_the_slurm_requeue_deferral_takes_the_signal_before_the_baseline_evaluation(tmp_path):
    # It came after Evaluation, whose on_train_start evaluates the untrained G: a SIGUSR1 then ran Lightning's
    # requeue handler inside the signal, the DDP hang the deferral exists to prevent.
    cli = main(["--config", "configs/ring/nonsaturating.yaml", "--generator_steps=1", "--evaluation.num_samples=100",
                *quiet_args(tmp_path)])
    names = [type(callback).__name__ for callback in cli.trainer.callbacks]
    assert names[0] == "DeferredSlurmRequeue" and "Evaluation" in names, names


class SigusrAtTrainEnd(pl.Callback):
    """Sends this process SIGUSR1 during on_train_end (after the deferral's own), as SLURM might during the
    final evaluation, and notes whether the handler behind the deferral ran then."""

    def on_train_end(self, trainer, pl_module) -> None:
        os.kill(os.getpid(), signal.SIGUSR1)
        self.ran_at_once = bool(SIGUSR_CALLS)


SIGUSR_CALLS: list[str] = []


def test_a_requeue_signal_during_the_final_evaluation_is_not_acted_on(tmp_path):
    # The deferral gave the requeue handler back at its on_train_end, before the final evaluation and
    # checkpoint (it is the first callback): a SIGUSR1 then ran it inside them, the DDP hang it prevents.
    def requeue(signum, frame):  # stands in for Lightning's SLURM handler
        SIGUSR_CALLS.append("requeue")

    previous = signal.signal(signal.SIGUSR1, requeue)
    SIGUSR_CALLS.clear()
    try:
        cli = main(["--config", "configs/ring/nonsaturating.yaml", "--generator_steps=2", "--evaluation.num_samples=100",
                    "--trainer.callbacks+=tests.test_cli.SigusrAtTrainEnd", *quiet_args(tmp_path)])
        sender = next(c for c in cli.trainer.callbacks if isinstance(c, SigusrAtTrainEnd))
        assert sender.ran_at_once is False and SIGUSR_CALLS == []  # the run was finishing: recorded only
        assert signal.getsignal(signal.SIGUSR1) is requeue  # given back when training is over
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_a_finished_slurm_run_leaves_no_requeue_handler_behind(tmp_path, monkeypatch):
    # Lightning puts back the handler from before the fit in its own teardown; the deferral's teardown then
    # installed Lightning's requeue handler again, for a trainer that was done (a later SIGUSR1 would save
    # through it and requeue a finished job).
    for key, value in {"SLURM_NTASKS": "1", "SLURM_JOB_ID": "123", "SLURM_PROCID": "0", "SLURM_LOCALID": "0",
                       "SLURM_NODEID": "0", "SLURM_JOB_NAME": "train"}.items():
        monkeypatch.setenv(key, value)
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    from lit_gan.callbacks.slurm import DeferredSlurmRequeue
    from lit_gan.data import RingGaussians
    from lit_gan.nets import MLPDiscriminator, MLPGenerator
    from lit_gan.objectives import NonSaturatingGAN

    before = signal.getsignal(signal.SIGUSR1)
    taken = []

    class Watch(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            taken.append(signal.getsignal(signal.SIGUSR1) == trainer.callbacks[0].record)

    trainer = pl.Trainer(max_steps=optimizer_steps(2, 1), logger=False, enable_progress_bar=False,
                         enable_checkpointing=False, enable_model_summary=False, accelerator="cpu", devices=1,
                         callbacks=[DeferredSlurmRequeue(), Watch()], plugins=[SLURMEnvironment(auto_requeue=True)],
                         default_root_dir=tmp_path)
    trainer.fit(NonSaturatingGAN(MLPGenerator(width=16, depth=2), MLPDiscriminator(width=16, depth=2)), RingGaussians())
    assert taken == [True, True]  # Lightning's handler was installed, and deferred during training
    assert signal.getsignal(signal.SIGUSR1) == before


def test_after_rank_0_fails_the_ranks_it_started_get_a_grace_period_then_are_killed():
    """One child ends on its own within the grace period (its own exit status), one waits forever (killed)."""
    launcher = _SubprocessScriptLauncher(LightningEnvironment(), num_processes=3, num_nodes=1)
    children = [subprocess.Popen([sys.executable, "-c", code]) for code in
                ("import time, sys; time.sleep(0.5); sys.exit(7)", "import time; time.sleep(600)")]
    launcher.procs = list(children)
    trainer = SimpleNamespace(strategy=SimpleNamespace(launcher=launcher))
    start = time.monotonic()
    stop_local_ranks(trainer, grace_s=3)
    assert 3 <= time.monotonic() - start < 30
    assert [child.returncode for child in children] == [7, -signal.SIGKILL]
    # The killed one is out of the list Lightning's child-process observer reads (it would kill rank 0 for it).
    assert launcher.procs == children[:1]
