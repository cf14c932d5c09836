"""The statistics: instance moments in one pass, each candidate's moments pooled from them, the running update,
and the mixture as one affine map per ``(n, c)``.

LN, BN and GN are derived from the IN mean and variance with the law of total variance,
``var = mean(var_in) + var(mean_in)``, which equals the paper's ``mean(var_in + mean_in²) - mean²`` without its
cancellation.
"""
import math
from typing import List, NamedTuple, Optional, Tuple

import torch
from torch import Tensor

from ._native_kernels import _same_dtype
from .candidates import Candidate

__all__ = ["instance_moments", "batch_moments"]


def _differentiable_all_reduce(t: Tensor, group) -> Tensor:
    # torch.distributed.nn's all_reduce has a backward (an all-reduce of the
    # gradient), so SyncSN gradients come from autograd, not a hand-written rule.
    from torch.distributed.nn.functional import all_reduce
    return all_reduce(t, group=group)


def _pooled_moments(mean_in: Tensor, var_in: Tensor, dim: int, keepdim: bool = True) -> Tuple[Tensor, Tensor]:
    """Mean and variance pooled over ``dim`` of per-map moments: ``var = avg(var_in) + avg((mean_in - mean)²)``.

    The law of total variance, in four operations (no cancellation, unlike ``E[x²] - mean²``).
    """
    mean = mean_in.mean(dim, keepdim=True)
    centred = mean_in - mean
    var = torch.addcmul(var_in, centred, centred).mean(dim, keepdim=keepdim)
    return (mean if keepdim else mean.squeeze(dim)), var


def batch_moments(mean_in: Tensor, var_in: Tensor, process_group=None,
                  weights: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor]:
    """BN statistics per channel from per-``(n, c)`` moments.

    Args:
        mean_in, var_in: ``(N, C)`` instance means and variances.
        process_group: if given, the sums are all-reduced over it
            (synchronised BN statistics).
        weights: with ``process_group``, an ``(N, C)`` weight of each row
            (e.g. how many batches a process's statistics average); the
            count returned is then their ``(C,)`` sum, and a channel of
            total weight 0 gets zeros.

    Returns:
        ``(mean, var, count)``: ``(C,)`` tensors and the number of samples
        ``N`` (summed over the group): an int locally, a 0-d tensor when
        synchronised. Locally ``var = mean_n(var_in) + var_n(mean_in)``; across
        processes the sums are pooled in float64 so that ``E[q] - mean²`` keeps
        its precision, and an empty group gives zeros.
    """
    if process_group is None:
        return _pooled_moments(mean_in, var_in, 0, keepdim=False) + (mean_in.shape[0],)
    m = mean_in.double()
    q = var_in.double() + m * m
    c = mean_in.shape[1]
    if weights is not None:
        w = weights.double()
        sums = _differentiable_all_reduce(torch.cat([(m * w).sum(0), (q * w).sum(0), w.sum(0)]), process_group)
        total = sums[2 * c:]
    else:
        count = torch.tensor([float(m.shape[0])], dtype=torch.float64, device=m.device)
        sums = _differentiable_all_reduce(torch.cat([m.sum(0), q.sum(0), count]), process_group)
        total = sums[-1]
    safe_total = torch.where(total > 0, total, torch.ones_like(total))
    mean = sums[:c] / safe_total
    var = torch.clamp(sums[c:2 * c] / safe_total - mean * mean, min=0)
    return mean.to(mean_in.dtype), var.to(mean_in.dtype), total


def _update_running(running_mean: Tensor, running_var: Tensor, mean: Tensor, var: Tensor,
                    positions, momentum: float, unbiased_running_var: bool) -> None:
    """``running = (1 - momentum) * running + momentum * batch``, skipped for an empty batch.

    ``positions`` (values per channel) is an int, or a 0-d tensor when it was
    all-reduced (then nothing here waits for the device).
    """
    with torch.no_grad():
        if mean.dtype != running_mean.dtype:
            mean, var = mean.to(running_mean.dtype), var.to(running_var.dtype)
        if isinstance(positions, int):
            if positions == 0:
                return
            if unbiased_running_var:
                var = var * (positions / max(positions - 1, 1))
            running_mean.lerp_(mean, momentum)
            running_var.lerp_(var, momentum)
            return
        if unbiased_running_var:
            var = var * (positions / torch.clamp(positions - 1, min=1)).to(var.dtype)
        seen = positions > 0
        running_mean.copy_(torch.where(seen, running_mean.lerp(mean, momentum), running_mean))
        running_var.copy_(torch.where(seen, running_var.lerp(var, momentum), running_var))


