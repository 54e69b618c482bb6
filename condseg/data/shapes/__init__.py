"""condseg_shapes: a built-in, generated instance-segmentation dataset.

Each image is a textured, noisy background with distractor clutter and 3..15
painted shapes of 8 classes (:data:`SHAPES_CLASSES`): convex, curved, concave,
thin and holed outlines, with random rotation, aspect, size (COCO small, medium
and large) and colour, overlapping in z-order. It is small enough to train on
without a GPU yet a real test of an instance segmenter.

Pipeline (each step a pure function, so a video generator can reuse it by
moving ``Shape.center`` from frame to frame; one file per step)::

    rng = np.random.default_rng([seed, k])          # image k depends on (seed, k) only
    scene = sample_scene(rng, height, width)        # scene.py: what to draw (no pixels)
    image, instances = render_scene(scene)          # render.py: BGR uint8 + [(category_id, mask)]

The outlines and their areas are in geometry.py, the class names and colours in
classes.py, the files on disk in write.py, detectron2 registration in register.py, the
preview grid in preview.py and the command line in cli.py.

Ground-truth conventions:

* Shapes are painted bottom to top (``Scene.shapes`` order). A mask holds the
  *visible* pixels only: whatever a higher shape covers is removed from the
  lower shape's mask, and so are the parts outside the image.
* A shape whose visible area is below ``max(MIN_VISIBLE_PIXELS,
  MIN_VISIBLE_FRACTION * full area)`` is dropped: it is neither annotated nor
  painted, and the masks are recomputed without it. Hence every painted shape
  pixel belongs to exactly one annotated instance, and masks are disjoint.
* Clutter (lines, scribbles, dots, blobs, texture patches) is drawn *below* all
  shapes, so it never changes a mask. Only photometric effects (pixel noise, a
  slight blur) are applied on top of the shapes; they move no mask pixel.

On disk (:func:`generate_shapes_dataset`)::

    {root}/condseg_shapes/{split}-n{num}-{min_size}x{max_size}-seed{seed}/
        images/{k:06d}.png          # image id k + 1
        annotations.json            # COCO: compressed-RLE masks, written last

The directory is built under a temporary name and renamed into place when
complete, under a file lock, so concurrent (DDP) callers generate it once.

CLI::

    python -m condseg.data.shapes --split train --num 3000 [--root DIR] [--preview docs/shapes_preview.png]
"""
from .classes import SHAPES_CLASSES, SHAPES_COLORS
from .cli import main
from .geometry import shape_polygons
from .preview import draw_preview
from .register import register_shapes_datasets
from .render import MIN_VISIBLE_FRACTION, MIN_VISIBLE_PIXELS, _layout, render_scene, visible_shape_masks  # noqa: F401
from .scene import MAX_INSTANCES, MIN_INSTANCES, Scene, Shape, sample_scene
from .write import GENERATOR_VERSION, generate_shapes_dataset, shapes_dataset_dir

# _layout: still imported by tests/tools/test_demo.py (visible_shape_masks is the same list).
__all__ = [
    "SHAPES_CLASSES",
    "SHAPES_COLORS",
    "MIN_INSTANCES",
    "MAX_INSTANCES",
    "MIN_VISIBLE_PIXELS",
    "MIN_VISIBLE_FRACTION",
    "GENERATOR_VERSION",
    "Shape",
    "Scene",
    "sample_scene",
    "render_scene",
    "visible_shape_masks",
    "shape_polygons",
    "shapes_dataset_dir",
    "generate_shapes_dataset",
    "register_shapes_datasets",
    "draw_preview",
    "main",
]
