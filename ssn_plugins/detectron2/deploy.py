"""detectron2 models for ``tools/deploy.py``: built from a config and a checkpoint, wrapped for export.

The whole model is exported as detectron2's own ``tools/deploy/export_model.py``
does with ``--export-method tracing``: :class:`detectron2.export.TracingAdapter`
flattens ``model.inference(..., do_postprocess=False)`` (boxes, scores,
classes, 28x28 mask logits, image size) into tensors, and ``torch.jit.trace``
records it. ``torch.export`` (and so ONNX) cannot follow detectron2's
data-dependent image padding and proposal selection, so those formats take
the backbone (ResNet + FPN: :class:`BackboneFeatures`), fed the normalized,
padded image tensor that ``model.preprocess_image`` makes. :func:`align_detections` pairs two runs' detections
before they are compared.
"""
from typing import List, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from .build import build_model
from .config import add_ssn_config, merge_config_file

__all__ = ["load_model", "image_inputs", "BackboneFeatures", "exportable", "align_detections"]


def load_model(config_file: str, checkpoint: str, opts: List[str] = ()) -> Tuple[nn.Module, object]:
    """``(model in eval mode, cfg)`` from a detectron2 yaml (``_BASE_`` chains resolved) and a checkpoint."""
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.config import get_cfg

    cfg = get_cfg()
    add_ssn_config(cfg)
    merge_config_file(cfg, config_file)
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", *opts])
    cfg.freeze()
    model = build_model(cfg)
    DetectionCheckpointer(model).load(checkpoint)
    return model.eval(), cfg


def image_inputs(image: np.ndarray, cfg) -> List[dict]:
    """detectron2's input list for one ``(H, W, 3)`` uint8 RGB image, in the config's ``INPUT.FORMAT``."""
    if cfg.INPUT.FORMAT == "BGR":
        image = image[:, :, ::-1]
    return [{"image": torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()}]


class BackboneFeatures(nn.Module):
    """``model.backbone`` as a function of the preprocessed image tensor: its feature maps, by name order."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.backbone = model.backbone

    def forward(self, images: Tensor) -> Tuple[Tensor, ...]:
        features = self.backbone(images)
        return tuple(features[name] for name in sorted(features))


def _inference(model, inputs):
    # as detectron2's export_model.py: ROI mask logits, not pasted full-image masks
    return [{"instances": model.inference(inputs, do_postprocess=False)[0]}]


def exportable(model: nn.Module, inputs: List[dict], part: str) -> Tuple[nn.Module, Tuple[Tensor, ...]]:
    """``(module, example inputs)`` to export: the whole model (``part="model"``) or its backbone."""
    if part == "backbone":
        with torch.no_grad():
            images = model.preprocess_image(inputs).tensor
        return BackboneFeatures(model).eval(), (images,)
    if part != "model":
        raise ValueError(f"unknown part {part!r}; choose 'model' or 'backbone'")
    from detectron2.export import TracingAdapter
    adapter = TracingAdapter(model, inputs, _inference)
    return adapter.eval(), tuple(adapter.flattened_inputs)


def align_detections(outputs: List[Tensor], reference: List[Tensor]) -> List[Tensor]:
    """A whole detector's flattened detections of one image (boxes, classes, mask logits, scores: the tensors whose
    first dimension is the detection count) in ``reference``'s order.

    Detections whose scores tie to within rounding (say 0.01839219 and 0.01839218) may come out in either order
    from two equally correct models, so each is paired with the reference detection its box overlaps most. When the
    boxes do not pair one to one with an IoU above 0.99, ``outputs`` come back as they are and the comparison shows
    the difference.
    """
    from torchvision.ops import box_iou
    boxes = [i for i, t in enumerate(reference) if t.dim() == 2 and t.shape[-1] == 4 and t.is_floating_point()]
    if len(boxes) != 1 or len(outputs) != len(reference) or outputs[boxes[0]].shape != reference[boxes[0]].shape:
        return list(outputs)
    count = reference[boxes[0]].shape[0]
    if count == 0:
        return list(outputs)
    overlap = box_iou(outputs[boxes[0]].double(), reference[boxes[0]].double())
    order = overlap.argmax(0)  # for each reference detection, the output detection on the same box
    if sorted(order.tolist()) != list(range(count)) or float(overlap.max(0).values.min()) < 0.99:
        return list(outputs)
    return [t[order] if t.shape[:1] == (count,) else t for t in outputs]
