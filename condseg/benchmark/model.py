"""whole models: CondInst against detectron2's Mask R-CNN, and where CondInst's
time goes. (1) inference images/s of the quickstart CondInst and Mask R-CNN
(configs/quickstart/*_R18_shapes.yaml: the same half-width ResNet-18, FPN
width and test size 288/480) through condseg.Predictor on shapes validation
images, 1 and 2 images per call, both at the demo's score threshold (0.4), with
the trained weights (--condinst-weights, --mask-rcnn-weights; if either is
missing, both run seeded random weights with 50 forced detections per image);
(2) a training step of each (batch 8, the quickstart's train sizes, the same
seeded ResNet); (3) CondInst's inference stage by stage, "other" being what no
stage holds; (4) CondInst R-50 (random weights, detections forced) against the
input size and the number of detections, with the masks of this release and of
the previous one (batch norms not folded, unfused heads, all instances pasted at
once), peak RSS and peak of live tensors, and the mask path
alone (heads, upsampling, pasting) and the pasting alone, both ways.
CPU only, default allocator; 3 rounds of 3 runs after 1 warm-up unless asked.
"""
import math
import os
import sys
import time

from . import demo
from .harness import Case

CONFIGS = {
    "condinst": os.path.join("configs", "quickstart", "condinst_R18_shapes.yaml"),
    "mask_rcnn": os.path.join("configs", "quickstart", "mask_rcnn_R18_shapes.yaml"),
}
WEIGHTS = {
    "condinst": os.path.join("output", "quickstart", "model_final.pth"),
    "mask_rcnn": os.path.join("output", "quickstart_mask_rcnn", "model_final.pth"),
}
NAMES = {"condinst": "CondInst", "mask_rcnn": "Mask R-CNN"}
TRAIN_COMMANDS = ("make quickstart", ".venv/bin/python tools/train_net.py --config-file " + CONFIGS["mask_rcnn"])
R50_CONFIG = os.path.join("configs", "condinst_R50_1x.yaml")
QUICKSTART = "quickstart-R18"
THRESHOLD = demo.THRESHOLD  # the final-score threshold of both models, that of `make demo`
NUM_IMAGES = 16  # validation images per pass
BATCHES = (1, 2)  # images per model call (2: the video demo's)
NUM_TRAIN_BATCHES = 4  # distinct training batches, cycled
SHORT_SIDES, MAX_SIZE = (320, 512, 800), 1333  # the R-50 input sizes
ASPECT = 1333 / 800  # their width / height
DETECTIONS = (1, 10, 100)  # forced detections per image at 800x1333
FORCED_PER_IMAGE = 50  # the quickstart models' forced detections with random weights
BOX_BIAS = 2.0  # random CondInst: box distances of 2 strides, so that no forced box is empty
UNBOUNDED = sys.maxsize  # postprocess_masks's chunk_bytes for every instance at once (the previous release)
SEED = 0
TRAINED, RANDOM = "trained", "random, forced detections"
# CondInst passes: stage by stage, in one call, stage by stage without folding the batch norms,
# and the previous release (norms not folded, its masks: see model_stages.staged_inference)
STAGED, FORWARD, UNFOLDED, PREVIOUS = "staged", "forward", "staged, norms not folded", "previous release"


def forced_opts(impl: str, per_image: int) -> str:
    """Overrides that make a model with random weights return ``per_image`` detections:
    no score threshold, a cap of ``per_image``."""
    if impl == "condinst":
        return f"MODEL.FCOS.INFERENCE_TH_TEST 0.0 MODEL.FCOS.POST_NMS_TOPK_TEST {per_image}"
    return f"MODEL.ROI_HEADS.SCORE_THRESH_TEST 0.0 TEST.DETECTIONS_PER_IMAGE {per_image}"


def force_boxes(model) -> None:
    """Random CondInst weights predict box distances of about 0, boxes that are dropped as
    empty: the box predictor's bias is set to :data:`BOX_BIAS` strides (its weights stay
    random), so that the cap of :func:`forced_opts` is what decides the count."""
    import torch

    with torch.no_grad():
        model.proposal_generator.head.bbox_pred.bias.fill_(BOX_BIAS)


