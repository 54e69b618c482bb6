"""COCO evaluation of bbox and segm (evaluate, accumulate, summarize) by
pycocotools' COCOeval against faster_coco_eval's COCOeval_faster (the two
TEST.COCO_EVAL_BACKEND values), on the same pycocotools ground truth and
detections: the shapes validation set (200 images) and a synthetic COCO-sized
set (5,000 640x480 images, ~7.3 instances per image in COCO's 80 categories,
1% crowd, polygons), both with 100 detections per image made from the ground
truth (jittered copies with scores, misses, wrong classes, duplicates and
false positives, RLE masks; deterministic), made once and cached under
output/benchmark/coco_eval/. Rows add each phase's seconds (faster_coco_eval
accumulates within evaluate) and the AP; tests/engine/test_coco_eval_backend.py
checks that every AP is the same. Defaults: 2 rounds of 1 run, no warm-up (a
pycocotools evaluation of the synthetic set takes minutes). CPU only; the
default allocator.
"""
import contextlib
import io
import json
import os
import subprocess
import sys
import time

import numpy as np

from .harness import Case

CACHE = os.path.join("output", "benchmark", "coco_eval")
VERSION = 1  # of the synthetic sets and detections: bump when they change (older caches are not read)
SEED = 0
DETECTIONS = 100  # per image
NUM_IMAGES = {"shapes-val": 200, "synthetic": 5000}  # the sets measured, by name
SHAPES_VAL = {"min_size": 256, "max_size": 384, "seed": 1}  # condseg_shapes_val's defaults
SYNTHETIC_SIZE = (480, 640)  # height, width
MEAN_INSTANCES = 7.3  # per image, as in COCO val2017 (36,781 instances in 5,000 images)
CROWD_FRACTION = 0.01
MISS, WRONG_CLASS = 0.15, 0.1  # of the ground-truth objects: not detected, detected with another class
SIDES = (6.0, 300.0)  # sqrt(area) of an object, log-uniform: small, medium and large ones all common, as in COCO


def coco_categories():
    """COCO's 80 thing categories (``id``, ``name``; ids 1..90 with gaps)."""
    from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

    return [{"id": c["id"], "name": c["name"]} for c in COCO_CATEGORIES if c["isthing"]]


def star_polygon(rng, cx: float, cy: float, side: float, height: int, width: int) -> list:
    """A random star-shaped polygon of about ``side**2`` pixels centred at ``(cx, cy)``
    (8-19 vertices, random aspect and rotation), clipped to the image: flat ``[x0, y0, ...]``."""
    n = int(rng.integers(8, 20))
    t = np.sort(rng.uniform(0, 2 * np.pi, n))
    r = side / np.sqrt(np.pi) * np.clip(1 + 0.2 * rng.standard_normal(n), 0.5, 1.5)
    aspect, rot = np.exp(0.4 * rng.standard_normal()), rng.uniform(0, np.pi)
    x, y = r * np.cos(t) * np.sqrt(aspect), r * np.sin(t) / np.sqrt(aspect)
    xs = np.clip(cx + x * np.cos(rot) - y * np.sin(rot), 0, width)
    ys = np.clip(cy + x * np.sin(rot) + y * np.cos(rot), 0, height)
    return np.round(np.stack([xs, ys], 1).ravel(), 2).tolist()


def _random_side(rng) -> float:
    return float(np.exp(rng.uniform(*np.log(SIDES))))


def _rle(polygon: list, height: int, width: int) -> dict:
    import pycocotools.mask as mask_util

    rle = mask_util.frPyObjects([polygon], height, width)[0]
    return {"size": [height, width], "counts": rle["counts"].decode("ascii")}


def _box(polygon: list) -> list:
    xs, ys = polygon[0::2], polygon[1::2]
    return [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]


def jittered_detections(truth, height: int, width: int, category_ids, rng, num: int = DETECTIONS):
    """``num`` detections (COCO result dicts without ``image_id``: ``category_id``, ``bbox``
    XYWH, ``segmentation`` compressed RLE, ``score``) of an image whose objects are ``truth``
    (``[(category_id, polygon)]``, polygons flat ``[x0, y0, ...]``): each object missed
    (:data:`MISS`) or found 1-3 times by jittered copies of its polygon (shifted, scaled,
    vertices moved, so their IoUs spread over COCO's thresholds; some with another class
    (:data:`WRONG_CLASS`), duplicates with lower scores), the rest false positives (random
    polygons and classes, mostly low scores). The box is the detection polygon's."""
    found = []
    for category_id, poly in truth:
        if rng.uniform() < MISS:
            continue
        p = np.asarray(poly, np.float64).reshape(-1, 2)
        centre, size = p.mean(0), max(float(np.ptp(p, 0).max()), 1.0)
        score = rng.uniform(0.2, 1.0)
        for dup in range(min(int(rng.geometric(0.6)), 3)):
            s = 0.06 * (1 + dup)  # duplicates further off
            q = centre + (p - centre) * np.exp(s * rng.standard_normal()) + s * size * rng.standard_normal(2)
            q = q + 0.3 * s * size * rng.standard_normal(p.shape)
            cat = category_id if rng.uniform() >= WRONG_CLASS else int(rng.choice(category_ids))
            q = np.clip(q, 0, [width, height])
            found.append((cat, np.round(q.ravel(), 2).tolist(), score * 0.7**dup))
    found = found[:num]
    while len(found) < num:
        poly = star_polygon(rng, rng.uniform(0, width), rng.uniform(0, height), _random_side(rng), height, width)
        found.append((int(rng.choice(category_ids)), poly, float(rng.beta(1.2, 4.0))))
    return [{"category_id": int(c), "bbox": _box(p), "segmentation": _rle(p, height, width),
             "score": round(float(s), 5)} for c, p, s in found]


