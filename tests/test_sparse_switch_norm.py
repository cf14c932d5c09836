"""SparseSwitchNorm: selection fixing, the native fast path, checkpoints and resume."""
import io

import pytest
import torch
from torch import nn

import ssn_plugins as S

from helpers import SHAPES, gradcheck_module, randomize
from ssn_plugins.functional import switch_norm


SSN_CLASSES = {1: S.SparseSwitchNorm1d, 2: S.SparseSwitchNorm2d, 3: S.SparseSwitchNorm3d}


def natives(rank):
    return {
        "BN": {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[rank](4).double(),
        "IN": {1: nn.InstanceNorm1d, 2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}[rank](4, affine=True).double(),
        "LN": nn.GroupNorm(1, 4).double(),
    }


def fixed_layer(rank, mean, var, **kwargs):
    m = SSN_CLASSES[rank](4, **kwargs).double()
    m.fix("mean", mean)
    m.fix("var", var)
    return m


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


def test_set_radius_fixes_one_hot_vectors_and_stops_gradients():
    model = nn.Sequential(S.SparseSwitchNorm2d(4), nn.ReLU(), S.SparseSwitchNorm2d(4))
    with torch.no_grad():
        model[0].mean_weight.copy_(torch.tensor([0.0, 3.0, 0.0]))  # far from the centre: one-hot early
        model[0].var_weight.copy_(torch.tensor([2.0, 0.0, 0.0]))
        model[2].mean_weight.copy_(torch.tensor([1.0, 1.1, 0.9]))
    counts = S.set_radius(model, 0.3)
    assert counts == {"layers": 2, "fixed": 2, "newly_fixed": 2, "frozen_open": 0}
    assert model[0].selection == ("LN", "IN") and model[2].selection == (None, None)
    assert model[0].mean_fixed.item() and model[0].var_fixed.item()
    assert torch.equal(model[0].mean_weight.detach(), torch.tensor([0.0, 1.0, 0.0]))
    assert float(model[2].radius) == pytest.approx(0.3)
    model(torch.randn(2, 4, 3, 3)).sum().backward()
    assert model[0].mean_weight.grad is None  # fixed: no gradient (zero in a DDP run, see test_sync)
    assert torch.count_nonzero(model[2].mean_weight.grad) > 0
    counts = S.set_radius(model, 1.0)
    assert counts["fixed"] == 4
    with pytest.raises(ValueError, match="radius"):
        S.set_radius(model, -1)


def test_radius_scheduler_is_linear_and_resumable():
    model = nn.Sequential(S.SparseSwitchNorm2d(4), S.SparseSwitchNorm2d(4))
    sched = S.RadiusScheduler(model, total_iters=100)
    assert sched.radius_at(0) == 0 and sched.radius_at(50) == pytest.approx(0.5) and sched.radius_at(200) == 1.0
    late = S.RadiusScheduler(model, total_iters=100, start_iter=20, end_iter=60, max_radius=0.9)
    assert late.radius_at(10) == 0 and late.radius_at(40) == pytest.approx(0.45) and late.radius_at(99) == 0.9
    out = sched.step(85)
    assert out["radius"] == pytest.approx(0.85) and out["fixed"] == 4  # beyond sqrt(2/3): all one-hot
    with pytest.raises(ValueError):
        S.RadiusScheduler(model, total_iters=0)


def test_training_ends_one_hot_and_checkpoint_resume_keeps_schedule_state():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), S.SparseSwitchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3),
                          S.SparseSwitchNorm2d(8), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))
    opt = torch.optim.SGD(S.param_groups(model, lr=0.1, weight_decay=1e-4), momentum=0.9)
    sched = S.RadiusScheduler(model, total_iters=20)
    x, target = torch.randn(8, 3, 10, 10), torch.randint(0, 2, (8,))

    def train(iters):
        for it in iters:
            sched.step(it)
            loss = nn.functional.cross_entropy(model(x), target)
            opt.zero_grad()
            loss.backward()
            S.clip_ratio_grad_norm(model, 1.0)
            opt.step()

    train(range(0, 12))
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, buffer)
    radius_before = float(model[1].radius)
    selection_before = [m.selection for m in S.sparse_layers(model)]

    resumed = nn.Sequential(nn.Conv2d(3, 8, 3), S.SparseSwitchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3),
                            S.SparseSwitchNorm2d(8), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    resumed.load_state_dict(state["model"])
    assert float(resumed[1].radius) == pytest.approx(radius_before)
    assert [m.selection for m in S.sparse_layers(resumed)] == selection_before
    for a, b in zip(model.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)

    train(range(12, 20))
    # r = 19/20 > sqrt(2/3): every vector is one-hot and the layer computes one normalizer
    assert all(None not in m.selection for m in S.sparse_layers(model))
    for m in S.sparse_layers(model):
        for name in ("mean_weight", "var_weight"):
            assert sorted(m.state_dict()[name].tolist()) == [0, 0, 1]


