"""SIGTERM, SIGUSR1 and Ctrl-C stop training after the step, save, say how to resume and
exit 128 + signal; killing the launcher ends every rank; a dead rank ends the job."""
import os
import signal
import time

import pytest

from faultrun import SIGNALS, TRAIN_NET, alive, assert_same_weights, ddp_ranks, free_port

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", list(SIGNALS))
def test_a_stop_signal_saves_that_iteration_and_exits_with_its_status(runs, tmp_path, name):
    out = tmp_path / "out"
    training = runs.start(out, "DATALOADER.NUM_WORKERS", "2")
    training.wait_for_iteration(12)
    training.signal_all(SIGNALS[name])  # the whole process group, as a terminal's Ctrl-C or a cluster would
    code = training.finish()
    assert code == 128 + SIGNALS[name], training.log[-3000:]
    stopped = [line for line in training.log.splitlines() if line.startswith(f"stopped by {name} at iteration ")]
    assert len(stopped) == 1, training.log[-3000:]
    iteration = int(stopped[0].split("at iteration ")[1].split(":")[0])
    assert iteration >= 12 and (out / f"model_{iteration:07d}.pth").exists()
    assert (out / "last_checkpoint").read_text() == f"model_{iteration:07d}.pth"
    assert f"saved {out / f'model_{iteration:07d}.pth'}; continue it with: python {TRAIN_NET} --resume --config-file" \
        in stopped[0]
    assert "Traceback" not in training.log and "KeyboardInterrupt" not in training.log


def test_resuming_after_sigterm_gives_the_uninterrupted_weights(runs, baseline, tmp_path):
    out = tmp_path / "out"
    training = runs.start(out, "DATALOADER.NUM_WORKERS", "0")
    training.wait_for_iteration(7)
    training.signal_all(signal.SIGTERM)
    assert training.finish() == 143
    code, log = runs.run(out, "DATALOADER.NUM_WORKERS", "0", args=("--resume",))
    assert code == 0, log[-3000:]
    assert_same_weights(out / "model_final.pth", baseline / "model_final.pth")


def test_sigterm_stops_every_ddp_rank_and_resumes_to_the_uninterrupted_weights(runs, ddp_baseline, tmp_path):
    out = tmp_path / "out"
    def ddp():
        return "--num-gpus", "2", "--dist-url", f"tcp://127.0.0.1:{free_port()}"
    training = runs.start(out, "DATALOADER.NUM_WORKERS", "0", args=ddp())
    training.wait_for_iteration(7)
    training.signal_all(signal.SIGTERM)  # launcher and both ranks, as a cluster's preemption does
    assert training.finish() == 143, training.log[-3000:]
    assert len([line for line in training.log.splitlines() if line.startswith("stopped by SIGTERM")]) == 1
    assert "Traceback" not in training.log
    code, log = runs.run(out, "DATALOADER.NUM_WORKERS", "0", args=("--resume",) + ddp())
    assert code == 0, log[-3000:]
    assert_same_weights(out / "model_final.pth", ddp_baseline / "model_final.pth")


def test_killing_the_launcher_ends_every_rank_after_it_saves(runs, tmp_path):
    out = tmp_path / "out"
    training = runs.start(out, "DATALOADER.NUM_WORKERS", "0",
                          args=("--num-gpus", "2", "--dist-url", f"tcp://127.0.0.1:{free_port()}"))
    training.wait_for_iteration(6)
    ranks = ddp_ranks(training.proc.pid)
    os.kill(training.proc.pid, signal.SIGKILL)  # the launcher only
    training.finish()
    t0 = time.monotonic()
    while any(alive(p) for p in ranks) and time.monotonic() - t0 < 60:
        time.sleep(0.2)
    assert not any(alive(p) for p in ranks), "ranks are still training without their launcher"
    saved = sorted(f for f in os.listdir(out) if f.startswith("model_"))
    assert saved and int(saved[-1][6:13]) >= 6  # they stopped after a step and saved it


def test_a_dead_rank_ends_the_job_within_seconds_with_a_clear_message(runs, tmp_path):
    out = tmp_path / "out"
    training = runs.start(out, "DATALOADER.NUM_WORKERS", "0",
                          args=("--num-gpus", "2", "--dist-url", f"tcp://127.0.0.1:{free_port()}"))
    training.wait_for_iteration(4)
    ranks = ddp_ranks(training.proc.pid)
    os.kill(ranks[1], signal.SIGKILL)
    t0 = time.monotonic()
    code = training.finish(timeout=120)
    elapsed = time.monotonic() - t0
    assert code != 0 and elapsed < 10, (code, elapsed)
    assert "terminated with signal SIGKILL" in training.log
    assert not any(alive(p) for p in ranks)
