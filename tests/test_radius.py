"""The radius machinery (ssn_plugins.radius): set_radius fixing one-hot vectors, RadiusScheduler, the batched
projection and its cache, re-opened selections, and real training runs in float32, float64 and bf16."""
import copy
import io
import pickle

import pytest
import torch
from torch import nn

import ssn_plugins as S
from ssn_plugins.radius import batched_ratios, precompute_ratios

from helpers import SHAPES, fixed_layer



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
    late = S.RadiusScheduler(model, total_iters=60, start_iter=20, max_radius=0.9)
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
    batched_ratios(batched)
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
    batched_ratios(net)
    with torch.no_grad():
        S.set_radius(net, 0.2)
        net(torch.randn(2, 3, 8, 8, dtype=torch.float64))
    net(torch.randn(2, 3, 8, 8, dtype=torch.float64)).sum().backward()
    assert net[1].mean_weight.grad is not None and net[1].mean_weight.grad.abs().sum() > 0


def test_stale_precomputed_ratios_are_not_used():
    net = ssn_net()
    precompute_ratios(S.sparse_layers(net))
    with torch.no_grad():
        net[1].mean_weight.add_(torch.tensor([5.0, 0.0, 0.0], dtype=torch.float64))  # an optimizer step
    fresh = S.sparsestmax(net[1].mean_weight, net[1].radius)
    torch.testing.assert_close(net[1].ratios()[0], fresh)


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


def small_net(norm_cls=S.SparseSwitchNorm2d):
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), norm_cls(8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1), norm_cls(8), nn.ReLU())


def test_bf16_layer_selects_what_float32_selects_and_set_radius_agrees_with_forward():
    m = S.SparseSwitchNorm2d(4).to(torch.bfloat16)
    assert m.radius.dtype == torch.float32  # the schedule keeps its resolution
    with torch.no_grad():
        m.mean_weight.copy_(torch.tensor([0.9, 1.0, 1.2]))
    S.set_radius(m, 0.5)
    ratios = m.ratios()[0]
    assert ratios.dtype == torch.bfloat16 and ratios.argmax() == 2  # BN, as in float32 (was IN)
    torch.testing.assert_close(ratios, S.sparsestmax(m.mean_weight.detach().double(), 0.5).to(torch.bfloat16))
    # the vector fixed by set_radius is the one forward's ratios end on
    S.set_radius(m, 0.82)
    assert m.selection[0] == "BN"


def test_uniform_start_layers_get_a_gradient_once_the_radius_grows():
    m = S.SparseSwitchNorm2d(4)
    with torch.no_grad():  # one small ratio step away from uniform, as after the first iterations
        m.mean_weight.add_(torch.tensor([0.0, 2e-7, -2e-7]))
    S.set_radius(m, 0.2)
    x = torch.randn(4, 4, 5, 5)
    (m(x) * torch.randn_like(x)).sum().backward()
    assert m.mean_weight.grad.abs().max() > 0
    assert m.ratios()[0].argmax() == 1  # LN, the candidate the step favoured


