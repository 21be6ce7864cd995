"""``python train.py --config configs/X.yaml``: the one place where data, model, callbacks and loggers meet."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Optional

import torch
import yaml
from jsonargparse.typing import PositiveInt
from lightning.pytorch import LightningDataModule, Trainer
from lightning.pytorch.accelerators import CUDAAccelerator, MPSAccelerator
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.strategies.launchers import _SubprocessScriptLauncher
from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException

from lit_gan.callbacks import Evaluation, GeneratorCheckpoint, GeneratorProgressBar, StabilityMonitor, run_directory
from lit_gan.callbacks.checkpoint import CheckpointWriteError
from lit_gan.callbacks.output import find_callback
from lit_gan.callbacks.slurm import SLURM_JOB_KEY, DeferredSlurmRequeue
from lit_gan.config_errors import ConciseParser
from lit_gan.errors import ConfigError
from lit_gan.objectives.base import GANModule, optimizer_steps

TRAINER_DEFAULTS = {
    "logger": {
        "class_path": "lightning.pytorch.loggers.WandbLogger",
        "init_args": {"project": "lit-gan", "save_dir": "outputs", "offline": True},
    },
    "default_root_dir": "outputs",
    # GeneratorCheckpoint saves on the generator-iteration clock instead.
    "enable_checkpointing": False,
    "enable_model_summary": False,
}

CONFIG_ERROR = re.compile(r"\S+=.* is not valid: expected .*")

# Batches of the toy mixtures are drawn in the main process at no cost.
warnings.filterwarnings("ignore", ".*does not have many workers.*")
# Lightning 2.6 under torch >= 2.10 (its own pytree helper, harmless).
warnings.filterwarnings("ignore", r".*isinstance\(treespec, LeafSpec\)` is deprecated.*")


class LightningMessages(logging.Filter):
    """Lightning's start-up and end messages, said in lit-gan's terms: no advert for another logger (runs log to
    W&B), and the run's end in the generator iterations the config set ("`max_steps=12000` reached" counts
    optimizer steps, G's and D's together)."""

    def __init__(self):
        super().__init__()
        self.generator_steps: int | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        if "try installing [litlogger]" in message:
            return False
        if self.generator_steps is not None and "`Trainer.fit` stopped: `max_steps=" in message:
            record.msg, record.args = f"`Trainer.fit` stopped: generator_steps={self.generator_steps} reached.", ()
        return True


LIGHTNING_MESSAGES = LightningMessages()
logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(LIGHTNING_MESSAGES)


def wandb_logger_configs(config) -> list:
    """The W&B loggers of a parsed config's ``trainer.logger``: one logger, or a list of them."""
    loggers = config.trainer.logger
    return [logger for logger in (loggers if isinstance(loggers, list) else [loggers])
            if str(getattr(logger, "class_path", "")).endswith("WandbLogger")]


