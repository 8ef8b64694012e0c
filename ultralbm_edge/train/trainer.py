"""Training and distillation with the paper's recipe (§4.2), resumable, on CPU, one GPU or several (torchrun).

Recipe: 256x256 inputs, random flips and rotations, BCE + Dice, AdamW (lr 1e-3, weight decay 1e-2),
CosineAnnealingLR (T_max 50, eta_min 1e-5) stepped per epoch, batch 8, 300 epochs. The whole split is preprocessed
once (the deployment preprocessing) and kept on the training device; augmentation runs there in batches; on one GPU
in fp32 the step is recorded once as a CUDA graph and replayed (train/step.py: 5.3x on an H200). As in the
authors' train.py, ``best.pth`` is the epoch with the lowest validation loss; validation DSC/IoU use the paper's
global confusion matrix.

Several processes (``torchrun --nproc-per-node N -m ultralbm_edge train ...``): DistributedDataParallel, one GPU per
process (gloo on the CPU). Each epoch's shuffle is drawn from (seed, epoch) alone, so it is the same on every rank
and after a resume; each rank takes every N-th image of it, all shards of equal length (the last n mod N images of
the shuffle sit the epoch out, like DistributedSampler's drop_last), so every rank runs the same number of steps.
Augmentation draws from a generator of its own per rank. ``--batch-size`` is per process: the global batch is N times
it (the learning rate is not scaled). Rank 0 alone validates, logs and writes the run folder; the decision to stop
(``--stop-after-minutes``) is rank 0's, sent to every rank.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import os
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
from filelock import FileLock, Timeout

from ultralbm_edge import __version__
from ultralbm_edge.checkpoint import load_checkpoint, save_checkpoint
from ultralbm_edge.models import count_parameters, create_model, model_spec
from ultralbm_edge.ops import check_strategy, fused_scans
from ultralbm_edge.runtime.backends.base import BackendError, parse_device
from ultralbm_edge.runtime.errors import UserError
from ultralbm_edge.runtime.files import write_text_atomic
from ultralbm_edge.runtime.metrics import ConfusionAccumulator

from .data import augment, load_split
from .losses import BceDiceLoss, HybridDistillationLoss
from .step import GraphedStep, Step, portable_optimizer_state, prepare_optimizer_for_graph


@dataclass
class TrainConfig:
    data: str
    out: str
    variant: str = "ultralbm"
    epochs: int = 300
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-2
    t_max: int = 50
    eta_min: float = 1e-5
    device: str = "cpu"
    seed: int = 42
    amp: bool = False
    resume: bool = False
    teacher: str | None = None  # set for distillation
    limit: int | None = None  # use only the first N images of each split (smoke tests)
    scan: str = ""  # scan strategy; default: chunked on CPU, triton (else blelloch) on CUDA, all exact and differentiable;
    # "cuda" (mamba_ssm's kernels, a backward kernel too) for the peers whose scans run over every pixel
    stop_after_minutes: float | None = None  # end cleanly after the epoch that crosses this; --resume continues
    overwrite: bool = False  # start over in a folder that holds an earlier run
    cuda_graph: bool = True  # record the step as a CUDA graph (one CUDA process, fp32; see train/step.py)

    def validate(self) -> None:
        """Refuse settings that cannot train, before any data is loaded."""
        bounds = {"epochs": self.epochs >= 1, "batch_size": self.batch_size >= 1, "lr": self.lr > 0,
                  "weight_decay": self.weight_decay >= 0, "t_max": self.t_max >= 1, "eta_min": self.eta_min >= 0}  # fmt: skip
        for name, ok in bounds.items():
            if not ok:
                raise TrainError(f"--{name.replace('_', '-')} {getattr(self, name)} is out of range (see `ultralbm-edge train --help`)")
        model_spec(self.variant)
        try:
            parse_device(self.device)
        except BackendError as e:
            raise TrainError(str(e)) from None
        if self.resume and self.overwrite:
            raise TrainError("--resume continues a run and --overwrite starts it over: pass one of them")
        self._validate_scan()

    def _validate_scan(self) -> None:
        if not self.scan:
            return
        try:
            check_strategy(self.scan)
        except ValueError as e:
            raise TrainError(f"{e} (--scan)") from None
        if self.scan in fused_scans() and parse_device(self.device)[0] != "cuda":
            raise TrainError(f"--scan {self.scan} runs on a CUDA GPU only: add --device cuda, or leave --scan out")
        if self.scan == "cuda" and importlib.util.find_spec("mamba_ssm") is None:
            raise TrainError("--scan cuda needs mamba_ssm's CUDA kernels (pip install mamba-ssm on a CUDA machine)")


class TrainError(UserError, ValueError):
    """A training run cannot start as asked."""


# What a run folder holds; an existing one is continued (--resume) or replaced (--overwrite), never silently.
RUN_FILES = ("best.pth", "last.pth", "metrics.csv", "metrics.json")


def _claim_run_folder(out: Path, cfg: TrainConfig) -> None:
    if out.exists() and not out.is_dir():
        raise TrainError(f"{out}: is a file — choose a run folder with -o")
    earlier = [name for name in RUN_FILES if (out / name).exists()]
    if earlier and not (cfg.resume or cfg.overwrite):
        raise TrainError(
            f"{out}: already holds a training run ({', '.join(earlier)}) — pass --resume to continue it, "
            "--overwrite to start over, or choose another -o"
        )
    out.mkdir(parents=True, exist_ok=True)


def _distributed(cfg: TrainConfig) -> tuple[int, int]:
    """(rank, world size); under torchrun (WORLD_SIZE > 1) joins the process group first: NCCL for CUDA devices
    (after this process's GPU is selected), gloo on the CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    if not dist.is_initialized():
        on_cuda = parse_device(cfg.device)[0] == "cuda"
        if on_cuda and torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if on_cuda else "gloo")
    return dist.get_rank(), world


