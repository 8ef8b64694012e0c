"""The peers' official code, run as published: which checkout is which peer, how each is imported and built, and
what it expects as input. Shared by peers_golden.py (CPU, mamba_ssm's pure-PyTorch reference) and peers_gpu.py
(mamba_ssm's CUDA kernels).

Third-party code is never vendored: every function takes the path of a checkout. Nothing in the checkouts is
changed on disk; the one repair DermoMamba needs to run at all (``module/VSSBlock.py`` calls ``F.silu`` without
importing ``torch.nn.functional as F``) is made on the imported module object and recorded in the provenance.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import subprocess
import sys
import types
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

DERMOMAMBA_SIZE = (192, 256)  # the only input size the official DermoMamba accepts (see models/dermomamba.py)


@dataclass(frozen=True)
class OfficialPeer:
    name: str  # the registry name of our re-implementation
    repo: str  # owner/name on GitHub
    marker: str  # a file only this checkout has
    module: str  # what to import, with ``paths`` (relative to the checkout) on sys.path
    cls: str
    kwargs: dict[str, Any] = field(default_factory=dict)  # the constructor call of the authors' training script
    paths: tuple[str, ...] = (".",)
    fixes: tuple[str, ...] = ()  # repairs made on the imported modules (see _repair)


PEERS = {
    p.name: p
    for p in (
        OfficialPeer("ultralight-vm-unet", "wurenkai/UltraLight-VM-UNet", "models/UltraLight_VM_UNet.py",
                     "models.UltraLight_VM_UNet", "UltraLight_VM_UNet",
                     dict(num_classes=1, input_channels=3, c_list=[8, 16, 24, 32, 48, 64], split_att="fc", bridge=True)),
        OfficialPeer("resmamba-ulite", "ndhieu2oo3/ResMamba-ULite", "module/model/remambaulite.py",
                     "module.model.remambaulite", "ResMambaULite"),
        # proposed_net.py imports `model.encoder` (module/ on the path), the files it imports `module.…` (the root).
        OfficialPeer("dermomamba", "hnkhai25/DermoMamba", "module/model/proposed_net.py", "module.model.proposed_net",
                     "DermoMamba", paths=(".", "module"), fixes=("module.VSSBlock: F = torch.nn.functional",)),
    )
}  # fmt: skip

# Top-level package names the official checkouts use; forgotten between peers (two of them are called "module").
_OFFICIAL_PACKAGES = ("models", "module", "model")


def identify_checkout(repo: Path) -> OfficialPeer:
    found = [p for p in PEERS.values() if (repo / p.marker).is_file()]
    if len(found) != 1:
        raise SystemExit(f"{repo}: not a checkout of one of {[p.repo for p in PEERS.values()]} (no {[p.marker for p in PEERS.values()]})")
    return found[0]


def checkout_commit(repo: Path) -> str:
    """The checkout's git commit, or "unknown" for a copy without .git. A copy inside another repository (a folder
    carried to the GPU machine inside ours) is not a checkout: git would answer with the enclosing repository's
    commit, so the top level must be the folder itself."""
    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "--show-toplevel", "HEAD"], capture_output=True,
                             text=True, check=True).stdout.split()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return out[1] if Path(out[0]).resolve() == repo.resolve() else "unknown (not a git checkout)"


@contextmanager
def _imports_from(repo: Path, paths: tuple[str, ...]) -> Iterator[None]:
    saved_path = list(sys.path)
    sys.path[:0] = [str((repo / p).resolve()) for p in paths]
    try:
        yield
    finally:
        sys.path[:] = saved_path
        for name in [n for n in sys.modules if n.split(".")[0] in _OFFICIAL_PACKAGES]:
            del sys.modules[name]


def _repair(peer: OfficialPeer) -> None:
    if peer.name == "dermomamba":
        vss = sys.modules["module.VSSBlock"]
        if not hasattr(vss, "F"):
            vss.F = F


def build_official(peer: OfficialPeer, repo: Path) -> nn.Module:
    """The authors' network from ``repo``, as their training script constructs it (its own init, eval mode)."""
    with _imports_from(repo, peer.paths):
        module = importlib.import_module(peer.module)
        _repair(peer)
        return getattr(module, peer.cls)(**peer.kwargs).eval()