class LoggedConfig(SaveConfigCallback):
    """Writes the full resolved config into the run directory and into every logger's hyperparameters.

    For W&B it also makes ``generator_step`` the x-axis of every chart.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **{**kwargs, "save_to_log_dir": False})

    def save_config(self, trainer: Trainer, pl_module, stage: str) -> None:
        # The file trains the run again, from the start: max_steps is derived from generator_steps (and refused
        # when set), and this run's checkpoint and W&B id would resume it instead, into its own directory.
        config = self.config.clone()
        config.trainer.max_steps = None
        config.ckpt_path = None
        for logger in wandb_logger_configs(config):
            logger.init_args.id, logger.init_args.resume = None, None
        text = self.parser.dump(config, skip_none=False)
        directory = run_directory(trainer)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "config.yaml").write_text(text)
        for logger in trainer.loggers:
            logger.log_hyperparams(yaml.safe_load(text))
            if isinstance(logger, WandbLogger):
                logger.experiment.define_metric("generator_step")
                logger.experiment.define_metric("*", step_metric="generator_step", step_sync=True)


class LitGANCLI(LightningCLI):
    """LightningCLI without subcommands: a GAN objective, a datamodule and a Trainer from YAML.

    Adds ``generator_steps`` (training length in generator iterations, which
    sets ``trainer.max_steps``), the ``evaluation``, ``stability`` and
    ``checkpoint`` callbacks, and ``ckpt_path`` to resume from.
    """

    def __init__(self, args=None, extra_callbacks=(), **kwargs):
        self.extra_callbacks = list(extra_callbacks)  # besides the config's (the study runner's GroupMember)
        super().__init__(
            model_class=GANModule,
            datamodule_class=LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_callback=LoggedConfig,
            save_config_kwargs={"overwrite": True},
            trainer_defaults=TRAINER_DEFAULTS,
            seed_everything_default=0,
            parser_class=ConciseParser,
            auto_configure_optimizers=False,
            run=False,
            args=args,
            **kwargs,
        )

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument(
            "--generator_steps", type=PositiveInt, default=2000,
            help="Training length in generator iterations (sets trainer.max_steps).",
        )
        parser.add_argument("--ckpt_path", type=Optional[str], default=None, help="Checkpoint to resume from.")
        # Order matters: the monitor reads this iteration's evaluation, the checkpoint reads the monitor's verdict.
        parser.add_lightning_class_args(Evaluation, "evaluation")
        parser.add_lightning_class_args(StabilityMonitor, "stability")
        parser.add_lightning_class_args(GeneratorCheckpoint, "checkpoint")

    def before_instantiate_classes(self) -> None:
        config = self.config
        if config.trainer.max_steps not in (None, -1):
            self.parser.error(
                f"trainer.max_steps={config.trainer.max_steps} is set: lit-gan counts training length in "
                "generator iterations, so set generator_steps instead and leave trainer.max_steps unset."
            )
        every = config.trainer.log_every_n_steps
        if every is not None and every < 1:  # Lightning takes 0, and then no loss is ever logged or checked
            self.parser.error(f"trainer.log_every_n_steps={every} is not valid: expected an integer >= 1 "
                              "(generator iterations between logged losses)")
        n_critic = config.model.init_args.get("n_critic", 1)
        config.trainer.max_steps = optimizer_steps(config.generator_steps, n_critic)
        accelerator = config.trainer.accelerator
        # Lightning's checks (NVML-based: torch.cuda.is_available() here would break fork-started DDP later).
        if accelerator in ("gpu", "cuda") and not (
                CUDAAccelerator.is_available() or (accelerator == "gpu" and MPSAccelerator.is_available())):
            self.parser.error(f"trainer.accelerator={accelerator} is not valid: expected cpu or auto on this machine, "
                              "which has no GPU that torch can use (for DDP on CPU processes add "
                              "--config configs/trainer/ddp_cpu.yaml instead of ddp.yaml)")
        if SLURMEnvironment.detect() and (requeued := self.slurm_requeue_checkpoint(config.trainer.default_root_dir)):
            # A requeued job reruns its command line: its own requeue checkpoint is newer than any --ckpt_path.
            config.ckpt_path = str(requeued)
        if config.ckpt_path:
            self.resume_wandb_run(config, Path(config.ckpt_path))

    def slurm_requeue_checkpoint(self, root: str | None) -> Path | None:
        """The newest ``hpc_ckpt_N.ckpt`` that Lightning saved in ``root`` before SLURM requeued this job;
        one saved by another job (a folder shared between jobs) is refused rather than resumed."""
        found = list(Path(root or ".").glob("hpc_ckpt_*.ckpt"))
        if not found:
            return None
        newest = max(found, key=lambda p: int(p.stem.rsplit("_", 1)[1]))
        job = torch.load(newest, map_location="cpu", weights_only=True, mmap=True).get(SLURM_JOB_KEY)
        if job is not None and job != os.environ.get("SLURM_JOB_ID"):
            self.parser.error(
                f"trainer.default_root_dir={root} is not valid: expected this SLURM job's own folder, but it holds "
                f"{newest.name} of job {job} (this is job {os.environ.get('SLURM_JOB_ID')}); give each job its own "
                "folder (LIT_GAN_JOB_DIR) or move the file away")
        return newest

    def resume_wandb_run(self, config, path: Path) -> None:
        """Point the W&B logger at the run the checkpoint came from, so a resumed run continues it."""
        if not path.is_file():
            self.parser.error(f"ckpt_path={path} is not valid: expected an existing checkpoint file")
        try:
            run_id = torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("wandb_run_id")
        except Exception as error:  # a truncated or foreign file: say so before Lightning fails deep inside
            self.parser.error(f"ckpt_path={path} is not valid: expected a lit-gan checkpoint, but it cannot be "
                              f"read ({type(error).__name__}: {error})")
        for logger in wandb_logger_configs(config) if run_id else []:
            if logger.init_args.get("id") in (None, run_id):
                logger.init_args.id = run_id
                logger.init_args.resume = "allow"

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except ValueError as error:
            # jsonargparse wraps a ConfigError raised inside a class in its own
            # report about Union subtypes; print just our sentence.
            match = CONFIG_ERROR.search(str(error))
            if match is None:
                raise
            self.parser.error(match.group(0))
        shape = getattr(self.datamodule, "sample_shape", None)
        checkpoint = find_callback(self.trainer, GeneratorCheckpoint)
        try:
            if shape is not None:
                self.model.check_data_shape(shape)
            if checkpoint is not None:
                checkpoint.check_monitor(self.datamodule, self.model)
            if self.config.ckpt_path:  # before the run directory's config.yaml is replaced by this one
                check_checkpoint_fits(Path(self.config.ckpt_path), self.model, self.config.generator_steps)
        except ConfigError as error:
            self.parser.error(str(error))

    def _instantiate_trainer(self, config, callbacks):
        if config.get("enable_progress_bar", True) is not False and not any(
            isinstance(c, ProgressBar) for c in [*callbacks, *(config.get("callbacks") or [])]
        ):
            callbacks.append(GeneratorProgressBar())
        callbacks.append(DeferredSlurmRequeue())
        callbacks.extend(self.extra_callbacks)
        try:
            trainer = super()._instantiate_trainer(config, callbacks)
        except (MisconfigurationException, ValueError) as error:  # more devices than the machine has, DDP on MPS ...
            self.parser.error(f"trainer: {error}")
        # The deferral first: its on_train_start takes SIGUSR1 from Lightning's handler before the evaluation's
        # baseline, during which the signal would otherwise run that handler at once (the DDP hang it prevents).
        trainer.callbacks.sort(key=lambda callback: not isinstance(callback, DeferredSlurmRequeue))  # (stable)
        strategy = trainer.strategy
        ddp = f"trainer.devices={config.get('devices')} with trainer.strategy={config.get('strategy')} is not valid"
        if isinstance(strategy, DDPStrategy) and not strategy._ddp_kwargs.get("find_unused_parameters"):
            # Lightning picks this for devices > 1; it fails at the first update (D's step leaves G's weights unused).
            self.parser.error(
                f"{ddp}: expected a DDP strategy that finds unused parameters (each of D's and G's updates uses one "
                "network); add --config configs/trainer/ddp_cpu.yaml (CPU processes) or configs/trainer/ddp.yaml (GPUs)")
        if isinstance(strategy, DDPStrategy) and getattr(strategy, "_start_method", "popen") != "popen":
            # Spawned or forked workers train copies: the run's verdict, scores and report never reach this process.
            self.parser.error(f"{ddp}: expected DDP started as processes of their own (start_method popen, as "
                              "configs/trainer/ddp*.yaml do), not spawned or forked workers")
        return trainer


def check_checkpoint_fits(path: Path, model: GANModule, generator_steps: int) -> None:
    """Refuse a checkpoint that is not this config's run: other weights (networks), another objective or
    other settings (Lightning restores the optimizers' learning rates and betas from the checkpoint, so new
    ones would be recorded and not used), penalties, more generator iterations than asked for, or another
    run length where a schedule (linear decay, annealed instance noise) is laid over it."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    saved = checkpoint.get("state_dict")
    if saved is None:
        raise ConfigError(f"ckpt_path={path} is not valid: expected a lit-gan checkpoint, but it holds no weights")
    ours = model.state_dict()
    differ = [f"{name} {tuple(saved[name].shape)} vs {tuple(ours[name].shape)}" for name in ours
              if name in saved and saved[name].shape != ours[name].shape]
    differ += [f"{name} missing" for name in ours if name not in saved]
    differ += [f"{name} unexpected" for name in saved if name not in ours]
    if differ:
        raise ConfigError(f"ckpt_path={path} is not valid: expected a checkpoint of this config's model, but "
                          f"{len(differ)} of its weights differ ({'; '.join(differ[:3])}{'; ...' if len(differ) > 3 else ''})")
    plain = lambda value: list(value) if isinstance(value, tuple) else value  # noqa: E731 (YAML lists, Python tuples)
    settings = dict(checkpoint.get("hyper_parameters", {}))
    if "penalties" in checkpoint:  # (not in checkpoints of older versions)
        settings["penalties"] = checkpoint["penalties"]
    here = model.settings()
    changed = [f"{key} {settings[key]!r} there, {here[key]!r} here" for key in sorted(settings.keys() & here.keys())
               if key != "_instantiator" and plain(settings[key]) != plain(here[key])]
    if changed:
        raise ConfigError(f"ckpt_path={path} is not valid: expected a checkpoint of this config's model, but its "
                          f"settings differ ({'; '.join(changed)}). A resumed run keeps its checkpoint's objective and "
                          "optimizers: resume with the run's own config.yaml, or start a new run")
    clock = checkpoint.get("gan_clock", {})
    done = clock.get("generator_step", 0)
    if done > generator_steps:
        raise ConfigError(f"generator_steps={generator_steps} is not valid: expected at least the {done} generator "
                          f"iterations {path.name} has trained")
    planned = clock.get("run_length")  # (not in checkpoints of older versions)
    schedules = model.run_length_schedules()
    if planned is not None and planned != generator_steps and schedules:
        raise ConfigError(f"generator_steps={generator_steps} is not valid: expected {planned}, the length its run's "
                          f"{' and '.join(schedules)} was scheduled over (another would jump the schedule mid-run); "
                          "for a longer run start a new one")


