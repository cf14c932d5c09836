"""SwitchNorm against naive formulas, native torch norms, the authors' formula, and autograd."""
import pytest
import torch
from torch import nn

import ssn_plugins as S

from helpers import SHAPES, fixed, gradcheck_module, randomize
from ssn_plugins.functional import switch_norm

SN_CLASSES = {1: S.SwitchNorm1d, 2: S.SwitchNorm2d, 3: S.SwitchNorm3d}
NATIVE = {
    "BN": {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d},
    "IN": {1: nn.InstanceNorm1d, 2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d},
}


def naive_switch_norm(x, wm, wv, weight, bias, eps, running=None):
    """The paper's Eqn. 2 written directly over the axes (biased variances)."""
    s = tuple(range(2, x.dim()))
    stats = {
        "IN": (s, True),
        "LN": ((1,) + s, True),
        "BN": ((0,) + s, True),
    }
    means, variances = [], []
    for name, (axes, _) in stats.items():
        if name == "BN" and running is not None:
            shape = (1, -1) + (1,) * len(s)
            means.append(running[0].reshape(shape))
            variances.append(running[1].reshape(shape))
        else:
            means.append(x.mean(axes, keepdim=True))
            variances.append(x.var(axes, unbiased=False, keepdim=True))
    mean = sum(w * m for w, m in zip(wm, means))
    var = sum(w * v for w, v in zip(wv, variances))
    shape = (1, -1) + (1,) * len(s)
    return (x - mean) / torch.sqrt(var + eps) * weight.reshape(shape) + bias.reshape(shape)


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_soft_mixture_equals_naive_formula(rank):
    x = torch.randn(SHAPES[rank], dtype=torch.float64) * 3 + 1
    m = randomize(SN_CLASSES[rank](4).double())
    wm, wv = torch.softmax(m.mean_weight, 0), torch.softmax(m.var_weight, 0)
    expected = naive_switch_norm(x, wm, wv, m.weight, m.bias, m.eps)
    torch.testing.assert_close(m(x), expected)
    # eval: BN statistics come from the running buffers
    m.eval()
    expected = naive_switch_norm(x, wm, wv, m.weight, m.bias, m.eps, (m.running_mean, m.running_var))
    torch.testing.assert_close(m(x), expected)


def test_generic_class_accepts_any_rank_and_named_classes_check_rank():
    m = S.SwitchNorm(4)
    for shape in SHAPES.values():
        assert m(torch.randn(shape)).shape == shape
    with pytest.raises(ValueError, match="expects 4-D input"):
        S.SwitchNorm2d(4)(torch.randn(SHAPES[3]))
    with pytest.raises(ValueError, match=r"SwitchNorm2d\(5\) got input with 4 channels"):
        S.SwitchNorm2d(5)(torch.randn(SHAPES[2]))


def one_hot(index, k=3):
    t = torch.zeros(k, dtype=torch.float64)
    t[index] = 1
    return t


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_one_hot_bn_equals_batchnorm_train_and_eval(rank):
    bn = randomize(NATIVE["BN"][rank](4).double())
    sn = S.SwitchNorm(4).double()
    sn.load_state_dict(bn.state_dict(), strict=False)
    for _ in range(3):
        x = torch.randn(SHAPES[rank], dtype=torch.float64) * 2 + 0.5
        y = switch_norm(x, one_hot(2), one_hot(2), S.CANDIDATES, running_mean=sn.running_mean,
                        running_var=sn.running_var, weight=sn.weight, bias=sn.bias, training=True, momentum=0.1,
                        eps=1e-5)
        torch.testing.assert_close(y, bn(x))
    torch.testing.assert_close(sn.running_mean, bn.running_mean)
    torch.testing.assert_close(sn.running_var, bn.running_var)
    bn.eval()
    x = torch.randn(SHAPES[rank], dtype=torch.float64)
    y = switch_norm(x, one_hot(2), one_hot(2), S.CANDIDATES, running_mean=sn.running_mean,
                    running_var=sn.running_var, weight=sn.weight, bias=sn.bias, training=False, eps=1e-5)
    torch.testing.assert_close(y, bn(x))


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_one_hot_in_and_ln_equal_native(rank):
    x = torch.randn(SHAPES[rank], dtype=torch.float64) * 2 + 1
    inorm = randomize(NATIVE["IN"][rank](4, affine=True).double())
    ln = randomize(nn.GroupNorm(1, 4).double())
    y_in = switch_norm(x, one_hot(0), one_hot(0), S.CANDIDATES, weight=inorm.weight, bias=inorm.bias)
    y_ln = switch_norm(x, one_hot(1), one_hot(1), S.CANDIDATES, weight=ln.weight, bias=ln.bias)
    torch.testing.assert_close(y_in, inorm(x))
    torch.testing.assert_close(y_ln, ln(x))


