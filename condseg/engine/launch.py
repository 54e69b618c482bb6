"""Starting the processes of a run: one machine, several machines, torchrun or SLURM.

* No launcher in the environment: detectron2's ``launch`` starts ``--num-gpus`` processes
  per machine (``--num-machines``, ``--machine-rank``, ``--dist-url`` for several).
* ``torchrun`` (torch's elastic runtime) starts the processes itself and sets ``RANK``,
  ``LOCAL_RANK``, ``WORLD_SIZE``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR`` / ``MASTER_PORT``;
  each process joins with ``env://``. A restart after a failure
  (``--max-restarts``; ``TORCHELASTIC_RESTART_COUNT`` > 0) resumes from the last
  checkpoint, as ``--resume`` does.
* ``srun`` (SLURM): rank and world from ``SLURM_PROCID``, ``SLURM_LOCALID``,
  ``SLURM_NTASKS``, ``SLURM_NTASKS_PER_NODE``; the address from ``MASTER_ADDR`` or the
  first host of ``SLURM_JOB_NODELIST``, the port from ``MASTER_PORT`` or the job id.

Every process a launcher started asks the kernel for SIGTERM when its parent (the
launcher) dies, so killing the launcher ends every rank (after they save at the end of
the step) instead of leaving them to train unattended.
"""
import ctypes
import logging
import os
import re
import signal
import sys
from datetime import timedelta
from typing import Callable, Dict, Optional

import torch
import torch.distributed as dist
from detectron2.engine import launch as detectron2_launch
from detectron2.utils import comm

from .signals import StopRequest

__all__ = ["launcher_environment", "launch", "slurm_environment", "stop_with_parent"]

logger = logging.getLogger(__name__)
PR_SET_PDEATHSIG = 1


def stop_with_parent(sig: int = signal.SIGTERM) -> bool:
    """Ask Linux to send ``sig`` to this process when its parent exits (``prctl``);
    False where that is not available."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _first_host(nodelist: str) -> str:
    """The first host of a SLURM node list: ``gpu[03-05,7],cpu1`` -> ``gpu03``."""
    m = re.match(r"([^,\[]+)(\[([^\]]+)\])?", nodelist.strip())
    if not m:
        raise ValueError(f"cannot read SLURM_JOB_NODELIST {nodelist!r}")
    prefix, _, ranges = m.groups()
    return prefix + (ranges.split(",")[0].split("-")[0] if ranges else "")


def slurm_environment(env: Dict[str, str]) -> Dict[str, str]:
    """torch's ``env://`` variables from SLURM's."""
    tasks = int(env["SLURM_NTASKS"])
    per_node = env.get("SLURM_NTASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE", str(tasks))
    per_node = int(re.match(r"\d+", per_node).group())
    return {
        "RANK": env["SLURM_PROCID"],
        "LOCAL_RANK": env.get("SLURM_LOCALID", "0"),
        "WORLD_SIZE": str(tasks),
        "LOCAL_WORLD_SIZE": str(per_node),
        "MASTER_ADDR": env.get("MASTER_ADDR") or _first_host(env.get("SLURM_JOB_NODELIST", "127.0.0.1")),
        "MASTER_PORT": env.get("MASTER_PORT") or str(20000 + int(env.get("SLURM_JOB_ID", "0")) % 20000),
    }


def launcher_environment(env: Optional[Dict[str, str]] = None) -> Optional[str]:
    """``"torchrun"``, ``"slurm"`` (an ``srun`` step with more than one task), or None."""
    env = os.environ if env is None else env
    if "TORCHELASTIC_RUN_ID" in env or ("RANK" in env and "WORLD_SIZE" in env and "LOCAL_RANK" in env):
        return "torchrun"
    if "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", "1")) > 1:
        return "slurm"
    return None


def _join_env_group(device: str) -> None:
    """The process group from the ``env://`` variables, and detectron2's per-machine group.

    The keys go under a prefix of the elastic restart count: after a restart, a rank
    could otherwise read the address a rank of the previous attempt left in a reused
    store, and fail to connect (seen with gloo: ``connectFullMesh ... Connection refused``).
    """
    env = os.environ
    rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
    local_rank, local_world = int(env["LOCAL_RANK"]), int(env.get("LOCAL_WORLD_SIZE", "1"))
    cuda = device.startswith("cuda") and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local_rank)
    agent_store = env.get("TORCHELASTIC_USE_AGENT_STORE") == "True"  # torchrun's agent hosts the store
    store = dist.TCPStore(env["MASTER_ADDR"], int(env["MASTER_PORT"]), world, is_master=rank == 0 and not agent_store,
                          timeout=timedelta(minutes=30))
    store = dist.PrefixStore(f"condseg/attempt_{env.get('TORCHELASTIC_RESTART_COUNT', '0')}/", store)
    dist.init_process_group("nccl" if cuda else "gloo", store=store, rank=rank, world_size=world)
    comm.create_local_process_group(local_world)
    comm.synchronize()


def _worker(main: Callable, args) -> None:
    if comm.get_world_size() > 1:  # a process the launcher spawned (one process runs in the launcher itself)
        stop_with_parent()
    main(args)


def launch(main: Callable, args, device: str = "cuda") -> None:
    """Run ``main(args)`` in every process of the run, however it was started (see the
    module docstring). ``args`` are the parsed ``tools/train_net.py`` arguments; under
    torchrun restarts ``args.resume`` is set."""
    kind = launcher_environment()
    if kind is None:
        if args.num_gpus * args.num_machines > 1:
            # the launcher waits for its ranks, which save before they stop: a stop signal sent to
            # the whole process group (Ctrl-C, a cluster) must not end the launcher first
            StopRequest().install()
        detectron2_launch(_worker, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
                          dist_url=args.dist_url, args=(main, args))
        return
    if kind == "slurm":
        os.environ.update(slurm_environment(os.environ))
    stop_with_parent()
    restarts = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    if restarts > 0 and not args.resume:
        logger.warning("restart %d of an elastic run: resuming from the last checkpoint", restarts)
        args.resume = True
    world = int(os.environ["WORLD_SIZE"])
    if world > 1:
        _join_env_group(device)
    logger.info("started by %s: rank %s of %d", kind, os.environ["RANK"], world)
    main(args)
