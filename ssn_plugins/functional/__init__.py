"""Functional core of Switchable Normalization.

``switch_norm`` normalizes ``x`` of shape ``(N, C, *S)`` with a mixture of
Instance-, Layer-, Batch- (and Group-) Norm statistics; ``selected_norm`` runs a single
one of them through PyTorch's native kernels. Both update running statistics
in place, as ``torch.nn.functional.batch_norm`` does.

The package reads in layers: :mod:`.candidates` (what each candidate normalizer is), :mod:`.moments` (all
statistics from one pass over ``x``, the IN mean and variance, pooled per candidate by the law of total variance),
:mod:`._native_kernels` (CPU speed from PyTorch's own norm kernels) and :mod:`._fused` (the autograd Functions
with the hand-written backward used in eager training).
"""
import math
from typing import Optional, Sequence

import torch
from torch import Tensor

from ._fused import _SwitchNormFunction, _SynchronizedSwitchNormFunction
from ._native_kernels import _affine, _broadcast
from .candidates import CANDIDATES, DEFAULT_GN_GROUPS, Candidate, check_candidates, group_count, kind_of
from .moments import (_CallSpec, _mixture_scale_shift, _record_batch_statistics, _traceable_instance_moments,
                      batch_moments, instance_moments)

__all__ = ["switch_norm", "selected_norm", "CANDIDATES", "DEFAULT_GN_GROUPS", "Candidate", "kind_of",
           "check_candidates", "group_count", "instance_moments", "batch_moments", "native_kernel_takes",
           "under_torch_func"]


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

    spec = _CallSpec(tuple(kind_of(name) for name in candidates), batch_bn, running_mean, running_var,
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
    return _affine(x, scale, shift)


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
    kind = kind_of(candidate)
    groups = kind.norm_groups(x.shape[1])
    if x.shape[0] == 0 or (groups and x.shape[1] // groups * math.prod(x.shape[2:]) == 1):
        # The native kernels refuse both. x * 0 keeps the input, and weight * 0 the scale, in the graph
        # with a zero gradient (DDP expects one for every parameter).
        y = x * 0
        if weight is not None:
            y = y + _broadcast(weight * 0 + bias, x.dim()).to(x.dtype)
        return y
    return kind.native(x, running_mean=running_mean, running_var=running_var, weight=weight, bias=bias,
                       training=training, momentum=momentum, eps=eps)


def native_kernel_takes(x: Tensor, tensors: Sequence[Optional[Tensor]]) -> bool:
    """Whether PyTorch's norm kernels take ``x`` with these parameters / statistics (``None`` for absent ones).

    They take parameters of the input's dtype, or float32 ones for half / bf16 input; any other mix must run
    :func:`switch_norm`, which accepts every combination.
    """
    allowed = (x.dtype, torch.float32) if x.dtype in (torch.float16, torch.bfloat16) else (x.dtype,)
    return all(t is None or t.dtype in allowed for t in tensors)


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
