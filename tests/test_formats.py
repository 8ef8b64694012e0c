"""The format table: every row round-trips the bundled model through its exporter and its backend (as the
ultralytics exporter tests do), so a new runtime or export target is tested by being registered; and every
registered network round-trips through the ONNX export, so a new network is tested by being registered."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from peer_fixtures import FIXTURES, write_official_checkpoint
from ultralbm_edge.assets import SAMPLE_IMAGES
from ultralbm_edge.checkpoint import load_checkpoint, save_checkpoint
from ultralbm_edge.export import export_model, reference_probs
from ultralbm_edge.models import create_model, list_models
from ultralbm_edge.runtime.backends import open_backend
from ultralbm_edge.runtime.backends.tensorrt_env import TensorRTError, current_gpu, load_tensorrt
from ultralbm_edge.runtime.dataset import load_images
from ultralbm_edge.runtime.formats import FORMATS, UnknownFormat, format_for, format_named
from ultralbm_edge.runtime.model_files import ModelNotFound, resolve_model
from ultralbm_edge.runtime.parity import compare


def _why_engines_cannot_run() -> str | None:
    try:
        trt = load_tensorrt()
        _, sm = current_gpu()
    except TensorRTError as e:
        return str(e)
    return "TensorRT-RTX's runtime refuses compute capability 9.0" if trt.package == "tensorrt_rtx" and sm == (9, 0) else None


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
def test_every_row_names_importable_code(fmt):
    why = _missing_package(fmt)
    if why and fmt.name != "tensorrt":  # the TensorRT modules import without TensorRT; it is loaded on use
        pytest.skip(why)
    for target in filter(None, (fmt.backend, fmt.exporter)):
        module, attribute = target.split(":")
        assert callable(getattr(importlib.import_module(module), attribute)), target
    assert all(s.startswith(".") and s == s.lower() for s in fmt.suffixes)


def test_suffixes_and_names_resolve_and_unknown_ones_are_named(tmp_path):
    for fmt in FORMATS:
        assert format_named(fmt.name) is fmt and all(format_for(tmp_path / f"m{s}") is fmt for s in fmt.suffixes)
    with pytest.raises(UnknownFormat, match="'.trt'.*use .onnx"):
        format_for(tmp_path / "m.trt")


def _missing_package(fmt) -> str | None:
    """Why this row's exporter or backend cannot run here (a third-party package of an extra is not installed), or
    None. Our own modules must always import: only a missing foreign package skips."""
    try:
        for target in filter(None, (fmt.backend, fmt.exporter)):
            importlib.import_module(target.split(":")[0])
        if fmt.name == "tensorrt":
            load_tensorrt()
        if fmt.name == "litert":
            importlib.import_module("litert_torch")  # the exporter imports it when called
    except ModuleNotFoundError as e:
        if (e.name or "").startswith("ultralbm_edge"):
            raise
        return f"{fmt.name}: {e} — {fmt.install}" + (" (exporter: 'ultralbm-edge[litert-export]')" if fmt.name == "litert" else "")
    except TensorRTError as e:
        return str(e)
    return None


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
def test_every_format_round_trips_through_its_backend(fmt, tmp_path, format_export):
    ckpt = load_checkpoint(resolve_model("ultralbm", "torch"))
    if fmt.exporter is None:
        path = resolve_model("ultralbm", "torch")
    else:
        why = _missing_package(fmt)
        if why:
            pytest.skip(why)
        if fmt.name == "tensorrt":
            path = tmp_path / f"model{fmt.suffixes[0]}"
            export_model(ckpt, path, format=fmt.name, dynamic_batch=True)
        else:
            path = format_export(fmt.name).path
    assert format_for(path) is fmt
    why_not = _why_engines_cannot_run() if fmt.name == "tensorrt" else None
    if why_not:  # built here, but nothing here can execute it: opening must say so, naming the file
        with pytest.raises(TensorRTError, match=str(path.name)):
            open_backend(path)
        pytest.skip(f"engine built; not executed: {why_not}")
    images = load_images(SAMPLE_IMAGES, 4, 256).images
    report = compare(open_backend(path).run(images), reference_probs(ckpt.model, images))
    assert report.ok, report.summary()


def _weights_of(name: str, folder: Path) -> Path:
    """A peer's fixture weights (official format), else the bundled checkpoint, else an untrained one."""
    if (FIXTURES / f"{name}.npz").is_file():
        return write_official_checkpoint(name, folder / f"{name}.pth")
    try:
        return resolve_model(name, "torch")
    except ModelNotFound:
        save_checkpoint(folder / f"{name}.pth", create_model(name), name)
        return folder / f"{name}.pth"


@pytest.mark.parametrize("name", list_models())
def test_every_model_round_trips_through_onnxruntime(name, tmp_path):
    """Each registered network through the export pipeline (its own scan form, parity gate on) into ONNX Runtime.
    64x64, batch 1 and one image keep the large peers' graphs quick to trace and run."""
    ckpt = load_checkpoint(_weights_of(name, tmp_path))
    path = tmp_path / "model.onnx"
    result = export_model(ckpt, path, format="onnxruntime", image_size=64, parity_count=1)  # refused if not exact
    assert result.parity.ok and result.parity.n_images == 1, result.parity.summary()
    meta = open_backend(path).metadata
    assert (meta.variant, meta.image_size, meta.scan_strategy) == (name, 64, result.metadata.scan_strategy)