def test_momentum_none_is_cumulative_average_like_batchnorm():
    bn = nn.BatchNorm2d(4, momentum=None).double()
    sn = S.SparseSwitchNorm2d(4, momentum=None).double()
    sn.fix("mean", "BN")
    sn.fix("var", "BN")
    for _ in range(4):
        x = torch.randn(SHAPES[2], dtype=torch.float64) + 2
        torch.testing.assert_close(sn(x), bn(x))
    torch.testing.assert_close(sn.running_var, bn.running_var)
    assert sn.num_batches_tracked.item() == bn.num_batches_tracked.item() == 4


def authors_switch_norm_2d(x, mean_weight, var_weight, weight, bias, running_mean, running_var, momentum, eps,
                           training):
    """The authors' SwitchNorm2d forward, written out from their formula."""
    n, c, h, w = x.shape
    x = x.view(n, c, -1)
    mean_in = x.mean(-1, keepdim=True)
    var_in = x.var(-1, keepdim=True)
    mean_ln = mean_in.mean(1, keepdim=True)
    temp = var_in + mean_in ** 2
    var_ln = temp.mean(1, keepdim=True) - mean_ln ** 2
    if training:
        mean_bn = mean_in.mean(0, keepdim=True)
        var_bn = temp.mean(0, keepdim=True) - mean_bn ** 2
        running_mean.mul_(momentum).add_((1 - momentum) * mean_bn.squeeze())
        running_var.mul_(momentum).add_((1 - momentum) * var_bn.squeeze())
    else:
        mean_bn = running_mean.view(1, c, 1)
        var_bn = running_var.view(1, c, 1)
    wm, wv = torch.softmax(mean_weight, 0), torch.softmax(var_weight, 0)
    mean = wm[0] * mean_in + wm[1] * mean_ln + wm[2] * mean_bn
    var = wv[0] * var_in + wv[1] * var_ln + wv[2] * var_bn
    x = (x - mean) / (var + eps).sqrt()
    return x.view(n, c, h, w) * weight.view(1, c, 1, 1) + bias.view(1, c, 1, 1)


def test_official_compat_reproduces_the_authors_layer():
    # official_compat changes the math only: the authors' retention factor 0.997 is momentum 0.003 here
    m = randomize(S.SwitchNorm2d(4, momentum=0.003, official_compat=True).double())
    m.running_var.zero_()  # the authors start it at zero
    rm, rv = torch.zeros(4, dtype=torch.float64), torch.zeros(4, dtype=torch.float64)
    for _ in range(3):
        x = torch.randn(SHAPES[2], dtype=torch.float64) * 2 + 1
        expected = authors_switch_norm_2d(x, m.mean_weight, m.var_weight, m.weight, m.bias, rm, rv, 0.997,
                                          1e-5, True)
        torch.testing.assert_close(m(x), expected)
    torch.testing.assert_close(m.running_mean, rm)
    torch.testing.assert_close(m.running_var, rv)
    m.eval()
    x = torch.randn(SHAPES[2], dtype=torch.float64)
    expected = authors_switch_norm_2d(x, m.mean_weight, m.var_weight, m.weight, m.bias, rm, rv, 0.997, 1e-5,
                                      False)
    torch.testing.assert_close(m(x), expected)
    # the flag travels with the weights: a default layer loading them computes the authors' math ...
    loaded = S.SwitchNorm2d(4).double().eval()
    loaded.load_state_dict(m.state_dict())
    assert loaded.official_compat
    torch.testing.assert_close(loaded(x), m(x))
    # ... and the paper's math differs from the authors' code (unbiased IN variance)
    loaded.official_compat = False
    assert not torch.allclose(loaded(x), m(x))


def test_official_compat_rejects_single_position():
    with pytest.raises(ValueError, match="unbiased IN variance"):
        S.SwitchNorm2d(4, official_compat=True)(torch.randn(2, 4, 1, 1))


