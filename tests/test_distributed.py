"""Two CPU processes (DDP over gloo) train a toy config: the metric over both ranks is the single-process one, each
rank draws its own noise, and a resumed run ends where the uninterrupted one did."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import TensorDataset

from lit_gan.callbacks.evaluation import rank_share
from lit_gan.callbacks.samples import scatter_over_modes
from lit_gan.cli import main
from lit_gan.data import RingGaussians
from lit_gan.data.digits import EpochShuffle
from lit_gan.metrics.digits import DigitFrechetDistance
from lit_gan.nets import MLPDiscriminator, MLPGenerator
from lit_gan.objectives import NonSaturatingGAN
from tests.conftest import ROOT, quiet_args, start_training


class RecordLoggedValues(pl.Callback):
    """Writes each rank's last logged values to ``<default_root_dir>/logged_rank_<rank>.json``."""

    def on_train_end(self, trainer, pl_module):
        Path(trainer.default_root_dir, f"logged_rank_{trainer.global_rank}.json").write_text(
            json.dumps(pl_module.logged_values))


@pytest.mark.slow
def test_two_process_ddp_trains_and_its_mode_metric_equals_one_process(tmp_path):
    command = [sys.executable, "train.py", "--config", "configs/ring/nonsaturating.yaml",
               "--config", "configs/trainer/ddp_cpu.yaml", "--generator_steps=20",
               "--evaluation.every_n_generator_steps=10", "--evaluation.num_samples=999",
               "--checkpoint.every_n_generator_steps=10", "--trainer.log_every_n_steps=5",
               "--trainer.enable_progress_bar=false", f"--trainer.logger.init_args.save_dir={tmp_path}",
               "--model.init_args.generator.init_args.batch_norm=true",
               "--trainer.callbacks+=tests.test_distributed.RecordLoggedValues",
               f"--trainer.default_root_dir={tmp_path}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Starting with 2 processes" in result.stdout + result.stderr
    # Losses and D's statistics are logged as means over both ranks' batches (rank 0's alone were logged:
    # loss/discriminator 1.0828 logged, 1.1110 on rank 1), so both ranks hold them alike, as the monitor reads them.
    logged = [json.loads((tmp_path / f"logged_rank_{rank}.json").read_text()) for rank in (0, 1)]
    assert logged[0]["generator_step"] == 20 and "loss/discriminator" in logged[0] and logged[0] == logged[1]

    run_dirs = list((tmp_path / "lit-gan").iterdir())
    assert len(run_dirs) == 1 and len(list((tmp_path / "wandb").glob("offline-run-*"))) == 1  # rank 0 writes
    rows = json.loads((run_dirs[0] / "evaluation.json").read_text())
    assert [r["generator_step"] for r in rows] == [0, 10, 20]
    assert sorted(p.name for p in (run_dirs[0] / "samples").glob("*.png")) == ["0000000.png", "0000010.png",
                                                                              "0000020.png"]

    # One process, the same generator, all 999 fixed-noise samples (each rank scored every other one). With
    # batch norm: each rank scored its share with its own running statistics (reverse KL 0.1818 logged at 20,
    # 0.1722 for the checkpoint) until every rank took rank 0's before each evaluation.
    checkpoint = torch.load(run_dirs[0] / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["gan_clock"]["generator_step"] == 20
    module = NonSaturatingGAN(MLPGenerator(latent_dim=16, width=128, depth=3, batch_norm=True),
                              MLPDiscriminator(width=128, depth=3))
    module.load_state_dict(checkpoint["state_dict"])
    noise = torch.randn(999, 16, generator=torch.Generator().manual_seed(1234))
    metric = RingGaussians().evaluation_metric()
    metric.update(module.generate(noise))
    single = {f"eval/{k}": float(v) for k, v in metric.compute().items()}
    for key, value in single.items():
        assert rows[-1][key] == pytest.approx(value, rel=1e-6, abs=1e-7, nan_ok=True), key  # NaN: no high-quality sample
    # The scatter plot shows all 999 samples (it showed rank 0's share alone), byte for byte as one process draws it.
    title = "NonSaturatingGAN, generator iteration 20\n" + ", ".join(
        f"{key.removeprefix('eval/')} {value:.3g}" for key, value in rows[-1].items() if key.startswith("eval/"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the ranks (OMP_NUM_THREADS=1): other thread counts round the samples differently
    try:
        samples = module.generate(noise)
    finally:
        torch.set_num_threads(threads)
    drawn = scatter_over_modes(samples, RingGaussians().centers, tmp_path / "one_process.png", title)
    assert drawn.read_bytes() == (run_dirs[0] / "samples" / "0000020.png").read_bytes()

    # Each rank drew its own noise for G (one seed on both ranks made every fake batch one batch twice).
    states = checkpoint["rank_rng_states"]
    assert states.shape[0] == 2 and not torch.equal(states[0], states[1])
    # Resumed from iteration 10, each rank carries on with its own saved stream: the uninterrupted run's parameters.
    resume = command + [f"--ckpt_path={run_dirs[0] / 'checkpoints' / 'generator_step=0000010.ckpt'}"]
    result = subprocess.run(resume, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    resumed = torch.load(run_dirs[0] / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["gan_clock"]["generator_step"] == 20
    for name, tensor in checkpoint["state_dict"].items():
        assert torch.equal(resumed["state_dict"][name], tensor), name
    # Resumed in one process, the run goes on and says it cannot reproduce the two-process one.
    with pytest.warns(UserWarning, match=r"Resumed in 1 DDP process\(es\) from a checkpoint of 2: the run goes on"):
        main(["--config", "configs/ring/nonsaturating.yaml", "--generator_steps=12", "--evaluation.num_samples=100",
              "--model.init_args.generator.init_args.batch_norm=true", *quiet_args(tmp_path / "one"),
              f"--ckpt_path={run_dirs[0] / 'checkpoints' / 'generator_step=0000010.ckpt'}"])


@pytest.mark.parametrize("world_size", [1, 2, 3, 8])
def test_ranks_score_consecutive_slices_of_the_noise_so_the_gathered_samples_keep_one_process_order(world_size):
    noise = torch.arange(999.0).unsqueeze(1)
    shares = [rank_share(noise, rank, world_size) for rank in range(world_size)]
    assert torch.equal(torch.cat(shares), noise)  # the cat state gathers in rank order
    assert max(map(len, shares)) - min(map(len, shares)) <= 1


@pytest.mark.slow
def test_ctrl_c_reaching_one_ddp_rank_stops_both_at_one_iteration_with_a_checkpoint(tmp_path):
    process = start_training(tmp_path, "--config", "configs/ring/nonsaturating.yaml", "--config",
                             "configs/trainer/ddp_cpu.yaml")
    try:
        rank_1 = subprocess.run(["pgrep", "-P", str(process.pid), "-f", "train.py"], capture_output=True, text=True)
        os.kill(int(rank_1.stdout.split()[0]), signal.SIGINT)  # rank 1 alone: rank 0 must learn of it
        _, err = process.communicate(timeout=120)  # before, rank 0 trained on while rank 1 waited in its save
    finally:
        process.kill()
        subprocess.run(["pkill", "-P", str(process.pid)], capture_output=True)
    assert process.returncode == 1, err[-3000:]
    last = next(tmp_path.glob("lit-gan/*/checkpoints/last.ckpt"))
    checkpoint = torch.load(last, weights_only=True)
    assert checkpoint["gan_clock"]["generator_step"] > 0 and checkpoint["rank_rng_states"].shape[0] == 2
    assert f"Saved {last}; resume with the same command plus --ckpt_path {last}" in err


@pytest.mark.slow
@pytest.mark.parametrize("both", [False, True], ids=["rank_0", "both_ranks"])
def test_sigterm_stops_both_ddp_ranks_at_one_iteration_with_a_checkpoint(tmp_path, both):
    """Lightning's SIGTERM handler broadcasts from inside the signal, wherever each rank is: SIGTERM to rank 0
    (which forwards it) or to both (as SLURM sends it at a time limit) hung both ranks, often and always."""
    process = start_training(tmp_path, "--config", "configs/ring/nonsaturating.yaml", "--config",
                             "configs/trainer/ddp_cpu.yaml")
    try:
        rank_1 = subprocess.run(["pgrep", "-P", str(process.pid), "-f", "train.py"], capture_output=True, text=True)
        process.send_signal(signal.SIGTERM)
        if both:
            os.kill(int(rank_1.stdout.split()[0]), signal.SIGTERM)
        _, err = process.communicate(timeout=120)
    finally:
        process.kill()
        subprocess.run(["pkill", "-P", str(process.pid)], capture_output=True)
    assert process.returncode == 128 + signal.SIGTERM, err[-3000:]
    last = next(tmp_path.glob("lit-gan/*/checkpoints/last.ckpt"))
    checkpoint = torch.load(last, weights_only=True)
    step = checkpoint["gan_clock"]["generator_step"]
    assert step > 0 and checkpoint["gan_clock"]["discriminator_step"] == step  # a whole iteration
    assert checkpoint["rank_rng_states"].shape[0] == 2
    assert f"Saved {last}; resume with the same command plus --ckpt_path {last}" in err


def _digit_frechet_distance_on_a_rank(rank: int, world_size: int, init_file: str, out: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    generator = torch.Generator().manual_seed(0)
    real, fake = (torch.rand(n, 1, 8, 8, generator=generator) * 2 - 1 for n in (300, 200))
    metric = DigitFrechetDistance(real)
    metric.update(rank_share(fake, rank, world_size))
    value = metric.compute()["frechet_distance"].item()
    if rank == 0:
        Path(out).write_text(repr(value))
    torch.distributed.destroy_process_group()


def test_the_digit_frechet_distance_over_two_processes_is_the_single_process_one(tmp_path):
    """Every process holds the same real statistics: summed over processes, the real covariance shrank to
    2 x 299 / 599 of itself."""
    out = tmp_path / "ddp.txt"
    torch.multiprocessing.spawn(_digit_frechet_distance_on_a_rank, args=(2, str(tmp_path / "init"), str(out)),
                                nprocs=2)
    _digit_frechet_distance_on_a_rank(0, 1, str(tmp_path / "init_one"), str(tmp_path / "one.txt"))
    assert float(out.read_text()) == pytest.approx(float((tmp_path / "one.txt").read_text()), rel=1e-9)


DDP_RING = ["train.py", "--config", "configs/ring/nonsaturating.yaml", "--config", "configs/trainer/ddp_cpu.yaml",
            "--generator_steps=20", "--evaluation.num_samples=200", "--checkpoint.every_n_generator_steps=10",
            "--trainer.enable_progress_bar=false"]


def run_ddp_ring(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """The ring config on 2 CPU ranks, in a new session: whatever the run leaves behind is killed with it."""
    process = subprocess.Popen([sys.executable, *DDP_RING, f"--trainer.logger.init_args.save_dir={tmp_path}", *args],
                               cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = process.communicate(timeout=180)
    finally:
        subprocess.run(["pkill", "-KILL", "-s", str(process.pid)], capture_output=True)  # rank 1 too, if left
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


@pytest.fixture
def full_disk(tmp_path):
    """A 64 KiB tmpfs: a checkpoint write on it fails with ENOSPC inside Lightning's own file write."""
    folder = tmp_path / "full"
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)], capture_output=True).returncode:
        pytest.skip("a small tmpfs cannot be mounted here (needs root)")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


class SlowCleanupOnRank0(pl.Callback):
    """Rank 0 takes 8 s to finish after a failure, as a W&B run uploading its last rows might."""

    def on_exception(self, trainer, pl_module, exception):
        if trainer.is_global_zero:
            time.sleep(8)


@pytest.mark.slow
def test_a_checkpoint_write_failing_on_rank_0_stops_both_ranks_with_one_clear_error(tmp_path, full_disk):
    """Rank 0 alone writes: its failure reached rank 1 only as a dropped connection under gloo (a traceback),
    and under NCCL not at all (rank 1 waited in a barrier for 30 minutes). Now the ranks agree and both stop,
    rank 1 with status 0: its non-zero exit had Lightning's launcher kill rank 0 (-9) before its error line."""
    result = run_ddp_ring(tmp_path, f"--checkpoint.dirpath={full_disk}",
                          "--trainer.callbacks+=tests.test_distributed.SlowCleanupOnRank0")
    assert result.returncode == 1, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: cannot write checkpoint {full_disk / 'last.ckpt'} (No space left on device); no "
                      "last.ckpt was written before. Free space, check that the folder is writable, or choose "
                      "another with --checkpoint.dirpath"], result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "Connection closed" not in result.stderr, result.stderr[-3000:]
    assert list(full_disk.iterdir()) == []  # no temporary file left on the full disk


class NonFiniteBufferOnRank1(pl.Callback):
    """Gives the module a float buffer, made NaN on rank 1 alone at the end of generator iteration 10 (before
    that iteration's checkpoint); DDP, under manual optimisation, never broadcasts rank 0's buffers again."""

    def setup(self, trainer, pl_module, stage):
        pl_module.register_buffer("probe", torch.zeros(()))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if pl_module.generator_step == 10 and trainer.global_rank == 1:
            pl_module.probe.fill_(float("nan"))


@pytest.mark.slow
def test_a_buffer_of_rank_1_alone_going_non_finite_neither_hangs_nor_reaches_the_checkpoint(tmp_path):
    """Rank 1 skipped the save (its buffer was not finite) while rank 0 waited in the save's collectives: both
    hung, SIGTERM included, until killed. Every rank now takes rank 0's buffers, the checkpoint's, first."""
    result = run_ddp_ring(tmp_path, "--trainer.callbacks+=tests.test_distributed.NonFiniteBufferOnRank1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "not written" not in result.stderr
    folder = next(tmp_path.glob("lit-gan/*/checkpoints"))
    assert sorted(p.name for p in folder.iterdir()) == ["generator_step=0000010.ckpt", "generator_step=0000020.ckpt",
                                                       "last.ckpt"]
    assert torch.load(folder / "generator_step=0000010.ckpt", weights_only=True)["state_dict"]["probe"] == 0


class FailOnRank0(pl.Callback):
    """An error on rank 0 alone, at generator iteration 5: rank 1 is then waiting for it in a collective."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if pl_module.generator_step == 5 and trainer.global_rank == 0:
            raise RuntimeError("a failure on rank 0 alone")


@pytest.mark.slow
def test_an_error_on_rank_0_alone_ends_the_rank_it_started(tmp_path):
    """Rank 1 learned of it only because gloo saw rank 0's socket close (under NCCL it waited 30 minutes):
    rank 0 now ends it, so it never reports a dropped connection."""
    result = run_ddp_ring(tmp_path, "--trainer.callbacks+=tests.test_distributed.FailOnRank0")
    assert result.returncode == 1
    assert "RuntimeError: a failure on rank 0 alone" in result.stderr
    assert "Connection closed" not in result.stderr and "[rank1]" not in result.stderr, result.stderr[-3000:]


@pytest.mark.slow
def test_an_image_run_on_two_ranks_resumed_mid_epoch_reproduces_the_uninterrupted_run(tmp_path):
    """1,797 digits over 2 ranks: 899 each, 14 batches of 64 an epoch. Resumed from iteration 7 (mid epoch 0),
    each rank's share of the epoch and its place in it come back: Lightning's DistributedSampler, which had
    replaced lit-gan's sampler, started the epoch again (and ordered it by seed_everything, not data.seed)."""
    command = [sys.executable, "train.py", "--config", "configs/digits/nonsaturating_dcgan.yaml", "--config",
               "configs/trainer/ddp_cpu.yaml", "--generator_steps=18", "--evaluation.every_n_generator_steps=100",
               "--evaluation.num_samples=100", "--checkpoint.every_n_generator_steps=7",
               "--trainer.enable_progress_bar=false", f"--trainer.logger.init_args.save_dir={tmp_path}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    folder = next(tmp_path.glob("lit-gan/*/checkpoints"))
    uninterrupted = torch.load(folder / "last.ckpt", weights_only=True)
    resume = [*command, f"--ckpt_path={folder / 'generator_step=0000007.ckpt'}"]
    result = subprocess.run(resume, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "dataloader is not resumable" not in result.stderr
    resumed = torch.load(folder / "last.ckpt", weights_only=True)
    assert resumed["gan_clock"]["generator_step"] == 18
    for name, tensor in uninterrupted["state_dict"].items():
        assert torch.equal(resumed["state_dict"][name], tensor), name


def test_the_ranks_share_each_epoch_without_overlap_and_skip_within_their_own_share():
    dataset = TensorDataset(torch.arange(11))
    whole = list(EpochShuffle(dataset, seed=3, epoch=2))
    shares = [list(EpochShuffle(dataset, seed=3, epoch=2, num_replicas=3, rank=rank)) for rank in range(3)]
    padded = whole + whole[:1]  # 11 padded to 12 by the order's first index: every rank gets 4
    assert shares == [padded[0::3], padded[1::3], padded[2::3]]
    assert sorted(whole) == list(range(11))
    resumed = EpochShuffle(dataset, seed=3, epoch=2, skip=2, num_replicas=3, rank=1)
    assert list(resumed) == shares[1][2:] and list(resumed) == shares[1]  # the skip applies once
