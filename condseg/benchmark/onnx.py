"""one model in eager PyTorch against its ONNX export in ONNX Runtime (CPU
provider, all graph optimisations on), both through condseg.Predictor on
generated shapes images already in memory (resize, model, masks pasted at the
image's size), on the harness's threads: the quickstart CondInst on 640x480
images (output/quickstart/model_final.pth when present, else random weights)
and CondInst R-50 at 800x1333 (random weights); random weights run with forced
detections (score threshold 0, 50 per image). ``onnxruntime`` runs the file
tools/export_model.py writes by default (masks at the input's size, resized to the
image's by the Predictor), ``onnxruntime-stride`` the one of ``--mask-resolution
stride`` (masks at the mask output stride, pasted by the model's own function). Each
model is exported once per mask resolution, outside the timed part, and cached under
output/benchmark/onnx/. Times are
per pass over the images; rows add images/s and detections per image, and
"max abs diff" is the largest score difference from eager on the same images.
CPU only; runs with the default allocator (it is inference).
"""
import hashlib
import json
import os
import subprocess
import sys
import time

from .harness import Case

QUICKSTART_WEIGHTS = os.path.join("output", "quickstart", "model_final.pth")
CACHE = os.path.join("output", "benchmark", "onnx")
FORCED = "MODEL.FCOS.INFERENCE_TH_TEST 0.0 MODEL.FCOS.POST_NMS_TOPK_TEST 50"  # with random weights
SEED = 3  # the scenes of the images (the demo's video seed)
MAX_COMPARED = 100  # scores compared per image (sorted, zero-padded to this many)
TRAINED, RANDOM = "trained", "random, forced detections"

# name -> config, trained weights (used when the file exists), image size (WxH), images per pass, and
# overrides ("KEY VALUE ..." without spaces in values: a spec is hashable and JSON-ready)
MODELS = {
    "quickstart-R18": {
        "config": os.path.join("configs", "quickstart", "condinst_R18_shapes.yaml"),
        "weights": QUICKSTART_WEIGHTS, "image": "640x480", "num_images": 8, "opts": "",
    },
    "R50": {
        "config": os.path.join("configs", "condinst_R50_1x.yaml"),
        "weights": None, "image": "1333x800", "num_images": 2,
        "opts": "INPUT.MIN_SIZE_TEST 800 INPUT.MAX_SIZE_TEST 1333",
    },
}


