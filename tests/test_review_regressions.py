"""The reliability review's defect groups (D1-D26), each as a regression test of the expected behaviour.

Framework-specific groups (D3, D9, D21, D24's detectron2 typo; D4 and D22 in OpenMMLab) live in
test_detectron2.py and test_openmmlab.py beside the other tests of those adapters.
"""
import copy
import io
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import ssn_plugins as S

REPO = Path(__file__).resolve().parents[1]
VECTORS = ("mean", "var")


def fixed(cls, mean, var, c=8, **kwargs):
    m = cls(c, **kwargs)
    m.fix("mean", mean)
    m.fix("var", var)
    return m


def small_net(norm_cls=S.SparseSwitchNorm2d):
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), norm_cls(8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1), norm_cls(8), nn.ReLU())


# ---------------------------------------------------------------- D1, D2: fixed IN on awkward input
@pytest.mark.parametrize("cls,shape", [(S.SparseSwitchNorm1d, (0, 8, 5)), (S.SparseSwitchNorm2d, (0, 8, 7, 7)),
                                       (S.SparseSwitchNorm3d, (0, 8, 2, 3, 3))])
@pytest.mark.parametrize("training", [True, False])
def test_d1_fixed_in_on_an_empty_batch_gives_an_empty_output(cls, shape, training):
    m = fixed(cls, "IN", "IN").train(training)
    x = torch.randn(shape, requires_grad=True)
    y = m(x)
    assert y.shape == x.shape
    y.sum().backward()
    assert m.weight.grad is not None and torch.equal(m.weight.grad, torch.zeros(8))


@pytest.mark.parametrize("training", [True, False])
def test_d2_fixed_in_at_batch_one_on_1x1_maps_is_the_bias(training):
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


def test_d2_converted_resnet18_fixed_on_in_evaluates_a_small_image():
    torchvision = pytest.importorskip("torchvision")
    model = S.convert_norm(torchvision.models.resnet18(num_classes=10), "SSN")
    for m in S.sparse_layers(model.layer4):
        m.fix("mean", "IN")
        m.fix("var", "IN")
    model.eval()
    assert torch.isfinite(model(torch.randn(1, 3, 32, 32))).all()  # layer4's maps are 1x1


# ---------------------------------------------------------------- D5, D6: SparsestMax in real precision
def test_d5_bf16_layer_selects_what_float32_selects_and_set_radius_agrees_with_forward():
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


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_d6_no_dead_zone_near_the_centre(dtype):
    z = torch.tensor([1.0, 1.0, 1.0 + 1e-5], dtype=dtype, requires_grad=True)
    p = S.sparsestmax(z, 0.1)
    assert p.argmax() == 2  # BN slightly favoured stays favoured (float32 used to jump to IN)
    expected = S.sparsestmax(z.detach().double(), 0.1)
    torch.testing.assert_close(p.double(), expected, atol=1e-6, rtol=0)
    (p * torch.tensor([1.0, 2.0, 0.0], dtype=dtype)).sum().backward()
    assert z.grad.abs().max() > 1.0  # a real gradient (large near the centre, as the math says), not zero


def test_d6_uniform_start_layers_get_a_gradient_once_the_radius_grows():
    m = S.SparseSwitchNorm2d(4)
    with torch.no_grad():  # one small ratio step away from uniform, as after the first iterations
        m.mean_weight.add_(torch.tensor([0.0, 2e-7, -2e-7]))
    S.set_radius(m, 0.2)
    x = torch.randn(4, 4, 5, 5)
    (m(x) * torch.randn_like(x)).sum().backward()
    assert m.mean_weight.grad.abs().max() > 0
    assert m.ratios()[0].argmax() == 1  # LN, the candidate the step favoured


# ---------------------------------------------------------------- D7, D8: checkpointing, pickling, deepcopy
def test_d7_non_reentrant_checkpoint_with_the_radius_scheduler():
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


def test_d8_model_with_scheduler_pickles_and_deepcopies():
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


# ---------------------------------------------------------------- D10, D15, D16: non-finite and huge values
def test_d10_nan_logits_propagate_in_forward_and_set_radius_names_the_layer():
    model = small_net()
    with torch.no_grad():
        model[4].mean_weight[0] = float("nan")
    model[4].radius.fill_(0.3)
    assert torch.isnan(model(torch.randn(2, 3, 6, 6))).all()
    with pytest.raises(ValueError, match=r"SSN layer '4'.*mean_weight are not finite"):
        S.set_radius(model, 0.4)


