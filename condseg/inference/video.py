"""The video pipeline of the demo: decode -> model -> track, draw, encode.

Overlapped (the default), the three stages run at the same time: a reader thread
decodes frames into a bounded queue, the calling thread runs the model on batches,
and a writer thread tracks, draws, encodes and records each frame. OpenCV's decoding,
drawing and encoding and torch's kernels release the GIL, so the stages overlap for
real. Sequential (``overlap=False``) runs them one after the other, frame by frame.

Frames that cannot be decoded are skipped and reported with their index; the output
video and the ``frames`` of the json hold the same frames, in the same order. On an
error or Ctrl-C the frames done so far are still written, and the output file is
closed properly (a valid, shorter video).
"""
import dataclasses
import json
import logging
import math
import os
import queue
import sys
import threading
import time
from typing import Callable, Dict, Iterator, List, Optional, Tuple, Union

import cv2
import numpy as np

from condseg.inference.render import color_of
from condseg.inference.results import video_results_file
from condseg.inference.tracking import IoUTracker

__all__ = ["VideoOpenError", "VideoInfo", "open_video", "read_frames", "VideoSink", "VideoSummary",
           "run_video", "display_available"]

logger = logging.getLogger("condseg")

DEFAULT_FPS = 30.0  # written when a source does not tell its frame rate (some webcams, streams)
MAX_TRAILING_FAILURES = 25  # consecutive undecodable frames after which a video is taken to end
_END = object()


class VideoOpenError(OSError):
    """A video file or camera that cannot be opened; the message names it."""


@dataclasses.dataclass
class VideoInfo:
    """What a source announces: ``num_frames`` is None for cameras and streams."""

    name: str
    fps: float
    width: int
    height: int
    num_frames: Optional[int]


def open_video(source: Union[str, int]) -> Tuple[cv2.VideoCapture, VideoInfo]:
    """Open a video file (a path) or a camera (an int index).

    Raises:
        VideoOpenError: missing file, a file OpenCV cannot demux, or a camera that cannot be opened.
    """
    if isinstance(source, int):
        name = f"webcam {source}"
        cap = cv2.VideoCapture(source)
        if not cap.isOpened():
            raise VideoOpenError(f"{name}: cannot open the camera (is one connected at this index, and free?)")
    else:
        name = source
        if not os.path.isfile(source):
            raise VideoOpenError(f"{source}: no such video file")
        cap = cv2.VideoCapture(source)
        if not cap.isOpened():
            raise VideoOpenError(f"{source}: cannot open this video (corrupt, or a format OpenCV cannot read)")
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    if not math.isfinite(fps) or fps <= 0:
        logger.warning("%s does not tell its frame rate: writing %.0f frames/s", name, DEFAULT_FPS)
        fps = DEFAULT_FPS
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    info = VideoInfo(name, fps, int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
                     count if count > 0 and not isinstance(source, int) else None)
    return cap, info


def read_frames(cap: cv2.VideoCapture, info: VideoInfo,
                errors: List[Dict]) -> Iterator[Tuple[int, np.ndarray]]:
    """Decoded frames as ``(index, (H, W, 3) uint8 BGR)``, indices in decoding order.

    A frame that fails to decode between good ones is appended to ``errors`` as
    ``{"frame": index, "message"}`` and skipped. Failures up to the end of the video
    (or ``MAX_TRAILING_FAILURES`` in a row) end it: a video whose header announces more
    frames than it holds (a truncated file) adds one error saying where it ended.
    """
    index, failed = 0, []
    while True:
        ok, frame = cap.read()
        if ok:
            for i in failed:
                errors.append({"frame": i, "message": f"{info.name}: frame {i} could not be decoded (skipped)"})
            failed = []
            yield index, frame
        else:
            if info.num_frames is None or index >= info.num_frames or len(failed) >= MAX_TRAILING_FAILURES:
                break
            failed.append(index)
        index += 1
    if failed and info.num_frames is not None:
        errors.append({"frame": failed[0], "message": f"{info.name}: the video ends at frame {failed[0]}, "
                       f"before the {info.num_frames} frames its header announces (truncated?)"})


