"""detectron2 integration: norm names, configs, training steps, optimizer, freezing, hooks."""
import glob
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("detectron2")  # needs the full stack; a torch-only install runs the core tests

import torch
from torch import nn
import yaml

import ssn_plugins as S
import ssn_plugins.detectron2 as sd
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Boxes, Instances

from helpers import gloo_worker, photo_batch

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p for p in glob.glob(str(REPO / "configs" / "detectron2" / "*.yaml")) if "Base-" not in p)


@pytest.fixture(autouse=True)
def event_storage():
    # detectron2's training forward writes to the current EventStorage, as inside a trainer
    from detectron2.utils.events import EventStorage
    with EventStorage(0) as storage:
        yield storage


def load_cfg(path, *opts):
    cfg = get_cfg()
    sd.add_ssn_config(cfg)
    sd.merge_config_file(cfg, path)
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", *opts])
    return cfg


CHECK_NAMES = """
import detectron2.layers as L
from ssn_plugins import SparseSwitchNorm2d, SwitchNorm2d, SyncSparseSwitchNorm2d
import detectron2.modeling.backbone.fpn as fpn, detectron2.modeling.backbone.resnet as resnet
import detectron2.modeling.roi_heads.box_head as box, detectron2.modeling.roi_heads.mask_head as mask
import detectron2.modeling.meta_arch.retinanet as retina, detectron2.modeling.meta_arch.semantic_seg as seg
for where in (L, fpn, resnet, box, mask, retina, seg):
    assert isinstance(where.get_norm("SSN", 8), SparseSwitchNorm2d), where
    assert isinstance(where.get_norm("SN", 8), SwitchNorm2d)
    assert isinstance(where.get_norm("SyncSSN", 8), SyncSparseSwitchNorm2d)
    assert type(where.get_norm("GN", 64)).__name__ == "GroupNorm" and where.get_norm("", 8) is None
from detectron2.modeling import META_ARCH_REGISTRY
assert META_ARCH_REGISTRY.get("GeneralizedRCNN").ssn_plugins  # every build_model(cfg) applies cfg.MODEL.SSN
print("ok")
"""


@pytest.mark.parametrize("order", ["plugin first", "detectron2 first"])
def test_norm_names_resolve_everywhere_whatever_the_import_order(order):
    plugin = "import ssn_plugins.detectron2\n"
    d2 = "import detectron2.modeling\n"
    code = (plugin + d2 if order == "plugin first" else d2 + plugin) + CHECK_NAMES
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: Path(p).stem)
def test_every_shipped_config_builds(path):
    cfg = load_cfg(path)
    model = build_model(cfg)
    norms = [m for m in model.modules() if isinstance(m, S.SwitchNorm)]
    name = Path(path).stem
    expected = 0
    if cfg.MODEL.RESNETS.NORM in sd.NORM_LAYERS:
        expected += 53                                   # ResNet-50: stem + 16 blocks x 3 + 4 shortcuts
    if cfg.MODEL.FPN.NORM in sd.NORM_LAYERS:
        expected += 8                                    # 4 lateral + 4 output convolutions
    if cfg.MODEL.ROI_BOX_HEAD.NORM in sd.NORM_LAYERS:
        expected += cfg.MODEL.ROI_BOX_HEAD.NUM_CONV
    if cfg.MODEL.MASK_ON and cfg.MODEL.ROI_MASK_HEAD.NORM in sd.NORM_LAYERS:
        expected += cfg.MODEL.ROI_MASK_HEAD.NUM_CONV
    assert len(norms) == expected, name
    if "syncssn" in name:
        assert all(isinstance(m, S.SyncSparseSwitchNorm2d) for m in norms)
    assert cfg.SOLVER.MAX_ITER == (180000 if "_2x_" in name else 90000)
    # cfg.dump() round-trips
    again = get_cfg()
    sd.add_ssn_config(again)
    again.merge_from_other_cfg(type(cfg).load_cfg(cfg.dump()))
    assert yaml.safe_load(again.dump()) == yaml.safe_load(cfg.dump())


