"""The peers (UltraLight VM-UNet, ResMamba-ULite, DermoMamba): the official code's outputs reproduced from
official-format state_dicts loaded like any checkpoint, their checkpoints recognised, their sizes, their scan
forms, and training them.

The golden outputs come from the authors' own code (benchmarks/peers_golden.py; fixtures in tests/fixtures/peers,
see peer_fixtures.py). The reference scan is a Python loop over every pixel, about 10 s per image for the two
VMamba-based peers on two CPU cores (30 s with the chunked scan), so those run on the first fixture image (the
README gives all eight).
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from conftest import DATA
from peer_fixtures import load_golden, load_inputs, random_state_dict, write_official_checkpoint
from ultralbm_edge.checkpoint import Checkpoint, load_checkpoint
from ultralbm_edge.export import ExportError, resolve_scan
from ultralbm_edge.models import count_parameters, create_model, identify, list_models, model_spec
from ultralbm_edge.runtime.parity import compare

PEERS = ("ultralight-vm-unet", "resmamba-ulite", "dermomamba")
# Parameters: the official code's count (equal to ours), and what each paper reports.
PARAMETERS = {"ultralight-vm-unet": (49_457, "0.049M"), "resmamba-ulite": (3_274_019, "3.27M"), "dermomamba": (4_953_425, "< 5M")}
IMAGES = {"ultralight-vm-unet": 8, "resmamba-ulite": 1, "dermomamba": 1}


@pytest.fixture(scope="module")
def official_checkpoint(tmp_path_factory):
    """A peer's fixture weights, written as the official code saves them (a plain state_dict), loaded (once)."""
    folder = tmp_path_factory.mktemp("peers")

    @functools.cache
    def load(peer: str) -> Checkpoint:
        return load_checkpoint(write_official_checkpoint(peer, folder / f"{peer}.pth"))

    return load


@pytest.mark.parametrize("peer", PEERS)
def test_parameter_counts_match_the_papers(peer):
    count, paper = PARAMETERS[peer]
    assert count_parameters(create_model(peer)) == count
    assert f"({paper} params" in model_spec(peer).paper


def test_every_model_is_recognised_from_its_own_weights_only():
    for name in list_models():
        assert identify(create_model(name).state_dict()) == [name]


@pytest.mark.parametrize("peer", PEERS)
def test_fixture_weights_have_the_official_keys_and_shapes_in_order(peer):
    ours = create_model(peer).state_dict()
    official = load_golden(peer)["spec"]
    assert [(k, tuple(shape)) for k, shape, _ in official] == [(k, tuple(v.shape)) for k, v in ours.items()]


@pytest.mark.parametrize("strategy", ["sequential", "chunked"])
@pytest.mark.parametrize("peer", PEERS)
def test_official_outputs_are_reproduced(official_checkpoint, peer, strategy):
    ckpt = official_checkpoint(peer)
    assert ckpt.variant == peer and ckpt.source_format == "official-state_dict"
    golden = load_golden(peer)
    images, _ = load_inputs()
    n = IMAGES[peer]
    with torch.no_grad(), ckpt.model.using_scan(strategy):  # one image per forward, as the golden run
        probs = torch.cat([ckpt.model(torch.from_numpy(images[i : i + 1])) for i in range(n)]).numpy()
    report = compare(probs, golden["probs"][:n], reference=f"the official {peer} ({golden['meta']['official_commit'][:7]})")
    assert report.ok, report.summary()
    assert golden["probs"][:n].std() > 0.01  # the golden outputs are not flat: the comparison can fail


@pytest.mark.parametrize("peer", ["resmamba-ulite", "dermomamba"])
def test_lightning_and_data_parallel_checkpoints_load(tmp_path, peer):
    """Their Lightning ModelCheckpoint(save_weights_only=True) stores the Segmentor's ``model.`` keys under
    ``state_dict``, beside the epoch and loop state."""
    golden = load_golden(peer)
    weights = random_state_dict(golden["spec"], golden["seed"])
    lightning = {"epoch": 3, "global_step": 1200, "pytorch-lightning_version": "2.1.0",
                 "state_dict": {f"model.{k}": v for k, v in weights.items()}, "loops": {"fit_loop": {"epoch_progress": {}}}}  # fmt: skip
    torch.save(lightning, tmp_path / "ckpt0.9000.ckpt")
    torch.save({f"module.{k}": v for k, v in weights.items()}, tmp_path / "dp.pth")
    for name in ("ckpt0.9000.ckpt", "dp.pth"):
        ckpt = load_checkpoint(tmp_path / name)
        assert ckpt.variant == peer
        assert all(torch.equal(ckpt.model.state_dict()[k], v) for k, v in weights.items())


def test_scan_forms_follow_the_layers():
    """The registry's lowered_scan fact agrees with the layers, and the export picks and refuses accordingly."""
    for name in list_models():
        gated = all(layer.gated_scan for layer in create_model(name).scan_layers())
        assert model_spec(name).lowered_scan == gated, name
    assert resolve_scan("auto", "onnxruntime", "ultralight-vm-unet") == resolve_scan("auto", "onnxruntime") == "portable"
    for peer in ("resmamba-ulite", "dermomamba"):
        for target in ("onnxruntime", "tensorrt", "openvino"):
            assert resolve_scan("auto", target, peer) == "blelloch"
        for form in ("portable", "linear_attention"):
            with pytest.raises(ExportError, match="without a gate"):
                resolve_scan(form, "onnxruntime", peer)


def test_resmamba_images_do_not_depend_on_their_batch_unless_asked():
    """The official PSA softmaxes over the batch; ours computes every image as in a batch of one by default."""
    golden = load_golden("resmamba-ulite")
    model = create_model("resmamba-ulite", scan="blelloch")
    model.load_state_dict(random_state_dict(golden["spec"], golden["seed"]))
    x = torch.from_numpy(load_inputs()[0][:2, :, ::8, ::8].copy())  # 32x32: the coupling does not need the full size
    with torch.no_grad():
        alone = torch.cat([model(x[:1]), model(x[1:])])
        torch.testing.assert_close(model(x), alone, rtol=0, atol=1e-5)
        model.psa_softmax_over_batch = True
        assert (model(x) - alone).abs().max() > 1e-4


def test_a_peer_trains_with_the_toolkit(tmp_path):
    """``train --variant ultralight-vm-unet`` on the CPU: one epoch on two real images, a loadable checkpoint."""
    from ultralbm_edge.train import TrainConfig, train

    train(TrainConfig(data=str(DATA / "isic2017"), out=str(tmp_path), variant="ultralight-vm-unet", epochs=1,
                      batch_size=2, limit=2, seed=0), log=lambda _: None)  # fmt: skip
    best = load_checkpoint(tmp_path / "best.pth")
    assert best.variant == "ultralight-vm-unet" and best.provenance["parameters"] == 49_457
    assert np.isfinite(best.provenance["val_loss"])
