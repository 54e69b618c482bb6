"""The formulation of ``ODConv2d(impl="auto", autotune=True)`` (``MODEL.ODCONV.AUTOTUNE``)
measured at first use, like ``torch.backends.cudnn.benchmark``.

The first time a layer meets an input of a new *key* (the layer's shape parameters, the
input's batch and spatial size, dtype and autocast, the device, and training or
inference), every formulation that :func:`~condseg.layers.odconv_formulations.impls_for`
allows is timed on that input and the fastest is kept: training runs forward + backward
(``torch.autograd.grad`` of a random output gradient, on detached copies of the input
and the attentions: the real autograd graph and the parameters' ``.grad`` are left
alone), inference the forward under ``no_grad``. Each candidate runs once to warm up,
then :data:`REPEATS` interleaved rounds; the median counts, and a candidate more than
:data:`PRUNE` times slower than the fastest after the first round is not timed further.
The published ``"batch_groups"`` is always a candidate and is kept unless another is
faster by :data:`MARGIN`, so that measurement noise does not pick a slower formulation.
All formulations compute the same numbers up to float rounding; random numbers come from
a private generator, so measuring does not move torch's global random stream.

Spatial sizes are keyed by :func:`size_bucket` (4 steps per octave: 50 and 52 share the
bucket 56): with multi-scale training nearly every batch has a new size, and the fastest
formulation changes slowly with the size.

Choices live in memory per process and in one json file per user (:func:`cache_dir`:
``$CONDSEG_CACHE_DIR``, else ``$XDG_CACHE_HOME/condseg``, else ``~/.cache/condseg``),
sectioned by :func:`machine_key` (processor model and flags, or GPU name; torch version;
thread count). The file is read at first use, rewritten under iopath's ``file_lock``
(DDP ranks) through a temporary file and ``os.replace``; a file that cannot be read is
ignored with one warning naming it (and replaced at the next write). While tracing
(ONNX export, ``torch.jit.trace``) or compiling, nothing is measured: the fixed rule
(:func:`~condseg.layers.odconv_formulations.auto_impl`) applies.
"""
import hashlib
import json
import logging
import os
import platform
import statistics
import time
from datetime import datetime, timezone
from functools import lru_cache
from typing import Callable, Dict, FrozenSet, Optional, Tuple

import torch

from .odconv_formulations import FORWARDS, auto_impl, impls_for

__all__ = [
    "BASELINE",
    "CACHE_FILE",
    "MARGIN",
    "PRUNE",
    "REPEATS",
    "ODConvTuner",
    "cache_dir",
    "choice_line",
    "cpu_info",
    "default_tuner",
    "machine_key",
    "measure",
    "pick",
    "shape_key",
    "size_bucket",
    "time_call",
]

logger = logging.getLogger(__name__)

BASELINE = "batch_groups"  # the published formulation: always measured, kept on a tie
MARGIN = 0.05  # another formulation replaces the baseline only when this much faster
REPEATS = 3  # timed rounds after one warm-up run
PRUNE = 2.0  # after the first round, candidates this many times slower than the fastest stop
CACHE_FILE = "odconv_autotune.json"
VERSION = 1  # of the cache file's layout; a file of another version is not read


# ------------------------------------------------------------------ keys
@lru_cache(maxsize=None)
def cpu_info() -> Tuple[str, FrozenSet[str]]:
    """This machine's processor: its model name (``/proc/cpuinfo``, else ``platform``) and
    the set of its feature flags (empty where ``/proc/cpuinfo`` is missing)."""
    name, flags = platform.processor() or platform.machine(), frozenset()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and name in ("", platform.machine(), platform.processor()):
                    name = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = frozenset(value.split())
    except OSError:
        pass
    return name, flags


def machine_key(device: torch.device) -> str:
    """The section of the cache file that choices on ``device`` belong to: the processor
    (model name and a digest of all its flags) or the GPU's name, the torch version and
    the intra-op thread count."""
    if device.type == "cuda":
        where = f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    else:
        name, flags = cpu_info()
        where = f"{name} (flags {hashlib.sha1(' '.join(sorted(flags)).encode()).hexdigest()[:12]})"
    return f"{where}; torch {torch.__version__}; {torch.get_num_threads()} threads"