def test_reopen_selection():
    m = fixed_layer(2, "BN", "BN")
    m.reopen_selection(prior=0.5)
    assert m.selection == (None, None) and not m.mean_fixed.item()
    # off the vertex, biased towards the old choice (BN)
    torch.testing.assert_close(m.mean_weight.detach(), torch.tensor([-1 / 6, -1 / 6, 1 / 3], dtype=torch.float64))
    (m(torch.randn(SHAPES[2], dtype=torch.float64)) * torch.randn(SHAPES[2], dtype=torch.float64)).sum().backward()
    assert m.mean_weight.grad is not None and m.mean_weight.grad.abs().sum() > 0
    m = fixed_layer(2, "BN", "BN")
    m.reopen_selection()
    assert torch.equal(m.mean_weight.detach(), torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="prior"):
        m.reopen_selection(prior=1.0)


def test_layers_whose_logits_cannot_train_are_never_fixed_by_the_schedules_tie_break():
    # a frozen pretrained BN converted to SSN keeps computing that BN
    bn = nn.BatchNorm2d(4)
    bn(torch.randn(8, 4, 5, 5) * 3 + 2)
    bn.requires_grad_(False)
    model = S.convert_norm(nn.Sequential(nn.Conv2d(3, 4, 3), bn), to="SSN")
    assert model[1].selection == ("BN", "BN") and not model[1].mean_weight.requires_grad
    # an open layer frozen by hand (requires_grad=False, as FREEZE_AT / frozen_stages do) is left out of the
    # schedule with a warning: its uniform logits would go to IN at the maximum radius
    frozen, trained = S.SparseSwitchNorm2d(4), S.SparseSwitchNorm2d(4)
    frozen.requires_grad_(False)
    scheduler = S.RadiusScheduler(nn.Sequential(frozen, trained), total_iters=10)
    with pytest.warns(UserWarning, match="1 SSN layers have an open selection but ratio logits that do not train"):
        state = scheduler.step(10)
    assert state["frozen_open"] == 1 and state["layers"] == 2
    assert frozen.selection == (None, None) and frozen.radius.item() == 0.0
    torch.testing.assert_close(frozen.ratios()[0], torch.full((3,), 1 / 3))  # the mixture it was loaded with
    assert None not in trained.selection  # a layer that trains is scheduled as before
    assert frozen._radius_scheduled  # and no "no schedule" warning on top


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


def ssn_net():
    torch.manual_seed(3)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), S.SparseSwitchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3),
                        S.SparseSwitchNorm2d(4), S.SparseSwitchNorm2d(4)).double()
    with torch.no_grad():
        for m in S.sparse_layers(net):
            m.mean_weight.copy_(torch.randn(3))
            m.var_weight.copy_(torch.randn(3))
    net[5].fix("var", "LN")
    S.set_radius(net, 0.4)
    return net


