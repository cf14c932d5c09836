"""Every shipped OpenMMLab config loads, inherits what it should and builds its model on CPU (offline)."""
import re
from pathlib import Path

import pytest
from mmengine.config import Config
from mmengine.registry import DefaultScope
from torch import nn

import ssn_plugins as S

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SHIPPED = sorted(p for sub in ("mmseg", "mmdet") for p in (CONFIGS / sub).rglob("*.py") if "_base_" not in p.parts)
NORM_CLASS = {"syncbn": nn.SyncBatchNorm, "gn": nn.GroupNorm, "sn": S.SwitchNorm2d, "ssn": S.SparseSwitchNorm2d,
              "syncssn": S.SyncSparseSwitchNorm2d}
PLUGIN_HOOKS = {"SparsestMaxRadiusHook", "BatchAverageStatisticsHook", "SwitchNormEvalHook", "SwitchNormScalarsHook"}


def norm_of(path: Path) -> str:
    return re.search(r"_(syncbn|gn|sn|ssn|syncssn)(-all)?_", path.name).group(1)


def build_offline(cfg: Config):
    """The config's model without downloading or reading pretrained weights."""
    scope = cfg.default_scope
    with DefaultScope.overwrite_default_scope(scope):
        if scope == "mmseg":
            import mmseg.models  # noqa: F401
            from mmseg.registry import MODELS
            cfg.model.pretrained = None
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
    expected = NORM_CLASS[norm_of(path)]
    model = build_offline(cfg)
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
        # converted by tools/convert_checkpoint.py from the published model of the same normalizer
        assert re.fullmatch(rf"converted/{'ssn' if 'ssn' in norm else 'sn'}_r50_8x\d+_mm\.pth", checkpoint)
    else:
        assert checkpoint.startswith(("torchvision://", "open-mmlab://"))
