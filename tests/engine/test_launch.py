"""Which launcher started a run, and torch's env:// variables from SLURM's."""
import subprocess
import sys
import time

import pytest

from condseg.engine.launch import _first_host, launcher_environment, slurm_environment


def test_launchers_are_told_apart_by_their_environment():
    assert launcher_environment({}) is None
    assert launcher_environment({"TORCHELASTIC_RUN_ID": "x", "RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}) == "torchrun"
    assert launcher_environment({"SLURM_PROCID": "1", "SLURM_NTASKS": "4"}) == "slurm"
    assert launcher_environment({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}) is None  # an sbatch script's shell


@pytest.mark.parametrize("nodelist,first", [("gpu[03-05,7],cpu1", "gpu03"), ("node7", "node7"), ("a[1,3]", "a1"),
                                             ("localhost", "localhost")])
def test_first_host_of_a_node_list(nodelist, first):
    assert _first_host(nodelist) == first


def test_slurm_variables_become_torch_ones():
    env = {"SLURM_PROCID": "5", "SLURM_LOCALID": "1", "SLURM_NTASKS": "8", "SLURM_TASKS_PER_NODE": "4(x2)",
           "SLURM_JOB_NODELIST": "gpu[12-13]", "SLURM_JOB_ID": "123456"}
    got = slurm_environment(env)
    assert got == {"RANK": "5", "LOCAL_RANK": "1", "WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "4",
                   "MASTER_ADDR": "gpu12", "MASTER_PORT": str(20000 + 123456 % 20000)}
    assert slurm_environment({**env, "MASTER_ADDR": "h", "MASTER_PORT": "999"})["MASTER_ADDR"] == "h"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux: prctl(PR_SET_PDEATHSIG)")
def test_a_child_that_asked_is_signalled_when_its_parent_dies(tmp_path):
    """A parent starts a child that asks for SIGTERM at its parent's death, then exits: the
    child gets SIGTERM (and records it) instead of running on."""
    marker = tmp_path / "got_sigterm"
    child = (
        "import signal, sys, time; from condseg.engine.launch import stop_with_parent\n"
        f"signal.signal(signal.SIGTERM, lambda *a: (open({str(marker)!r}, 'w').close(), sys.exit(0)))\n"
        "assert stop_with_parent(); print('ready', flush=True); time.sleep(30)\n"
    )
    parent = (
        "import subprocess, sys\n"
        f"p = subprocess.Popen([sys.executable, '-c', {child!r}], stdout=subprocess.PIPE, text=True)\n"
        "p.stdout.readline()\n"  # the child is ready; the parent exits without waiting for it
    )
    subprocess.run([sys.executable, "-c", parent], timeout=60, check=True)
    for _ in range(100):
        if marker.exists():
            break
        time.sleep(0.1)
    assert marker.exists()
