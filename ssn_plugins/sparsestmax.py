"""Sparsemax and SparsestMax: projections of logit vectors onto the simplex.

Both work on the last dimension (or ``dim``) of a tensor of any shape, so all
the ratio vectors of a network can be projected in one call. They use only
differentiable tensor operations with a fixed number of steps, so gradients
come from autograd and nothing in them waits for the device (no ``.item()``,
no data-dependent Python branches).
"""
from typing import Union

import torch
from torch import Tensor

__all__ = ["sparsemax", "sparsestmax", "max_radius"]


def max_radius(num_candidates: int) -> float:
    """Distance from the simplex's centre to a vertex, ``sqrt((K - 1) / K)``.

    At or beyond this radius only the vertices are feasible, so
    :func:`sparsestmax` returns a one-hot vector.
    """
    return ((num_candidates - 1) / num_candidates) ** 0.5


def _simplex_projection(v: Tensor) -> Tensor:
    """Euclidean projection of each row of ``v`` (last dim) onto the simplex."""
    k = v.shape[-1]
    v_sorted, _ = torch.sort(v, dim=-1, descending=True)
    cumsum = v_sorted.cumsum(dim=-1)
    ranks = torch.arange(1, k + 1, device=v.device, dtype=v.dtype)
    in_support = 1 + ranks * v_sorted > cumsum
    support_size = in_support.sum(dim=-1, keepdim=True)  # >= 1 always
    tau = (cumsum.gather(-1, support_size - 1) - 1) / support_size.to(v.dtype)
    return torch.clamp(v - tau, min=0)


def sparsemax(z: Tensor, dim: int = -1) -> Tensor:
    """Sparsemax (Martins & Astudillo, 2016): ``argmin_p ||p - z||`` over the simplex.

    Args:
        z: logits of any shape; the simplex is taken along ``dim``.
        dim: the dimension holding the ``K`` candidates.

    Returns:
        A tensor shaped like ``z`` whose slices along ``dim`` are non-negative
        and sum to one.
    """
    if not torch.is_floating_point(z):
        raise TypeError(f"sparsemax expects a floating-point tensor, got {z.dtype}")
    return _simplex_projection(z.movedim(dim, -1)).movedim(-1, dim)


def _safe_sqrt(x: Tensor) -> Tensor:
    """``sqrt(max(x, 0))`` whose gradient is 0, not NaN, where ``x <= 0``."""
    positive = x > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, x, torch.ones_like(x))),
                       torch.zeros_like(x))


def _radial_push(point: Tensor, centre: Tensor, radius: Tensor, fallback: Tensor, support: Tensor,
                 noise: Tensor) -> Tensor:
    """Move ``point`` away from ``centre`` onto the sphere of ``radius`` if it lies inside.

    Both lie in the affine plane of the face ``support`` (coordinates summing
    to 1, zero off the support); the offset is projected onto that plane
    first, so rounding in ``point``'s coordinates cannot tilt the direction
    out of it. Offsets no longer than ``noise`` (the rounding error of the
    computation that produced ``point``) have no meaningful direction: those
    points move along ``fallback`` (a unit vector in the plane) instead. The
    double ``where`` keeps NaN out of the backward pass.
    """
    s = support.to(point.dtype)
    offset = point - centre
    offset = (offset - (offset * s).sum(dim=-1, keepdim=True) / s.sum(dim=-1, keepdim=True)) * s
    dist = _safe_sqrt((offset * offset).sum(dim=-1, keepdim=True))
    degenerate = dist <= noise
    safe_dist = torch.where(degenerate, torch.ones_like(dist), dist)
    direction = torch.where(degenerate, fallback, offset / safe_dist)
    inside = dist < radius
    return torch.where(inside, centre + direction * radius, point)


