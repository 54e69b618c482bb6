"""Killed (SIGKILL) at any iteration, resumed: the same weights as the uninterrupted run, bit
for bit, on one process and on two; damaged checkpoints are passed over."""
import os
import shutil
import signal

import pytest

from faultrun import assert_same_weights, free_port

pytestmark = pytest.mark.slow

# (what to wait for before the SIGKILL, the iteration a resume must start from)
KILLS = {
    "first_iterations": (r"\biter: 3\b", 0),  # before any checkpoint: from scratch
    "right_after_a_checkpoint": (r"\biter: 9\b", 10),  # the line comes after model_0000009.pth is written
    "while_saving": (r"Saving checkpoint to .*model_0000014\.pth", None),  # 10 or 15, as the write got on
    "mid_run": (r"\biter: 17\b", 15),
}


def _kill_and_resume(runs, tmp_path, kill, *opts, args=()):
    out = tmp_path / "out"
    pattern, start = KILLS[kill]
    training = runs.start(out, *opts, args=args)
    training.wait_for(pattern)
    training.signal_all(signal.SIGKILL)
    training.finish()
    leftovers = [f for f in os.listdir(out) if ".tmp-" in f]  # a write cut short leaves only a temporary file
    code, log = runs.run(out, *opts, args=("--resume", *args))
    assert code == 0, log[-4000:]
    first = int(log.split("Starting training from iteration ")[1].split()[0])
    assert first == start if start is not None else first in (10, 15), first
    return out, leftovers


@pytest.mark.parametrize("kill", list(KILLS))
def test_kill_and_resume_gives_the_uninterrupted_weights(runs, baseline, tmp_path, kill):
    # the killed run has 2 data-loader workers, the uninterrupted one none: the stream is the same
    out, leftovers = _kill_and_resume(runs, tmp_path, kill, "DATALOADER.NUM_WORKERS", "2")
    assert_same_weights(out / "model_final.pth", baseline / "model_final.pth")
    assert all(f.startswith(".model_0000014.pth.tmp-") for f in leftovers)


@pytest.mark.parametrize("kill", ["first_iterations", "right_after_a_checkpoint", "mid_run"])
def test_kill_and_resume_two_process_ddp(runs, ddp_baseline, tmp_path, kill):
    dist = ("--num-gpus", "2", "--dist-url", f"tcp://127.0.0.1:{free_port()}")
    out, _ = _kill_and_resume(runs, tmp_path, kill, "DATALOADER.NUM_WORKERS", "0", args=dist)
    assert_same_weights(out / "model_final.pth", ddp_baseline / "model_final.pth")


def _copy_until(baseline, out, last: int):
    """The baseline's folder as a run killed after checkpoint ``last`` would have left it."""
    shutil.copytree(baseline, out)
    for name in os.listdir(out):
        if name == "model_final.pth" or (name.startswith("model_0") and int(name[6:13]) > last):
            os.remove(out / name)
    (out / "last_checkpoint").write_text(f"model_{last:07d}.pth")


@pytest.mark.parametrize("damage", ["truncated", "empty"])
def test_a_damaged_last_checkpoint_is_named_and_the_previous_one_used(runs, baseline, tmp_path, damage):
    out = tmp_path / "out"
    _copy_until(baseline, out, 19)
    path = out / "model_0000019.pth"
    path.write_bytes(path.read_bytes()[: 100_000] if damage == "truncated" else b"")
    code, log = runs.run(out, "DATALOADER.NUM_WORKERS", "0", args=("--resume",))
    assert code == 0, log[-4000:]
    assert f"checkpoint {path} does not load" in log and "Starting training from iteration 15" in log
    assert "Traceback" not in log
    assert_same_weights(out / "model_final.pth", baseline / "model_final.pth")


@pytest.mark.parametrize("tag", ["empty", "missing"])
def test_an_empty_or_missing_last_checkpoint_falls_back_to_the_newest_file(runs, baseline, tmp_path, tag):
    out = tmp_path / "out"
    _copy_until(baseline, out, 24)
    if tag == "empty":
        (out / "last_checkpoint").write_text("")
    else:
        os.remove(out / "last_checkpoint")
    code, log = runs.run(out, "DATALOADER.NUM_WORKERS", "0", args=("--resume",))
    assert code == 0, log[-4000:]
    assert "Starting training from iteration 25" in log
    assert_same_weights(out / "model_final.pth", baseline / "model_final.pth")