def evaluation_callback(trainer: Trainer) -> Evaluation | None:
    return find_callback(trainer, Evaluation)


def report(trainer: Trainer) -> str:
    """Where a finished run left its files, and its final scores."""
    directory = run_directory(trainer)
    lines = [f"Run directory: {directory}  (config.yaml, evaluation.json, samples/, checkpoints/)"]
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            run_dir = Path(logger.experiment.dir).parent
            lines.append(f"W&B run: {run_dir}  (upload later with: wandb sync {run_dir})")
    monitor = find_callback(trainer, StabilityMonitor)
    for alarm in getattr(monitor, "alarms", []):
        lines.append(f"Alarm ({alarm['alarm']}, generator iteration {alarm['generator_step']}): {alarm['message']}")
    evaluation = evaluation_callback(trainer)
    if evaluation is not None and evaluation.latest:
        latest = dict(evaluation.latest)
        step = latest.pop("generator_step")
        scores = ", ".join(f"{k.removeprefix('eval/')}={v:.4g}" for k, v in latest.items())
        lines.append(f"Final evaluation (generator iteration {step}): {scores}")
    return "\n".join(lines)


def check_own_run_directory(cli: LitGANCLI) -> None:
    """Without a logger a run writes straight into ``trainer.default_root_dir``: refuse one that holds another
    run's files (they would be overwritten, and its numbered checkpoints pruned), unless resuming from it."""
    if cli.trainer.logger is not None:
        return
    directory = Path(cli.trainer.default_root_dir)
    taken = [name for name in ("config.yaml", "evaluation.json", "checkpoints") if (directory / name).exists()]
    if taken and not cli.config.ckpt_path:  # a resumed run continues in its folder
        cli.parser.error(f"trainer.default_root_dir={cli.trainer.default_root_dir} is not valid: expected a folder of "
                         f"this run's own when trainer.logger is false, but it holds another run's {', '.join(taken)}; "
                         "give it an empty folder, keep the logger (one folder per run), or resume with --ckpt_path")