def instance_moments(x: Tensor, unbiased: bool = False) -> Tuple[Tensor, Tensor]:
    """Per-``(n, c)`` mean and variance of ``x`` of shape ``(N, C, *S)`` over ``S``, each ``(N, C)``.

    Computed by PyTorch's native group-norm moments kernel with one group per
    channel (numerically stable, several times faster than ``var_mean`` on
    CPU); its normalized output is discarded. Returned in float32 (float64 for
    float64 input). Not differentiable: see :func:`_traceable_instance_moments`.
    """
    mean, rstd = _instance_mean_rstd(x)
    return mean, _variance_from_rstd(rstd, math.prod(x.shape[2:]), unbiased)


def _instance_mean_rstd(x: Tensor) -> Tuple[Tensor, Tensor]:
    """The per-``(n, c)`` mean and ``1 / std`` (biased, ``inf`` for a constant map) of :func:`instance_moments`."""
    n, c = x.shape[:2]
    stats_input = x if x.dtype in (torch.float32, torch.float64) else x.float()
    # eps = 0: rstd is exactly 1/sqrt(var), and inf (var 0) where a map is constant.
    _, mean, rstd = torch.native_group_norm(stats_input, None, None, n, c, math.prod(x.shape[2:]), c, 0.0)
    return mean.view(n, c), rstd.view(n, c)


def _variance_from_rstd(rstd: Tensor, positions, unbiased: bool) -> Tensor:
    """The variance of :func:`_instance_mean_rstd`'s ``rstd``; ``positions`` may be symbolic (a compiled chain)."""
    var = rstd.pow(-2)
    return var * (positions / (positions - 1)) if unbiased else var


def _traceable_instance_moments(x: Tensor, unbiased: bool) -> Tuple[Tensor, Tensor]:
    """:func:`instance_moments` in plain differentiable operations (two-pass, same dtypes).

    For autograd without the fused backward, and for tracing, compiling and
    exporting (plain ``mean`` and products are in every opset and fuse).
    """
    stats_input = x if x.dtype in (torch.float32, torch.float64) else x.float()
    dims = tuple(range(2, x.dim()))
    mean = stats_input.mean(dims, keepdim=True)
    centred = stats_input - mean
    squares = (centred * centred).sum(dims)
    count = math.prod(x.shape[2:])
    return mean.reshape(x.shape[:2]), squares / (count - 1 if unbiased else count)


class _CallSpec(NamedTuple):
    """How one :func:`~ssn_plugins.functional.switch_norm` call gets its candidates' statistics (a call spec)."""
    candidates: Tuple[Candidate, ...]
    batch_bn: bool  # BN from this batch (else from the running buffers)
    running_mean: Optional[Tensor]
    running_var: Optional[Tensor]
    update_running: bool
    momentum: float
    unbiased_running_var: bool
    process_group: object
    positions: int
    eps: float


def _candidate_moments(mean_in: Tensor, var_in: Tensor,
                       spec: _CallSpec) -> Tuple[List[Tuple[Tensor, Tensor]], Optional[tuple]]:
    """``(mean_k, var_k)`` per candidate, each broadcastable to ``(N, C)``, and this batch's BN statistics.

    Each comes from the instance moments pooled as its descriptor says (law of total variance).
    The one place the candidates' statistics are computed: every path of
    :func:`switch_norm` (fused, plain, synchronised) calls it. The second
    result is ``(mean, var, samples)`` of the batch's BN candidate (``None``
    when BN comes from the running buffers or is no candidate), for
    :func:`_record_batch_statistics`; nothing here writes any buffer.
    """
    sd = mean_in.dtype
    n, c = mean_in.shape
    moments, batch_bn = [], None
    for kind in spec.candidates:
        if not kind.batch_statistics:
            moments.append(_pooled_candidate(kind, mean_in, var_in, n, c))
        elif spec.batch_bn:
            batch_bn = batch_moments(mean_in, var_in, spec.process_group)
            moments.append((batch_bn[0].unsqueeze(0), batch_bn[1].unsqueeze(0)))
        else:
            moments.append((spec.running_mean.to(sd).unsqueeze(0), spec.running_var.to(sd).unsqueeze(0)))
    return moments, batch_bn