def _digest(*parts) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _cfg(config: str, opts: str):
    from condseg.config_setup import setup_cfg

    return setup_cfg(config, ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", *opts.split()], freeze=False)


def random_checkpoint(name: str, config: str, opts: str) -> str:
    """A checkpoint of the model of ``config`` + ``opts`` with random weights (seeded), written
    once under :data:`CACHE`: the eager rows load it and the export is made from it, so that
    both backends run the same weights."""
    import torch
    from detectron2.modeling import build_model

    cfg = _cfg(config, opts)
    path = os.path.join(CACHE, f"{name}-random-{_digest(cfg.dump(), 0, torch.__version__)}.pth")
    if not os.path.isfile(path):
        os.makedirs(CACHE, exist_ok=True)
        torch.manual_seed(0)
        model = build_model(cfg)
        tmp = path + ".tmp"
        torch.save({"model": model.state_dict()}, tmp)
        os.replace(tmp, path)
    return path


def cached_export(name: str, config: str, checkpoint: str, opts: str, mask_resolution: str = "input") -> str:
    """The ONNX export of ``config`` + ``opts`` with the weights of ``checkpoint``, made once
    and cached under :data:`CACHE`, keyed by the config (all its keys after the overrides),
    the checkpoint's path and mtime, the mask resolution, and the exporter's format and
    torch versions."""
    import torch
    from detectron2.modeling import build_model

    from condseg.export import export_onnx
    from condseg.export.metadata import EXPORT_VERSION
    from condseg.inference.predictor import load_weights_strict

    cfg = _cfg(config, opts)
    key = _digest(cfg.dump(), os.path.abspath(checkpoint), os.path.getmtime(checkpoint), EXPORT_VERSION,
                  torch.__version__, mask_resolution)
    path = os.path.join(CACHE, f"{name}-{key}.onnx")
    if not os.path.isfile(path):
        model = build_model(cfg)
        load_weights_strict(model, checkpoint, config)
        export_onnx(model.eval(), path, cfg=cfg, mask_resolution=mask_resolution)
    return path


def shapes_images(size: str, num: int):
    """``num`` generated shapes images (BGR uint8, ``size`` = WxH): frames of the moving
    scene of the demo's video, rendered straight into memory (no video coding)."""
    from condseg.data.shapes import render_scene
    from condseg.data.shapes_video import moving_scenes

    w, h = (int(v) for v in size.split("x"))
    return [render_scene(s)[0] for s in moving_scenes(num, w, h, seed=SEED)]


class Outputs(dict):
    """What one run returns: ``{"metrics": ...}`` for the table, and for the harness's
    agreement (which compares ``.double()`` of a run's outputs with the baseline's) the
    scores of each image, sorted descending and zero-padded to :data:`MAX_COMPARED`."""

    def __init__(self, metrics, scores):
        super().__init__(metrics=metrics)
        self.scores = scores

    def double(self):
        return self.scores.double()


def _sorted_scores(instances):
    import torch

    rows = torch.zeros(len(instances), MAX_COMPARED)
    for i, inst in enumerate(instances):
        s = inst.scores.float().sort(descending=True).values[:MAX_COMPARED]
        rows[i, : len(s)] = s
    return rows


IMPLS = ("eager", "onnxruntime", "onnxruntime-stride")


def runs(device: str, impl: str, mode: str, model: str, image: str, weights: str, num_images: int, config: str,
         checkpoint: str, onnx_file: str, onnx_stride_file: str, opts: str):
    """One pass of ``condseg.Predictor`` over ``num_images`` images of ``image`` (WxH) held
    in memory, one image per call. ``impl``: ``eager`` (the PyTorch model of ``config`` +
    ``opts`` with ``checkpoint``), ``onnxruntime`` or ``onnxruntime-stride`` (its export
    ``onnx_file`` or ``onnx_stride_file`` in ONNX Runtime with as many intra-op threads as
    torch has).
    Returns :class:`Outputs`."""
    import torch

    from condseg import Predictor

    images = shapes_images(image, num_images)
    if impl == "eager":
        predictor = Predictor(config, checkpoint, opts=opts.split(), device=device)
    elif impl in IMPLS:
        predictor = Predictor.from_onnx(onnx_file if impl == "onnxruntime" else onnx_stride_file,
                                        threads=torch.get_num_threads())
    else:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")

    def run():
        t = time.perf_counter()
        found = [predictor.predict_batch([im])[0] for im in images]
        wall = time.perf_counter() - t
        metrics = {"images/s": len(images) / wall, "detections/image": sum(len(x) for x in found) / len(found)}
        return Outputs(metrics, _sorted_scores(found))

    return run


def prepare(name: str, config: str, weights, opts: str):
    """``[checkpoint, onnx_file, onnx_stride_file]`` of one model: ``weights``, or with None
    a seeded random checkpoint (:func:`random_checkpoint`), and its exports with masks at
    the input's size and at the stride (:func:`cached_export`)."""
    checkpoint = weights if weights else random_checkpoint(name, config, opts)
    return [checkpoint, *(cached_export(name, config, checkpoint, opts, r) for r in ("input", "stride"))]


def prepare_in_fresh_process(name: str, config: str, weights, opts: str):
    """:func:`prepare` in a process of its own. The measuring processes are started from
    this one, and Linux carries a process's peak RSS over into the processes it starts
    (the peak memory of the harness is growth over it): an export here, in the parent,
    would hide the measurements' own peaks."""
    code = ("import json, sys; from condseg.benchmark import onnx; "
            "print(json.dumps(onnx.prepare(*json.loads(sys.argv[1]))))")
    proc = subprocess.run([sys.executable, "-c", code, json.dumps([name, config, weights, opts])],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"preparing the {name} model (its weights and ONNX export) failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def plan(devices):
    """The specs, after making what they read (in a fresh process, cached): each model's
    weights (a seeded random checkpoint when it has no trained one) and its ONNX export."""
    if "cpu" not in devices:
        raise SystemExit("the onnx case runs on the CPU only (ONNX Runtime's CPU provider): use --device cpu")
    specs = []
    for name, m in MODELS.items():
        trained = m["weights"] is not None and os.path.isfile(m["weights"])
        opts = " ".join(o for o in (m["opts"], "" if trained else FORCED) if o)
        checkpoint, onnx_file, onnx_stride_file = prepare_in_fresh_process(
            name, m["config"], m["weights"] if trained else None, opts)
        for impl in IMPLS:
            specs.append({"case": "onnx", "device": "cpu", "impl": impl, "mode": "infer", "model": name,
                          "image": m["image"], "weights": TRAINED if trained else RANDOM,
                          "num_images": m["num_images"], "config": m["config"], "checkpoint": checkpoint,
                          "onnx_file": onnx_file, "onnx_stride_file": onnx_stride_file, "opts": opts})
    return specs


CASE = Case(plan, runs, "eager", ("model", "image", "weights"), comparable=True, stable_malloc=False, help=__doc__)