def main(args=None, extra_callbacks=()) -> LitGANCLI:
    cli = LitGANCLI(args=args, extra_callbacks=extra_callbacks)
    check_own_run_directory(cli)
    status = 1  # an exception none of the handlers below takes
    together = False  # a stop every rank made at the same point (see exit_status: rank 0 reports it)
    LIGHTNING_MESSAGES.generator_steps = cli.config.generator_steps  # for this fit only
    try:
        cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=cli.config.ckpt_path)
        if cli.trainer.is_global_zero:
            print(report(cli.trainer), file=sys.stdout)
    except CheckpointWriteError as error:
        if not error.elsewhere:  # every rank stops; the one that failed says why
            print(f"error: {error}", file=sys.stderr)
        status, together = 1, True
    except ConfigError as error:  # found while setting up data (missing files, batch larger than the dataset)
        print(f"error: {error}", file=sys.stderr)
        status = 2
    except SIGTERMException:
        # GeneratorCheckpoint has saved last.ckpt and said how to resume; exit as a terminated process does.
        status, together = 128 + signal.SIGTERM, True
    else:
        status = DIVERGED if getattr(cli.model, "diverged", None) else 0  # (the W&B run's; train.py: exit_status)
    finally:
        LIGHTNING_MESSAGES.generator_steps = None
        for logger in cli.trainer.loggers:
            # Only a run that started: touching .experiment would start an empty one (a run stopped while its
            # data was prepared). A run that failed is finished as failed, with the process's exit status.
            if isinstance(logger, WandbLogger) and logger._experiment is not None:
                try:
                    logger.experiment.finish(exit_code=status)
                    # finish() can return before W&B's service has written the run's file (seen under load:
                    # an empty offline file for a moment); teardown waits for it, so the run is on disk when
                    # main() returns. Only when no other run is open in this process.
                    import wandb  # imported by the logger already

                    if wandb.run is None:
                        wandb.teardown()
                except Exception as error:  # e.g. the W&B service already killed with a preempted SLURM job
                    print(f"W&B run not finished cleanly: {type(error).__name__}: {error}", file=sys.stderr)
        if status:
            stop_local_ranks(cli.trainer)
    if together and not cli.trainer.is_global_zero:
        status = 0  # rank 0 reports the run's status (see exit_status)
    if status and status != DIVERGED:
        sys.exit(status)
    return cli  # a diverged run too: train.py exits with exit_status(cli), the study reads its rows


