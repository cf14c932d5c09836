"""The warnings for training that misses the recipe: SSN without a radius schedule, ratio logits in ordinary
parameter groups. Each is tested to fire and not to fire."""
import warnings

import pytest
import torch
from torch import nn

import ssn_plugins as S
from ssn_plugins.recipe_checks import NO_SCHEDULE, RATIO_GROUP, UNSCHEDULED_STEPS


def small_net(norm: str = "SSN") -> nn.Module:
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3),
                        nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))
    return S.convert_norm(net, to=norm)


def train(net, optimizer, steps, before_step=None):
    x, target = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 0])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in range(steps):
            if before_step is not None:
                before_step(step)
            optimizer.zero_grad()
            nn.functional.cross_entropy(net(x), target).backward()
            optimizer.step()
    return [str(w.message) for w in caught]


def recipe_optimizer(net, lr=0.01):
    return torch.optim.SGD(S.param_groups(net, lr, 1e-4), lr=lr, momentum=0.9)


def schedule_warnings(messages):
    return [m for m in messages if m.startswith("SSN layers trained")]


def group_warnings(messages):
    return [m for m in messages if m.startswith("SN/SSN ratio logits")]


def test_ssn_trained_without_a_schedule_warns_once_at_the_count():
    net = small_net()
    before = train(net, recipe_optimizer(net), UNSCHEDULED_STEPS - 1)
    assert schedule_warnings(before) == []
    after = train(net, recipe_optimizer(net), 3)
    # one warning call per SSN layer at its count (shown once by Python's default filter), then silence
    assert schedule_warnings(after) == [NO_SCHEDULE] * 2
    assert "RadiusScheduler" in NO_SCHEDULE and "SparsestMaxRadiusHook" in NO_SCHEDULE
    assert schedule_warnings(train(net, recipe_optimizer(net), 5)) == []


def test_a_radius_schedule_or_one_set_radius_silences_it():
    net = small_net()
    scheduler = S.RadiusScheduler(net, total_iters=UNSCHEDULED_STEPS + 10)
    messages = train(net, recipe_optimizer(net), UNSCHEDULED_STEPS + 5, before_step=scheduler.step)
    assert schedule_warnings(messages) == [] and group_warnings(messages) == []
    constant = small_net()
    S.set_radius(constant, 0.3)  # a deliberately constant radius
    assert schedule_warnings(train(constant, recipe_optimizer(constant), UNSCHEDULED_STEPS + 2)) == []


def test_forwards_that_do_not_train_the_ratios_are_not_counted():
    net = small_net()
    x = torch.randn(4, 3, 8, 8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with torch.no_grad():  # batch averaging: training mode, no gradients
            for _ in range(UNSCHEDULED_STEPS + 1):
                net(x)
        net.eval()
        for _ in range(UNSCHEDULED_STEPS + 1):
            net(x)
        net.train()
        for layer in S.sparse_layers(net):
            layer.mean_weight.requires_grad_(False)
            layer.var_weight.requires_grad_(False)
        for _ in range(UNSCHEDULED_STEPS + 1):
            net(x).sum().backward()
    assert schedule_warnings([str(w.message) for w in caught]) == []


def test_a_fully_selected_layer_needs_no_schedule():
    net = small_net()
    for layer in S.sparse_layers(net):
        layer.fix("mean", "BN")
        layer.fix("var", "IN")
    assert schedule_warnings(train(net, recipe_optimizer(net), UNSCHEDULED_STEPS + 2)) == []


@pytest.mark.parametrize("norm", ["SN", "SSN"])
def test_ratio_logits_in_an_ordinary_group_warn_at_the_first_step(norm):
    net = small_net(norm)
    messages = train(net, torch.optim.SGD(net.parameters(), lr=0.01, weight_decay=1e-4), 2)
    assert group_warnings(messages) == [group_warnings(messages)[0]]
    assert "with other parameters" in group_warnings(messages)[0] and "ssn_plugins.param_groups" in messages[0]


def test_ratio_groups_are_checked_by_their_settings():
    net = small_net("SN")
    ratios = list(S.ratio_parameters(net))
    others = [p for p in net.parameters() if all(p is not r for r in ratios)]
    own_groups = torch.optim.SGD([{"params": others}, {"params": ratios, "lr": 0.001, "weight_decay": 0.0}],
                                 lr=0.01, weight_decay=1e-4)
    assert group_warnings(train(net, own_groups, 2)) == []  # a group of their own without decay: the recipe
    decayed = torch.optim.SGD([{"params": others}, {"params": ratios, "lr": 0.001}], lr=0.01, weight_decay=1e-4)
    assert "with weight decay 0.0001" in group_warnings(train(net, decayed, 2))[0]
    marked = torch.optim.SGD([{"params": others}, {"params": ratios, "weight_decay": 1e-4, RATIO_GROUP: True}],
                             lr=0.01)
    assert group_warnings(train(net, marked, 2)) == []  # a recipe builder's mark: its settings are deliberate
    adam = torch.optim.AdamW(net.parameters(), lr=1e-3)  # AdamW's own decoupled decay counts too
    assert group_warnings(train(net, adam, 1))


def test_the_recipe_builders_mark_their_ratio_groups():
    net = small_net()
    groups = S.param_groups(net, 0.1, 1e-4)
    ratio_group = next(g for g in groups if g["name"] == "ratios")
    assert ratio_group[RATIO_GROUP] is True and all(RATIO_GROUP not in g for g in groups if g is not ratio_group)
