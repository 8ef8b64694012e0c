"""Side-by-side on a GPU: each peer's official code with mamba_ssm's CUDA kernels vs our re-implementation (eager
with the Triton scan, and in a CUDA graph), on the same weights and real images.

The CPU fixtures (peers_golden.py) check our code against mamba_ssm's pure-PyTorch reference; this checks it against
the kernels the authors trained with. For each peer found among ``--official-repo``:

- weights: the peer's fixture weights (tests/fixtures/peers, rebuilt by tests/peer_fixtures.py), loaded into both;
- parity (``runtime.parity.compare``, the project's contract) per image at batch 1 on ``--count`` preprocessed
  ISIC 2017 val images: ours (triton scan) and ours in a CUDA graph against the official model;
- latency: p50 ms per forward at each of ``--batches`` (input on the GPU, synchronised), official eager, ours eager,
  ours in a CUDA graph. ResMamba-ULite's official PSA couples the images of a batch (models/resmamba_ulite.py);
  for timing that does not matter.

fp32 means fp32: TF32 is off for every contender. Third-party code is never vendored: pass the checkouts, and a
folder holding an importable, built mamba_ssm (and causal_conv1d, if installed there) unless it is installed.

    python benchmarks/peers_gpu.py --official-repo UltraLight-VM-UNet --official-repo ResMamba-ULite \\
        --official-repo DermoMamba [--mamba-path DIR] --out benchmarks/results/peers_gpu_h100.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from _peers import build_official, checkout_commit, identify_checkout, install_timm_stand_in, official_probs
from gpu import time_gpu
from ultralbm_edge.gpu import CudaGraphRunner
from ultralbm_edge.models import create_model
from ultralbm_edge.runtime.files import write_text_atomic
from ultralbm_edge.runtime.imageio import find_images, read_image
from ultralbm_edge.runtime.parity import compare
from ultralbm_edge.runtime.preprocess import preprocess

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from peer_fixtures import load_golden, random_state_dict  # noqa: E402


def p50_ms(fn: Callable[[], object], iters: int) -> float:
    return statistics.median(time_gpu(fn, iters, warmup=3))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--official-repo", type=Path, action="append", required=True, help="a peer's checkout (repeat)")
    ap.add_argument("--mamba-path", type=Path, help="folder holding an importable, built mamba_ssm (if not installed)")
    ap.add_argument("--images", type=Path, default=REPO.parent / "shared" / "data" / "isic2017" / "val" / "images")
    ap.add_argument("--count", type=int, default=16, help="images for the parity check (batch 1 each)")
    ap.add_argument("--batches", default="1,8,64")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("peers_gpu.py needs a CUDA GPU (and mamba_ssm built for it)")
    if args.mamba_path:
        sys.path.insert(0, str(args.mamba_path))
    import mamba_ssm  # the real package, CUDA kernels included

    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    batches = [int(b) for b in args.batches.split(",")]
    paths = find_images([args.images])[: max(args.count, max(batches))]
    images = np.stack([preprocess(read_image(p)) for p in paths])
    images = np.concatenate([images] * (max(batches) // len(images) + 1))  # enough rows for the largest batch
    results: dict = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "cuda": torch.version.cuda,
                     "mamba_ssm": getattr(mamba_ssm, "__version__", "?"), "timm": install_timm_stand_in(),
                     "python": platform.python_version(), "command": " ".join(["python", *sys.argv]),
                     "fp32": "TF32 off (cuDNN and cuBLAS)", "peers": {}}  # fmt: skip

    for repo in args.official_repo:
        peer = identify_checkout(repo)
        golden = load_golden(peer.name)
        weights = random_state_dict(golden["spec"], golden["seed"])
        official = build_official(peer, repo)
        official.load_state_dict(weights, strict=True)
        official = official.cuda().eval()
        ours = create_model(peer.name, scan="triton")
        ours.load_state_dict(weights, strict=True)
        ours = ours.cuda().eval()
        graph = CudaGraphRunner(create_model(peer.name), max_batch=max(batches), scan="triton")
        graph.model.load_state_dict(weights, strict=True)
        entry: dict = {"official_commit": checkout_commit(repo), "repairs": list(peer.fixes), "latency": []}
        x = torch.from_numpy(images).cuda()
        with torch.inference_mode():
            ref = torch.cat([official_probs(peer, official, x[i : i + 1]) for i in range(args.count)]).cpu().numpy()
            eager = torch.cat([ours(x[i : i + 1]) for i in range(args.count)]).cpu().numpy()
            graphed = np.concatenate([graph.run(images[i : i + 1]) for i in range(args.count)])
            entry["parity_eager"] = compare(eager, ref, reference="official + mamba_ssm CUDA").to_json()
            entry["parity_graph"] = compare(graphed, ref, reference="official + mamba_ssm CUDA").to_json()
            for batch in batches:
                xb = x[:batch]
                entry["latency"].append({
                    "batch": batch,
                    "official_eager_ms": p50_ms(lambda: official_probs(peer, official, xb), args.iters),
                    "ours_eager_ms": p50_ms(lambda: ours(xb), args.iters),
                    "ours_graph_ms": p50_ms(lambda: graph.run_device(xb), args.iters),
                })  # fmt: skip
                print(peer.name, entry["latency"][-1], flush=True)
        print(peer.name, entry["parity_eager"], flush=True)
        results["peers"][peer.name] = entry
        del official, ours, graph
        torch.cuda.empty_cache()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(args.out, json.dumps(results, indent=1) + "\n")  # after every peer: a cut run keeps its rows


if __name__ == "__main__":
    main()
