"""The fused Triton scan and the CUDA-graph runner, on a CUDA GPU (skipped with a reason elsewhere)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ultralbm_edge.ops import selective_scan
from ultralbm_edge.runtime.imageio import read_image
from ultralbm_edge.runtime.metrics import dice
from ultralbm_edge.runtime.parity import compare
from ultralbm_edge.runtime.preprocess import preprocess

_skip_without_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU; PyTorch sees none")


def needs_cuda(test):
    return pytest.mark.gpu(_skip_without_cuda(test))


def _scan_inputs(b: int, d: int, n: int, length: int, seed: int, device: str = "cuda") -> dict:
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g).to(device)

    return dict(
        u=r(b, d, length),
        # delta in the layout the model passes: (b, d, L) view of a (b, L, d) tensor
        delta=r(b, length, d).transpose(1, 2),
        A=-torch.rand(d, n, generator=g).to(device) * 4,
        B=r(b, n, length),
        C=r(b, n, length),
        D=r(d),
        z=r(b, 2 * d, length)[:, d:],  # every other channel block, as x/z come out of in_proj
        delta_bias=r(d),
    )


def _relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.double() - ref.double()).norm() / ref.double().norm())


@needs_cuda
@pytest.mark.parametrize("shape", [(2, 6, 16, 1), (2, 6, 16, 7), (4, 16, 16, 256), (3, 24, 16, 64), (1, 5, 3, 70), (64, 32, 16, 64)])
@pytest.mark.parametrize("optional", ["all", "none"])
def test_triton_scan_equals_float64_reference(shape, optional):
    b, d, n, length = shape
    inputs = _scan_inputs(b, d, n, length, seed=length * 31 + d)
    if optional == "none":
        inputs.update(D=None, z=None, delta_bias=None)
        inputs["delta"] = inputs["delta"].abs()  # without softplus, delta must be positive (decays <= 1)
    softplus = optional == "all"
    ref = selective_scan(**{k: v.double() if v is not None else None for k, v in inputs.items()},
                         delta_softplus=softplus, strategy="sequential")  # fmt: skip
    out = selective_scan(**inputs, delta_softplus=softplus, strategy="triton")
    assert out.shape == ref.shape and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert _relative_error(out, ref) < 1e-5


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_triton_scan_is_stable_in_half_precision(dtype):
    # Long sequence, strong decays and large deltas: an exp of a running sum would overflow fp16.
    inputs = _scan_inputs(8, 16, 16, 256, seed=7)
    inputs["delta"] = inputs["delta"] * 4
    ref = selective_scan(**{k: v.double() for k, v in inputs.items()}, delta_softplus=True, strategy="sequential")
    half = {k: v.to(dtype) if k in ("u", "delta", "B", "C", "z") else v for k, v in inputs.items()}
    out = selective_scan(**half, delta_softplus=True, strategy="triton")
    assert out.dtype == dtype and torch.isfinite(out).all()
    assert _relative_error(out, ref) < (1e-2 if dtype == torch.float16 else 3e-2)


@needs_cuda
def test_triton_scan_gradients_equal_the_pure_pytorch_scan():
    inputs = _scan_inputs(2, 8, 16, 64, seed=3)
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in inputs.items()}
    ref_leaves = {k: v.detach().clone().requires_grad_(True) for k, v in inputs.items()}
    grad_out = torch.randn_like(inputs["u"])
    selective_scan(**leaves, delta_softplus=True, strategy="triton").backward(grad_out)
    selective_scan(**ref_leaves, delta_softplus=True, strategy="chunked").backward(grad_out)
    for k in inputs:
        torch.testing.assert_close(leaves[k].grad, ref_leaves[k].grad, rtol=1e-4, atol=1e-4, msg=k)


@needs_cuda
def test_triton_scan_refuses_cpu_tensors_with_a_hint():
    inputs = _scan_inputs(1, 4, 16, 8, seed=0, device="cpu")
    with pytest.raises(RuntimeError, match="chunked"):
        selective_scan(**inputs, strategy="triton")


@pytest.fixture
def fresh_model(official_dir):
    """The official model, loaded anew: the runner moves it to the GPU and switches its scan."""
    from ultralbm_edge.checkpoint import load_checkpoint

    return load_checkpoint(official_dir / "best.pth").model


@pytest.fixture(scope="module")
def golden_batch(golden, ph2_val_images) -> np.ndarray:
    return np.stack([preprocess(read_image(ph2_val_images / n)) for n in golden["names"]])


@needs_cuda
@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_graph_runner_reproduces_the_authors_outputs(fresh_model, golden, golden_batch, precision):
    from ultralbm_edge.gpu import CudaGraphRunner

    runner = CudaGraphRunner(fresh_model, precision=precision, max_batch=16)  # 30 images: slices of 16 and 14
    probs = runner.run(golden_batch)
    assert probs.shape == golden["probs"].shape and probs.dtype == np.float32
    report = compare(probs, golden["probs"], reference="the authors' outputs")
    if precision == "fp32":
        assert report.ok, report.summary()
    else:
        assert report.min_mask_dice >= 0.98, report.summary()


@needs_cuda
def test_graph_replay_follows_new_inputs(fresh_model, golden_batch):
    from ultralbm_edge.gpu import CudaGraphRunner

    runner = CudaGraphRunner(fresh_model)
    first = runner.run(golden_batch[:2])
    second = runner.run(golden_batch[2:4])  # same batch size: the same graph, new data
    # The runner's fp32 is TF32-free; so must the eager reference be (PyTorch lets cuDNN use TF32 by default).
    saved = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        with torch.inference_mode():
            eager = runner.model(torch.from_numpy(golden_batch[2:4]).cuda()).cpu().numpy()
    finally:
        torch.backends.cudnn.allow_tf32 = saved
    np.testing.assert_allclose(second, eager, atol=1e-5)
    assert not np.allclose(first, second)


@needs_cuda
def test_torch_backend_on_cuda_uses_the_graph_runner(official_dir, golden, golden_batch):
    from ultralbm_edge.torch_backend import TorchBackend

    backend = TorchBackend(official_dir / "best.pth", device="cuda")
    assert backend.metadata.scan_strategy == "triton"
    with torch.inference_mode():  # as callers may run it; the graph's buffers must accept that too
        probs = backend.run(golden_batch[:5])
    probs_again = backend.run(golden_batch[:5])
    np.testing.assert_array_equal(probs, probs_again)
    assert np.abs(probs - golden["probs"][:5]).max() <= 5e-3


def test_triton_strategy_is_named_in_the_unknown_strategy_error():
    with pytest.raises(ValueError, match="triton"):
        selective_scan(*[torch.zeros(1, 1, 1)] * 2, torch.zeros(1, 1), *[torch.zeros(1, 1, 1)] * 2, strategy="nope")


@needs_cuda
def test_mixed_precision_training_and_distillation_on_cuda(tmp_path):
    """--amp on CUDA (the losses run in fp32 outside autocast), with the default GPU scan (Triton)."""
    from conftest import DATA
    from ultralbm_edge.checkpoint import load_checkpoint
    from ultralbm_edge.train import TrainConfig, train

    cfg = dict(data=str(DATA / "isic2017"), epochs=1, batch_size=4, limit=16, device="cuda", amp=True)
    lines: list[str] = []
    train(TrainConfig(out=str(tmp_path / "run"), **cfg), log=lines.append)
    assert "epoch 1/1" in lines[-1]
    teacher = load_checkpoint(tmp_path / "run" / "best.pth")
    assert teacher.provenance["recipe"]["amp"] is True and teacher.provenance["recipe"]["scan"] == "triton"
    train(TrainConfig(out=str(tmp_path / "student"), variant="ultralbm-t", teacher=str(tmp_path / "run" / "best.pth"), **cfg),
          log=lambda _: None)  # fmt: skip
    assert load_checkpoint(tmp_path / "student" / "best.pth").variant == "ultralbm-t"


def _training_setup(seed: int = 0):
    from ultralbm_edge.models import create_model
    from ultralbm_edge.train.losses import BceDiceLoss
    from ultralbm_edge.train.step import prepare_optimizer_for_graph

    torch.manual_seed(seed)
    model = create_model("ultralbm", scan="triton").cuda().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=1, eta_min=1e-6)  # 1e-3, then 1e-6
    prepare_optimizer_for_graph(optimizer, torch.device("cuda"))
    loss_fn = BceDiceLoss()

    def step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return model, scheduler, step


@needs_cuda
def test_recorded_training_step_trains_like_the_eager_step_and_follows_the_learning_rate():
    """Three warm-up steps, the recording, replays on new batches: losses and parameters as the eager step's, within
    the eager step's own run-to-run spread (cuDNN's and the scan's backward kernels accumulate in no fixed order:
    measured on an H200, two eager runs differ by 4.8e-5 in some parameter after 7 steps, eager vs recorded 4.1e-5).
    The schedule drops the learning rate from 1e-3 to 1e-6 before the last two steps: a graph that kept the rate it
    was recorded with would move the parameters ~1e-3 each step further than the eager step."""
    from conftest import DATA
    from ultralbm_edge.train.data import augment, load_split
    from ultralbm_edge.train.step import GraphedStep

    images, masks = (t.cuda() for t in load_split(DATA / "isic2017" / "val", limit=16))
    generator = torch.Generator(device="cuda").manual_seed(0)
    batches = [augment(images[i : i + 4], masks[i : i + 4], generator) for i in (0, 4, 8, 12, 0, 4, 8)]
    runs = []
    for recorded in (False, True):
        model, scheduler, step = _training_setup()
        run_step = GraphedStep(step) if recorded else step
        losses = []
        for i, (x, y) in enumerate(batches):
            losses.append(float(run_step(x, y)))
            if i == 4:
                scheduler.step()
        runs.append((losses, [p.detach().clone() for p in model.parameters()]))
    (eager_losses, eager_params), (graph_losses, graph_params) = runs
    assert graph_losses == pytest.approx(eager_losses, abs=1e-4)  # batches differ in loss by 1e-2 and more
    assert max(float((a - b).abs().max()) for a, b in zip(eager_params, graph_params)) < 2.5e-4


@needs_cuda
def test_training_with_a_recorded_step_matches_eager_training_and_resumes(tmp_path):
    """``train`` on CUDA records its step by default; its run matches --no-cuda-graph (AdamW's capturable form rounds
    differently, so close, not bitwise), and a recorded run resumes on the schedule of an uninterrupted one (the
    augmentation draws restart, so the losses differ), its saved optimiser state loading on the CPU too."""
    from conftest import DATA
    from ultralbm_edge.checkpoint import load_checkpoint
    from ultralbm_edge.train import TrainConfig, train

    cfg = dict(data=str(DATA / "isic2017"), batch_size=4, limit=16, device="cuda")
    graph = train(TrainConfig(out=str(tmp_path / "graph"), epochs=2, **cfg), log=lambda _: None)["history"]
    eager = train(TrainConfig(out=str(tmp_path / "eager"), epochs=2, cuda_graph=False, **cfg), log=lambda _: None)["history"]
    assert load_checkpoint(tmp_path / "graph" / "last.pth").provenance["cuda_graph"] is True
    assert load_checkpoint(tmp_path / "eager" / "last.pth").provenance["cuda_graph"] is False
    for g, e in zip(graph, eager):
        assert g["val_loss"] == pytest.approx(e["val_loss"], rel=1e-3) and g["lr"] == pytest.approx(e["lr"])
    train(TrainConfig(out=str(tmp_path / "resumed"), epochs=1, **cfg), log=lambda _: None)
    resumed = train(TrainConfig(out=str(tmp_path / "resumed"), epochs=2, resume=True, **cfg), log=lambda _: None)["history"]
    assert [h["epoch"] for h in resumed] == [1, 2] and resumed[-1]["lr"] == pytest.approx(graph[-1]["lr"])
    on_cpu = TrainConfig(out=str(tmp_path / "resumed"), epochs=3, resume=True, **{**cfg, "device": "cpu", "limit": 4})
    assert len(train(on_cpu, log=lambda _: None)["history"]) == 3


@needs_cuda
@pytest.mark.parametrize("shape", [(2, 8, 64, 64), (1, 1, 128, 128), (3, 5, 7, 9), (256, 32, 8, 8)])
def test_fused_upsample_is_as_exact_as_pytorch(shape):
    """Against a float64 reference: within 1e-5 and no further off than PyTorch's own fp32 bilinear kernel."""
    import torch.nn.functional as F

    from ultralbm_edge.ops.triton.upsample import up2_fused

    def up(t: torch.Tensor) -> torch.Tensor:
        return F.interpolate(t, scale_factor=2.0, mode="bilinear", align_corners=True)

    torch.manual_seed(0)
    x = torch.randn(shape, device="cuda") * 3
    exact = up(x.double())
    skip, k = torch.randn_like(exact), torch.tensor(0.7, device="cuda")
    err = float((up2_fused(x) - exact).abs().max())
    assert err <= 1e-5 and err <= float((up(x) - exact).abs().max()) + 1e-6
    assert (up2_fused(x, "sigmoid") - torch.sigmoid(exact)).abs().max() <= 1e-5
    fused = up2_fused(x, "gelu_add", skip=skip.float(), k=k)
    assert (fused - (F.gelu(exact) + 0.7 * skip)).abs().max() <= 1e-5
    head = torch.nn.Conv2d(shape[1], 1, 1).cuda()
    with torch.no_grad():
        headed = up2_fused(x, "gelu_add", skip=skip.float(), k=k, head=(head.weight, head.bias))
        assert (headed - head.double()(F.gelu(exact) + 0.7 * skip)).abs().max() <= 1e-5
        two = torch.nn.Conv2d(shape[1], 2, 1).cuda()
        with pytest.raises(ValueError, match="1x1 conv"):
            up2_fused(x, "gelu_add", skip=skip.float(), k=k, head=(two.weight, two.bias))
    with pytest.raises(ValueError, match="float32"):
        up2_fused(x.half())