def _pooled_candidate(kind: Candidate, mean_in: Tensor, var_in: Tensor, n: int, c: int) -> Tuple[Tensor, Tensor]:
    """A per-sample candidate's ``(mean, var)`` from the instance moments, broadcastable to ``(N, C)``."""
    view = kind.pooled_view(n, c)
    if view is None:
        return mean_in, var_in
    shape, dim = view
    mean, var = _pooled_moments(mean_in.reshape(shape), var_in.reshape(shape), dim)
    if len(shape) == 2:
        return mean, var
    return mean.expand(shape).reshape(n, c), var.expand(shape).reshape(n, c)


def _record_batch_statistics(spec: _CallSpec, batch_bn: Optional[tuple]) -> None:
    """Fold this batch's BN statistics into the running buffers, when ``spec`` says so (training with buffers)."""
    if spec.update_running and batch_bn is not None:
        mean, var, samples = batch_bn
        _update_running(spec.running_mean, spec.running_var, mean.detach(), var.detach(), samples * spec.positions,
                        spec.momentum, spec.unbiased_running_var)


def _matmul_outside_autocast(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b`` in the operands' own dtype: autocast would run it in bf16 / fp16, and the statistics and their
    mixing must stay in float32 under it, as BatchNorm's do. Without autocast, exactly the plain matmul."""
    device = a.device.type
    if device in ("cpu", "cuda") and torch.is_autocast_enabled(device):
        with torch.autocast(device_type=device, enabled=False):
            return torch.matmul(a, b)
    return torch.matmul(a, b)


def _scale_shift(moments, mean_ratios: Tensor, var_ratios: Tensor, weight: Optional[Tensor],
                 bias: Optional[Tensor], spec: _CallSpec, shape, stacked: bool = True) -> Tuple[Tensor, ...]:
    """``(scale, shift, mean, rstd, means, variances)``: the mixed statistics as one affine map per ``(n, c)``.

    ``y = x * scale + shift`` with ``scale = weight * rstd`` and
    ``shift = bias - mean * scale``, ``mean = mean_ratios @ means`` and
    ``var = var_ratios @ variances``. ``stacked``: ``means`` / ``variances``
    stack the candidates' statistics as ``(K, N*C)`` (eagerly, one product then
    mixes them all, and gives the ratios' gradients in the backward); otherwise
    the sums are written out and both are ``None`` (a compiled chain fuses those
    into its loops, where a product is a call of its own). All ``(N, C)``.
    """
    sd = moments[0][0].dtype
    mean_ratios, var_ratios = _same_dtype(mean_ratios, sd), _same_dtype(var_ratios, sd)
    if stacked:
        k = len(moments)
        means = torch.stack([m.expand(shape) for m, _ in moments]).view(k, -1)
        variances = torch.stack([v.expand(shape) for _, v in moments]).view(k, -1)
        mean = _matmul_outside_autocast(mean_ratios, means).view(shape)
        var = _matmul_outside_autocast(var_ratios, variances).view(shape)
    else:
        means = variances = None
        mean = sum(m * mean_ratios[k] for k, (m, _) in enumerate(moments)).expand(shape)
        var = sum(v * var_ratios[k] for k, (_, v) in enumerate(moments)).expand(shape)
    rstd = torch.rsqrt(var + spec.eps)
    scale = rstd if weight is None else rstd * _same_dtype(weight, sd)
    if bias is None:
        shift = torch.mul(mean, scale).neg_()
    else:
        shift = torch.addcmul(_same_dtype(bias, sd), mean, scale, value=-1)
    return scale, shift, mean, rstd, means, variances


def _mixture_scale_shift(mean_in: Tensor, var_in: Tensor, mean_ratios: Tensor, var_ratios: Tensor,
                         weight: Optional[Tensor], bias: Optional[Tensor], spec: _CallSpec):
    """``(scale, shift, batch_bn)``: the mixture's affine map per ``(n, c)`` from the instance moments, and the
    batch's BN statistics (see :func:`_candidate_moments`)."""
    moments, batch_bn = _candidate_moments(mean_in, var_in, spec)
    scale, shift = _scale_shift(moments, mean_ratios, var_ratios, weight, bias, spec, mean_in.shape)[:2]
    return scale, shift, batch_bn
