"""SparseSwitchNorm: selection fixing, the native fast path, checkpoints and resume."""

import pytest
import torch
from torch import nn

import ssn_plugins as S

from helpers import SHAPES, fixed, fixed_layer, gradcheck_module, randomize
from ssn_plugins.functional import switch_norm




def natives(rank):
    return {
        "BN": {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[rank](4).double(),
        "IN": {1: nn.InstanceNorm1d, 2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}[rank](4, affine=True).double(),
        "LN": nn.GroupNorm(1, 4).double(),
    }


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("candidate", ["IN", "LN", "BN"])
def test_fixed_layer_equals_native_norm_train_and_eval(rank, candidate):
    native = randomize(natives(rank)[candidate])
    m = fixed_layer(rank, candidate, candidate)
    m.load_state_dict(native.state_dict(), strict=False)
    for _ in range(3):
        x = torch.randn(SHAPES[rank], dtype=torch.float64) * 2 + 1
        torch.testing.assert_close(m(x), native(x))
    if candidate == "BN":
        torch.testing.assert_close(m.running_mean, native.running_mean)
        torch.testing.assert_close(m.running_var, native.running_var)
    m.eval(), native.eval()
    x = torch.randn(SHAPES[rank], dtype=torch.float64)
    torch.testing.assert_close(m(x), native(x))


@pytest.mark.parametrize("candidate", ["IN", "LN", "BN"])
def test_fast_path_equals_general_path(candidate, monkeypatch):
    m = randomize(fixed_layer(2, candidate, candidate))
    x = torch.randn(SHAPES[2], dtype=torch.float64, requires_grad=True)
    fast = m(x)
    grads_fast = torch.autograd.grad(fast.pow(2).sum(), [x, m.weight, m.bias])
    called = []
    monkeypatch.setattr(type(m), "_native", lambda *a: called.append(1))  # a spy: the general path must run
    monkeypatch.setattr(type(m), "_can_run_native", lambda self, c, x: False)
    general = m(x)
    grads_general = torch.autograd.grad(general.pow(2).sum(), [x, m.weight, m.bias])
    assert not called
    torch.testing.assert_close(fast, general)
    for a, b in zip(grads_fast, grads_general):
        torch.testing.assert_close(a, b)


def test_mixed_selection_computes_the_two_selected_statistics():
    m = randomize(fixed_layer(2, "BN", "IN"))
    x = torch.randn(SHAPES[2], dtype=torch.float64)
    mean = x.mean((0, 2, 3), keepdim=True)  # BN mean
    var = x.var((2, 3), unbiased=False, keepdim=True)  # IN variance
    expected = (x - mean) / torch.sqrt(var + m.eps) * m.weight.view(1, -1, 1, 1) + m.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(m(x), expected)


@pytest.mark.parametrize("radius", [0.0, 0.3, 0.6, 0.75])
def test_gradcheck_soft_ssn(radius):
    m = randomize(S.SparseSwitchNorm2d(3, radius=radius).double())
    assert gradcheck_module(m, torch.randn(3, 3, 2, 3, dtype=torch.float64))


def test_soft_ssn_uses_sparsestmax_ratios():
    m = randomize(S.SparseSwitchNorm2d(4, radius=0.5).double())
    x = torch.randn(SHAPES[2], dtype=torch.float64)
    wm, wv = S.sparsestmax(m.mean_weight, 0.5), S.sparsestmax(m.var_weight, 0.5)
    expected = switch_norm(x, wm, wv, S.CANDIDATES, weight=m.weight, bias=m.bias, training=True)
    torch.testing.assert_close(m(x), expected)


def test_flags_written_behind_the_layer_take_effect_at_the_next_forward_and_copies_keep_the_selection():
    import copy
    m = S.SparseSwitchNorm2d(4)
    with torch.no_grad():
        m.mean_weight.copy_(torch.tensor([0.0, 2.0, 0.0]))
        m.mean_fixed.fill_(True)  # as DDP's broadcast of rank 0's buffers writes it
    x = torch.randn(2, 4, 3, 3)
    m(x)
    assert m.selection == ("LN", None)
    m.fix("var", "BN")
    with torch.no_grad():
        m.var_weight.copy_(torch.tensor([3.0, 0.0, 0.0]))  # logits a fixed vector no longer reads
    for other in (copy.deepcopy(m), copy.deepcopy(m).double()):  # new buffers: the flags are read again
        other(x.to(other.weight.dtype))
        assert other.selection == ("LN", "BN")  # the host's selection, not the copied logits' argmax
    with torch.no_grad():
        m.mean_fixed.fill_(False)
    m(x)
    assert m.selection == (None, "BN")


def test_loads_the_authors_ssn_layout():
    authors = {
        "weight": torch.randn(1, 4, 1, 1), "bias": torch.randn(1, 4, 1, 1),
        "mean_weight": torch.tensor([0.0, 0.0, 1.0]), "var_weight": torch.tensor([0.3, 0.5, 0.2]),
        "running_mean": torch.randn(1, 4, 1), "running_var": torch.rand(1, 4, 1) + 0.5,
        "mean_fixed": torch.tensor([1]), "var_fixed": torch.tensor([0]), "radius": torch.tensor([0.42]),
    }
    m = S.SparseSwitchNorm2d(4)
    result = m.load_state_dict(authors)
    assert not result.missing_keys and not result.unexpected_keys
    assert m.selection == ("BN", None)
    assert float(m.radius) == pytest.approx(0.42)
    assert m.mean_fixed.dtype == torch.bool


def test_selected_in_on_one_value_per_channel_is_defined():
    """F.instance_norm refuses 1x1 maps in training; a layer fixed on IN gives what the general path gives there."""
    fixed = S.SparseSwitchNorm2d(8)
    fixed.fix("mean", "IN")
    fixed.fix("var", "IN")
    with torch.no_grad():
        fixed.bias.copy_(torch.arange(8.0))
    general = S.SwitchNorm2d(8)
    general.load_state_dict({k: v for k, v in fixed.state_dict().items() if k in general.state_dict()}, strict=False)
    with torch.no_grad():
        general.mean_weight.copy_(torch.tensor([30.0, 0.0, 0.0]))  # softmax ~ one-hot on IN
        general.var_weight.copy_(torch.tensor([30.0, 0.0, 0.0]))
    x = torch.randn(4, 8, 1, 1)
    out = fixed(x)
    torch.testing.assert_close(out, torch.arange(8.0).view(1, 8, 1, 1).expand(4, 8, 1, 1), atol=1e-4, rtol=0)
    torch.testing.assert_close(out, general(x), atol=1e-4, rtol=0)  # rounding of x - mean, over sqrt(eps)


@pytest.mark.parametrize("cls,shape", [(S.SparseSwitchNorm1d, (0, 8, 5)), (S.SparseSwitchNorm2d, (0, 8, 7, 7)),
                                       (S.SparseSwitchNorm3d, (0, 8, 2, 3, 3))])
@pytest.mark.parametrize("training", [True, False])
def test_fixed_in_on_an_empty_batch_gives_an_empty_output(cls, shape, training):
    m = fixed(cls, "IN", "IN").train(training)
    x = torch.randn(shape, requires_grad=True)
    y = m(x)
    assert y.shape == x.shape
    y.sum().backward()
    assert m.weight.grad is not None and torch.equal(m.weight.grad, torch.zeros(8))


@pytest.mark.parametrize("training", [True, False])
def test_fixed_in_at_batch_one_on_1x1_maps_is_the_bias(training):
    m = fixed(S.SparseSwitchNorm2d, "IN", "IN").train(training)
    with torch.no_grad():
        m.bias.copy_(torch.arange(8.0))
    x = torch.randn(1, 8, 1, 1, requires_grad=True)
    y = m(x)
    torch.testing.assert_close(y, torch.arange(8.0).view(1, 8, 1, 1))
    one_hot = torch.tensor([1.0, 0.0, 0.0])
    general = S.switch_norm(x, one_hot, one_hot, weight=m.weight, bias=m.bias, running_mean=m.running_mean.clone(),
                            running_var=m.running_var.clone(), training=training)
    # The general path agrees up to rounding: like native BatchNorm it applies x * scale + shift in one
    # multiply-add, so x == mean cancels up to the rounding of x * rstd (here rstd = eps^-1/2 = 316).
    torch.testing.assert_close(general, y, rtol=0, atol=1e-4)
    y.sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


@pytest.mark.parametrize("radius", [float("nan"), -1.0, float("inf")])
def test_constructor_validates_the_radius(radius):
    with pytest.raises(ValueError, match="radius must be a finite number >= 0"):
        S.SparseSwitchNorm2d(4, radius=radius)


def test_a_loaded_nan_radius_is_refused():
    state = S.SparseSwitchNorm2d(4).state_dict()
    state["radius"] = torch.tensor(float("nan"))
    with pytest.raises(RuntimeError, match="radius must be a finite number"):
        S.SparseSwitchNorm2d(4).load_state_dict(state)


@pytest.mark.parametrize("candidate", ["BN", "IN", "LN"])
@pytest.mark.parametrize("layer_dtype,input_dtype", [(torch.float16, torch.float32), (torch.float32, torch.float64),
                                                     (torch.float32, torch.bfloat16)])
@pytest.mark.parametrize("training", [True, False])
def test_fixed_layers_accept_what_soft_layers_accept(candidate, layer_dtype, input_dtype, training):
    x = torch.randn(4, 8, 5, 5).to(input_dtype)
    soft = S.SparseSwitchNorm2d(8).to(layer_dtype).train(training)
    hard = fixed(S.SparseSwitchNorm2d, candidate, candidate).to(layer_dtype).train(training)
    assert soft(x).dtype == hard(x).dtype == input_dtype
    reference = fixed(S.SparseSwitchNorm2d, candidate, candidate).double().train(training)(x.double())
    tolerance = 2e-2 if torch.float16 in (layer_dtype, input_dtype) or input_dtype == torch.bfloat16 else 1e-5
    torch.testing.assert_close(hard(x).double(), reference, atol=tolerance, rtol=tolerance)


def test_flag_buffers_written_directly_take_effect_at_set_radius_and_saving_keeps_what_runs():
    m = fixed(S.SparseSwitchNorm2d, "BN", "LN")
    m.mean_fixed.fill_(False)
    assert m.state_dict()["mean_fixed"].item()  # saved as it runs: still fixed on BN
    reloaded = S.SparseSwitchNorm2d(8)
    reloaded.load_state_dict(m.state_dict())
    assert reloaded.selection == m.selection == ("BN", "LN")
    S.set_radius(m, 0.0)  # the schedule's next step reads the edited flag
    assert m.selection == (None, "LN")
    soft = S.SparseSwitchNorm2d(8)
    with torch.no_grad():
        soft.var_weight.copy_(torch.tensor([0.2, 0.9, 0.1]))
    soft.var_fixed.fill_(True)
    S.set_radius(soft, 0.0)
    assert soft.selection == (None, "LN") and torch.equal(soft.var_weight.detach(), torch.tensor([0.0, 1.0, 0.0]))
    compat = S.SwitchNorm2d(8)
    compat.official_compat_flag.fill_(True)  # the attribute is the way to set it; the buffer follows it
    assert not compat.state_dict()["official_compat_flag"] and not compat.official_compat
    compat.official_compat = True
    assert compat.state_dict()["official_compat_flag"]
