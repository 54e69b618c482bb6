"""The report's csv files (Python's csv module; nan written as an empty cell)."""
import csv
import math
from typing import Iterable, Sequence

__all__ = ["write_csv"]


def _cell(value):
    if isinstance(value, float) and math.isnan(value):
        return ""
    return value


def write_csv(path: str, header: Sequence[str], rows: Iterable[Sequence]) -> str:
    """Write ``header`` then ``rows`` to ``path``; returns the path."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for row in rows:
            writer.writerow([_cell(v) for v in row])
    return path