def _face_fallback(support: Tensor, dtype: torch.dtype) -> Tensor:
    """A deterministic unit direction (in ``dtype``) inside the face ``support`` (a bool mask) through its centroid.

    Points from the centroid towards the first vertex of the face; zero when
    the face is a single vertex (there is nowhere to move).
    """
    s = support.to(dtype)
    size = s.sum(dim=-1, keepdim=True)
    first = s * (s.cumsum(dim=-1) == 1).to(dtype)
    d = first - s / size
    norm = d.norm(dim=-1, keepdim=True)
    return torch.where(norm > 0, d / norm.clamp_min(1e-30), torch.zeros_like(d))


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

    ``radius = 0`` gives :func:`sparsemax`; ``radius >= sqrt((K - 1) / K)``
    (see :func:`max_radius`) gives a one-hot vector. A point exactly at the
    centre moves towards the first candidate, deterministically.

    Args:
        z: logits of any shape; the candidates lie along ``dim``.
        radius: a non-negative float, or a tensor broadcastable to ``z`` with
            ``dim`` removed (one radius per vector).
        dim: the dimension holding the ``K`` candidates.

    Returns:
        A tensor shaped like ``z`` of ratios on the simplex.
    """
    if not torch.is_floating_point(z):
        raise TypeError(f"sparsestmax expects a floating-point tensor, got {z.dtype}")
    if isinstance(radius, (int, float)):
        if not radius >= 0 or radius == float("inf"):
            raise ValueError(f"sparsestmax radius must be a finite number >= 0, got {radius}")
        radius = torch.tensor(float(radius), dtype=z.dtype, device=z.device)
    radius = radius.to(device=z.device, dtype=z.dtype)
    v = z.movedim(dim, -1)
    k = v.shape[-1]
    if k < 2:
        raise ValueError(f"sparsestmax needs at least 2 candidates, got {k}")
    r = radius.unsqueeze(-1)

    centre = torch.full((k,), 1.0 / k, dtype=v.dtype, device=v.device)
    all_ones = torch.ones(v.shape, dtype=torch.bool, device=v.device)
    # Rounding error of the plane projection below, which works at the logits' magnitude: an offset from
    # a centre this small is noise (equal logits such as 1, 1, 1 land a few ulps off the centre).
    noise = 64 * torch.finfo(v.dtype).eps * (1 + v.detach().abs().amax(dim=-1, keepdim=True))
    # 1-2: onto the plane, then out of the circle around the centre.
    p = v - (v.sum(dim=-1, keepdim=True) - 1) / k
    p = _radial_push(p, centre, r, _face_fallback(all_ones, v.dtype), all_ones, noise)
    # 3-4: while outside the simplex, project onto it and leave the face's circle.
    for _ in range(k - 1):
        outside = (p < 0).any(dim=-1, keepdim=True)
        q = _simplex_projection(p)
        support = q > 0
        size = support.sum(dim=-1, keepdim=True).to(v.dtype)
        face_centre = support.to(v.dtype) / size
        face_r2 = r * r - (1.0 / size - 1.0 / k)
        face_r = _safe_sqrt(face_r2)
        # A single vertex has no circle to leave; an inactive constraint has radius 0.
        face_r = torch.where(size > 1, face_r, torch.zeros_like(face_r))
        pushed = _radial_push(q, face_centre, face_r, _face_fallback(support, v.dtype), support, noise)
        p = torch.where(outside, pushed, p)
    # Rounding can leave -1e-17 after the last push: clamp keeps the output on the simplex.
    p = torch.clamp(p, min=0)
    p = p / p.sum(dim=-1, keepdim=True)
    # At or beyond the vertices' radius only vertices are feasible; rounding
    # can leave 1e-16 beside the 1, so snap to the exact one-hot vector (whose
    # gradient is zero, as the vertex does not move with z).
    tolerance = 8 * torch.finfo(v.dtype).eps
    vertex = torch.zeros_like(p).scatter_(-1, p.argmax(dim=-1, keepdim=True), 1.0)
    p = torch.where(r >= max_radius(k) - tolerance, vertex, p)
    return p.movedim(-1, dim)
