"""Frames per model call measured on the first calls: warm-up calls and a short last batch
do not count, the smaller size is kept unless a larger one is clearly faster per frame,
and the batches follow the sizes asked anew for each call."""
import pytest

from condseg.inference.frames_per_call import MARGIN, FramesPerCall, batches


def _run(frames: FramesPerCall, seconds_per_call, items=40):
    """Feed ``items`` through :func:`batches`, recording ``seconds_per_call(size, k)`` per call."""
    sizes = []
    for k, batch in enumerate(batches(range(items), frames)):
        sizes.append(len(batch))
        frames.record(len(batch), seconds_per_call(len(batch), k))
    return sizes


def test_the_faster_size_per_frame_is_kept_after_the_warm_up_calls():
    frames = FramesPerCall.measured((1, 2), calls=3)
    # 2 frames per call: 0.06 s per frame against 0.1 at 1; the warm-up calls (0, 1) are slow
    sizes = _run(frames, lambda n, k: 10.0 if k < 2 else {1: 0.1, 2: 0.12}[n])
    assert sizes[:8] == [1, 2] * 4 and set(sizes[8:]) == {2} and frames.size == 2
    assert frames.description.startswith("2, measured on the first 12 frames (60.0 ms per frame")


def test_a_tie_keeps_the_smaller_size():
    frames = FramesPerCall.measured((1, 2))
    _run(frames, lambda n, k: n * 0.1 * (1 - MARGIN / 2))  # 2 frames: only half a margin faster per frame
    assert frames.size == 1 and "1: " not in frames.description and "2: " in frames.description


def test_a_short_last_batch_is_not_timed_and_a_fixed_size_never_changes():
    frames = FramesPerCall.measured((1, 2), calls=1)
    assert _run(frames, lambda n, k: 1.0 if n == 1 else 0.1, items=6) == [1, 2, 1, 2]
    assert frames.size == 2
    short = FramesPerCall.measured((1, 2), calls=1)
    assert _run(short, lambda n, k: 0.1, items=5) == [1, 2, 1, 1]  # the last one short: 2 not timed
    assert short.size == 1 and short.description.startswith("1, measured")
    fixed = FramesPerCall(3)
    assert _run(fixed, lambda n, k: 1.0, items=7) == [3, 3, 1] and fixed.description == "3 (fixed)"
    with pytest.raises(ValueError, match="at least 1"):
        FramesPerCall(0)
