"""convert_norm and convert_sync: which layers become SN/SSN, and what they keep (statistics, settings, freezing,
sharing)."""
import pytest
import torch
from torch import nn

import ssn_plugins as S

from helpers import small_cnn


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


def test_convert_norm_keeps_settings_freezing_and_sharing():
    shared = nn.BatchNorm2d(8, momentum=None)
    frozen = nn.BatchNorm2d(8).requires_grad_(False)
    untracked = nn.BatchNorm2d(8, track_running_stats=False)
    shared.num_batches_tracked.fill_(5)
    model = nn.Sequential(shared, frozen, untracked, shared)
    S.convert_norm(model, "SN")
    assert model[0] is model[3] and model[0].momentum is None and model[0].num_batches_tracked.item() == 5
    assert not any(p.requires_grad for p in model[1].parameters())
    assert model[2].running_mean is None
    x = torch.randn(4, 8, 3, 3)
    model.eval()
    assert not torch.equal(model[2](x), model[2](x * 0))  # batch statistics in eval, as the BN had


def test_convert_norm_warns_when_nothing_converts_and_checks_keywords_first():
    with pytest.warns(UserWarning, match="nothing was converted"):
        S.convert_norm(nn.Sequential(nn.Conv2d(3, 3, 1), nn.LayerNorm(3)), "SSN")
    with pytest.raises(TypeError, match="using_bm"):
        S.convert_norm(nn.Sequential(nn.Conv2d(3, 3, 1)), "SSN", using_bm=False)
    with pytest.raises(ValueError, match="run one forward pass"):
        S.convert_norm(nn.Sequential(nn.LazyBatchNorm2d()), "SN")
