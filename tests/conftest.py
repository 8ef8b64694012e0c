"""Shared test fixtures: the real data and the authors' checkpoint in ../shared (never faked)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ULTRALBM_SHARED", REPO.parent / "shared"))
OFFICIAL = SHARED / "fixtures" / "official"
DATA = SHARED / "data"


def _require(path: Path) -> Path:
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing: the tests use the project's real data in ../shared (or set ULTRALBM_SHARED)"
        )
    return path


@pytest.fixture(scope="session")
def official_dir() -> Path:
    return _require(OFFICIAL)


@pytest.fixture(scope="session")
def golden(official_dir: Path) -> dict[str, np.ndarray]:
    with np.load(official_dir / "golden_dev.npz") as g:
        return {k: g[k] for k in g.files}


@pytest.fixture(scope="session")
def ph2_val_images() -> Path:
    return _require(DATA / "ph2" / "val" / "images")


@pytest.fixture(scope="session")
def isic_val() -> Path:
    return _require(DATA / "isic2017" / "val")


@pytest.fixture(scope="session")
def official_model(official_dir: Path):
    from ultralbm_edge.checkpoint import load_checkpoint

    return load_checkpoint(official_dir / "best.pth").model


@pytest.fixture(scope="session")
def onnx_model(official_dir: Path, tmp_path_factory) -> Path:
    """The official checkpoint exported once per session (dynamic batch, default scan), parity-checked."""
    from ultralbm_edge.export import export_onnx

    out = tmp_path_factory.mktemp("onnx") / "official.onnx"
    export_onnx(official_dir / "best.pth", out, dynamic_batch=True)
    return out


@pytest.fixture(scope="session")
def exported_scans(tmp_path_factory) -> dict:
    """The bundled ISIC-trained checkpoint exported once per scan strategy (fixed batch 1), each through the parity
    gate. Bundled, not the authors' PH2 checkpoint: in that one the recurrence moves the output by < 2e-5, so parity
    could not tell a wrong scan from a right one; in the bundled model dropping it moves probabilities by 2.5e-2."""
    from ultralbm_edge.export import export_onnx, export_scans

    d = tmp_path_factory.mktemp("scans")
    return {s: export_onnx("ultralbm", d / f"{s}.onnx", scan=s) for s in export_scans()}


@pytest.fixture(scope="session")
def sample_images() -> np.ndarray:
    """Six bundled sample images, preprocessed (a batch for runtime parity checks)."""
    from ultralbm_edge.assets import SAMPLE_IMAGES
    from ultralbm_edge.runtime.dataset import load_images

    return load_images(SAMPLE_IMAGES, 6, 256).images


@pytest.fixture(scope="session")
def sample_reference(sample_images) -> np.ndarray:
    """The bundled model's PyTorch probabilities (sequential scan) for ``sample_images``: what every runtime must match."""
    from ultralbm_edge.checkpoint import load_checkpoint
    from ultralbm_edge.export import reference_probs
    from ultralbm_edge.runtime.model_files import resolve_model

    return reference_probs(load_checkpoint(resolve_model("ultralbm", "torch")).model.eval(), sample_images)


@pytest.fixture(scope="session")
def format_export(tmp_path_factory):
    """``format_export(name)``: the bundled checkpoint exported once per session to that row of the format table
    (dynamic batch where the format has one, else its fixed batch 1), through the exporter's parity gate."""
    from ultralbm_edge.export import export_model
    from ultralbm_edge.runtime.formats import format_named

    folder, done = tmp_path_factory.mktemp("formats"), {}

    def export(name: str):
        if name not in done:
            fmt = format_named(name)
            done[name] = export_model("ultralbm", folder / f"model{fmt.suffixes[0]}", format=name, dynamic_batch=fmt.dynamic_batch)
        return done[name]

    return export


def cli_exe() -> str:
    """The installed console script (beside this interpreter when the venv is not activated)."""
    import shutil
    import sys

    return shutil.which("ultralbm-edge") or str(Path(sys.executable).with_name("ultralbm-edge"))


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None):
    """Run the installed console script in a subprocess (as a user would)."""

    return subprocess.run([cli_exe(), *args], capture_output=True, text=True, env=env, cwd=cwd)


@pytest.fixture(scope="session")
def installed_wheel(tmp_path_factory) -> Path:
    """A normal (non-editable) install of the project's wheel, without its dependencies, in a folder of its own:
    the layout users get, where runtime/, export/ and calibration/ sit inside ultralbm_edge/."""
    import sys

    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(REPO)],
        check=True,
    )
    (whl,) = out.glob("ultralbm_edge-*.whl")
    site = out / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(whl)], check=True)
    return whl


@pytest.fixture()
def small_disk(tmp_path):
    """A 32 KB tmpfs, remountable (root only; skipped with the reason elsewhere)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def remount(mnt: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(mnt)], check=True)
