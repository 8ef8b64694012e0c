import pytest
import torch

from ultralbm_edge.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ultralbm_edge.models import create_model


def test_official_state_dict_format(official_dir):
    ckpt = load_checkpoint(official_dir / "best.pth")
    assert ckpt.variant == "ultralbm" and ckpt.source_format == "official-state_dict"
    assert not ckpt.model.training


def test_official_resume_format_holds_the_same_model_kind(official_dir):
    ckpt = load_checkpoint(official_dir / "latest.pth")
    assert ckpt.source_format == "official-resume"
    raw = torch.load(official_dir / "latest.pth", map_location="cpu", weights_only=True)["model_state_dict"]
    for k, v in ckpt.model.state_dict().items():
        torch.testing.assert_close(v, raw[k])


def test_dataparallel_prefix(official_dir, tmp_path):
    sd = torch.load(official_dir / "best.pth", map_location="cpu", weights_only=True)
    torch.save({f"module.{k}": v for k, v in sd.items()}, tmp_path / "dp.pth")
    ckpt = load_checkpoint(tmp_path / "dp.pth")
    torch.testing.assert_close(ckpt.model.k.detach(), sd["k"])


def test_our_format_roundtrip_records_metadata(official_dir, tmp_path):
    ckpt = load_checkpoint(official_dir / "best.pth")
    save_checkpoint(tmp_path / "ours.pth", ckpt.model, "ultralbm", provenance={"data": "ph2/train", "epochs": 68})
    again = load_checkpoint(tmp_path / "ours.pth")
    assert again.source_format == "ultralbm-edge/1"
    assert again.provenance == {"data": "ph2/train", "epochs": 68}
    assert again.channels == [8, 16, 24, 32, 48, 64]
    for k, v in ckpt.model.state_dict().items():
        torch.testing.assert_close(again.model.state_dict()[k], v)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    # What an attacker ships: a torch.save file whose unpickling calls a function.
    torch.save({"encoder1.0.weight": _Payload(str(marker))}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(tmp_path / "evil.pth")
    assert not marker.exists()


def test_wrong_variant_names_missing_keys_and_lookalike(tmp_path):
    torch.save(create_model("ultralbm-t").state_dict(), tmp_path / "t.pth")
    assert load_checkpoint(tmp_path / "t.pth").variant == "ultralbm-t"
    with pytest.raises(CheckpointError, match=r"look like variant 'ultralbm-t'.*wrong shapes"):
        load_checkpoint(tmp_path / "t.pth", variant="ultralbm")


def test_truncated_state_dict_lists_missing_keys(official_dir, tmp_path):
    sd = torch.load(official_dir / "best.pth", map_location="cpu", weights_only=True)
    del sd["final.weight"]
    sd["extra.weight"] = torch.zeros(1)
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): \['final.weight'\].*unexpected keys \(1\)"):
        load_checkpoint(tmp_path / "bad.pth")


def test_foreign_and_missing_files(tmp_path):
    torch.save({"backbone.weight": torch.zeros(3)}, tmp_path / "resnet.pth")
    with pytest.raises(CheckpointError, match="not an UltraLBM-UNet checkpoint"):
        load_checkpoint(tmp_path / "resnet.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_checkpoint(tmp_path / "junk.pth")
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "nope.pth")
