"""One training step per norm type through real mmseg / mmdet / mmaction2 models built from configs,
on real annotated images (the real mini set's sources)."""
from pathlib import Path

import pytest

pytest.importorskip("mmengine")  # needs the full stack; a torch-only install runs the core tests
pytest.importorskip("numpy")
pytest.importorskip("PIL")

import numpy as np

import torch
from mmengine.config import Config
from mmengine.model import revert_sync_batchnorm
from mmengine.optim import build_optim_wrapper
from mmengine.registry import DefaultScope
from mmengine.structures import InstanceData, PixelData
from PIL import Image

import ssn_plugins as S
import ssn_plugins.openmmlab  # noqa: F401
from ssn_plugins.openmmlab.channel_equilibrium import with_channel_equilibrium
from ssn_plugins.datasets.real_mini import label_map, load_annotated_images

pytestmark = pytest.mark.slow  # pytest -m "not slow" leaves it out; CI runs it

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SEG_NORMS = ["syncbn", "gn", "sn", "ssn", "syncssn"]


@pytest.fixture(scope="module")
def samples():
    return {s.name: s for s in load_annotated_images()}


def resized(sample, size):
    """``(image CHW uint8 tensor, label map, masks)`` of ``sample`` resized to ``size`` = (W, H)."""
    image = np.asarray(Image.fromarray(sample.image).resize(size, Image.BILINEAR))
    labels = np.asarray(Image.fromarray(label_map(sample)).resize(size, Image.NEAREST))
    masks = np.stack([np.asarray(Image.fromarray(m.astype(np.uint8)).resize(size, Image.NEAREST))
                      for m in sample.masks])
    return torch.from_numpy(image.copy()).permute(2, 0, 1).contiguous(), labels, masks.astype(bool)


