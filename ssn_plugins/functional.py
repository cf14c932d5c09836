"""Functional core of Switchable Normalization.

``switch_norm`` normalizes ``x`` of shape ``(N, C, *S)`` with a mixture of
Instance-, Layer- and Batch-Norm statistics; ``selected_norm`` runs a single
one of them through PyTorch's native kernels. Both update running statistics
in place, as ``torch.nn.functional.batch_norm`` does.

All statistics come from one pass over ``x`` (the IN mean and variance);
LN and BN are derived from them with the law of total variance,
``var = mean(var_in) + var(mean_in)``, which equals the paper's
``mean(var_in + mean_in²) - mean²`` without its cancellation.
"""
import math
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["CANDIDATES", "switch_norm", "selected_norm", "instance_moments", "batch_moments", "check_candidates"]

#: The candidate normalizers, in the order of the ratio vectors.
CANDIDATES: Tuple[str, ...] = ("IN", "LN", "BN")


def check_candidates(candidates: Sequence[str]) -> Tuple[str, ...]:
    """Validate a candidate list and return it in canonical ``[IN, LN, BN]`` order."""
    if isinstance(candidates, str):
        raise ValueError(f"candidates must be a list of names such as ('IN', 'LN', 'BN'), got the string "
                         f"{candidates!r}; write ({candidates!r},) for a single candidate")
    unknown = [c for c in candidates if c not in CANDIDATES]
    if unknown:
        raise ValueError(f"unknown normalizer candidate(s) {unknown}; choose from {list(CANDIDATES)}")
    if len(set(candidates)) != len(candidates) or not candidates:
        raise ValueError(f"candidates must be a non-empty list without repeats, got {list(candidates)}")
    return tuple(c for c in CANDIDATES if c in candidates)


def _differentiable_all_reduce(t: Tensor, group) -> Tensor:
    # torch.distributed.nn's all_reduce has a backward (an all-reduce of the
    # gradient), so SyncSN gradients come from autograd, not a hand-written rule.
    from torch.distributed.nn.functional import all_reduce
    return all_reduce(t, group=group)


def _population_var(t: Tensor, dim: int, keepdim: bool = True) -> Tensor:
    # Two-pass and explicit: Tensor.var on small CPU tensors is ~20x slower.
    centred = t - t.mean(dim, keepdim=True)
    return (centred * centred).mean(dim, keepdim=keepdim)


def batch_moments(mean_in: Tensor, var_in: Tensor, process_group=None) -> Tuple[Tensor, Tensor, Tensor]:
    """BN statistics per channel from per-``(n, c)`` moments.

    Args:
        mean_in, var_in: ``(N, C)`` instance means and variances.
        process_group: if given, the sums are all-reduced over it
            (synchronised BN statistics).

    Returns:
        ``(mean, var, count)``: ``(C,)`` tensors and the number of samples
        ``N`` (summed over the group): an int locally, a 0-d tensor when
        synchronised. Locally ``var = mean_n(var_in) + var_n(mean_in)``; across
        processes the sums are pooled in float64 so that ``E[q] - mean²`` keeps
        its precision, and an empty group gives zeros.
    """
    if process_group is None:
        return mean_in.mean(0), var_in.mean(0) + _population_var(mean_in, 0, keepdim=False), mean_in.shape[0]
    m = mean_in.double()
    q = var_in.double() + m * m
    count = torch.tensor([float(m.shape[0])], dtype=torch.float64, device=m.device)
    sums = _differentiable_all_reduce(torch.cat([m.sum(0), q.sum(0), count]), process_group)
    c = mean_in.shape[1]
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


def _broadcast(t: Tensor, ndim: int) -> Tensor:
    """``(N, C)`` or ``(C,)`` to a shape that broadcasts against ``(N, C, *S)``."""
    if t.dim() == 1:
        t = t.unsqueeze(0)
    return t.reshape(t.shape + (1,) * (ndim - 2))


