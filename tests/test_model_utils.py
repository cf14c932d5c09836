"""convert_norm, param_groups, clip_ratio_grad_norm, recompute_batch_statistics, describe_selection."""
import pytest
import torch
from torch import nn

import ssn_plugins as S


def small_cnn():
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.GroupNorm(2, 8), nn.ReLU(),
        nn.Identity(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4), nn.BatchNorm1d(4),
    )


@pytest.mark.parametrize("to", ["SN", "SSN", "SyncSN", "SyncSSN"])
def test_convert_norm_replaces_and_carries_state(to):
    model = small_cnn()
    model(torch.randn(4, 3, 6, 6))  # give BN some running statistics
    bn, gn = model[1], model[4]
    with torch.no_grad():
        gn.weight.uniform_(0.5, 2)
    converted = S.convert_norm(model, to=to, momentum=0.05, layer_types=(nn.BatchNorm2d, nn.GroupNorm))
    classes = S.NORM_TYPES[to]
    assert type(converted[1]) is classes[2] and type(converted[4]) is classes[0]
    assert type(converted[10]) is nn.BatchNorm1d  # left out by layer_types
    assert torch.equal(converted[1].weight, bn.weight) and torch.equal(converted[1].running_var, bn.running_var)
    assert torch.equal(converted[4].weight, gn.weight)
    assert converted[1].momentum == 0.05
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) for m in converted.modules())
    assert converted(torch.randn(4, 3, 6, 6)).shape == (4, 4)
    # a BatchNorm1d on (N, C) features converts with LN and BN only
    head = S.convert_norm(small_cnn(), to=to, candidates=("LN", "BN"))
    assert type(head[10]) is classes[1] and head[10].candidates == ("LN", "BN")
    assert head(torch.randn(4, 3, 6, 6)).shape == (4, 4)
    with pytest.raises(ValueError, match="unknown target"):
        S.convert_norm(small_cnn(), to="BN")


def test_convert_norm_with_one_hot_bn_reproduces_batchnorm_model():
    model = small_cnn().double().eval()
    model[1].running_mean.uniform_(-1, 1)
    model[1].running_var.uniform_(0.5, 2)
    converted = S.convert_norm(small_cnn().double().eval(), to="SSN")
    converted.load_state_dict(model.state_dict(), strict=False)
    for m in S.sparse_layers(converted):
        m.fix("mean", "BN")
        m.fix("var", "BN")
    converted[4].fix("mean", "LN"), converted[4].fix("var", "LN")  # GroupNorm(2) is not LN: skip comparing it
    x = torch.randn(5, 3, 6, 6, dtype=torch.float64)
    torch.testing.assert_close(converted[:3](x), model[:3](x))


def test_param_groups_follow_the_recipe():
    model = S.convert_norm(small_cnn(), to="SSN", layer_types=(nn.BatchNorm2d, nn.GroupNorm))
    model.append(S.ChannelEquilibrium(4, group_size=4))
    groups = {g["name"]: g for g in S.param_groups(model, lr=0.2, weight_decay=1e-4, norm_weight_decay=0.0)}
    ratios = {id(p) for m in S.sparse_layers(model) for p in (m.mean_weight, m.var_weight)}
    assert {id(p) for p in groups["ratios"]["params"]} == ratios
    assert groups["ratios"]["lr"] == pytest.approx(0.02) and groups["ratios"]["weight_decay"] == 0
    norm_ids = {id(p) for p in groups["norm"]["params"]}
    assert id(model[1].weight) in norm_ids and id(model[11].mix_logit) in norm_ids
    assert id(model[11].reweight.fc[1].weight) in norm_ids  # IR's LayerNorm
    assert groups["norm"]["weight_decay"] == 0 and groups["other"]["weight_decay"] == 1e-4
    assert id(model[0].weight) in {id(p) for p in groups["other"]["params"]}
    total = sum(len(g["params"]) for g in groups.values())
    assert total == len([p for p in model.parameters()])
    torch.optim.SGD(list(groups.values()), lr=0.2, momentum=0.9)  # accepted as given


def test_clip_ratio_grad_norm_only_touches_ratios():
    model = S.convert_norm(small_cnn(), to="SN", layer_types=(nn.BatchNorm2d,))
    (model(torch.randn(4, 3, 6, 6)) * torch.randn(4, 4) * 1e4).sum().backward()
    conv_grad = model[0].weight.grad.clone()
    total = S.clip_ratio_grad_norm(model, max_norm=1.0)
    assert total > 1.0
    clipped = torch.cat([p.grad for p in S.ratio_parameters(model)]).norm()
    assert clipped == pytest.approx(1.0, rel=1e-4)
    assert torch.equal(model[0].weight.grad, conv_grad)


