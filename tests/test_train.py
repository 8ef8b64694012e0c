"""Training on real ISIC 2017 images on the CPU: a few steps, resume, distillation, and the losses."""

import csv
import os
import signal
import subprocess
import sys

import pytest
import torch

from conftest import DATA
from ultralbm_edge.checkpoint import load_checkpoint
from ultralbm_edge.train import TrainConfig, train
from ultralbm_edge.train.trainer import epoch_order
from ultralbm_edge.train.data import augment, load_split
from ultralbm_edge.train.losses import BceDiceLoss, HybridDistillationLoss

ISIC = DATA / "isic2017"


def test_train_resume_and_distill(tmp_path):
    cfg = dict(data=str(ISIC), epochs=1, batch_size=2, limit=4, seed=0)
    train(TrainConfig(out=str(tmp_path / "run"), **cfg), log=lambda _: None)
    cfg["epochs"] = 2
    messages = []
    train(TrainConfig(out=str(tmp_path / "run"), resume=True, **cfg), log=messages.append)
    assert messages[0].startswith("resumed from") and "epoch 2/2" in messages[1]
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    best = load_checkpoint(tmp_path / "run" / "best.pth")
    assert best.source_format == "ultralbm-edge/1" and best.variant == "ultralbm"
    assert best.provenance["recipe"]["lr"] == 1e-3 and best.provenance["n_train"] == 4
    student = tmp_path / "student"
    train(TrainConfig(out=str(student), variant="ultralbm-t", teacher=str(tmp_path / "run" / "best.pth"), scan="blelloch", **cfg),
          log=lambda _: None)  # fmt: skip
    distilled = load_checkpoint(student / "best.pth")
    assert distilled.variant == "ultralbm-t" and distilled.provenance["recipe"]["scan"] == "blelloch"  # --scan is used
    assert best.provenance["recipe"]["scan"] == "chunked"  # the CPU's default


def test_augment_keeps_image_and_mask_aligned():
    images, masks = load_split(ISIC / "val", limit=4)
    g = torch.Generator().manual_seed(1)
    # A mask stacked as a fourth image channel must move exactly like the mask.
    x, y = augment(images, (images[:, :1] > 128).float(), g)
    assert torch.equal((x[:, :1] > 128).float(), y)
    assert not torch.equal(x, images)  # something was flipped or rotated
    assert x.shape == images.shape and y.shape == masks.shape


def test_losses_reward_the_truth():
    _, masks = load_split(ISIC / "val", limit=2)
    loss = BceDiceLoss()
    good, bad = masks.clamp(0.01, 0.99), (1 - masks).clamp(0.01, 0.99)
    assert loss(good, masks) < loss(bad, masks)
    hybrid = HybridDistillationLoss()
    same, parts = hybrid(good, good, masks)
    other, _ = hybrid(bad, good, masks)
    assert same < other and parts["gradient"] < 1e-6 and abs(parts["attention"]) < 1e-6


def test_bundled_checkpoints_segment_ph2(tmp_path):
    """The bundled trained models (MODEL_CARD.md) stay accurate on the 30 PH2 val images, which none of them saw in
    training (floors a little below what they score: 0.897, 0.933, 0.903)."""
    from ultralbm_edge.runtime.backends import open_backend
    from ultralbm_edge.runtime.evaluate import evaluate

    for name, floor in (("ultralbm", 0.88), ("ultralbm-t", 0.90), ("ultralight-vm-unet", 0.88)):
        result = evaluate(open_backend(name, backend="torch"), DATA / "ph2" / "val")
        assert result["dsc"] >= floor, (name, result["dsc"])


def test_epoch_order_gives_each_rank_its_own_equal_shard():
    for n, world in ((31, 2), (16, 2), (17, 3), (8, 1)):
        shards = [epoch_order(n, 3, 42, rank, world) for rank in range(world)]
        assert {len(s) for s in shards} == {n // world}  # equal: every rank runs the same number of steps
        every = torch.cat(shards).tolist()
        assert len(set(every)) == len(every) and set(every) <= set(range(n))  # disjoint
        assert all(torch.equal(epoch_order(n, 3, 42, r, world), s) for r, s in enumerate(shards))  # same on every call
    assert torch.equal(torch.sort(epoch_order(16, 1, 42)).values, torch.arange(16))  # one process: every image
    assert not torch.equal(epoch_order(16, 1, 42), epoch_order(16, 2, 42))  # a new shuffle each epoch


def run_process_group(cmd: list[str], timeout: float, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run ``cmd`` in a session of its own; on a timeout (ranks that wait on each other forever) end torchrun and all
    its workers, not only torchrun."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        raise AssertionError(f"torchrun ran past {timeout} s (a rank waiting for another?)\n{stdout[-2000:]}{stderr[-3000:]}") from None
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def test_ddp_under_torchrun_with_gloo(tmp_path):
    """Two processes on the CPU (gloo): they train together, rank 0 alone logs and writes, rank 0's early stop
    (--stop-after-minutes) reaches the other rank (which would otherwise wait for it), and --resume continues."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "ultralbm_edge",
           "train", "--data", str(ISIC), "-o", str(out), "--epochs", "2", "--limit", "16", "-b", "2",
           "--stop-after-minutes", "0.0001"]  # fmt: skip
    res = run_process_group(cmd, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    assert res.stdout.count("epoch 1/2") == 1 and res.stdout.count("done: best val loss") == 1, res.stdout
    assert "stopping after epoch 1" in res.stdout and "epoch 2/2" not in res.stdout
    assert "Grad strides" not in res.stderr
    assert [int(r["epoch"]) for r in csv.DictReader(open(out / "metrics.csv"))] == [1]
    provenance = load_checkpoint(out / "last.pth").provenance
    assert (provenance["world_size"], provenance["global_batch"], provenance["n_train"]) == (2, 4, 16)
    # --resume: every rank continues from last.pth (the run stopped above), epoch 2 only.
    res = run_process_group([*cmd[:-2], "--resume"], timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    assert "resumed from" in res.stdout and "epoch 2/2" in res.stdout and "epoch 1/2" not in res.stdout, res.stdout
    assert [int(r["epoch"]) for r in csv.DictReader(open(out / "metrics.csv"))] == [1, 2]


def test_optimizer_state_of_a_recorded_run_resumes_on_the_cpu():
    """A recorded (CUDA-graph) run keeps its learning rate as a tensor and AdamW capturable; what it saves must load
    into a plain optimiser and step on the CPU (here the GPU run's preparation is applied on the CPU: the saved form is
    what matters)."""
    from ultralbm_edge.models import create_model
    from ultralbm_edge.train.step import portable_optimizer_state, prepare_optimizer_for_graph

    model = create_model("ultralbm-t", scan="chunked").train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    prepare_optimizer_for_graph(optimizer, torch.device("cpu"))
    assert isinstance(optimizer.param_groups[0]["lr"], torch.Tensor) and optimizer.param_groups[0]["capturable"]
    saved = portable_optimizer_state(optimizer)
    assert saved["param_groups"][0]["lr"] == pytest.approx(1e-3) and not saved["param_groups"][0]["capturable"]
    assert isinstance(optimizer.param_groups[0]["lr"], torch.Tensor)  # the live optimiser is left as it was
    plain = torch.optim.AdamW(model.parameters(), lr=5e-4)
    plain.load_state_dict(saved)
    model(torch.rand(1, 3, 64, 64) * 255).mean().backward()
    plain.step()
    assert plain.param_groups[0]["lr"] == pytest.approx(1e-3)
