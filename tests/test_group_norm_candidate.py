"""GroupNorm as a candidate (``"GN<groups>"``) in SN and SSN: the naive formula, native GroupNorm, autograd."""
import pytest
import torch
from torch import nn

import ssn_plugins as S
from ssn_plugins.functional import check_candidates, switch_norm

from helpers import gradcheck_module, randomize

SHAPES = {1: (6, 8, 7), 2: (4, 8, 5, 6), 3: (3, 8, 3, 4, 5)}
SN_CLASSES = {1: S.SwitchNorm1d, 2: S.SwitchNorm2d, 3: S.SwitchNorm3d}
CANDIDATES = ("IN", "LN", "BN", "GN2")


def naive(x, wm, wv, weight, bias, eps, groups, running=None):
    """Eqn. 2 of the SN paper with a fourth term, GroupNorm's statistics, written directly over the axes."""
    s = tuple(range(2, x.dim()))
    n, c = x.shape[:2]
    grouped = x.reshape(n, groups, c // groups, *x.shape[2:])
    gn_axes = tuple(range(2, grouped.dim()))
    shape = (1, -1) + (1,) * len(s)
    means = [x.mean(s, keepdim=True), x.mean((1,) + s, keepdim=True)]
    variances = [x.var(s, unbiased=False, keepdim=True), x.var((1,) + s, unbiased=False, keepdim=True)]
    if running is None:
        means.append(x.mean((0,) + s, keepdim=True))
        variances.append(x.var((0,) + s, unbiased=False, keepdim=True))
    else:
        means.append(running[0].reshape(shape))
        variances.append(running[1].reshape(shape))
    means.append(grouped.mean(gn_axes, keepdim=True).expand_as(grouped).reshape(x.shape))
    variances.append(grouped.var(gn_axes, unbiased=False, keepdim=True).expand_as(grouped).reshape(x.shape))
    mean = sum(w * m for w, m in zip(wm, means))
    var = sum(w * v for w, v in zip(wv, variances))
    return (x - mean) / torch.sqrt(var + eps) * weight.reshape(shape) + bias.reshape(shape)


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_soft_mixture_with_gn_equals_the_naive_formula(rank, dtype):
    torch.manual_seed(rank)
    x64 = torch.randn(SHAPES[rank], dtype=torch.float64) * 3 + 1
    m = randomize(SN_CLASSES[rank](8, candidates=CANDIDATES).double()).to(dtype)
    assert m.candidates == CANDIDATES and m.mean_weight.shape == (4,)
    ratios = [torch.softmax(w.double(), 0) for w in (m.mean_weight, m.var_weight)]
    params = (m.weight.double(), m.bias.double(), m.eps, 2)
    tol = {} if dtype == torch.float64 else {"rtol": 1e-4, "atol": 1e-4}
    torch.testing.assert_close(m(x64.to(dtype)).double(), naive(x64, *ratios, *params), **tol)
    m.eval()  # BN from the running buffers; GN, like IN and LN, from the input
    running = (m.running_mean.double(), m.running_var.double())
    torch.testing.assert_close(m(x64.to(dtype)).double(), naive(x64, *ratios, *params, running), **tol)


def test_bf16_model_with_gn_stays_close_to_float64():
    x = torch.randn(4, 8, 6, 6, dtype=torch.float64)
    m = randomize(S.SwitchNorm2d(8, candidates=CANDIDATES).double())
    expected = m(x)
    got = m.to(torch.bfloat16)(x.to(torch.bfloat16))
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.double(), expected, rtol=0.05, atol=0.05)


def test_gradcheck_with_gn():
    m = randomize(S.SwitchNorm2d(4, candidates=("IN", "LN", "BN", "GN2")).double())
    assert gradcheck_module(m, torch.randn(3, 4, 3, 2, dtype=torch.float64))
    only = randomize(S.SwitchNorm2d(4, candidates=("LN", "GN2")).double())
    assert gradcheck_module(only, torch.randn(2, 4, 3, 3, dtype=torch.float64))