def size_bucket(n: int) -> int:
    """``n`` rounded up to 4 steps per octave: exact up to 8, then 10, 12, 14, 16, 20, 24,
    28, 32, 40, ... (steps of a quarter of the power of two below ``n``)."""
    if n <= 8:
        return n
    step = 1 << (n.bit_length() - 3)
    return -(-n // step) * step


def _autocast(device: torch.device) -> str:
    if torch.is_autocast_enabled(device.type):
        return f"+autocast {str(torch.get_autocast_dtype(device.type)).replace('torch.', '')}"
    return ""


def shape_key(layer, x: torch.Tensor, train: bool) -> str:
    """The key of ``layer``'s choice for ``x [B, C_in, H, W]``: the layer's geometry,
    kernel number, heads and Winograd tile; the batch and :func:`size_bucket` of H and W;
    dtype (and autocast), device type, and ``train`` or ``infer``."""
    s, p, d = layer.stride, layer.padding, layer.dilation
    k = layer.kernel_size
    return (
        f"ODConv2d {layer.in_channels}->{layer.out_channels} {k}x{k} stride {s[0]}x{s[1]} pad {p[0]}x{p[1]} "
        f"dil {d[0]}x{d[1]} groups {layer.groups} kernel_num {layer.kernel_num} "
        f"heads {','.join(layer.attention.heads) or '-'} tile {layer.winograd_tile} | "
        f"batch {x.shape[0]} size {size_bucket(x.shape[2])}x{size_bucket(x.shape[3])} | "
        f"{str(x.dtype).replace('torch.', '')}{_autocast(x.device)} {x.device.type} | {'train' if train else 'infer'}"
    )


def cache_dir() -> str:
    """Where the cache file lives: ``$CONDSEG_CACHE_DIR``, else ``$XDG_CACHE_HOME/condseg``,
    else ``~/.cache/condseg``."""
    if os.environ.get("CONDSEG_CACHE_DIR"):
        return os.environ["CONDSEG_CACHE_DIR"]
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "condseg")


# ------------------------------------------------------------ measuring
def time_call(run: Callable[[], object], device: torch.device) -> float:
    """Seconds one call of ``run`` takes (on CUDA, synchronised before and after)."""
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
    t = time.perf_counter()
    run()
    if cuda:
        torch.cuda.synchronize(device)
    return time.perf_counter() - t


def _needs_grad(layer, x: torch.Tensor, att: Optional[Dict[str, torch.Tensor]]) -> bool:
    """True when a forward on ``x`` builds an autograd graph (a training step)."""
    if not torch.is_grad_enabled():
        return False
    heads = att.values() if att is not None else layer.attention.parameters()
    return x.requires_grad or layer.weight.requires_grad or any(t.requires_grad for t in heads)


def _operands(layer, x: torch.Tensor, att, train: bool, gen: torch.Generator):
    """Detached stand-ins of ``x`` and the attentions (random attentions of the right
    shapes when ``att`` is None), requiring gradients where the originals would."""
    xs = x.detach().requires_grad_(train and x.requires_grad)
    if att is not None:
        return xs, {name: a.detach().requires_grad_(train and a.requires_grad) for name, a in att.items()}
    b = x.shape[0]
    sizes = {"channel": (b, layer.in_channels), "filter": (b, layer.out_channels),
             "spatial": (b, layer.kernel_size, layer.kernel_size), "kernel": (b, layer.kernel_num)}
    want = train and any(p.requires_grad for p in layer.attention.parameters())
    return xs, {name: torch.rand(sizes[name], generator=gen, device=x.device).to(x.dtype).requires_grad_(want)
                for name in layer.attention.heads}


def _candidate(layer, impl: str, x: torch.Tensor, att, train: bool, gen: torch.Generator) -> Callable[[], None]:
    """One run of formulation ``impl`` on the stand-ins: the forward under ``no_grad``, or
    forward + ``torch.autograd.grad`` (nothing accumulates into any ``.grad``)."""
    forward = FORWARDS[impl]
    if not train:
        def run():
            with torch.no_grad():
                forward(layer, x, att)
        return run
    inputs = [t for t in (x, *att.values(), layer.weight) if t.requires_grad]
    grad = []

    def run():
        with torch.enable_grad():
            out = forward(layer, x, att)
            if not grad:  # the random output gradient, made once (its dtype is the output's)
                grad.append(torch.randn(out.shape, generator=gen, device=out.device).to(out.dtype))
            torch.autograd.grad(out, inputs, grad[0])
    return run


