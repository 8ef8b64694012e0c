import pytest
import torch

from ultralbm_edge.models import count_parameters, create_model, list_models
from ultralbm_edge.models.mamba import Mamba
from ultralbm_edge.ops import scan_strategies, selective_scan


def test_parameter_counts_match_the_paper():
    assert count_parameters(create_model("ultralbm")) == 34_166  # paper: 0.034M
    assert count_parameters(create_model("ultralbm-t")) == 10_956  # paper: 0.011M


def test_forward_shape_and_range():
    torch.manual_seed(0)
    model = create_model("ultralbm-t", scan="chunked").eval()
    with torch.no_grad():
        y = model(torch.rand(2, 3, 64, 64) * 255)
    assert y.shape == (2, 1, 64, 64)
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0


def test_unknown_variant_is_named():
    with pytest.raises(ValueError, match="ultralbm-t"):
        create_model("ultralbm-xl")


def test_mamba_names_and_shapes_match_mamba_ssm():
    # mamba_ssm.Mamba(d_model=8): d_inner 16, dt_rank ceil(8/16)=1, d_state 16, d_conv 4.
    shapes = {k: tuple(v.shape) for k, v in Mamba(8).state_dict().items()}
    assert shapes == {
        "A_log": (16, 16),
        "D": (16,),
        "in_proj.weight": (32, 8),
        "conv1d.weight": (16, 1, 4),
        "conv1d.bias": (16,),
        "x_proj.weight": (33, 16),
        "dt_proj.weight": (16, 1),
        "dt_proj.bias": (16,),
        "out_proj.weight": (8, 16),
    }


@pytest.mark.parametrize("strategy", [s for s in scan_strategies() if s != "sequential"])
@pytest.mark.parametrize("length", [1, 7, 64, 256])
def test_scan_strategies_equal_reference(strategy, length):
    torch.manual_seed(length)
    b, d, n = 2, 6, 16
    u, dt, z = torch.randn(b, d, length), torch.randn(b, d, length), torch.randn(b, d, length)
    A = -torch.rand(d, n) * 4
    B, C = torch.randn(b, n, length), torch.randn(b, n, length)
    D, bias = torch.randn(d), torch.randn(d)
    ref = selective_scan(u, dt, A, B, C, D, z, bias, True, strategy="sequential")
    out = selective_scan(u, dt, A, B, C, D, z, bias, True, strategy=strategy)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_scan_does_not_overflow_with_long_sequences_and_strong_decay():
    # exp of a running positive sum overflows here; products of decays <= 1 cannot.
    length, d, n = 256, 4, 16
    A = -torch.full((d, n), 50.0)
    dt = torch.full((1, d, length), 5.0)
    ones = torch.ones(1, n, length)
    for strategy in scan_strategies():
        y = selective_scan(torch.ones(1, d, length), dt, A, ones, ones, strategy=strategy)
        assert torch.isfinite(y).all(), strategy


def test_unknown_scan_strategy_is_named():
    with pytest.raises(ValueError, match="parallel"):
        x = torch.zeros(1, 2, 3)
        selective_scan(x, x, torch.zeros(2, 4), torch.zeros(1, 4, 3), torch.zeros(1, 4, 3), strategy="magic")


def test_batched_bidirectional_glmbp_equals_four_separate_calls(official_model):
    block = official_model.encoder5[0]
    torch.manual_seed(0)
    x = torch.randn(2, block.input_dim, 8, 8)
    with torch.no_grad():
        got = block(x)
        # The authors' formulation: four Mamba calls, backward ones on flipped sequences.
        tokens = block.norm(x.flatten(2).transpose(1, 2))
        x1, x2, x3, x4 = torch.chunk(tokens, 4, dim=2)
        m = block.mamba
        m1 = m(x1) + m(x1.flip(1)).flip(1) + block.skip_scale * x1
        m2 = m(x2) + m(x2.flip(1)).flip(1) + block.skip_scale * x2
        x3i = x3.transpose(1, 2).reshape(2, -1, 8, 8)
        m3 = block.sep_conv(x3i).flatten(2).transpose(1, 2) + block.skip_scale * x3
        m4 = x4 + block.skip_scale * x4
        want = block.proj(block.norm(torch.cat([m1, m2, m3, m4], 2))).transpose(1, 2).reshape(2, -1, 8, 8)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_every_variant_builds():
    for name in list_models():
        assert count_parameters(create_model(name)) > 0