@pytest.mark.parametrize("z", [[1e8, 1.0, 0.0], [1e30, 2.0, 1.0], [3e7, 3e7 + 4, 3e7 - 4]])
def test_d10_d16_huge_logits_stay_on_the_simplex(z):
    for dtype in (torch.float32, torch.float64):
        t = torch.tensor(z, dtype=dtype)
        for p in (S.sparsemax(t), S.sparsestmax(t, 0.3)):
            assert (p >= 0).all() and abs(p.sum().item() - 1) < 1e-6
        torch.testing.assert_close(S.sparsemax(t), S.sparsemax(t - t.max()))  # shift invariance
    assert torch.equal(S.sparsemax(torch.tensor([1e6] * 3)), torch.full((3,), 1 / 3))


def test_d10_non_finite_inputs_give_nan_or_a_vertex_never_an_index_error():
    nan = float("nan")
    assert torch.isnan(S.sparsemax(torch.tensor([nan, 1.0, 0.0]))).all()
    assert torch.isnan(S.sparsemax(torch.full((3,), -float("inf")))).all()
    assert torch.isnan(S.sparsestmax(torch.tensor([nan, 1.0, 0.0]), 0.3)).all()
    assert torch.isnan(S.sparsestmax(torch.tensor([1.0, 2.0, 3.0]), torch.tensor(nan))).all()
    assert torch.isnan(S.sparsestmax(torch.tensor([1.0, 2.0, 3.0]), torch.tensor(-1.0))).all()
    assert torch.equal(S.sparsestmax(torch.tensor([1.0, 2.0, 0.0]), torch.tensor(float("inf"))),
                       torch.tensor([0.0, 1.0, 0.0]))
    assert torch.equal(S.sparsestmax(torch.tensor([1.0, 2.0, 0.0]), torch.tensor(1e9)), torch.tensor([0.0, 1.0, 0.0]))
    assert S.sparsemax(torch.zeros(3, 0)).shape == (3, 0)


@pytest.mark.parametrize("radius", [float("nan"), -1.0, float("inf")])
def test_d15_constructor_validates_the_radius(radius):
    with pytest.raises(ValueError, match="radius must be a finite number >= 0"):
        S.SparseSwitchNorm2d(4, radius=radius)


def test_d15_a_loaded_nan_radius_is_refused():
    state = S.SparseSwitchNorm2d(4).state_dict()
    state["radius"] = torch.tensor(float("nan"))
    with pytest.raises(RuntimeError, match="radius must be a finite number"):
        S.SparseSwitchNorm2d(4).load_state_dict(state)


# ---------------------------------------------------------------- D11, D12, D13: batch-average statistics
def test_d11_recompute_restores_every_module_mode_and_keeps_eval_layers():
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


def test_d12_empty_batches_do_not_count():
    m = S.SwitchNorm2d(4)
    batches = [torch.empty(0, 4, 3, 3), torch.randn(6, 4, 3, 3) + 5, torch.empty(0, 4, 3, 3)]
    assert S.recompute_batch_statistics(m, batches) == 3
    torch.testing.assert_close(m.running_mean, batches[1].mean((0, 2, 3)))
    lonely = S.SwitchNorm2d(4)
    lonely.running_mean.fill_(7.0)
    S.recompute_batch_statistics(lonely, [torch.empty(0, 4, 3, 3)])
    assert torch.equal(lonely.running_mean, torch.full((4,), 7.0))  # saw nothing: keeps its statistics


def test_d13_channel_equilibrium_buffers_are_restored_and_a_ce_only_model_warns(caplog):
    model = nn.Sequential(nn.Conv2d(3, 8, 3), S.SwitchNorm2d(8), S.ChannelEquilibrium(8, group_size=4))
    before = [b.clone() for b in model[2].buffers()]
    S.recompute_batch_statistics(model, [torch.randn(4, 3, 8, 8) * 3 for _ in range(2)])
    for b, old in zip(model[2].buffers(), before):
        assert torch.equal(b, old)
    with caplog.at_level("WARNING"):
        assert S.recompute_batch_statistics(S.ChannelEquilibrium(8, group_size=4), [torch.randn(2, 8, 4, 4)]) == 0
    assert "nothing to recompute" in caplog.text


# ---------------------------------------------------------------- D14: dtype combinations
@pytest.mark.parametrize("candidate", ["BN", "IN", "LN"])
@pytest.mark.parametrize("layer_dtype,input_dtype", [(torch.float16, torch.float32), (torch.float32, torch.float64),
                                                     (torch.float32, torch.bfloat16)])