def synthetic_truth(seed: int, index: int, height: int, width: int, category_ids):
    """The objects of image ``index`` of the synthetic set: ``[(category_id, polygon, iscrowd)]``
    (1 + Poisson(:data:`MEAN_INSTANCES` - 1) of them, sizes log-uniform in :data:`SIDES`,
    classes skewed like COCO's (the first most frequent), :data:`CROWD_FRACTION` crowds)."""
    rng = np.random.default_rng([seed, index])
    weights = 1.0 / np.arange(1, len(category_ids) + 1)
    objects = []
    for _ in range(1 + int(rng.poisson(MEAN_INSTANCES - 1))):
        cat = int(rng.choice(category_ids, p=weights / weights.sum()))
        crowd = int(rng.uniform() < CROWD_FRACTION)
        side = _random_side(rng) * (2 if crowd else 1)
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        objects.append((cat, star_polygon(rng, cx, cy, side, height, width), crowd))
    return objects


def truth_polygons(coco_gt, image_id: int):
    """``[(category_id, polygon)]`` of the non-crowd objects of an image of a pycocotools
    ``COCO``: its largest polygon, or for an RLE mask the outline of its largest part."""
    import cv2

    out = []
    for ann in coco_gt.imgToAnns[image_id]:
        if ann.get("iscrowd", 0):
            continue
        seg = ann["segmentation"]
        if isinstance(seg, list):
            poly = max(seg, key=len)
        else:
            contours, _ = cv2.findContours(coco_gt.annToMask(ann), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            poly = max(contours, key=cv2.contourArea).reshape(-1).astype(float).tolist() if contours else []
        if len(poly) >= 6:
            out.append((ann["category_id"], poly))
    return out


def detections_for(coco_gt, seed: int = SEED, num: int = DETECTIONS):
    """:func:`jittered_detections` of every image of ``coco_gt`` (a pycocotools ``COCO``),
    image ``k`` (in id order) from the generator ``(seed, k, 1)``: COCO result dicts."""
    from tqdm import tqdm

    category_ids = sorted(coco_gt.getCatIds())
    results = []
    for k, image_id in enumerate(tqdm(sorted(coco_gt.getImgIds()), desc="detections", unit="image")):
        img = coco_gt.imgs[image_id]
        rng = np.random.default_rng([seed, k, 1])
        truth = truth_polygons(coco_gt, image_id)
        dets = jittered_detections(truth, img["height"], img["width"], category_ids, rng, num)
        results += [{"image_id": image_id, **d} for d in dets]
    return results


def synthetic_dataset(num_images: int, height: int, width: int, seed: int = SEED) -> dict:
    """The synthetic ground truth (a COCO instances dict) of :func:`synthetic_truth`: polygons,
    crowds as compressed RLE; areas and boxes of the rasterised masks, as in COCO."""
    import pycocotools.mask as mask_util
    from tqdm import tqdm

    categories = coco_categories()
    ids = [c["id"] for c in categories]
    images, annotations = [], []
    for k in tqdm(range(num_images), desc="synthetic set", unit="image"):
        images.append({"id": k + 1, "file_name": f"{k + 1:012d}.jpg", "height": height, "width": width})
        for cat, poly, crowd in synthetic_truth(seed, k, height, width, ids):
            rle = mask_util.frPyObjects([poly], height, width)[0]
            area = float(mask_util.area(rle))
            if area < 1:
                continue
            seg = {"size": [height, width], "counts": rle["counts"].decode("ascii")} if crowd else [poly]
            annotations.append({"id": len(annotations) + 1, "image_id": k + 1, "category_id": cat, "iscrowd": crowd,
                                "segmentation": seg, "area": area, "bbox": [float(v) for v in mask_util.toBbox(rle)]})
    return {"info": {"description": f"condseg coco-eval benchmark: synthetic, seed {seed}", "version": str(VERSION)},
            "images": images, "annotations": annotations, "categories": categories}


def load_coco(json_file: str):
    """A pycocotools ``COCO`` of ``json_file``, without its prints."""
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(json_file)


def _write_json(path: str, obj) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, separators=(",", ":"))
    os.replace(tmp, path)