@pytest.mark.parametrize("using_bn", [True, False])
def test_gradcheck_module(using_bn):
    m = randomize(S.SwitchNorm2d(3, using_bn=using_bn).double())
    assert gradcheck_module(m, torch.randn(3, 3, 3, 2, dtype=torch.float64))


def test_candidates_option_and_errors():
    m = S.SwitchNorm1d(4, candidates=("BN", "LN"))
    assert m.candidates == ("LN", "BN") and m.mean_weight.shape == (2,)
    y = m(torch.randn(8, 4))
    assert y.shape == (8, 4)
    with pytest.raises(ValueError, match="Instance Norm is undefined"):
        S.SwitchNorm1d(4)(torch.randn(8, 4))
    with pytest.raises(ValueError, match="unknown normalizer candidate"):
        S.SwitchNorm2d(4, candidates=("IN", "WN"))
    assert S.SwitchNorm2d(4, using_bn=False).candidates == ("IN", "LN")
    assert S.SwitchNorm2d(4, using_bn=False).running_mean is None


def test_bn_with_one_value_per_channel_says_what_to_do():
    with pytest.raises(ValueError, match="using_bn=False.*Sync"):
        S.SwitchNorm2d(4)(torch.randn(1, 4, 1, 1))
    # IN/LN only, and eval mode, are fine with a single image
    assert torch.isfinite(S.SwitchNorm2d(4, using_bn=False)(torch.randn(1, 4, 5, 5))).all()
    assert torch.isfinite(S.SwitchNorm2d(4).eval()(torch.randn(1, 4, 1, 1))).all()
    # an SSN layer whose selection left BN out no longer needs it
    ssn = S.SparseSwitchNorm2d(4)
    ssn.fix("mean", "LN")
    with pytest.raises(ValueError, match="using_bn=False"):
        ssn(torch.randn(1, 4, 1, 1))
    ssn.fix("var", "LN")
    assert torch.isfinite(ssn(torch.randn(1, 4, 1, 1))).all()


def test_one_by_one_maps_are_finite_and_defined():
    # IN variance is zero on a 1x1 map: the IN part normalizes to 0, never NaN.
    x = torch.randn(4, 4, 1, 1, dtype=torch.float64, requires_grad=True)
    m = S.SwitchNorm2d(4).double()
    y = m(x)
    y.pow(2).sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all() and torch.isfinite(m.mean_weight.grad).all()
    wm, wv = m.ratios()
    torch.testing.assert_close(y, naive_switch_norm(x, wm, wv, m.weight, m.bias, m.eps))


@pytest.mark.parametrize("cls", [S.SwitchNorm2d, S.SparseSwitchNorm2d])
def test_empty_batch(cls):
    m = cls(4)
    before = m.running_mean.clone(), m.running_var.clone()
    x = torch.randn(0, 4, 7, 7, requires_grad=True)
    y = m(x)
    assert y.shape == (0, 4, 7, 7)
    y.sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.count_nonzero(p.grad) == 0, name
    assert torch.equal(m.running_mean, before[0]) and torch.equal(m.running_var, before[1])


def test_bf16_autocast_on_cpu():
    m = randomize(S.SwitchNorm2d(8))
    x = torch.randn(4, 8, 6, 6) * 3 + 1
    ref = m(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(x.bfloat16())
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), ref, atol=0.1, rtol=0.05)
    y.float().sum().backward()
    assert m.mean_weight.grad is not None and torch.isfinite(m.mean_weight.grad).all()


