"""The video pipeline of the demo: decode -> model -> track, draw, encode.

Overlapped (the default), the three stages run at the same time: a reader thread
decodes frames into a bounded queue, the calling thread runs the model on batches,
and a writer thread tracks, draws, encodes and records each frame. OpenCV's decoding,
drawing and encoding and torch's kernels release the GIL, so the stages overlap for
real. Sequential (``overlap=False``) runs them one after the other, batch by batch.
Frames per model call are fixed, or measured on the first frames
(:class:`~condseg.inference.frames_per_call.FramesPerCall`).

Frames that cannot be decoded are skipped and reported with their index; the output
video and the ``frames`` of the json hold the same frames, in the same order. On an
error or Ctrl-C the frames done so far are still written, and the output file is
closed properly (a valid, shorter video).
"""
import json
import logging
import os
import queue
import threading
import time
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Tuple, Union

import cv2
import numpy as np
from tqdm import tqdm

from condseg.inference.frames_per_call import FramesPerCall, batches
from condseg.inference.render import color_of
from condseg.inference.results import video_results_file
from condseg.inference.sinks import VideoSink, display_available, show_image
from condseg.inference.sources import VideoInfo, open_video, read_frames
from condseg.inference.summary import VideoSummary
from condseg.inference.tracking import IoUTracker

__all__ = ["run_video"]

logger = logging.getLogger("condseg")

_END = object()
_Frame = Tuple[int, np.ndarray]  # index in decoding order, (H, W, 3) uint8 BGR


def run_video(predictor, source: Union[str, int], output: Optional[str] = None, json_path: Optional[str] = None,
              batch_size: Union[int, FramesPerCall] = 1, overlap: bool = True, show: bool = False, progress: bool = True,
              max_frames: Optional[int] = None, queue_size: int = 8) -> VideoSummary:
    """Run ``predictor`` (a :class:`condseg.Predictor`) on every frame of a video file or camera.

    Args:
        source: a video path, or a camera index.
        output: rendered video path (``.mp4``, ``.avi``...), or None.
        json_path: per-frame results (:func:`condseg.inference.results.video_results_file`), or None.
        batch_size: frames per model call, or a :class:`FramesPerCall` (e.g.
            ``FramesPerCall.measured()``: 1 or 2, measured on the first frames).
        overlap: decode, model and draw/encode at the same time (see the module docstring).
        show: also show the rendered frames in a window (``q`` or Esc stops).
        progress: a progress bar (frames done, frames/s, time left) on stderr.
        max_frames: stop after this many frames (cameras run until stopped otherwise).
        queue_size: frames waiting between two overlapped stages, at most.

    Returns:
        A :class:`condseg.inference.summary.VideoSummary`; ``complete`` is False when the
        run was interrupted.
    """
    frames_per_call = batch_size if isinstance(batch_size, FramesPerCall) else FramesPerCall(batch_size)
    cap, info = open_video(source)
    total = info.num_frames if max_frames is None else min(info.num_frames or max_frames, max_frames)
    summary = VideoSummary(info=info, overlap=overlap)
    sink = VideoSink(output, info.fps, info.width, info.height) if output else None
    if show and not display_available():
        logger.warning("no display: not showing a window (the video is still written)")
        show = False
    bar = None
    if progress:
        bar = tqdm(total=total, unit="frame", desc=os.path.basename(info.name) or info.name, dynamic_ncols=True)
    stages = _Stages(predictor, info, summary, sink, bool(json_path), show, bar, frames_per_call)
    frames = stages.decoded(cap, max_frames)
    start = time.perf_counter()
    try:
        if overlap:
            _run_overlapped(stages, frames, queue_size)
        else:
            _run_sequential(stages, frames)
    except BaseException:
        summary.complete = False
        raise
    finally:
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
                    info.name, info.fps, info.width, info.height, stages.records, predictor.class_names,
                    predictor.dataset_ids, errors=summary.errors, complete=summary.complete), f)
            summary.outputs.append(json_path)
        if show:
            cv2.destroyAllWindows()
    return summary


