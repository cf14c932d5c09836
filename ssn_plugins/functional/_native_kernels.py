"""CPU speed from PyTorch's own norm kernels: an ``(N, C, *S)`` tensor seen as ``(1, N*C, |S|)`` is one eval-mode
batch norm whose "channels" are the ``(n, c)`` maps, so its fused kernels give both per-map sums of the backward in
one pass and, on large maps, the per-map affine map (timm's ``fast_norm.py`` plays the same part). Everything falls
back to plain operations where the kernels do not take the tensors. No autograd here: the fused Functions call these.
"""
import math
from typing import Optional, Tuple

import torch
from torch import Tensor


def _broadcast(t: Tensor, ndim: int) -> Tensor:
    """``(N, C)`` or ``(C,)`` to a shape that broadcasts against ``(N, C, *S)``."""
    if t.dim() == 1:
        t = t.unsqueeze(0)
    return t.reshape(t.shape + (1,) * (ndim - 2))


def _same_dtype(t: Tensor, dtype: torch.dtype) -> Tensor:
    return t if t.dtype == dtype else t.to(dtype)


def _affine(x: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
    """``x * scale + shift`` with ``(N, C)`` factors broadcast over ``S``, in plain (traceable) operations.

    ``mul`` then in-place ``add_``: on CPU, ``addcmul`` with two broadcast
    operands is about 3x slower for cache-sized tensors and no faster for large ones. Half-precision
    ``x`` is scaled in the factors' precision and rounded once, as PyTorch's norm kernels do: rounding
    ``scale`` itself to bf16 would put a 0.4 % error on every output of the layer.
    """
    if x.dtype in (torch.bfloat16, torch.float16) and scale.dtype != x.dtype:
        return torch.mul(x, _broadcast(scale, x.dim())).add_(_broadcast(shift, x.dim())).to(x.dtype)
    return torch.mul(x, _broadcast(scale.to(x.dtype), x.dim())).add_(_broadcast(shift.to(x.dtype), x.dim()))


def _rows(x: Tensor) -> Optional[Tensor]:
    """``x`` as ``(1, N*C, |S|)`` without a copy, where the native batch-norm kernels take it, else ``None``.

    Seen that way, each ``(n, c)`` map is one "channel" of an eval-mode batch
    norm, whose backward kernel gives both per-map sums in one pass, and whose
    forward is the faster affine map on large maps (from 56x56; on 7x7 and
    14x14 maps ``mul`` + ``add_`` is 1.5-2x faster).
    """
    if (x.dtype not in (torch.float32, torch.float64) or not x.is_contiguous() or x.dim() < 3 or x.numel() == 0
            or x.device.type != "cpu"):
        return None  # (the kernels divide by the element count: an empty tensor would stop the process)
    n, c = x.shape[:2]
    return x.view(1, n * c, math.prod(x.shape[2:]))


def _identity_stats(rows: Tensor) -> Tuple[Tensor, Tensor]:
    """Running mean 0 and variance 1 (with eps 0): the eval-mode batch norm of ``rows`` is its affine map alone."""
    k = rows.shape[1]
    return rows.new_zeros(k), rows.new_ones(k)


def _apply_scale_shift(x: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
    """``x * scale + shift`` per ``(n, c)`` map, fused where the native kernel takes ``x`` (no autograd).

    Written into a new tensor of ``x``'s shape (not a view of the kernel's
    ``(1, N*C, |S|)`` output), so that in-place operations after the layer
    (``ReLU(inplace=True)``) are allowed on it.
    """
    rows = _rows(x)
    if rows is None:
        return _affine(x, scale, shift)
    zeros, ones = _identity_stats(rows)
    y = torch.empty_like(x, memory_format=torch.contiguous_format)
    empty = zeros[:0]
    torch.ops.aten.native_batch_norm.out(rows, _same_dtype(scale.reshape(-1), x.dtype),
                                         _same_dtype(shift.reshape(-1), x.dtype), zeros, ones, False, 0.0, 0.0,
                                         out=y.view(rows.shape), save_mean=empty, save_invstd=empty)
    return y


def _map_sums(grad_y: Tensor, x: Tensor, dtype: torch.dtype) -> Tuple[Tensor, Tensor]:
    """``(sum_S(grad_y * x), sum_S(grad_y))`` per ``(n, c)`` map, each ``(N, C)`` in ``dtype``.

    One pass of the batch-norm backward kernel where it takes the tensors
    (eval mode, mean 0, variance 1: its weight and bias gradients are exactly
    these sums), a product and two sums elsewhere.
    """
    n, c = x.shape[:2]
    rows, grad_rows = _rows(x), _rows(grad_y.contiguous())
    if rows is not None and grad_rows is not None:
        zeros, ones = _identity_stats(rows)
        _, dot, total = torch.ops.aten.native_batch_norm_backward(
            grad_rows, rows, None, zeros, ones, None, None, False, 0.0, [False, True, True])
        return _same_dtype(dot.view(n, c), dtype), _same_dtype(total.view(n, c), dtype)
    positions = math.prod(x.shape[2:])
    g3, x3 = grad_y.reshape(n, c, positions), x.reshape(n, c, positions)
    return _rowwise_dot(g3, x3).to(dtype), g3.sum(-1, dtype=dtype)


def _rowwise_dot(a: Tensor, b: Tensor) -> Tensor:
    """``(a * b).sum(-1)`` for ``(N, C, S)`` tensors.

    Past a few million elements a batched matrix product is about 3x faster
    (no product tensor to write and read back); below, it is about 3x slower.
    """
    if a.numel() < 4_000_000 or not (a.is_contiguous() and b.is_contiguous()):
        return (a * b).sum(-1)
    n, c, s = a.shape
    return torch.bmm(a.reshape(n * c, 1, s), b.reshape(n * c, s, 1)).reshape(n, c)