def batched_inputs(with_instances=(True, True), size=(128, 160)):
    images = photo_batch(size=size, crops=len(with_instances), seed=1)
    batch = []
    for image, has in zip(images, with_instances):
        pixels = ((image * torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1))
                  + torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1))
        inst = Instances(size)
        if has:
            boxes = torch.tensor([[20.0, 16.0, 90.0, 100.0], [60.0, 30.0, 150.0, 120.0]])
            masks = torch.zeros(2, *size, dtype=torch.bool)
            for m, (x0, y0, x1, y1) in zip(masks, boxes.int().tolist()):
                m[y0:y1, x0:x1] = True
            inst.gt_boxes, inst.gt_classes, inst.gt_masks = Boxes(boxes), torch.tensor([0, 1]), BitMasks(masks)
        else:
            inst.gt_boxes, inst.gt_classes = Boxes(torch.zeros(0, 4)), torch.zeros(0, dtype=torch.long)
            inst.gt_masks = BitMasks(torch.zeros(0, *size, dtype=torch.bool))
        batch.append({"image": pixels, "instances": inst, "height": size[0], "width": size[1]})
    return batch


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["sn", "ssn", "syncssn", "gn", "frozenbn_ssnhead"])
def test_one_training_step_per_norm_variant(variant):
    torch.manual_seed(0)
    cfg = load_cfg(REPO / "configs" / "detectron2" / f"mask_rcnn_R_50_FPN_1x_{variant}.yaml",
                   "MODEL.WEIGHTS", "", "MODEL.ROI_HEADS.NUM_CLASSES", "2",
                   "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32",
                   "MODEL.RPN.POST_NMS_TOPK_TRAIN", "64")
    model = build_model(cfg)
    model.train()
    optimizer = sd.build_ssn_optimizer(cfg, model)
    # an image without any instance makes the mask head see an empty batch
    losses = model(batched_inputs(with_instances=(True, False)))
    total = sum(losses.values())
    assert torch.isfinite(total)
    optimizer.zero_grad()
    total.backward()
    optimizer.step()
    ratios = list(S.ratio_parameters(model))
    if ratios:
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in ratios)
    # batch size 1 per GPU trains too
    assert torch.isfinite(sum(model(batched_inputs(with_instances=(True,))).values()))


def test_optimizer_groups_follow_the_recipe():
    cfg = load_cfg(REPO / "configs" / "detectron2" / "mask_rcnn_R_50_FPN_1x_ssn.yaml", "SOLVER.WEIGHT_DECAY", "1e-4")
    model = build_model(cfg)
    optimizer = sd.build_ssn_optimizer(cfg, model)
    settings = {id(p): (g["lr"], g["weight_decay"]) for g in optimizer.param_groups for p in g["params"]}
    norm = model.backbone.bottom_up.res2[0].conv1.norm
    assert settings[id(norm.mean_weight)] == pytest.approx((0.002, 0.0))
    assert settings[id(norm.weight)] == pytest.approx((0.02, 0.0))          # WEIGHT_DECAY_NORM
    assert settings[id(model.backbone.bottom_up.res2[0].conv1.weight)] == pytest.approx((0.02, 1e-4))
    for p in S.ratio_parameters(model):
        p.grad = torch.full_like(p, 100.0)
    optimizer.step()
    assert torch.cat([p.grad for p in S.ratio_parameters(model)]).norm() == pytest.approx(1.0, rel=1e-4)
    # one "off" value, as everywhere: None (yaml null); 0 would zero the gradients and is refused
    unclipped = cfg.clone()
    unclipped.defrost()
    unclipped.merge_from_list(["MODEL.SSN.RATIO_CLIP", "None"])
    optimizer = sd.build_ssn_optimizer(unclipped, model)
    for p in S.ratio_parameters(model):
        p.grad = torch.full_like(p, 100.0)
    optimizer.step()
    assert all(torch.all(p.grad == 100.0) for p in S.ratio_parameters(model))
    unclipped.merge_from_list(["MODEL.SSN.RATIO_CLIP", "0"])
    with pytest.raises(ValueError, match="MODEL.SSN.RATIO_CLIP must be a finite number > 0, or None"):
        sd.validate_ssn_config(unclipped)


def test_freeze_at_freezes_switchable_norms():
    cfg = load_cfg(REPO / "configs" / "detectron2" / "mask_rcnn_R_50_FPN_1x_sn.yaml", "MODEL.BACKBONE.FREEZE_AT", "2",
                   "MODEL.WEIGHTS", "")
    model = build_model(cfg)  # detectron2's own build_model, as DefaultTrainer calls it
    frozen = [m for m in model.modules() if isinstance(m, S.SwitchNorm) and getattr(m, "frozen", False)]
    assert len(frozen) == 1 + 10  # stem + res2 (3 blocks x 3 + shortcut), without calling anything else
    model.train()
    stem, res3 = model.backbone.bottom_up.stem.conv1.norm, model.backbone.bottom_up.res3[0].conv1.norm
    assert not stem.training and res3.training and not stem.weight.requires_grad
    before = stem.running_mean.clone()
    model(batched_inputs())
    assert torch.equal(stem.running_mean, before)


