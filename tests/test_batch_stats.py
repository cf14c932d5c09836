"""Batch-average statistics (recompute_batch_statistics): the plain average, modes and state restored, empty
batches, CE buffers."""
import pytest
import torch
from torch import nn

import ssn_plugins as S


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


def test_recompute_restores_every_module_mode_and_keeps_eval_layers():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), S.SwitchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3), S.SwitchNorm2d(8))
    model[1].eval()  # frozen by the user while the model trains
    before = model[1].running_mean.clone()
    S.recompute_batch_statistics(model, [torch.randn(4, 3, 8, 8) + 2 for _ in range(3)])
    assert [m.training for m in model] == [True, False, True, True, True]
    assert torch.equal(model[1].running_mean, before)
    assert not torch.equal(model[4].running_mean, torch.zeros(8))
    model.eval()
    S.recompute_batch_statistics(model, [torch.randn(4, 3, 8, 8)], frozen=[model[4]])
    assert not any(m.training for m in model.modules())


def test_empty_batches_do_not_count():
    m = S.SwitchNorm2d(4)
    batches = [torch.empty(0, 4, 3, 3), torch.randn(6, 4, 3, 3) + 5, torch.empty(0, 4, 3, 3)]
    assert S.recompute_batch_statistics(m, batches) == 3
    torch.testing.assert_close(m.running_mean, batches[1].mean((0, 2, 3)))
    lonely = S.SwitchNorm2d(4)
    lonely.running_mean.fill_(7.0)
    S.recompute_batch_statistics(lonely, [torch.empty(0, 4, 3, 3)])
    assert torch.equal(lonely.running_mean, torch.full((4,), 7.0))  # saw nothing: keeps its statistics


def test_channel_equilibrium_buffers_are_restored_and_a_ce_only_model_warns(caplog):
    model = nn.Sequential(nn.Conv2d(3, 8, 3), S.SwitchNorm2d(8), S.ChannelEquilibrium(8, group_size=4))
    before = [b.clone() for b in model[2].buffers()]
    S.recompute_batch_statistics(model, [torch.randn(4, 3, 8, 8) * 3 for _ in range(2)])
    for b, old in zip(model[2].buffers(), before):
        assert torch.equal(b, old)
    with caplog.at_level("WARNING"):
        assert S.recompute_batch_statistics(S.ChannelEquilibrium(8, group_size=4), [torch.randn(2, 8, 4, 4)]) == 0
    assert "nothing to recompute" in caplog.text
