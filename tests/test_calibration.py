"""INT8 Q/DQ calibration on real images and FP16 export: they run on ONNX Runtime CPU and stay close to FP32."""

import numpy as np
import onnx
import pytest

from conftest import run_cli
from ultralbm_edge.calibration import CalibrationError, quantize_int8
from ultralbm_edge.export import export_onnx
from ultralbm_edge.runtime.backends import open_backend
from ultralbm_edge.runtime.imageio import find_images, read_image
from ultralbm_edge.runtime.metrics import dice
from ultralbm_edge.runtime.preprocess import preprocess


@pytest.fixture(scope="module")
def val_batch(isic_val) -> np.ndarray:
    return np.stack([preprocess(read_image(p)) for p in find_images([isic_val / "images"])[:16]])


def test_int8_qdq_runs_on_ort_and_keeps_sensitive_parts_fp32(onnx_model, isic_val, tmp_path, val_batch):
    out = tmp_path / "m.int8.onnx"
    res = run_cli("calibrate", "-m", str(onnx_model), "--images", str(isic_val / "images"), "-o", str(out),
                  "--num-images", "32", "--method", "minmax")  # fmt: skip
    assert res.returncode == 0, res.stderr
    model = onnx.load(str(out))
    quantized = {n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    assert quantized, "nothing was quantized"
    dq_consumers = [n for n in model.graph.node if any(i.endswith("_DequantizeLinear_Output") for i in n.input)]
    assert dq_consumers and not [n.name for n in dq_consumers if "/mamba/" in n.name or "/final/" in n.name]
    int8 = open_backend(out)
    assert int8.metadata.precision == "int8"
    fp32 = open_backend(onnx_model).run(val_batch)
    got = int8.run(val_batch)
    assert np.mean([dice(a >= 0.5, b >= 0.5) for a, b in zip(got, fp32)]) >= 0.95


def test_fp16_export_mask_dice_vs_fp32(official_dir, tmp_path, val_batch):
    fp16 = export_onnx(official_dir / "best.pth", tmp_path / "m.fp16.onnx", fp16=True, dynamic_batch=True)
    assert fp16.parity.ok and fp16.metadata.precision == "fp16"
    model = onnx.load(str(fp16.path))
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)
    fp32 = export_onnx(official_dir / "best.pth", tmp_path / "m.onnx", dynamic_batch=True, check=False)
    a, b = open_backend(fp16.path).run(val_batch), open_backend(fp32.path).run(val_batch)
    assert dice(a >= 0.5, b >= 0.5) >= 0.998


def test_calibration_bad_inputs(onnx_model, isic_val, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CalibrationError, match="no images"):
        quantize_int8(onnx_model, empty)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.jpg").write_bytes(b"")
    (broken / "b.png").write_text("text")
    with pytest.raises(CalibrationError, match="none of the 2 image files is readable"):
        quantize_int8(onnx_model, broken)
    few = tmp_path / "few"
    few.mkdir()
    for p in find_images([isic_val / "images"])[:3]:
        (few / p.name).write_bytes(p.read_bytes())
    with pytest.raises(CalibrationError, match="only 3 readable images, fewer than --num-images 10"):
        quantize_int8(onnx_model, few, num_images=10)
    foreign = onnx.load(str(onnx_model))
    del foreign.metadata_props[:]
    onnx.save(foreign, str(tmp_path / "foreign.onnx"))
    with pytest.raises(CalibrationError, match="has no ultralbm-edge metadata"):
        quantize_int8(tmp_path / "foreign.onnx", few, num_images=3)
    res = run_cli("calibrate", "-m", str(onnx_model), "--images", str(empty))
    assert res.returncode == 2 and "no images" in res.stderr
