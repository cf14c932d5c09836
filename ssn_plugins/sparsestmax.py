"""Sparsemax and SparsestMax: projections of logit vectors onto the simplex.

Both work on the last dimension (or ``dim``) of a tensor of any shape, so all
the ratio vectors of a network can be projected in one call. They use only
differentiable tensor operations with a fixed number of steps, so gradients
come from autograd and nothing in them waits for the device (no ``.item()``,
no data-dependent Python branches).
"""
import math
from typing import Union

import torch
from torch import Tensor

__all__ = ["sparsemax", "sparsestmax", "max_radius", "check_radius"]


def max_radius(num_candidates: int) -> float:
    """Distance from the simplex's centre to a vertex, ``sqrt((K - 1) / K)``.

    At or beyond this radius only the vertices are feasible, so
    :func:`sparsestmax` returns a one-hot vector.
    """
    return ((num_candidates - 1) / num_candidates) ** 0.5


def check_radius(radius, owner: str) -> float:
    """``radius`` as a float, or a ValueError naming ``owner`` unless it is a finite number ``>= 0``."""
    if isinstance(radius, bool) or not isinstance(radius, (int, float)) or not (math.isfinite(radius) and radius >= 0):
        raise ValueError(f"{owner}: radius must be a finite number >= 0, got {radius!r}")
    return float(radius)


def _simplex_projection(v: Tensor) -> Tensor:
    """Euclidean projection of each row of ``v`` (last dim) onto the simplex.

    The row maximum is subtracted first (the projection is shift-invariant), so
    huge logits stay on the simplex; NaN rows give NaN rows.
    """
    k = v.shape[-1]
    v = v - v.detach().amax(dim=-1, keepdim=True)
    v_sorted, _ = torch.sort(v, dim=-1, descending=True)
    cumsum = v_sorted.cumsum(dim=-1)
    ranks = torch.arange(1, k + 1, device=v.device, dtype=v.dtype)
    in_support = 1 + ranks * v_sorted > cumsum
    # >= 1 for finite rows (the maximum, 0, is always in); 0 only for NaN rows, whose tau is then NaN
    support_size = in_support.sum(dim=-1, keepdim=True).clamp(min=1)
    tau = (cumsum.gather(-1, support_size - 1) - 1) / support_size.to(v.dtype)
    return torch.clamp(v - tau, min=0)


def sparsemax(z: Tensor, dim: int = -1) -> Tensor:
    """Sparsemax (Martins & Astudillo, 2016): ``argmin_p ||p - z||`` over the simplex.

    Computed in ``z``'s dtype after subtracting each slice's maximum, so the
    output stays on the simplex for logits of any size; a slice holding NaN
    gives NaN.

    Args:
        z: logits of any shape; the simplex is taken along ``dim``.
        dim: the dimension holding the ``K`` candidates.

    Returns:
        A tensor shaped like ``z`` whose slices along ``dim`` are non-negative
        and sum to one.
    """
    if not torch.is_floating_point(z):
        raise TypeError(f"sparsemax expects a floating-point tensor, got {z.dtype}")
    if z.dim() == 0:
        raise ValueError("sparsemax expects at least one dimension holding the candidates, got a 0-d tensor")
    if z.shape[dim] == 0 or z.numel() == 0:
        return z.clone()
    return _simplex_projection(z.movedim(dim, -1)).movedim(-1, dim)


def _centred(v: Tensor, support: Tensor) -> Tensor:
    """``v - mean_F(v)`` on the face ``F = support`` (a bool mask), zero off it.

    The face's maximum is subtracted first, so entries that are equal on the
    face give an exact zero: only an exactly centred point has no direction.
    """
    s = support.to(v.dtype)
    top = torch.where(support, v, torch.full_like(v, -torch.inf)).amax(dim=-1, keepdim=True)
    shifted = (v - top) * s
    return (shifted - shifted.sum(dim=-1, keepdim=True) / s.sum(dim=-1, keepdim=True)) * s


def _safe_sqrt(x: Tensor) -> Tensor:
    """``sqrt(max(x, 0))`` whose gradient is 0, not NaN, where ``x <= 0``."""
    positive = x > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, x, torch.ones_like(x))), torch.zeros_like(x))


def _safe_norm(d: Tensor) -> Tensor:
    """``||d||`` over the last dim, with gradient 0 (not NaN) at ``d = 0``."""
    return _safe_sqrt((d * d).sum(dim=-1, keepdim=True))


def _face_fallback(support: Tensor, dtype: torch.dtype) -> Tensor:
    """A deterministic unit direction inside the face ``support`` from its centroid towards its first vertex.

    Zero when the face is a single vertex (there is nowhere to move).
    """
    s = support.to(dtype)
    size = s.sum(dim=-1, keepdim=True)
    first = s * (s.cumsum(dim=-1) == 1).to(dtype)
    d = first - s / size
    norm = d.norm(dim=-1, keepdim=True)
    return torch.where(norm > 0, d / norm.clamp_min(1e-30), torch.zeros_like(d))


def _push_out(point: Tensor, direction: Tensor, support: Tensor, radius: Tensor) -> Tensor:
    """Move ``point`` onto the circle of ``radius`` around the centroid of face ``support`` if it lies inside.

    ``direction`` is the (unnormalised) offset of ``point`` from that centroid,
    computed from the logits themselves rather than from ``point``'s rounded
    coordinates, so its sign pattern is exact however small it is. A zero
    offset (an exactly centred point) moves along the face's fallback
    direction. The double ``where`` keeps NaN out of the backward pass.
    """
    s = support.to(point.dtype)
    centroid = s / s.sum(dim=-1, keepdim=True)
    length = _safe_norm(direction)
    degenerate = length == 0
    unit = torch.where(degenerate, _face_fallback(support, point.dtype),
                       direction / torch.where(degenerate, torch.ones_like(length), length))
    dist = _safe_norm((point - centroid) * s)
    inside = (dist < radius) | (degenerate & (radius > 0))
    return torch.where(inside, centroid + unit * radius, point)