def _branch(q: int, k: int, device: str) -> torch.nn.Module:
    """A DepthwiseSeparableConvBNAct in eval mode with non-trivial BatchNorm statistics."""
    from ultralbm_edge.models.ultralbm_unet import DepthwiseSeparableConvBNAct

    branch = DepthwiseSeparableConvBNAct(q, q, k)
    with torch.no_grad():
        for bn in (branch.bn_dw, branch.bn_pw):
            bn.running_mean.normal_(), bn.running_var.uniform_(0.5, 2.0), bn.weight.normal_(), bn.bias.normal_()
            bn.eps = 0.1  # large enough that a kernel ignoring eps would fail the comparison
    return branch.to(device).eval()


@needs_cuda
@pytest.mark.parametrize("shape", [(1, 8, 5, 16, 16), (256, 12, 7, 8, 8), (3, 6, 3, 9, 7), (2, 16, 7, 8, 8), (2, 3, 3, 5, 6)])
def test_fused_conv_branch_matches_a_float64_reference(shape):
    """The LMBP/GLMBP conv branch kernel, on a channel slice of a token tensor as the blocks pass it."""
    from ultralbm_edge.models._fused import conv_branch
    from ultralbm_edge.models._layers import image_to_tokens, tokens_to_image

    n, q, k, h, w = shape
    torch.manual_seed(q * k)
    branch = _branch(q, k, "cuda")
    tokens = torch.randn(n, h * w, 4 * q, device="cuda")
    part, s = tokens[:, :, q : 2 * q], torch.tensor([0.7], device="cuda")
    with torch.inference_mode():
        exact = image_to_tokens(branch.double()(tokens_to_image(part.double(), (h, w)))) + 0.7 * part.double()
        out = conv_branch(branch.float(), part, (h, w), s)
        assert out.shape == part.shape and out.is_contiguous()
        assert (out - exact).abs().max() <= 1e-5
        with pytest.raises(ValueError, match="eval mode"):
            conv_branch(branch.train(), part, (h, w), s)