def prepare(data: str, num_images: int, detections: int):
    """``[gt_file, dt_file]`` of a benchmark set of ``num_images`` images with ``detections``
    per image, made once and cached under :data:`CACHE`: ``"shapes-val"`` (the shapes
    validation split of :data:`SHAPES_VAL`, generated where detectron2's datasets live) or
    ``"synthetic"`` (:func:`synthetic_dataset`)."""
    tag = f"n{num_images}-seed{SEED}-v{VERSION}"
    if data == "shapes-val":
        from condseg.data.shapes import generate_shapes_dataset

        sv = SHAPES_VAL
        gt_file = generate_shapes_dataset("val", num_images, sv["min_size"], sv["max_size"], sv["seed"])
        tag = f"{sv['min_size']}x{sv['max_size']}-seed{sv['seed']}-{tag}"
    elif data == "synthetic":
        h, w = SYNTHETIC_SIZE
        tag = f"{w}x{h}-{tag}"
        gt_file = os.path.join(CACHE, f"synthetic-{tag}-gt.json")
        if not os.path.isfile(gt_file):
            _write_json(gt_file, synthetic_dataset(num_images, h, w))
    else:
        raise ValueError(f"data must be 'shapes-val' or 'synthetic', got {data!r}")
    dt_file = os.path.join(CACHE, f"{data}-{tag}-det{detections}-dt.json")
    if not os.path.isfile(dt_file):
        _write_json(dt_file, detections_for(load_coco(gt_file), num=detections))
    return [gt_file, dt_file]


def prepare_in_fresh_process(data: str, num_images: int, detections: int):
    """:func:`prepare` in a process of its own (its progress bars on this stderr), so that the
    harness's process (whose peak RSS the measuring processes it starts inherit) stays small."""
    code = ("import json, sys; from condseg.benchmark import coco_eval; "
            "print(json.dumps(coco_eval.prepare(*json.loads(sys.argv[1]))))")
    proc = subprocess.run([sys.executable, "-c", code, json.dumps([data, num_images, detections])],
                          stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"making the {data} set of the coco-eval case failed (its error is above)")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def runs(device: str, impl: str, mode: str, data: str, images: int, detections: int, gt_file: str, dt_file: str):
    """One COCO evaluation (``mode``: ``bbox`` or ``segm``) of the detections of ``dt_file``
    against ``gt_file`` by ``impl`` (a ``TEST.COCO_EVAL_BACKEND`` value): the ground truth
    and the loaded detections (``COCO.loadRes``) are made once, each run makes a fresh
    ``COCOeval`` on them and times its evaluate, accumulate and summarize."""
    from condseg.engine.evaluation import cocoeval_class

    cocoeval_fn = cocoeval_class(impl)
    coco_gt = load_coco(gt_file)
    with open(dt_file) as f:
        results = json.load(f)
    if mode == "segm":  # as in condseg.engine.evaluation.evaluate_on_coco
        results = [{k: v for k, v in r.items() if k != "bbox"} for r in results]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(results)
    del results

    def run():
        phases = {}
        with contextlib.redirect_stdout(io.StringIO()):
            coco_eval = cocoeval_fn(coco_gt, coco_dt, mode)
            for phase in ("evaluate", "accumulate", "summarize"):
                t = time.perf_counter()
                getattr(coco_eval, phase)()
                phases[f"{phase} s"] = time.perf_counter() - t
        return {"metrics": {**phases, "AP": 100 * float(coco_eval.stats[0])}}

    return run


def plan(devices):
    """The specs, after making (in a fresh process, cached) the sets they read."""
    if "cpu" not in devices:
        raise SystemExit("the coco-eval case runs on the CPU only (COCO evaluation): use --device cpu")
    specs = []
    for data, num_images in NUM_IMAGES.items():
        gt_file, dt_file = prepare_in_fresh_process(data, num_images, DETECTIONS)
        for mode in ("bbox", "segm"):
            for impl in ("pycocotools", "faster_coco_eval"):
                specs.append({"case": "coco-eval", "device": "cpu", "impl": impl, "mode": mode, "data": data,
                              "images": num_images, "detections": DETECTIONS, "gt_file": gt_file, "dt_file": dt_file})
    return specs


# not comparable: the harness's agreement would evaluate every spec once more (as long as a round); the
# rows' AP column and tests/engine/test_coco_eval_backend.py compare the backends instead. One pycocotools
# evaluation of the synthetic set takes minutes: by default 2 rounds of one run, no warm-up.
CASE = Case(plan, runs, "pycocotools", ("data", "images", "detections"), comparable=False, stable_malloc=False,
            help=__doc__, defaults={"rounds": 2, "repeats": 1, "warmup": 0})
