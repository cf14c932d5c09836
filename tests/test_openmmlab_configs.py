"""Every shipped OpenMMLab config loads, inherits what it should and builds its model on CPU (offline)."""
import re
from pathlib import Path

import pytest

pytest.importorskip("mmengine")  # needs the full stack; a torch-only install runs the core tests

from mmengine.config import Config
from mmengine.registry import DefaultScope
from torch import nn

import ssn_plugins as S
from ssn_plugins import model_zoo

pytestmark = pytest.mark.slow  # pytest -m "not slow" leaves it out; CI runs it

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SHIPPED = sorted(p for sub in ("mmseg", "mmdet") for p in (CONFIGS / sub).rglob("*.py")
                 if "_base_" not in p.parts and "released" not in p.parts)  # released: test_released_segmenter.py
NORM_CLASS = {"syncbn": nn.SyncBatchNorm, "gn": nn.GroupNorm, "sn": S.SwitchNorm2d, "ssn": S.SparseSwitchNorm2d,
              "syncssn": S.SyncSparseSwitchNorm2d}
PLUGIN_HOOKS = {"SparsestMaxRadiusHook", "BatchAverageStatisticsHook", "SwitchNormEvalHook", "SwitchNormScalarsHook"}


def norm_of(path: Path) -> str:
    return re.search(r"_(syncbn|gn|sn|ssn|syncssn|ce)(-all)?_", path.name).group(1)


def build_offline(cfg: Config):
    """The config's model without downloading or reading pretrained weights."""
    scope = cfg.default_scope
    with DefaultScope.overwrite_default_scope(scope):
        if scope == "mmseg":
            import mmseg.models  # noqa: F401
            from mmseg.registry import MODELS
            cfg.model.pretrained = None
        elif scope == "mmaction":
            import mmaction.models  # noqa: F401
            from mmaction.registry import MODELS
            cfg.model.backbone.pretrained = None
        else:
            import mmdet.models  # noqa: F401
            from mmdet.registry import MODELS
            cfg.model.backbone.init_cfg = None
        return MODELS.build(cfg.model)


def test_every_family_is_shipped():
    names = {p.name for p in SHIPPED}
    for model in ("deeplabv3", "pspnet"):
        for schedule in ("80k_cityscapes-512x1024", "160k_ade20k-512x512"):
            for norm in NORM_CLASS:
                assert f"{model}_r50-d8_{norm}_8xb2-{schedule}.py" in names
    for schedule in ("1x", "2x"):
        for norm in ("sn", "ssn"):
            assert f"mask-rcnn_r50_fpn_{norm}-all_{schedule}_coco.py" in names


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_config_builds(path):
    cfg = Config.fromfile(str(path))
    assert "ssn_plugins.openmmlab" in cfg.custom_imports.imports
    assert {h.type for h in cfg.custom_hooks} == PLUGIN_HOOKS
    assert cfg.optim_wrapper.constructor == "SSNOptimWrapperConstructor"
    assert cfg.train_dataloader.batch_size == 2  # per GPU, the papers' setting
    model = build_offline(cfg)
    if norm_of(path) == "ce":  # the upstream BN / SyncBN model with CE in the backbone
        ce = [n for n, m in model.backbone.named_modules() if isinstance(m, S.ChannelEquilibrium)]
        assert len(ce) == 1 + 3 + 4 + 6 and "ce1" in ce and not any(n.startswith("layer4") for n in ce)
        assert isinstance(model.backbone.conv1, nn.Conv2d) and model.backbone.conv1.kernel_size == (7, 7)
        return
    expected = NORM_CLASS[norm_of(path)]
    heads = [model.backbone, model.neck, model.roi_head] if cfg.default_scope == "mmdet" else \
        [model.backbone, model.decode_head, model.auxiliary_head]
    for part in heads:
        norms = [m for m in part.modules()
                 if isinstance(m, (nn.modules.batchnorm._NormBase, nn.GroupNorm, S.SwitchNorm))]
        # SyncBN builds mmengine's thin SyncBatchNorm subclass; the others build the class itself
        assert norms and all(type(m) is expected or (expected is nn.SyncBatchNorm and isinstance(m, expected))
                             for m in norms), type(part).__name__
    # the ResNet v1 stem of the published SN/SSN models, not mmseg's deep V1c stem
    assert isinstance(model.backbone.conv1, nn.Conv2d) and model.backbone.conv1.kernel_size == (7, 7)
    if cfg.default_scope == "mmdet":
        assert model.backbone.norm_eval is False  # SN/SSN finetune with batch statistics
        assert type(model.roi_head.bbox_head).__name__ == "Shared4Conv1FCBBoxHead"


@pytest.mark.parametrize("path", [p for p in SHIPPED if "real_mini" not in p.parts], ids=lambda p: p.name)
def test_config_names_its_pretrained_backbone(path):
    cfg = Config.fromfile(str(path))
    checkpoint = cfg.model.pretrained if cfg.default_scope == "mmseg" else cfg.model.backbone.init_cfg.checkpoint
    norm = norm_of(path)
    if norm in ("sn", "ssn", "syncssn"):
        # the published model of the same normalizer, by its model-zoo name
        assert re.fullmatch(rf"ssn://resnet50_{'ssn' if 'ssn' in norm else 'sn'}_8x\d+", checkpoint)
        assert checkpoint[len("ssn://"):] in model_zoo.catalogue()
    elif norm == "ce":
        assert checkpoint == "ssn://resnet50_ce"  # the published CE-ResNet-50
    else:
        assert checkpoint.startswith(("torchvision://", "open-mmlab://"))


