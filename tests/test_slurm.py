"""A real one-node SLURM cluster runs the sbatch template with 2 CPU DDP tasks; SIGUSR1 requeues and resumes."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time

import pytest
import torch

from tests.conftest import ROOT


def slurm(*command: str, env: dict) -> str:
    return subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout


def wait_for(condition, timeout: float, what: str, env: dict, job: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        # A requeued job is held ~2 minutes by default: let it start now.
        if slurm("squeue", "-h", "-j", job, "-o", "%t", env=env).strip() == "PD":
            subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], env=env, capture_output=True)
        time.sleep(2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="starting slurmd needs root (CI runs as root)")
@pytest.mark.skipif(not (shutil.which("slurmctld") or shutil.which("apt-get")),
                    reason="SLURM is not installed and there is no apt-get to install Debian's packages")
def test_sbatch_template_runs_ddp_and_a_sigusr1_requeues_and_resumes(tmp_path):
    already_running = subprocess.run(["pgrep", "-x", "slurmctld"], capture_output=True).returncode == 0
    started = subprocess.run(["bash", "scripts/slurm/start_cluster.sh"], cwd=ROOT, capture_output=True, text=True,
                             timeout=600)
    assert started.returncode == 0, started.stderr
    conf = re.search(r"SLURM_CONF=(\S+)", started.stdout).group(1)
    try:
        run_and_preempt(tmp_path, conf)
    finally:
        if not already_running:  # leave the machine as we found it
            subprocess.run(["bash", "scripts/slurm/stop_cluster.sh"], cwd=ROOT, capture_output=True)


def run_and_preempt(tmp_path, conf: str) -> None:
    job_dir, runs, log = tmp_path / "job", tmp_path / "runs", tmp_path / "job.out"
    env = {**os.environ, "SLURM_CONF": conf, "LIT_GAN_JOB_DIR": str(job_dir), "WANDB_MODE": "offline",
           "OMP_NUM_THREADS": "1"}
    submitted = slurm(
        "sbatch", "--parsable", f"--chdir={ROOT}", "--ntasks-per-node=2", f"--output={log}",
        "scripts/slurm/train.sbatch", "--config", "configs/ring/nonsaturating.yaml",
        "--config", "configs/trainer/ddp_cpu.yaml", "--generator_steps=1500",
        "--evaluation.every_n_generator_steps=500", "--trainer.enable_progress_bar=false",
        f"--trainer.logger.init_args.save_dir={runs}", env=env)
    job = submitted.strip().split(";")[0]
    try:
        # Training has started once the step-0 evaluation is written; then preempt it.
        wait_for(lambda: list(runs.glob("lit-gan/*/evaluation.json")), 300, "training to start", env, job)
        time.sleep(3)
        slurm("scancel", "--signal=USR1", job, env=env)
        wait_for(lambda: not slurm("squeue", "-h", "-j", job, env=env).strip(), 600, "the job to finish", env, job)
    finally:
        subprocess.run(["scancel", job], env=env, capture_output=True)
    output = log.read_text()
    assert "Handling auto-requeue signal: 10" in output and f"Requeued SLURM job: {job}" in output
    assert f"Restored all states from the checkpoint at {job_dir}/hpc_ckpt_1.ckpt" in output
    assert "Final evaluation (generator iteration 1500)" in output
    run_ids = set(re.findall(r"offline-run-\d+_\d+-(\w+)", output))
    assert len(run_ids) == 1  # the requeued attempt continued the same W&B run
    preempted_at = torch.load(job_dir / "hpc_ckpt_1.ckpt", weights_only=True)["gan_clock"]["generator_step"]
    assert 0 < preempted_at < 1500
    history = json.loads(next(runs.glob("lit-gan/*/evaluation.json")).read_text())
    assert [row["generator_step"] for row in history] == [0, 500, 1000, 1500]
