"""SyncSN / SyncSSN (2-D and the 5-D video layers): a two-process gloo run equals one process on the
concatenated batch."""
import os

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

import ssn_plugins as S
from ssn_plugins.batch_stats import average_statistics_across_processes
from helpers import gloo_worker

pytestmark = pytest.mark.slow  # pytest -m "not slow" leaves it out; CI runs it


LAYERS = {  # (spatial dims, sync) -> (SN, SSN, conv)
    (2, False): (S.SwitchNorm2d, S.SparseSwitchNorm2d, nn.Conv2d),
    (2, True): (S.SyncSwitchNorm2d, S.SyncSparseSwitchNorm2d, nn.Conv2d),
    (3, False): (S.SwitchNorm3d, S.SparseSwitchNorm3d, nn.Conv3d),
    (3, True): (S.SyncSwitchNorm3d, S.SyncSparseSwitchNorm3d, nn.Conv3d),
}


def build(sync: bool, dims: int = 2) -> nn.Module:
    sn, ssn, conv = LAYERS[dims, sync]
    torch.manual_seed(0)
    model = nn.Sequential(
        conv(3, 4, 3, padding=1), sn(4), nn.ReLU(),
        conv(4, 4, 3, padding=1), ssn(4, radius=0.3), nn.ReLU(),
        conv(4, 4, 1), ssn(4),
    ).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    model[7].fix("mean", "BN")
    model[7].fix("var", "BN")
    return model


def run(model, x, weights):
    x = x.clone().requires_grad_()
    y = model(x)
    (y * weights).sum().backward()
    return {
        "y": y.detach(), "x_grad": x.grad,
        # a fixed SSN selection gets no gradient in one process, a zero one under a process group
        "grads": {n: torch.zeros_like(p) if p.grad is None else p.grad.clone() for n, p in model.named_parameters()},
        "without_grad": [n for n, p in model.named_parameters() if p.grad is None],
        "buffers": {n: b.clone() for n, b in model.named_buffers()},
    }


def _worker(rank, world, init_file, out_dir, x, weights, sizes):
    with gloo_worker(rank, world, init_file):
        start = sum(sizes[:rank])
        part = slice(start, start + sizes[rank])
        result = run(build(sync=True, dims=x.dim() - 2), x[part], weights[part])
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))


@pytest.mark.parametrize("sizes, dims", [((3, 3), 2), ((5, 1), 2), ((6, 0), 2), ((1, 3), 3)],
                         ids=["even", "uneven", "empty-rank", "video-uneven"])
def test_two_process_gloo_equals_single_process(tmp_path, sizes, dims):
    torch.manual_seed(1)
    extent = (6, 5) if dims == 2 else (4, 6, 5)  # (H, W) or (T, H, W)
    x = torch.randn(sum(sizes), 3, *extent, dtype=torch.float64) * 2 + 0.5
    weights = torch.randn(sum(sizes), 4, *extent, dtype=torch.float64)
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path), x, weights, sizes), nprocs=2)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    single = run(build(sync=False, dims=dims), x, weights)

    torch.testing.assert_close(torch.cat([r["y"] for r in ranks]), single["y"])
    # DDP needs a gradient for every parameter, fixed selections included
    assert ranks[0]["without_grad"] == ranks[1]["without_grad"] == []
    assert single["without_grad"] == ["7.mean_weight", "7.var_weight"]
    torch.testing.assert_close(torch.cat([r["x_grad"] for r in ranks]), single["x_grad"])
    for name, grad in single["grads"].items():
        # each process holds the gradient of its share of the loss; DDP would add them
        torch.testing.assert_close(ranks[0]["grads"][name] + ranks[1]["grads"][name], grad, msg=name)
    for name, buf in single["buffers"].items():
        for r in ranks:
            torch.testing.assert_close(r["buffers"][name], buf, msg=name)


def test_sync_layer_without_process_group_is_the_plain_layer():
    x = torch.randn(4, 4, 5, 5, dtype=torch.float64)
    plain, sync = S.SparseSwitchNorm2d(4).double(), S.SyncSparseSwitchNorm2d(4).double()
    torch.testing.assert_close(sync(x), plain(x))
    torch.testing.assert_close(sync.running_var, plain.running_var)


def test_convert_sync_keeps_state_and_selection():
    model = build(sync=False)
    model(torch.randn(4, 3, 5, 5, dtype=torch.float64))
    converted = S.convert_sync(build(sync=False))
    converted.load_state_dict(model.state_dict())
    assert isinstance(converted[1], S.SyncSwitchNorm2d) and isinstance(converted[4], S.SyncSparseSwitchNorm2d)
    assert converted[7].selection == ("BN", "BN")
    x = torch.randn(4, 3, 5, 5, dtype=torch.float64)
    torch.testing.assert_close(converted.eval()(x), model.eval()(x))


def _stats_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), S.SwitchNorm2d(4), nn.ReLU(),
                         nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)).double()


def _stats_batches():
    torch.manual_seed(2)
    return [torch.randn(3, 3, 5, 5, dtype=torch.float64) * (1 + i) + i for i in range(4)]