def _out_of_memory(e: RuntimeError) -> bool:
    msg = str(e)
    return "out of memory" in msg or "can't allocate memory" in msg


def measure(layer, x: torch.Tensor, att=None, train: Optional[bool] = None, impls=None,
            repeats: int = REPEATS, prune: float = PRUNE) -> Dict[str, float]:
    """Median seconds of every formulation in ``impls`` (default :func:`impls_for`) on
    ``x [B, C_in, H, W]`` (with the attentions ``att``, or random ones): one warm-up run
    each, then ``repeats`` interleaved rounds timed by :func:`time_call`; after the first
    round the candidates ``prune`` times slower than the fastest are not timed again. A
    formulation that runs out of memory is left out. ``train`` (default: whether autograd
    would record the forward) times forward + backward."""
    train = _needs_grad(layer, x, att) if train is None else train
    gen = torch.Generator(device=x.device).manual_seed(0)
    xs, atts = _operands(layer, x, att, train, gen)
    runs = {impl: _candidate(layer, impl, xs, atts, train, gen) for impl in (impls or impls_for(layer))}
    times: Dict[str, list] = {}
    for impl, run in list(runs.items()):
        try:
            run()
            times[impl] = []
        except RuntimeError as e:
            if not _out_of_memory(e):
                raise
            del runs[impl]
            if x.device.type == "cuda":
                torch.cuda.empty_cache()
            logger.info("ODConv autotune: %s ran out of memory at %s: left out", impl, tuple(x.shape))
    for r in range(repeats):
        for impl in [i for i in runs if i in times]:
            times[impl].append(time_call(runs[impl], x.device))
        if r == 0 and times:
            fastest = min(t[0] for t in times.values())
            for impl in [i for i, t in times.items() if t[0] > prune * fastest]:
                del runs[impl]
    return {impl: statistics.median(t) for impl, t in times.items()}


def pick(times: Dict[str, float], baseline: str = BASELINE, margin: float = MARGIN) -> str:
    """The fastest of ``times`` (formulation -> seconds), but ``baseline`` unless the
    fastest beats it by ``margin`` (a fraction of the baseline's time)."""
    best = min(times, key=times.get)
    if baseline in times and times[best] > (1 - margin) * times[baseline]:
        return baseline
    return best


def _describe(layer, x: torch.Tensor, train: bool) -> str:
    k, s = layer.kernel_size, layer.stride
    geometry = f"{k}x{k}" + (f" stride {s[0]}" if s != (1, 1) else "") + (f" groups {layer.groups}" if layer.groups > 1 else "")
    h, w = x.shape[2:]
    return (f"ODConv {layer.in_channels}->{layer.out_channels} {geometry} kernel_num {layer.kernel_num}, batch "
            f"{x.shape[0]} {h}x{w} (size bucket {size_bucket(h)}x{size_bucket(w)}) "
            f"{str(x.dtype).replace('torch.', '')} {x.device.type} {'train' if train else 'infer'}")


def choice_line(impl: str, ms: Dict[str, float], margin: float = MARGIN) -> str:
    """``"winograd (1.8 ms) over batch_groups (3.1 ms), ..."``: a choice and the medians (ms)
    it was made from, slowest last; a baseline kept by the margin says so."""
    best = min(ms, key=ms.get)
    ranked = [i for i in sorted(ms, key=ms.get) if i not in (impl, best)]
    line = f"{impl} ({ms[impl]:.1f} ms"
    if best != impl:
        line += f"; {best} ({ms[best]:.1f} ms) is not {margin:.0%} faster"
    line += ")"
    return line + (" over " + ", ".join(f"{i} ({ms[i]:.1f} ms)" for i in ranked) if ranked else "")


