"""Functional core of Switchable Normalization.

``switch_norm`` normalizes ``x`` of shape ``(N, C, *S)`` with a mixture of
Instance-, Layer-, Batch- (and Group-) Norm statistics; ``selected_norm`` runs a single
one of them through PyTorch's native kernels. Both update running statistics
in place, as ``torch.nn.functional.batch_norm`` does.

All statistics come from one pass over ``x`` (the IN mean and variance);
LN, BN and GN (a ``"GN<groups>"`` candidate) are derived from them with the law of total variance,
``var = mean(var_in) + var(mean_in)``, which equals the paper's
``mean(var_in + mean_in²) - mean²`` without its cancellation.
"""
import math
import re
from typing import List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["CANDIDATES", "DEFAULT_GN_GROUPS", "switch_norm", "selected_norm", "instance_moments", "batch_moments",
           "check_candidates", "group_count"]

#: The candidate normalizers, in the order of the ratio vectors; a GroupNorm candidate ``"GN<groups>"`` follows them.
CANDIDATES: Tuple[str, ...] = ("IN", "LN", "BN")
#: the groups of a candidate written plain ``"GN"`` (GroupNorm's usual 32)
DEFAULT_GN_GROUPS = 32


def group_count(candidate: str) -> Optional[int]:
    """The number of channel groups of a ``"GN<groups>"`` candidate (``"GN32"`` -> 32); ``None`` for the others."""
    match = re.fullmatch(r"GN([1-9]\d*)", candidate) if isinstance(candidate, str) else None
    return int(match.group(1)) if match else None


def check_candidates(candidates: Sequence[str], num_features: Optional[int] = None) -> Tuple[str, ...]:
    """Validate a candidate list and return it in canonical ``[IN, LN, BN, GN<g>]`` order.

    ``"GN"`` stands for ``"GN32"``. With ``num_features``, a GN candidate's
    group count must divide it.
    """
    if isinstance(candidates, str):
        raise ValueError(f"candidates must be a list of names such as ('IN', 'LN', 'BN'), got the string "
                         f"{candidates!r}; write ({candidates!r},) for a single candidate")
    names = [f"GN{DEFAULT_GN_GROUPS}" if c == "GN" else c for c in candidates]
    unknown = [c for c in names if c not in CANDIDATES and group_count(c) is None]
    if unknown:
        raise ValueError(f"unknown normalizer candidate(s) {unknown}; choose from {list(CANDIDATES)} and "
                         f"'GN<groups>' (e.g. 'GN32'; 'GN' is 'GN{DEFAULT_GN_GROUPS}')")
    if len(set(names)) != len(names) or not names:
        raise ValueError(f"candidates must be a non-empty list without repeats, got {list(candidates)}")
    group_norms = [c for c in names if group_count(c) is not None]
    if len(group_norms) > 1:
        raise ValueError(f"one GroupNorm candidate at most, got {group_norms}")
    if group_norms and num_features is not None and num_features % group_count(group_norms[0]):
        raise ValueError(f"candidate {group_norms[0]}: {group_count(group_norms[0])} groups do not divide "
                         f"{num_features} channels")
    return tuple(c for c in CANDIDATES if c in names) + tuple(group_norms)


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


