"""The two autograd Functions behind eager-training :func:`~ssn_plugins.functional.switch_norm`: the fused one with
a hand-written backward (two passes over ``x``), and the synchronised one whose ``(N, C)``-sized graph autograd
differentiates through the all-reduce. Both are checked against plain autograd and ``gradcheck``
(tests/test_autograd_paths.py).
"""
import math
from typing import Optional

import torch
from torch import Tensor

from ._native_kernels import _apply_scale_shift, _broadcast, _identity_stats, _map_sums, _rows, _same_dtype
from .moments import (_CallSpec, _candidate_moments, _matmul_outside_autocast, _mixture_scale_shift,
                      _record_batch_statistics, _scale_shift, instance_moments)


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
    def forward(ctx, x: Tensor, spec: _CallSpec, unbiased: bool, mean_ratios: Tensor, var_ratios: Tensor,
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
        ctx.weight_needs_grad, ctx.bias_needs_grad = (t is not None and t.requires_grad for t in (weight, bias))
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
        # Each candidate from the instance moments pooled over one dim of a view (its descriptor's), with
        # mean_k = avg(mean_in) and var_k = avg(var_in) + avg((mean_in - mean_k)²); IN is the moments themselves.
        # (This Function runs in training only, so BN is always the batch's, never the running constants.)
        w, u = ctx.ratios
        grad_mean_in = grad_var_in = None
        n, c = mean_in.shape
        for k, kind in enumerate(spec.candidates):
            view = kind.pooled_view(n, c)
            if view is None:
                from_mean, from_var = grad_mean * w[k], grad_var * u[k]
            else:
                shape, dim = view
                pooled_mean = grad_mean.reshape(shape).sum(dim, keepdim=True).mul_(w[k] / shape[dim])
                from_var = grad_var.reshape(shape).sum(dim, keepdim=True).mul_(u[k] / shape[dim])
                from_mean = torch.addcmul(pooled_mean, from_var, (mean_in - moments[k][0]).reshape(shape), value=2)
                if len(shape) > 2:
                    from_mean, from_var = from_mean.reshape(n, c), from_var.expand(shape).reshape(n, c)
            grad_mean_in = from_mean if grad_mean_in is None else grad_mean_in + from_mean
            grad_var_in = from_var if grad_var_in is None else grad_var_in + from_var
        grad_x = _input_gradient(x, grad_y, scale, mean_in, grad_mean_in, grad_var_in, ctx.unbiased, identity)
        mean_dtype, var_dtype, weight_dtype, bias_dtype = ctx.dtypes
        grad_weight = grad_bias = None
        if ctx.weight_needs_grad:
            grad_weight = _same_dtype((grad_scale_total * rstd).sum(0), weight_dtype)
        if ctx.bias_needs_grad:
            grad_bias = _same_dtype(grad_shift.sum(0), bias_dtype)
        return (grad_x, None, None, _same_dtype(grad_mean_ratios, mean_dtype),
                _same_dtype(grad_var_ratios, var_dtype), grad_weight, grad_bias)


class _SynchronizedSwitchNormFunction(torch.autograd.Function):
    """:func:`switch_norm` with BN statistics all-reduced over a process group.

    The ``(N, C)``-sized graph of :func:`_mixture_scale_shift` (which
    all-reduces) is differentiated by autograd, whose all-reduce has a
    backward; the gradient through the moments to ``x`` uses their closed
    form, as :class:`_SwitchNormFunction` does.
    """

    @staticmethod
    def forward(ctx, x: Tensor, spec: _CallSpec, unbiased: bool, *inputs):
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
