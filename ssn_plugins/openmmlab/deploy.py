"""OpenMMLab models (mmseg, mmdet, mmaction2) for ``tools/deploy.py``: built from a config, wrapped for export.

The exported function is the model's ``mode="tensor"`` forward (mmseg: the
decode head's logits; mmaction2: the class scores; mmdet: the heads' raw
outputs) of the tensor its data preprocessor makes, as mmdeploy exports them.
"""
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn

from ..export import flatten_tensors
from .checkpoint import trusted_checkpoints
from .runner import load_config

__all__ = ["load_model", "TensorForward", "preprocessed_inputs"]


def load_model(config_file: str, checkpoint: str, cfg_options: Optional[dict] = None,
               trust_pickle: bool = False) -> Tuple[nn.Module, object]:
    """``(model in eval mode, cfg)``: the config's model, built in its scope, with the checkpoint's weights.

    SyncBN-style layers become their single-process versions, as mmengine's
    Runner does outside a distributed run.
    """
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import MODELS, DefaultScope
    from mmengine.runner import load_checkpoint

    cfg = load_config(config_file, cfg_options=cfg_options)
    with DefaultScope.overwrite_default_scope(cfg.get("default_scope")):
        model = MODELS.build(cfg.model)
    model = revert_sync_batchnorm(model)
    with trusted_checkpoints([checkpoint] if trust_pickle else []):
        load_checkpoint(model, checkpoint, map_location="cpu", strict=True)
    return model.eval(), cfg


def preprocessed_inputs(model: nn.Module, images: Union[np.ndarray, Sequence[np.ndarray]],
                        clip_length: Optional[int] = None) -> Tensor:
    """The model's data preprocessor applied to ``(H, W, 3)`` uint8 RGB images (one, or a list of one size).

    For a video model (``clip_length`` frames), the clip is the image panned
    sideways one pixel per frame (a real photo in motion), shaped
    ``(N, num_clips=1, C, T, H, W)`` as mmaction2's ``FormatShape('NCTHW')`` packs it.
    """
    samples = []
    for image in [images] if isinstance(images, np.ndarray) else images:
        chw = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
        if clip_length is not None:
            width = chw.shape[2] - clip_length
            chw = torch.stack([chw[:, :, t:t + width] for t in range(clip_length)], dim=1)[None]
        samples.append(chw)
    with torch.no_grad():
        return model.data_preprocessor({"inputs": samples, "data_samples": None}, False)["inputs"]


class TensorForward(nn.Module):
    """``model(inputs, mode="tensor")`` with its outputs flattened to a tuple of tensors."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, inputs: Tensor) -> Tuple[Tensor, ...]:
        return tuple(flatten_tensors(self.model(inputs, mode="tensor")))
