"""Class-aware NMS as one custom op, ``condseg_export::batched_nms``, and its ONNX form.

In PyTorch the op is ``torchvision.ops.batched_nms`` itself (what
:func:`condseg.modeling.fcos.postprocess.nms_and_topk` runs), so the export wrapper keeps
the model's numerics. Its output size depends on the data; the fake implementation says
so (an unbacked size), and :func:`batched_nms_onnx` writes it as one ONNX
``NonMaxSuppression`` over per-class score rows (the op's own per-class mode: exact
class-aware NMS, no coordinate offsets), followed by a ``TopK`` that sorts the kept boxes
by score, descending, as torchvision returns them.
"""
import torch
import torchvision
from onnxscript import opset18 as op

__all__ = ["batched_nms", "batched_nms_onnx", "TRANSLATIONS"]

_INT64_MAX = 2**63 - 1


@torch.library.custom_op("condseg_export::batched_nms", mutates_args=())
def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, iou_threshold: float,
                num_classes: int) -> torch.Tensor:
    """``(K,)`` int64 indices of the boxes kept by class-aware NMS, by descending score.

    boxes: ``(M, 4)`` XYXY; scores: ``(M,)``; classes: ``(M,)`` int64 in ``[0, num_classes)``."""
    return torchvision.ops.batched_nms(boxes, scores, classes, iou_threshold)


@batched_nms.register_fake
def _(boxes, scores, classes, iou_threshold, num_classes):
    kept = torch.library.get_ctx().new_dynamic_size()
    return boxes.new_empty((kept,), dtype=torch.int64)


def batched_nms_onnx(boxes, scores, classes, iou_threshold: float, num_classes: int):
    """ONNX translation of :func:`batched_nms`: scores laid out ``(1, num_classes, M)``
    (a box's score in its own class's row, -1 elsewhere, below the score threshold of
    -0.5 that drops those entries; real scores are >= 0), one ``NonMaxSuppression``,
    then the kept indices sorted by score."""
    ids = op.Constant(value_ints=list(range(num_classes)))
    in_class = op.Equal(op.Unsqueeze(classes, [0]), op.Unsqueeze(ids, [1]))  # (K, M)
    rows = op.Where(in_class, op.Unsqueeze(scores, [0]), op.Constant(value_float=-1.0))
    selected = op.NonMaxSuppression(
        op.Unsqueeze(boxes, [0]), op.Unsqueeze(rows, [0]),
        op.Constant(value_ints=[_INT64_MAX]), op.Constant(value_floats=[iou_threshold]),
        op.Constant(value_floats=[-0.5]),
    )  # (S, 3): batch, class, box
    kept = op.Reshape(op.Slice(selected, [2], [3], [1]), op.Constant(value_ints=[-1]))
    _, order = op.TopK(op.Gather(scores, kept), op.Shape(kept), largest=1, sorted=1)
    return op.Gather(kept, order)


#: the ``custom_translation_table`` entries ``torch.onnx.export`` needs for these ops
TRANSLATIONS = {torch.ops.condseg_export.batched_nms.default: batched_nms_onnx}