# ---------------------------------------------------------------- tuner
class ODConvTuner:
    """Measured choices of ODConv formulations, in memory and in the cache file
    ``<cache_dir>/odconv_autotune.json`` (``persist=False``: memory only).

    Layout of the file: ``{"version": 1, "machines": {machine_key: {shape_key: entry}}}``,
    entry ``{"impl", "ms": {formulation: median ms}, "input": [B, C, H, W], "measured": ISO
    time}``."""

    def __init__(self, cache_dir: Optional[str] = None, persist: bool = True, repeats: int = REPEATS,
                 margin: float = MARGIN):
        self.cache_dir = cache_dir
        self.persist, self.repeats, self.margin = persist, repeats, margin
        self._machines: Optional[Dict[str, Dict[str, dict]]] = None  # the file's content, read at first use
        self._reported = set()  # keys logged by this process
        self._warned = set()  # files warned about

    @property
    def path(self) -> str:
        return os.path.join(self.cache_dir or cache_dir(), CACHE_FILE)

    # ---------------------------------------------------------- the file
    def read(self) -> Dict[str, Dict[str, dict]]:
        """The machines of the cache file; {} when it is missing, and when it cannot be read
        (then one warning naming it)."""
        path = self.path
        if not os.path.exists(path):
            return {}
        try:
            with open(path) as f:
                data = json.load(f)
            if not isinstance(data, dict) or not isinstance(data.get("machines", {}), dict):
                raise ValueError("not a dict with 'version' and 'machines'")
            if data.get("version") != VERSION:
                return {}
            machines = data.get("machines", {})
            if not all(isinstance(v, dict) for v in machines.values()):
                raise ValueError("a machine's section is not a dict")
            return machines
        except (OSError, ValueError) as e:  # json.JSONDecodeError is a ValueError
            if path not in self._warned:
                self._warned.add(path)
                logger.warning("ODConv autotune: ignoring the cache file %s, which cannot be read (%s); the "
                               "formulations are measured again and the file is replaced", path, e)
            return {}

    def _write(self, machine: str, key: str, entry: dict) -> None:
        """Add one entry to the file: under a lock, the file as it is now (other processes may
        have added theirs) plus the entry, written to a temporary file and renamed over it."""
        from iopath.common.file_io import file_lock

        path = self.path
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with file_lock(path):
                machines = self.read()
                machines.setdefault(machine, {})[key] = entry
                tmp = f"{path}.tmp-{os.getpid()}"
                with open(tmp, "w") as f:
                    json.dump({"version": VERSION, "machines": machines}, f, indent=1, sort_keys=True)
                os.replace(tmp, path)
            for m, entries in machines.items():  # what other processes measured meanwhile
                self._machines.setdefault(m, {}).update(entries)
        except OSError as e:
            if path not in self._warned:
                self._warned.add(path)
                logger.warning("ODConv autotune: cannot write the cache file %s (%s); choices are kept in "
                               "memory for this process only", path, e)

    def entries(self, machine: str) -> Dict[str, dict]:
        """The choices known for ``machine`` (a :func:`machine_key`), the file read at first use."""
        if self._machines is None:
            self._machines = self.read() if self.persist else {}
        return self._machines.setdefault(machine, {})

    # ----------------------------------------------------------- choosing
    def choose(self, layer, x: torch.Tensor, att: Optional[Dict[str, torch.Tensor]] = None) -> str:
        """The formulation for ``layer`` on ``x [B, C_in, H, W]``: the one recorded for its
        :func:`shape_key`, else measured now (with the attentions ``att`` of this forward,
        or random ones) and recorded; the fixed rule while tracing or compiling."""
        if torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling():
            return auto_impl(layer, x)
        train = _needs_grad(layer, x, att)
        machine, key = machine_key(x.device), shape_key(layer, x, train)
        entries = self.entries(machine)
        entry = entries.get(key)
        allowed = impls_for(layer)
        if entry is not None and isinstance(entry, dict) and entry.get("impl") in allowed:
            if key not in self._reported:
                self._reported.add(key)
                logger.info("%s: %s (cached in %s)", _describe(layer, x, train), entry["impl"], self.path)
            return entry["impl"]
        seconds = measure(layer, x, att, train, allowed, self.repeats)
        if not seconds:  # every formulation ran out of memory: the real forward will say so
            return auto_impl(layer, x)
        impl = pick(seconds, margin=self.margin)
        ms = {i: round(1000 * t, 3) for i, t in seconds.items()}
        entry = {"impl": impl, "ms": ms, "input": list(x.shape),
                 "measured": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        entries[key] = entry
        self._reported.add(key)
        logger.info("%s: %s", _describe(layer, x, train), choice_line(impl, ms, self.margin))
        if self.persist:
            self._write(machine, key, entry)
        return impl


_DEFAULT: Optional[ODConvTuner] = None


def default_tuner() -> ODConvTuner:
    """The process-wide tuner of layers without their own ``tuner`` (its cache directory,
    :func:`cache_dir`, is read when it is first needed)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = ODConvTuner()
    return _DEFAULT