def test_batched_ratios_match_per_layer_ratios_and_gradients():
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    plain, batched = ssn_net(), ssn_net()
    S.batched_ratios(batched)
    for m in S.sparse_layers(plain) + S.sparse_layers(batched):
        m.forget_ratios()  # set_radius's projection: the forward projects anew (batched) or per layer (plain)
    calls = []
    original = S.sparsestmax
    import ssn_plugins.layers.sparse_switch_norm as layer_module
    layer_module.sparsestmax = lambda *a, **k: calls.append(1) or original(*a, **k)
    try:
        y_batched = batched(x)
    finally:
        layer_module.sparsestmax = original
    assert len(calls) == 1  # one projection for all five open vectors
    torch.testing.assert_close(y_batched, plain(x))
    y_batched.pow(2).sum().backward()
    plain(x).pow(2).sum().backward()
    for (name, a), b in zip(batched.named_parameters(), plain.parameters()):
        if a.grad is None:
            assert b.grad is None, name
        else:
            torch.testing.assert_close(a.grad, b.grad, msg=name)
    assert not any(m.has_current_ratios() for m in S.sparse_layers(batched))  # nothing lingers after backward


def test_one_sparsestmax_projection_per_training_iteration():
    """set_radius projects every open vector once; the forward uses that projection (gradients included)."""
    import ssn_plugins.layers.sparse_switch_norm as layer_module
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    scheduled, plain = ssn_net(), ssn_net()
    scheduler = S.RadiusScheduler(scheduled, total_iters=10)
    calls, original = [], layer_module.sparsestmax
    layer_module.sparsestmax = lambda *a, **k: calls.append(1) or original(*a, **k)
    try:
        scheduler.step(3)
        y = scheduled(x)
        y.pow(2).sum().backward()
    finally:
        layer_module.sparsestmax = original
    assert len(calls) == 1
    S.set_radius(plain, 0.3)
    with torch.no_grad():  # the per-layer path: each layer projects its own ratios in its forward
        for m in S.sparse_layers(plain):
            m.radius.fill_(0.3)
    expected = plain(x)
    torch.testing.assert_close(y, expected)
    expected.pow(2).sum().backward()
    for (name, a), b in zip(scheduled.named_parameters(), plain.parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=name)


def test_ratios_projected_without_gradients_do_not_serve_a_training_forward():
    net = ssn_net()
    S.batched_ratios(net)
    with torch.no_grad():
        S.set_radius(net, 0.2)
        net(torch.randn(2, 3, 8, 8, dtype=torch.float64))
    net(torch.randn(2, 3, 8, 8, dtype=torch.float64)).sum().backward()
    assert net[1].mean_weight.grad is not None and net[1].mean_weight.grad.abs().sum() > 0


def test_stale_precomputed_ratios_are_not_used():
    net = ssn_net()
    S.precompute_ratios(S.sparse_layers(net))
    with torch.no_grad():
        net[1].mean_weight.add_(torch.tensor([5.0, 0.0, 0.0], dtype=torch.float64))  # an optimizer step
    fresh = S.sparsestmax(net[1].mean_weight, net[1].radius)
    torch.testing.assert_close(net[1].ratios()[0], fresh)


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


def test_set_radius_with_layers_of_two_dtypes_and_sizes():
    """Layers in float32 and float64, with three and two candidates: one batched projection per kind, and
    fixing a vector in one group leaves the other group's projection in use."""
    net = nn.Sequential(S.SparseSwitchNorm2d(4), S.SparseSwitchNorm2d(4).double(),
                        S.SparseSwitchNorm2d(4, candidates=("IN", "LN")))
    with torch.no_grad():
        net[0].mean_weight.copy_(torch.tensor([0.0, 3.0, 0.0]))  # one-hot early: fixed at radius 0.3
    counts = S.set_radius(net, 0.3)
    assert counts["newly_fixed"] == 1 and net[0].selection == ("LN", None)
    assert not net[0].has_current_ratios()  # its group read the newly fixed logits: projected again
    assert net[1].has_current_ratios() and net[2].has_current_ratios()
    x = torch.randn(2, 4, 3, 3)
    y = net[2](net[1](net[0](x).double()).float())
    y.sum().backward()
    assert net[0].mean_weight.grad is None and net[1].mean_weight.grad is not None
