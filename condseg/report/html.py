"""The report's ``index.html``: one self-contained page (inline style, no script) whose
links are relative to its folder, so it opens from disk in any browser."""
import html
import math
from typing import Dict, Iterable, List, Sequence

import numpy as np

from .error_analysis import ERROR_TYPES, ErrorBreakdown

__all__ = ["confusion_block", "error_block", "figure", "gallery_block", "note", "page", "per_category_block",
           "pr_block", "table", "threshold_block"]

STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 24px auto; max-width: 1280px;
       color: #222; line-height: 1.4; padding: 0 16px; }
h1 { font-size: 1.6em; } h2 { border-bottom: 2px solid #ddd; padding-bottom: 4px; margin-top: 2em; }
h3 { margin-top: 1.6em; }
table { border-collapse: collapse; margin: 8px 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f2f2f2; } td:first-child, th:first-child { text-align: left; }
tr.total td { font-weight: bold; background: #fafafa; }
img { max-width: 100%; border: 1px solid #ddd; }
.note { color: #555; font-size: 0.92em; } .gallery img { margin: 6px 0; }
nav a { margin-right: 1em; } code { background: #f4f4f4; padding: 0 3px; }
"""


def _e(text) -> str:
    return html.escape(str(text))


def _fmt(value, digits: int = 1) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.{digits}f}"
    return _e(value)


def table(header: Sequence[str], rows: Iterable[Sequence], total_last: bool = False, digits: int = 1) -> str:
    """An html table; floats with ``digits`` decimals (nan as "-"); the last row bold with
    ``total_last``."""
    rows = list(rows)
    out = ["<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr>"]
    for i, row in enumerate(rows):
        cls = ' class="total"' if total_last and i == len(rows) - 1 else ""
        out.append(f"<tr{cls}>" + "".join(f"<td>{_fmt(v, digits)}</td>" for v in row) + "</tr>")
    return "\n".join(out) + "</table>"


def figure(file: str, alt: str) -> str:
    """An image linking to itself (open it full size)."""
    return f'<p><a href="{_e(file)}"><img src="{_e(file)}" alt="{_e(alt)}"></a></p>'


def note(text: str) -> str:
    """A paragraph of explanation (``text`` is html)."""
    return f'<p class="note">{text}</p>'


def per_category_block(rows: List[Dict], csv: str) -> str:
    """The per-category AP table (rows of :func:`condseg.report.per_category.per_category_ap`)."""
    body = [(r["name"], r["AP"], r["AP50"], r["AP75"], r["gt"], r["det"]) for r in rows]
    return ("<h3>AP per category</h3>"
            + note("COCO AP (IoU 0.50:0.95), AP50 and AP75 of each category, from pycocotools' "
                 "<code>eval[\"precision\"]</code> as detectron2's per-category table (the same numbers); "
                 "the last row is the mean over categories (COCO's AP). GT: ground-truth instances (not crowd); "
                 f'detections: evaluated detections. <a href="{_e(csv)}">csv</a>')
            + table(["category", "AP", "AP50", "AP75", "GT", "detections"], body, total_last=True))


def pr_block(file: str) -> str:
    return ("<h3>Precision-recall curves</h3>"
            + note("COCO's interpolated precision at 101 recall levels per category, at IoU 0.5 and 0.75 (the area "
                   "under each curve is the AP in its legend); the first panel is the mean over categories.")
            + figure(file, "precision-recall curves"))


def confusion_block(file: str, csv: str, iou: float, score: str, num_gt: int, num_dt: int,
                    on_crowd: int, chosen: bool = False) -> str:
    crowd = f" ({on_crowd} detections on crowd regions are not counted)" if on_crowd else ""
    why = " (the best-F1 threshold of all categories, below)" if chosen else ""
    return ("<h3>Confusion matrix</h3>"
            + note(f"Detections scoring &ge; {score}{why} matched at IoU &ge; {iou:g}: first to ground truth of their "
                 "own class (COCO's greedy rule), then what is left to ground truth of any class (a confusion). "
                 "Row: the ground-truth class; column: the detected class. <b>missed</b>: ground truth no detection "
                 "matches; <b>background</b>: detections that match no ground truth. Rows add up to the "
                 f"{num_gt} ground-truth instances, columns to the {num_dt} detections above the score{crowd}. "
                 f'Config: <code>TEST.REPORT.IOU</code>, <code>TEST.REPORT.SCORE_THRESHOLD</code>. '
                 f'<a href="{_e(csv)}">csv</a>')
            + figure(file, "confusion matrix"))


def error_block(breakdown: ErrorBreakdown, names: Sequence[str], file: str, csv: str) -> str:
    rows = [(n, *breakdown.ap[:, k]) for k, n in enumerate(names)] + [("all (mean)", *breakdown.mean_ap)]
    return ("<h3>Error breakdown</h3>"
            + note("COCO's analysis: AP after each kind of error is forgiven in turn. <b>C75</b>, <b>C50</b>: "
                 "PR at IoU 0.75 and 0.5; <b>Loc</b>: at IoU 0.1 (poor localisation forgiven); <b>Sim</b>: "
                 "unmatched detections on ground truth of a similar class forgiven (ground truth covering at least "
                 "0.1 of the detection, as COCO's crowd regions); <b>Oth</b>: on ground truth of any other class "
                 "forgiven; <b>BG</b>: all other false positives (background) forgiven; <b>FN</b>: missed "
                 "ground truth forgiven too (AP 1). Each band is what that error costs. "
                 f"{_e(breakdown.note)} "
                 f'<a href="{_e(csv)}">csv</a>')
            + figure(file, "error breakdown")
            + table(["category", *ERROR_TYPES], rows, total_last=True))


def threshold_block(rows: List[Dict], file: str, csv: str, iou: float) -> str:
    """The score histograms and the best-F1 thresholds (``rows``: ``name`` + the fields
    of :func:`condseg.report.scores.best_f1_threshold`; the first is all categories)."""
    first = rows[0]
    advice = ""
    if np.isfinite(first["threshold"]):
        advice = (f" For the demo: <code>tools/demo.py ... --confidence-threshold {first['shown']}</code> "
                  "keeps what gives the best F1 over all classes together.")
    body = [(r["name"], r["shown"], r["f1"], r["precision"], r["recall"], r["tp"], r["fp"], r["fn"]) for r in rows]
    return ("<h3>Scores of true and false positives</h3>"
            + note(f"Scores of the detections that match ground truth of their class at IoU {iou:g} (true positives) "
                 "and of those that do not (false positives), from COCOeval's matching (at most maxDets per image). "
                 "The dashed line is the threshold of the best F1 (keep scores &ge; it)." + advice
                 + f' <a href="{_e(csv)}">csv</a>')
            + figure(file, "score histograms")
            + table(["category", "use --confidence-threshold", "F1", "precision", "recall", "TP", "FP", "FN"],
                    body, digits=3))


def gallery_block(shown: Dict[str, List[Dict]], what: str) -> str:
    titles = {"missed": "Most missed", "false_positives": "Most false positives"}
    out = ["<h3>Gallery</h3>",
           note(f"Ground truth (left) and detections above the score (right), {what}: <span style=\"color:#28aa3c\">"
              "green</span> found / correct, <span style=\"color:#ff9600\">orange</span> a class confusion, "
              "<span style=\"color:#dc2832\">red</span> missed / false positive. "
              "Config: <code>TEST.REPORT.GALLERY_IMAGES</code> images each.")]
    for kind, entries in shown.items():
        out.append(f"<h4>{titles.get(kind, kind)}</h4>")
        if not entries:
            out.append(note("none"))
        for e in entries:
            out.append(f'<div class="gallery">{_e(e["file_name"])} (image id {e["image_id"]}): '
                       f'{e["missed"]} not found, {e["false_positives"]} false positives'
                       + figure(e["file"], f"image {e['image_id']}") + "</div>")
    return "\n".join(out)


def page(title: str, summary: Sequence[Sequence], sections: Sequence[Sequence[str]]) -> str:
    """The whole page: ``summary`` rows (key, value), then each section ``(anchor, heading,
    html)`` with a link to it at the top."""
    nav = "".join(f'<a href="#{_e(a)}">{_e(h)}</a>' for a, h, _ in sections)
    body = "\n".join(f'<h2 id="{_e(a)}">{_e(h)}</h2>\n{content}' for a, h, content in sections)
    rows = "".join(f"<tr><td>{_e(k)}</td><td style=\"text-align:left\">{_e(v)}</td></tr>" for k, v in summary)
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{_e(title)}</title>"
            f"<style>{STYLE}</style></head><body>\n<h1>{_e(title)}</h1>\n<nav>{nav}</nav>\n"
            f"<table>{rows}</table>\n{body}\n</body></html>\n")