def official_probs(peer: OfficialPeer, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The official network's probabilities for ``images``, (N, 3, 256, 256) in [0, 255] as this project preprocesses
    them, with the same input scaling and size adaptation as our re-implementation's ``forward``:

    - UltraLight VM-UNet takes [0, 255] (their min-max loader) and ends with a sigmoid;
    - ResMamba-ULite takes ToTensor()'s [0, 1] and returns logits;
    - DermoMamba takes [0, 1] at 192x256 only and returns logits: resized in and out, bilinearly."""
    if peer.name == "ultralight-vm-unet":
        return model(images)
    x = images / 255.0
    if peer.name == "resmamba-ulite":
        return torch.sigmoid(model(x))
    size = tuple(images.shape[2:])
    logits = model(F.interpolate(x, DERMOMAMBA_SIZE, mode="bilinear", align_corners=False))
    return torch.sigmoid(F.interpolate(logits, size, mode="bilinear", align_corners=False))


def _module(name: str, package: bool = False, **attrs: Any) -> types.ModuleType:
    mod = types.ModuleType(name)
    if package:
        mod.__path__ = []  # a package with no files: its other submodules are absent (ImportError)
    mod.__dict__.update(attrs)
    sys.modules[name] = mod
    return mod


def install_mamba_reference(mamba_path: Path) -> dict[str, str]:
    """Make ``import mamba_ssm`` give mamba_ssm's own pure-PyTorch path, from the checkout ``mamba_path``:

    - ``mamba_ssm.ops.selective_scan_interface.selective_scan_fn`` is that file's ``selective_scan_ref`` (taken
      from its source as written: the file itself imports the CUDA extension and Triton);
    - ``mamba_ssm.Mamba`` is ``mamba_ssm/modules/mamba_simple.py`` as written, which without ``causal_conv1d``
      runs its reference path: nn.Conv1d, then selective_scan_fn.

    Returns the provenance (checkout commit, files used)."""
    import einops

    interface = mamba_path / "mamba_ssm" / "ops" / "selective_scan_interface.py"
    simple = mamba_path / "mamba_ssm" / "modules" / "mamba_simple.py"
    for f in (interface, simple):
        if not f.is_file():
            raise SystemExit(f"{mamba_path}: no {f.relative_to(mamba_path)} — pass a checkout of state-spaces/mamba")
    tree = ast.parse(interface.read_text(), str(interface))
    ref = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "selective_scan_ref"]
    scope: dict[str, Any] = {"torch": torch, "F": F, "rearrange": einops.rearrange, "repeat": einops.repeat}
    exec(compile(ast.Module(body=ref, type_ignores=[]), str(interface), "exec"), scope)  # noqa: S102 - their code

    def fused_path(*_: Any, **__: Any) -> None:
        raise RuntimeError("mamba_ssm's fused path needs CUDA; the reference stand-in has none")

    for name in [n for n in sys.modules if n == "mamba_ssm" or n.startswith("mamba_ssm.")]:
        del sys.modules[name]
    package = _module("mamba_ssm", package=True)
    _module("mamba_ssm.ops", package=True)
    _module("mamba_ssm.modules", package=True)
    _module("mamba_ssm.ops.selective_scan_interface", selective_scan_ref=scope["selective_scan_ref"],
            selective_scan_fn=scope["selective_scan_ref"], mamba_inner_fn=fused_path)  # fmt: skip
    spec = importlib.util.spec_from_file_location("mamba_ssm.modules.mamba_simple", simple)
    assert spec is not None and spec.loader is not None
    mamba_simple = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mamba_simple
    spec.loader.exec_module(mamba_simple)
    mamba_simple.causal_conv1d_fn = None  # the reference path even where causal_conv1d happens to be installed
    package.Mamba = mamba_simple.Mamba
    return {"mamba_ssm_commit": checkout_commit(mamba_path),
            "mamba_ssm_files": f"{interface.relative_to(mamba_path)}:selective_scan_ref, {simple.relative_to(mamba_path)}"}  # fmt: skip


def install_timm_stand_in() -> str:
    """The peers import three helpers from timm (which needs torchvision). Where timm is missing, stand-ins with
    timm's semantics: ``trunc_normal_`` and ``to_2tuple`` (construction only; the weights are replaced anyway) and
    ``DropPath`` (the peers use drop rate 0: the identity)."""
    try:
        importlib.import_module("timm.models.layers")
        return "timm " + importlib.import_module("timm").__version__
    except ImportError:
        pass

    class DropPath(nn.Module):
        def __init__(self, drop_prob: float = 0.0, scale_by_keep: bool = True) -> None:
            super().__init__()
            self.drop_prob, self.scale_by_keep = drop_prob, scale_by_keep

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.drop_prob == 0.0 or not self.training:
                return x
            keep = 1 - self.drop_prob
            mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
            return x * (mask / keep if self.scale_by_keep else mask)

    def to_2tuple(x: Any) -> tuple:
        return tuple(x) if isinstance(x, (list, tuple)) else (x, x)

    trunc_normal_: Callable[..., torch.Tensor] = nn.init.trunc_normal_
    helpers = dict(DropPath=DropPath, to_2tuple=to_2tuple, trunc_normal_=trunc_normal_)
    for name in ("timm", "timm.layers", "timm.models", "timm.models.layers"):
        _module(name, package=True, **helpers)
    return "stand-in (timm not installed): DropPath, to_2tuple, trunc_normal_"
