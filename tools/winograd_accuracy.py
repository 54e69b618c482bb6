#!/usr/bin/env python
"""float32 accuracy of condseg's Winograd convolutions against a direct convolution.

For each ResNet-50 stage shape of an 800x1216 input (one sample, 3x3 C -> C, a per-sample
kernel of ODConv's scale), the largest error against float64 relative to the largest
output, for a direct float32 convolution and for ``winograd_conv3x3`` with each tile size
(and with Lavin & Gray's points for F(4x4, 3x3), the previous release's), over several
draws of normal and of rectified (post-ReLU) inputs; the table gives the ratio to the
direct convolution's error, median and largest.

    python tools/winograd_accuracy.py                     # the table of docs/BENCHMARKS.md
    python tools/winograd_accuracy.py --search 4          # rank point sets for F(4x4, 3x3)

``--search M`` ranks sets of interpolation points for F(M x M, 3 x 3) (0, infinity and M
points among +-p/q with p, q <= 4 and +-3/2, +-2/3; for M = 4 the symmetric sets
{0, +-a, +-b}) by the same ratio on three smaller shapes.
"""
import argparse
import itertools
import statistics
from fractions import Fraction

import torch
import torch.nn.functional as F

from condseg.layers import winograd

STAGES = {"res2": (64, 200, 304), "res3": (128, 100, 152), "res4": (256, 50, 76), "res5": (512, 25, 38)}
SEARCH_SHAPES = [(128, 48, 57, False), (256, 30, 33, True), (128, 40, 40, False)]
LAVIN_F4 = (0, 1, -1, 2, -2)


def draw(c, h, w, seed, relu):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, c, h, w, generator=g)
    x = x.relu() if relu else x
    wt = torch.randn(1, c, c, 3, 3, generator=g) * (2 / (9 * c)) ** 0.5
    ref = F.conv2d(x.double(), wt[0].double(), padding=1)
    direct = float((F.conv2d(x, wt[0], padding=1).double() - ref).abs().max() / ref.abs().max())
    return x, wt, ref, direct


def ratio(sample, tile, points=None):
    """Error of F(tile x tile, 3 x 3) (with ``points``, or the module's) over the direct one's."""
    x, wt, ref, direct = sample
    saved = winograd.POINTS[tile]
    if points is not None:
        winograd.POINTS[tile] = tuple(points)
        winograd._CACHE.clear()
    try:
        y = winograd.winograd_conv3x3(x, wt, 1, tile)
    finally:
        winograd.POINTS[tile] = saved
        winograd._CACHE.clear()
    return float((y.double() - ref).abs().max() / ref.abs().max()) / direct


def table(seeds: int) -> None:
    variants = [(f"F({m}x{m}) {_fmt(winograd.POINTS[m])}", m, None) for m in winograd.TILE_SIZES]
    variants.append((f"F(4x4) {_fmt(LAVIN_F4)} (Lavin)", 4, LAVIN_F4))
    print("| stage | C, H x W | direct float32 error | " + " | ".join(v[0] for v in variants) + " |")
    print("|---|---|---|" + "---|" * len(variants))
    for stage, (c, h, w) in STAGES.items():
        samples = [draw(c, h, w, seed, relu) for seed in range(seeds) for relu in (False, True)]
        cells = []
        for _, m, points in variants:
            r = [ratio(s, m, points) for s in samples]
            cells.append(f"{statistics.median(r):.1f}x / {max(r):.1f}x")
        direct = statistics.median(s[3] for s in samples)
        print(f"| {stage} | {c}, {h}x{w} | {direct:.1e} | " + " | ".join(cells) + " |")
    print(f"\nratio to the direct convolution's error, median / largest of {2 * seeds} draws "
          f"({seeds} normal, {seeds} rectified inputs)")


def search(m: int, top: int) -> None:
    values = sorted({Fraction(p, q) for p in range(1, 5) for q in range(1, 5)} | {Fraction(3, 2), Fraction(2, 3)})
    values = values + [-v for v in values]
    samples = [draw(c, h, w, seed, relu) for seed, (c, h, w, relu) in enumerate(SEARCH_SHAPES)]
    if m == 4:  # symmetric sets {0, +-a, +-b}: the best kind in an exhaustive search over 4 of 20 values
        combos = [(a, -a, b, -b) for a, b in itertools.combinations(values[: len(values) // 2], 2)]
    else:
        combos = list(itertools.combinations(values, m))
    ranked = []
    for combo in combos:
        r = [ratio(s, m, (0, *combo)) for s in samples]
        ranked.append((statistics.mean(r), max(r), (0, *combo)))
    ranked.sort()
    print(f"F({m}x{m}, 3x3): {len(ranked)} point sets, best {top} (mean / largest ratio to a direct convolution)")
    for mean, worst, points in ranked[:top]:
        print(f"  {mean:5.2f}x  {worst:5.2f}x  {_fmt(points)}")


def _fmt(points) -> str:
    return "{" + ", ".join(str(Fraction(p)) for p in points) + ", inf}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=4, help="draws of each input kind per stage")
    parser.add_argument("--search", type=int, choices=winograd.TILE_SIZES, default=None, metavar="M",
                        help="rank interpolation points for F(M x M, 3 x 3) instead")
    parser.add_argument("--top", type=int, default=10)
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    if args.search:
        search(args.search, args.top)
    else:
        table(args.seeds)


if __name__ == "__main__":
    main()
