"""The evaluation report: per-category AP, precision-recall curves, a confusion matrix,
COCO's error breakdown, score histograms with the best-F1 thresholds and a gallery of the
worst images, written as PNGs, csvs and an ``index.html`` by every evaluation
(``Trainer.test``) and by ``tools/eval_report.py`` from a saved results json.

Each item is a pure function of pycocotools' ``COCOeval`` (or of the matching in
:mod:`~condseg.report.matching`) returning numbers, plus a thin drawing function;
:mod:`~condseg.report.write` puts them together.
"""
from .write import RESULTS_FILE, write_report, write_report_of_evaluator  # noqa: F401
