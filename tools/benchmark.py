#!/usr/bin/env python
"""condseg benchmarks: one entry point, a table printed last, a JSON written.

  python tools/benchmark.py mask-head                  # CPU, and CUDA when available
  python tools/benchmark.py mask-head --device cpu --rounds 3 --repeats 5 --json out.json
  python tools/benchmark.py odconv --only stage=res4 batch=8      # a subset of a case

Cases
  mask-head   CondInst dynamic mask heads, the published grouped-convolution formulation
              ("grouped_conv") against condseg's batched matrix product ("bmm"), on mask
              features (2, 8, 100, 136) with 50 and 500 instances: training step
              (forward, x2 aligned upsampling, sigmoid, dice loss against (200, 272) masks,
              backward; also "bmm+fused_loss", condseg's training path, where heads,
              upsampling, sigmoid, dice and their gradients run together in cache-sized
              blocks of instances) and inference (forward + sigmoid, no grad).
  odconv      ODConv 3x3 (C -> C) at ResNet-50 stage shapes of an 800x1216 input (res2-res5:
              64-512 channels at strides 4-32), batch 2 and 8, kernel_num 1 and 4: the
              published formulation ("batch_groups": the batch folded into the groups of
              one convolution) against condseg's others ("winograd-F2" / "-F4": Winograd
              with another tile than the default F(3x3, 3x3)); training step (forward +
              backward of sum(out * g), train mode) and inference.
  dcn         DCNv2 3x3 (offset/mask predictor + deformable conv, as torchvision's
              deform_conv2d and as condseg's grid_sample formulation) against a plain 3x3
              conv of the same shape, res3-res5 at batch 2.
  demo        the video demo end to end (decode, model, track and draw, encode mp4) on a
              generated 640x480 video of the built-in shapes with the quickstart model
              (output/quickstart/model_final.pth: run `make quickstart` first): the
              sequential pipeline against the overlapped one (1 and 2 frames per model
              call), and the model alone on frames already in memory. Times are per pass over the video;
              the table adds frames/s. Runs with the default allocator (it is inference).

Every measurement runs in fresh processes, so its peak memory is its own: on the CPU
the growth of the process's peak RSS over its state before the first run, on CUDA
``torch.cuda.max_memory_allocated``. Each measurement is ``--rounds`` processes of
``--repeats`` timed runs (after ``--warmup`` runs), the rounds interleaved with the other
measurements so that a slow spell of a shared machine hits all of them; times are
medians of all timed runs, and every table row also says how far its outputs are from
the published formulation's.

CPU allocator: by default the measuring processes run with glibc's
``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000``, so that large buffers are
reused instead of being mapped fresh (and page-faulted) at every run, which on small VMs
makes timings bimodal. This is for micro-benchmarks only (memory is never returned to
the system): never train or evaluate with it. ``--allocator default`` measures without.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

STABLE_MALLOC = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "100000000000"}


# ----------------------------------------------------------------------------- mask-head
def mask_head_runs(device: str, impl: str, num_instances: int, mode: str, seed: int = 0):
    """Build the inputs once and return a zero-argument function doing one run.

    ``impl``: ``grouped_conv`` (the published formulation: grouped convolutions, then
    upsampling, sigmoid and dice on the full-resolution tensors), ``bmm`` (condseg's heads,
    same loss computation) or ``bmm+fused_loss`` (condseg's training path,
    ``dynamic_mask_dice_loss``).
    """
    import torch

    from condseg.layers import aligned_bilinear, dice_loss, dynamic_layer_shapes, dynamic_mask_dice_loss, dynamic_mask_heads

    fused = impl.endswith("+fused_loss")
    impl = impl.replace("+fused_loss", "")

    g = torch.Generator().manual_seed(seed)
    b, c, h, w = 2, 8, 100, 136
    feats = torch.randn(b, c, h, w, generator=g).to(device)
    params = (0.5 * torch.randn(num_instances, 169, generator=g)).to(device)
    im_inds = torch.randint(0, b, (num_instances,), generator=g).to(device)
    # FCOS locations on their level's grid, with that level's size of interest
    levels = torch.randint(0, 5, (num_instances,), generator=g)
    strides = torch.tensor([8, 16, 32, 64, 128])[levels]
    xs = torch.randint(0, 100, (num_instances,), generator=g) * strides % (w * 8) + strides // 2
    ys = torch.randint(0, 100, (num_instances,), generator=g) * strides % (h * 8) + strides // 2
    locations = torch.stack((xs, ys), dim=1).float().to(device)
    soi = torch.tensor([64.0, 128, 256, 512, 1024])[levels].to(device)
    gt = (torch.rand(num_instances, 1, 2 * h, 2 * w, generator=g) > 0.5).float().to(device)
    shapes = dynamic_layer_shapes(c, 8, 3)

    def heads(p, f):
        return dynamic_mask_heads(f, p, im_inds, locations, soi, shapes, mask_feat_stride=8, impl=impl)

    if mode == "train":
        params.requires_grad_(True)
        feats.requires_grad_(True)

        def run():
            if fused:
                loss = dynamic_mask_dice_loss(feats, params, im_inds, locations, soi, shapes, gt).mean()
            else:
                loss = dice_loss(aligned_bilinear(heads(params, feats), 2).sigmoid(), gt).mean()
            loss.backward()
            out = (loss.detach(), params.grad, feats.grad)
            params.grad = None
            feats.grad = None
            return out

    else:

        def run():
            with torch.no_grad():
                return aligned_bilinear(heads(params, feats), 2).sigmoid()

    return run


def mask_head_plan(devices):
    impls = {"train": ("grouped_conv", "bmm", "bmm+fused_loss"), "infer": ("grouped_conv", "bmm")}
    return [
        {"case": "mask-head", "device": d, "impl": impl, "num_instances": n, "mode": mode}
        for d in devices
        for mode in ("train", "infer")
        for n in (50, 500)
        for impl in impls[mode]
    ]


CASES = {}  # name -> Case; filled below each case's functions


class Case:
    """A benchmark case: ``plan(devices)`` lists the specs (dicts with ``device``, ``mode``,
    ``impl`` and the case's size keys), ``runs(**spec)`` returns a zero-argument function
    doing one run and returning its outputs (tensors, compared across formulations);
    rows are compared with the ``baseline`` formulation of the same ``size`` keys (speed,
    and outputs where ``comparable``)."""

    def __init__(self, plan, runs, baseline, size, comparable=True, stable_malloc=True):
        self.plan, self.runs, self.baseline, self.size = plan, runs, baseline, tuple(size)
        self.comparable = comparable  # False: formulations compute different things (no diff column)
        self.stable_malloc = stable_malloc  # False: always glibc's default allocator (whole-model runs)

    def group(self, spec) -> tuple:
        return (spec["device"], spec["mode"]) + tuple(spec[k] for k in self.size)


CASES["mask-head"] = Case(mask_head_plan, mask_head_runs, "grouped_conv", ("num_instances",))


def agreement(specs):
    """Largest absolute difference of every spec's outputs (loss and gradients, or
    outputs) from those of its case's baseline formulation on the same device, mode and
    size, computed in this process (one run each)."""
    if not all(CASES[spec["case"]].comparable for spec in specs):
        return [None] * len(specs)
    outputs = {}
    for spec in specs:
        out = CASES[spec["case"]].runs(**{k: v for k, v in spec.items() if k != "case"})()
        outputs[tuple(sorted(spec.items()))] = out if isinstance(out, tuple) else (out,)
    diffs = []
    for spec in specs:
        ref = outputs[tuple(sorted({**spec, "impl": CASES[spec["case"]].baseline}.items()))]
        ours = outputs[tuple(sorted(spec.items()))]
        diffs.append(max(float((a.double() - b.double()).abs().max()) for a, b in zip(ours, ref)))
    return diffs


# ----------------------------------------------------------------------------- odconv / dcn
# ResNet-50 stages at an 800x1216 input: channels of the 3x3 convs and the stride.
RESNET50_STAGES = {"res2": (64, 4), "res3": (128, 8), "res4": (256, 16), "res5": (512, 32)}
INPUT_HW = (800, 1216)


def _conv_input(stage: str, batch: int, device: str, seed: int = 0):
    import torch

    channels, stride = RESNET50_STAGES[stage]
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, channels, INPUT_HW[0] // stride, INPUT_HW[1] // stride, generator=g).to(device)


def _conv_run(layer, x, mode, call=None):
    """One run of ``layer`` on ``x``: train = forward + backward of ``sum(out * g)``
    (returns the output and the input and weight gradients), infer = forward, no grad."""
    import torch

    call = call or layer
    if mode == "infer":
        layer.eval()

        def run():
            with torch.no_grad():
                return call(x)

        return run
    x.requires_grad_(True)
    g = torch.randn_like(call(x).detach())

    def run():
        out = call(x)
        (out * g).sum().backward()
        grads = (out.detach(), x.grad, layer.weight.grad)
        x.grad = None
        layer.zero_grad(set_to_none=True)
        return grads

    return run


def odconv_runs(device: str, impl: str, stage: str, batch: int, kernel_num: int, mode: str, seed: int = 0):
    """ODConv 3x3 (C -> C, padding 1) at a ResNet-50 stage shape, formulation ``impl``
    (``condseg.layers.odconv.IMPLS``; ``batch_groups`` is the published one). Training
    runs in train mode (attention BN on batch statistics), as in a training step."""
    import torch

    from condseg.layers import ODConv2d

    from condseg.layers import odconv

    channels, _ = RESNET50_STAGES[stage]
    if impl.startswith("winograd-F"):  # another Winograd tile than the default (this process only)
        impl, odconv.WINOGRAD_TILE = "winograd", int(impl[len("winograd-F"):])
    torch.manual_seed(seed)
    layer = ODConv2d(channels, channels, 3, padding=1, kernel_num=kernel_num, impl=impl).to(device)
    return _conv_run(layer, _conv_input(stage, batch, device, seed), mode)


def odconv_plan(devices):
    from condseg.layers.odconv import IMPLS

    from condseg.layers.odconv import WINOGRAD_TILE
    from condseg.layers.winograd import TILE_SIZES

    impls = ["batch_groups"] + [i for i in IMPLS if i not in ("batch_groups", "pointwise")]
    impls += [f"winograd-F{m}" for m in TILE_SIZES if m != WINOGRAD_TILE]
    return [
        {"case": "odconv", "device": d, "impl": impl, "stage": stage, "batch": batch, "kernel_num": kn, "mode": mode}
        for d in devices
        for mode in ("train", "infer")
        for stage in RESNET50_STAGES
        for batch in (2, 8)
        for kn in (1, 4)
        for impl in impls
    ]


def dcn_runs(device: str, impl: str, stage: str, batch: int, mode: str, seed: int = 0):
    """A 3x3 conv (C -> C, padding 1) at a ResNet-50 stage shape: ``conv2d`` (plain) or
    ``dcnv2:IMPL`` (the modulated deformable conv with its offset/mask predictor, as in a
    deformable ResNet block, through ``DeformConv2d(impl=IMPL)``: ``torchvision``'s
    ``deform_conv2d`` or condseg's ``grid_sample`` formulation). Offsets are drawn from
    N(0, 1) px (a trained predictor's, not the zero init). Outputs differ from the plain
    conv's by design (no agreement column)."""
    import torch
    from torch import nn

    from condseg.layers import DeformConv2d, offset_predictor, split_offset_mask

    channels, _ = RESNET50_STAGES[stage]
    torch.manual_seed(seed)
    x = _conv_input(stage, batch, device, seed)
    if impl == "conv2d":
        return _conv_run(nn.Conv2d(channels, channels, 3, padding=1, bias=False).to(device), x, mode)
    predictor = offset_predictor(channels, 3, padding=1, modulated=True).to(device)
    with torch.no_grad():
        predictor.weight.normal_(0, 1.0 / (3 * channels) ** 0.5)  # offsets of about N(0, 1) px
    conv = DeformConv2d(channels, channels, 3, padding=1, impl=impl.split(":")[1]).to(device)

    def call(inp):
        offset, mask = split_offset_mask(predictor(inp), modulated=True)
        return conv(inp, offset, mask)

    return _conv_run(conv, x, mode, call)


def dcn_plan(devices):
    return [
        {"case": "dcn", "device": d, "impl": impl, "stage": stage, "batch": 2, "mode": mode}
        for d in devices
        for mode in ("train", "infer")
        for stage in ("res3", "res4", "res5")
        for impl in ("conv2d", "dcnv2:torchvision", "dcnv2:grid_sample")
    ]


CASES["odconv"] = Case(odconv_plan, odconv_runs, "batch_groups", ("stage", "batch", "kernel_num"))
CASES["dcn"] = Case(dcn_plan, dcn_runs, "conv2d", ("stage", "batch"), comparable=False)


# ----------------------------------------------------------------------------- demo
DEMO_CONFIG = os.path.join("configs", "quickstart", "condinst_R18_shapes.yaml")
DEMO_WEIGHTS = os.path.join("output", "quickstart", "model_final.pth")
DEMO_FRAMES, DEMO_SIZE = 60, "640x480"
DEMO_SEED, DEMO_THRESHOLD = 3, 0.4  # the video and threshold of `make demo`


def demo_video(frames: int, size: str) -> str:
    """The generated shapes video the demo case reads (written once, then reused)."""
    from condseg.data.shapes_video import write_shapes_video

    path = os.path.join("output", "benchmark", f"shapes_{size}_{frames}_seed{DEMO_SEED}.mp4")
    if not os.path.isfile(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        w, h = (int(v) for v in size.split("x"))
        tmp = path + ".tmp.mp4"
        write_shapes_video(tmp, frames, w, h, 15.0, seed=DEMO_SEED)
        os.replace(tmp, path)
    return path


def demo_runs(device: str, impl: str, mode: str, frames: int, size: str, config: str, weights: str):
    """One pass of the demo over the video. ``impl``: ``sequential`` (decode, model, draw,
    encode one after the other) or ``overlapped`` (the threaded pipeline of
    condseg.inference.video), with 1 frame per model call or 2 (``+batch2``), or
    ``model_only`` (the model on the decoded frames, one at a time, nothing else).
    Returns ``{"metrics": ...}`` for the table."""
    import tempfile

    import cv2

    from condseg import Predictor
    from condseg.inference.video import run_video

    video = demo_video(frames, size)
    predictor = Predictor(config, weights, device=device, confidence_threshold=DEMO_THRESHOLD)
    out = os.path.join(tempfile.mkdtemp(prefix="condseg_demo_bench"), "out.mp4")
    if impl == "model_only":
        cap = cv2.VideoCapture(video)
        decoded = []
        while True:
            ok, f = cap.read()
            if not ok:
                break
            decoded.append(f)

        def run():
            t = time.perf_counter()
            for f in decoded:
                predictor.predict_batch([f])
            wall = time.perf_counter() - t
            return {"metrics": {"frames/s": len(decoded) / wall}}

        return run
    batch = 2 if impl.endswith("batch2") else 1

    def run():
        s = run_video(predictor, video, out, None, batch_size=batch, overlap=impl.startswith("overlapped"),
                      progress=False)
        return {"metrics": {"frames/s": s.fps, "model ms/frame": s.per_frame_ms(s.model),
                            "draw ms/frame": s.per_frame_ms(s.draw), "encode ms/frame": s.per_frame_ms(s.encode)}}

    return run


def demo_plan(devices):
    if not os.path.isfile(DEMO_WEIGHTS):
        raise SystemExit(f"the demo case runs the quickstart model: {DEMO_WEIGHTS} is missing (run `make quickstart`)")
    return [
        {"case": "demo", "device": d, "impl": impl, "mode": "video", "frames": DEMO_FRAMES, "size": DEMO_SIZE,
         "config": DEMO_CONFIG, "weights": DEMO_WEIGHTS}
        for d in devices
        for impl in ("sequential", "sequential+batch2", "overlapped", "overlapped+batch2", "model_only")
    ]


CASES["demo"] = Case(demo_plan, demo_runs, "sequential", ("frames", "size"), comparable=False, stable_malloc=False)


# ----------------------------------------------------------------------------- runner
def measure(spec: dict, repeats: int, warmup: int) -> dict:
    """One measurement in this process: median wall time and peak memory."""
    import torch

    torch.set_num_threads(int(os.environ.get("CONDSEG_BENCH_THREADS", torch.get_num_threads())))
    make_runs = CASES[spec["case"]].runs
    args = {k: v for k, v in spec.items() if k != "case"}
    cuda = spec["device"].startswith("cuda")
    run = make_runs(**args)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    times, metrics = [], []
    for k in range(warmup + repeats):
        t = time.perf_counter()
        out = run()
        if cuda:
            torch.cuda.synchronize()
        if k >= warmup:
            times.append(time.perf_counter() - t)
            if isinstance(out, dict) and "metrics" in out:
                metrics.append(out["metrics"])
        del out
    if cuda:
        peak_mb = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    result = {**spec, "median_s": statistics.median(times), "min_s": min(times), "times_s": times, "peak_mb": peak_mb}
    if metrics:
        result["metrics"] = metrics
    return result


def run_in_subprocess(spec, repeats, warmup, allocator):
    env = dict(os.environ)
    if allocator == "stable" and not spec["device"].startswith("cuda") and CASES[spec["case"]].stable_malloc:
        env.update(STABLE_MALLOC)
    cmd = [sys.executable, os.path.abspath(__file__), "_measure", json.dumps(spec), str(repeats), str(warmup)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark {spec} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def merge_rounds(rounds):
    """One result from the same spec measured in several rounds: all times pooled."""
    times = [t for r in rounds for t in r["times_s"]]
    merged = {**rounds[0], "median_s": statistics.median(times), "min_s": min(times), "times_s": times,
              "peak_mb": max(r["peak_mb"] for r in rounds), "rounds": len(rounds)}
    metrics = [m for r in rounds for m in r.get("metrics", [])]
    if metrics:  # median of each reported metric over all timed runs
        merged["metrics"] = {k: statistics.median(m[k] for m in metrics) for k in metrics[0]}
    return merged


def table(results):
    """Markdown table; each row carries its speed-up over its case's baseline formulation
    measured in the same run, and how far its outputs are from the baseline's."""
    case = CASES[results[0]["case"]]
    ref = {case.group(r): r for r in results if r["impl"] == case.baseline}
    extra = list(dict.fromkeys(k for r in results for k in r.get("metrics", {})))  # reported by the runs
    lines = [
        f"| device | mode | {' | '.join(case.size)} | impl | median time | peak memory | "
        f"speed-up vs {case.baseline} | max abs diff |" + "".join(f" {k} |" for k in extra),
        "|---|---|" + "---|" * len(case.size) + "---|---|---|---|---|" + "---|" * len(extra),
    ]
    for r in results:
        base = ref.get(case.group(r))
        speedup = f"{base['median_s'] / r['median_s']:.2f}x" if base and r is not base else ""
        sizes = " | ".join(str(r[k]) for k in case.size)
        diff = "-" if r.get("max_abs_diff") is None else f"{r['max_abs_diff']:.1e}"
        lines.append(
            f"| {r['device']} | {r['mode']} | {sizes} | {r['impl']} | "
            f"{1000 * r['median_s']:.1f} ms | {r['peak_mb']:.0f} MB | {speedup} | {diff} |"
            + "".join(f" {r['metrics'][k]:.2f} |" if k in r.get("metrics", {}) else " |" for k in extra)
        )
    return "\n".join(lines)


def select(plan, only):
    """The specs of ``plan`` matching every ``KEY=VALUE`` of ``only`` (values compared as text)."""
    wanted = [item.split("=", 1) for item in only]
    bad = [item for item in only if "=" not in item]
    if bad:
        raise SystemExit(f"--only expects KEY=VALUE, got {bad}")
    return [s for s in plan if all(str(s.get(k)) == v for k, v in wanted)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("case", choices=sorted(CASES))
    parser.add_argument("--device", default="all", choices=["all", "cpu", "cuda"],
                        help="all = cpu, plus cuda when available")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per process")
    parser.add_argument("--rounds", type=int, default=3, help="processes per measurement, interleaved")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--allocator", default="stable", choices=["stable", "default"],
                        help="glibc malloc settings of the CPU measuring processes (see above)")
    parser.add_argument("--only", nargs="*", default=[], metavar="KEY=VALUE",
                        help="measure only the specs with these values, e.g. --only stage=res4 batch=8")
    parser.add_argument("--json", default=None, help="where to write the results (default output/benchmark/CASE.json)")
    args = parser.parse_args(argv)

    import torch
    from tqdm import tqdm

    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    if "cuda" in devices and not torch.cuda.is_available():
        if args.device == "cuda":
            parser.error("--device cuda: CUDA is not available on this machine")
        devices.remove("cuda")
    plan = select(CASES[args.case].plan(devices), args.only)
    if not plan:
        parser.error(f"--only {' '.join(args.only)}: no {args.case} measurement matches")
    # rounds interleave the specs, so that a slow spell of a shared machine hits all of them
    runs = [[] for _ in plan]
    with tqdm(total=args.rounds * len(plan), desc=args.case) as bar:
        for _ in range(args.rounds):
            for i, spec in enumerate(plan):
                runs[i].append(run_in_subprocess(spec, args.repeats, args.warmup, args.allocator))
                bar.update()
    results = [merge_rounds(r) for r in runs]
    for r, diff in zip(results, agreement(plan)):
        r["max_abs_diff"] = diff

    meta = {
        "case": args.case,
        "command": " ".join([os.path.basename(sys.executable), "tools/benchmark.py"] + (argv or sys.argv[1:])),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_allocator": args.allocator if CASES[args.case].stable_malloc else "default",
        "repeats": args.repeats,
        "rounds": args.rounds,
        "warmup": args.warmup,
        "gpu": torch.cuda.get_device_name(0) if "cuda" in devices else None,
    }
    path = args.json or os.path.join("output", "benchmark", f"{args.case}.json")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=1)
    print(f"\nwrote {path}")
    print(f"{args.case}: torch {meta['torch']}, {meta['threads']} threads, CPU allocator {meta['cpu_allocator']}, "
          f"median of {args.rounds} x {args.repeats} runs ({args.rounds} interleaved rounds of one process per "
          f"measurement, {args.warmup} warm-up runs each)")
    print(table(results))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_measure":
        spec = json.loads(sys.argv[2])
        print(json.dumps(measure(spec, int(sys.argv[3]), int(sys.argv[4]))))
    else:
        main()