def epoch_order(n: int, epoch: int, seed: int, rank: int = 0, world: int = 1) -> torch.Tensor:
    """This rank's training images for ``epoch`` (indices into the split): one shuffle drawn from (seed, epoch), the
    same on every rank and after a resume, dealt out so that the ranks' shards are disjoint and equally long."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    return order[: n - n % world][rank::world]


def _agree(flag: bool, world: int, device: torch.device) -> bool:
    """Rank 0's ``flag``, on every rank (a collective: every rank calls it)."""
    if world == 1:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.broadcast(value, src=0)
    return bool(value.item())


def _mean_over_ranks(value: torch.Tensor, world: int) -> float:
    if world > 1:
        value = value.detach().clone()
        dist.all_reduce(value)
        value /= world
    return float(value)


def _device(cfg: TrainConfig, rank: int) -> torch.device:
    kind, index = parse_device(cfg.device)
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise TrainError(f"--device {cfg.device}: PyTorch sees no CUDA GPU — use --device cpu")
        local = int(os.environ.get("LOCAL_RANK", index))  # torchrun: one GPU per process
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def _default_scan(device: torch.device) -> str:
    """Fastest exact scan for training (benchmarks/train_speed.py on an H100: triton 7.4 s/epoch, blelloch 8.6)."""
    if device.type != "cuda":
        return "chunked"
    return "triton" if importlib.util.find_spec("triton") else "blelloch"


def _evaluate(model: torch.nn.Module, images: torch.Tensor, masks: torch.Tensor, loss_fn, batch: int) -> dict[str, float]:
    model.eval()
    acc = ConfusionAccumulator(0.5)
    losses = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            prob = model(images[i : i + batch])
            losses.append(float(loss_fn(prob, masks[i : i + batch])) * len(prob))
            for p, t in zip(prob[:, 0].float().cpu().numpy(), masks[i : i + batch, 0].cpu().numpy()):
                acc.add(p, t)
    m = acc.result()
    return {"val_loss": sum(losses) / len(images), "val_dsc": m["dsc"], "val_iou": m["iou"], "val_mean_dice": m["mean_dice"]}


