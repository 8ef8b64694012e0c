"""Which exported form runs exactly on which runtime: the README's runtime x form table, from a real run.

Rows: every export form (``export_scans()``, the default ``portable`` among them) exported from the bundled model at
a fixed batch of 1 (static shapes: the strict case for OpenVINO), plus the ``loop`` form with the Scan body written
slice-first, as exports did before the OpenVINO fix. Columns:

- ONNX Runtime 1.17.3, 1.20.1, 1.22.1, 1.25.1 and the installed one (1.32), each in a venv of its own with this
  package installed (1.17.3 with constraints-floor.txt, the others with constraints-ci.txt's pins), each model
  opened as the package opens it (a portable file swaps its scans to LinearAttention where the runtime has it);
- OpenVINO (installed here, CPU, f32), through the package's backend;
- TensorRT-RTX: parse + fp32 build (engines cannot run on this machine);
- LiteRT: the traced strategies converted from PyTorch by litert-torch, run by ai-edge-litert (the ONNX-level forms
  have no LiteRT counterpart).

"exact" is the contract (runtime.parity) against PyTorch with the sequential scan, on 8 real ISIC 2017 images.

    python benchmarks/portability.py --json benchmarks/results/portability_cpu.json --readme README.md
    python benchmarks/portability.py --table-from benchmarks/results/portability_cpu.json --readme README.md
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from _common import report

from ultralbm_edge.checkpoint import load_checkpoint
from ultralbm_edge.export import export_model, export_onnx, export_scans, reference_probs
from ultralbm_edge.ops import scan_strategies
from ultralbm_edge.runtime.imageio import find_images, read_image
from ultralbm_edge.runtime.model_files import resolve_model
from ultralbm_edge.runtime.parity import compare
from ultralbm_edge.runtime.preprocess import preprocess

ROOT = Path(__file__).resolve().parents[1]
ORT_VERSIONS = ("1.17.3", "1.20.1", "1.22.1", "1.25.1", ort.__version__)
OLD_LOOP = "loop, slice-first body (exports before the OpenVINO fix)"
SWAP_OFF = "portable, swap off (stock Scan graph)"
BEGIN, END = "<!-- portability table: benchmarks/portability.py -->", "<!-- end of portability table -->"


def venv_python(version: str, cache: Path) -> Path:
    """An interpreter with onnxruntime ``version`` and this package (torch-free), made once under ``cache``."""
    if version == ort.__version__:
        return Path(sys.executable)
    venv = cache / f"ort-{version}"
    python, ready = venv / "bin" / "python", venv / "installed"  # written last: a half-built venv is rebuilt
    if not ready.exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        if version == "1.17.3":
            constraints = ROOT / "constraints-floor.txt"
        else:
            constraints = venv / "constraints.txt"
            pins = [line for line in (ROOT / "constraints-ci.txt").read_text().splitlines() if not line.startswith("onnxruntime==")]
            constraints.write_text("\n".join(pins + [f"onnxruntime=={version}"]) + "\n")
        subprocess.run([str(python), "-m", "pip", "install", "-q", "-e", str(ROOT), "-c", str(constraints)], check=True)
        ready.write_text(version + "\n")
    return python


def run_worker(python: Path, backend: str, models: dict[str, Path], data: Path) -> dict:
    job = data / f"job-{backend}-{abs(hash(str(python)))}.json"
    job.write_text(json.dumps({"backend": backend, "images": str(data / "images.npy"), "reference": str(data / "reference.npy"),
                               "models": {k: str(v) for k, v in models.items()}, "swap_off": SWAP_OFF}))  # fmt: skip
    res = subprocess.run([str(python), str(ROOT / "benchmarks" / "_portability_worker.py"), str(job)], capture_output=True, text=True)
    if res.returncode:
        raise SystemExit(f"{python} ({backend}) failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def slice_first_loop(loop: Path, out: Path) -> Path:
    model = onnx.load(str(loop))
    for node in model.graph.node:
        if node.op_type == "Scan":
            body = next(a.g for a in node.attribute if a.name == "body")
            next(n for n in body.node if n.name == "decay").input[:] = ["a_t", "h_prev"]
    onnx.save(model, str(out))
    return out


def openvino_forced(path: Path, images: np.ndarray, reference: np.ndarray) -> dict:
    """What OpenVINO computes for a file its backend refuses (the refusal's evidence)."""
    import openvino as ov

    from ultralbm_edge.runtime.backends.openvino_backend import CONFIG

    compiled = ov.Core().compile_model(str(path), "CPU", CONFIG)
    got = np.concatenate([compiled({0: images[i : i + 1]})[0] for i in range(len(images))])
    r = compare(got, reference)
    return {"status": "exact" if r.ok else "WRONG", "max_diff": r.max_abs_diff, "mean_diff": r.mean_abs_diff, "min_dice": r.min_mask_dice}


def tensorrt_builds(models: dict[str, Path], folder: Path) -> dict:
    """Parse + fp32 build of every file (TensorRT-RTX builds ahead of time on a CPU-only machine; nothing runs)."""
    from ultralbm_edge.export.tensorrt import build_engine
    from ultralbm_edge.runtime.backends.tensorrt_env import load_tensorrt

    trt = load_tensorrt()
    out = {}
    for i, (form, path) in enumerate(models.items()):
        t0 = time.perf_counter()
        try:
            build_engine(path, folder / f"model{i}.engine", precision="fp32", overwrite=True)
            out[form] = {"status": "builds", "seconds": time.perf_counter() - t0, "package": f"{trt.package} {trt.version}"}
        except Exception as e:  # noqa: BLE001 - a refusal or a parser/builder error is the result
            out[form] = {"status": "fails", "error": f"{type(e).__name__}: {str(e)[:300]}"}
    return out


def litert_runs(forms: list[str], folder: Path, images: np.ndarray, reference: np.ndarray) -> dict:
    from ultralbm_edge.runtime.backends.litert_backend import LiteRTBackend

    out = {}
    for form in forms:
        if form not in scan_strategies():
            out[form] = {"status": "n/a", "error": "an ONNX graph form: LiteRT models are converted from PyTorch"}
            continue
        t0 = time.perf_counter()
        path = export_model("ultralbm", folder / f"{form}.tflite", format="litert", scan=form, check=False, overwrite=True).path
        r = compare(LiteRTBackend(path, threads=2).run(images), reference)
        out[form] = {"status": "exact" if r.ok else "WRONG", "max_diff": r.max_abs_diff, "mean_diff": r.mean_abs_diff,
                     "min_dice": r.min_mask_dice, "convert_s": time.perf_counter() - t0}  # fmt: skip
    return out


def cell(result: dict | None) -> str:
    if not result:
        return "-"
    status = result["status"]
    if status in ("exact", "WRONG"):
        swapped = ", LinearAttention swapped in" if str(result.get("scan", "")).startswith("linear_attention") else ""
        text = f"{'**WRONG**' if status == 'WRONG' else 'exact'} {result['max_diff']:.1e}{swapped}"
    elif status == "builds":
        text = f"builds ({result['seconds']:.0f} s), not executed"
    elif status == "n/a":
        text = "n/a (converted from PyTorch)"
    else:
        error = result["error"]
        reason = ("refused: slice-first Scan body" if "computes wrongly" in error
                  else "no LinearAttention op" if "LinearAttention" in error
                  else "no SelectiveScan op" if "SelectiveScan" in error else error[:80])  # fmt: skip
        text = f"{'build' if status == 'fails' else 'load'} fails ({reason})"
    forced = result.get("forced")
    if forced:  # what the runtime computes for the file it refuses
        text += f"; if forced: {'**WRONG**' if forced['status'] == 'WRONG' else 'exact'} {forced['max_diff']:.1e}, Dice {forced['min_dice']:.4f}"
    return text


def table(columns: list[dict], forms: list[str]) -> str:
    """The README's runtime x form table from the saved rows ({column, results}); ``forms`` in row order."""
    lines = ["| form | " + " | ".join(c["column"] for c in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for form in forms:
        cells = [cell(c["results"].get(form)) for c in columns]
        if any(c != "-" for c in cells):
            label = f"**{form}** (the default export)" if form == "portable" else form
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_readme(readme: Path, text: str) -> None:
    """Replace the table between the README's markers (the markers stay, so the next run finds them)."""
    body = readme.read_text()
    start, end = body.index(BEGIN) + len(BEGIN), body.index(END)
    readme.write_text(body[:start] + "\n" + text + "\n" + body[end:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", default=str(ROOT.parent / "shared" / "data" / "isic2017" / "val" / "images"))
    ap.add_argument("--count", type=int, default=8)
    ap.add_argument("--venvs", type=Path, default=Path(tempfile.gettempdir()) / "ultralbm-portability-venvs")
    ap.add_argument("--skip-litert", action="store_true", help="leave out the LiteRT conversions (minutes each)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--readme", type=Path, help="write the table into this README, between its markers")
    ap.add_argument("--table-from", type=Path, help="no run: the table from a saved --json")
    args = ap.parse_args()

    if args.table_from:
        saved = json.loads(args.table_from.read_text())
        text = table(saved["rows"], saved["environment"]["forms"])
        print(text)
        if args.readme:
            write_readme(args.readme, text)
        return

    data = Path(tempfile.mkdtemp(prefix="portability-"))
    images = np.stack([preprocess(read_image(p)) for p in find_images([Path(args.images)])[: args.count]])
    reference = reference_probs(load_checkpoint(resolve_model("ultralbm", "torch")).model.eval(), images)
    np.save(data / "images.npy", images)
    np.save(data / "reference.npy", reference)
    models = {form: export_onnx("ultralbm", data / f"{form}.onnx", scan=form, check=False).path for form in export_scans()}
    models[OLD_LOOP] = slice_first_loop(models["loop"], data / "loop_slice_first.onnx")
    forms = list(models)
    forms.insert(forms.index("portable") + 1, SWAP_OFF)

    columns: dict[str, dict] = {}
    args.venvs.mkdir(parents=True, exist_ok=True)
    for version in ORT_VERSIONS:
        print(f"onnxruntime {version} ...", flush=True)
        columns[f"ONNX Runtime {version}"] = run_worker(venv_python(version, args.venvs), "onnxruntime", models, data)
    print("OpenVINO ...", flush=True)
    import openvino

    ov_results = run_worker(Path(sys.executable), "openvino", models, data)
    ov_results[OLD_LOOP]["forced"] = openvino_forced(models[OLD_LOOP], images, reference)
    columns[f"OpenVINO {openvino.__version__.split('-')[0]} (CPU, f32)"] = ov_results
    try:
        from ultralbm_edge.runtime.backends.tensorrt_env import load_tensorrt

        trt = load_tensorrt()
        print(f"{trt.package} {trt.version} ...", flush=True)
        columns[f"{trt.package} {trt.version} parse + fp32 build"] = tensorrt_builds(models, data)
    except Exception as e:  # noqa: BLE001 - no TensorRT installed: no column
        print(f"no TensorRT column: {e}")
    if not args.skip_litert:
        from importlib.metadata import version

        print("LiteRT ...", flush=True)
        name = f"LiteRT {version('ai-edge-litert')} (litert-torch {version('litert-torch')}, XNNPACK CPU)"
        columns[name] = litert_runs(list(models), data, images, reference)

    saved = [{"column": c, "results": r} for c, r in columns.items()]
    text = table(saved, forms)
    print(text)
    if args.readme:
        write_readme(args.readme, text)
    report(saved, args.json, images=args.count, batch=1, forms=forms)


if __name__ == "__main__":
    main()
