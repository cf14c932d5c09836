"""Functional core of Switchable Normalization.

``switch_norm`` normalizes ``x`` of shape ``(N, C, *S)`` with a mixture of
Instance-, Layer- and Batch-Norm statistics; ``selected_norm`` runs a single
one of them through PyTorch's native kernels. Both update running statistics
in place, as ``torch.nn.functional.batch_norm`` does.

All statistics come from one pass over ``x`` (SPEC: the IN mean and variance);
LN and BN are derived from them with the law of total variance,
``var = mean(var_in) + var(mean_in)``, which equals the paper's
``mean(var_in + mean_in²) - mean²`` without its cancellation.
"""
import math
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["CANDIDATES", "switch_norm", "selected_norm", "batch_moments", "check_candidates"]

#: The candidate normalizers, in the order of the ratio vectors.
CANDIDATES: Tuple[str, ...] = ("IN", "LN", "BN")


def check_candidates(candidates: Sequence[str]) -> Tuple[str, ...]:
    """Validate a candidate list and return it in canonical ``[IN, LN, BN]`` order."""
    unknown = [c for c in candidates if c not in CANDIDATES]
    if unknown:
        raise ValueError(f"unknown normalizer candidate(s) {unknown}; choose from {list(CANDIDATES)}")
    if len(set(candidates)) != len(candidates) or not candidates:
        raise ValueError(f"candidates must be a non-empty list without repeats, got {list(candidates)}")
    return tuple(c for c in CANDIDATES if c in candidates)


def _stats_dtype(x: Tensor) -> torch.dtype:
    # Statistics of half-precision inputs are kept in float32.
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _differentiable_all_reduce(t: Tensor, group) -> Tensor:
    # torch.distributed.nn's all_reduce has a backward (an all-reduce of the
    # gradient), so SyncSN gradients come from autograd, not a hand-written rule.
    from torch.distributed.nn.functional import all_reduce
    return all_reduce(t, group=group)


def batch_moments(mean_in: Tensor, var_in: Tensor, process_group=None) -> Tuple[Tensor, Tensor, Tensor]:
    """BN statistics per channel from per-``(n, c)`` moments.

    Args:
        mean_in, var_in: ``(N, C)`` instance means and variances.
        process_group: if given, the sums are all-reduced over it
            (synchronised BN statistics).

    Returns:
        ``(mean, var, count)``: ``(C,)`` tensors and the number of samples
        ``N`` summed over the group (a 0-d tensor). Pooled in float64 so that
        ``E[q] - mean²`` keeps its precision; zero where ``count`` is zero.
    """
    m = mean_in.double()
    q = var_in.double() + m * m
    count = torch.tensor([float(m.shape[0])], dtype=torch.float64, device=m.device)
    sums = torch.cat([m.sum(0), q.sum(0), count])
    if process_group is not None:
        sums = _differentiable_all_reduce(sums, process_group)
    c = mean_in.shape[1]
    total = sums[-1]
    safe_total = torch.where(total > 0, total, torch.ones_like(total))
    mean = sums[:c] / safe_total
    var = torch.clamp(sums[c:2 * c] / safe_total - mean * mean, min=0)
    return mean.to(mean_in.dtype), var.to(mean_in.dtype), total


def _update_running(running_mean: Tensor, running_var: Tensor, mean: Tensor, var: Tensor,
                    positions: Tensor, momentum: float, unbiased_running_var: bool) -> None:
    """``running = (1 - momentum) * running + momentum * batch`` where the batch is non-empty."""
    with torch.no_grad():
        if unbiased_running_var:
            var = var * (positions / torch.clamp(positions - 1, min=1))
        seen = positions > 0
        running_mean.copy_(torch.where(seen, running_mean.lerp(mean.to(running_mean.dtype), momentum), running_mean))
        running_var.copy_(torch.where(seen, running_var.lerp(var.to(running_var.dtype), momentum), running_var))


def _broadcast(t: Tensor, ndim: int) -> Tensor:
    """``(N, C)`` or ``(C,)`` to a shape that broadcasts against ``(N, C, *S)``."""
    if t.dim() == 1:
        t = t.unsqueeze(0)
    return t.reshape(t.shape + (1,) * (ndim - 2))


