"""OpenMMLab adapter: registration under every scope, the optimizer constructor, and the hooks in a real
mmengine Runner (radius schedule across resume, batch-average statistics, norm_eval, scalars)."""
import copy
import json
import pickle

import pytest

pytest.importorskip("mmengine")  # needs the full stack; a torch-only install runs the core tests
pytest.importorskip("mmcv")

import torch
from mmcv.cnn import build_norm_layer
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.optim import build_optim_wrapper
from mmengine.registry import DefaultScope
from mmengine.runner import Runner
from torch import nn

import ssn_plugins as S
import ssn_plugins.openmmlab as som

SCOPES = ["mmseg", "mmdet", "mmaction", "mmengine"]
EXPECTED = {"SN": S.SwitchNorm2d, "SSN": S.SparseSwitchNorm2d, "SyncSN": S.SyncSwitchNorm2d,
            "SyncSSN": S.SyncSparseSwitchNorm2d, "SN3d": S.SwitchNorm3d, "SSN3d": S.SparseSwitchNorm3d,
            "SyncSN3d": S.SyncSwitchNorm3d, "SyncSSN3d": S.SyncSparseSwitchNorm3d}


def _scope_registries(scope):
    if scope == "mmseg":
        import mmseg.models  # noqa: F401
        from mmseg import registry
    elif scope == "mmdet":
        import mmdet.models  # noqa: F401
        from mmdet import registry
    elif scope == "mmaction":
        import mmaction.models  # noqa: F401
        from mmaction import registry
    else:
        from mmengine import registry
    return registry


@pytest.mark.parametrize("scope", SCOPES)
def test_every_name_resolves_under_every_scope(scope):
    registry = _scope_registries(scope)
    with DefaultScope.overwrite_default_scope(scope):
        for name, cls in EXPECTED.items():
            attr, layer = build_norm_layer(dict(type=name, requires_grad=True), 16)
            assert type(layer) is cls and attr == "bn"  # "bn" keeps bn1 / conv1.bn names for checkpoints
            assert type(registry.MODELS.build(dict(type=name, num_features=8))) is cls
        attr, ce = build_norm_layer(dict(type="CE"), 64)
        assert isinstance(ce, S.ChannelEquilibrium)
        for hook in ("SparsestMaxRadiusHook", "BatchAverageStatisticsHook", "SwitchNormEvalHook",
                     "SwitchNormScalarsHook"):
            assert registry.HOOKS.get(hook) is getattr(som, hook)
        assert registry.OPTIM_WRAPPER_CONSTRUCTORS.get("SSNOptimWrapperConstructor") is som.SSNOptimWrapperConstructor


def test_requires_grad_false_freezes_every_parameter():
    _, layer = build_norm_layer(dict(type="SSN", requires_grad=False), 8)
    assert not any(p.requires_grad for p in layer.parameters())


# ---------------------------------------------------------------------------------------------- optimizer
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, bias=True)
        self.sn = S.SparseSwitchNorm2d(8)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 2)


def _groups(paramwise_cfg):
    model = Net()
    cfg = dict(type="OptimWrapper", optimizer=dict(type="SGD", lr=0.1, momentum=0.9, weight_decay=1e-4),
               constructor="SSNOptimWrapperConstructor")
    if paramwise_cfg is not None:
        cfg["paramwise_cfg"] = paramwise_cfg
    optimizer = build_optim_wrapper(model, cfg).optimizer
    by_param = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    return {name: (by_param[id(p)]["lr"], by_param[id(p)]["weight_decay"]) for name, p in model.named_parameters()}


