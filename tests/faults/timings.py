"""The stop latencies of docs/RELIABILITY.md, measured on the fault suite's tiny runs.

    .venv/bin/python tests/faults/timings.py [--trials 3]

Prints, as medians over the trials: a dead rank (SIGKILL) to the end of a 2-process job; the
launcher killed to every rank gone; SIGTERM to exit (single process and 2-process DDP).
"""
import argparse
import os
import signal
import statistics
import tempfile
import time

from faultrun import Runs, alive, ddp_ranks, free_port  # beside this script, which Python puts on the path


def _trial(runs, folder):
    def ddp(name):
        return runs.start(os.path.join(folder, name), "DATALOADER.NUM_WORKERS", "0",
                          args=("--num-gpus", "2", "--dist-url", f"tcp://127.0.0.1:{free_port()}"))

    times = {}
    training = ddp("dead_rank")
    training.wait_for_iteration(4)
    ranks = ddp_ranks(training.proc.pid)
    t0 = time.monotonic()
    os.kill(ranks[1], signal.SIGKILL)
    training.finish()
    times["a dead rank to the end of the job"] = time.monotonic() - t0

    training = ddp("launcher_killed")
    training.wait_for_iteration(6)
    ranks = ddp_ranks(training.proc.pid)
    t0 = time.monotonic()
    os.kill(training.proc.pid, signal.SIGKILL)
    training.finish()
    while any(alive(p) for p in ranks):
        time.sleep(0.05)
    times["the launcher killed to every rank gone"] = time.monotonic() - t0

    for kind in ("single process", "2-process DDP"):
        if kind == "single process":
            training = runs.start(os.path.join(folder, "sigterm_single"), "DATALOADER.NUM_WORKERS", "2")
        else:
            training = ddp("sigterm_ddp")
        training.wait_for_iteration(6)
        t0 = time.monotonic()
        training.signal_all(signal.SIGTERM)
        code = training.finish()
        if code != 143:
            raise RuntimeError(f"SIGTERM ({kind}) exited with {code}:\n{training.log[-3000:]}")
        times[f"SIGTERM to exit, {kind}"] = time.monotonic() - t0
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runs = Runs(os.path.join(tmp, "datasets"))
        trials = [_trial(runs, tempfile.mkdtemp(dir=tmp)) for _ in range(args.trials)]
    for name in trials[0]:
        values = [t[name] for t in trials]
        print(f"{name}: median {statistics.median(values):.2f} s ({', '.join(f'{v:.2f}' for v in values)})")


if __name__ == "__main__":
    main()