@pytest.mark.parametrize("training", [True, False])
def test_d14_fixed_layers_accept_what_soft_layers_accept(candidate, layer_dtype, input_dtype, training):
    x = torch.randn(4, 8, 5, 5).to(input_dtype)
    soft = S.SparseSwitchNorm2d(8).to(layer_dtype).train(training)
    hard = fixed(S.SparseSwitchNorm2d, candidate, candidate).to(layer_dtype).train(training)
    assert soft(x).dtype == hard(x).dtype == input_dtype
    reference = fixed(S.SparseSwitchNorm2d, candidate, candidate).double().train(training)(x.double())
    tolerance = 2e-2 if torch.float16 in (layer_dtype, input_dtype) or input_dtype == torch.bfloat16 else 1e-5
    torch.testing.assert_close(hard(x).double(), reference, atol=tolerance, rtol=tolerance)


# ---------------------------------------------------------------- D17: convert_norm keeps what it can
def test_d17_convert_norm_keeps_settings_freezing_and_sharing():
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


def test_d17_convert_norm_warns_when_nothing_converts_and_checks_keywords_first():
    with pytest.warns(UserWarning, match="nothing was converted"):
        S.convert_norm(nn.Sequential(nn.Conv2d(3, 3, 1), nn.LayerNorm(3)), "SSN")
    with pytest.raises(TypeError, match="using_bm"):
        S.convert_norm(nn.Sequential(nn.Conv2d(3, 3, 1)), "SSN", using_bm=False)
    with pytest.raises(ValueError, match="run one forward pass"):
        S.convert_norm(nn.Sequential(nn.LazyBatchNorm2d()), "SN")


# ---------------------------------------------------------------- D18: meta device, reset_*
@pytest.mark.parametrize("cls", [S.SwitchNorm2d, S.SparseSwitchNorm2d])
def test_d18_meta_device_then_to_empty_and_reset_parameters(cls):
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


# ---------------------------------------------------------------- D19: flags written directly
def test_d19_flag_buffers_written_directly_take_effect_at_set_radius_and_saving_keeps_what_runs():
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


# ---------------------------------------------------------------- D23: export paths
def test_d23_torch_export_of_a_soft_layer_and_a_clear_double_backward_error():
    m = S.SparseSwitchNorm2d(4, radius=0.3).eval()
    x = torch.randn(2, 4, 5, 5)
    exported = torch.export.export(m, (x,))
    torch.testing.assert_close(exported.module()(x), m(x))
    x.requires_grad_()
    with pytest.raises(RuntimeError, match="double backward .* build the layer with double_backward=True"):
        torch.autograd.grad(m.train()(x).square().sum(), x, create_graph=True)


# ---------------------------------------------------------------- D24, D26: messages and validation
def test_d24_clear_messages():
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
def test_d26_eps_must_be_positive(eps):
    with pytest.raises(ValueError, match="eps must be a finite number > 0"):
        S.SwitchNorm2d(4, eps=eps)


# ---------------------------------------------------------------- D25: official_compat changes the math only
def test_d25_official_compat_fresh_layer_is_finite_and_momentum_keeps_pytorch_convention():
    m = fixed(S.SparseSwitchNorm2d, "BN", "BN", official_compat=True, momentum=0.1).eval()
    assert m.momentum == 0.1 and torch.equal(m.running_var, torch.ones(8))
    assert m(torch.randn(2, 8, 4, 4)).abs().max() < 10
    converted = S.convert_norm(nn.Sequential(nn.BatchNorm2d(8, momentum=0.2)), "SN", official_compat=True)
    assert converted[0].momentum == 0.2


# ---------------------------------------------------------------- D4 (core): re-opened selections train again
def test_d4_reopened_layers_train_until_the_schedule_fixes_them_again():
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