def test_freeze_at_stages_with_ssn_keep_their_ratios_under_the_schedule():
    cfg = load_cfg(REPO / "configs" / "detectron2" / "mask_rcnn_R_50_FPN_1x_ssn.yaml", "MODEL.BACKBONE.FREEZE_AT", "2",
                   "MODEL.WEIGHTS", "")
    model = build_model(cfg)
    with pytest.warns(UserWarning, match="11 SSN layers have an open selection"):
        S.set_radius(model, 1.0)
    frozen = [m for m in S.sparse_layers(model) if m.frozen]
    assert len(frozen) == 11 and all(m.selection == (None, None) for m in frozen)  # never fixed on IN by a tie
    assert all(None not in m.selection for m in S.sparse_layers(model) if not m.frozen)


def test_radius_hook_follows_the_iteration_and_resumes():
    from detectron2.engine import SimpleTrainer

    cfg = load_cfg(REPO / "configs" / "detectron2" / "mask_rcnn_R_50_FPN_1x_ssn.yaml", "MODEL.WEIGHTS", "",
                   "MODEL.ROI_HEADS.NUM_CLASSES", "2", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "16",
                   "MODEL.RPN.POST_NMS_TOPK_TRAIN", "32", "SOLVER.MAX_ITER", "10", "MODEL.SSN.SCALARS_PERIOD", "1")
    model = build_model(cfg)
    data = batched_inputs(size=(96, 128))

    def loader():
        while True:
            yield data

    trainer = SimpleTrainer(model, loader(), sd.build_ssn_optimizer(cfg, model))
    trainer.register_hooks([h for h in sd.ssn_hooks(cfg, model, loader)
                            if not isinstance(h, sd.BatchAverageStatistics)])
    trainer.train(0, 2)
    layer = model.backbone.bottom_up.res2[0].conv1.norm
    assert float(layer.radius) == pytest.approx(0.1)  # set before iteration 1 of 10
    history = trainer.storage.history("ssn/radius").values()
    assert [v for v, _ in history] == pytest.approx([0.0, 0.1])
    assert "ssn/mean_ratio_BN" in trainer.storage.histories()
    state = model.state_dict()

    resumed = build_model(cfg)
    resumed.load_state_dict(state)
    assert float(resumed.backbone.bottom_up.res2[0].conv1.norm.radius) == pytest.approx(0.1)
    trainer = SimpleTrainer(resumed, loader(), sd.build_ssn_optimizer(cfg, resumed))
    trainer.register_hooks([sd.RadiusSchedule(resumed, 0, 10)])
    trainer.train(7, 9)
    assert float(resumed.backbone.bottom_up.res2[0].conv1.norm.radius) == pytest.approx(0.8)


def test_channel_equilibrium_config_switch():
    cfg = load_cfg(REPO / "configs" / "detectron2" / "mask_rcnn_R_50_FPN_1x_ssn.yaml", "MODEL.WEIGHTS", "",
                   "MODEL.RESNETS.CE.ENABLED", "True", "MODEL.RESNETS.CE.GROUP_SIZE", "8",
                   "MODEL.ROI_HEADS.NUM_CLASSES", "2", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "16",
                   "MODEL.RPN.POST_NMS_TOPK_TRAIN", "32")
    model = build_model(cfg)  # detectron2's own build_model applies MODEL.RESNETS.CE
    bottom_up = model.backbone.bottom_up
    ce = [n for n, m in bottom_up.named_modules() if isinstance(m, S.ChannelEquilibrium)]
    assert len(ce) == 14 and "stem.conv1.ce" in ce and "res2.0.conv3.ce" in ce
    assert not any(n.startswith("res5") for n in ce)
    assert bottom_up.stem.conv1.ce.group_size == 64 and bottom_up.res3[1].conv3.ce.group_size == 8
    model.train()
    losses = model(batched_inputs(size=(96, 128)))
    sum(losses.values()).backward()
    assert bottom_up.res3[0].conv3.ce.mix_logit.grad is not None
    import copy
    twin = copy.deepcopy(model)  # the hook reads the CE from the convolution it runs on
    assert twin.backbone.bottom_up.res2[0].conv3.ce is not bottom_up.res2[0].conv3.ce


def test_build_model_applies_the_options_of_the_config_being_built():
    from detectron2.engine import DefaultTrainer

    custom = load_cfg(REPO / "configs" / "detectron2" / "mask_rcnn_R_50_FPN_1x_ssn.yaml", "MODEL.WEIGHTS", "",
                      "MODEL.SSN.USING_BN", "False", "MODEL.SSN.OFFICIAL_COMPAT", "True", "MODEL.SSN.MOMENTUM", "0.05",
                      "MODEL.SSN.EPS", "1e-3")
    default = load_cfg(REPO / "configs" / "detectron2" / "mask_rcnn_R_50_FPN_1x_ssn.yaml", "MODEL.WEIGHTS", "")
    for build in (build_model, DefaultTrainer.build_model):
        first, second = build(custom), build(default)
        for model, candidates, compat, momentum, eps in ((first, ("IN", "LN"), True, 0.05, 1e-3),
                                                         (second, ("IN", "LN", "BN"), False, 0.1, 1e-5)):
            layers = [m for m in model.modules() if isinstance(m, S.SparseSwitchNorm)]
            assert len(layers) == 69  # backbone 53, FPN 8, box head 4, mask head 4
            assert {(m.candidates, m.official_compat, m.momentum, m.eps) for m in layers} == {
                (candidates, compat, momentum, eps)}
    # outside a build, detectron2's get_norm gives the layers' defaults: nothing leaked
    from detectron2.layers import get_norm
    assert get_norm("SSN", 8).candidates == ("IN", "LN", "BN")


