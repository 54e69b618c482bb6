"""A full disk while saving: one clear error naming the folder, and every checkpoint that
was there before intact (simulated with a file-size limit, which makes writes fail)."""
import hashlib
import os
import resource
import signal

import pytest

pytestmark = pytest.mark.slow
LIMIT = 2_000_000  # bytes: the logs fit, a checkpoint of the tiny model (13 MB) does not


def _digests(folder):
    return {f: hashlib.sha256((folder / f).read_bytes()).hexdigest() for f in os.listdir(folder)
            if f.startswith("model_") or f == "last_checkpoint"}


def _file_size_limit():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))


def test_a_checkpoint_that_cannot_be_written_leaves_the_others_intact(runs, baseline, tmp_path):
    out = tmp_path / "out"
    code, log = runs.run(out, "DATALOADER.NUM_WORKERS", "0", "SOLVER.MAX_ITER", "10", "SOLVER.STEPS", "(8,)")
    assert code == 0, log[-3000:]
    before = _digests(out)
    assert set(before) == {"model_0000004.pth", "model_0000009.pth", "model_final.pth", "last_checkpoint"}
    code, log = runs.run(out, "DATALOADER.NUM_WORKERS", "0", "SOLVER.MAX_ITER", "20", "SOLVER.STEPS", "(8,)",
                         args=("--resume",), preexec_fn=_file_size_limit)
    assert code == 1
    errors = [line for line in log.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith(f"error: could not write model_0000014.pth in {out}: "), log[-3000:]
    assert "the checkpoints already there are intact" in errors[0]
    assert _digests(out) == before  # nothing that was there changed, last_checkpoint included
    assert not [f for f in os.listdir(out) if ".tmp-" in f]  # and no half-written file is left