@pytest.mark.parametrize("device", ["cpu", *(["cuda"] if torch.cuda.is_available() else [])])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("cls", [S.SwitchNorm2d, S.SparseSwitchNorm2d])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_autocast_keeps_statistics_and_their_mixing_in_float32(cls, dtype, training, device):
    """A float32 layer under autocast gives what it gives without: autocast would run a matmul mixing the
    candidates' statistics in bf16 / fp16 (0.01-0.13 off, 28 % off in the weight gradient at activations ~100),
    where BatchNorm is exact."""
    import copy
    layer = randomize(cls(8)).train(training).to(device)
    for shift in (10.0, 100.0):
        x = (torch.randn(4, 8, 8, 8) + shift).relu().to(device)
        outputs, grads = [], []
        for autocast in (False, True):
            m, xi = copy.deepcopy(layer), x.clone().requires_grad_()
            with torch.autocast(device, dtype=dtype, enabled=autocast):
                y = m(xi)
            assert y.dtype == torch.float32
            (y * torch.linspace(-1, 1, y.numel(), device=device).view_as(y)).sum().backward()
            outputs.append(y.detach())
            grads.append([xi.grad] + [p.grad for p in m.parameters() if p.grad is not None])
        torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-6, atol=1e-6)
        assert len(grads[1]) == len(grads[0]) >= 3
        for with_autocast, without in zip(*reversed(grads)):
            torch.testing.assert_close(with_autocast, without, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cls", [S.SwitchNorm2d, S.SparseSwitchNorm2d])
def test_channels_last(cls):
    m = randomize(cls(8))
    x = torch.randn(4, 8, 6, 6)
    ref = m(x)
    y = m(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(y, ref)


def test_state_dict_round_trip_and_authors_layout():
    m = randomize(S.SwitchNorm2d(4))
    m(torch.randn(4, 4, 3, 3))
    fresh = S.SwitchNorm2d(4)
    fresh.load_state_dict(m.state_dict())
    for k, v in m.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k
    authors = {
        "weight": m.weight.detach().reshape(1, 4, 1, 1), "bias": m.bias.detach().reshape(1, 4, 1, 1),
        "mean_weight": m.mean_weight.detach(), "var_weight": m.var_weight.detach(),
        "running_mean": m.running_mean.reshape(1, 4, 1), "running_var": m.running_var.reshape(1, 4, 1),
    }
    loaded = S.SwitchNorm2d(4)
    result = loaded.load_state_dict(authors)
    assert not result.missing_keys and not result.unexpected_keys
    x = torch.randn(2, 4, 3, 3)
    torch.testing.assert_close(loaded.eval()(x), m.eval()(x))
    # a two-entry [IN, LN] checkpoint fits a layer without BN
    two = {k: authors[k] for k in ("weight", "bias")}
    two.update(mean_weight=torch.randn(2), var_weight=torch.randn(2))
    assert not S.SwitchNorm2d(4, using_bn=False).load_state_dict(two).missing_keys


def test_state_dict_layout_version_drives_the_migration():
    """A file saved by this version loads as it is; one without a version (the authors', or converted)
    goes through the migration of their layout."""
    m = S.SwitchNorm2d(4)
    state = m.state_dict()
    assert state._metadata[""]["version"] == S.SwitchNorm2d._version
    authors = {k: v.reshape(1, 4, 1, 1) if k in ("weight", "bias") else v for k, v in state.items()
               if k not in ("num_batches_tracked", "official_compat_flag")}
    fresh = S.SwitchNorm2d(4)
    fresh.load_state_dict(authors)  # no metadata: migrated
    torch.testing.assert_close(fresh.weight, m.weight)
    versioned = type(state)(authors)
    versioned._metadata = {"": {"version": S.SwitchNorm2d._version}}  # claims the current layout: no migration
    with pytest.raises(RuntimeError, match="size mismatch for weight"):
        S.SwitchNorm2d(4).load_state_dict(versioned)


@pytest.mark.parametrize("cls", [S.SwitchNorm2d, S.SparseSwitchNorm2d])
def test_meta_device_then_to_empty_and_reset_parameters(cls):
    with torch.device("meta"):
        m = cls(8, radius=0.2) if cls is S.SparseSwitchNorm2d else cls(8)
    m = m.to_empty(device="cpu")
    m.reset_parameters()
    fresh = cls(8, radius=0.2) if cls is S.SparseSwitchNorm2d else cls(8)
    for (name, a), (_, b) in zip(m.state_dict().items(), fresh.state_dict().items()):
        assert torch.equal(a, b), name
    if cls is S.SparseSwitchNorm2d:
        assert m.selection == (None, None)
    model = nn.Sequential(fresh)
    fresh.train()(torch.randn(4, 8, 3, 3) + 3)
    model.apply(lambda mod: mod.reset_running_stats() if hasattr(mod, "reset_running_stats") else None)
    assert torch.equal(fresh.running_mean, torch.zeros(8)) and fresh.num_batches_tracked.item() == 0


def test_torch_export_of_a_soft_layer_and_a_clear_double_backward_error():
    m = S.SparseSwitchNorm2d(4, radius=0.3).eval()
    x = torch.randn(2, 4, 5, 5)
    exported = torch.export.export(m, (x,))
    torch.testing.assert_close(exported.module()(x), m(x))
    x.requires_grad_()
    with pytest.raises(RuntimeError, match="double backward .* build the layer with double_backward=True"):
        torch.autograd.grad(m.train()(x).square().sum(), x, create_graph=True)


def test_clear_messages():
    m = S.SparseSwitchNorm2d(4, using_bn=False)
    with pytest.raises(ValueError, match=r"'bn' is not a candidate of this layer; choose from \['IN', 'LN'\]"):
        m.fix("mean", "bn")
    with pytest.raises(ValueError, match="'BN' is not a candidate"):
        m.fix("mean", "BN")
    with pytest.raises(ValueError, match="vector must be 'mean' or 'var'"):
        m.fix("Mean", "IN")
    with pytest.raises(ValueError, match="got the string 'IN'"):
        S.SwitchNorm2d(4, candidates="IN")
    with pytest.raises(ValueError, match="at least 2 candidates"):
        S.SparseSwitchNorm2d(4, candidates=("BN",))
    with pytest.raises(ValueError, match="more than one sample per batch") as e:
        S.SwitchNorm1d(4, candidates=("LN", "BN"))(torch.randn(1, 4))
    assert "using_bn=False" not in str(e.value)
    with pytest.raises(ValueError, match="one value per channel") as e:
        S.SyncSwitchNorm2d(4)(torch.randn(1, 4, 1, 1))
    assert "use SyncSyncSwitchNorm2d" not in str(e.value) and "synchronised variant" not in str(e.value)
    with pytest.raises(ValueError, match="0-d tensor"):
        S.sparsestmax(torch.tensor(1.0), 0.1)


@pytest.mark.parametrize("eps", [0.0, -1.0, float("nan")])
def test_eps_must_be_positive(eps):
    with pytest.raises(ValueError, match="eps must be a finite number > 0"):
        S.SwitchNorm2d(4, eps=eps)


def test_official_compat_fresh_layer_is_finite_and_momentum_keeps_pytorch_convention():
    m = fixed(S.SparseSwitchNorm2d, "BN", "BN", official_compat=True, momentum=0.1).eval()
    assert m.momentum == 0.1 and torch.equal(m.running_var, torch.ones(8))
    assert m(torch.randn(2, 8, 4, 4)).abs().max() < 10
    converted = S.convert_norm(nn.Sequential(nn.BatchNorm2d(8, momentum=0.2)), "SN", official_compat=True)
    assert converted[0].momentum == 0.2


def test_pinned_layers_stay_in_eval_mode_and_keep_training_and_freeze_adds_no_gradients():
    """One mechanism for OpenMMLab's norm_eval (pin_eval) and detectron2's FREEZE_AT (freeze = pin + no grad)."""
    model = nn.Sequential(S.SwitchNorm2d(4), S.SparseSwitchNorm2d(4), S.ChannelEquilibrium(4, group_size=2))
    for layer in (model[0], model[2]):
        layer.pin_eval()
    model[1].freeze()
    model.train()
    assert [m.training for m in model] == [False, False, False]
    assert model[0].weight.requires_grad and not model[0].frozen  # pinned, still trainable
    assert not any(p.requires_grad for p in model[1].parameters()) and model[1].frozen
    before = model[0].running_mean.clone()
    model(torch.randn(2, 4, 3, 3)).sum().backward()
    assert torch.equal(model[0].running_mean, before) and model[0].weight.grad is not None
    model[0].pin_eval(False)
    model.train()
    assert model[0].training and not model[1].training


def test_options_that_would_say_one_thing_twice_raise():
    with pytest.raises(ValueError, match=r"using_bn=True contradicts candidates=\['IN', 'LN'\]"):
        S.SwitchNorm2d(4, using_bn=True, candidates=("IN", "LN"))
    with pytest.raises(ValueError, match="track_running_stats=True needs the BN candidate"):
        S.SwitchNorm2d(4, candidates=("IN", "LN"), track_running_stats=True)
    assert S.SwitchNorm2d(4, using_bn=False, candidates=("IN", "LN")).running_mean is None  # agreeing is fine
    assert S.SwitchNorm2d(4, track_running_stats=False).running_mean is None
    assert S.SwitchNorm2d(4).track_running_stats and not S.SwitchNorm2d(4, using_bn=False).track_running_stats