class VideoSink:
    """An output video: mp4 (``mp4v``) for ``.mp4``/``.m4v``/``.mov``, Motion-JPEG for
    ``.avi``. Always close it (it is a context manager): closing writes the index that
    makes the file playable."""

    FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG"}

    def __init__(self, path: str, fps: float, width: int, height: int):
        ext = os.path.splitext(path)[1].lower()
        if ext not in self.FOURCC:
            raise ValueError(f"{path}: output video must end in one of {', '.join(self.FOURCC)}")
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"{path}: the output folder {folder} does not exist")
        self.path, self.size = path, (int(width), int(height))
        self.writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*self.FOURCC[ext]), float(fps), self.size)
        if not self.writer.isOpened():
            raise OSError(f"{path}: OpenCV cannot write a video here (permissions? codec?)")
        self.frames = 0

    def write(self, frame: np.ndarray) -> None:
        if (frame.shape[1], frame.shape[0]) != self.size:
            raise ValueError(f"{self.path}: frame of {frame.shape[1]}x{frame.shape[0]}, video is {self.size[0]}x{self.size[1]}")
        self.writer.write(frame)
        self.frames += 1

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
            self.writer = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def display_available() -> bool:
    """Whether a window can be shown (on Linux: an X11 or Wayland display is set)."""
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


@dataclasses.dataclass
class VideoSummary:
    """Counts and times (seconds, summed over the run) of one video."""

    info: VideoInfo
    frames: int = 0
    batches: int = 0
    wall: float = 0.0
    decode: float = 0.0
    model: float = 0.0
    draw: float = 0.0
    encode: float = 0.0
    errors: List[Dict] = dataclasses.field(default_factory=list)
    complete: bool = True
    overlap: bool = True
    outputs: List[str] = dataclasses.field(default_factory=list)

    def per_frame_ms(self, seconds: float) -> float:
        return 1000.0 * seconds / max(self.frames, 1)

    @property
    def fps(self) -> float:
        return self.frames / self.wall if self.wall > 0 else 0.0

    def lines(self) -> List[str]:
        i = self.info
        mode = "overlapped" if self.overlap else "sequential"
        lines = [
            f"{i.name}: {self.frames} frames ({i.width}x{i.height}, {i.fps:g} frames/s) in {self.wall:.1f} s: "
            f"{self.fps:.2f} frames/s end to end ({mode} pipeline)"
            + ("" if self.complete else ", STOPPED before the end"),
            f"  per frame: model {self.per_frame_ms(self.model):.1f} ms (in {self.batches} calls), "
            f"decoding {self.per_frame_ms(self.decode):.1f} ms, drawing {self.per_frame_ms(self.draw):.1f} ms, "
            f"encoding {self.per_frame_ms(self.encode):.1f} ms",
        ]
        if self.frames and self.model > 0:
            lines.append(f"  the model alone would run at {self.frames / self.model:.2f} frames/s")
        for e in self.errors:
            lines.append(f"  problem: {e['message']}")
        lines += [f"  written: {p}" for p in self.outputs]
        return lines


class _Worker(threading.Thread):
    """A daemon thread running ``fn`` that keeps its exception for the caller."""

    def __init__(self, fn: Callable, name: str):
        super().__init__(name=name, daemon=True)
        self.fn, self.error = fn, None

    def run(self):
        try:
            self.fn()
        except BaseException as e:  # re-raised in the calling thread
            self.error = e