@needs_cuda
def test_graph_runner_reads_its_input_buffer_without_a_copy(fresh_model, golden_batch):
    from ultralbm_edge.gpu import CudaGraphRunner

    runner = CudaGraphRunner(fresh_model)
    x = torch.from_numpy(golden_batch[:2]).cuda()
    expected = runner.run_device(x).clone()
    buffer = runner.input_buffer(2)
    assert buffer is runner.input_buffer(2) and buffer.data_ptr() == runner._graphs[2].static_in.data_ptr()
    buffer.copy_(x.flip(0))
    copies = []
    original_copy = buffer.copy_
    buffer.copy_ = lambda *a, **k: copies.append(a) or original_copy(*a, **k)  # instance attribute: a spy
    assert torch.equal(runner.run_device(buffer), expected.flip(0)) and not copies  # read in place
    assert torch.equal(runner.run_device(x), expected) and len(copies) == 1  # any other tensor is copied in


@needs_cuda
def test_fused_kernels_model_equals_the_eager_model(fresh_model, golden_batch, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # fp32 against fp32 (TF32 moves it ~1e-2)
    import ultralbm_edge.ops.triton.sepconv as sepconv
    import ultralbm_edge.ops.triton.upsample as upsample

    calls = {"branch": 0, "head": 0}

    def spy(module, name, key, counts=lambda *a, **k: True):
        original = getattr(module, name)

        def wrapped(*args, **kwargs):
            calls[key] += bool(counts(*args, **kwargs))
            return original(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapped)

    spy(sepconv, "sep_conv_tokens", "branch")
    spy(upsample, "up2_fused", "head", counts=lambda *a, **k: k.get("head") is not None)
    x = torch.from_numpy(golden_batch).cuda()
    model = fresh_model.cuda().eval().set_scan_strategy("triton")
    with torch.inference_mode():
        eager = model(x)
        assert calls == {"branch": 0, "head": 0}
        model.fused_kernels = True
        fused = model(x)
    assert calls == {"branch": 10, "head": 1}  # every LMBP/GLMBP conv branch, and the head in the last upsampling
    # Both sides are fp32 roundings of the same function; the fused kernels are the closer ones to float64
    # (the tests above), and the decoder's norms amplify the 1e-5-level differences of the upsampled maps.
    assert (fused - eager).abs().max() <= 1e-3


@needs_cuda
@pytest.mark.parametrize("shape", [(256, 3, 8, 256, 256), (1, 8, 16, 128, 128), (3, 16, 24, 9, 7), (2, 24, 16, 32, 32)])
def test_fused_conv_stages_match_a_float64_reference(shape, monkeypatch):
    """conv3x3 + GroupNorm (+ max-pool + GELU) against float64 PyTorch, on inputs in the network's [0, 255] range:
    as close as PyTorch's own fp32 ops (cuDNN without TF32) are, and batch 256 (the benchmark's size) included."""
    import torch.nn.functional as F
    from torch import nn

    from ultralbm_edge.models._fused import conv_norm, conv_norm_pool_gelu
    from ultralbm_edge.ops.triton.upsample import up2_fused

    n, cin, cout, h, w = shape
    torch.manual_seed(0)
    conv, norm = nn.Conv2d(cin, cout, 3, padding=1).cuda(), nn.GroupNorm(min(4, cout), cout).cuda()
    with torch.no_grad():
        norm.weight.normal_(), norm.bias.normal_()
    x = torch.rand(n, cin, h, w, device="cuda") * 255

    def stage(t, c, g):
        return F.gelu(F.max_pool2d(g(c(t)), 2, 2))

    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    with torch.inference_mode():
        exact = stage(x.double(), conv.double(), norm.double())
        conv.float(), norm.float()
        torch_err = float((stage(x, conv, norm) - exact).abs().max())
        err = float((conv_norm_pool_gelu(x, conv, norm) - exact).abs().max())
        assert err <= max(2 * torch_err, 1e-5), (err, torch_err)
        y, scale, shift = conv_norm(x, conv, norm)
        assert (y - conv(x)).abs().max() <= 1e-3  # values in the hundreds: fp32 rounding
        normed = norm.double()(conv.double()(x.double()))
        assert (y.double() * scale[..., None, None] + shift[..., None, None] - normed).abs().max() <= 1e-4
        up = up2_fused(y, "none", affine=(scale, shift))
        ref = F.interpolate(normed, scale_factor=2.0, mode="bilinear", align_corners=True)
        assert (up - ref).abs().max() <= 1e-4
        with pytest.raises(ValueError, match="3x3"):
            conv_norm_pool_gelu(x, nn.Conv2d(cin, cout, 5, padding=2).cuda(), norm)


@needs_cuda
@pytest.mark.slow
@pytest.mark.parametrize("compile", [True, "max-autotune"])
def test_compiled_graph_works_at_batch_8_and_reproduces_the_authors_outputs(fresh_model, golden, golden_batch, compile):
    """torch.compile + CUDA graph beyond batch 1 (Inductor 2.11 needed its tiling analysis switched off), also
    with Inductor's autotuned Triton matrix products (fp32: TF32 off while compiling)."""
    from ultralbm_edge.gpu import CudaGraphRunner

    runner = CudaGraphRunner(fresh_model, compile=compile, max_batch=10)  # 30 images: three batches of 10
    probs = runner.run(golden_batch)
    report = compare(probs, golden["probs"], reference="the authors' outputs")
    assert report.ok, report.summary()


_INTERPRETER_CHECK = """
import torch, torch.nn.functional as F
from torch import nn
import ultralbm_edge.models.ultralbm_unet as unet
from ultralbm_edge.checkpoint import load_checkpoint
import ultralbm_edge.ops.triton.sepconv as sepconv
import ultralbm_edge.ops.triton.upsample as upsample
from ultralbm_edge.models._fused import conv_branch, conv_norm, conv_norm_pool_gelu, up2
from ultralbm_edge.ops.triton.conv import ConvTiles, GroupNormParams, conv3x3_group_norm
from ultralbm_edge.models._layers import image_to_tokens, tokens_to_image
from ultralbm_edge.models.ultralbm_unet import DepthwiseSeparableConvBNAct, UltraLBMUNet
from ultralbm_edge.runtime.model_files import resolve_model

torch.manual_seed(0)
for n, cin, cout, h, w in [(2, 3, 8, 16, 16), (1, 16, 24, 9, 7)]:
    conv, norm = nn.Conv2d(cin, cout, 3, padding=1).double(), nn.GroupNorm(min(4, cout), cout).double()
    with torch.no_grad():
        norm.weight.normal_(), norm.bias.normal_()
        x = torch.rand(n, cin, h, w, dtype=torch.float64) * 255
        exact = norm(conv(x))
        conv.float(), norm.float()
        pooled = conv_norm_pool_gelu(x.float(), conv, norm)
        assert (pooled - F.gelu(F.max_pool2d(exact, 2, 2))).abs().max() < 1e-5
        y, scale, shift = conv_norm(x.float(), conv, norm)
        up = up2(y, "none", affine=(scale, shift))
        assert (up - F.interpolate(exact, scale_factor=2.0, mode="bilinear", align_corners=True)).abs().max() < 1e-5
        # Output channels split across programs (cb=16 of 32 padded channels), as a benchmark may launch it.
        gn = GroupNormParams(norm.weight, norm.bias, norm.num_groups, norm.eps)
        y2, scale2, shift2 = conv3x3_group_norm(x.float(), conv.weight, conv.bias, gn, ConvTiles(16, 16, 16))
        assert (y2 - y).abs().max() < 1e-3 and (scale2 - scale).abs().max() < 1e-6 and (shift2 - shift).abs().max() < 1e-5
    head = nn.Conv2d(cout, 1, 1).double()
    with torch.no_grad():
        skip = torch.randn(n, cout, 2 * h, 2 * w, dtype=torch.float64)
        ref = head(F.gelu(F.interpolate(exact, scale_factor=2.0, mode="bilinear", align_corners=True)) + 0.5 * skip)
        up = up2(y, "gelu_add", skip=skip.float(), k=torch.tensor(0.5), affine=(scale, shift), head=head.float())
        assert (up - ref).abs().max() < 1e-5
for q, k, h, w in [(8, 5, 6, 5), (3, 3, 4, 4)]:
    branch = DepthwiseSeparableConvBNAct(q, q, k).double().eval()
    with torch.no_grad():
        for bn in (branch.bn_dw, branch.bn_pw):
            bn.running_mean.normal_(), bn.running_var.uniform_(0.5, 2.0), bn.weight.normal_(), bn.bias.normal_()
            bn.eps = 0.1  # large enough that a kernel ignoring eps would fail
        tokens = torch.randn(2, h * w, 4 * q, dtype=torch.float64)
        part = tokens[:, :, q : 2 * q]
        exact = image_to_tokens(branch(tokens_to_image(part, (h, w)))) + 0.7 * part
        out = conv_branch(branch.float(), part.float(), (h, w), torch.tensor([0.7]))
        assert (out - exact).abs().max() < 1e-5
unet._fusable = lambda t: t.dtype == torch.float32  # the interpreter runs on CPU tensors
calls = {"branch": 0, "head": 0}
branch_kernel, up_kernel = sepconv.sep_conv_tokens, upsample.up2_fused
def count_branch(*args, **kwargs):
    calls["branch"] += 1
    return branch_kernel(*args, **kwargs)
def count_head(*args, **kwargs):
    calls["head"] += kwargs.get("head") is not None
    return up_kernel(*args, **kwargs)
sepconv.sep_conv_tokens, upsample.up2_fused = count_branch, count_head
x = torch.rand(1, 3, 32, 32) * 255
# The bundled model (one-channel head: fused), and a two-class one (its head runs after the upsampling kernel).
for model, heads in [(load_checkpoint(resolve_model("ultralbm", "torch")).model, 1), (UltraLBMUNet(num_classes=2).eval(), 0)]:
    calls.update(branch=0, head=0)
    with torch.no_grad():
        eager = model(x)
        model.fused_kernels = True
        fused = model(x)
    assert fused.shape == eager.shape and (fused - eager).abs().max() < 1e-4
    assert calls == {"branch": 10, "head": heads}, calls
print("ok")
"""


def test_fused_kernels_in_triton_interpreter_on_cpu():
    """The conv-stage, upsampling and conv-branch kernels and the model path that uses them, checked without a
    GPU by Triton's interpreter (in a subprocess: the interpreter is chosen when the kernels are defined). The
    scan kernel's runtime-length loop is beyond Triton 3.6's interpreter; it is tested on the GPU."""
    pytest.importorskip("triton", reason="needs the triton package (CUDA builds of PyTorch ship it; CI's CPU build does not)")
    import os
    import subprocess
    import sys

    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run([sys.executable, "-c", _INTERPRETER_CHECK], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]


def test_device_preprocessing_equals_the_numpy_reference_on_cpu(ph2_val_images, isic_val):
    """``gpu.batch_stages.preprocess_on_device`` is the runtime's preprocessing (checked here on CPU tensors;
    the CUDA check below runs it on the GPU)."""
    from ultralbm_edge.gpu.batch_stages import preprocess_on_device

    for path in [*sorted(ph2_val_images.glob("*.jpg"))[:2], *sorted((isic_val / "images").glob("*.jpg"))[:2]]:
        rgb = read_image(path)
        got = preprocess_on_device(torch.from_numpy(rgb[None]), 256)[0].numpy()
        assert np.abs(got - preprocess(rgb)).max() <= 1e-3, path


@needs_cuda
def test_device_preprocessing_matches_the_numpy_reference_on_the_gpu(ph2_val_images, isic_val):
    from ultralbm_edge.gpu.batch_stages import preprocess_on_device

    for path in [*sorted(ph2_val_images.glob("*.jpg"))[:4], *sorted((isic_val / "images").glob("*.jpg"))[:4]]:
        rgb = read_image(path)
        got = preprocess_on_device(torch.from_numpy(rgb[None]).cuda(), 256)[0].cpu().numpy()
        assert np.abs(got - preprocess(rgb)).max() <= 1e-3, path


@needs_cuda
def test_gpu_folder_prediction_matches_the_cpu_path(official_dir, ph2_val_images, isic_val, tmp_path):
    """predict with the GPU batch stages vs the CPU stages on the same model: every mask within Dice 0.999, the same
    rows, on full-resolution PH2 and 256-px ISIC images in one folder (two sizes in a batch)."""
    import cv2

    from ultralbm_edge.runtime.backends import open_backend
    from ultralbm_edge.runtime.predict import BatchStages, PredictOptions, predict

    folder = tmp_path / "in"
    folder.mkdir()
    for p in [*sorted(ph2_val_images.glob("*.jpg"))[:10], *sorted((isic_val / "images").glob("*.jpg"))[:20]]:
        (folder / p.name).write_bytes(p.read_bytes())
    backend = open_backend(official_dir / "best.pth", device="cuda")
    assert backend.batch_stages(16) is not None
    gpu = predict([folder], backend, tmp_path / "gpu", PredictOptions(batch_size=16, workers=4))
    backend.batch_stages = lambda batch_size=8: BatchStages(backend)
    cpu = predict([folder], backend, tmp_path / "cpu", PredictOptions(batch_size=16, workers=4))
    assert gpu.ok == cpu.ok == 30
    for mask in (tmp_path / "cpu" / "masks").iterdir():
        a = cv2.imread(str(mask), cv2.IMREAD_GRAYSCALE) > 0
        b = cv2.imread(str(tmp_path / "gpu" / "masks" / mask.name), cv2.IMREAD_GRAYSCALE) > 0
        assert a.shape == b.shape and dice(a, b) >= 0.999, mask.name


@needs_cuda
@pytest.mark.parametrize("overlay", [False, True])
def test_pinned_slots_write_what_pageable_copies_write(official_dir, ph2_val_images, isic_val, tmp_path, monkeypatch, overlay):
    """The GPU stages read and write the shared-memory slots mapped into the GPU's address space, queued while the
    previous batch is handed over: byte for byte the outputs of the same stages with pageable copies, for images whose
    outputs fit their slot, PH2 images whose pixels and masks do not (pickled, pinned host copies), and a truncated
    file."""
    from run_outputs import assert_same_outputs
    from ultralbm_edge.gpu.batch_stages import GpuBatchStages
    from ultralbm_edge.runtime import predict as predict_module
    from ultralbm_edge.runtime.backends import open_backend
    from ultralbm_edge.runtime.predict import PredictOptions, predict

    folder = tmp_path / "in"
    folder.mkdir()
    for p in [*sorted(ph2_val_images.glob("*.jpg"))[:5], *sorted((isic_val / "images").glob("*.jpg"))[:40]]:
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "truncated.jpg").write_bytes((isic_val / "images" / "ISIC_0000006.jpg").read_bytes()[:3000])
    # A 256-px image's outputs fit, a PH2 image's mask not (slots not sized for the PH2 images)
    monkeypatch.setattr(predict_module, "_SLOT_BYTES_RANGE", (600_000, 600_000))
    backend = open_backend(official_dir / "best.pth", device="cuda")
    opts = PredictOptions(batch_size=16, workers=4, save_probs=True, overlay=overlay)
    pinned_batches = []
    launch_mapped = GpuBatchStages._launch_mapped
    monkeypatch.setattr(GpuBatchStages, "_launch_mapped", lambda self, items, *a: pinned_batches.append(len(items)) or launch_mapped(self, items, *a))
    pinned = predict([folder], backend, tmp_path / "pinned", opts)
    stages = backend.batch_stages(16)
    stages.max_pinned_bytes = 0
    backend.batch_stages = lambda batch_size=8: stages
    with pytest.warns(UserWarning, match="the shared slots are not pinned .* over the 0 MB pinned at most"):
        pageable = predict([folder], backend, tmp_path / "pageable", opts)
    assert sum(pinned_batches) == 45 and len(pinned_batches) == 3
    assert (pinned.ok, len(pinned.failed)) == (pageable.ok, len(pageable.failed)) == (45, 1)

    assert_same_outputs(tmp_path / "pinned", tmp_path / "pageable", ["masks", "probs"] + (["overlays"] if overlay else []), 45)


@needs_cuda
def test_mapped_host_memory_is_read_and_written_by_gpu_kernels():
    import mmap

    from ultralbm_edge.gpu.mapped_memory import map_host_memory, unmap_host_memory

    shared = mmap.mmap(-1, 1 << 20)  # as the slots: an anonymous shared mapping
    host = np.frombuffer(shared, np.uint8)
    host[:] = np.arange(host.size) % 251
    device = torch.device("cuda")
    mapped, why = map_host_memory(host.ctypes.data, host.nbytes, device)
    assert mapped is not None, why
    assert mapped.is_cuda and mapped.numel() == host.size
    assert torch.equal(mapped.view(torch.int32)[:4096].sum(dtype=torch.int64).cpu(), torch.tensor(int(host[: 4096 * 4].view(np.int32).sum(dtype=np.int64))))
    torch._foreach_copy_([mapped[64:96], mapped[1024:1100]], [torch.full((32,), 7, dtype=torch.uint8, device=device), torch.zeros(76, dtype=torch.uint8, device=device)])
    torch.cuda.synchronize()
    assert (host[64:96] == 7).all() and (host[1024:1100] == 0).all() and host[96] == 96 % 251
    del mapped
    unmap_host_memory(host.ctypes.data, device)
