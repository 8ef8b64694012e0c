"""The peers' golden fixtures (tests/fixtures/peers, written by benchmarks/peers_golden.py) and the weights behind
them.

Each peer's fixture holds the outputs of the *official* code on real ISIC 2017 images, run with random weights.
The weights themselves are not stored: ResMamba-ULite's and DermoMamba's state_dicts are 13 and 20 MB of
incompressible numbers. They are regenerated here, bit for bit, from the official state_dict's key list (names,
shapes and dtypes, recorded in the fixture from the official model) and a seed, by :func:`random_state_dict`:
integer arithmetic on a PCG64 bit stream (NumPy keeps BitGenerator streams stable across versions) and exactly
rounded float operations, so every platform rebuilds the same tensors.

Why random weights of O(1) scale rather than the authors' init: with their init, Mamba's output is about 1e-3 of
the residual path, so a wrong scan would hardly move the output; here no branch, norm, gate or residual is
negligible, and outputs stay unsaturated.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "peers"
INPUTS = FIXTURES / "inputs.npz"
# Probabilities are stored as 16-bit fixed point: resolution 1/65535 = 1.5e-5, far below the parity contract's
# max (5e-3) and mean (1e-4) tolerances, at half the size of float32.
PROB_SCALE = 65535


def _uniform(rng: np.random.PCG64, shape: tuple[int, ...], low: float, high: float) -> np.ndarray:
    """Uniform values on a grid of 2^24 steps in [low, high): the top 24 bits of each 64-bit draw, exact in float64."""
    n = int(np.prod(shape, dtype=np.int64))
    grid = (rng.random_raw(n) >> np.uint64(40)).astype(np.float64) / float(1 << 24)
    return (low + (high - low) * grid).reshape(shape)


def _spread(rng: np.random.PCG64, shape: tuple[int, ...], std: float) -> np.ndarray:
    """Zero-mean uniform values with standard deviation ``std``."""
    half = std * np.sqrt(3.0)
    return _uniform(rng, shape, -half, half)


def random_state_dict(spec: list[tuple[str, list[int], str]], seed: int) -> dict[str, Any]:
    """Random weights for a state_dict with keys, shapes and dtypes ``spec`` (in its order), as torch tensors.

    Weights ~ U with std 1/sqrt(fan_in); norm weights, D, skip scales ~ 1 +- 0.3; biases +- 0.2; BatchNorm running
    means +- 0.2 and variances in [0.5, 2); A_log(s) in [-1, 2.8) (decay rates 0.37..16); dt biases in [-5, -1)
    (softplus: dt 0.007..0.31); integer buffers (num_batches_tracked) 0."""
    import torch

    rng = np.random.PCG64(seed)
    out: dict[str, Any] = {}
    for key, shape, dtype in spec:
        shape = tuple(shape)
        leaf = key.rsplit(".", 1)[-1]
        if not dtype.startswith("float"):
            out[key] = torch.zeros(shape, dtype=getattr(torch, dtype))
            continue
        if leaf == "running_var":
            values = _uniform(rng, shape, 0.5, 2.0)
        elif leaf == "running_mean":
            values = _spread(rng, shape, 0.2)
        elif leaf in ("A_log", "A_logs"):
            values = _uniform(rng, shape, -1.0, 2.8)
        elif leaf == "dt_projs_bias" or key.endswith("dt_proj.bias"):
            values = _uniform(rng, shape, -5.0, -1.0)
        elif len(shape) >= 2:
            fan_in = shape[-1] if leaf in ("x_proj_weight", "dt_projs_weight") else int(np.prod(shape[1:]))
            values = _spread(rng, shape, fan_in**-0.5)
        elif leaf in ("weight", "D", "Ds", "scale", "skip_scale"):
            values = 1.0 + _spread(rng, shape, 0.3)
        else:
            values = _spread(rng, shape, 0.2)
        out[key] = torch.from_numpy(values.astype(np.float32))
    return out


def state_dict_spec(state_dict: dict[str, Any]) -> list[tuple[str, list[int], str]]:
    """(key, shape, dtype) of every entry, in order: what a fixture records of the official state_dict."""
    return [(k, list(v.shape), str(v.dtype).replace("torch.", "")) for k, v in state_dict.items()]


def load_inputs() -> tuple[np.ndarray, list[str]]:
    """The fixture images as float32 (N, 3, 256, 256) in [0, 255], and their file names."""
    with np.load(INPUTS) as f:
        return f["images"].astype(np.float32), [str(n) for n in f["names"]]


def load_golden(peer: str) -> dict[str, Any]:
    """A peer's fixture: ``probs`` float32 (N, 1, 256, 256), ``spec``, ``seed`` and ``meta`` (provenance)."""
    with np.load(FIXTURES / f"{peer}.npz") as f:
        meta = json.loads(str(f["meta"]))
        return {
            "probs": f["probs"].astype(np.float32) / PROB_SCALE,
            "spec": [tuple(e) for e in json.loads(str(f["spec"]))],
            "seed": int(f["seed"]),
            "meta": meta,
        }


def write_official_checkpoint(peer: str, path: Path) -> Path:
    """The official-format state_dict (plain ``torch.save`` of the weights) behind ``peer``'s fixture."""
    import torch

    golden = load_golden(peer)
    torch.save(random_state_dict(golden["spec"], golden["seed"]), path)
    return path
