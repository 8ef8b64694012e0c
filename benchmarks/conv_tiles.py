"""Times the fused conv-stage kernel (``gpu.triton_conv``) per launch configuration, for the network's five dense
3x3 conv stages at one batch size, and prints the fastest per stage next to the default (``conv_tiles``).

    python benchmarks/conv_tiles.py --batch 256 [--blocks 64,128,256 --kcs 16,32,64 ...] [--out tiles.json]

Each candidate runs conv + GroupNorm statistics + finalisation (``conv3x3_group_norm``) on random [0, 255]
inputs; times are medians of ``triton.testing.do_bench_cudagraph`` (CUDA-graph replays, so launch overhead does
not drown batch-1 kernels). Needs a CUDA GPU.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import torch
import triton
from torch import nn
from triton.testing import do_bench_cudagraph

from ultralbm_edge.ops.triton.conv import ConvTiles, GroupNormParams, _padded, conv3x3_group_norm, conv_tiles

# (input channels, output channels, side) of encoder 1-3 and decoder 4-5 at a 256x256 input.
STAGES = [(3, 8, 256), (8, 16, 128), (16, 24, 64), (24, 16, 32), (16, 8, 64)]


def candidates(args: argparse.Namespace, cin: int, cout: int, side: int) -> list[ConvTiles]:
    cout_p = _padded(cout)
    grid = itertools.product(args.blocks, args.cbs, args.kcs, args.warps, args.stages)
    return [
        ConvTiles(block, cb, kc, warps, stages)
        for block, cb, kc, warps, stages in grid
        if cb <= cout_p and kc <= max(16, triton.next_power_of_2(cin * 9)) and block <= side * side
    ]


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--blocks", type=_ints, default=[64, 128, 256], help="pixel tiles to try")
    ap.add_argument("--cbs", type=_ints, default=[16, 32], help="output-channel blocks to try")
    ap.add_argument("--kcs", type=_ints, default=[16, 32, 64], help="patch rows per tl.dot to try")
    ap.add_argument("--warps", type=_ints, default=[4, 8])
    ap.add_argument("--stages", type=_ints, default=[1, 3])
    args = ap.parse_args()
    torch.manual_seed(0)
    results = {"gpu": torch.cuda.get_device_name(), "batch": args.batch, "stages": []}
    for cin, cout, side in STAGES:
        conv, norm = nn.Conv2d(cin, cout, 3, padding=1).cuda(), nn.GroupNorm(min(4, cout), cout).cuda()
        x = torch.rand(args.batch, cin, side, side, device="cuda") * 255
        weights = (conv.weight, conv.bias, GroupNormParams(norm.weight, norm.bias, norm.num_groups, norm.eps))
        default = conv_tiles(args.batch, side * side, cin, cout)
        timed = []
        with torch.inference_mode():
            for tiles in {default, *candidates(args, cin, cout, side)}:
                try:
                    conv3x3_group_norm(x, *weights, tiles)  # compile outside the timing
                    ms = do_bench_cudagraph(lambda: conv3x3_group_norm(x, *weights, tiles), rep=50, return_mode="median")
                except Exception as e:  # e.g. out of shared memory: report and go on
                    print(f"  {tiles}: {type(e).__name__} {str(e)[:120]}", flush=True)
                    continue
                timed.append((ms, tiles))
        timed.sort()
        default_ms = next((ms for ms, t in timed if t == default), float("nan"))
        best_ms, best = timed[0]
        stage = {"cin": cin, "cout": cout, "side": side, "default": default._asdict(), "default_us": default_ms * 1e3,
                 "best": best._asdict(), "best_us": best_ms * 1e3, "top5": [(ms * 1e3, t._asdict()) for ms, t in timed[:5]]}  # fmt: skip
        results["stages"].append(stage)
        print(f"{cin:3d}->{cout:3d} @{side:3d}: default {tuple(default)} {default_ms * 1e3:8.1f} us | "
              f"best {tuple(best)} {best_ms * 1e3:8.1f} us ({default_ms / best_ms:.2f}x)", flush=True)  # fmt: skip
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