VIDEO = sorted(p for p in (CONFIGS / "mmaction").rglob("*.py") if "_base_" not in p.parts)
KINETICS = [p for p in VIDEO if "kinetics400" in p.name]
VIDEO_NORM_CLASS = {"bn3d": nn.BatchNorm3d, "gn": nn.GroupNorm, "sn3d": S.SwitchNorm3d,
                    "ssn3d": S.SparseSwitchNorm3d, "syncssn3d": S.SyncSparseSwitchNorm3d}


def video_norm_of(path: Path) -> str:
    return re.search(r"_(bn3d|gn|sn3d|ssn3d|syncssn3d)_", path.name).group(1)


def test_every_kinetics_setting_is_shipped():
    names = {p.name for p in KINETICS}
    assert names == {f"i3d_r50_{norm}_8xb{batch}-32x2x1-100e_kinetics400-rgb.py"
                     for norm in VIDEO_NORM_CLASS for batch in (8, 4)}


@pytest.mark.parametrize("path", VIDEO, ids=lambda p: p.name)
def test_video_config_builds(path):
    cfg = Config.fromfile(str(path))
    assert set(cfg.custom_imports.imports) == {"ssn_plugins.openmmlab", "ssn_plugins.openmmlab.video_datasets"}
    assert {h.type for h in cfg.custom_hooks} == PLUGIN_HOOKS
    assert cfg.optim_wrapper.constructor == "SSNOptimWrapperConstructor"
    for loader in ("train_dataloader", "val_dataloader", "test_dataloader"):
        assert cfg[loader].dataset.type == "RobustVideoDataset"
    # the 10-clip test: ten clips spread over the video, softmax averaged
    sampler = next(t for t in cfg.test_dataloader.dataset.pipeline if t.type == "SampleFrames")
    assert sampler.num_clips == 10 and sampler.test_mode
    assert not any(t.type == "ThreeCrop" for t in cfg.test_dataloader.dataset.pipeline)
    assert cfg.model.cls_head.average_clips == "prob"
    model = build_offline(cfg)
    norms = [m for m in model.backbone.modules()
             if isinstance(m, (nn.modules.batchnorm._NormBase, nn.GroupNorm, S.SwitchNorm))]
    assert len(norms) == 53 and {type(m) for m in norms} == {VIDEO_NORM_CLASS[video_norm_of(path)]}
    assert model.backbone.conv1.conv.kernel_size == (5, 7, 7)  # ImageNet-inflated I3D stem


@pytest.mark.parametrize("path", KINETICS, ids=lambda p: p.name)
def test_kinetics_config_follows_the_paper(path):
    """32-frame clips every 2nd frame, 8 or 4 clips per GPU (learning rate scaled), inflated ImageNet weights."""
    cfg = Config.fromfile(str(path))
    batch = int(re.search(r"_8xb(\d)-", path.name).group(1))
    assert cfg.train_dataloader.batch_size == batch
    assert cfg.optim_wrapper.optimizer.lr == pytest.approx(0.01 * batch / 8)
    assert cfg.auto_scale_lr.base_batch_size == 8 * batch
    for loader in ("train_dataloader", "test_dataloader"):
        sampler = next(t for t in cfg[loader].dataset.pipeline if t.type == "SampleFrames")
        assert (sampler.clip_len, sampler.frame_interval) == (32, 2)
    assert cfg.train_cfg.max_epochs == 100
    backbone, norm = cfg.model.backbone, video_norm_of(path)
    if norm == "bn3d":
        assert backbone.pretrained2d and backbone.pretrained == "torchvision://resnet50"
    else:
        expected = {"gn": "resnet50_gn", "sn3d": "resnet50_sn_8x32", "ssn3d": f"resnet50_ssn_8x{batch}",
                    "syncssn3d": "resnet50_ssn_8x32"}[norm]
        assert not backbone.pretrained2d and backbone.pretrained == f"ssn://i3d/{expected}"
    if norm == "gn":  # Detectron's GN model takes BGR input without scaling; decord gives RGB frames
        preprocessor = cfg.model.data_preprocessor
        assert preprocessor.to_rgb and preprocessor.mean[0] == 103.530 and preprocessor.std == [1.0, 1.0, 1.0]


def test_sn_configs_start_from_the_pretraining_of_their_figure():
    """A config compared with a figure the paper measured from an SN(g,b) ImageNet model starts from that model."""
    from ssn_plugins.reproduction.figures import paper_figures

    checked = 0
    for figure in paper_figures():
        if figure.norm != "SN" or figure.pretrain is None or figure.metric != "mIoU":
            continue
        model, dataset = {"ade20k-deeplab": ("deeplabv3", "160k_ade20k-512x512"),
                          "cityscapes-deeplab": ("deeplabv3", "80k_cityscapes-512x1024")}[figure.table]
        cfg = Config.fromfile(str(CONFIGS / "mmseg" / model / f"{model}_r50-d8_sn_8xb2-{dataset}.py"))
        assert cfg.model.pretrained == "ssn://resnet50_sn_{}x{}".format(*figure.pretrain), figure.table
        checked += 1
    assert checked == 2