def test_optimizer_groups_follow_the_recipe_and_match_batchnorm():
    groups = _groups(dict(norm_decay_mult=0.0, bias_lr_mult=2.0))
    assert groups["sn.mean_weight"] == pytest.approx((0.01, 0.0))
    assert groups["sn.var_weight"] == pytest.approx((0.01, 0.0))
    # SN's gamma/beta get exactly what mmengine itself gives BatchNorm's
    assert groups["sn.weight"] == groups["bn.weight"] == pytest.approx((0.1, 0.0))
    assert groups["sn.bias"] == groups["bn.bias"] == pytest.approx((0.1, 0.0))
    assert groups["conv.weight"] == pytest.approx((0.1, 1e-4)) and groups["conv.bias"] == pytest.approx((0.2, 1e-4))


def test_optimizer_without_paramwise_cfg_still_slows_the_ratios():
    groups = _groups(None)
    assert groups["sn.mean_weight"] == pytest.approx((0.01, 0.0))
    assert groups["sn.weight"] == groups["conv.weight"] == pytest.approx((0.1, 1e-4))


def test_optimizer_clips_the_ratio_gradients_before_each_step():
    model = Net()
    wrapper = build_optim_wrapper(model, dict(optimizer=dict(type="SGD", lr=0.1),
                                              constructor="SSNOptimWrapperConstructor"))
    for p in model.parameters():
        p.grad = torch.full_like(p, 10.0)
    wrapper.step()
    ratio_norm = torch.cat([model.sn.mean_weight.grad, model.sn.var_weight.grad]).norm()
    assert ratio_norm == pytest.approx(1.0, rel=1e-5)
    assert torch.all(model.conv.weight.grad == 10.0)  # only the ratios are clipped


def test_optimizer_custom_keys_win():
    groups = _groups(dict(custom_keys={"sn.mean_weight": dict(lr_mult=1.0, decay_mult=1.0)}, ratio_lr_mult=0.5))
    assert groups["sn.mean_weight"] == pytest.approx((0.1, 1e-4))
    assert groups["sn.var_weight"] == pytest.approx((0.05, 0.0))


# ---------------------------------------------------------------------------------------------- runner
class Frozen(nn.Module):
    """A sub-network with ``norm_eval=True``, as OpenMMLab backbones have."""

    def __init__(self):
        super().__init__()
        self.norm_eval = True
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.sn = S.SwitchNorm2d(8)

    def forward(self, x):
        return self.sn(self.conv(x))


class Toy(BaseModel):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.ssn = S.SparseSwitchNorm2d(8)
        self.frozen = Frozen()
        self.sn = S.SwitchNorm2d(8)
        self.head = nn.Linear(8, 2)

    def forward(self, inputs, labels, mode="tensor"):
        x = self.sn(torch.relu(self.frozen(torch.relu(self.ssn(self.conv(inputs))))))
        logits = self.head(x.mean((2, 3)))
        if mode == "loss":
            return {"loss": nn.functional.cross_entropy(logits, labels)}
        return [logits.argmax(1)]


def _dataset(n=16):
    g = torch.Generator().manual_seed(1)
    return [{"inputs": torch.randn(3, 8, 8, generator=g) * (1 + i % 3), "labels": i % 2} for i in range(n)]


def _runner(work_dir, max_iters=6, resume=False, hooks=None, load_from=None):
    from mmengine.evaluator import BaseMetric

    class Correct(BaseMetric):
        def process(self, data_batch, data_samples):
            self.results.append(float((data_samples[0] == data_batch["labels"]).float().mean()))

        def compute_metrics(self, results):
            return {"acc": sum(results) / len(results)}

    loader = dict(dataset=_dataset(), sampler=dict(type="DefaultSampler", shuffle=False), batch_size=4,
                  collate_fn=dict(type="default_collate"), num_workers=0)
    torch.manual_seed(0)
    return Runner(
        model=Toy(), work_dir=str(work_dir), train_dataloader=loader, val_dataloader=loader,
        val_evaluator=[Correct()],
        train_cfg=dict(by_epoch=False, max_iters=max_iters, val_interval=max_iters),
        val_cfg=dict(),
        optim_wrapper=dict(optimizer=dict(type="SGD", lr=0.1, momentum=0.9),
                           constructor="SSNOptimWrapperConstructor"),
        default_hooks=dict(checkpoint=dict(type="CheckpointHook", interval=3, by_epoch=False),
                           logger=dict(type="LoggerHook", interval=1)),
        custom_hooks=hooks if hooks is not None else [
            dict(type="SparsestMaxRadiusHook"), dict(type="BatchAverageStatisticsHook", num_iters=2),
            dict(type="SwitchNormEvalHook"), dict(type="SwitchNormScalarsHook", interval=2)],
        visualizer=dict(type="Visualizer", vis_backends=[dict(type="LocalVisBackend")]),
        resume=resume, load_from=load_from, randomness=dict(seed=0), experiment_name=f"toy_{work_dir.name}_{resume}")