def test_install_ratio_clipping_clips_before_every_step_also_through_a_wrapper():
    model = S.convert_norm(small_cnn(), to="SN", layer_types=(nn.BatchNorm2d,))

    class Wrapper(nn.Module):  # stands for DistributedDataParallel / mmengine's wrappers: the model in .module
        def __init__(self, module):
            super().__init__()
            self.module = module

    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    handle = S.install_ratio_clipping(optimizer, Wrapper(model), max_norm=0.5)
    assert handle is not None
    for step in range(2):
        for p in model.parameters():
            p.grad = torch.full_like(p, 10.0)
        optimizer.step()
        assert float(torch.cat([p.grad for p in S.ratio_parameters(model)]).norm()) == pytest.approx(0.5, rel=1e-5)
        assert torch.all(model[0].weight.grad == 10.0)
    handle.remove()
    for p in model.parameters():
        p.grad = torch.full_like(p, 10.0)
    optimizer.step()
    assert torch.all(model[1].mean_weight.grad == 10.0)


def test_ratio_clipping_has_one_off_value():
    model = S.convert_norm(small_cnn(), to="SN", layer_types=(nn.BatchNorm2d,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    assert S.install_ratio_clipping(optimizer, model, None) is None
    assert S.install_ratio_clipping(optimizer, small_cnn(), 1.0) is None  # no SN layer: nothing to clip
    for bad in (0, -1.0, float("nan"), "1", True):
        with pytest.raises(ValueError, match="None to turn ratio-gradient clipping off"):
            S.install_ratio_clipping(optimizer, model, bad)


def batch_stats_model():
    model = nn.Sequential(nn.Conv2d(3, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 6, 3), S.SwitchNorm2d(6),
                          nn.ReLU(), nn.Conv2d(6, 6, 1), S.SparseSwitchNorm2d(6)).double()
    model[7].fix("mean", "BN")
    model[7].fix("var", "BN")
    return model


def test_recompute_batch_statistics_equals_plain_average():
    model = batch_stats_model().eval()
    batches = [torch.randn(4, 3, 9, 9, dtype=torch.float64) * (1 + i) + i for i in range(5)]
    # reference: capture each norm layer's input per batch in training mode and average plainly
    inputs = {i: [] for i in (1, 4, 7)}
    hooks = [model[i].register_forward_pre_hook(lambda m, a, i=i: inputs[i].append(a[0])) for i in inputs]
    model.train()
    with torch.no_grad():
        for b in batches:
            model(b)
    for h in hooks:
        h.remove()
    model.eval()
    tracked_before = model[1].num_batches_tracked.clone()

    used = S.recompute_batch_statistics(model, iter(batches + batches), num_batches=5)
    assert used == 5
    for i, xs in inputs.items():
        means = torch.stack([x.mean((0, 2, 3)) for x in xs[:5]])
        variances = torch.stack([x.var((0, 2, 3), unbiased=True) for x in xs[:5]])
        mean = means.mean(0)
        var = (variances + means ** 2).mean(0) - mean ** 2
        torch.testing.assert_close(model[i].running_mean, mean)
        torch.testing.assert_close(model[i].running_var, var)
    assert not model.training and model[1].momentum == 0.1 and model[4].momentum == 0.1
    assert torch.equal(model[1].num_batches_tracked, tracked_before)


def test_recompute_batch_statistics_keeps_state_on_failure():
    model = batch_stats_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}

    def broken():
        yield torch.randn(4, 3, 9, 9, dtype=torch.float64)
        raise RuntimeError("loader died")

    with pytest.raises(RuntimeError, match="loader died"):
        S.recompute_batch_statistics(model, broken())
    with pytest.raises(ValueError, match="no batches"):
        S.recompute_batch_statistics(model, [])
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert model[1].momentum == 0.1


def test_describe_selection():
    model = nn.Sequential(S.SwitchNorm2d(4), S.SparseSwitchNorm2d(4))
    model[1].fix("mean", "LN")
    rows = S.describe_selection(model)
    assert [r["name"] for r in rows] == ["0", "1"]
    assert rows[0]["selection"] is None and rows[0]["mean_ratios"] == pytest.approx([1 / 3] * 3, abs=1e-4)
    assert rows[1]["selection"] == ("LN", None) and rows[1]["mean_ratios"] == [0, 1, 0]
    text = S.format_selection(rows)
    assert "mean=LN, var=soft" in text and "soft (SN)" in text


def test_count_selections_counts_each_vector():
    model = torch.nn.Sequential(S.SparseSwitchNorm2d(4), S.SparseSwitchNorm2d(4), S.SwitchNorm2d(4))
    model[0].fix("mean", "BN")
    model[0].fix("var", "IN")
    model[1].fix("mean", "BN")
    counts = S.count_selections(S.describe_selection(model))
    assert counts == {"mean": {"BN": 2}, "var": {"IN": 1, "soft": 1}}
