"""Training speed, side by side on one GPU: the authors' training pipeline vs ``ultralbm_edge.train``.

- ``authors``: their ``UltraLBM_UNet`` (mamba_ssm CUDA scan) wrapped in ``DataParallel`` as in their train.py, their
  ``NPY_datasets`` + ``train_transformer`` (PIL decode, per-sample normalise/flip/rotate/resize on the CPU in
  DataLoader workers), their ``BceDiceLoss``, AdamW (1e-3, wd 1e-2); the loop of their ``engine.train_one_epoch``
  restated here (their engine.py also imports sklearn/tqdm for validation only).
- ``ours_<scan>[+amp][+eager]``: ``ultralbm_edge.train.train`` with the same recipe, one line per scan strategy /
  precision; ``+eager`` turns off the recorded CUDA-graph step (``--no-cuda-graph``), which fp32 runs use by default.

Reported: seconds per training epoch (median over epochs after the first, which pays start-up/autotuning), images/s,
and the ratio to the authors'. Third-party code is never vendored: pass where their repository and mamba_ssm live.
Their utils.py imports matplotlib only to save figures; when it is absent a stub module stands in.

    python benchmarks/train_speed.py --data ../shared/data/isic2017 --authors-repo PATH --mamba-path PATH \\
        [--mamba-ext PATH] --epochs 3 --out benchmarks/results/train_speed_h100.json
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

import torch


def authors_epochs(args: argparse.Namespace) -> list[float]:
    for p in [args.mamba_ext, args.mamba_path, args.authors_repo]:
        if p is not None:
            sys.path.insert(0, str(p.resolve()))
    try:
        importlib.import_module("matplotlib.pyplot")
    except ImportError:  # only used by their save_imgs (figures), never in training
        stub = types.ModuleType("matplotlib")
        stub.pyplot = types.ModuleType("matplotlib.pyplot")  # type: ignore[attr-defined]
        sys.modules.update({"matplotlib": stub, "matplotlib.pyplot": stub.pyplot})  # type: ignore[attr-defined]
    utils = importlib.import_module("utils")
    dataset_mod = importlib.import_module("dataset.dataset")
    model_mod = importlib.import_module("models.UltraLBM_UNet")
    from torchvision import transforms

    config = types.SimpleNamespace(
        train_transformer=transforms.Compose([  # configs/config_setting.py, datasets = 'isic17'
            utils.myNormalize("isic17", train=True), utils.myToTensor(), utils.myRandomHorizontalFlip(p=0.5),
            utils.myRandomVerticalFlip(p=0.5), utils.myRandomRotation(p=0.5, degree=[0, 360]), utils.myResize(256, 256),
        ])
    )  # fmt: skip
    data = dataset_mod.NPY_datasets(str(args.data) + "/", config, train=True)
    loader = torch.utils.data.DataLoader(data, batch_size=8, shuffle=True, pin_memory=True, num_workers=args.workers)
    model = torch.nn.DataParallel(model_mod.UltraLBM_UNet().cuda(), device_ids=[0], output_device=0)
    criterion = utils.BceDiceLoss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=50, eta_min=1e-5)
    seconds = []
    for _ in range(args.epochs):
        t0 = time.perf_counter()
        model.train()
        losses = []
        for images, targets in loader:  # engine.train_one_epoch, amp off (their default)
            optimizer.zero_grad()
            images, targets = images.cuda(non_blocking=True).float(), targets.cuda(non_blocking=True).float()
            loss = criterion(model(images), targets)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        scheduler.step()
        torch.cuda.synchronize()
        seconds.append(time.perf_counter() - t0)
        print(f"authors epoch {len(seconds)}: {seconds[-1]:.1f} s, loss {sum(losses) / len(losses):.4f}", flush=True)
    return seconds


def ours_epochs(args: argparse.Namespace, variant: str) -> list[float]:
    """Epoch seconds of ``variant``: a scan strategy with optional ``+amp`` and ``+eager`` flags."""
    from ultralbm_edge.train import TrainConfig, train

    scan, *flags = variant.split("+")
    with tempfile.TemporaryDirectory() as out:
        cfg = TrainConfig(data=str(args.data), out=out, epochs=args.epochs, device="cuda", scan=scan, amp="amp" in flags,
                          cuda_graph="eager" not in flags)  # fmt: skip
        history = train(cfg, log=lambda line: print(f"ours[{variant}] {line}", flush=True))["history"]
    return [h["seconds"] for h in history]


def summarise(name: str, seconds: list[float], n_images: int) -> dict:
    steady = seconds[1:] or seconds
    per_epoch = statistics.median(steady)
    return {"name": name, "epochs_s": seconds, "s_per_epoch": per_epoch, "images_per_s": n_images / per_epoch}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="folder with train/images, train/masks (and val/)")
    ap.add_argument("--authors-repo", type=Path, help="checkout of LinLinLin-X/UltraLBM-UNet")
    ap.add_argument("--mamba-path", type=Path, help="folder holding an importable mamba_ssm package")
    ap.add_argument("--mamba-ext", type=Path, help="folder holding the built selective_scan_cuda extension")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--workers", type=int, default=8, help="their DataLoader workers (config num_workers = 8)")
    ap.add_argument("--ours", default="triton+eager,triton,triton+amp", help="scan[+amp][+eager] variants of ours to time")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 for both
    n_images = len(list((args.data / "train" / "images").iterdir()))
    rows = []
    for variant in filter(None, args.ours.split(",")):
        rows.append(summarise(f"ours_{variant}", ours_epochs(args, variant), n_images))
    if args.authors_repo:
        rows.insert(0, summarise("authors", authors_epochs(args), n_images))
    base = rows[0]["s_per_epoch"] if args.authors_repo else None
    print(f"{'pipeline':22s} {'s/epoch':>8s} {'img/s':>8s} {'x authors':>9s}")
    for r in rows:
        r["speedup_vs_authors"] = base / r["s_per_epoch"] if base else None
        ratio = f"{r['speedup_vs_authors']:9.2f}" if base else f"{'':>9s}"
        print(f"{r['name']:22s} {r['s_per_epoch']:8.2f} {r['images_per_s']:8.0f} {ratio}")
    env = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "n_train_images": n_images, "epochs": args.epochs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"environment": env, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