def train(cfg: TrainConfig, log=print, on_progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Train (or, with ``cfg.teacher``, distill) and write best.pth, last.pth and metrics.{csv,json} to ``cfg.out``."""
    cfg.validate()
    out = Path(cfg.out)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 writes the run folder
        return _train(cfg, out, log, on_progress)
    _claim_run_folder(out, cfg)
    lock = FileLock(str(out / ".ultralbm.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise TrainError(f"{out}: another training run is writing to this folder — wait for it, or choose another -o") from None
    try:
        return _train(cfg, out, log, on_progress)
    finally:
        lock.release()


def _train(cfg: TrainConfig, out: Path, log, on_progress: Callable[[int, int], None] | None) -> dict[str, Any]:
    rank, world = _distributed(cfg)
    try:
        return _train_ranked(cfg, out, log if rank == 0 else (lambda _: None), on_progress, rank, world)
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _train_ranked(cfg: TrainConfig, out: Path, log, on_progress: Callable[[int, int], None] | None, rank: int, world: int) -> dict[str, Any]:
    device = _device(cfg, rank)
    torch.manual_seed(cfg.seed + rank)
    data = Path(cfg.data)
    train_x, train_y = load_split(data / "train", limit=cfg.limit)
    val_x, val_y = load_split(data / "val", limit=cfg.limit) if rank == 0 else (train_x[:0], train_y[:0])  # rank 0 validates
    if len(train_x) < world:
        raise TrainError(f"{data / 'train'}: {len(train_x)} training images for {world} processes — each needs one at least")
    train_x, train_y, val_x, val_y = (t.to(device) for t in (train_x, train_y, val_x, val_y))

    scan = cfg.scan or _default_scan(device)
    model = create_model(cfg.variant, scan=scan).to(device)
    teacher = None
    if cfg.teacher:
        teacher = load_checkpoint(cfg.teacher).model.to(device).set_scan_strategy(scan)
        teacher.eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.t_max, eta_min=cfg.eta_min)
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp and device.type == "cuda")
    hard = BceDiceLoss()
    hybrid = HybridDistillationLoss().to(device) if teacher is not None else None

    history: list[dict[str, float]] = []
    start_epoch, best_loss = 1, float("inf")
    last = out / "last.pth"
    if cfg.resume and last.is_file():
        state = torch.load(last, map_location="cpu", weights_only=True)
        model.load_state_dict(state["state_dict"])
        optimizer.load_state_dict(state["training_state"]["optimizer"])
        scheduler.load_state_dict(state["training_state"]["scheduler"])
        start_epoch = int(state["training_state"]["epoch"]) + 1
        best_loss = float(state["training_state"]["best_val_loss"])
        history = list(state["training_state"]["history"])
        log(f"resumed from {last} at epoch {start_epoch}")
    net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) if world > 1 else model
    # Depthwise kernels (C, 1, k, k) have a free stride on their size-1 axis; DDP then copies their gradients into its
    # buckets instead of viewing them (34k parameters: nothing to gain) and would say so on every rank.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")

    def eager_step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, enabled=cfg.amp and device.type == "cuda"):
            prob = net(x)
            if teacher is not None:
                with torch.no_grad():
                    target_prob = teacher(x)
        # The losses run outside autocast, in fp32: BCE on probabilities is refused under autocast.
        loss = hybrid(prob.float(), target_prob.float(), y)[0] if hybrid is not None else hard(prob.float(), y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        return loss.detach()

    # A recorded step needs one CUDA process (DDP's collectives are not recorded) and no loss scaling (GradScaler
    # reads its overflow flag on the CPU).
    train_step: Step = eager_step
    if cfg.cuda_graph and device.type == "cuda" and world == 1 and not cfg.amp:
        prepare_optimizer_for_graph(optimizer, device)
        train_step = GraphedStep(eager_step)

    generator = torch.Generator(device=device).manual_seed(cfg.seed + rank)
    provenance = {
        "toolkit_version": __version__, "data": str(data), "n_train": len(train_x), "n_val": len(val_x),
        "recipe": {**{k: v for k, v in asdict(cfg).items() if k not in ("data", "out", "resume")}, "scan": scan},
        "parameters": count_parameters(model), "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "world_size": world, "global_batch": cfg.batch_size * world, "cuda_graph": train_step is not eager_step,
    }  # fmt: skip
    started = time.perf_counter()
    for epoch in range(start_epoch, cfg.epochs + 1):
        net.train()
        t0 = time.perf_counter()
        order = epoch_order(len(train_x), epoch, cfg.seed, rank, world).to(device)
        losses = []
        steps = range(0, len(order) - cfg.batch_size + 1 if len(order) >= cfg.batch_size else 1, cfg.batch_size)
        for step, i in enumerate(steps):
            idx = order[i : i + cfg.batch_size]
            x, y = augment(train_x[idx], train_y[idx], generator)
            losses.append(train_step(x, y))
            if on_progress and rank == 0:  # batches of this run, across epochs (the CLI's bar)
                on_progress((epoch - start_epoch) * len(steps) + step + 1, (cfg.epochs - start_epoch + 1) * len(steps))
        scheduler.step()
        train_loss = _mean_over_ranks(torch.stack(losses).mean(), world)
        seconds = time.perf_counter() - t0
        if rank != 0:
            if _agree(False, world, device):
                break
            continue
        metrics = {"epoch": epoch, "train_loss": train_loss, "lr": float(optimizer.param_groups[0]["lr"]), "seconds": seconds,
                   **_evaluate(model, val_x, val_y, hard, 32)}  # fmt: skip
        history.append(metrics)
        if metrics["val_loss"] < best_loss:
            best_loss = metrics["val_loss"]
            save_checkpoint(out / "best.pth", model, cfg.variant, {**provenance, "epoch": epoch, **metrics})
        save_checkpoint(last, model, cfg.variant, {**provenance, "epoch": epoch, **metrics}, extra={"training_state": {
            "epoch": epoch, "best_val_loss": best_loss, "history": history,
            "optimizer": portable_optimizer_state(optimizer), "scheduler": scheduler.state_dict()}})  # fmt: skip
        _write_history(out, history)
        log(
            f"epoch {epoch}/{cfg.epochs}  train {train_loss:.4f}  val {metrics['val_loss']:.4f}  "
            f"DSC {metrics['val_dsc'] * 100:.2f}  IoU {metrics['val_iou'] * 100:.2f}  {seconds:.1f} s"
        )
        stop = bool(cfg.stop_after_minutes) and time.perf_counter() - started > 60 * cfg.stop_after_minutes and epoch < cfg.epochs
        if stop:
            log(f"stopping after epoch {epoch} (--stop-after-minutes {cfg.stop_after_minutes}); continue with --resume")
        if _agree(stop, world, device):
            break
    return {"history": history, "best_val_loss": best_loss, "out": str(out), "rank": rank}


def _write_history(out: Path, history: list[dict[str, float]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(history[0]))
    writer.writeheader()
    writer.writerows(history)
    write_text_atomic(out / "metrics.csv", buf.getvalue())
    write_text_atomic(out / "metrics.json", json.dumps(history, indent=1) + "\n")
