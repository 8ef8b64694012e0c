"""Flip test-time augmentation (runtime/tta.py): what it averages, on any backend, and the CLI's --tta."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import DATA, run_cli
from ultralbm_edge.runtime.backends import Backend, open_backend
from ultralbm_edge.runtime.dataset import load_images
from ultralbm_edge.runtime.metadata import ModelMetadata
from ultralbm_edge.runtime.tta import FLIP_TTA, flip_average, with_flip_tta

S = 32


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


class FakeBackend(Backend):
    """A model in numpy; every image it is given is recorded. ``fixed_batch``/``max_batch`` as an engine's."""

    name = "fake"

    def __init__(self, fn, max_batch: int | None = None, fixed_batch: bool = False) -> None:
        self.fn, self.max_batch, self.fixed_batch = fn, max_batch, fixed_batch
        self.path = Path("fake.onnx")
        self.metadata = ModelMetadata(variant="fake", image_size=S)
        self.seen: list[np.ndarray] = []

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        self.seen += list(batch)
        return self.fn(batch)

    def describe(self) -> dict[str, str]:
        return {"device": "cpu"}


def symmetric_model(x: np.ndarray) -> np.ndarray:
    """Flip-equivariant by construction: a 3x3 box filter (edge padding) of the channel mean, then a sigmoid."""
    g = np.pad(x.mean(axis=1, keepdims=True), ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")
    box = sum(g[:, :, i : i + S, j : j + S] for i in range(3) for j in range(3)) / 9
    return _sigmoid(box / 50 - 2.5)


# A fixed position-dependent weight with no symmetry: the model's output depends on where a pixel is.
_RAMP = np.random.default_rng(7).normal(size=(S, S)).astype(np.float32)


def asymmetric_model(x: np.ndarray) -> np.ndarray:
    return _sigmoid(x[:, :1] / 100 * _RAMP + x[:, 1:2] / 200 - 1)


@pytest.fixture
def batch() -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 255, size=(3, 3, S, S)).astype(np.float32)


@pytest.mark.parametrize("limits", [{}, {"max_batch": 5, "fixed_batch": True}], ids=["any batch", "fixed batch 5"])
def test_flip_equivariant_model_is_unchanged(batch, limits):
    backend = FakeBackend(symmetric_model, **limits)
    plain = backend.run(batch)
    averaged = with_flip_tta(backend).run(batch)
    assert averaged.shape == plain.shape and averaged.dtype == np.float32
    np.testing.assert_allclose(averaged, plain, rtol=0, atol=1e-6)
    # and not because the maps were all alike: the mirror images of these inputs give different maps
    assert np.abs(plain - symmetric_model(batch[..., ::-1])).max() > 1e-2


@pytest.mark.parametrize("limits", [{}, {"max_batch": 5, "fixed_batch": True}], ids=["any batch", "fixed batch 5"])
def test_asymmetric_model_averages_the_four_unflipped_maps(batch, limits):
    backend = FakeBackend(asymmetric_model, **limits)
    f = asymmetric_model
    expected = (
        f(batch)
        + f(batch[..., ::-1])[..., ::-1]  # left-right
        + f(batch[..., ::-1, :])[..., ::-1, :]  # upside down
        + f(batch[..., ::-1, ::-1])[..., ::-1, ::-1]  # both
    ) / 4
    got = with_flip_tta(backend).run(batch)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    assert np.abs(got - f(batch)).max() > 1e-2  # the average is not the plain map for this model
    # The model saw each image in exactly the four orientations (plus, on the fixed-batch engine, the padding
    # copies of the last one), never anything else.
    views = [v for img in batch for v in (img, img[:, :, ::-1], img[:, ::-1, :], img[:, ::-1, ::-1])]
    unique_seen = {v.tobytes() for v in backend.seen}
    assert unique_seen == {np.ascontiguousarray(v).tobytes() for v in views}
    assert len(backend.seen) == (4 * len(batch) if not backend.fixed_batch else 15)  # 12 padded to 3 calls of 5


def test_flip_average_calls_the_model_once_with_all_four_views(batch):
    calls = []

    def run(x: np.ndarray) -> np.ndarray:
        calls.append(len(x))
        return asymmetric_model(x)

    flip_average(run, batch)
    assert calls == [4 * len(batch)]


def test_wrapper_keeps_the_model_and_says_so():
    backend = FakeBackend(symmetric_model)
    assert with_flip_tta(backend, enabled=False) is backend
    wrapped = with_flip_tta(backend)
    assert wrapped.metadata is backend.metadata and wrapped.path == backend.path
    assert wrapped.test_time_augmentation == FLIP_TTA and wrapped.describe()["test_time_augmentation"] == FLIP_TTA
    assert backend.test_time_augmentation is None


def test_cli_tta_end_to_end_on_two_real_images(onnx_model, tmp_path):
    """predict --tta writes what flip_average of the same ONNX model gives; evaluate --tta scores it and says so;
    a folder written without TTA is not silently resumed with it."""
    names = ["IMD393", "IMD394"]
    data = tmp_path / "data"
    for sub, ext in (("images", ".jpg"), ("masks", ".png")):
        (data / sub).mkdir(parents=True)
        for n in names:
            shutil.copy(DATA / "ph2" / "val" / sub / f"{n}{ext}", data / sub / f"{n}{ext}")
    res = run_cli("predict", str(data / "images"), "-m", str(onnx_model), "-o", str(tmp_path / "tta"), "--tta", "--save-probs")
    assert res.returncode == 0, res.stderr
    got = np.stack([np.load(tmp_path / "tta" / "probs" / f"{n}.npy") for n in names])

    backend = open_backend(onnx_model)
    x = load_images(data / "images", 2, 256).images  # sorted by name, as names
    expected = flip_average(backend.run, x)[:, 0]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    assert np.abs(got - backend.run(x)[:, 0]).max() > 1e-4  # TTA changed the maps of this (real) model

    res = run_cli("predict", str(data / "images"), "-m", str(onnx_model), "-o", str(tmp_path / "tta"))
    assert res.returncode == 2 and "test_time_augmentation" in res.stderr

    for flag, key in (("--tta", FLIP_TTA), ("--no-tta", None)):
        out = tmp_path / f"eval{flag}.json"
        res = run_cli("evaluate", "--data", str(data), "-m", str(onnx_model), flag, "--json", str(out))
        assert res.returncode == 0, res.stderr
        result = json.loads(out.read_text())
        assert result["n_images"] == 2 and result.get("model_test_time_augmentation") == key
        per_image = {s["image"]: s["dice_raw"] for s in result["per_image"]}
        assert set(per_image) == {f"{n}.jpg" for n in names}


def test_tta_with_ray_is_refused_in_one_line(tmp_path):
    image = DATA / "ph2" / "val" / "images" / "IMD393.jpg"
    res = run_cli("predict", str(image), "-o", str(tmp_path / "out"), "--ray", "--tta")
    assert res.returncode == 2 and "--tta is not available with --ray" in res.stderr
    assert not (tmp_path / "out").exists()
