"""What a load dropped and fixed: per-item warnings (the first few) and counts for the summary."""
from __future__ import annotations

import logging
from collections import Counter

__all__ = ["Report", "fmt_counts"]

logger = logging.getLogger(__name__)

MAX_WARNINGS = 10  # per-item warning lines per load; the rest go into a summary count

# kinds of dropped items (summary keys)
D_POLY = "degenerate polygon"
D_NOSEG = "annotation without valid segmentation"
D_BOX = "annotation with zero/negative-size bbox"
D_IMG = "annotation on an unknown image"
D_NOBOX = "annotation without bbox or segmentation"


class Report:
    """Collects what was dropped / fixed; logs per-item lines up to ``MAX_WARNINGS``."""

    def __init__(self, json_file: str, verbose: bool):
        self.json_file = json_file
        self.verbose = verbose
        self.dropped: Counter = Counter()
        self.fixed: Counter = Counter()
        self.unused_keys: Counter = Counter()
        self.box_only = 0  # annotations with a box and no mask (detection datasets)
        self.lines = 0

    def warn(self, msg: str) -> None:
        self.lines += 1
        if self.verbose and self.lines <= MAX_WARNINGS:
            logger.warning("%s: %s", self.json_file, msg)

    def drop(self, kind: str, n: int = 1) -> None:
        self.dropped[kind] += n

    def fix(self, kind: str, n: int = 1) -> None:
        self.fixed[kind] += n

    def close(self) -> None:
        if self.verbose and self.lines > MAX_WARNINGS:
            logger.warning(
                "%s: %d more problem(s) not shown individually; in total dropped %s",
                self.json_file,
                self.lines - MAX_WARNINGS,
                fmt_counts(self.dropped) or "nothing",
            )

    @property
    def changed(self) -> bool:
        """True when the dicts differ from the raw json in a way evaluation would see."""
        return bool(self.dropped or self.fixed)


def fmt_counts(counter: Counter) -> str:
    return ", ".join(f"{n} x {k}" for k, n in sorted(counter.items()))
