"""ImageNet evaluation as the SN / SSN / CE releases measure it: one centre crop of the resized image.

Shared by ``tools/eval_imagenet.py`` and ``tools/pretrain_imagenet.py``.
"""
from typing import Tuple

import torch

__all__ = ["MEAN", "STD", "eval_transform", "count_correct", "UnreadableImage", "checked_image_loader"]

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def eval_transform(image_size: int = 224):
    """Resize the shorter side to ``image_size * 256 / 224`` (256 for 224), take the centre ``image_size`` crop."""
    from torchvision import transforms

    return transforms.Compose([transforms.Resize(round(image_size * 256 / 224)), transforms.CenterCrop(image_size),
                               transforms.ToTensor(), transforms.Normalize(MEAN, STD)])


def count_correct(logits: torch.Tensor, labels: torch.Tensor) -> Tuple[int, int]:
    """How many of the ``(N, classes)`` ``logits`` have the label first (top-1) and within the first five (top-5)."""
    top5 = logits.topk(min(5, logits.shape[1]), dim=1).indices
    return int((top5[:, 0] == labels).sum()), int((top5 == labels[:, None]).any(1).sum())


class UnreadableImage(RuntimeError):
    """An image file PIL cannot read; the message names it (also when a DataLoader worker re-raises it)."""


def checked_image_loader(path: str):
    """``torchvision.datasets.folder.default_loader``, raising :class:`UnreadableImage` naming the file."""
    from torchvision.datasets.folder import default_loader

    try:
        return default_loader(path)
    except Exception as e:  # noqa: BLE001 - PIL's UnidentifiedImageError, truncated files, OSError, ...
        raise UnreadableImage(f"{path}: not a readable image ({type(e).__name__}: {e})") from None
