"""``add_ssn_config(cfg)``: the ``cfg.MODEL.SSN`` and ``cfg.MODEL.RESNETS.CE`` options."""
from detectron2.config import CfgNode as CN

from ..batch_stats import BATCH_AVERAGE_BATCHES
from ..optim import RATIO_CLIP, RATIO_LR_FACTOR, RATIO_WEIGHT_DECAY
from .model_zoo import MODEL_ZOO_CONFIGS

#: how earlier versions of this package named a model-zoo base (see :func:`merge_config_file`)
LEGACY_BASE_PREFIX = "detectron2://"


def add_ssn_config(cfg) -> None:
    """Add ``cfg.MODEL.SSN`` (layer, radius schedule, optimizer and inference-statistics options) and
    ``cfg.MODEL.RESNETS.CE`` (Channel Equilibrium in the ResNet)."""
    cfg.MODEL.SSN = CN()
    # the layers
    cfg.MODEL.SSN.USING_BN = True            # candidates [IN, LN, BN]; False: [IN, LN] (one image per GPU)
    cfg.MODEL.SSN.GN_GROUPS = 0              # > 0 adds GroupNorm with that many groups as the last candidate
    # the authors' math (unbiased IN variance) in new layers; files converted from their releases carry it
    # per layer, so finetuning from them needs nothing here
    cfg.MODEL.SSN.OFFICIAL_COMPAT = False
    cfg.MODEL.SSN.MOMENTUM = 0.1             # PyTorch's convention, always (the authors' 0.997 is 0.003)
    cfg.MODEL.SSN.EPS = 1e-5
    # SparsestMax radius: linear from 0 at START_ITER to MAX_RADIUS at END_ITER (-1: SOLVER.MAX_ITER)
    cfg.MODEL.SSN.RADIUS_START_ITER = 0
    cfg.MODEL.SSN.RADIUS_END_ITER = -1
    cfg.MODEL.SSN.MAX_RADIUS = 1.0           # the paper's; as OpenMMLab's SparsestMaxRadiusHook(max_radius)
    # finetuning from a sparse model keeps its selections unless this re-opens them
    cfg.MODEL.SSN.REOPEN_SELECTION = False
    # optimizer: ratio logits at BASE_LR * RATIO_LR_FACTOR, with RATIO_WEIGHT_DECAY, clipped at RATIO_CLIP
    cfg.MODEL.SSN.RATIO_LR_FACTOR = RATIO_LR_FACTOR
    cfg.MODEL.SSN.RATIO_WEIGHT_DECAY = RATIO_WEIGHT_DECAY
    cfg.MODEL.SSN.RATIO_CLIP = RATIO_CLIP    # gradient norm of all ratio logits together; None (null) turns it off
    # inference statistics: "batch_average" (recomputed before each evaluation) or "moving_average"
    cfg.MODEL.SSN.INFERENCE_STATS = "batch_average"
    cfg.MODEL.SSN.BATCH_AVERAGE_ITERS = BATCH_AVERAGE_BATCHES
    # iterations between ratio scalars (mean ratio per candidate, one-hot vectors) in the event storage; 0: off
    cfg.MODEL.SSN.SCALARS_PERIOD = 20
    # the per-layer ratio chart (tools/analyze_selection.py's) as an event-storage image (TensorBoard) at each
    # evaluation: every TEST.EVAL_PERIOD iterations and at the end of training
    cfg.MODEL.SSN.SELECTION_CHART = True
    # Channel Equilibrium after the stem norm and the last norm of each block in res2-res4 (CE paper);
    # detectron2's build_model adds it once ssn_plugins.detectron2 is imported
    cfg.MODEL.RESNETS.CE = CN()
    cfg.MODEL.RESNETS.CE.ENABLED = False
    cfg.MODEL.RESNETS.CE.STEM_GROUP_SIZE = 64  # channels per decorrelation group, as in the published CE-ResNet-50
    cfg.MODEL.RESNETS.CE.GROUP_SIZE = 16       # in the blocks


def merge_config_file(cfg, path: str) -> None:
    """``cfg.merge_from_file(path)``, kept for scripts written against earlier versions of this package.

    The shipped configs inherit detectron2's model-zoo configs through
    :data:`.model_zoo.MODEL_ZOO_CONFIGS` bases, which detectron2's own
    ``merge_from_file`` reads. A base written the old way,
    ``_BASE_: "detectron2://<model-zoo config>"``, gets an error naming the new form
    (fvcore joins such a base to the including file's folder).
    """
    try:
        cfg.merge_from_file(path)
    except FileNotFoundError as e:
        missing = str(e.filename or "")
        if LEGACY_BASE_PREFIX.rstrip("/") in missing:
            zoo_name = missing.split(LEGACY_BASE_PREFIX.rstrip("/"), 1)[1].lstrip("/")
            raise FileNotFoundError(
                f"{path}: a _BASE_ of the form \"{LEGACY_BASE_PREFIX}{zoo_name}\" is not a file detectron2 can read "
                f"(it becomes {missing}); write _BASE_: \"{MODEL_ZOO_CONFIGS}{zoo_name}\"") from None
        raise