def _group_moments(mean_in: Tensor, var_in: Tensor, groups: int) -> Tuple[Tensor, Tensor]:
    """GroupNorm statistics as ``(N, C)``: the per-map moments pooled over each group's channels."""
    n, c = mean_in.shape
    grouped = (n, groups, c // groups)
    mean, var = _pooled_moments(mean_in.reshape(grouped), var_in.reshape(grouped), 2)
    return mean.expand(grouped).reshape(n, c), var.expand(grouped).reshape(n, c)


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


def _broadcast(t: Tensor, ndim: int) -> Tensor:
    """``(N, C)`` or ``(C,)`` to a shape that broadcasts against ``(N, C, *S)``."""
    if t.dim() == 1:
        t = t.unsqueeze(0)
    return t.reshape(t.shape + (1,) * (ndim - 2))


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
    norm, whose fused kernels are the fastest per-map affine map and per-map
    sums PyTorch has (about 2x ``mul`` + ``add_``, one pass instead of two).
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


def _same_dtype(t: Tensor, dtype: torch.dtype) -> Tensor:
    return t if t.dtype == dtype else t.to(dtype)


def _apply_scale_shift(x: Tensor, scale: Tensor, shift: Tensor, identity=None) -> Tensor:
    """``x * scale + shift`` per ``(n, c)`` map, fused where the native kernel takes ``x`` (no autograd).

    Written into a new tensor of ``x``'s shape (not a view of the kernel's
    ``(1, N*C, |S|)`` output), so that in-place operations after the layer
    (``ReLU(inplace=True)``) are allowed on it. ``identity``: the
    :func:`_identity_stats` of ``x``'s rows, if already made.
    """
    rows = _rows(x)
    if rows is None:
        return _affine(x, scale, shift)
    zeros, ones = identity if identity is not None else _identity_stats(rows)
    y = torch.empty_like(x, memory_format=torch.contiguous_format)
    empty = zeros[:0]
    torch.ops.aten.native_batch_norm.out(rows, _same_dtype(scale.reshape(-1), x.dtype),
                                         _same_dtype(shift.reshape(-1), x.dtype), zeros, ones, False, 0.0, 0.0,
                                         out=y.view(rows.shape), save_mean=empty, save_invstd=empty)
    return y


def _map_sums(grad_y: Tensor, x: Tensor, dtype: torch.dtype, identity=None) -> Tuple[Tensor, Tensor]:
    """``(sum_S(grad_y * x), sum_S(grad_y))`` per ``(n, c)`` map, each ``(N, C)`` in ``dtype``.

    One pass of the batch-norm backward kernel where it takes the tensors
    (eval mode, mean 0, variance 1: its weight and bias gradients are exactly
    these sums), a product and two sums elsewhere.
    """
    n, c = x.shape[:2]
    rows, grad_rows = _rows(x), _rows(grad_y.contiguous())
    if rows is not None and grad_rows is not None:
        zeros, ones = identity if identity is not None else _identity_stats(rows)
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


def instance_moments(x: Tensor, unbiased: bool = False) -> Tuple[Tensor, Tensor]:
    """Per-``(n, c)`` mean and variance of ``x`` of shape ``(N, C, *S)`` over ``S``, each ``(N, C)``.

    Computed by PyTorch's native group-norm moments kernel with one group per
    channel (numerically stable, several times faster than ``var_mean`` on
    CPU); its normalized output is discarded. Returned in float32 (float64 for
    float64 input). Not differentiable: see :func:`_traceable_instance_moments`.
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


class _Statistics(NamedTuple):
    """How one :func:`switch_norm` call gets its candidates' statistics (see there)."""
    candidates: Tuple[str, ...]
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
                       spec: _Statistics) -> Tuple[List[Tuple[Tensor, Tensor]], Optional[tuple]]:
    """``(mean_k, var_k)`` per candidate, each broadcastable to ``(N, C)``, and this batch's BN statistics.

    LN and BN come from the instance moments by the law of total variance.
    The one place the candidates' statistics are defined: every path of
    :func:`switch_norm` (fused, plain, synchronised) calls it. The second
    result is ``(mean, var, samples)`` of the batch's BN candidate (``None``
    when BN comes from the running buffers or is no candidate), for
    :func:`_record_batch_statistics`; nothing here writes any buffer.
    """
    sd = mean_in.dtype
    moments, batch_bn = [], None
    for name in spec.candidates:
        if name == "IN":
            moments.append((mean_in, var_in))
        elif name == "LN":
            moments.append(_pooled_moments(mean_in, var_in, 1))
        elif name != "BN":
            moments.append(_group_moments(mean_in, var_in, group_count(name)))
        elif spec.batch_bn:
            batch_bn = batch_moments(mean_in, var_in, spec.process_group)
            moments.append((batch_bn[0].unsqueeze(0), batch_bn[1].unsqueeze(0)))
        else:
            moments.append((spec.running_mean.to(sd).unsqueeze(0), spec.running_var.to(sd).unsqueeze(0)))
    return moments, batch_bn