def _affine(x: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
    """``x * scale + shift`` with ``(N, C)`` factors broadcast over ``S``.

    ``mul`` then in-place ``add_``: on CPU, ``addcmul`` with two broadcast
    operands is about 3x slower for cache-sized tensors and no faster for large ones.
    """
    return torch.mul(x, _broadcast(scale.to(x.dtype), x.dim())).add_(_broadcast(shift.to(x.dtype), x.dim()))


def _rowwise_dot(a: Tensor, b: Tensor) -> Tensor:
    """``(a * b).sum(-1)`` for ``(N, C, S)`` tensors.

    Past a few million elements a batched matrix product is about 3x faster
    (no product tensor to write and read back); below, it is about 3x slower.
    """
    if a.numel() < 4_000_000 or not (a.is_contiguous() and b.is_contiguous()):
        return (a * b).sum(-1)
    n, c, s = a.shape
    return torch.bmm(a.reshape(n * c, 1, s), b.reshape(n * c, s, 1)).reshape(n, c)


def instance_moments(x: Tensor, unbiased: bool = False) -> Tuple[Tensor, Tensor]:
    """Per-``(n, c)`` mean and variance of ``x`` of shape ``(N, C, *S)`` over ``S``, each ``(N, C)``.

    Computed by PyTorch's native group-norm moments kernel with one group per
    channel (numerically stable, several times faster than ``var_mean`` on
    CPU); its normalized output is discarded. Returned in float32 (float64 for
    float64 input).
    """
    n, c = x.shape[:2]
    positions = math.prod(x.shape[2:])
    stats_input = x if x.dtype in (torch.float32, torch.float64) else x.float()
    # eps = 0: rstd is exactly 1/sqrt(var), and inf (var 0) where a map is constant.
    _, mean, rstd = torch.native_group_norm(stats_input, None, None, n, c, positions, c, 0.0)
    mean = mean.reshape(n, c)
    var = rstd.reshape(n, c).pow(-2)
    if unbiased:
        var = var * (positions / (positions - 1))
    return mean, var


class _MomentAffine(torch.autograd.Function):
    """``y = x * scale + shift`` with ``(scale, shift) = affine(mean_in, var_in, *inputs)`` per ``(n, c)``.

    ``affine`` is any differentiable function of the instance moments and
    small tensors (ratios, γ, β, all-reduced sums...). Autograd handles that
    small ``(N, C)`` graph; the gradient through the moments to ``x`` uses
    their closed form, ``d mean/dx = 1/|S|`` and ``d var/dx = 2 (x - mean)/|S|``,
    folded with the affine map's own input gradient into one expression, so
    the backward reads ``x`` and the output gradient about half as often as
    autograd through ``var_mean`` and the affine map would. Double backward
    is not supported.
    """

    @staticmethod
    def forward(ctx, x: Tensor, affine, unbiased: bool, *inputs):
        mean_in, var_in = instance_moments(x.detach(), unbiased)
        with torch.enable_grad():
            moments = (mean_in.requires_grad_(), var_in.requires_grad_())
            leaves = tuple(t.detach().requires_grad_(t.requires_grad) if t is not None else None for t in inputs)
            scale, shift = affine(*moments, *leaves)
        ctx.graph = (scale, shift, moments, leaves)
        ctx.unbiased = unbiased
        ctx.save_for_backward(x)
        return _affine(x, scale.detach(), shift.detach())

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y: Tensor):
        (x,) = ctx.saved_tensors
        scale, shift, moments, leaves = ctx.graph
        n, c = x.shape[:2]
        positions = math.prod(x.shape[2:])
        sd = scale.dtype
        grad_y3, x3 = grad_y.reshape(n, c, positions), x.reshape(n, c, positions)
        grad_scale = _rowwise_dot(grad_y3, x3).to(sd)
        grad_shift = grad_y3.sum(-1, dtype=sd)
        wanted = list(moments) + [t for t in leaves if t is not None and t.requires_grad]
        # The small graph is kept (it is (N, C)-sized and freed with ctx) so that
        # a retained outer graph can run backward again.
        grads = torch.autograd.grad((scale, shift), wanted, (grad_scale, grad_shift), allow_unused=True,
                                    retain_graph=True)
        grad_mean, grad_var = (torch.zeros_like(m) if g is None else g for m, g in zip(moments, grads[:2]))
        # d/dx of mean_in and var_in, folded into one affine map of x per (n, c)
        a = grad_var * (2.0 / max(positions - 1 if ctx.unbiased else positions, 1))
        b = grad_mean / positions - a * moments[0].detach()
        grad_x = _affine(x, a, b).addcmul_(grad_y, _broadcast(scale.detach().to(x.dtype), x.dim()))
        leaf_grads = iter(grads[2:])
        return (grad_x, None, None) + tuple(
            next(leaf_grads) if t is not None and t.requires_grad else None for t in leaves)


def _mix(ratios: Tensor, stats) -> Tensor:
    """``Σ_k ratios[k] * stats[k]`` for broadcastable ``stats``, in few operations."""
    weights = ratios.unbind(0)
    out = stats[0] * weights[0]
    for w, t in zip(weights[1:], stats[1:]):
        out = torch.addcmul(out, t, w)
    return out


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

    if n == 0 and process_group is None:
        # An empty batch (detectron2's mask head can produce one): nothing to
        # normalize; keep every parameter in the graph so DDP sees its gradient.
        y = x
        if weight is not None:
            y = y * _broadcast(weight, x.dim()) + _broadcast(bias, x.dim())
        return y + (mean_ratios.sum() + var_ratios.sum()).to(x.dtype) * 0

    def affine(mean_in, var_in, mean_ratios, var_ratios, weight, bias):
        sd = mean_in.dtype
        means, variances = [], []
        for name in candidates:
            if name == "IN":
                means.append(mean_in)
                variances.append(var_in)
            elif name == "LN":
                means.append(mean_in.mean(1, keepdim=True))
                variances.append(var_in.mean(1, keepdim=True) + _population_var(mean_in, 1))
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
        mean = _mix(mean_ratios.to(sd), means)
        var = _mix(var_ratios.to(sd), variances)
        scale = torch.rsqrt(var + eps)
        if weight is not None:
            scale = scale * weight.to(sd)
        shift = -mean * scale
        if bias is not None:
            shift = shift + bias.to(sd)
        return scale.expand(n, c), shift.expand(n, c)

    return _MomentAffine.apply(x, affine, unbiased_in, mean_ratios, var_ratios, weight, bias)


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
    LN ``F.group_norm`` with one group. As there, an empty batch gives an
    empty output, and IN of a single value per channel is defined (each
    value is its own mean with variance 0, so the output is ``bias``).
    """
    if x.shape[0] == 0 or (candidate == "IN" and math.prod(x.shape[2:]) == 1):
        # The native kernels refuse both. x * 0 keeps the input, and weight * 0 the scale, in the graph
        # with a zero gradient (DDP expects one for every parameter).
        y = x * 0
        if weight is not None:
            y = y + _broadcast(weight * 0 + bias, x.dim()).to(x.dtype)
        return y
    if candidate == "BN":
        return F.batch_norm(x, running_mean, running_var, weight, bias,
                            training or running_mean is None, momentum, eps)
    if candidate == "IN":
        return F.instance_norm(x, None, None, weight, bias, True, 0.0, eps)
    if candidate == "LN":
        return F.group_norm(x, 1, weight, bias, eps)
    raise ValueError(f"unknown normalizer candidate {candidate!r}; choose from {list(CANDIDATES)}")