def switch_norm(
    x: Tensor,
    mean_ratios: Tensor,
    var_ratios: Tensor,
    candidates: Sequence[str] = CANDIDATES,
    weight: Optional[Tensor] = None,
    bias: Optional[Tensor] = None,
    running_mean: Optional[Tensor] = None,
    running_var: Optional[Tensor] = None,
    training: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
    unbiased_in: bool = False,
    unbiased_running_var: bool = True,
    process_group=None,
) -> Tensor:
    """Switchable Normalization of ``x`` with given mixing ratios.

    ``y = weight * (x - mean) / sqrt(var + eps) + bias`` with
    ``mean = Σ_k mean_ratios[k] * mean_k`` and ``var = Σ_k var_ratios[k] * var_k``
    over ``candidates`` (a subsequence of ``[IN, LN, BN]``):

    - IN: per ``(n, c)`` over ``S``;
    - LN: per ``n`` over ``(C, S)``;
    - BN: per ``c`` over ``(N, S)`` in training (all-reduced over
      ``process_group`` if given) or when there are no running statistics;
      ``running_mean`` / ``running_var`` otherwise.

    Args:
        x: ``(N, C, *S)``; ``S`` may be empty only if IN is not a candidate.
        mean_ratios, var_ratios: ``(K,)`` non-negative ratios, ``K = len(candidates)``.
        weight, bias: ``(C,)`` affine parameters, or ``None``.
        running_mean, running_var: ``(C,)`` buffers updated in place in
            training when BN is a candidate.
        momentum: ``running = (1 - momentum) * running + momentum * batch``.
        unbiased_in: use the unbiased IN variance (divides by ``|S| - 1``) and
            derive LN and BN from it, as the authors' code does.
        unbiased_running_var: store the unbiased BN variance in
            ``running_var``, as ``torch.nn.BatchNorm`` does (``False``: the
            variance used for normalization, as the authors' code does).

    Returns:
        ``y`` shaped and typed like ``x``.
    """
    n, c = x.shape[:2]
    positions = math.prod(x.shape[2:])
    use_batch_stats = training or running_mean is None
    sd = _stats_dtype(x)

    if n == 0 and process_group is None:
        # An empty batch (detectron2's mask head can produce one): nothing to
        # normalize; keep every parameter in the graph so DDP sees its gradient.
        y = x
        if weight is not None:
            y = y * _broadcast(weight, x.dim()) + _broadcast(bias, x.dim())
        return y + (mean_ratios.sum() + var_ratios.sum()).to(x.dtype) * 0

    x3 = x.reshape(n, c, positions)
    var_in, mean_in = torch.var_mean(x3, dim=-1, correction=1 if unbiased_in else 0)
    mean_in, var_in = mean_in.to(sd), var_in.to(sd)

    means, variances = [], []
    for name in candidates:
        if name == "IN":
            means.append(mean_in)
            variances.append(var_in)
        elif name == "LN":
            means.append(mean_in.mean(1, keepdim=True))
            variances.append(var_in.mean(1, keepdim=True) + mean_in.var(1, correction=0, keepdim=True))
        elif use_batch_stats:
            mean_bn, var_bn, count = batch_moments(mean_in, var_in, process_group)
            if running_mean is not None and training:
                _update_running(running_mean, running_var, mean_bn, var_bn, count * positions,
                                momentum, unbiased_running_var)
            means.append(mean_bn.unsqueeze(0))
            variances.append(var_bn.unsqueeze(0))
        else:
            means.append(running_mean.to(sd).unsqueeze(0))
            variances.append(running_var.to(sd).unsqueeze(0))

    wm, wv = mean_ratios.to(sd), var_ratios.to(sd)
    mean = sum(wm[k] * means[k] for k in range(len(candidates)))
    var = sum(wv[k] * variances[k] for k in range(len(candidates)))

    scale = torch.rsqrt(var + eps)
    if weight is not None:
        scale = scale * weight.to(sd)
    shift = -mean * scale
    if bias is not None:
        shift = shift + bias.to(sd)
    scale = _broadcast(scale.to(x.dtype), x.dim())
    shift = _broadcast(shift.to(x.dtype), x.dim())
    return torch.addcmul(shift, x, scale)


def selected_norm(
    x: Tensor,
    candidate: str,
    weight: Optional[Tensor] = None,
    bias: Optional[Tensor] = None,
    running_mean: Optional[Tensor] = None,
    running_var: Optional[Tensor] = None,
    training: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    """One normalizer through PyTorch's native kernels.

    Equal to :func:`switch_norm` with a one-hot ratio on ``candidate`` (and
    ``unbiased_in=False``): BN is ``F.batch_norm``, IN ``F.instance_norm``,
    LN ``F.group_norm`` with one group.
    """
    if candidate == "BN":
        return F.batch_norm(x, running_mean, running_var, weight, bias,
                            training or running_mean is None, momentum, eps)
    if candidate == "IN":
        return F.instance_norm(x, None, None, weight, bias, True, 0.0, eps)
    if candidate == "LN":
        return F.group_norm(x, 1, weight, bias, eps)
    raise ValueError(f"unknown normalizer candidate {candidate!r}; choose from {list(CANDIDATES)}")