def test_hook_settings_are_checked_before_training():
    path = REPO / "configs" / "detectron2" / "mask_rcnn_R_50_FPN_1x_ssn.yaml"
    model = torch.nn.Sequential(S.SparseSwitchNorm2d(4))
    hooks = sd.ssn_hooks(load_cfg(path, "MODEL.SSN.SCALARS_PERIOD", "0"), model, lambda: iter([]))
    assert not any(isinstance(h, sd.RatioScalars) for h in hooks)  # 0 turns the scalars off
    for key, value, message in [("MODEL.SSN.BATCH_AVERAGE_ITERS", "0", "BATCH_AVERAGE_ITERS must be >= 1"),
                                ("MODEL.SSN.SCALARS_PERIOD", "-1", "SCALARS_PERIOD must be >= 0"),
                                ("MODEL.SSN.INFERENCE_STATS", "batch_avg", "INFERENCE_STATS must be")]:
        with pytest.raises(ValueError, match=message):
            sd.ssn_hooks(load_cfg(path, key, value), model, lambda: iter([]))
    bare = get_cfg()
    with pytest.raises(ValueError, match="add_ssn_config"):
        sd.validate_ssn_config(bare)


def test_unknown_norm_name_says_what_exists():
    from detectron2.layers import get_norm

    with pytest.raises(ValueError, match=r"unknown norm 'ssn'.*did you mean 'SSN'"):
        get_norm("ssn", 8)
    with pytest.raises(ValueError, match=r"unknown norm 'SNN'.*'SSN'"):
        get_norm("SNN", 8)


def test_layers_fixed_on_in_handle_images_without_instances_and_without_detections():
    cfg = load_cfg(REPO / "configs" / "detectron2" / "mask_rcnn_R_50_FPN_1x_ssn.yaml", "MODEL.WEIGHTS", "",
                   "MODEL.ROI_HEADS.NUM_CLASSES", "2", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "16",
                   "MODEL.RPN.POST_NMS_TOPK_TRAIN", "32", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "1.01")
    model = build_model(cfg)
    for layer in S.sparse_layers(model):
        layer.fix("mean", "IN")
        layer.fix("var", "IN")
    model.train()
    losses = model(batched_inputs(with_instances=(False,), size=(96, 128)))  # the mask head sees no RoI
    assert torch.isfinite(sum(losses.values()))
    model.eval()
    with torch.no_grad():  # a threshold above every score: no detection reaches the mask head
        (result,) = model(batched_inputs(with_instances=(False,), size=(96, 128)))
    assert len(result["instances"]) == 0


def _pooled_detection_stats_worker(rank, world, init_file, out_dir):
    with gloo_worker(rank, world, init_file):
        model = _detection_stats_model()
        sd.recompute_detection_statistics(model, iter(_detection_stats_batches()[2 * rank:2 * rank + 2]), 2)
        torch.save({n: b.clone() for n, b in model.named_buffers() if "running" in n}, f"{out_dir}/stats{rank}.pt")


def _detection_stats_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), S.SwitchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 1),
                         S.SparseSwitchNorm2d(4)).double()


def _detection_stats_batches():
    torch.manual_seed(1)
    return [torch.randn(3, 3, 6, 6, dtype=torch.float64) * (1 + i) + i for i in range(4)]


def test_detectron2_batch_averages_pooled_across_two_processes_equal_one_process(tmp_path):
    """The detectron2 hooks' batch averages (BatchAverageStatistics, --eval-only) pool over processes, as
    OpenMMLab's hook does: two gloo processes with two batches each equal one process with all four."""
    import torch.multiprocessing as mp
    mp.spawn(_pooled_detection_stats_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    single = _detection_stats_model()
    sd.recompute_detection_statistics(single, iter(_detection_stats_batches()), 4)
    for rank in range(2):
        got = torch.load(tmp_path / f"stats{rank}.pt", weights_only=True)
        for name, value in single.named_buffers():
            if "running" in name:
                torch.testing.assert_close(got[name], value, msg=name)