def _pooled_stats_worker(rank, world, init_file, out_dir):
    with gloo_worker(rank, world, init_file):
        model = _stats_model()
        S.recompute_batch_statistics(model, _stats_batches()[2 * rank:2 * rank + 2])  # pools by default
        own = _stats_model()
        S.recompute_batch_statistics(own, _stats_batches()[2 * rank:2 * rank + 2], pool_across_processes=False)
        for name, buffers in (("stats", model), ("own", own)):
            torch.save({n: b.clone() for n, b in buffers.named_buffers() if "running" in n},
                       os.path.join(out_dir, f"{name}{rank}.pt"))


def test_batch_averages_pooled_across_two_processes_equal_one_process(tmp_path):
    """Each process averages its own batches; pooling them gives what one process gets from all batches."""
    mp.spawn(_pooled_stats_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    single = _stats_model()
    S.recompute_batch_statistics(single, _stats_batches())
    assert average_statistics_across_processes(single) == 1  # no process group: unchanged
    expected = {n: b for n, b in single.named_buffers() if "running" in n}
    for rank in range(2):
        got = torch.load(tmp_path / f"stats{rank}.pt", weights_only=True)
        assert got.keys() == expected.keys()
        for name, value in expected.items():
            torch.testing.assert_close(got[name], value, msg=name)
        # without pooling each process keeps the averages of its own batches
        own = torch.load(tmp_path / f"own{rank}.pt", weights_only=True)
        local = _stats_model()
        S.recompute_batch_statistics(local, _stats_batches()[2 * rank:2 * rank + 2])
        for name, value in local.named_buffers():
            if "running" in name:
                torch.testing.assert_close(own[name], value, msg=name)
        assert not torch.allclose(own["1.running_var"], expected["1.running_var"])


def _uneven_worker(rank, world, init_file, out_dir):
    from torch.nn.parallel import DistributedDataParallel
    with gloo_worker(rank, world, init_file, timeout_s=60):
        results = {}
        # a layer that sees no sample on rank 1 adds nothing to the pooled statistics
        g = torch.Generator().manual_seed(0)
        plain = nn.Sequential(S.SwitchNorm2d(3))
        batches = [torch.randn(4, 3, 5, 5, generator=g) + 5 for _ in range(2)] if rank == 0 else \
            [torch.randn(0, 3, 5, 5)] * 2
        S.recompute_batch_statistics(plain, batches)
        results["pooled"] = (plain[0].running_mean.clone(), plain[0].running_var.clone())
        # synchronised layers with a shorter loader on rank 1: every process stops after the shortest
        sync = nn.Sequential(S.SyncSwitchNorm2d(3)).double()
        data = [torch.randn(2, 3, 4, 4, dtype=torch.float64, generator=g) for _ in range(3 if rank == 0 else 2)]
        results["used"] = S.recompute_batch_statistics(sync, data)
        results["sync"] = sync[0].running_mean.clone()
        # loading on rank 0 only, then DDP's broadcast: rank 1 runs rank 0's selection (native IN) too
        torch.manual_seed(1)
        model = nn.Sequential(nn.Conv2d(3, 4, 1), S.SyncSparseSwitchNorm2d(4))
        if rank == 0:
            model[1].fix("mean", "IN")
            model[1].fix("var", "IN")
        ddp = DistributedDataParallel(model)
        ddp(torch.randn(2, 3, 4, 4)).sum().backward()
        results["broadcast"] = model[1].selection
        # selections that diverged (logits loaded on one process only): set_radius says so on every process
        diverged = nn.Sequential(S.SyncSparseSwitchNorm2d(4))
        with torch.no_grad():
            diverged[0].mean_weight.copy_(torch.tensor([0.0, 5.0, 0.0] if rank == 1 else [0.1, 0.0, 0.0]))
        try:
            S.set_radius(diverged, 0.3)
            results["diverged"] = "no error"
        except RuntimeError as e:
            results["diverged"] = str(e)
        torch.save(results, os.path.join(out_dir, f"uneven{rank}.pt"))


def test_uneven_processes_pool_by_what_each_saw_and_keep_their_collectives_matched(tmp_path):
    mp.spawn(_uneven_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    got = [torch.load(tmp_path / f"uneven{rank}.pt", weights_only=True) for rank in range(2)]
    g = torch.Generator().manual_seed(0)
    alone = nn.Sequential(S.SwitchNorm2d(3))
    S.recompute_batch_statistics(alone, [torch.randn(4, 3, 5, 5, generator=g) + 5 for _ in range(2)])
    for rank in range(2):  # rank 0's statistics alone (mean ~5), not half of them
        torch.testing.assert_close(got[rank]["pooled"][0], alone[0].running_mean)
        torch.testing.assert_close(got[rank]["pooled"][1], alone[0].running_var)
        assert got[rank]["used"] == 2
        assert got[rank]["broadcast"] == ("IN", "IN")
        assert "1 SSN layers select differently across processes" in got[rank]["diverged"], got[rank]["diverged"]
    torch.testing.assert_close(got[0]["sync"], got[1]["sync"])
