"""The fault suite's tiny training runs: real processes of tools/train_net.py on the CPU.

A tiny CondInst on 16 generated images, 30 iterations, a checkpoint every 5, a console
line every iteration (the tests watch it to strike at a given iteration), proposal
sampling on (``MAX_PROPOSALS 8``: the steps draw from the RNG), ``SEED 3``.
"""
import os
import re
import signal
import socket
import subprocess
import sys
import time

import torch

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TRAIN_NET = os.path.join(ROOT, "tools", "train_net.py")
CONFIG = os.path.join(ROOT, "configs", "quickstart", "condinst_R18_shapes.yaml")
MAX_ITER = 30
TINY = [
    "MODEL.RESNETS.STEM_OUT_CHANNELS", "16", "MODEL.RESNETS.RES2_OUT_CHANNELS", "16", "MODEL.FPN.OUT_CHANNELS", "64",
    "MODEL.FCOS.NUM_CLS_CONVS", "1", "MODEL.FCOS.NUM_BOX_CONVS", "1", "MODEL.CONDINST.MASK_BRANCH.CHANNELS", "16",
    "MODEL.CONDINST.MAX_PROPOSALS", "8",
    "INPUT.MIN_SIZE_TRAIN", "(96,)", "INPUT.MAX_SIZE_TRAIN", "128", "INPUT.MIN_SIZE_TEST", "96", "INPUT.MAX_SIZE_TEST", "128",
    "DATASETS.SHAPES.NUM_TRAIN", "16", "DATASETS.SHAPES.NUM_VAL", "4",
    "DATASETS.SHAPES.MIN_SIZE", "96", "DATASETS.SHAPES.MAX_SIZE", "128", "DATASETS.TEST", "()",
    "SOLVER.WARMUP_ITERS", "5", "SOLVER.IMS_PER_BATCH", "4", "SOLVER.MAX_ITER", str(MAX_ITER), "SOLVER.STEPS", "(20,)",
    "SOLVER.CHECKPOINT_PERIOD", "5", "SOLVER.LOG_PERIOD", "1", "SEED", "3",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Runs:
    """Starts tiny runs with the datasets of this test session."""

    def __init__(self, datasets: str):
        self.datasets = datasets

    def env(self, **extra):
        return dict(os.environ, DETECTRON2_DATASETS=self.datasets, PYTHONUNBUFFERED="1", **extra)

    def command(self, out, *opts, args=(), launcher=None, config=CONFIG):
        head = launcher if launcher is not None else [sys.executable]
        return [*head, TRAIN_NET, "--config-file", config, *args, *TINY, "OUTPUT_DIR", str(out), *opts]

    def run(self, out, *opts, args=(), launcher=None, config=CONFIG, timeout=300, env=None, **kwargs):
        """Run to the end; ``(returncode, log)``."""
        proc = subprocess.run(self.command(out, *opts, args=args, launcher=launcher, config=config), capture_output=True,
                              text=True, timeout=timeout, env=env or self.env(), cwd=os.path.dirname(str(out)), **kwargs)
        return proc.returncode, proc.stdout + proc.stderr

    def start(self, out, *opts, args=(), launcher=None, env=None, **kwargs):
        """A running :class:`Training` (in a session of its own, so a signal can reach all its processes)."""
        proc = subprocess.Popen(self.command(out, *opts, args=args, launcher=launcher), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, env=env or self.env(), start_new_session=True,
                                cwd=os.path.dirname(str(out)), **kwargs)
        return Training(proc)


class Training:
    """A run being watched line by line."""

    def __init__(self, proc):
        self.proc, self.lines = proc, []

    def wait_for(self, pattern: str, timeout: float = 240) -> str:
        """Read the output until a line matches ``pattern`` (a regex); that line."""
        regex = re.compile(pattern)
        for line in self.proc.stdout:
            self.lines.append(line)
            if regex.search(line):
                return line
        raise AssertionError(f"the run ended (status {self.proc.wait()}) before {pattern!r}:\n{self.log[-4000:]}")

    def wait_for_iteration(self, iteration: int) -> None:
        """Until the console line of ``iteration`` (printed after its step and its checkpoint)."""
        self.wait_for(rf"\biter: {iteration}\b")

    def signal_all(self, sig) -> None:
        """``sig`` to every process of the run (launcher, ranks, data-loader workers)."""
        os.killpg(self.proc.pid, sig)

    def finish(self, timeout: float = 240) -> int:
        out, _ = self.proc.communicate(timeout=timeout)
        self.lines.append(out or "")
        return self.proc.returncode

    @property
    def log(self) -> str:
        return "".join(self.lines)


def children(pid: int):
    """The pids of the processes ``pid`` started (Linux's /proc)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except FileNotFoundError:
        return []


def descendants(pid: int):
    """Every process below ``pid``, depth first."""
    out = []
    for child in children(pid):
        out += [child, *descendants(child)]
    return out


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline") as f:
            return f.read().replace("\0", " ")
    except FileNotFoundError:
        return ""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie has exited
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def weights(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


def max_weight_difference(a, b) -> float:
    """Largest absolute difference between two checkpoints' model tensors."""
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    return max(float((wa[k].double() - wb[k].double()).abs().max()) for k in wa if wa[k].numel())


def assert_same_weights(a, b) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}; max |diff| {max_weight_difference(a, b)}"


SIGNALS = {"SIGTERM": signal.SIGTERM, "SIGINT": signal.SIGINT, "SIGUSR1": signal.SIGUSR1}


def ddp_ranks(launcher_pid: int) -> list:
    """The two rank processes detectron2's launcher spawned (multiprocessing's spawned children)."""
    for _ in range(100):
        ranks = [p for p in children(launcher_pid) if "multiprocessing.spawn" in cmdline(p)]
        if len(ranks) >= 2:
            return ranks
        time.sleep(0.1)
    raise AssertionError(f"the launcher did not start 2 ranks: {[cmdline(p)[:80] for p in children(launcher_pid)]}")