# ---------------------------------------------------------------- D20: the converter CLI
def convert(*args):
    return subprocess.run([sys.executable, str(REPO / "tools" / "convert_checkpoint.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def assert_one_line_failure(result, *fragments):
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("conversion failed: "), result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def test_d20_converter_cli_failures_are_one_line(tmp_path):
    from helpers import published_layout, trained_looking_resnet

    good = tmp_path / "ssn18.pth"
    layout = published_layout(trained_looking_resnet(18, "SSN"))
    torch.save(layout, good)
    (tmp_path / "empty.pth").write_bytes(b"")
    (tmp_path / "truncated.pth").write_bytes(good.read_bytes()[:200])
    for name, fragment in [("missing.pth", "no such file"), ("empty.pth", "empty"), (".", "not a file"),
                           ("truncated.pth", "not a readable checkpoint")]:
        line = assert_one_line_failure(convert(tmp_path / name, "-o", tmp_path / "out"), fragment)
        assert "--trust-pickle" not in line
    line = assert_one_line_failure(convert(tmp_path / "missing.pth", "--trust-pickle", "-o", tmp_path / "out"))
    wrong = dict(layout["state_dict"])
    wrong["module.layer1.0.conv1.weight"] = torch.zeros(64, 64, 5, 5)
    torch.save(wrong, tmp_path / "wrong_shape.pth")
    assert_one_line_failure(convert(tmp_path / "wrong_shape.pth", "-o", tmp_path / "out"), "size mismatch")
    nan_radius = dict(layout["state_dict"])
    nan_radius["module.sn1.radius"] = torch.tensor([float("nan")])
    torch.save(nan_radius, tmp_path / "nan_radius.pth")
    assert_one_line_failure(convert(tmp_path / "nan_radius.pth", "-o", tmp_path / "out"), "radius")
    nan_var = dict(layout["state_dict"])
    nan_var["module.sn1.running_var"] = torch.full_like(nan_var["module.sn1.running_var"], float("nan"))
    torch.save(nan_var, tmp_path / "nan_var.pth")
    assert_one_line_failure(convert(tmp_path / "nan_var.pth", "-o", tmp_path / "out"), "running_var")
    (tmp_path / "a_file").write_text("x")
    assert_one_line_failure(convert(good, "-o", tmp_path / "a_file" / "sub" / "out"), "cannot create")
    assert not list(tmp_path.glob("out*"))  # nothing written by any failure
    result = convert(good, "--to", "i3d", "--i3d-conv1-t", "0", "-o", tmp_path / "out")
    assert result.returncode != 0 and "must be >= 1" in result.stderr
    # --depth must match the checkpoint
    mm_file = tmp_path / "mm.pth"
    assert convert(good, "--to", "openmmlab", "-o", tmp_path / "mm").returncode == 0
    (tmp_path / "mm_mm.pth").rename(mm_file)
    for depth in (18, 34, 101):
        expected = "" if depth == 18 else "blocks per stage"
        result = convert(mm_file, "--openmmlab-norm", "bn", "--depth", depth, "--to", "i3d", "-o", tmp_path / "i3d")
        if depth == 18:
            assert result.returncode == 0, result.stderr
        else:
            assert_one_line_failure(result, expected)


def test_converted_files_carry_the_authors_math(tmp_path):
    from helpers import photo_batch, published_layout, trained_looking_resnet

    authors = trained_looking_resnet(18, "SN")  # built with official_compat=True: the authors' layers
    torch.save(published_layout(authors), tmp_path / "authors.pth")
    assert convert(tmp_path / "authors.pth", "--to", "torch", "-o", tmp_path / "conv" / "sn18").returncode == 0
    ours = S.models.ResNet(18, "SN").eval()  # built with defaults, as the README says: nothing set by hand
    ours.load_state_dict(torch.load(tmp_path / "conv" / "sn18.pth", weights_only=True)["state_dict"])
    x = photo_batch()
    with torch.no_grad():
        torch.testing.assert_close(ours(x), authors(x))
        for m in ours.modules():
            if isinstance(m, S.SwitchNorm):
                m.official_compat = False
        assert not torch.allclose(ours(x), authors(x), rtol=1e-4, atol=1e-4)  # the paper's math differs


# ---------------------------------------------------------------- D5/D6 in training: real runs, small ratio updates
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


def test_d6_small_ratio_updates_select_the_same_in_float32_and_float64():
    moved32, selection32 = _train_ssn(small_classifier(), torch.float32, lr=1e-3, iters=30)
    moved64, selection64 = _train_ssn(small_classifier(), torch.float64, lr=1e-3, iters=30)
    assert moved32 == moved64 == 6
    assert selection32 == selection64
    assert all(None not in s for s in selection32)
    assert {c for s in selection32 for c in s} != {"IN"}


def test_d6_every_open_ratio_vector_of_mobilenet_gets_a_gradient_once_the_radius_grows():
    torchvision = pytest.importorskip("torchvision")

    torch.manual_seed(0)
    model = S.convert_norm(torchvision.models.mobilenet_v3_small(num_classes=4), "SSN")
    moved, _ = _train_ssn(model, torch.float32, lr=0.01, iters=12, stop=2)
    assert moved == 2 * len(S.sparse_layers(model)) == 68  # the review measured 0 of 68


def test_d5_a_bf16_model_trains_its_ratios_and_selects():
    """``model.to(torch.bfloat16)``: every ratio vector gets a gradient and the choices are not all IN (bf16
    convolutions change the gradients, so the choices need not equal float32's)."""
    moved, selection = _train_ssn(small_classifier(), torch.bfloat16, lr=1e-3, iters=30)
    assert moved == 6 and all(None not in s for s in selection)
    assert {c for s in selection for c in s} != {"IN"}