class RadiusLog:
    """Records the SSN radius seen by every training step."""

    def __init__(self):
        self.radii = []

    def __call__(self, module, args):
        self.radii.append(float(module.radius))


def test_hooks_in_a_runner_and_resume(tmp_path):
    full = _runner(tmp_path / "full")
    log = RadiusLog()
    full.model.ssn.register_forward_pre_hook(log)
    frozen_before = full.model.frozen.sn.running_mean.clone()
    full.train()
    # radius t / T before step t; the batch-average pass before validation runs 2 more forwards at 1.0
    assert log.radii[:6] == pytest.approx([t / 6 for t in range(6)])
    assert full.model.ssn.radius.item() == pytest.approx(5 / 6)
    # norm_eval: the frozen SN layer kept its statistics and stayed in eval mode; the other one trained
    assert torch.equal(full.model.frozen.sn.running_mean, frozen_before) and not full.model.frozen.sn.training
    assert not torch.allclose(full.model.sn.running_mean, torch.zeros(8))

    # resume from iteration 3 in a fresh runner: the schedule continues and the end state is the same
    resumed_dir = tmp_path / "resumed"
    resumed_dir.mkdir(exist_ok=True)
    (resumed_dir / "last_checkpoint").write_text(str(tmp_path / "full" / "iter_3.pth"))
    resumed = _runner(resumed_dir, resume=True)
    log2 = RadiusLog()
    resumed.model.ssn.register_forward_pre_hook(log2)
    with som.trusted_checkpoints():
        resumed.train()
    assert resumed.iter == 6
    assert log2.radii[:3] == pytest.approx([3 / 6, 4 / 6, 5 / 6])
    full_state, resumed_state = full.model.state_dict(), resumed.model.state_dict()
    for key, value in full_state.items():
        torch.testing.assert_close(resumed_state[key], value, msg=key)


class _AttributeOf:
    """Pickles as ``getattr(owner, name)``, as mmengine's HistoryBuffer pickles its statistics methods."""

    def __init__(self, owner, name):
        self.owner, self.name = owner, name

    def __reduce__(self):
        return getattr, (self.owner, self.name)


def test_mmengine_checkpoints_load_with_weights_only_and_nothing_beyond_them(tmp_path):
    """The plugin allow-lists mmengine's checkpoint objects for torch's default ``weights_only=True`` loading:
    resuming and testing work without full unpickling, and ``getattr`` reaches HistoryBuffer's statistics only."""
    from mmengine.logging.history_buffer import HistoryBuffer
    from mmengine.runner import load_checkpoint

    runner = _runner(tmp_path / "a", max_iters=3, hooks=[])
    runner.train()
    checkpoint = torch.load(tmp_path / "a" / "iter_3.pth")  # torch's default: weights_only=True
    assert isinstance(checkpoint["message_hub"]["log_scalars"]["train/loss"], HistoryBuffer)
    load_checkpoint(Toy(), str(tmp_path / "a" / "iter_3.pth"))  # mmengine's own loader, no trusted_checkpoints
    import numpy as np
    for owner, name in ((HistoryBuffer, "__init__"), (np.ndarray, "tofile")):  # both owners are allow-listed
        torch.save({"x": _AttributeOf(owner, name)}, tmp_path / "crafted.pth")
        with pytest.raises(pickle.UnpicklingError, match="statistics methods"):
            torch.load(tmp_path / "crafted.pth")
    torch.save({"x": _AttributeOf(HistoryBuffer, "mean")}, tmp_path / "allowed.pth")
    assert torch.load(tmp_path / "allowed.pth")["x"] is HistoryBuffer.mean