def _record_batch_statistics(spec: _Statistics, batch_bn: Optional[tuple]) -> None:
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
                 bias: Optional[Tensor], spec: _Statistics, shape) -> Tuple[Tensor, ...]:
    """``(scale, shift, mean, rstd, means, variances)``: the mixed statistics as one affine map per ``(n, c)``.

    ``y = x * scale + shift`` with ``scale = weight * rstd`` and
    ``shift = bias - mean * scale``, ``mean = mean_ratios @ means`` and
    ``var = var_ratios @ variances``, where ``means`` / ``variances`` stack
    the candidates' statistics as ``(K, N*C)`` (one product mixes them all,
    and gives the ratios' gradients in the backward). All ``(N, C)``.
    """
    sd = moments[0][0].dtype
    k = len(moments)
    means = torch.stack([m.expand(shape) for m, _ in moments]).view(k, -1)
    variances = torch.stack([v.expand(shape) for _, v in moments]).view(k, -1)
    mean = _matmul_outside_autocast(_same_dtype(mean_ratios, sd), means).view(shape)
    var = _matmul_outside_autocast(_same_dtype(var_ratios, sd), variances).view(shape)
    rstd = torch.rsqrt(var + spec.eps)
    scale = rstd if weight is None else rstd * _same_dtype(weight, sd)
    if bias is None:
        shift = torch.mul(mean, scale).neg_()
    else:
        shift = torch.addcmul(_same_dtype(bias, sd), mean, scale, value=-1)
    return scale, shift, mean, rstd, means, variances


_DOUBLE_BACKWARD = ("double backward (a gradient of a gradient, e.g. a gradient penalty) through SwitchNorm's fused "
                    "backward is not supported: build the layer with double_backward=True (plain autograd, slower), "
                    "or call switch_norm(..., double_backward=True)")


def _input_gradient(x: Tensor, grad_y: Tensor, scale: Tensor, mean_in: Tensor, grad_mean_in: Tensor,
                    grad_var_in: Tensor, unbiased: bool, identity=None) -> Tensor:
    """``grad_x`` of ``y = x * scale + shift`` whose factors depend on ``x`` through its instance moments.

    ``d mean_in / dx = 1/|S|`` and ``d var_in / dx = 2 (x - mean_in) / |S|``
    (``|S| - 1`` when unbiased), folded with the direct term into
    ``x * a + b + grad_y * scale`` per ``(n, c)``: two passes over ``x``.
    """
    n, c = x.shape[:2]
    positions = math.prod(x.shape[2:])
    a = (grad_var_in * (2.0 / max(positions - 1 if unbiased else positions, 1))).expand(n, c)
    b = torch.addcmul(grad_mean_in * (1.0 / positions), a, mean_in, value=-1)
    grad_x = _apply_scale_shift(x, a, b, identity)
    return grad_x.addcmul_(grad_y, _broadcast(_same_dtype(scale, x.dtype), x.dim()))


