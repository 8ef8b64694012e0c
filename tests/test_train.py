"""Training on real ISIC 2017 images on the CPU: a few steps, resume, distillation, and the losses."""

import csv

import torch

from conftest import DATA
from ultralbm_edge.checkpoint import load_checkpoint
from ultralbm_edge.train import TrainConfig, train
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
    train(TrainConfig(out=str(student), variant="ultralbm-t", teacher=str(tmp_path / "run" / "best.pth"), **cfg), log=lambda _: None)
    assert load_checkpoint(student / "best.pth").variant == "ultralbm-t"


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
    """The bundled trained models (MODEL_CARD.md) stay accurate on the 30 PH2 val images, which neither saw in
    training (floors a little below what they score)."""
    from ultralbm_edge.runtime.backends import open_backend
    from ultralbm_edge.runtime.evaluate import evaluate

    for name, floor in (("ultralbm", 0.88), ("ultralbm-t", 0.85)):
        result = evaluate(open_backend(name, backend="torch"), DATA / "ph2" / "val")
        assert result["dsc"] >= floor, (name, result["dsc"])
