"""torchrun (standalone, and restarts after a dead rank) and SLURM's srun start one
distributed training, not independent ones."""
import os
import signal
import subprocess
import sys

import pytest

from faultrun import TRAIN_NET, alive, cmdline, descendants, free_port

pytestmark = pytest.mark.slow


def _torchrun(*options):
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *options]


def test_torchrun_starts_one_training_of_world_size_two(runs, tmp_path):
    out = tmp_path / "out"
    code, log = runs.run(out, "SOLVER.MAX_ITER", "6", "SOLVER.STEPS", "(5,)", "DATALOADER.NUM_WORKERS", "0",
                         launcher=_torchrun())
    assert code == 0, log[-3000:]
    rank1 = (out / "log.txt.rank1").read_text()  # the other ranks log to files only, as in detectron2
    assert "Rank of current process: 0. World size: 2" in log and "Rank of current process: 1. World size: 2" in rank1
    assert "World size: 1" not in log + rank1  # not two trainings of one process each
    assert "DistributedDataParallel" in log


def test_torchrun_restarts_resume_from_the_last_checkpoint_and_finish(runs, tmp_path):
    out = tmp_path / "out"
    training = runs.start(out, "DATALOADER.NUM_WORKERS", "0", launcher=_torchrun("--max-restarts", "1"))
    training.wait_for_iteration(12)
    workers = [p for p in descendants(training.proc.pid)  # the ranks, not torchrun's own processes
               if TRAIN_NET in cmdline(p) and "torch.distributed.run" not in cmdline(p)]
    assert len(workers) == 2, [cmdline(p)[:80] for p in descendants(training.proc.pid)]
    os.kill(workers[1], signal.SIGKILL)
    code = training.finish(timeout=300)
    assert code == 0, training.log[-3000:]
    assert "restart 1 of an elastic run: resuming from the last checkpoint" in training.log
    assert "Starting training from iteration 10" in training.log  # model_0000009.pth was the last one
    assert (out / "model_final.pth").exists()


def test_srun_environment_starts_one_training_of_world_size_two(runs, tmp_path):
    """Two processes with the variables ``srun --ntasks 2`` sets on one node."""
    out = tmp_path / "out"
    port = str(free_port())
    procs = []
    for rank in range(2):
        env = runs.env(SLURM_PROCID=str(rank), SLURM_LOCALID=str(rank), SLURM_NTASKS="2", SLURM_NTASKS_PER_NODE="2",
                       SLURM_JOB_NODELIST="localhost", SLURM_JOB_ID="7", MASTER_PORT=port)
        procs.append(subprocess.Popen(runs.command(out, "SOLVER.MAX_ITER", "6", "SOLVER.STEPS", "(5,)",
                                                   "DATALOADER.NUM_WORKERS", "0"),
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                      cwd=str(tmp_path)))
    logs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs[0][-3000:] + logs[1][-3000:]
    assert "Rank of current process: 0. World size: 2" in logs[0]
    assert "Rank of current process: 1. World size: 2" in (out / "log.txt.rank1").read_text()
    assert (out / "model_final.pth").exists()
    assert not any(alive(p.pid) for p in procs)