class _SwitchNormFunction(torch.autograd.Function):
    """:func:`switch_norm` without a process group, with a hand-written backward.

    Used in training only. The forward reads ``x`` twice (moments, then one
    fused affine map); the backward reads ``x`` and the output gradient once for
    two per-map sums and once for :func:`_input_gradient`, with the ``(N, C)``-sized
    chain rule of :func:`_candidate_moments` and :func:`_scale_shift` written
    out below: on small maps the cost is the number of operations, and the
    autograd engine inside a backward would cost more than the layer.
    ``gradcheck`` and the plain path check it (tests/test_autograd_paths.py).
    """

    @staticmethod
    def forward(ctx, x: Tensor, spec: _Statistics, unbiased: bool, mean_ratios: Tensor, var_ratios: Tensor,
                weight: Optional[Tensor], bias: Optional[Tensor]) -> Tensor:
        mean_in, var_in = instance_moments(x, unbiased)
        moments, batch_bn = _candidate_moments(mean_in, var_in, spec)
        _record_batch_statistics(spec, batch_bn)
        scale, shift, mean, rstd, means, variances = _scale_shift(moments, mean_ratios, var_ratios, weight, bias,
                                                                  spec, mean_in.shape)
        rows = _rows(x)
        identity = None if rows is None else _identity_stats(rows)
        ctx.save_for_backward(x)
        ctx.small = (mean_in, moments, mean, rstd, scale, means, variances, identity)
        # On CPU the ratios as Python numbers: the scalar factors of the backward then cost no operations.
        ctx.ratios = tuple(r.tolist() if r.device.type == "cpu" else r.detach().unbind(0)
                           for r in (mean_ratios, var_ratios))
        ctx.weight = None if weight is None else weight.detach()
        ctx.spec, ctx.unbiased = spec, unbiased
        ctx.dtypes = tuple(None if t is None else t.dtype for t in (mean_ratios, var_ratios, weight, bias))
        return _apply_scale_shift(x, scale, shift, identity)

    @staticmethod
    def backward(ctx, grad_y: Tensor):
        if torch.is_grad_enabled():
            raise RuntimeError(_DOUBLE_BACKWARD)
        (x,) = ctx.saved_tensors
        mean_in, moments, mean, rstd, scale, means, variances, identity = ctx.small
        spec, weight = ctx.spec, ctx.weight
        sd = mean_in.dtype
        grad_scale, grad_shift = _map_sums(grad_y, x, sd, identity)
        # y = x * scale + shift, scale = weight * rstd, shift = bias - mean * scale, rstd = (var + eps)^-1/2
        grad_mean = torch.mul(scale, grad_shift).neg_()
        grad_scale_total = torch.addcmul(grad_scale, mean, grad_shift, value=-1)
        grad_var = torch.mul(grad_scale_total, rstd.pow(3)).mul_(-0.5)
        if weight is not None:
            grad_var.mul_(_same_dtype(weight, sd))
        # mean = mean_ratios @ means, var = var_ratios @ variances
        grad_mean_ratios = _matmul_outside_autocast(means, grad_mean.view(-1))
        grad_var_ratios = _matmul_outside_autocast(variances, grad_var.view(-1))
        # Each candidate from the instance moments: IN itself; LN pools over channels (dim 1), BN over samples
        # (dim 0), GN over each group's channels (dim 2 of the (N, G, C/G) view), with mean_k = avg(mean_in) and
        # var_k = avg(var_in) + avg((mean_in - mean_k)²).
        # (This Function runs in training only, so BN is always the batch's, never the running constants.)
        w, u = ctx.ratios
        grad_mean_in = grad_var_in = None
        n, c = mean_in.shape
        for k, name in enumerate(spec.candidates):
            groups = group_count(name)
            if name == "IN":
                from_mean, from_var = grad_mean * w[k], grad_var * u[k]
            else:
                dim, view = (2, (n, groups, c // groups)) if groups else (1 if name == "LN" else 0, (n, c))
                pooled_mean = grad_mean.reshape(view).sum(dim, keepdim=True).mul_(w[k] / view[dim])
                from_var = grad_var.reshape(view).sum(dim, keepdim=True).mul_(u[k] / view[dim])
                from_mean = torch.addcmul(pooled_mean, from_var, (mean_in - moments[k][0]).reshape(view), value=2)
                if groups:
                    from_mean, from_var = from_mean.reshape(n, c), from_var.expand(view).reshape(n, c)
            grad_mean_in = from_mean if grad_mean_in is None else grad_mean_in + from_mean
            grad_var_in = from_var if grad_var_in is None else grad_var_in + from_var
        grad_x = _input_gradient(x, grad_y, scale, mean_in, grad_mean_in, grad_var_in, ctx.unbiased, identity)
        mean_dtype, var_dtype, weight_dtype, bias_dtype = ctx.dtypes
        grad_weight = grad_bias = None
        if ctx.needs_input_grad[5]:
            grad_weight = _same_dtype((grad_scale_total * rstd).sum(0), weight_dtype)
        if ctx.needs_input_grad[6]:
            grad_bias = _same_dtype(grad_shift.sum(0), bias_dtype)
        return (grad_x, None, None, _same_dtype(grad_mean_ratios, mean_dtype),
                _same_dtype(grad_var_ratios, var_dtype), grad_weight, grad_bias)


def _mixture_scale_shift(mean_in: Tensor, var_in: Tensor, mean_ratios: Tensor, var_ratios: Tensor,
                         weight: Optional[Tensor], bias: Optional[Tensor], spec: _Statistics):
    """``(scale, shift, batch_bn)``: the mixture's affine map per ``(n, c)`` from the instance moments, and the
    batch's BN statistics (see :func:`_candidate_moments`)."""
    moments, batch_bn = _candidate_moments(mean_in, var_in, spec)
    scale, shift = _scale_shift(moments, mean_ratios, var_ratios, weight, bias, spec, mean_in.shape)[:2]
    return scale, shift, batch_bn


class _SynchronizedSwitchNormFunction(torch.autograd.Function):
    """:func:`switch_norm` with BN statistics all-reduced over a process group.

    The ``(N, C)``-sized graph of :func:`_mixture_scale_shift` (which
    all-reduces) is differentiated by autograd, whose all-reduce has a
    backward; the gradient through the moments to ``x`` uses their closed
    form, as :class:`_SwitchNormFunction` does.
    """

    @staticmethod
    def forward(ctx, x: Tensor, spec: _Statistics, unbiased: bool, *inputs):
        mean_in, var_in = instance_moments(x.detach(), unbiased)
        with torch.enable_grad():
            moments = (mean_in.requires_grad_(), var_in.requires_grad_())
            leaves = tuple(t.detach().requires_grad_(t.requires_grad) if t is not None else None for t in inputs)
            scale, shift, batch_bn = _mixture_scale_shift(*moments, *leaves, spec)
        _record_batch_statistics(spec, batch_bn)
        ctx.graph = (scale, shift, moments, leaves)
        ctx.unbiased = unbiased
        ctx.save_for_backward(x)
        return _apply_scale_shift(x, scale.detach(), shift.detach())

    @staticmethod
    def backward(ctx, grad_y: Tensor):
        if torch.is_grad_enabled():
            raise RuntimeError(_DOUBLE_BACKWARD)
        (x,) = ctx.saved_tensors
        scale, shift, moments, leaves = ctx.graph
        grad_scale, grad_shift = _map_sums(grad_y, x, scale.dtype)
        wanted = list(moments) + [t for t in leaves if t is not None and t.requires_grad]
        # The small graph is kept (it is (N, C)-sized and freed with ctx) so that
        # a retained outer graph can run backward again.
        with torch.enable_grad():
            grads = torch.autograd.grad((scale, shift), wanted, (grad_scale, grad_shift), allow_unused=True,
                                        retain_graph=True)
        grad_mean, grad_var = (torch.zeros_like(m) if g is None else g for m, g in zip(moments, grads[:2]))
        grad_x = _input_gradient(x, grad_y, scale.detach(), moments[0].detach(), grad_mean, grad_var, ctx.unbiased)
        leaf_grads = iter(grads[2:])
        return (grad_x, None, None) + tuple(
            next(leaf_grads) if t is not None and t.requires_grad else None for t in leaves)


def under_torch_func(*tensors: Optional[Tensor]) -> bool:
    """Whether any of ``tensors`` is transformed by ``torch.func`` (``grad``, ``vmap``, ...); False when compiling."""
    if torch.compiler.is_compiling():
        return False
    return any(t is not None and torch._C._functorch.is_functorch_wrapped_tensor(t) for t in tensors)


def _is_traced(*tensors: Optional[Tensor]) -> bool:
    """Whether this call is being traced, compiled, exported or transformed (``torch.func``, seen on ``tensors``).

    Those see only plain tensor operations: a custom autograd Function with a
    hand-written backward breaks ``torch.compile``'s graph and ``torch.func``'s
    transforms, and tracers record the kernels it calls.
    """
    return (torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.compiler.is_exporting()
            or under_torch_func(*tensors))


def switch_norm(
    x: Tensor,
    mean_ratios: Tensor,
    var_ratios: Tensor,
    candidates: Sequence[str] = CANDIDATES,
    *,
    running_mean: Optional[Tensor] = None,
    running_var: Optional[Tensor] = None,
    weight: Optional[Tensor] = None,
    bias: Optional[Tensor] = None,
    training: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
    unbiased_in: bool = False,
    unbiased_running_var: bool = True,
    process_group=None,
    double_backward: bool = False,
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

    In eager training the gradient comes from a fused, hand-written backward
    (two passes over ``x``); in eval, and whenever the call is traced,
    compiled, exported or transformed by ``torch.func``, the same math runs
    as plain tensor operations, so ``torch.jit.trace``, ``torch.export``,
    ONNX export, ``torch.compile`` (without graph breaks) and ``vmap`` /
    ``grad`` all see through it.

    The arguments after ``candidates`` are keyword-only, in
    ``F.batch_norm``'s order.

    Args:
        x: ``(N, C, *S)``; ``S`` may be empty only if IN is not a candidate.
        mean_ratios, var_ratios: ``(K,)`` non-negative ratios, ``K = len(candidates)``.
        candidates: the candidate names, in the ratios' order.
        running_mean, running_var: ``(C,)`` buffers updated in place in
            training when BN is a candidate.
        weight, bias: ``(C,)`` affine parameters, or ``None``.
        training: BN from the batch (and running buffers updated) or from the buffers.
        momentum: ``running = (1 - momentum) * running + momentum * batch``.
        unbiased_in: use the unbiased IN variance (divides by ``|S| - 1``) and
            derive LN and BN from it, as the authors' code does.
        unbiased_running_var: store the unbiased BN variance in
            ``running_var``, as ``torch.nn.BatchNorm`` does (``False``: the
            variance used for normalization, as the authors' code does).
        double_backward: differentiate with plain autograd in training too,
            so that gradients of gradients (gradient penalties) work; slower.
            The fused backward raises an error naming this option when asked
            for a second derivative.

    Returns:
        ``y`` shaped and typed like ``x``.
    """
    n = x.shape[0]
    positions = math.prod(x.shape[2:])
    use_batch_stats = training or running_mean is None
    batch_bn = "BN" in candidates and use_batch_stats
    if not batch_bn:
        process_group = None

    if n == 0 and process_group is None:
        # An empty batch (detectron2's mask head can produce one): nothing to
        # normalize; keep every parameter in the graph so DDP sees its gradient.
        y = x
        if weight is not None:
            y = y * _broadcast(weight, x.dim()) + _broadcast(bias, x.dim())
        return y + (mean_ratios.sum() + var_ratios.sum()).to(x.dtype) * 0

    spec = _Statistics(tuple(candidates), batch_bn, running_mean, running_var,
                       training and batch_bn and running_mean is not None, momentum, unbiased_running_var,
                       process_group, positions, eps)
    traced = _is_traced(x, mean_ratios, var_ratios, weight, bias)
    if process_group is not None and not traced:
        return _SynchronizedSwitchNormFunction.apply(x, spec, unbiased_in, mean_ratios, var_ratios, weight, bias)

    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, mean_ratios, var_ratios, weight, bias))
    if training and needs_grad and not traced and not double_backward:
        return _SwitchNormFunction.apply(x, spec, unbiased_in, mean_ratios, var_ratios, weight, bias)
    # Plain operations: autograd (eval, double backward), tracers and compilers see every step.
    plain = traced or needs_grad
    mean_in, var_in = (_traceable_instance_moments if plain else instance_moments)(x, unbiased_in)
    scale, shift, batch_bn = _mixture_scale_shift(mean_in, var_in, mean_ratios, var_ratios, weight, bias, spec)
    _record_batch_statistics(spec, batch_bn)
    return _affine(x, scale, shift) if plain else _apply_scale_shift(x, scale, shift)


def native_kernel_takes(x: Tensor, tensors: Sequence[Optional[Tensor]]) -> bool:
    """Whether PyTorch's norm kernels take ``x`` with these parameters / statistics (``None`` for absent ones).

    They take parameters of the input's dtype, or float32 ones for half / bf16 input; any other mix must run
    :func:`switch_norm`, which accepts every combination.
    """
    allowed = (x.dtype, torch.float32) if x.dtype in (torch.float16, torch.bfloat16) else (x.dtype,)
    return all(t is None or t.dtype in allowed for t in tensors)


def selected_norm(
    x: Tensor,
    candidate: str,
    *,
    running_mean: Optional[Tensor] = None,
    running_var: Optional[Tensor] = None,
    weight: Optional[Tensor] = None,
    bias: Optional[Tensor] = None,
    training: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    """One normalizer through PyTorch's native kernels.

    Equal to :func:`switch_norm` with a one-hot ratio on ``candidate`` (and
    ``unbiased_in=False``): BN is ``F.batch_norm``, IN ``F.instance_norm``,
    LN ``F.group_norm`` with one group, ``"GN<g>"`` ``F.group_norm`` with
    ``g`` groups. The arguments after ``candidate`` are keyword-only, in
    ``F.batch_norm``'s order. As there, an empty batch gives an
    empty output, and IN (or LN / GN) of a single value per group is
    defined (each value is its own mean with variance 0, so the output is
    ``bias``).
    """
    groups = x.shape[1] if candidate == "IN" else 1 if candidate == "LN" else group_count(candidate)
    if x.shape[0] == 0 or (groups and x.shape[1] // groups * math.prod(x.shape[2:]) == 1):
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
    if group_count(candidate) is not None:
        return F.group_norm(x, group_count(candidate), weight, bias, eps)
    raise ValueError(f"unknown normalizer candidate {candidate!r}; choose from {list(CANDIDATES)} and 'GN<groups>'")
