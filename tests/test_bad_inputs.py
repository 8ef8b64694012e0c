"""Bad input: each case is reported clearly and never stops the other images (synthetic files only where the
point is the defect; real dermoscopy images otherwise)."""

import csv
import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest

from conftest import run_cli
from ultralbm_edge.runtime.imageio import ImageReadError, read_image

REAL = "ISIC_0000006.jpg"


@pytest.fixture()
def real_jpeg(isic_val) -> bytes:
    return (isic_val / "images" / REAL).read_bytes()


def _exif_rotated(jpeg: bytes, orientation: int = 6) -> bytes:
    """The same JPEG with an EXIF APP1 segment saying 'rotate 90° clockwise to display'."""
    tiff = b"MM\x00\x2a\x00\x00\x00\x08\x00\x01" + struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0) + b"\x00" * 4
    app1 = b"\xff\xe1" + struct.pack(">H", 2 + 6 + len(tiff)) + b"Exif\x00\x00" + tiff
    return jpeg[:2] + app1 + jpeg[2:]


@pytest.fixture()
def messy_folder(tmp_path, real_jpeg, isic_val) -> Path:
    """A folder of real images in awkward encodings plus broken files."""
    d = tmp_path / "in"
    d.mkdir()
    rgb = cv2.imdecode(np.frombuffer(real_jpeg, np.uint8), cv2.IMREAD_COLOR)
    (d / "good.jpg").write_bytes(real_jpeg)
    (d / "corrupt.jpg").write_bytes(real_jpeg[: len(real_jpeg) // 2])  # truncated download
    (d / "empty.jpg").write_bytes(b"")
    (d / "notes.png").write_text("this is a text file with an image suffix\n")
    (d / "readme.txt").write_text("not an image suffix: ignored inside folders\n")
    cv2.imwrite(str(d / "sixteen_bit.png"), rgb.astype(np.uint16) * 257)
    cv2.imwrite(str(d / "gray.png"), cv2.cvtColor(rgb, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(d / "rgba.png"), cv2.cvtColor(rgb, cv2.COLOR_BGR2BGRA))
    wide = cv2.imencode(".jpg", cv2.resize(rgb, (300, 200)))[1].tobytes()
    (d / "exif_rotated.jpg").write_bytes(_exif_rotated(wide))
    return d


def test_folder_with_bad_files_finishes_the_others(messy_folder, onnx_model, tmp_path):
    out = tmp_path / "out"
    res = run_cli("predict", str(messy_folder), "--model", str(onnx_model), "-o", str(out))
    assert res.returncode == 1, res.stderr  # some inputs failed
    rows = {Path(r["path"]).name: r for r in csv.DictReader(open(out / "results.csv"))}
    assert "readme.txt" not in rows
    for good in ("good.jpg", "sixteen_bit.png", "gray.png", "rgba.png", "exif_rotated.jpg"):
        assert rows[good]["status"] == "ok", rows[good]
        assert (out / "masks" / f"{Path(good).stem}.png").is_file()
    assert "truncated" in rows["corrupt.jpg"]["error"]
    assert "empty (0 bytes)" in rows["empty.jpg"]["error"]
    assert "not a JPEG, PNG, BMP or TIFF image" in rows["notes.png"]["error"]
    for bad in ("corrupt.jpg", "empty.jpg", "notes.png"):
        assert rows[bad]["status"] == "error"
        assert bad in res.stderr  # the summary names each failure
    assert "5 segmented, 0 already done, 3 failed" in res.stdout
    # EXIF: the mask follows the displayed orientation (portrait 200x300), not the stored landscape pixels.
    assert cv2.imread(str(out / "masks" / "exif_rotated.png"), cv2.IMREAD_UNCHANGED).shape == (300, 200)
    assert (int(rows["exif_rotated.jpg"]["width"]), int(rows["exif_rotated.jpg"]["height"])) == (200, 300)


def _palette_png(indices: np.ndarray, palette: np.ndarray) -> bytes:
    """A colour-type-3 (paletted) PNG; OpenCV cannot write one."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    h, w = indices.shape
    raw = b"".join(b"\x00" + row.tobytes() for row in indices.astype(np.uint8))
    header = struct.pack(">IIBBBBB", w, h, 8, 3, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"PLTE", palette.astype(np.uint8).tobytes()) + chunk(
        b"IDAT", zlib.compress(raw)
    ) + chunk(b"IEND", b"")


def test_palette_png_and_huge_image_are_read(tmp_path, real_jpeg):
    rgb = cv2.imdecode(np.frombuffer(real_jpeg, np.uint8), cv2.IMREAD_COLOR)
    # Quantise the real image to a 64-colour palette.
    levels = (rgb // 64).astype(np.int32)  # 4 levels per channel
    indices = levels[..., 0] * 16 + levels[..., 1] * 4 + levels[..., 2]
    palette = np.array([[r * 85, g * 85, b * 85] for b in range(4) for g in range(4) for r in range(4)])
    (tmp_path / "palette.png").write_bytes(_palette_png(indices, palette))
    got = read_image(tmp_path / "palette.png")
    assert got.shape == (*rgb.shape[:2], 3)
    np.testing.assert_array_equal(got, palette[indices].astype(np.uint8))
    huge = cv2.resize(rgb, (8000, 6000), interpolation=cv2.INTER_NEAREST)
    cv2.imwrite(str(tmp_path / "huge.jpg"), huge, [cv2.IMWRITE_JPEG_QUALITY, 80])
    assert read_image(tmp_path / "huge.jpg").shape == (6000, 8000, 3)


def test_unreadable_file_message(tmp_path, real_jpeg, monkeypatch):
    path = tmp_path / "locked.jpg"
    path.write_bytes(real_jpeg)
    if os.geteuid() != 0:  # a real permission failure where the OS enforces one
        path.chmod(0)
    else:  # root reads anything: make the open itself fail the way the OS reports it
        import ultralbm_edge.runtime.imageio as imageio

        def denied(*args, **kwargs):
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(imageio.os, "open", denied)
    with pytest.raises(ImageReadError, match=r"locked.jpg: permission denied .*chmod"):
        read_image(path)


def test_missing_model_is_a_usage_error(ph2_val_images, tmp_path):
    res = run_cli("predict", str(ph2_val_images), "--model", str(tmp_path / "nope.onnx"), "-o", str(tmp_path / "o"))
    assert res.returncode == 2
    assert "nope.onnx: model file not found" in res.stderr
    assert not (tmp_path / "o").exists()


def test_missing_input_is_a_usage_error(onnx_model, tmp_path):
    res = run_cli("predict", str(tmp_path / "absent"), "--model", str(onnx_model), "-o", str(tmp_path / "o"))
    assert res.returncode == 2 and "input not found" in res.stderr


def test_onnx_with_wrong_input_shape_is_refused(onnx_model, ph2_val_images, tmp_path):
    model = onnx.load(str(onnx_model))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_value, dims[3].dim_value = 512, 512
    bad = tmp_path / "wrong_shape.onnx"
    onnx.save(model, str(bad))
    res = run_cli("predict", str(ph2_val_images), "--model", str(bad), "-o", str(tmp_path / "o"))
    assert res.returncode == 2
    assert "expected one input 'image' of shape [N, 3, 256, 256]" in res.stderr


def test_onnx_without_our_metadata_is_refused(onnx_model, ph2_val_images, tmp_path):
    model = onnx.load(str(onnx_model))
    del model.metadata_props[:]
    bad = tmp_path / "foreign.onnx"
    onnx.save(model, str(bad))
    res = run_cli("predict", str(ph2_val_images), "--model", str(bad), "-o", str(tmp_path / "o"))
    assert res.returncode == 2 and "has no ultralbm-edge metadata" in res.stderr


def test_linear_attention_model_on_an_older_onnxruntime_names_the_fix(exported_scans, monkeypatch):
    """ONNX Runtime < 1.25.1 has no LinearAttention (1.25.0 neither); its load error (text as 1.25.0 prints it)
    becomes the remedy: the default (portable) export, which every onnxruntime loads."""
    import onnxruntime as ort

    from ultralbm_edge.runtime.backends import BackendError
    from ultralbm_edge.runtime.backends.onnxruntime_backend import OnnxRuntimeBackend

    path = exported_scans["linear_attention"].path

    def old_runtime(*args, **kwargs):
        raise RuntimeError(f"Load model from {path} failed:Fatal error: com.microsoft:LinearAttention(-1) is not a registered function/op")

    monkeypatch.setattr(ort, "InferenceSession", old_runtime)
    with pytest.raises(BackendError, match=r"LinearAttention op, which onnxruntime .* lacks \(it needs >= 1\.25\.1\).*default.*portable"):
        OnnxRuntimeBackend(path)