class _RunsCommand:
    """Pickles as a call to ``os.system``: what a malicious checkpoint holds."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os
        return os.system, (f"touch {self.marker}",)


class Marker:
    """A harmless object beyond mmengine's own, which only full unpickling reads."""


def test_local_checkpoints_are_read_weights_only_unless_that_very_file_is_trusted(tmp_path):
    from mmseg.models.backbones import ResNet
    reference = ResNet(depth=18).state_dict()
    evil, harmless = tmp_path / "downloaded_backbone.pth", tmp_path / "own_backbone.pth"
    marker = tmp_path / "PWNED"
    torch.save({"state_dict": reference, "x": _RunsCommand(marker)}, evil)
    torch.save({"state_dict": reference, "x": Marker()}, harmless)

    def backbone(path):  # the most common OpenMMLab setup: a local pretrained backbone
        with DefaultScope.overwrite_default_scope("mmseg"):
            return ResNet(depth=18, init_cfg=dict(type="Pretrained", checkpoint=str(path)))

    # what tools/mm_train.py (and mm_test.py, deploy.py) run the Runner in
    with som.trusted_checkpoints([harmless]):
        with pytest.raises(pickle.UnpicklingError, match=r"downloaded_backbone.pth: refused by weights-only loading"
                                                         r".*posix.system.*--trust-checkpoint"):
            backbone(evil).init_weights()
        assert not marker.exists()
        model = backbone(harmless)
        model.init_weights()  # trusted by name: full unpickling for that file alone
    assert torch.equal(model.conv1.weight, reference["conv1.weight"])
    with som.trusted_checkpoints():
        with pytest.raises(pickle.UnpicklingError, match="own_backbone.pth: refused"):
            backbone(harmless).init_weights()
    assert not marker.exists()


def test_batch_average_statistics_before_validation(tmp_path):
    # the default: one pass over the training set (16 samples, 4 batches)
    runner = _runner(tmp_path / "v", max_iters=3, hooks=[dict(type="BatchAverageStatisticsHook"),
                                                          dict(type="SwitchNormEvalHook")])
    trained = {}

    class Capture(Hook):
        def after_train_iter(self, r, batch_idx, data_batch=None, outputs=None):
            trained["model"] = copy.deepcopy(r.model)

    runner.register_hook(Capture(), priority="LOWEST")
    runner.train()
    expected = trained["model"]
    batches = [runner.train_dataloader.collate_fn(_dataset()[i * 4:(i + 1) * 4]) for i in range(4)]
    S.recompute_batch_statistics(expected, batches, frozen=[expected.frozen.sn],
                                 forward=lambda m, b: m(**m.data_preprocessor(b, True), mode="loss"))
    for name in ("ssn", "sn", "frozen.sn"):
        got, want = runner.model.get_submodule(name), expected.get_submodule(name)
        torch.testing.assert_close(got.running_mean, want.running_mean, msg=name)
        torch.testing.assert_close(got.running_var, want.running_var, msg=name)
    # the frozen layer kept its training-time statistics
    torch.testing.assert_close(runner.model.frozen.sn.running_var, trained["model"].frozen.sn.running_var)