def test_non_reentrant_checkpoint_with_the_radius_scheduler():
    from torch.utils.checkpoint import checkpoint

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.block = small_net()
            self.head = nn.Conv2d(8, 2, 1)

        def forward(self, x, use_checkpoint):
            h = checkpoint(self.block, x, use_reentrant=False) if use_checkpoint else self.block(x)
            return self.head(h)

    torch.manual_seed(0)
    net = Net()
    S.RadiusScheduler(net, total_iters=10).step(3)
    x = torch.randn(2, 3, 6, 6)
    grads = []
    for use_checkpoint in (False, True):
        net.zero_grad()
        net(x, use_checkpoint).square().sum().backward()
        grads.append([p.grad.clone() for p in net.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


def test_model_with_scheduler_pickles_and_deepcopies():
    model = small_net()
    S.RadiusScheduler(model, total_iters=10).step(5)
    model(torch.randn(2, 3, 6, 6))  # a training forward leaves precomputed ratios with a graph
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    x = torch.randn(2, 3, 6, 6)
    model.eval(), loaded.eval()
    torch.testing.assert_close(loaded(x), model(x))
    pickle.loads(pickle.dumps(model))
    twin = copy.deepcopy(model)
    with torch.no_grad():
        for m in (model, twin):
            for layer in S.sparse_layers(m):
                layer.radius.fill_(0.6)  # both stale
    twin(x)
    # the copy's hook projects the copy's own layers, not the original's
    assert all(layer.has_current_ratios() for layer in S.sparse_layers(twin))
    assert not any(layer.has_current_ratios() for layer in S.sparse_layers(model))


def test_precomputed_ratios_are_released_after_backward():
    model = small_net()
    S.RadiusScheduler(model, total_iters=10).step(2)
    model(torch.randn(2, 3, 6, 6)).sum().backward()
    assert not any(layer.has_current_ratios() for layer in S.sparse_layers(model))
    # a later direct call of a sub-module computes its own ratios (no freed graph reused)
    model[1](torch.randn(2, 8, 6, 6)).sum().backward()


def test_nan_logits_propagate_in_forward_and_set_radius_names_the_layer():
    model = small_net()
    with torch.no_grad():
        model[4].mean_weight[0] = float("nan")
    model[4].radius.fill_(0.3)
    assert torch.isnan(model(torch.randn(2, 3, 6, 6))).all()
    with pytest.raises(ValueError, match=r"SSN layer '4'.*mean_weight are not finite"):
        S.set_radius(model, 0.4)


def test_reopened_layers_train_until_the_schedule_fixes_them_again():
    torch.manual_seed(0)
    model = small_net()
    S.set_radius(model, 1.0)
    assert S.set_radius(model, 1.0)["fixed"] == 4
    for layer in S.sparse_layers(model):
        layer.reopen_selection(prior=0.2)
    scheduler = S.RadiusScheduler(model, total_iters=20)
    optimizer = torch.optim.SGD(S.param_groups(model, lr=0.1, weight_decay=0.0), lr=0.1)
    x = torch.randn(4, 3, 6, 6)
    target = torch.randn(4, 8, 6, 6)
    logits_before = [layer.mean_weight.detach().clone() for layer in S.sparse_layers(model)]
    assert scheduler.step(0)["fixed"] == 0
    for it in range(20):
        state = scheduler.step(it)
        if it < 5:
            assert state["fixed"] == 0  # not fixed again at once
        optimizer.zero_grad()
        (model(x) - target).square().mean().backward()
        optimizer.step()
    assert any(not torch.allclose(layer.mean_weight.detach(), before)
               for layer, before in zip(S.sparse_layers(model), logits_before))
    assert scheduler.step(20)["fixed"] == 4  # the schedule fixed them anew


def _train_ssn(model, dtype, lr, iters, stop=None):
    """SGD with the recipe (ratios at lr/10, clipped) on crops of a real photograph; returns the ratio vectors
    that got a gradient at the first step with radius > 0, and the final selections."""
    from helpers import photo_batch

    torch.manual_seed(0)
    model = model.to(dtype)
    scheduler = S.RadiusScheduler(model, total_iters=iters)
    optimizer = torch.optim.SGD(S.param_groups(model, lr=lr, weight_decay=1e-4), lr=lr, momentum=0.9)
    x, y = photo_batch(size=(64, 64), crops=8, seed=1).to(dtype), torch.arange(8) % 4
    moved = None
    for it in range(iters + 1 if stop is None else stop):
        radius = scheduler.step(it)["radius"]
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        if radius > 0 and moved is None:
            moved = sum(int(p.grad is not None and bool(p.grad.abs().sum() > 0)) for p in S.ratio_parameters(model))
        S.clip_ratio_grad_norm(model, 1.0)
        optimizer.step()
    return moved, [m.selection for m in S.sparse_layers(model)]


def small_classifier():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), S.SparseSwitchNorm2d(16), nn.ReLU(),
                         nn.Conv2d(16, 32, 3, 2, 1), S.SparseSwitchNorm2d(32), nn.ReLU(),
                         nn.Conv2d(32, 32, 3, 2, 1), S.SparseSwitchNorm2d(32), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 4))


def test_small_ratio_updates_select_the_same_in_float32_and_float64():
    moved32, selection32 = _train_ssn(small_classifier(), torch.float32, lr=1e-3, iters=30)
    moved64, selection64 = _train_ssn(small_classifier(), torch.float64, lr=1e-3, iters=30)
    assert moved32 == moved64 == 6
    assert selection32 == selection64
    assert all(None not in s for s in selection32)
    assert {c for s in selection32 for c in s} != {"IN"}


def test_every_open_ratio_vector_of_mobilenet_gets_a_gradient_once_the_radius_grows():
    torchvision = pytest.importorskip("torchvision")

    torch.manual_seed(0)
    model = S.convert_norm(torchvision.models.mobilenet_v3_small(num_classes=4), "SSN")
    moved, _ = _train_ssn(model, torch.float32, lr=0.01, iters=12, stop=2)
    assert moved == 2 * len(S.sparse_layers(model)) == 68  # the review measured 0 of 68


def test_a_bf16_model_trains_its_ratios_and_selects():
    """``model.to(torch.bfloat16)``: every ratio vector gets a gradient and the choices are not all IN (bf16
    convolutions change the gradients, so the choices need not equal float32's)."""
    moved, selection = _train_ssn(small_classifier(), torch.bfloat16, lr=1e-3, iters=30)
    assert moved == 6 and all(None not in s for s in selection)
    assert {c for s in selection for c in s} != {"IN"}