def _put(q: queue.Queue, item, stop: threading.Event) -> bool:
    """Put unless asked to stop (never blocks forever on a full queue)."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def run_video(predictor, source: Union[str, int], output: Optional[str] = None, json_path: Optional[str] = None,
              batch_size: int = 1, overlap: bool = True, show: bool = False, progress: bool = True,
              max_frames: Optional[int] = None, queue_size: int = 8) -> VideoSummary:
    """Run ``predictor`` (a :class:`condseg.Predictor`) on every frame of a video file or camera.

    Args:
        source: a video path, or a camera index.
        output: rendered video path (``.mp4``, ``.avi``...), or None.
        json_path: per-frame results (:func:`condseg.inference.results.video_results_file`), or None.
        batch_size: frames per model call.
        overlap: decode, model and draw/encode at the same time (see the module docstring).
        show: also show the rendered frames in a window (``q`` or Esc stops).
        progress: a progress bar (frames done, frames/s, time left) on stderr.
        max_frames: stop after this many frames (cameras run until stopped otherwise).

    Returns:
        A :class:`VideoSummary`; ``complete`` is False when the run was interrupted.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    cap, info = open_video(source)
    total = info.num_frames if max_frames is None else min(info.num_frames or max_frames, max_frames)
    summary = VideoSummary(info=info, overlap=overlap)
    sink = VideoSink(output, info.fps, info.width, info.height) if output else None
    if show and not display_available():
        logger.warning("no display: not showing a window (the video is still written)")
        show = False
    tracker = IoUTracker()
    records: List[Dict] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="frame", desc=os.path.basename(info.name) or info.name, dynamic_ncols=True)
    stop = threading.Event()
    shown = {"frame": None}

    def decoded() -> Iterator[Tuple[int, np.ndarray]]:
        it = read_frames(cap, info, summary.errors)
        n = 0
        while max_frames is None or n < max_frames:
            t0 = time.perf_counter()
            item = next(it, None)
            summary.decode += time.perf_counter() - t0
            if item is None:
                return
            n += 1
            yield item

    def finish_frame(index: int, frame: np.ndarray, instances) -> None:
        """Track, draw, encode and record one frame (writer stage)."""
        t0 = time.perf_counter()
        n = len(instances)
        boxes = instances.pred_boxes.tensor.numpy() if n else np.zeros((0, 4))
        classes = instances.pred_classes.numpy() if n else np.zeros((0,), np.int64)
        track_ids = tracker.update(boxes, classes)
        rendered = predictor.render(frame, instances, colors=[color_of(t) for t in track_ids])
        t1 = time.perf_counter()
        if sink is not None:
            sink.write(rendered)
        t2 = time.perf_counter()
        if json_path:
            instances_json = predictor.to_records(instances)
            for rec, tid in zip(instances_json, track_ids):
                rec["track_id"] = int(tid)
            records.append({"frame": int(index), "time": round(index / info.fps, 4), "instances": instances_json})
        if show:
            shown["frame"] = rendered
        summary.draw += (t1 - t0) + (time.perf_counter() - t2)
        summary.encode += t2 - t1
        summary.frames += 1
        if bar is not None:
            bar.update(1)

    def run_model(frames: List[Tuple[int, np.ndarray]]):
        t0 = time.perf_counter()
        outputs = predictor.predict_batch([f for _, f in frames])
        summary.model += time.perf_counter() - t0
        summary.batches += 1
        return outputs

    def show_latest() -> None:
        frame, shown["frame"] = shown["frame"], None
        if frame is not None:
            cv2.imshow(info.name, frame)
            if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                raise KeyboardInterrupt

    start = time.perf_counter()
    workers: List[_Worker] = []
    try:
        if not overlap:
            batch = []
            for item in decoded():
                batch.append(item)
                if len(batch) == batch_size:
                    for (i, f), inst in zip(batch, run_model(batch)):
                        finish_frame(i, f, inst)
                        if show:
                            show_latest()
                    batch = []
            if batch:
                for (i, f), inst in zip(batch, run_model(batch)):
                    finish_frame(i, f, inst)
                    if show:
                        show_latest()
        else:
            q_in: queue.Queue = queue.Queue(maxsize=queue_size)
            q_out: queue.Queue = queue.Queue(maxsize=queue_size)

            def reader():
                for item in decoded():
                    if not _put(q_in, item, stop):
                        return
                _put(q_in, _END, stop)

            def writer():
                while True:
                    item = q_out.get()
                    if item is _END:
                        return
                    finish_frame(*item)

            workers = [_Worker(reader, "condseg-decode"), _Worker(writer, "condseg-draw")]
            for w in workers:
                w.start()
            ended = False
            while not ended:
                batch = []
                while len(batch) < batch_size:
                    try:
                        item = q_in.get(timeout=0.5)
                    except queue.Empty:
                        _raise_worker_error(workers)
                        continue
                    if item is _END:
                        ended = True
                        break
                    batch.append(item)
                if batch:
                    for (i, f), inst in zip(batch, run_model(batch)):
                        _put_watching(q_out, (i, f, inst), workers)
                _raise_worker_error(workers)
                if show:
                    show_latest()
            _put_watching(q_out, _END, workers)
            workers[1].join()
            _raise_worker_error(workers)
    except BaseException:
        summary.complete = False
        raise
    finally:
        stop.set()
        if workers:
            workers[0].join(timeout=10)  # the reader stops at its next frame; then the capture can go
            if workers[1].is_alive():  # stopped early: the writer keeps what the model already produced
                try:
                    q_out.put(_END, timeout=10)
                except queue.Full:
                    pass
                workers[1].join(timeout=60)
        cap.release()
        if sink is not None:
            sink.close()
            summary.outputs.append(output)
        if bar is not None:
            bar.close()
        summary.wall = time.perf_counter() - start
        if json_path:
            with open(json_path, "w") as f:
                json.dump(video_results_file(
                    info.name, info.fps, info.width, info.height, records, predictor.class_names,
                    predictor.dataset_ids, errors=summary.errors, complete=summary.complete), f)
            summary.outputs.append(json_path)
        if show:
            cv2.destroyAllWindows()
    return summary


def _put_watching(q: queue.Queue, item, workers: List[_Worker]) -> None:
    """Put, re-raising a worker's error instead of waiting forever on a queue it no longer empties."""
    while True:
        try:
            q.put(item, timeout=0.1)
            return
        except queue.Full:
            _raise_worker_error(workers)


def _raise_worker_error(workers: List[_Worker]) -> None:
    for w in workers:
        if w.error is not None:
            raise w.error