def sparsestmax(z: Tensor, radius: Union[float, Tensor], dim: int = -1) -> Tensor:
    """SparsestMax (Shao et al., CVPR 2019).

    Solves ``argmin_p ||p - z||²`` subject to ``p >= 0``, ``sum(p) = 1`` and
    ``||p - u|| >= radius``, where ``u = 1/K`` is the simplex's centre, with
    the staged algorithm of the paper: project onto the plane ``sum(p) = 1``;
    push a point inside the circle of ``radius`` radially onto it; while an
    entry is negative, project onto the simplex (landing on a face ``F``) and
    push a point inside that face's circle (centre: the face's centroid
    ``c_F``, radius ``sqrt(r² - ||c_F - u||²)``) radially onto it. Each round
    removes at least one candidate, so ``K - 1`` rounds always suffice and run
    unconditionally (already-finished rows are left unchanged).

    The projection runs in float64 whatever ``z``'s dtype (these are a few
    numbers per layer) and is cast back, so float32, bf16 and fp16 logits get
    the float64 projection of their values, forward and backward. Every
    direction away from a centre is taken from the logits themselves: a
    vector one ulp from uniform still moves towards its largest entries, and
    only an exactly uniform vector (on a face: exactly equal entries) falls
    back to moving towards the first candidate.

    ``radius = 0`` gives :func:`sparsemax`; ``radius >= sqrt((K - 1) / K)``
    (see :func:`max_radius`) gives the one-hot vector of the largest logit
    (the first one on ties). NaN logits, and a NaN or negative tensor radius,
    give NaN in that vector; ``±inf`` logits give NaN unless the radius
    selects a vertex.

    Args:
        z: logits of any shape with at least one dimension; the candidates lie along ``dim``.
        radius: a finite float ``>= 0``, or a tensor broadcastable to ``z`` with
            ``dim`` removed (one radius per vector).
        dim: the dimension holding the ``K >= 2`` candidates.

    Returns:
        A tensor shaped and typed like ``z`` of ratios on the simplex.
    """
    if not torch.is_floating_point(z):
        raise TypeError(f"sparsestmax expects a floating-point tensor, got {z.dtype}")
    if z.dim() == 0:
        raise ValueError("sparsestmax expects at least one dimension holding the candidates, got a 0-d tensor")
    if isinstance(radius, (int, float)):
        radius = torch.tensor(check_radius(radius, "sparsestmax"), dtype=torch.float64, device=z.device)
    k = z.shape[dim]
    if k < 2:
        raise ValueError(f"sparsestmax needs at least 2 candidates along dim {dim}, got {k}")
    out_dtype = z.dtype
    v = z.movedim(dim, -1).to(torch.float64)
    r = radius.to(device=z.device, dtype=torch.float64).unsqueeze(-1)
    invalid_radius = ~(r >= 0)  # NaN or negative

    centre = torch.full((k,), 1.0 / k, dtype=v.dtype, device=v.device)
    all_ones = torch.ones(v.shape, dtype=torch.bool, device=v.device)
    # 1-2: onto the plane (offset d from the centre, exact up to float64 rounding of the logits'
    # differences), then out of the circle around the centre.
    d = _centred(v, all_ones)
    p = _push_out(centre + d, d, all_ones, r)
    # 3-4: while outside the simplex, project onto it and leave the face's circle. On a face F the offset
    # of every iterate from c_F is a positive multiple of d - mean_F(d), so the direction comes from d.
    for _ in range(k - 1):
        outside = (p < 0).any(dim=-1, keepdim=True)
        q = _simplex_projection(p)
        support = q > 0
        size = support.sum(dim=-1, keepdim=True).to(v.dtype)
        face_r2 = r * r - (1.0 / size - 1.0 / k)
        face_r = _safe_sqrt(face_r2)
        # A single vertex has no circle to leave; an inactive constraint has radius 0.
        face_r = torch.where(size > 1, face_r, torch.zeros_like(face_r))
        pushed = _push_out(q, _centred(d, support), support, face_r)
        p = torch.where(outside, pushed, p)
    # Rounding can leave -1e-17 after the last push: clamp keeps the output on the simplex.
    p = torch.clamp(p, min=0)
    p = p / p.sum(dim=-1, keepdim=True)
    # At or beyond the vertices' radius only vertices are feasible: the nearest is the largest logit's.
    # Its gradient is zero (the vertex does not move with z). The tolerance covers a radius stored in a
    # lower precision than float64 (set to max_radius(K), rounded either way).
    tolerance = 8 * torch.finfo(radius.dtype if radius.dtype.is_floating_point else torch.float32).eps
    vertex = torch.zeros_like(p).scatter_(-1, v.argmax(dim=-1, keepdim=True), 1.0)
    at_vertex = r >= max_radius(k) - tolerance
    p = torch.where(at_vertex, vertex, p)
    # ±inf logits make inf - inf (NaN) in the projection, which a finite-looking point can hide: only a vertex
    # radius, which needs no projection, has an answer for them
    bad = invalid_radius | torch.isnan(v).any(dim=-1, keepdim=True) | (torch.isinf(v).any(dim=-1, keepdim=True)
                                                                        & ~at_vertex)
    p = torch.where(bad, torch.full_like(p, torch.nan), p)
    return p.to(out_dtype).movedim(-1, dim)
