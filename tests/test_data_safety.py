"""Nothing lost, nothing silently wrong: hostile folders, full disks, interrupted and repeated runs.

Each test builds its hostile input on the fly (a small tmpfs for the full disk, as root) and is numbered after the
case it covers in the data-safety issue."""

from __future__ import annotations

import csv
import json
import math
import os
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import torch

from conftest import cli_exe, remount, run_cli

def _one_line_error(res: subprocess.CompletedProcess, contains: str) -> None:
    """Exit 2 and the error as one line on stderr (beside it at most the progress lines of what ran before)."""
    assert res.returncode == 2, (res.returncode, res.stdout[-500:], res.stderr[-1500:])
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in res.stderr, res.stderr[-1500:]
    assert res.stderr.rstrip().endswith(errors[0]), res.stderr[-1500:]  # the error is the last word
    assert contains in errors[0], errors[0]


def _rows(out: Path) -> dict[str, dict[str, str]]:
    return {Path(r["path"]).name: r for r in csv.DictReader(open(out / "results.csv"))}


@pytest.fixture()
def images(isic_val, tmp_path) -> Path:
    """24 real ISIC images in a folder of the test's own."""
    d = tmp_path / "in"
    d.mkdir()
    for p in sorted((isic_val / "images").glob("*.jpg"))[:24]:
        (d / p.name).write_bytes(p.read_bytes())
    return d


# 1. Full disk: nothing a resume would skip is incomplete; the resume finishes the job.
def test_full_disk_stops_with_one_line_and_the_resume_completes(onnx_model, images, small_disk, tmp_path):
    out = small_disk / "out"
    res = run_cli("predict", str(images), "-m", str(onnx_model), "-o", str(out))
    _one_line_error(res, "no space left on the disk")
    for mask in (out / "masks").glob("*.png"):  # whatever was written is complete
        assert mask.stat().st_size > 0 and cv2.imread(str(mask), cv2.IMREAD_UNCHANGED) is not None
    remount(small_disk, "size=16m")
    res = run_cli("predict", str(images), "-m", str(onnx_model), "-o", str(out))
    assert res.returncode == 0 and " 0 failed" in res.stdout, res.stdout + res.stderr
    reference = tmp_path / "reference"
    assert run_cli("predict", str(images), "-m", str(onnx_model), "-o", str(reference)).returncode == 0
    for mask in (reference / "masks").iterdir():
        assert (out / "masks" / mask.name).read_bytes() == mask.read_bytes(), mask.name
    assert len(_rows(out)) == 24 and {r["status"] for r in _rows(out).values()} == {"ok"}


def test_read_only_disk_is_one_line(onnx_model, images, small_disk):
    remount(small_disk, "ro")
    res = run_cli("predict", str(images), "-m", str(onnx_model), "-o", str(small_disk / "out"))
    _one_line_error(res, str(small_disk / "out"))


# 2. Outputs never become inputs.
def test_output_folder_inside_the_input_folder(onnx_model, images):
    out = images / "out"
    for extra in ([], [], ["--overwrite"]):
        res = run_cli("predict", str(images), "-m", str(onnx_model), "-o", str(out), "--overlay", *extra)
        assert res.returncode == 0, res.stderr
        rows = _rows(out)
        assert set(rows) == {p.name for p in images.glob("*.jpg")} and len(rows) == 24  # no mask or overlay read back
        assert len(list((out / "masks").iterdir())) == 24
    res = run_cli("predict", str(out / "masks" / next(iter(sorted(rows))).replace(".jpg", ".png")), "-m", str(onnx_model), "-o", str(out))
    assert res.returncode == 1 and "is inside the output folder" in res.stderr


