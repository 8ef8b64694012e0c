"""TensorRT: every exported scan strategy parses and builds ahead of time (TensorRT-RTX builds on a CPU-only
machine); engines carry sidecars; loading checks them. No engine is *executed* here: TensorRT-RTX's runtime
needs a supported GPU (not this CI machine, and not the H100/H200 it refuses)."""

import json

import numpy as np
import pytest

from conftest import run_cli
from ultralbm_edge.export import ORT_ONLY_SCANS, export_onnx, export_scans
from ultralbm_edge.runtime.backends import open_backend
from ultralbm_edge.runtime.backends.tensorrt_env import TensorRTError, current_gpu, load_tensorrt
from ultralbm_edge.runtime.files import file_sha256

try:
    TRT = load_tensorrt()
except TensorRTError as e:
    TRT = None
    WHY = str(e)

needs_trt = pytest.mark.skipif(TRT is None, reason="neither tensorrt nor tensorrt_rtx is installed (pip install '.[rtx]')")
pytestmark = [pytest.mark.tensorrt, needs_trt]


def _gpu_that_runs_engines() -> str | None:
    try:
        _, sm = current_gpu()
    except TensorRTError as e:
        return str(e)
    if TRT.package == "tensorrt_rtx" and sm == (9, 0):
        return "TensorRT-RTX's runtime refuses compute capability 9.0"
    return None


@pytest.fixture(scope="module")
def trt_onnx(official_dir, tmp_path_factory):
    """The official checkpoint exported for TensorRT (auto scan for that target), dynamic batch."""
    out = tmp_path_factory.mktemp("trt") / "official.onnx"
    return export_onnx(official_dir / "best.pth", out, target="tensorrt", dynamic_batch=True).path


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("scan", [s for s in export_scans() if s not in ORT_ONLY_SCANS])
def test_every_tensorrt_strategy_parses_and_builds(exported_scans, scan, precision, tmp_path):
    from ultralbm_edge.export.tensorrt import build_engine

    result = build_engine(exported_scans[scan].path, tmp_path / "check.engine", precision=precision)
    assert result.path.stat().st_size > 100_000


def test_onnx_runtime_only_form_is_rejected_with_the_remedy(exported_scans):
    from ultralbm_edge.export.tensorrt import build_engine

    with pytest.raises(TensorRTError, match="LinearAttention.*re-export it for TensorRT with .*--target tensorrt"):
        build_engine(exported_scans["linear_attention"].path)


def test_export_engine_shortcut(tmp_path):
    res = run_cli("export", "-m", "ultralbm-t", "-o", str(tmp_path / "t.onnx"), "--engine", "fp16", "--no-check")
    assert res.returncode == 0, res.stderr
    assert "scan=blelloch" in res.stdout and (tmp_path / "t.fp16.engine").stat().st_size > 100_000
    side = json.loads((tmp_path / "t.fp16.engine.json").read_text())
    assert side["precision"] == "fp16" and side["metadata"]["variant"] == "ultralbm-t"


def test_fp32_fp16_int8_engines_and_sidecars(trt_onnx, isic_val, tmp_path):
    from ultralbm_edge.calibration import quantize_int8
    from ultralbm_edge.export.tensorrt import build_engine

    int8_onnx = quantize_int8(trt_onnx, isic_val / "images", tmp_path / "m.int8.onnx", method="minmax", num_images=16).path
    for precision, source in (("fp32", trt_onnx), ("fp16", trt_onnx), ("int8", int8_onnx)):
        result = build_engine(source, tmp_path / f"m.{precision}.engine", precision=precision, max_batch=4)
        side = json.loads((tmp_path / f"m.{precision}.engine.json").read_text())
        assert result.path.stat().st_size > 100_000
        assert side["precision"] == precision and side["metadata"]["precision"] == precision
        assert side["tensorrt_package"] == TRT.package and side["tensorrt_version"] == TRT.version
        assert side["batch"] == {"min": 1, "opt": 4, "max": 4}
        assert side["source_onnx_sha256"] == file_sha256(source)
        assert side["metadata"]["variant"] == "ultralbm" and side["metadata"]["threshold"] == 0.5


