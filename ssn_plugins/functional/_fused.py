"""The two autograd Functions behind eager-training :func:`~ssn_plugins.functional.switch_norm`: the fused one with
a hand-written backward (two passes over ``x``), and the synchronised one whose ``(N, C)``-sized graph autograd
differentiates through the all-reduce. Both are checked against plain autograd and ``gradcheck``
(tests/test_autograd_paths.py).
"""
import math
from typing import Optional

import torch
from torch import Tensor

from ._native_kernels import _affine, _apply_scale_shift, _broadcast, _map_sums, _same_dtype
from ._chain import backward_chain, compiled_chain, forward_chain, input_gradient_factors
from .moments import (_CallSpec, _instance_mean_rstd, _mixture_scale_shift, _record_batch_statistics,
                      _variance_from_rstd, instance_moments)


_DOUBLE_BACKWARD = ("double backward (a gradient of a gradient, e.g. a gradient penalty) through SwitchNorm's fused "
                    "backward is not supported: build the layer with double_backward=True (plain autograd, slower), "
                    "or call switch_norm(..., double_backward=True)")


#: maps of fewer positions get their input gradient from plain operations, larger ones from the per-map kernel
#: (measured in benchmarks/bench_norms.py's shapes: plain is 1.3-1.7x faster on 7x7 and 14x14 maps, the kernel
#: 1.05-1.15x faster from 56x56)
_PLAIN_INPUT_GRADIENT_BELOW = 1024


def _input_gradient(x: Tensor, grad_y: Tensor, scale: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """``grad_x = x * a + b + grad_y * scale`` (see :func:`~._chain.input_gradient_factors`)."""
    if math.prod(x.shape[2:]) < _PLAIN_INPUT_GRADIENT_BELOW:
        grad_x = _affine(x, a, b)
    else:
        grad_x = _apply_scale_shift(x, a, b)
    return grad_x.addcmul_(grad_y, _broadcast(_same_dtype(scale, x.dtype), x.dim()))


class _SwitchNormFunction(torch.autograd.Function):
    """:func:`switch_norm` without a process group, with a hand-written backward.

    Used in training only. The forward reads ``x`` twice (moments, then the
    affine map); the backward reads ``x`` and the output gradient once for
    two per-map sums and once for :func:`_input_gradient`. Between them runs the
    ``(N, C)``-sized chain of :mod:`._chain`, compiled into one kernel each way
    where inductor is at hand (:mod:`._compiled`), else eagerly: on small maps the
    cost is the number of operations, and the autograd engine inside a backward
    would cost more than the layer. ``gradcheck`` and the plain path check both
    (tests/test_autograd_paths.py, tests/test_compiled_chain.py).
    """

    @staticmethod
    def forward(ctx, x: Tensor, spec: _CallSpec, unbiased: bool, mean_ratios: Tensor, var_ratios: Tensor,
                weight: Optional[Tensor], bias: Optional[Tensor]) -> Tensor:
        mean_in, rstd_in = _instance_mean_rstd(x)
        kernels = compiled_chain(spec, unbiased, mean_in, mean_ratios, var_ratios, weight, bias)
        affine = [t for t in (weight, bias) if t is not None]
        if kernels is None:
            var_in = _variance_from_rstd(rstd_in, spec.positions, unbiased)
            scale, shift, batch_bn, ctx.small = forward_chain(mean_in, var_in, mean_ratios, var_ratios, weight, bias,
                                                              spec)
            # On CPU the ratios as Python numbers: the scalar factors of the backward then cost no operations.
            ctx.ratios = tuple(r.tolist() if r.device.type == "cpu" else r.detach().unbind(0)
                               for r in (mean_ratios, var_ratios))
        else:
            # contiguous: the kernels index their inputs with the traced (contiguous) strides, unchecked
            mean_ratios, var_ratios = mean_ratios.detach().contiguous(), var_ratios.detach().contiguous()
            affine = [t.detach().contiguous() for t in affine]
            outputs = kernels.forward([mean_in, rstd_in, mean_ratios, var_ratios, *affine, spec.positions])
            scale, shift = outputs[:2]
            batch_bn = (outputs[2], outputs[3], x.shape[0]) if spec.batch_bn else None
            ctx.small = (mean_in, rstd_in, mean_ratios, var_ratios, affine)
        _record_batch_statistics(spec, batch_bn)
        ctx.save_for_backward(x)
        ctx.kernels, ctx.scale = kernels, scale
        ctx.weight = None if weight is None else weight.detach()
        ctx.spec, ctx.unbiased = spec, unbiased
        ctx.dtypes = tuple(None if t is None else t.dtype for t in (mean_ratios, var_ratios, weight, bias))
        ctx.weight_needs_grad, ctx.bias_needs_grad = (t is not None and t.requires_grad for t in (weight, bias))
        return _affine(x, scale, shift)

    @staticmethod
    def backward(ctx, grad_y: Tensor):
        if torch.is_grad_enabled():
            raise RuntimeError(_DOUBLE_BACKWARD)
        (x,) = ctx.saved_tensors
        spec = ctx.spec
        grad_scale, grad_shift = _map_sums(grad_y, x, ctx.scale.dtype)
        if ctx.kernels is None:
            a, b, grad_mean_ratios, grad_var_ratios, grad_weight, grad_bias = backward_chain(
                grad_scale, grad_shift, ctx.small, ctx.ratios, ctx.weight, spec, ctx.unbiased, spec.positions,
                ctx.dtypes, (ctx.weight_needs_grad, ctx.bias_needs_grad))
        else:
            mean_in, rstd_in, mean_ratios, var_ratios, affine = ctx.small
            a, b, grad_mean_ratios, grad_var_ratios, *affine_grads = ctx.kernels.backward(
                [grad_scale, grad_shift, mean_in, rstd_in, mean_ratios, var_ratios, *affine, spec.positions])
            grad_weight = affine_grads.pop(0) if ctx.weight is not None else None
            grad_bias = affine_grads.pop(0) if ctx.dtypes[3] is not None else None
            grad_weight = grad_weight if ctx.weight_needs_grad else None
            grad_bias = grad_bias if ctx.bias_needs_grad else None
        grad_x = _input_gradient(x, grad_y, ctx.scale, a, b)
        return grad_x, None, None, grad_mean_ratios, grad_var_ratios, grad_weight, grad_bias


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
        return _affine(x, scale.detach(), shift.detach())

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
        a, b = input_gradient_factors(grad_mean, grad_var, moments[0].detach(), math.prod(x.shape[2:]), ctx.unbiased)
        grad_x = _input_gradient(x, grad_y, scale.detach(), a, b)
        leaf_grads = iter(grads[2:])
        return (grad_x, None, None) + tuple(
            next(leaf_grads) if t is not None and t.requires_grad else None for t in leaves)