def test_folders_are_listed_in_path_order_and_a_link_into_the_output_folder_is_refused(onnx_model, images, tmp_path):
    """find_images sorts by path components (as Paths sort, not as strings: "a/b.jpg" before "a-c.jpg"), and an input
    that is a symbolic link to a file in the output folder is refused like the file itself."""
    from ultralbm_edge.runtime.backends import open_backend
    from ultralbm_edge.runtime.imageio import find_images
    from ultralbm_edge.runtime.predict import PredictOptions, predict

    tree, jpeg = tmp_path / "tree", sorted(images.iterdir())[0].read_bytes()
    (tree / "a").mkdir(parents=True)
    for rel in ["a/b.jpg", "a-c.jpg", "a.jpg", "A.JPG", "notes.txt"]:
        (tree / rel).write_bytes(jpeg)
    found = find_images([tree])
    assert [p.relative_to(tree).as_posix() for p in found] == ["A.JPG", "a/b.jpg", "a-c.jpg", "a.jpg"] and found == sorted(found)
    # Several inputs naming the same files (however spelt) list each file once, where it first appears.
    again = find_images([tree / "a", tree / "a-c.jpg", tree, Path(f"{tree}/./a/b.jpg")])
    assert [p.relative_to(tree).as_posix() for p in again] == ["a/b.jpg", "a-c.jpg", "A.JPG", "a.jpg"]
    out = tmp_path / "out"
    backend = open_backend(onnx_model)
    assert predict([tree / "a"], backend, out, PredictOptions()).ok == 1
    (tree / "a" / "back.jpg").symlink_to(out / "masks" / "b.png")
    summary = predict([tree / "a"], backend, out, PredictOptions())
    assert (summary.ok, summary.skipped) == (0, 1) and len(summary.failed) == 1
    assert "back.jpg: is inside the output folder" in summary.failed[0][1]


