"""DDP training on 1 and N GPUs side by side in one run: seconds per epoch, their ratio, and the val DSC each reached.

For each device count, ``torchrun --standalone --nproc-per-node N -m ultralbm_edge train`` trains from scratch on the
same data with the same seed and ``--batch-size`` per process (so N processes take a global batch N times larger, and
each runs 1/N of the steps of an epoch), into a fresh run folder. Per-epoch seconds (training only, rank 0's clock)
and val DSC are read back from its metrics.csv; the world size and training-set size from its last.pth.

Each row gives ``epoch_s`` (every epoch), ``epoch_s_steady`` (median over the epochs after the first, which pays
start-up: cuDNN/Triton autotuning, NCCL rings), ``img_s_steady`` (images trained per epoch / that), ``wall_s`` (the
whole torchrun: interpreter, data loading, validation and checkpoints included) and the last and best val DSC. The
ratio reported is epoch_s_steady(N) / epoch_s_steady(first count) (the issue's goal for 2 GPUs: <= 0.6).

This is a timing run, not a model to ship: a few epochs (``--epochs``), on whatever folders are given. ``--data`` names
a folder with train/ and val/ (each with images/ and masks/); or ``--train`` and ``--val`` name two split folders,
linked into that layout in a temp dir (e.g. ISIC 2017 val's 600 images to train on, PH2 val's 30 to validate on, where
ISIC 2017 train is not at hand). The DSC after a few epochs only says that both runs learn alike, within noise.

    python benchmarks/ddp_scaling.py --train $ULTRALBM_SHARED/data/isic2017/val --val $ULTRALBM_SHARED/data/ph2/val \\
        --gpus 1,2 --device cuda --epochs 20 --json benchmarks/results/ddp_scaling_h200x2.json

``--device cpu`` runs the same logic with gloo, N processes sharing the cores (a check that the script works, not a
measurement).
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import report


def layout(args: argparse.Namespace, tmp: Path) -> Path:
    """The folder with train/ and val/ to train on: ``--data``, or ``--train`` and ``--val`` linked under ``tmp``."""
    if args.data:
        return args.data
    data = tmp / "data"
    data.mkdir()
    (data / "train").symlink_to(args.train.resolve(), target_is_directory=True)
    (data / "val").symlink_to(args.val.resolve(), target_is_directory=True)
    return data


def train_run(args: argparse.Namespace, data: Path, devices: int, out: Path) -> dict[str, Any]:
    """One torchrun of ``devices`` processes; its row."""
    from ultralbm_edge.checkpoint import load_checkpoint

    cuda = args.device.startswith("cuda")
    # torchrun would set 1 thread per process; on the CPU the processes share the cores evenly instead.
    threads = max(1, (os.cpu_count() or 1) // devices)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(threads))}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(devices), "-m", "ultralbm_edge",
           "-q", "train", "--data", str(data), "-o", str(out), "--epochs", str(args.epochs), "-b", str(args.batch),
           "--device", "cuda" if cuda else "cpu", "--seed", str(args.seed),
           *(["--limit", str(args.limit)] if args.limit else []), *(["--amp"] if args.amp else [])]  # fmt: skip
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    assert res.returncode == 0, (res.returncode, res.stdout[-2000:], res.stderr[-4000:])
    epochs = list(csv.DictReader(open(out / "metrics.csv")))
    assert [int(r["epoch"]) for r in epochs] == list(range(1, args.epochs + 1)), [r["epoch"] for r in epochs]
    provenance = load_checkpoint(out / "last.pth").provenance
    assert provenance["world_size"] == devices, provenance["world_size"]
    seconds = [float(r["seconds"]) for r in epochs]
    dsc = [float(r["val_dsc"]) for r in epochs]
    shard = provenance["n_train"] // devices  # images per process per epoch (the n mod N left over sit it out)
    trained = devices * (shard - shard % args.batch if shard >= args.batch else shard)  # full batches only
    steady = statistics.median(seconds[1:])
    return {"devices": devices, "device": args.device, "epochs": args.epochs, "n_train": provenance["n_train"],
            "n_val": provenance["n_val"], "batch_per_process": args.batch, "global_batch": provenance["global_batch"],
            "images_per_epoch": trained, "epoch_s": [round(s, 4) for s in seconds], "epoch_s_steady": steady,
            "img_s_steady": trained / steady, "wall_s": wall, "val_dsc_last": dsc[-1], "val_dsc_best": max(dsc),
            "val_loss_last": float(epochs[-1]["val_loss"]), "train_loss_last": float(epochs[-1]["train_loss"]),
            "gpu": provenance["device"]}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--data", type=Path, help="a folder with train/ and val/ (each with images/ and masks/)")
    where.add_argument("--train", type=Path, help="a split folder (images/, masks/) to train on; needs --val")
    ap.add_argument("--val", type=Path, help="a split folder to validate on (with --train)")
    ap.add_argument("--gpus", default="1,2", help="device counts (processes) to compare, e.g. 1,2")
    ap.add_argument("--device", default="cuda", help="cuda (NCCL, one GPU per process) or cpu (gloo: a check of the logic)")
    ap.add_argument("--epochs", type=int, default=10, help="epochs per run, >= 2 (the first is left out of the median)")
    ap.add_argument("--batch", type=int, default=8, help="batch size per process (paper: 8)")
    ap.add_argument("--limit", type=int, help="use only the first N images of each split")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--amp", action="store_true", help="train in mixed precision (CUDA)")
    ap.add_argument("--keep", type=Path, help="keep the run folders here (default: a temp dir)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.train and not args.val:
        ap.error("--train needs --val")
    if args.epochs < 2:
        ap.error("--epochs must be 2 or more: the first epoch (start-up) is left out of the steady time")
    counts = [int(n) for n in args.gpus.split(",")]
    tmp = args.keep or Path(tempfile.mkdtemp(prefix="ulbm-ddp-"))
    tmp.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    try:
        data = layout(args, tmp)
        for n in counts:
            row = {k: round(v, 4) if isinstance(v, float) else v for k, v in train_run(args, data, n, tmp / f"run_{n}").items()}
            rows.append(row)
            print({k: v for k, v in row.items() if k != "epoch_s"}, flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    base = rows[0]
    ratio = {f"{r['devices']}_over_{base['devices']}": round(r["epoch_s_steady"] / base["epoch_s_steady"], 3) for r in rows[1:]}
    dsc_delta = {f"{r['devices']}_minus_{base['devices']}": round(r["val_dsc_last"] - base["val_dsc_last"], 4) for r in rows[1:]}
    unit = "GPU" if args.device.startswith("cuda") else "CPU process"
    for r in rows:
        print(f"{r['devices']} {unit}(s): {r['epoch_s_steady']} s/epoch steady ({r['img_s_steady']} img/s, global batch "
              f"{r['global_batch']}), val DSC after {r['epochs']} epochs {r['val_dsc_last']:.4f} (best {r['val_dsc_best']:.4f})")  # fmt: skip
    for key, value in ratio.items():
        n = int(key.split("_")[0])
        print(f"epoch time {key.replace('_', ' ')}: {value}x (ideal {base['devices'] / n:.2f}x; goal for 2 GPUs <= 0.6x)")
    report(rows, args.json, epoch_time_ratio=ratio, val_dsc_delta=dsc_delta, epochs=args.epochs, batch_per_process=args.batch,
           seed=args.seed, amp=args.amp, backend="nccl" if args.device.startswith("cuda") else "gloo",
           train=str(args.train or args.data / "train"), val=str(args.val or args.data / "val"),
           purpose="timing run: a few epochs from scratch on the folders named, not a model to ship")  # fmt: skip


if __name__ == "__main__":
    main()
