"""One command that checks condseg on a machine with a CUDA GPU (``make gpu-check``).

Runs, each in its own process, and writes one summary table (stdout and
``OUTPUT/summary.md``):

1. the test suite's CUDA tests (``pytest -m cuda``);
2. a 50-iteration AMP training of the quickstart CondInst on CUDA (small images and
   dataset), with its evaluation;
3. a 2-process NCCL DDP run of the same, if two GPUs are present (else skipped, saying why);
4. the demo on a generated shapes video with ``--fp16``, with the weights of step 2;
5. the ``mask-head``, ``odconv`` and ``dcn`` benchmarks on CUDA (one round each).

On a machine without CUDA it exits at once (status 2) and says so. It needs nothing from
the network: everything comes from the environment ``make setup`` made or from files
carried with the checkout (``PYTHONPATH`` may name a detectron2 source tree).
"""
import argparse
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICKSTART = os.path.join(ROOT, "configs", "quickstart", "condinst_R18_shapes.yaml")
SMALL = [
    "DATASETS.SHAPES.NUM_TRAIN", "200", "DATASETS.SHAPES.NUM_VAL", "50", "SOLVER.MAX_ITER", "50",
    "SOLVER.STEPS", "(40,)", "SOLVER.WARMUP_ITERS", "10", "SOLVER.CHECKPOINT_PERIOD", "100000",
    "TEST.EVAL_PERIOD", "0", "SOLVER.LOG_PERIOD", "10",
]


def _step(name, command, log_dir, timeout, env=None):
    """Run ``command``; ``(name, status, seconds, last line)``, its output in ``log_dir``."""
    t0 = time.monotonic()
    log = os.path.join(log_dir, name.replace(" ", "_") + ".log")
    try:
        proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                              env=dict(os.environ, **(env or {})))
        text, status = proc.stdout + proc.stderr, ("ok" if proc.returncode == 0 else f"failed ({proc.returncode})")
    except subprocess.TimeoutExpired as e:
        text = "".join(x.decode() if isinstance(x, bytes) else x for x in (e.stdout or "", e.stderr or ""))
        status = f"timed out ({timeout} s)"
    with open(log, "w") as f:
        f.write(text)
    lines = [line for line in text.splitlines() if line.strip()]
    return name, status, time.monotonic() - t0, (lines[-1][:100] if lines else ""), log


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=os.path.join(ROOT, "output", "gpu_check"), help="folder for logs and outputs")
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("gpu-check: no CUDA device here (torch.cuda.is_available() is False); run it on a machine with a "
              "CUDA GPU", file=sys.stderr)
        return 2
    os.makedirs(args.output, exist_ok=True)
    py, datasets = sys.executable, os.path.join(args.output, "datasets")
    env = {"DETECTRON2_DATASETS": datasets}
    train_out = os.path.join(args.output, "train_amp")
    train = [py, "tools/train_net.py", "--config-file", QUICKSTART, *SMALL, "SOLVER.AMP.ENABLED", "True",
             "MODEL.DEVICE", "cuda"]
    steps = [
        ("cuda tests", [py, "-m", "pytest", "-q", "-m", "cuda", "-rs", "tests"], 120, None),
        ("amp training + evaluation", [*train, "OUTPUT_DIR", train_out], 150, env),
    ]
    gpus = torch.cuda.device_count()
    if gpus >= 2:
        steps.append(("nccl ddp, 2 gpus", [*train, "OUTPUT_DIR", os.path.join(args.output, "train_ddp"),
                                           "--num-gpus", "2"], 150, env))
    video = os.path.join(args.output, "shapes_video.mp4")
    steps += [
        ("shapes video", [py, "-m", "condseg.data.shapes_video", video, "--frames", "60", "--size", "640x480"], 60, None),
        ("demo --fp16", [py, "tools/demo.py", "--config-file", QUICKSTART, "--video-input", video, "--fp16",
                         "--output", os.path.join(args.output, "demo.mp4"), "--opts", "MODEL.WEIGHTS",
                         os.path.join(train_out, "model_final.pth"), "MODEL.DEVICE", "cuda"], 60, None),
    ]
    for case in ("mask-head", "odconv", "dcn"):
        steps.append((f"benchmark {case}", [py, "tools/benchmark.py", case, "--device", "cuda", "--rounds", "1",
                                            "--json", os.path.join(args.output, f"{case}.json")], 120, None))
    rows = []
    for name, command, timeout, step_env in steps:
        print(f"gpu-check: {name} ...", flush=True)
        rows.append(_step(name, command, args.output, timeout, step_env))
    if gpus < 2:
        rows.insert(2, ("nccl ddp, 2 gpus", "skipped", 0.0, f"{gpus} GPU here, the DDP run needs 2", ""))
    table = [f"GPU: {torch.cuda.get_device_name(0)} x {gpus}; torch {torch.__version__}, CUDA {torch.version.cuda}", "",
             "| step | status | seconds | last line |", "|---|---|---|---|"]
    table += [f"| {n} | {s} | {t:.0f} | {line.replace('|', '/')} |" for n, s, t, line, _ in rows]
    text = "\n".join(table)
    print(text)
    with open(os.path.join(args.output, "summary.md"), "w") as f:
        f.write(text + "\n\nLogs: " + ", ".join(log for *_, log in rows if log) + "\n")
    return 0 if all(s in ("ok", "skipped") for _, s, *_ in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