# 3. Decompression bombs, FIFOs, devices, huge sparse files: refused from the header / file type, bounded memory.
def _png_bomb(side: int = 30000) -> bytes:
    """A valid PNG of side x side black RGB pixels: megabytes on disk, gigabytes decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    deflate = zlib.compressobj(9)
    row = b"\x00" * (1 + 3 * side)
    idat = b"".join(deflate.compress(row * 500) for _ in range(side // 500)) + deflate.flush()
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return _png_bomb()


def test_bombs_fifos_devices_and_sparse_files_are_refused_with_bounded_memory(onnx_model, images, bomb, tmp_path):
    (images / "bomb1.png").write_bytes(bomb)
    (images / "bomb2.png").write_bytes(bomb)
    os.mkfifo(images / "pipe.jpg")
    (images / "zero.jpg").symlink_to("/dev/zero")
    with open(images / "sparse.jpg", "wb") as f:
        f.truncate(3 * 1024**3)
    out = tmp_path / "out"
    # Run through a small wrapper that reports its child's peak RSS alone (this test process's other children
    # would otherwise count).
    measure = ("import resource, subprocess, sys\n"
               "code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode\n"
               "print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", measure, cli_exe(), "predict", str(images), "-m", str(onnx_model), "-o", str(out)],
                          capture_output=True, text=True, timeout=300)  # fmt: skip  # a FIFO read would hang: it must not
    code, peak_kb = (int(v) for v in proc.stdout.split())
    peak_mb = peak_kb / 1024
    assert code == 1, proc.stderr
    rows = _rows(out)
    assert "declares 30000x30000 pixels (900 MP)" in rows["bomb1.png"]["error"]
    assert "not a regular file" in rows["pipe.jpg"]["error"] and "not a regular file" in rows["zero.jpg"]["error"]
    assert "larger than 100 MB" in rows["sparse.jpg"]["error"]
    assert sum(r["status"] == "ok" for r in rows.values()) == 24
    assert peak_mb < 1024, f"peak RSS {peak_mb:.0f} MB"
    one = sorted(images.glob("ISIC_*.jpg"))[0]  # the limit is settable: a real 256x256 image is 0.066 MP
    res = run_cli("predict", str(one), "-m", str(onnx_model), "-o", str(tmp_path / "o2"), "--max-megapixels", "0.05")
    assert res.returncode == 1 and "above the limit of 0.05 MP" in res.stderr


# 4. A resume with other settings is refused; a changed input is redone.
def test_resume_refuses_other_settings_and_redoes_changed_inputs(onnx_model, exported_scans, images, tmp_path):
    out = tmp_path / "out"
    base = ["predict", str(images), "-m", str(onnx_model), "-o", str(out)]
    assert run_cli(*base).returncode == 0
    for extra, what in ((["--threshold", "0.3"], "threshold"), (["--no-keep-largest"], "keep_largest"),
                        (["--no-fill-holes"], "fill_holes")):  # fmt: skip
        _one_line_error(run_cli(*base, *extra), what)
    other = ["predict", str(images), "-m", str(exported_scans["blelloch"].path), "-o", str(out)]
    _one_line_error(run_cli(*other), "model_sha256")
    changed = sorted(images.iterdir())[3]
    rgb = cv2.imread(str(changed))
    cv2.imwrite(str(changed), cv2.flip(rgb, 1))
    res = run_cli(*base)
    assert res.returncode == 0 and res.stdout.startswith("1 segmented, 23 already done"), res.stdout
    assert run_cli(*other, "--overwrite").returncode == 0  # the remedy works
    assert json.loads((out / "manifest.json").read_text())["settings"]["model_sha256"] != ""


# 5. No command overwrites its own input; an existing output needs --overwrite.
def test_no_command_overwrites_its_input_and_existing_outputs_need_overwrite(official_dir, onnx_model, isic_val, tmp_path):
    ckpt = tmp_path / "best.pth"
    ckpt.write_bytes((official_dir / "best.pth").read_bytes())
    before = ckpt.read_bytes()
    _one_line_error(run_cli("export", "-m", str(ckpt), "-o", str(ckpt), "--no-check", "--overwrite"), "is also an input")
    assert ckpt.read_bytes() == before
    model = tmp_path / "m.onnx"
    model.write_bytes(onnx_model.read_bytes())
    _one_line_error(run_cli("calibrate", "-m", str(model), "--images", str(isic_val / "images"), "-o", str(model), "--overwrite"),
                    "is also an input")  # fmt: skip
    existing = tmp_path / "existing.onnx"
    existing.write_bytes(b"keep me")
    _one_line_error(run_cli("export", "-m", str(ckpt), "-o", str(existing), "--no-check"), "pass --overwrite")
    assert existing.read_bytes() == b"keep me"
    json_out = tmp_path / "scores.json"
    json_out.write_text("{}")
    _one_line_error(run_cli("evaluate", "-m", str(onnx_model), "--data", str(isic_val), "--json", str(json_out)), "pass --overwrite")
    assert run_cli("export", "-m", str(ckpt), "-o", str(existing), "--no-check", "--overwrite").returncode == 0
    assert onnx.load(str(existing)).graph.node


# 6. A training run folder is continued or replaced only when asked.
def test_train_refuses_an_existing_run_folder(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "best.pth").write_bytes(b"earlier run")
    (tmp_path / "train").mkdir()
    res = run_cli("train", "--data", str(tmp_path), "-o", str(run))
    _one_line_error(res, "already holds a training run (best.pth)")
    assert (run / "best.pth").read_bytes() == b"earlier run"


# 7. results.csv keeps earlier rows; a second run on the same folder is refused while the first writes.
def test_second_run_on_the_same_folder_is_refused(onnx_model, isic_val, tmp_path):
    out = tmp_path / "out"
    first = subprocess.Popen([cli_exe(), "predict", str(isic_val / "images"), "-m", str(onnx_model), "-o", str(out)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        while not (out / "results.csv").exists():
            assert first.poll() is None, first.communicate()
            time.sleep(0.02)
        _one_line_error(run_cli("predict", str(isic_val / "images"), "-m", str(onnx_model), "-o", str(out)), "another ultralbm-edge run")
    finally:
        first.wait()
    assert first.returncode == 0 and len(_rows(out)) == 600


def test_rows_of_earlier_runs_stay(onnx_model, images, tmp_path):
    out = tmp_path / "out"
    names = sorted(images.iterdir())
    assert run_cli("predict", *map(str, names[:5]), "-m", str(onnx_model), "-o", str(out)).returncode == 0
    assert run_cli("predict", *map(str, names[5:8]), "-m", str(onnx_model), "-o", str(out)).returncode == 0
    assert set(_rows(out)) == {p.name for p in names[:8]} and {r["status"] for r in _rows(out).values()} == {"ok"}


@pytest.mark.parametrize("cut_in", ["a quoted path", "the row's last cells"])
def test_a_journal_row_cut_by_a_kill_is_redone_and_the_rows_after_it_are_read(onnx_model, images, tmp_path, cut_in):
    """A kill while the journal's buffer was being written leaves its last row cut short (inside a quoted cell, or
    with cells missing): the resume reads no half row as done, redoes that image, and the rows it appends stay rows."""
    from ultralbm_edge.runtime.backends import open_backend
    from ultralbm_edge.runtime.predict import PredictOptions, predict

    first = sorted(images.iterdir())[0]
    (images / "zz, last.jpg").write_bytes(first.read_bytes())  # sorted last; quoted in the CSV
    backend, out, opts = open_backend(onnx_model), tmp_path / "out", PredictOptions(batch_size=8)
    assert predict([images], backend, out, opts).ok == 25
    journal = (out / "results.csv").read_bytes()
    last = journal.rstrip(b"\r\n").rfind(b"\r\n") + 2
    assert journal[last:].startswith(b'"') and b"zz, last.jpg" in journal[last:]
    # Inside the quoted path, or after input_bytes (input_mtime_ns and mask_sha256 missing).
    cut = journal.index(b"zz, ", last) + 3 if cut_in == "a quoted path" else journal.rindex(b",", last, journal.rindex(b","))
    (out / "results.csv").write_bytes(journal[:cut])
    resumed = predict([images], backend, out, opts)
    assert (resumed.ok, resumed.skipped, resumed.failed) == (1, 24, []), resumed
    rows = _rows(out)
    assert len(rows) == 25 and {r["status"] for r in rows.values()} == {"ok"}
    assert rows["zz, last.jpg"]["mask_sha256"] == rows[first.name]["mask_sha256"]
    assert (out / "results.csv").read_bytes().count(b"\r\n") == 26  # the header and one row per image


# 8. Corrupt JPEGs are errors; bytes after the end marker are fine.
def test_corrupt_jpegs_are_errors_and_trailing_bytes_are_fine(isic_val, tmp_path):
    from ultralbm_edge.runtime.imageio import ImageReadError, read_image

    data = (isic_val / "images" / "ISIC_0000006.jpg").read_bytes()
    n = len(data)
    zeroed = data[: n // 3] + b"\x00" * 2000 + data[n // 3 + 2000 :]
    for name, blob in (("zeroed.jpg", zeroed), ("cut_with_end_marker.jpg", data[: n // 2] + b"\xff\xd9")):
        (tmp_path / name).write_bytes(blob)
        with pytest.raises(ImageReadError, match="corrupt"):
            read_image(tmp_path / name)
    (tmp_path / "phone.jpg").write_bytes(data + b"\x00\x01phone-maker-trailer" * 50)
    np.testing.assert_array_equal(read_image(tmp_path / "phone.jpg"), read_image(isic_val / "images" / "ISIC_0000006.jpg"))


def test_exif_orientations_match_opencv(isic_val, tmp_path):
    """All eight EXIF orientations are applied as OpenCV applies them (the masks line up with what viewers show)."""
    from test_bad_inputs import _exif_rotated

    from ultralbm_edge.runtime.imageio import read_image

    small = cv2.imencode(".jpg", cv2.resize(cv2.imread(str(isic_val / "images" / "ISIC_0000006.jpg")), (60, 40)))[1].tobytes()
    for orientation in range(1, 9):
        path = tmp_path / f"o{orientation}.jpg"
        path.write_bytes(_exif_rotated(small, orientation))
        want = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(read_image(path), want, err_msg=str(orientation))


# 9. Symbolic links to folders are followed, once.
def test_symlinked_subfolders_are_followed_with_loop_protection(onnx_model, images, tmp_path):
    top = tmp_path / "top"
    top.mkdir()
    (top / "linked").symlink_to(images, target_is_directory=True)
    (images / "loop").symlink_to(top, target_is_directory=True)  # top -> linked -> loop -> top ...
    res = run_cli("predict", str(top), "-m", str(onnx_model), "-o", str(tmp_path / "out"))
    assert res.returncode == 0 and res.stdout.startswith("24 segmented"), res.stdout + res.stderr


# 10. Checkpoint metadata is validated at load.
@pytest.mark.parametrize(
    "field, value, message",
    [("threshold", 7.0, "threshold 7.0"), ("threshold", math.nan, "threshold nan"), ("threshold", 0.0, "threshold 0.0"),
     ("image_size", 4096, "image size 4096"), ("image_size", "256", "image size '256'"),
     ("preprocessing", "imagenet-meanstd", "imagenet-meanstd"), ("variant", "ultralbm-xxl", "unknown model variant")],
)  # fmt: skip
def test_checkpoint_metadata_is_validated(official_dir, tmp_path, field, value, message):
    from ultralbm_edge.checkpoint import FORMAT

    sd = torch.load(official_dir / "best.pth", map_location="cpu", weights_only=True)
    payload = {"format": FORMAT, "variant": "ultralbm", "image_size": 256, "threshold": 0.5,
               "preprocessing": "minmax255-rgb-aa-bilinear-v1", "state_dict": sd, field: value}  # fmt: skip
    torch.save(payload, tmp_path / "c.pth")
    _one_line_error(run_cli("info", "-m", str(tmp_path / "c.pth")), message)


# 11. Evaluation pairs by relative path, understands 0/1 masks, refuses wrong-size masks.
def test_evaluate_pairs_by_relative_path_and_reads_01_masks(onnx_model, isic_val, tmp_path):
    pairs = sorted((isic_val / "images").glob("*.jpg"))[:6]
    data = tmp_path / "data"
    for sub, chosen in (("a", pairs[:3]), ("b", pairs[3:])):
        for i, img in enumerate(chosen):  # the same names in both sub-folders, different cases
            (data / "images" / sub).mkdir(parents=True, exist_ok=True)
            (data / "masks" / sub).mkdir(parents=True, exist_ok=True)
            (data / "images" / sub / f"case{i}.jpg").write_bytes(img.read_bytes())
            mask = cv2.imread(str(isic_val / "masks" / f"{img.stem}.png"), cv2.IMREAD_GRAYSCALE)
            cv2.imwrite(str(data / "masks" / sub / f"case{i}.png"), (mask > 127).astype(np.uint8))  # stored as 0/1
    flat = tmp_path / "flat"
    (flat / "images").mkdir(parents=True)
    (flat / "masks").mkdir()
    for img in pairs:
        (flat / "images" / img.name).write_bytes(img.read_bytes())
        (flat / "masks" / f"{img.stem}.png").write_bytes((isic_val / "masks" / f"{img.stem}.png").read_bytes())
    scores = []
    for folder in (data, flat):
        res = run_cli("evaluate", "-m", str(onnx_model), "--data", str(folder), "--json", str(folder / "s.json"))
        assert res.returncode == 0, res.stderr
        scores.append(json.loads((folder / "s.json").read_text())["dsc"])
    assert scores[0] == pytest.approx(scores[1], abs=1e-3) and scores[0] > 0.5
    mask = data / "masks" / "a" / "case0.png"
    cv2.imwrite(str(mask), np.zeros((100, 80), np.uint8))
    _one_line_error(run_cli("evaluate", "-m", str(onnx_model), "--data", str(data)), "case0.png: the mask is 80x100")


# 12. Outputs follow the umask.
def test_outputs_follow_the_umask(onnx_model, images, tmp_path):
    out = tmp_path / "out"
    done = subprocess.run(["sh", "-c", f"umask 022 && exec {cli_exe()} predict {images} -m {onnx_model} -o {out}"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    for f in [out / "results.csv", out / "manifest.json", *list((out / "masks").iterdir())[:3]]:
        assert f.stat().st_mode & 0o777 == 0o644, f


# 13. Bounds are checked up front; misspelt devices do not run on the CPU.
@pytest.mark.parametrize(
    "args, message",
    [(["--threads", "5000"], "--threads"), (["--batch-size", "0"], "--batch-size"), (["--workers", "0"], "--workers"),
     (["--device", "gpu"], "unknown device 'gpu'"), (["--device", "banana"], "unknown device"),
     (["--device", "cuda:0"], "device cuda:0 asked for")],
)  # fmt: skip
def test_bounds_and_devices_are_checked_up_front(onnx_model, images, tmp_path, args, message):
    _one_line_error(run_cli("predict", str(images), "-m", str(onnx_model), "-o", str(tmp_path / "o"), *args), message)
    assert not (tmp_path / "o").exists()


# 14. Names that a spreadsheet would run as formulas are neutralised.
def test_csv_cells_cannot_be_formulas(onnx_model, isic_val, tmp_path):
    from ultralbm_edge.runtime.run_folder import csv_safe

    assert csv_safe("=HYPERLINK(1)") == "'=HYPERLINK(1)" and csv_safe("ok") == "ok" and csv_safe(3) == 3
    d = tmp_path / "in"
    d.mkdir()
    for name in ("=1+1.jpg", "+SUM(A1).jpg", "-2.jpg", "@cmd.jpg"):
        (d / name).write_bytes((isic_val / "images" / "ISIC_0000006.jpg").read_bytes()[:5000])  # corrupt: error rows too
    res = run_cli("predict", "-m", str(onnx_model), "-o", str(tmp_path / "out"), "--",
                  "=1+1.jpg", "+SUM(A1).jpg", "-2.jpg", "@cmd.jpg", cwd=d)  # fmt: skip
    assert res.returncode == 1
    for row in csv.reader(open(tmp_path / "out" / "results.csv")):
        assert not any(cell.startswith(("=", "+", "-", "@")) for cell in row), row


# 15. A model file whose output is not a probability map is refused.
def test_model_returning_the_image_is_refused(onnx_model, images, tmp_path):
    model = onnx.load(str(onnx_model))
    graph = model.graph
    del graph.node[:]
    graph.node.extend([
        onnx.helper.make_node("Constant", [], ["starts"], value=onnx.helper.make_tensor("s", onnx.TensorProto.INT64, [1], [0])),
        onnx.helper.make_node("Constant", [], ["ends"], value=onnx.helper.make_tensor("e", onnx.TensorProto.INT64, [1], [1])),
        onnx.helper.make_node("Constant", [], ["axes"], value=onnx.helper.make_tensor("a", onnx.TensorProto.INT64, [1], [1])),
        onnx.helper.make_node("Slice", ["image", "starts", "ends", "axes"], ["prob"]),
    ])  # fmt: skip
    del graph.initializer[:]
    bad = tmp_path / "echo.onnx"
    onnx.save(model, str(bad))
    _one_line_error(run_cli("predict", str(images), "-m", str(bad), "-o", str(tmp_path / "out")), "not probabilities in [0, 1]")
    assert not (tmp_path / "out").exists()  # refused when opened, before the output folder is touched


# 16. An engine is checked against its sidecar's hash.
def test_engine_bytes_must_match_the_sidecar(tmp_path):
    from ultralbm_edge.runtime.backends import open_backend
    from ultralbm_edge.runtime.backends.tensorrt_env import TensorRTError

    engine = tmp_path / "m.engine"
    engine.write_bytes(os.urandom(4096))
    sidecar = {"format": "ultralbm-edge-engine/1", "tensorrt_package": "tensorrt_rtx", "tensorrt_version": "1.7.1.116",
               "engine_sha256": "0" * 64, "batch": {"fixed": 1}, "precision": "fp32",
               "metadata": {"variant": "ultralbm", "image_size": 256}}  # fmt: skip
    (tmp_path / "m.engine.json").write_text(json.dumps(sidecar))
    with pytest.raises(TensorRTError, match="does not match its sidecar"):
        open_backend(engine)


# 17. Error paths end in one line and exit 2.
@pytest.mark.parametrize(
    "args, message",
    [
        (["predict", "{images}", "-m", "{onnx}", "-o", "{file}"], "is a file, not a folder"),
        (["predict", "{images}", "-m", "{garbage_onnx}", "-o", "{tmp}/o"], "ONNX Runtime cannot load"),
        (["predict", "{images}", "-m", "{bad_meta_onnx}", "-o", "{tmp}/o"], "threshold 'abc'"),
        (["predict", "{images}", "-m", "{tampered_engine}", "-o", "{tmp}/o"], "unreadable engine sidecar"),
        (["info", "-m", "{garbage_onnx}"], "garbage.onnx"),
        (["evaluate", "-m", "{onnx}", "--data", "{images}"], "expected sub-folders images/ and masks/"),
        (["benchmark", "-m", "{onnx}", "--batch-sizes", "x"], "--batch-sizes 'x'"),
        (["calibrate", "-m", "{onnx}", "--images", "{images}", "--method", "bogus", "-o", "{tmp}/q.onnx"], "unknown --method 'bogus'"),
        (["build-engine", "-m", "{file}"], "not a readable ONNX file"),
        (["train", "--data", "{tmp}", "-o", "{tmp}/r", "--lr", "-1"], "--lr -1.0 is out of range"),
        (["train", "--data", "{tmp}", "-o", "{tmp}/r", "--variant", "bogus"], "unknown model variant 'bogus'"),
        (["train", "--data", "{tmp}", "-o", "{tmp}/r", "--scan", "bogus"], "unknown scan strategy 'bogus'"),
        (["train", "--data", "{tmp}", "-o", "{tmp}/r", "--scan", "triton"], "--scan triton runs on a CUDA GPU only"),
        (["export", "-m", "{tmp}/missing.pth"], "model file not found"),
        (["predict", "{images}", "-m", "{onnx}", "-o", "{tmp}/o", "--threshold", "1.5"], "--threshold 1.5"),
        (["predict", "{images}", "-m", "{onnx}", "-o", "{tmp}/o", "--actors", "2"], "add --ray"),
        (["info", "-m", "{file}"], "cannot tell the format"),
    ],
)
def test_error_paths_are_one_line(onnx_model, images, tmp_path, args, message):
    (tmp_path / "train").mkdir()
    (tmp_path / "file.txt").write_text("a file, not a folder\n")
    (tmp_path / "garbage.onnx").write_bytes(os.urandom(2048))
    model = onnx.load(str(onnx_model))
    for prop in model.metadata_props:
        if prop.key == "ultralbm.threshold":
            prop.value = '"abc"'
    onnx.save(model, str(tmp_path / "bad_meta.onnx"))
    (tmp_path / "m.engine").write_bytes(b"x")
    (tmp_path / "m.engine.json").write_text("{not json")
    values = {"images": images, "onnx": onnx_model, "file": tmp_path / "file.txt", "tmp": tmp_path,
              "garbage_onnx": tmp_path / "garbage.onnx", "bad_meta_onnx": tmp_path / "bad_meta.onnx",
              "tampered_engine": tmp_path / "m.engine"}  # fmt: skip
    _one_line_error(run_cli(*[a.format(**values) for a in args]), message)


# 18. Nothing is written outside the output folder (ONNX Runtime's telemetry is off).
def test_nothing_is_written_outside_the_output_folder(onnx_model, images, tmp_path):
    home, tmp = tmp_path / "home", tmp_path / "tmpdir"
    home.mkdir(), tmp.mkdir()
    env = {**os.environ, "HOME": str(home), "TMPDIR": str(tmp), "XDG_CACHE_HOME": str(home / ".cache")}
    res = run_cli("predict", str(images), "-m", str(onnx_model), "-o", str(tmp_path / "out"), "--overlay", env=env, cwd=tmp)
    assert res.returncode == 0, res.stderr
    assert not list(home.rglob("*")) and not list(tmp.rglob("*"))


# 19. A killed run's temporaries are removed; long legal names work.
def test_stale_temporaries_are_removed_and_long_names_work(onnx_model, isic_val, tmp_path):
    from ultralbm_edge.runtime.files import TEMP_PREFIX

    d = tmp_path / "in"
    d.mkdir()
    long_name = "L" * 240 + ".jpg"  # 244 characters: legal on every common file system
    (d / long_name).write_bytes((isic_val / "images" / "ISIC_0000006.jpg").read_bytes())
    out = tmp_path / "out"
    (out / "masks").mkdir(parents=True)
    stale = out / "masks" / f"{TEMP_PREFIX}dead-x.png"
    stale.write_bytes(b"half a png")
    res = run_cli("predict", str(d), "-m", str(onnx_model), "-o", str(out))
    assert res.returncode == 0, res.stderr
    assert not stale.exists() and (out / "masks" / ("L" * 240 + ".png")).is_file()


# 20. Messages say what happened.
def test_unsafe_pickle_is_named_unsafe(tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'ran'}",))

    torch.save({"weights": Payload()}, tmp_path / "evil.pth")
    _one_line_error(run_cli("info", "-m", str(tmp_path / "evil.pth")), "refused as unsafe")
    assert not (tmp_path / "ran").exists()


# 16. Masks are written unnamed and linked once synced; the named temporary file and rename where that is not offered.
def test_masks_are_linked_only_when_complete_and_every_fallback_writes_the_same(tmp_path, monkeypatch):
    import errno

    from ultralbm_edge.runtime import files

    masks = tmp_path / "masks"
    renames = []
    replace = os.replace
    monkeypatch.setattr(files.os, "replace", lambda a, b: renames.append(Path(b).name) or replace(a, b))
    files.write_bytes_atomic(masks / "new.png", b"first", sync_folder=False)  # the folder made on the way
    assert (masks / "new.png").read_bytes() == b"first" and renames == []  # linked: no temporary name, no rename
    files.write_bytes_atomic(masks / "new.png", b"second")  # an existing mask is replaced whole, by a rename
    assert (masks / "new.png").read_bytes() == b"second" and renames == ["new.png"]

    # A write that fails before the link (a full disk, a kill) leaves no file under the name, and no temporary file.
    monkeypatch.setattr(files.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device")))
    with pytest.raises(OSError, match="No space"):
        files.write_bytes_atomic(masks / "cut.png", b"never")
    assert sorted(os.listdir(masks)) == ["new.png"]
    monkeypatch.undo()

    # A forked child links its own file, not its parent's descriptor of the same number (each has its /proc/self/fd).
    pid = os.fork()
    if pid == 0:
        files.write_bytes_atomic(masks / "child.png", b"from the child")
        os._exit(0)
    assert os.waitpid(pid, 0)[1] == 0 and (masks / "child.png").read_bytes() == b"from the child"

    # A file system without O_TMPFILE: the named temporary file and rename, same content.
    real_open = os.open
    monkeypatch.setattr(files.os, "open", lambda p, flags, *a: (_ for _ in ()).throw(OSError(errno.EOPNOTSUPP, "not supported"))
                        if flags & os.O_TMPFILE == os.O_TMPFILE else real_open(p, flags, *a))  # fmt: skip
    files.write_bytes_atomic(masks / "fallback.png", b"renamed")
    files.write_bytes_atomic(tmp_path / "new_folder" / "fallback.png", b"in a new folder")
    assert (masks / "fallback.png").read_bytes() == b"renamed"
    assert (tmp_path / "new_folder" / "fallback.png").read_bytes() == b"in a new folder"
    monkeypatch.undo()

    # No /proc (some containers): named temporary files, each written once.
    monkeypatch.setattr(files, "_proc_fd_of", None)
    monkeypatch.setattr(files.os, "open", lambda p, flags, *a: (_ for _ in ()).throw(FileNotFoundError(2, "No such file"))
                        if str(p) == "/proc/self/fd" else real_open(p, flags, *a))  # fmt: skip
    writes = []
    write = os.write
    monkeypatch.setattr(files.os, "write", lambda fd, data: writes.append(len(data)) or write(fd, data))
    files.write_bytes_atomic(masks / "no_proc.png", b"named")
    assert (masks / "no_proc.png").read_bytes() == b"named" and writes == []  # nothing written unnamed first
    assert not [p for p in masks.iterdir() if p.name.startswith(files.TEMP_PREFIX)]