def test_fused_backward_equals_plain_autograd_in_float32():
    """The hand-written backward (training) against plain autograd (double_backward=True) on the same input."""
    x = torch.randn(8, 64, 14, 14) * 2 + 0.5
    fused = randomize(S.SwitchNorm2d(64, candidates=("IN", "LN", "BN", "GN32")))
    plain = S.SwitchNorm2d(64, candidates=("IN", "LN", "BN", "GN32"), double_backward=True)
    plain.load_state_dict(fused.state_dict())
    grad_out = torch.randn_like(x)
    grads = []
    for m in (fused, plain):
        xi = x.clone().requires_grad_()
        m(xi).backward(grad_out)
        grads.append([xi.grad] + [p.grad for p in (m.mean_weight, m.var_weight, m.weight, m.bias)])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_one_hot_gn_equals_native_group_norm(rank):
    x = torch.randn(SHAPES[rank], dtype=torch.float64) * 2 + 1
    gn = randomize(nn.GroupNorm(2, 8).double())
    one_hot = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64)
    torch.testing.assert_close(switch_norm(x, one_hot, one_hot, CANDIDATES, weight=gn.weight, bias=gn.bias), gn(x))
    torch.testing.assert_close(S.functional.selected_norm(x, "GN2", weight=gn.weight, bias=gn.bias), gn(x))


def test_ssn_fixed_on_gn_runs_native_group_norm_and_deploys_as_it():
    x = torch.randn(4, 16, 7, 7)
    m = randomize(S.SparseSwitchNorm2d(16, candidates=("IN", "LN", "BN", "GN4")))
    m.fix("mean", "GN4"), m.fix("var", "GN4")
    gn = nn.GroupNorm(4, 16)
    gn.load_state_dict({"weight": m.weight.detach(), "bias": m.bias.detach()})
    assert torch.equal(m(x), gn(x))  # bit for bit: PyTorch's own GroupNorm kernel ran
    deployed, report = S.for_inference(nn.Sequential(m))
    assert type(deployed[0]) is nn.GroupNorm and deployed[0].num_groups == 4
    assert torch.equal(deployed[0](x), gn(x))
    # a soft layer with GN deploys as FrozenSwitchNorm and computes what the layer computes in eval mode
    soft = randomize(S.SwitchNorm2d(16, candidates=("IN", "BN", "GN4"))).eval()
    frozen, _ = S.for_inference(nn.Sequential(soft))
    assert isinstance(frozen[0], S.FrozenSwitchNorm) and frozen[0].candidates == ("IN", "BN", "GN4")
    torch.testing.assert_close(frozen[0](x), soft(x))


def test_gn_candidate_names_and_errors():
    assert check_candidates(("GN", "BN", "IN")) == ("IN", "BN", "GN32")  # GN last; "GN" is GroupNorm's usual 32
    assert S.SwitchNorm2d(64, candidates=("IN", "GN")).candidates == ("IN", "GN32")
    with pytest.raises(ValueError, match="32 groups do not divide 4 channels"):
        S.SwitchNorm2d(4, candidates=("IN", "GN"))
    with pytest.raises(ValueError, match="one GroupNorm candidate at most"):
        S.SwitchNorm2d(8, candidates=("GN2", "GN4"))
    with pytest.raises(ValueError, match=r"unknown normalizer candidate\(s\) \['GN0'\]"):
        S.SwitchNorm2d(8, candidates=("IN", "GN0"))
    # the published layouts are unchanged: three candidates by default, [IN, LN] without BN
    assert S.SwitchNorm2d(8).candidates == ("IN", "LN", "BN")
    assert S.SwitchNorm2d(8, using_bn=False).candidates == ("IN", "LN")


def test_frameworks_pass_gn_candidates_through():
    """mmcv's build_norm_layer takes the candidates from norm_cfg; detectron2 from MODEL.SSN.GN_GROUPS."""
    pytest.importorskip("mmcv")
    pytest.importorskip("detectron2")
    import ssn_plugins.openmmlab  # noqa: F401
    from mmcv.cnn import build_norm_layer

    _, layer = build_norm_layer(dict(type="SSN", candidates=("IN", "LN", "BN", "GN16")), 64)
    assert layer.candidates == ("IN", "LN", "BN", "GN16")

    from ssn_plugins.detectron2 import add_ssn_config, norm_options  # registers the names in get_norm

    from detectron2.config import get_cfg
    from detectron2.layers import get_norm
    cfg = get_cfg()
    add_ssn_config(cfg)
    cfg.MODEL.SSN.GN_GROUPS = 8
    with norm_options(cfg):
        assert get_norm("SN", 64).candidates == ("IN", "LN", "BN", "GN8")
