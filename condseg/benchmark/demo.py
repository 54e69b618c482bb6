"""the video demo end to end (decode, model, track and draw, encode mp4) on a
generated 640x480 video of the built-in shapes with the quickstart model
(output/quickstart/model_final.pth: run `make quickstart` first): the
sequential pipeline against the overlapped one (1 and 2 frames per model
call), and the model alone on frames already in memory. Times are per pass over the video;
the table adds frames/s. Runs with the default allocator (it is inference).
"""
import os
import time

from .harness import Case

CONFIG = os.path.join("configs", "quickstart", "condinst_R18_shapes.yaml")
WEIGHTS = os.path.join("output", "quickstart", "model_final.pth")
FRAMES, SIZE = 60, "640x480"
SEED, THRESHOLD = 3, 0.4  # the video and threshold of `make demo`


def demo_video(frames: int, size: str) -> str:
    """The generated shapes video the demo case reads (written once, then reused)."""
    from condseg.data.shapes_video import write_shapes_video

    path = os.path.join("output", "benchmark", f"shapes_{size}_{frames}_seed{SEED}.mp4")
    if not os.path.isfile(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        w, h = (int(v) for v in size.split("x"))
        tmp = path + ".tmp.mp4"
        write_shapes_video(tmp, frames, w, h, 15.0, seed=SEED)
        os.replace(tmp, path)
    return path


def runs(device: str, impl: str, mode: str, frames: int, size: str, config: str, weights: str):
    """One pass of the demo over the video. ``impl``: ``sequential`` (decode, model, draw,
    encode one after the other) or ``overlapped`` (the threaded pipeline of
    condseg.inference.video), with 1 frame per model call or 2 (``+batch2``), or
    ``model_only`` (the model on the decoded frames, one at a time, nothing else).
    Returns ``{"metrics": ...}`` for the table."""
    import tempfile

    import cv2

    from condseg import Predictor
    from condseg.inference.video import run_video

    video = demo_video(frames, size)
    predictor = Predictor(config, weights, device=device, confidence_threshold=THRESHOLD)
    out = os.path.join(tempfile.mkdtemp(prefix="condseg_demo_bench"), "out.mp4")
    if impl == "model_only":
        cap = cv2.VideoCapture(video)
        decoded = []
        while True:
            ok, f = cap.read()
            if not ok:
                break
            decoded.append(f)

        def run():
            t = time.perf_counter()
            for f in decoded:
                predictor.predict_batch([f])
            wall = time.perf_counter() - t
            return {"metrics": {"frames/s": len(decoded) / wall}}

        return run
    batch = 2 if impl.endswith("batch2") else 1

    def run():
        s = run_video(predictor, video, out, None, batch_size=batch, overlap=impl.startswith("overlapped"),
                      progress=False)
        return {"metrics": {"frames/s": s.fps, "model ms/frame": s.per_frame_ms(s.model),
                            "draw ms/frame": s.per_frame_ms(s.draw), "encode ms/frame": s.per_frame_ms(s.encode)}}

    return run


def plan(devices):
    if not os.path.isfile(WEIGHTS):
        raise SystemExit(f"the demo case runs the quickstart model: {WEIGHTS} is missing (run `make quickstart`)")
    return [
        {"case": "demo", "device": d, "impl": impl, "mode": "video", "frames": FRAMES, "size": SIZE,
         "config": CONFIG, "weights": WEIGHTS}
        for d in devices
        for impl in ("sequential", "sequential+batch2", "overlapped", "overlapped+batch2", "model_only")
    ]


CASE = Case(plan, runs, "sequential", ("frames", "size"), comparable=False, stable_malloc=False, help=__doc__)
