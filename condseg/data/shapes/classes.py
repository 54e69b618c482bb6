"""The classes of condseg_shapes: names (index i has COCO category id i + 1) and colours."""
from typing import List, Tuple

__all__ = ["SHAPES_CLASSES", "SHAPES_COLORS"]

SHAPES_CLASSES: List[str] = [
    "ellipse",  # convex, curved
    "triangle",  # convex, straight, sharp corners
    "star",  # concave, 5..7 points
    "crescent",  # curved and concave, thin horns
    "cross",  # concave, right angles
    "ring",  # annulus: a hole showing the background
    "arrow",  # thin shaft + head
    "heart",  # curved, concave notch
]
# One distinct RGB colour per class (MetadataCatalog thing_colors, preview overlays).
SHAPES_COLORS: List[Tuple[int, int, int]] = [
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
]
