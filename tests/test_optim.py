"""The optimizer recipe: parameter groups for the ratios, ratio-gradient clipping and its one "off" value."""
import pytest
import torch
from torch import nn

import ssn_plugins as S

from helpers import small_cnn


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