def stop_local_ranks(trainer: Trainer, grace_s: float = 10.0) -> None:
    """After rank 0 of a run started by Lightning's own launcher (``trainer.devices`` > 1 outside SLURM and
    torchrun) stopped early, end the ranks it started: they stop on their own where every rank knew of the
    failure (a checkpoint write, a divergence, a signal), but after an error on rank 0 alone they wait for it in
    their next collective, under NCCL until the process group's timeout (30 minutes). Those still running after
    ``grace_s`` seconds are killed, as Lightning kills them after Ctrl-C. (Under SLURM, ``srun --kill-on-bad-exit``
    does this for every rank; torchrun stops the others itself.)"""
    launcher = trainer.strategy.launcher
    children = launcher.procs if isinstance(launcher, _SubprocessScriptLauncher) else []
    deadline = time.monotonic() + grace_s
    for child in list(children):
        try:
            child.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
            # Out of the launcher's list, which Lightning's child-process observer (a thread of this process)
            # reads: a killed child there would have it kill this process too, before it exits with its status.
            children.remove(child)


DIVERGED = 3  # train.py's exit status when the stability monitor found non-finite values (the run failed)


def exit_status(cli: LitGANCLI) -> int:
    """0 for a run that trained to its end (or that the monitor stopped on collapse, as asked), DIVERGED
    for one that ended in NaN/inf: ``train.py && next`` and a SLURM job must not count it a success.

    Under a W&B sweep agent (``WANDB_SWEEP_ID`` set) a diverged run exits 0 too: the agent takes a few
    non-zero exits for a broken command and stops itself, and a sweep over unstable settings diverges often.
    Its W&B run is finished as failed either way, which the sweep's search reads.

    Under DDP, after a stop every rank made together (a divergence, a checkpoint that could not be written,
    SIGTERM) the ranks other than 0 exit 0 and leave the run's status to rank 0: one exiting non-zero first gets
    rank 0 killed before it has said why and finished W&B, by the child-process observer of Lightning's launcher
    (which kills every process when a child fails) and by ``srun --kill-on-bad-exit``. A rank failing alone
    keeps its status, so that both end the run.
    """
    if not getattr(cli.model, "diverged", None) or os.environ.get("WANDB_SWEEP_ID"):
        return 0
    return DIVERGED if cli.trainer.is_global_zero else 0


def train_with_output(argv: list[str], log: str, threads: int, group=None) -> None:
    """What ``python train.py ARGV >> LOG 2>&1`` does, with ``threads`` torch threads, in this process.

    The study runner calls it in processes forked from a server that has imported lit-gan once; with a
    ``group`` (:class:`lit_gan.seed_group.SeedGroup`) the run makes its updates together with the group's.
    """
    with open(log, "a") as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
    os.environ.update(OMP_NUM_THREADS=str(threads), WANDB_SILENT="true")
    torch.set_num_threads(threads)
    sys.argv = ["train.py", *argv]
    if group is None:
        main()
    else:
        from lit_gan.seed_group import GroupMember

        main(extra_callbacks=[GroupMember(group)])