def box(mask):
    ys, xs = np.where(mask)
    return [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def train_once(model, optim_cfg, data):
    """One ``train_step`` as mmengine's loop runs it (single process: SyncBN reverted as the Runner does)."""
    model = revert_sync_batchnorm(model)
    model.train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    log_vars = model.train_step(data, build_optim_wrapper(model, optim_cfg))
    assert torch.isfinite(log_vars["loss"]), log_vars
    changed = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert changed, "no parameter moved"
    ratio_names = [n for n in before if n.endswith(("mean_weight", "var_weight"))]
    if ratio_names:
        assert set(ratio_names) & changed, "the SN/SSN ratios got no update"
    return model


@pytest.mark.parametrize("model_name,norm", [(m, n) for m in ("deeplabv3", "pspnet") for n in SEG_NORMS]
                         + [("deeplabv3", "ce")])
def test_segmentor_train_step(model_name, norm, samples):
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample

    config_name = f"{model_name}_r50-d8_{norm}_8xb2-80k_cityscapes-512x1024.py"
    cfg = Config.fromfile(str(CONFIGS / "mmseg" / model_name / config_name))
    cfg.model.pretrained = None
    cfg.model.data_preprocessor.size = (64, 96)
    inputs, data_samples = [], []
    for name in ("voc", "arc2017"):
        image, labels, _ = resized(samples[name], (96, 64))
        sample = SegDataSample()
        sample.gt_sem_seg = PixelData(data=torch.from_numpy(labels.astype(np.int64))[None])
        sample.set_metainfo({"img_shape": (64, 96), "ori_shape": (64, 96), "pad_shape": (64, 96)})
        inputs.append(image)
        data_samples.append(sample)
    with DefaultScope.overwrite_default_scope("mmseg"):
        model = MODELS.build(cfg.model)
        model = train_once(model, cfg.optim_wrapper, {"inputs": inputs, "data_samples": data_samples})
    if norm in ("sn", "ssn", "syncssn"):
        assert sum(isinstance(m, S.SwitchNorm) for m in model.modules()) > 50
    if norm == "ce":
        assert_channel_equilibrium_trained(model.backbone, frozen_stem=False)


def assert_channel_equilibrium_trained(backbone, frozen_stem):
    """CE where the CE paper puts it, in the published model's names, and learning (unless frozen)."""
    ce = {n: m for n, m in backbone.named_modules() if isinstance(m, S.ChannelEquilibrium)}
    assert len(ce) == 1 + 3 + 4 + 6 and "ce1" in ce and "layer3.5.ce" in ce
    assert backbone.ce1.group_size == 64 and backbone.layer2[0].ce.group_size == 16
    assert float(backbone.layer2[0].ce.mix_logit) != 0.0  # starts at 0: the step moved it
    assert backbone.ce1.mix_logit.requires_grad is not frozen_stem


@pytest.mark.parametrize("norm", ["sn", "ssn", "ce"])
def test_mask_rcnn_train_step(norm, samples):
    from mmdet.registry import MODELS
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks

    name = "mask-rcnn_r50_fpn_ce_1x_coco.py" if norm == "ce" else f"mask-rcnn_r50_fpn_{norm}-all_1x_coco.py"
    cfg = Config.fromfile(str(CONFIGS / "mmdet" / "mask_rcnn" / name))
    cfg.model.backbone.init_cfg = None
    inputs, data_samples = [], []
    for name in ("voc", "arc2017"):
        image, _, masks = resized(samples[name], (320, 256))
        masks = masks[masks.any(axis=(1, 2))]  # instances too small to survive the resize are dropped
        boxes = torch.tensor([box(m) for m in masks], dtype=torch.float32)
        sample = DetDataSample()
        sample.gt_instances = InstanceData(bboxes=boxes, labels=torch.zeros(len(boxes), dtype=torch.long),
                                           masks=BitmapMasks(masks.astype(np.uint8), 256, 320))
        sample.set_metainfo({"img_shape": (256, 320), "ori_shape": (256, 320), "pad_shape": (256, 320),
                             "scale_factor": (1.0, 1.0), "batch_input_shape": (256, 320)})
        inputs.append(image)
        data_samples.append(sample)
    with DefaultScope.overwrite_default_scope("mmdet"):
        model = MODELS.build(cfg.model)
        model = train_once(model, cfg.optim_wrapper, {"inputs": inputs, "data_samples": data_samples})
    if norm == "ce":  # mmdet's frozen_stages=1 and norm_eval=True: the stem's CE is frozen with its norm
        assert_channel_equilibrium_trained(model.backbone, frozen_stem=True)
        assert not model.backbone.layer1[0].ce.training and not model.backbone.layer1[0].ce.mix_logit.requires_grad
        return
    kinds = {type(m) for part in (model.backbone, model.neck, model.roi_head) for m in part.modules()
             if isinstance(m, S.SwitchNorm)}
    assert kinds == {S.SwitchNorm2d if norm == "sn" else S.SparseSwitchNorm2d}


I3D_NORMS = {"BN3d": torch.nn.BatchNorm3d, "GN": torch.nn.GroupNorm, "SN3d": S.SwitchNorm3d,
             "SSN3d": S.SparseSwitchNorm3d, "SyncSSN3d": S.SyncSparseSwitchNorm3d}


@pytest.mark.parametrize("norm,ce", [(n, False) for n in sorted(I3D_NORMS)] + [("SSN3d", True)])
def test_i3d_train_step(norm, ce, samples, tmp_path):
    """mmaction2's I3D ResNet3d-50 normalizes (N, C, T, H, W) with the 5-D layers (and the BN3d / GN
    baselines); a clip pans over a real photo."""
    from mmaction.registry import MODELS
    from mmaction.structures import ActionDataSample

    (tmp_path / "i3d.py").write_text("_base_ = ['mmaction::_base_/models/i3d_r50.py']\n")
    cfg = Config.fromfile(str(tmp_path / "i3d.py"))
    norm_cfg = dict(type=norm, requires_grad=True, **({"num_groups": 32} if norm == "GN" else {}))
    cfg.model.backbone.update(pretrained=None, pretrained2d=False, norm_cfg=norm_cfg)
    if ce:
        cfg.model.backbone = with_channel_equilibrium(cfg.model.backbone)
    cfg.model.cls_head.num_classes = 3
    image = torch.from_numpy(np.array(Image.fromarray(samples["voc"].image).resize((160, 120)))).permute(2, 0, 1)
    inputs, data_samples = [], []
    for label, step in enumerate((4, 8)):
        clip = torch.stack([image[:, 20:84, t * step:t * step + 64] for t in range(8)], dim=1)  # (C, T, H, W)
        inputs.append(clip[None].contiguous())  # one clip per sample
        sample = ActionDataSample().set_gt_label(label)
        data_samples.append(sample)
    with DefaultScope.overwrite_default_scope("mmaction"):
        model = MODELS.build(cfg.model)
        assert type(model.backbone.conv1.norm) is I3D_NORMS[norm]
        if norm != "GN":
            assert model.backbone.conv1.norm_name == "bn"  # as mmaction2's 2-D -> 3-D inflation expects
        train_once(model, dict(optimizer=dict(type="SGD", lr=0.01, momentum=0.9),
                               constructor="SSNOptimWrapperConstructor"),
                   {"inputs": inputs, "data_samples": data_samples})
    if ce:
        assert_channel_equilibrium_trained(model.backbone, frozen_stem=False)