def build_predictor(impl: str, config: str, checkpoint: str, opts: str, threshold):
    """``condseg.Predictor`` on the CPU: ``checkpoint``'s weights, or with ``""`` seeded random
    weights (the same in every process), for CondInst with boxes that are never empty
    (:func:`force_boxes`)."""
    import torch

    from condseg import Predictor

    torch.manual_seed(SEED)
    predictor = Predictor(config, checkpoint, opts=opts.split(), device="cpu", confidence_threshold=threshold)
    if not checkpoint and impl == "condinst":
        force_boxes(predictor.model)
    return predictor


def validation_images(cfg, num: int):
    """The first ``num`` images of ``cfg``'s first test dataset (BGR uint8), read once."""
    import cv2
    from detectron2.data import DatasetCatalog

    name = cfg.DATASETS.TEST[0]
    dicts = DatasetCatalog.get(name)[:num]
    if len(dicts) < num:
        raise SystemExit(f"DATASETS.TEST {name} has {len(dicts)} images, the model case reads {num}")
    images = [cv2.imread(d["file_name"]) for d in dicts]
    unread = [d["file_name"] for d, im in zip(dicts, images) if im is None]
    if unread:
        raise SystemExit(f"cannot read {unread[0]} (of {name})")
    return images


def model_inputs(cfg, images):
    """The model inputs of BGR images as ``condseg.Predictor`` makes them: resized to
    ``INPUT.MIN_SIZE_TEST`` / ``MAX_SIZE_TEST``, masks asked at the image's own size."""
    import numpy as np
    import torch
    from detectron2.data import transforms as T

    if cfg.INPUT.FORMAT != "BGR":
        raise ValueError(f"INPUT.FORMAT {cfg.INPUT.FORMAT}: the model case feeds BGR images")
    resize = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)
    inputs = []
    for im in images:
        resized = resize.get_transform(im).apply_image(im)
        tensor = torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1)))
        inputs.append({"image": tensor, "height": im.shape[0], "width": im.shape[1]})
    return inputs


def seeded_resnet_state(cfg):
    """The state of ``cfg``'s ResNet built after ``torch.manual_seed(SEED)``: the same for
    both quickstart models (their ResNet keys agree), their common training start."""
    import torch
    from detectron2.layers import ShapeSpec

    from condseg.modeling.backbone.resnet import build_resnet

    torch.manual_seed(SEED)
    return build_resnet(cfg, ShapeSpec(channels=len(cfg.MODEL.PIXEL_MEAN))).state_dict()


def training_batches(cfg, num: int):
    """``num`` batches of ``SOLVER.IMS_PER_BATCH`` training images of ``cfg``'s first
    training dataset, mapped as in training (random shorter side of ``INPUT.MIN_SIZE_TRAIN``,
    flips) with seeded RNGs: the same batches in every process and for both models."""
    from detectron2.data import DatasetCatalog

    from condseg.data.mapper import CondsegDatasetMapper
    from condseg.data.train_loader import seeded_rngs

    size = cfg.SOLVER.IMS_PER_BATCH
    dicts = DatasetCatalog.get(cfg.DATASETS.TRAIN[0])[: num * size]
    if len(dicts) < num * size:
        raise SystemExit(f"DATASETS.TRAIN {cfg.DATASETS.TRAIN[0]} has {len(dicts)} images, the model case maps "
                         f"{num * size}")
    mapper = CondsegDatasetMapper(cfg, is_train=True)
    with seeded_rngs(SEED):
        return [[mapper(d) for d in dicts[i * size : (i + 1) * size]] for i in range(num)]


