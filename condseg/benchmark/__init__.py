"""condseg's benchmarks: the measuring harness (:mod:`.harness`, :mod:`.worker`) and one
module per case, each with its ``CASE`` (a :class:`~condseg.benchmark.harness.Case`, whose
``help`` is the module's docstring). ``tools/benchmark.py`` is the command line.

A new case is one module with its ``CASE`` and one line in :data:`CASES`.
"""
from . import coco_eval, dcn, demo, mask_head, model, odconv, onnx

CASES = {  # command-line name -> Case, in the order of tools/benchmark.py --help
    "mask-head": mask_head.CASE,
    "odconv": odconv.CASE,
    "dcn": dcn.CASE,
    "demo": demo.CASE,
    "onnx": onnx.CASE,
    "coco-eval": coco_eval.CASE,
    "model": model.CASE,
}