class _Stages:
    """The work of each stage on one video, timed into its summary: decoding, the model on
    a batch, and tracking, drawing, encoding and recording a frame."""

    def __init__(self, predictor, info: VideoInfo, summary: VideoSummary, sink: Optional[VideoSink],
                 record: bool, show: bool, bar, frames_per_call: FramesPerCall):
        self.predictor, self.info, self.summary = predictor, info, summary
        self.frames_per_call = frames_per_call
        self.sink, self.record, self.show, self.bar = sink, record, show, bar
        self.tracker = IoUTracker()
        self.records: List[Dict] = []  # per frame, for the json
        self.latest: Optional[np.ndarray] = None  # the last rendered frame, not yet shown

    def decoded(self, cap: cv2.VideoCapture, max_frames: Optional[int]) -> Iterator[_Frame]:
        """The decodable frames, ``max_frames`` at most."""
        frames = read_frames(cap, self.info, self.summary.errors)
        n = 0
        while max_frames is None or n < max_frames:
            t0 = time.perf_counter()
            item = next(frames, None)
            self.summary.decode += time.perf_counter() - t0
            if item is None:
                return
            n += 1
            yield item

    def predict(self, batch: List[_Frame]) -> list:
        """One model call on a batch of frames -> their ``Instances``."""
        t0 = time.perf_counter()
        outputs = self.predictor.predict_batch([frame for _, frame in batch])
        seconds = time.perf_counter() - t0
        self.summary.model += seconds
        self.frames_per_call.record(len(batch), seconds)
        self.summary.batches += 1
        return outputs

    def finish(self, index: int, frame: np.ndarray, instances) -> None:
        """Track, draw, encode and record one frame."""
        t0 = time.perf_counter()
        n = len(instances)
        boxes = instances.pred_boxes.tensor.numpy() if n else np.zeros((0, 4))
        classes = instances.pred_classes.numpy() if n else np.zeros((0,), np.int64)
        track_ids = self.tracker.update(boxes, classes)
        rendered = self.predictor.render(frame, instances, colors=[color_of(t) for t in track_ids])
        t1 = time.perf_counter()
        if self.sink is not None:
            self.sink.write(rendered)
        t2 = time.perf_counter()
        if self.record:
            records = self.predictor.to_records(instances)
            for rec, tid in zip(records, track_ids):
                rec["track_id"] = int(tid)
            self.records.append({"frame": int(index), "time": round(index / self.info.fps, 4), "instances": records})
        if self.show:
            self.latest = rendered
        self.summary.draw += (t1 - t0) + (time.perf_counter() - t2)
        self.summary.encode += t2 - t1
        self.summary.frames += 1
        if self.bar is not None:
            self.bar.update(1)

    def show_latest(self) -> None:
        """Show the last rendered frame (windows are drawn by the calling thread only)."""
        frame, self.latest = self.latest, None
        if frame is not None:
            show_image(self.info.name, frame, 1)


def _run_sequential(stages: _Stages, frames: Iterable[_Frame]) -> None:
    for batch in batches(frames, stages.frames_per_call):
        for (index, frame), instances in zip(batch, stages.predict(batch)):
            stages.finish(index, frame, instances)
            stages.show_latest()


def _run_overlapped(stages: _Stages, frames: Iterable[_Frame], queue_size: int) -> None:
    """Decode in a reader thread, model here, finish in a writer thread. When stopped
    early, the writer still finishes what the model already produced."""
    stop = threading.Event()
    decoded: queue.Queue = queue.Queue(maxsize=queue_size)
    predicted: queue.Queue = queue.Queue(maxsize=queue_size)
    reader = _Worker("condseg-decode", _feed, frames, decoded, stop)
    writer = _Worker("condseg-draw", _drain, predicted, stages.finish)
    workers = [reader, writer]
    for w in workers:
        w.start()
    try:
        for batch in batches(_take(decoded, workers), stages.frames_per_call):
            for (index, frame), instances in zip(batch, stages.predict(batch)):
                _put_watching(predicted, (index, frame, instances), workers)
            _raise_worker_error(workers)
            stages.show_latest()
        _put_watching(predicted, _END, workers)
        writer.join()
        _raise_worker_error(workers)
    finally:
        stop.set()
        reader.join(timeout=10)  # the reader stops at its next frame; then the capture can go
        if writer.is_alive():
            try:
                predicted.put(_END, timeout=10)
            except queue.Full:
                pass
            writer.join(timeout=60)


class _Worker(threading.Thread):
    """A daemon thread running ``target(*args)`` that keeps its exception for the caller."""

    def __init__(self, name: str, target: Callable, *args):
        super().__init__(name=name, target=target, args=args, daemon=True)
        self.error: Optional[BaseException] = None

    def run(self):
        try:
            super().run()
        except BaseException as e:  # re-raised in the calling thread
            self.error = e


def _feed(frames: Iterable[_Frame], q: queue.Queue, stop: threading.Event) -> None:
    """Reader thread: every frame, then ``_END``, into ``q`` (until asked to stop)."""
    for item in frames:
        if not _put(q, item, stop):
            return
    _put(q, _END, stop)


def _drain(q: queue.Queue, finish: Callable) -> None:
    """Writer thread: ``finish(*item)`` for each item of ``q`` up to ``_END``."""
    while True:
        item = q.get()
        if item is _END:
            return
        finish(*item)


def _take(q: queue.Queue, workers: List[_Worker]) -> Iterator[_Frame]:
    """The items of ``q`` up to ``_END``, re-raising a worker's error while waiting."""
    while True:
        try:
            item = q.get(timeout=0.5)
        except queue.Empty:
            _raise_worker_error(workers)
            continue
        if item is _END:
            return
        yield item


def _put(q: queue.Queue, item, stop: threading.Event) -> bool:
    """Put unless asked to stop (never blocks forever on a full queue)."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


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