def _infer_run(impl, config, checkpoint, opts, threshold, batch, images):
    predictor = build_predictor(impl, config, checkpoint, opts, threshold)
    frames = validation_images(predictor.cfg, images)

    def run():
        t = time.perf_counter()
        found = []
        for i in range(0, len(frames), batch):
            found += predictor.predict_batch(frames[i : i + batch])
        wall = time.perf_counter() - t
        return {"metrics": {"images/s": len(frames) / wall, "detections/image": sum(map(len, found)) / len(found)}}

    return run


def _train_run(config, batches):
    import torch
    from detectron2.modeling import build_model
    from detectron2.utils.events import EventStorage

    from condseg.config_setup import setup_cfg
    from condseg.engine.trainer import Trainer

    cfg = setup_cfg(config, ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""])
    torch.manual_seed(SEED)
    model = build_model(cfg)
    model.backbone.bottom_up.load_state_dict(seeded_resnet_state(cfg))
    model.train()
    optimizer = Trainer.build_optimizer(cfg, model)
    data = training_batches(cfg, batches)
    step = [0]

    def run():
        with EventStorage(step[0]):  # detectron2's heads log into the current storage
            loss = sum(model(data[step[0] % len(data)]).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        step[0] += 1
        return {"metrics": {"loss": float(loss.detach())}}

    return run


def _staged_run(impl, config, checkpoint, opts, threshold, batch, frames, live_peak=False):
    """CondInst passes over ``frames`` (``impl``: one of the CondInst passes above),
    ``batch`` images per call; ``live_peak``: the peak of live tensors of an untimed
    one-image pass in the metrics (``live peak MB``, :mod:`condseg.benchmark.live_memory`)."""
    import torch

    from .model_stages import STAGES, staged_inference

    from .live_memory import live_tensor_peak

    previous = impl == PREVIOUS
    if impl in (UNFOLDED, PREVIOUS):
        opts = f"{opts} TEST.FOLD_BATCH_NORMS False".strip()
    predictor = build_predictor("condinst", config, checkpoint, opts, threshold)
    model = predictor.model
    inputs = model_inputs(predictor.cfg, frames)
    live_mb = None
    if live_peak:  # one untimed pass, before the measurement starts
        with torch.no_grad():
            live_mb = live_tensor_peak(lambda: [staged_inference(model, [x], previous) for x in inputs])[1] / 2**20

    def run():
        seconds = dict.fromkeys(STAGES, 0.0)
        found = []
        t = time.perf_counter()
        with torch.no_grad():
            for i in range(0, len(inputs), batch):
                if impl == FORWARD:
                    out = model(inputs[i : i + batch])
                else:
                    out, stage_seconds = staged_inference(model, inputs[i : i + batch], previous)
                    for k, v in stage_seconds.items():
                        seconds[k] += v
                found += [len(o["instances"]) for o in out]
        wall = time.perf_counter() - t
        per_image = 1000 / len(inputs)
        metrics = {"total ms": wall * per_image, "detections/image": sum(found) / len(found)}
        if impl != FORWARD:
            metrics.update({f"{k} ms": v * per_image for k, v in seconds.items()})
            metrics["other ms"] = (wall - sum(seconds.values())) * per_image
        if live_mb is not None:
            metrics["live peak MB"] = live_mb
        return {"metrics": metrics}

    return run


def padded_size(height: int, width: int, divisibility: int = 32):
    """The padded input of an image: each side rounded up to the backbone's size
    divisibility (32, the stride of res5, for every CondInst config here)."""
    return math.ceil(height / divisibility) * divisibility, math.ceil(width / divisibility) * divisibility


def _paste_run(impl, image, detections, mask_out_stride=4):
    """``postprocess_masks`` alone on ``detections`` random mask probabilities at the mask
    stride of an ``image`` (WxH) input, pasted at its size: chunked or all at once."""
    import torch

    from condseg.modeling.condinst.condinst import postprocess_masks

    w, h = (int(v) for v in image.split("x"))
    padded = padded_size(h, w)
    g = torch.Generator().manual_seed(SEED)
    probs = torch.rand(detections, 1, padded[0] // mask_out_stride, padded[1] // mask_out_stride, generator=g)
    chunk = {"chunk_bytes": UNBOUNDED} if impl == "unbounded" else {}

    def run():
        return postprocess_masks(probs, padded, (h, w), (h, w), **chunk)

    return run


def _mask_path_run(impl, image, detections, mask_feat_stride=8, mask_out_stride=4):
    """The mask path alone for ``detections`` instances of one ``image`` (WxH) input, from
    random mask features and head parameters (the R-50 config's shapes): ``fused`` (this
    release: ``dynamic_mask_probs``, then ``postprocess_masks`` in chunks) or ``unfused``
    (the previous release: bmm heads, upsampling and sigmoid on every instance, then every
    instance pasted at once)."""
    import torch

    from condseg.layers import aligned_bilinear, dynamic_layer_shapes, dynamic_mask_heads, dynamic_mask_probs
    from condseg.modeling.condinst.condinst import postprocess_masks

    w, h = (int(v) for v in image.split("x"))
    padded = padded_size(h, w)
    g = torch.Generator().manual_seed(SEED)
    feats = torch.randn(1, 8, padded[0] // mask_feat_stride, padded[1] // mask_feat_stride, generator=g)
    shapes = dynamic_layer_shapes(8, 8, 3)
    params = 0.5 * torch.randn(detections, sum(o * i + o for o, i in shapes), generator=g)
    im_inds = torch.zeros(detections, dtype=torch.int64)
    locations = torch.rand(detections, 2, generator=g) * torch.tensor([float(w), float(h)])
    soi = torch.tensor([64.0, 128, 256, 512, 1024])[torch.randint(0, 5, (detections,), generator=g)]
    factor = mask_feat_stride // mask_out_stride

    def run():
        with torch.no_grad():
            if impl == "fused":
                probs = dynamic_mask_probs(feats, params, im_inds, locations, soi, shapes, mask_feat_stride, factor)
                return postprocess_masks(probs, padded, (h, w), (h, w))
            low = dynamic_mask_heads(feats, params, im_inds, locations, soi, shapes, mask_feat_stride)
            probs = aligned_bilinear(low, factor).sigmoid()
            return postprocess_masks(probs, padded, (h, w), (h, w), chunk_bytes=UNBOUNDED)

    return run


def runs(device: str, impl: str, mode: str, **spec):
    """One run of a spec: ``infer`` (a pass of the Predictor over the images), ``train`` (one
    step: forward, losses, backward, AdamW), ``stages`` / ``scaling`` (a pass of CondInst over
    prepared inputs, stage by stage or in one call), ``masks`` (heads to pasted masks, alone),
    ``paste`` (``postprocess_masks`` alone). Returns ``{"metrics": ...}`` (or the masks, for
    ``masks`` and ``paste``)."""
    if device != "cpu":
        raise ValueError(f"the model case runs on the CPU only, got device {device!r}")
    if mode == "infer":
        return _infer_run(impl, spec["config"], spec["checkpoint"], spec["opts"], spec["threshold"], spec["batch"],
                          spec["images"])
    if mode == "train":
        return _train_run(spec["config"], spec["batches"])
    if mode == "stages":
        from condseg.config_setup import setup_cfg

        frames = validation_images(setup_cfg(spec["config"], ["MODEL.DEVICE", "cpu"]), spec["images"])
        return _staged_run(impl, spec["config"], spec["checkpoint"], spec["opts"], spec["threshold"], spec["batch"],
                           frames)
    if mode == "scaling":
        from .onnx import shapes_images

        return _staged_run(impl, spec["config"], "", spec["opts"], None, 1, shapes_images(spec["input"], 1),
                           live_peak=True)
    if mode == "paste":
        return _paste_run(impl, spec["input"], spec["detections"])
    if mode == "masks":
        return _mask_path_run(impl, spec["input"], spec["detections"])
    raise ValueError(f"unknown model-case mode {mode!r}")


def _input_of(short: int) -> str:
    """WxH of an image of :data:`ASPECT` with shorter side ``short``."""
    return f"{round(short * ASPECT)}x{short}"


def plan(devices, condinst_weights=WEIGHTS["condinst"], mask_rcnn_weights=WEIGHTS["mask_rcnn"]):
    """The specs: inference and training of both quickstart models, CondInst's stages, the
    R-50 scaling and the pasting alone. Trained weights when both files exist; else both
    models run seeded random weights with forced detections (the ratio then compares equal
    numbers of detections), said in every row and on stderr."""
    from condseg.config_setup import build_cfg

    if "cpu" not in devices:
        raise SystemExit("the model case runs on the CPU only: use --device cpu")
    weights = {"condinst": condinst_weights, "mask_rcnn": mask_rcnn_weights}
    missing = [w for w in weights.values() if not os.path.isfile(w)]
    trained = not missing
    if missing:
        print(f"model case: {' and '.join(missing)} missing, so both quickstart models run random weights with "
              f"{FORCED_PER_IMAGE} forced detections per image (train them with `{TRAIN_COMMANDS[0]}` and "
              f"`{TRAIN_COMMANDS[1]}`)", file=sys.stderr)
    label = TRAINED if trained else RANDOM

    def quickstart(impl):
        return {"model": QUICKSTART, "weights": label, "config": CONFIGS[impl],
                "checkpoint": weights[impl] if trained else "",
                "opts": "" if trained else forced_opts(impl, FORCED_PER_IMAGE),
                "threshold": THRESHOLD if trained else None, "images": NUM_IMAGES}

    base = {"case": "model", "device": "cpu"}
    specs = [{**base, "mode": "infer", "impl": impl, "batch": b, **quickstart(impl)}
             for b in BATCHES for impl in ("mask_rcnn", "condinst")]
    specs += [{**base, "mode": "train", "impl": impl, "model": QUICKSTART, "config": CONFIGS[impl],
               "batch": build_cfg(CONFIGS[impl]).SOLVER.IMS_PER_BATCH, "batches": NUM_TRAIN_BATCHES}
              for impl in ("mask_rcnn", "condinst")]
    specs += [{**base, "mode": "stages", "impl": impl, "batch": 1, **quickstart("condinst")}
              for impl in (FORWARD, STAGED)]

    def r50(impl, short, k):
        return {**base, "mode": "scaling", "impl": impl, "model": "R50", "config": R50_CONFIG,
                "input": _input_of(short), "detections": k, "weights": RANDOM,
                "opts": f"INPUT.MIN_SIZE_TEST {short} INPUT.MAX_SIZE_TEST {MAX_SIZE} " + forced_opts("condinst", k)}

    largest = SHORT_SIDES[-1]
    specs += [r50(STAGED, short, DETECTIONS[-1]) for short in SHORT_SIDES[:-1]]
    specs += [r50(STAGED, largest, k) for k in DETECTIONS]
    specs += [r50(impl, largest, DETECTIONS[-1]) for impl in (UNFOLDED, PREVIOUS)]
    specs += [{**base, "mode": "masks", "impl": impl, "model": "mask path", "input": _input_of(largest),
               "detections": DETECTIONS[-1]}
              for impl in ("fused", "unfused")]
    specs += [{**base, "mode": "paste", "impl": impl, "model": "postprocess_masks", "input": _input_of(largest),
               "detections": DETECTIONS[-1]}
              for impl in ("chunked", "unbounded")]
    return specs


# ---------------------------------------------------------------------------------------------- the report
def _ratio(a, b):
    return f"{a / b:.2f}x" if a and b else "-"


def _find(rows, **match):
    found = [r for r in rows if all(r.get(k) == v for k, v in match.items())]
    return found[0] if found else None


def inference_table(rows) -> str:
    lines = ["| model | weights | images per call | images/s | ms per image | peak memory | detections/image | "
             "images/s vs Mask R-CNN |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        m = r["metrics"]
        base = _find(rows, impl="mask_rcnn", batch=r["batch"], weights=r["weights"])
        ratio = _ratio(m["images/s"], base["metrics"]["images/s"]) if base and base is not r else ""
        lines.append(f"| {NAMES[r['impl']]} | {r['weights']} | {r['batch']} | {m['images/s']:.2f} | "
                     f"{1000 / m['images/s']:.1f} | {r['peak_mb']:.0f} MB | {m['detections/image']:.1f} | {ratio} |")
    return "\n".join(lines)


def training_table(rows) -> str:
    lines = ["| model | images per iteration | s/iteration | peak memory | speed-up vs Mask R-CNN |",
             "|---|---|---|---|---|"]
    base = _find(rows, impl="mask_rcnn")
    for r in rows:
        ratio = _ratio(base["median_s"], r["median_s"]) if base and base is not r else ""
        lines.append(f"| {NAMES[r['impl']]} | {r['batch']} | {r['median_s']:.2f} | {r['peak_mb']:.0f} MB | {ratio} |")
    return "\n".join(lines)


def stages_table(columns) -> str:
    """Rows: the stages, other and the total; ``columns``: ``(title, staged row, forward row or None)``."""
    from .model_stages import STAGES

    head = "| stage |" + "".join(f" {title}: ms per image | share |" for title, _, _ in columns)
    lines = [head, "|---|" + "---|---|" * len(columns)]
    for stage in STAGES + ("other",):
        cells = ""
        for _, r, _ in columns:
            v, total = r["metrics"][f"{stage} ms"], r["metrics"]["total ms"]
            cells += f" {v:.1f} | {100 * v / total:.0f} % |"
        lines.append(f"| {stage} |{cells}")
    lines.append("| **total** |" + "".join(f" **{r['metrics']['total ms']:.1f}** | 100 % |" for _, r, _ in columns))
    if any(f for _, _, f in columns):
        lines.append("| the model in one call (not staged) |" + "".join(
            f" {f['metrics']['total ms']:.1f} | {100 * f['metrics']['total ms'] / r['metrics']['total ms']:.0f} % |"
            if f else " - | |" for _, r, f in columns))
    return "\n".join(lines)


# the stages of the scaling table, grouped
GROUPS = {
    "backbone + FPN": ("backbone", "FPN"),
    "FCOS head + decode + NMS": ("FCOS head", "FCOS decode + NMS"),
    "mask branch": ("mask branch",),
    "controller + dynamic heads": ("controller", "dynamic mask heads"),
    "paste masks": ("paste masks",),
    "other (+ preprocess)": ("other", "preprocess"),
}


# what each CondInst pass of the scaling table runs
PASSES = {STAGED: "this release", UNFOLDED: "this release, norms not folded",
          PREVIOUS: "previous release (norms not folded; unfused heads, all masks pasted at once)"}


def scaling_table(rows) -> str:
    """Peak memory twice: the growth of the process's peak RSS over the timed runs, and the
    peak of live tensors of one pass (``live peak MB``: what glibc keeps of freed memory
    not in it), each with its ratio to the previous release's row of the same input."""
    lines = ["| input | detections | model | median time | peak memory | peak vs previous release | "
             "peak of live tensors | live vs previous release | "
             + " | ".join(f"{g} ms" for g in GROUPS) + " |", "|---|---|---|---|---|---|---|---|" + "---|" * len(GROUPS)]
    for r in rows:
        m = r["metrics"]
        before = _find(rows, impl=PREVIOUS, input=r["input"], detections=r["detections"])
        before = before if before is not r else None
        live = m.get("live peak MB")
        live_vs = _ratio(live, before["metrics"].get("live peak MB")) if before and live else ""
        groups = " | ".join(f"{sum(m[f'{s} ms'] for s in stages):.0f}" for stages in GROUPS.values())
        lines.append(f"| {r['input']} | {m['detections/image']:.0f} | {PASSES.get(r['impl'], r['impl'])} | "
                     f"{1000 * r['median_s']:.0f} ms | {r['peak_mb']:.0f} MB | "
                     f"{_ratio(r['peak_mb'], before['peak_mb']) if before else ''} | "
                     f"{f'{live:.0f} MB' if live else '-'} | {live_vs} | {groups} |")
    return "\n".join(lines)


def alone_table(rows, what: str, names: dict, baseline: str, against: str) -> str:
    """The table of a part measured alone (the mask path, the pasting): one row per
    ``impl`` of ``names`` (impl -> its name), peaks against the ``baseline`` impl's."""
    lines = [f"| {what} | instances | image | median time | peak memory | peak vs {against} |",
             "|---|---|---|---|---|---|"]
    base = _find(rows, impl=baseline)
    for r in rows:
        vs = _ratio(r["peak_mb"], base["peak_mb"]) if base and base is not r else ""
        lines.append(f"| {names[r['impl']]} | {r['detections']} | {r['input']} | {1000 * r['median_s']:.1f} ms | "
                     f"{r['peak_mb']:.0f} MB | {vs} |")
    return "\n".join(lines)


def report(results) -> str:
    """The case's tables: inference, training, stages, scaling, the mask path alone, the
    pasting alone (those that have rows)."""
    by_mode = {}
    for r in results:
        by_mode.setdefault(r["mode"], []).append(r)
    parts = []
    if "infer" in by_mode:
        parts.append("Inference, quickstart models, shapes validation images (Predictor: resize, model, masks at the "
                     "image's size):\n\n" + inference_table(by_mode["infer"]))
    if "train" in by_mode:
        parts.append("Training step (forward, losses, backward, AdamW), quickstart models:\n\n"
                     + training_table(by_mode["train"]))
    columns = []
    staged = _find(by_mode.get("stages", []), impl=STAGED)
    if staged:
        columns.append((f"{QUICKSTART}, batch 1", staged, _find(by_mode["stages"], impl=FORWARD)))
    scaling = [r for r in by_mode.get("scaling", []) if r["impl"] == STAGED]
    if scaling:
        big = max(scaling, key=lambda r: (int(r["input"].split("x")[1]), r["detections"]))
        columns.append((f"R50 {big['input']}, {big['metrics']['detections/image']:.0f} detections", big, None))
    if columns:
        parts.append("CondInst inference stage by stage (model inputs prepared; medians of each stage):\n\n"
                     + stages_table(columns))
    if "scaling" in by_mode:
        parts.append("CondInst R-50, random weights, forced detections, one image per call:\n\n"
                     + scaling_table(by_mode["scaling"]))
    if "masks" in by_mode:
        parts.append("The mask path alone (dynamic heads, x2 upsampling, sigmoid, pasting at the image's size; "
                     "random mask features and head parameters):\n\n" + alone_table(
                         by_mode["masks"], "mask path", {"fused": "fused heads, chunked pasting",
                                                         "unfused": "unfused heads, all pasted at once (previous release)"},
                         "unfused", "previous release"))
    if "paste" in by_mode:
        parts.append("Mask pasting alone (postprocess_masks, stride-4 probabilities to the image's size):\n\n"
                     + alone_table(by_mode["paste"], "pasting", {"chunked": "chunked (32 MiB)",
                                                                 "unbounded": "unbounded (previous release)"},
                                   "unbounded", "unbounded"))
    return "\n\n".join(parts)


OPTIONS = (
    ("--condinst-weights", {"default": WEIGHTS["condinst"], "metavar": "PTH",
                            "help": f"the quickstart CondInst's weights (default {WEIGHTS['condinst']})"}),
    ("--mask-rcnn-weights", {"default": WEIGHTS["mask_rcnn"], "metavar": "PTH",
                             "help": f"the quickstart Mask R-CNN's weights (default {WEIGHTS['mask_rcnn']}); "
                                     "without both files both models run random weights, forced detections"}),
)

CASE = Case(plan, runs, "mask_rcnn", ("model",), comparable=False, stable_malloc=False, help=__doc__,
            options=OPTIONS, defaults={"rounds": 3, "repeats": 3, "warmup": 1}, report=report)