def test_engine_errors_are_specific(trt_onnx, tmp_path):
    from ultralbm_edge.export.tensorrt import build_engine

    if TRT.strongly_typed_only:
        with pytest.raises(TensorRTError, match="takes INT8 only from Q/DQ nodes .*ultralbm-edge calibrate"):
            build_engine(trt_onnx, tmp_path / "x.engine", precision="int8")
    with pytest.raises(TensorRTError, match="unknown precision 'int4'"):
        build_engine(trt_onnx, tmp_path / "x.engine", precision="int4")
    with pytest.raises(TensorRTError, match="output directory .* does not exist"):
        build_engine(trt_onnx, tmp_path / "missing" / "x.engine")
    with pytest.raises(TensorRTError, match="unknown TensorRT package"):
        build_engine(trt_onnx, tmp_path / "x.engine", package="tensorflow")


def test_loading_checks_the_sidecar(trt_onnx, tmp_path):
    from ultralbm_edge.export.tensorrt import build_engine

    engine = build_engine(trt_onnx, tmp_path / "m.engine", max_batch=2).path
    sidecar = tmp_path / "m.engine.json"
    good = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps({**good, "tensorrt_version": "0.9.0"}))
    with pytest.raises(TensorRTError, match=rf"built with {TRT.package} 0.9.0; this machine has {TRT.package} {TRT.version}"):
        open_backend(engine)
    sidecar.unlink()
    with pytest.raises(TensorRTError, match="no sidecar m.engine.json"):
        open_backend(engine)
    sidecar.write_text(json.dumps(good))
    why_not = _gpu_that_runs_engines()
    if why_not:  # this machine cannot execute it: the backend must say why, naming the engine
        with pytest.raises(TensorRTError, match=r"m\.engine: "):
            open_backend(engine)
    else:
        backend = open_backend(engine)
        probs = backend.run(np.zeros((3, 3, 256, 256), np.float32))
        assert probs.shape == (3, 1, 256, 256)


def test_engine_runs_and_matches_onnx(trt_onnx, ph2_val_images, tmp_path):
    why_not = _gpu_that_runs_engines()
    if why_not:
        pytest.skip(f"no GPU here can execute a {TRT.package} engine: {why_not}")
    from ultralbm_edge.export.tensorrt import build_engine
    from ultralbm_edge.runtime.imageio import read_image
    from ultralbm_edge.runtime.preprocess import preprocess

    x = np.stack([preprocess(read_image(p)) for p in sorted(ph2_val_images.glob("*.jpg"))[:4]])
    engine = open_backend(build_engine(trt_onnx, tmp_path / "m.engine", max_batch=4).path)
    ref = open_backend(trt_onnx).run(x)
    assert np.abs(engine.run(x) - ref).max() < 5e-3


def test_implicit_calibration_is_refused_where_types_are_strong(trt_onnx, isic_val, tmp_path):
    from ultralbm_edge.calibration import CalibrationError
    from ultralbm_edge.calibration.tensorrt_calibrator import entropy_calibrator

    if not TRT.strongly_typed_only:
        pytest.skip(f"{TRT.package} {TRT.version} offers implicit calibration (covered by the TensorRT 10 test)")
    with pytest.raises(CalibrationError, match="no implicit INT8 calibration .*ultralbm-edge calibrate"):
        entropy_calibrator(TRT, isic_val / "images", tmp_path / "c.cache", batch=8, size=256)
    res = run_cli("build-engine", "-m", str(trt_onnx), "--precision", "int8", "--calib", str(isic_val / "images"), "--implicit",
                  "-o", str(tmp_path / "m.engine"))  # fmt: skip
    assert res.returncode == 2 and "strongly typed" in res.stderr and not (tmp_path / "m.engine").exists()


def test_tensorrt10_implicit_int8_calibration_writes_a_cache(trt_onnx, isic_val, tmp_path):
    if TRT.strongly_typed_only:
        pytest.skip(f"{TRT.package} {TRT.version} is strongly typed: implicit calibration needs standard TensorRT 10")
    if _gpu_that_runs_engines():
        pytest.skip(f"implicit calibration runs the network on a GPU: {_gpu_that_runs_engines()}")
    from ultralbm_edge.export.tensorrt import build_engine

    result = build_engine(trt_onnx, tmp_path / "m.int8.engine", precision="int8", max_batch=4,
                          implicit_calibration=isic_val / "images")  # fmt: skip
    assert (tmp_path / "m.int8.engine.calib.cache").stat().st_size > 0
    assert result.sidecar["precision"] == "int8" and "implicit INT8 calibration" in " ".join(result.notes)
