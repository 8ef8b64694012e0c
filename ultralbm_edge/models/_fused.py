"""Adapters from this package's layers to the fused Triton kernels of ``ops.triton``, which take tensors only.

The layer side knows what its modules are; here it checks that a module is exactly what a kernel implements
(padding, bias, inference statistics, exact GELU) and hands the kernel the tensors. Imported by the networks only
when their fused inference path runs (CUDA, fp32, ``fused_kernels`` on), because it imports triton.
"""

from __future__ import annotations

from torch import Tensor, nn

from ..ops.triton import conv as _conv
from ..ops.triton import sepconv as _sepconv
from ..ops.triton import upsample as _upsample


def _group_norm(norm: nn.GroupNorm) -> _conv.GroupNormParams:
    if not norm.affine:
        raise ValueError("the fused conv kernels need an affine GroupNorm")
    return _conv.GroupNormParams(norm.weight, norm.bias, norm.num_groups, norm.eps)


def _conv3x3(conv: nn.Conv2d) -> tuple[Tensor, Tensor]:
    if (conv.kernel_size != (3, 3) or conv.padding != (1, 1) or conv.stride != (1, 1) or conv.groups != 1
            or conv.dilation != (1, 1) or conv.bias is None):  # fmt: skip
        raise ValueError(f"fused conv kernels implement a dense 3x3 conv with bias, padding 1 and stride 1, got {conv}")
    return conv.weight, conv.bias


def conv_norm_pool_gelu(x: Tensor, conv: nn.Conv2d, norm: nn.GroupNorm) -> Tensor:
    """``gelu(max_pool2d(norm(conv(x)), 2, 2))``."""
    return _conv.conv3x3_gn_pool_gelu(x, *_conv3x3(conv), _group_norm(norm))


def conv_norm(x: Tensor, conv: nn.Conv2d, norm: nn.GroupNorm) -> tuple[Tensor, Tensor, Tensor]:
    """``conv(x)`` and the (scale, shift) with which ``norm(conv(x)) == y * scale + shift``."""
    return _conv.conv3x3_group_norm(x, *_conv3x3(conv), _group_norm(norm))


def _batch_norm(bn: nn.BatchNorm2d) -> _sepconv.BatchNormParams:
    if bn.training or not bn.affine or bn.running_mean is None or bn.running_var is None:
        raise ValueError("sep_conv_tokens needs BatchNorm in eval mode with running statistics (model.eval())")
    return _sepconv.BatchNormParams(bn.running_mean, bn.running_var, bn.weight, bn.bias, bn.eps)


def conv_branch(branch: nn.Module, x: Tensor, hw: tuple[int, int], skip_scale: Tensor) -> Tensor:
    """``tokens(branch(image(x))) + skip_scale * x`` for a ``DepthwiseSeparableConvBNAct`` on tokens ``x``."""
    dw, pw = branch.dw, branch.pw
    k = dw.kernel_size[0]
    if (dw.kernel_size != (k, k) or dw.padding != (k // 2, k // 2) or dw.stride != (1, 1) or dw.dilation != (1, 1)
            or dw.groups != dw.in_channels or dw.bias is not None):  # fmt: skip
        raise ValueError(f"sep_conv_tokens implements an odd KxK depthwise conv without bias, 'same' padding, got {dw}")
    if pw.kernel_size != (1, 1) or pw.bias is not None:
        raise ValueError(f"sep_conv_tokens implements a 1x1 conv without bias, got {pw}")
    for act in (branch.act_dw, branch.act_pw):
        if not isinstance(act, nn.GELU) or act.approximate != "none":
            raise ValueError(f"sep_conv_tokens applies exact GELU, got {act}")
    bn_dw, bn_pw = _batch_norm(branch.bn_dw), _batch_norm(branch.bn_pw)
    return _sepconv.sep_conv_tokens(x, hw, dw.weight, bn_dw, pw.weight, bn_pw, skip_scale)


def fusable_head(head: nn.Module, channels: int) -> bool:
    """Whether ``up2`` can apply ``head`` inside the upsampling kernel: a plain 1x1 conv with bias from
    ``channels`` channels to one."""
    return (isinstance(head, nn.Conv2d) and head.kernel_size == (1, 1) and head.stride == (1, 1)
            and head.padding == (0, 0) and head.groups == 1 and head.in_channels == channels
            and head.out_channels == 1 and head.bias is not None)  # fmt: skip


def up2(
    x: Tensor,
    epilogue: str = "none",
    skip: Tensor | None = None,
    k: Tensor | None = None,
    affine: tuple[Tensor, Tensor] | None = None,
    head: nn.Conv2d | None = None,
) -> Tensor:
    """Bilinear x2 upsampling (align_corners) with an epilogue (see ``ops.triton.upsample.up2_fused``)."""
    head_tensors = (head.weight, head.bias) if head is not None else None
    return _upsample.up2_fused(x, epilogue, skip=skip, k=k, affine=affine, head=head_tensors)