def test_scalars_reach_the_visualizer_and_the_selection_is_saved(tmp_path):
    runner = _runner(tmp_path / "s", max_iters=4)
    runner.train()
    scalar_files = list((tmp_path / "s").glob("*/vis_data/scalars.json"))
    assert scalar_files
    records = [json.loads(line) for line in scalar_files[0].read_text().splitlines()]
    ratio_records = [r for r in records if "ssn/mean_ratio_BN" in r]
    assert [r["step"] for r in ratio_records] == [2, 4]
    for r in ratio_records:
        assert sum(r[f"ssn/var_ratio_{c}"] for c in ("IN", "LN", "BN")) == pytest.approx(1.0, abs=1e-5)
    assert any("ssn/radius" in r and "ssn/one_hot_vectors" in r for r in records)
    rows = json.loads((tmp_path / "s" / "ssn_selection.json").read_text())
    assert [r["name"] for r in rows] == ["ssn", "frozen.sn", "sn"]


@pytest.mark.parametrize("scope", ["mmdet", "mmseg"])
def test_zero_init_residual_reaches_switchable_norms(scope):
    """The README's claim: OpenMMLab's init rules set norm3's weight by name, so they work on SN/SSN too."""
    registry = _scope_registries(scope)
    with DefaultScope.overwrite_default_scope(scope):
        model = registry.MODELS.build(dict(type="ResNet", depth=50, norm_cfg=dict(type="SSN"), zero_init_residual=True))
    model.init_weights()
    block = model.layer1[0]
    assert isinstance(block.norm3, S.SparseSwitchNorm2d)
    assert torch.all(block.norm3.weight == 0) and torch.all(block.norm1.weight == 1)


@pytest.mark.parametrize("reopen", [True, False])
def test_reopen_selection_in_a_runner(tmp_path, reopen):
    sparse = Toy()
    S.set_radius(sparse, 1.0)  # a sparse model: every selection fixed
    selection = sparse.ssn.selection
    weights = tmp_path / "sparse.pth"
    torch.save({"state_dict": sparse.state_dict()}, weights)
    runner = _runner(tmp_path / "run", max_iters=3, load_from=str(weights),
                     hooks=[dict(type="SparsestMaxRadiusHook", end_iter=100, reopen_selection=reopen)])
    with som.trusted_checkpoints():
        runner.train()
    layer = runner.model.ssn
    if reopen:
        assert layer.selection == (None, None)  # open, and not fixed again at once
        assert layer.mean_weight.detach().abs().max() > 0  # trained from the re-opened (uniform) logits
    else:
        assert layer.selection == selection


def test_reopen_selection_keeps_frozen_layers_and_needs_ssn_layers(tmp_path):
    model = Toy()
    S.set_radius(model, 1.0)
    model.ssn.requires_grad_(False)
    assert S.reopen_selections(model) == 0 and None not in model.ssn.selection
    runner = _runner(tmp_path / "none", max_iters=1, hooks=[dict(type="SparsestMaxRadiusHook", reopen_selection=True)])
    runner.model.ssn = nn.Identity()
    with pytest.raises(ValueError, match="no SSN layer"):
        runner.train()


def test_batch_average_hook_refuses_an_empty_loader_instead_of_hanging():
    from ssn_plugins.openmmlab.hooks import _forever

    batches = _forever([])
    with pytest.raises(ValueError, match="yielded no batch"):
        next(batches)
    assert [next(b) for b in [_forever([1, 2])] for _ in range(3)] == [1, 2, 1]


def test_optimizer_constructor_rejects_unknown_paramwise_keys():
    with pytest.raises(KeyError, match="ratio_lr_mul"):
        _groups({"ratio_lr_mul": 0.5})


def test_hook_settings_are_checked_when_the_hooks_are_built():
    with pytest.raises(ValueError, match="start_iter < end_iter"):
        som.SparsestMaxRadiusHook(start_iter=10, end_iter=5)
    with pytest.raises(ValueError, match="interval must be >= 1"):
        som.SwitchNormScalarsHook(interval=0)
    with pytest.raises(ValueError, match="num_iters must be >= 1"):
        som.BatchAverageStatisticsHook(num_iters=0)
    with pytest.raises(ValueError, match="reopen_prior"):
        som.SparsestMaxRadiusHook(reopen_selection=True, reopen_prior=1.0)
