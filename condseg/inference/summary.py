"""What a run of the demo did: counts, times (seconds, summed over the run), problems
and the files written, and the lines that report them."""
import dataclasses
from typing import Dict, List, Tuple

from condseg.inference.sources import VideoInfo

__all__ = ["ImageSummary", "VideoSummary"]


def _ms_per(seconds: float, count: int) -> float:
    return 1000.0 * seconds / max(count, 1)


@dataclasses.dataclass
class ImageSummary:
    """A run on images; ``problems`` are ``(path, message)`` for images that could not be
    read or whose rendering could not be written."""

    images: int = 0
    instances: int = 0
    wall: float = 0.0
    model: float = 0.0
    draw: float = 0.0
    problems: List[Tuple[str, str]] = dataclasses.field(default_factory=list)

    def lines(self) -> List[str]:
        n = self.images
        return [f"{n} images in {self.wall:.1f} s: model {_ms_per(self.model, n):.1f} ms per image, "
                f"drawing and writing {_ms_per(self.draw, n):.1f} ms per image; "
                f"{self.instances} instances"]


@dataclasses.dataclass
class VideoSummary:
    """A run on one video; ``errors`` are ``{"frame", "message"}`` for frames that could not
    be decoded, ``complete`` is False when the run stopped before the end."""

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
        return _ms_per(seconds, self.frames)

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
