"""The ``(N, C)``-sized chain of the fused eager-training Function: from the instance moments to the per-map affine
factors, and its hand-written derivative back to the input-gradient factors and the parameters' gradients.

The same two functions run eagerly (where no compiler is at hand, or ``SSN_PLUGINS_COMPILE=0``) or, traced with
symbolic sizes, as one inductor kernel each (:mod:`._compiled`): on small maps the chain's fifty-odd operations
forward and fifty-five backward are the layer's whole cost when each pays its dispatch.
"""
from typing import NamedTuple, Optional, Tuple

import torch
from torch import Tensor

from . import _compiled
from ._native_kernels import _same_dtype
from .moments import _CallSpec, _candidate_moments, _matmul_outside_autocast, _scale_shift, _variance_from_rstd


def forward_chain(mean_in: Tensor, var_in: Tensor, mean_ratios: Tensor, var_ratios: Tensor, weight: Optional[Tensor],
                  bias: Optional[Tensor], spec: _CallSpec, stacked: bool = True):
    """``(scale, shift, batch_bn, saved)``: the affine factors per ``(n, c)``, this batch's BN statistics (see
    :func:`~.moments._candidate_moments`) and what :func:`backward_chain` reads. ``stacked``: as for
    :func:`~.moments._scale_shift` (eagerly, fewer operations; compiled, fewer calls without it)."""
    moments, batch_bn = _candidate_moments(mean_in, var_in, spec)
    scale, shift, mean, rstd, means, variances = _scale_shift(moments, mean_ratios, var_ratios, weight, bias, spec,
                                                              mean_in.shape, stacked)
    return scale, shift, batch_bn, (mean_in, moments, mean, rstd, scale, means, variances)


def input_gradient_factors(grad_mean_in: Tensor, grad_var_in: Tensor, mean_in: Tensor, positions,
                           unbiased: bool) -> Tuple[Tensor, Tensor]:
    """``(a, b)`` with ``grad_x = x * a + b + grad_y * scale`` per ``(n, c)``, from the instance moments' gradients.

    ``d mean_in / dx = 1/|S|`` and ``d var_in / dx = 2 (x - mean_in) / |S|`` (``|S| - 1`` when unbiased).
    ``positions`` (``|S|``) may be symbolic.
    """
    n, c = mean_in.shape
    a = (grad_var_in * (2.0 / (positions - 1 if unbiased else positions))).expand(n, c)
    b = torch.addcmul(grad_mean_in * (1.0 / positions), a, mean_in, value=-1)
    return a, b


def backward_chain(grad_scale: Tensor, grad_shift: Tensor, saved, ratios, weight: Optional[Tensor], spec: _CallSpec,
                   unbiased: bool, positions, dtypes, wants: Tuple[bool, bool]):
    """``(a, b, grad_mean_ratios, grad_var_ratios, grad_weight, grad_bias)`` from the gradients of the affine factors.

    ``grad_scale`` / ``grad_shift`` are the output gradient's per-map sums (``sum_S(grad_y * x)``,
    ``sum_S(grad_y)``); ``(a, b)`` are :func:`input_gradient_factors`. ``ratios`` is ``(mean, var)``, each a
    sequence of per-candidate numbers (Python floats: then the scalar factors cost no operation) or 0-d tensors.
    ``dtypes`` are those of the mean ratios, var ratios, weight and bias; ``wants``: whether weight / bias need a
    gradient (``None`` otherwise). Training only, so BN is always the batch's, never the running constants.
    """
    mean_in, moments, mean, rstd, scale, means, variances = saved
    sd = mean_in.dtype
    # y = x * scale + shift, scale = weight * rstd, shift = bias - mean * scale, rstd = (var + eps)^-1/2
    grad_mean = torch.mul(scale, grad_shift).neg_()
    grad_scale_total = torch.addcmul(grad_scale, mean, grad_shift, value=-1)
    grad_var = torch.mul(grad_scale_total, rstd.pow(3)).mul_(-0.5)
    if weight is not None:
        grad_var.mul_(_same_dtype(weight, sd))
    # mean = mean_ratios @ means, var = var_ratios @ variances
    if means is not None:
        grad_mean_ratios = _matmul_outside_autocast(means, grad_mean.view(-1))
        grad_var_ratios = _matmul_outside_autocast(variances, grad_var.view(-1))
    else:
        grad_mean_ratios = torch.stack([(grad_mean * m).sum() for m, _ in moments])
        grad_var_ratios = torch.stack([(grad_var * v).sum() for _, v in moments])
    # Each candidate from the instance moments pooled over one dim of a view (its descriptor's), with
    # mean_k = avg(mean_in) and var_k = avg(var_in) + avg((mean_in - mean_k)²); IN is the moments themselves.
    w, u = ratios
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
    a, b = input_gradient_factors(grad_mean_in, grad_var_in, mean_in, positions, unbiased)
    mean_dtype, var_dtype, weight_dtype, bias_dtype = dtypes
    grad_weight = _same_dtype((grad_scale_total * rstd).sum(0), weight_dtype) if wants[0] else None
    grad_bias = _same_dtype(grad_shift.sum(0), bias_dtype) if wants[1] else None
    return (a, b, _same_dtype(grad_mean_ratios, mean_dtype), _same_dtype(grad_var_ratios, var_dtype), grad_weight,
            grad_bias)


class ChainKernels(NamedTuple):
    """A family's two compiled chains; each takes a list of tensors and ints and returns a sequence of tensors.

    ``forward([mean_in, rstd_in, mean_ratios, var_ratios, *affine, positions])`` gives
    ``[scale, shift, *bn_mean_var]``; ``backward([grad_scale, grad_shift, mean_in, rstd_in, mean_ratios,
    var_ratios, *affine, positions])`` gives ``[a, b, grad_mean_ratios, grad_var_ratios, *affine_grads]``
    (``affine``: the weight and bias that are not ``None``).
    """
    forward: object
    backward: object


def compiled_chain(spec: _CallSpec, unbiased: bool, mean_in: Tensor, mean_ratios: Tensor, var_ratios: Tensor,
                   weight: Optional[Tensor], bias: Optional[Tensor]) -> Optional[ChainKernels]:
    """The compiled chains for this call's family, or ``None`` where the chain runs eagerly (:mod:`._compiled`)."""
    key = (spec.candidates, spec.batch_bn, spec.eps, unbiased, mean_in.device, mean_in.dtype,
           mean_ratios.dtype, var_ratios.dtype, None if weight is None else weight.dtype,
           None if bias is None else bias.dtype)
    return _compiled.family_kernels(key, lambda: _build_kernels(key, spec), lambda: _family_name(key))


def _family_name(key) -> str:
    candidates, _, eps, unbiased, device, stats_dtype = key[:6]
    return (f"the (N, C)-sized statistics of SwitchNorm layers ({'+'.join(kind.name for kind in candidates)}, "
            f"{device.type}, {str(stats_dtype).replace('torch.', '')}{', unbiased IN variance' if unbiased else ''})")


def _chain_functions(key, spec: _CallSpec):
    """The forward and backward chains as functions of the flat argument lists of :class:`ChainKernels`."""
    candidates, batch_bn, eps, unbiased, _, _, mean_dtype, var_dtype, weight_dtype, bias_dtype = key
    has_weight, has_bias = weight_dtype is not None, bias_dtype is not None
    spec = _CallSpec(candidates, batch_bn, None, None, False, 0.0, False, None, spec.positions, eps)
    dtypes = (mean_dtype, var_dtype, weight_dtype, bias_dtype)

    def affine(rest):
        weight = rest[0] if has_weight else None
        bias = rest[int(has_weight)] if has_bias else None
        return weight, bias, rest[-1]

    def forward(mean_in, rstd_in, mean_ratios, var_ratios, *rest):
        weight, bias, positions = affine(rest)
        var_in = _variance_from_rstd(rstd_in, positions, unbiased)
        scale, shift, bn, _ = forward_chain(mean_in, var_in, mean_ratios, var_ratios, weight, bias, spec, False)
        outputs = [scale, shift]
        if bn is not None:
            outputs += [bn[0], bn[1]]
        return tuple(outputs)

    def backward(grad_scale, grad_shift, mean_in, rstd_in, mean_ratios, var_ratios, *rest):
        weight, bias, positions = affine(rest)
        var_in = _variance_from_rstd(rstd_in, positions, unbiased)
        saved = forward_chain(mean_in, var_in, mean_ratios, var_ratios, weight, bias, spec, False)[3]
        grads = backward_chain(grad_scale, grad_shift, saved, (mean_ratios.unbind(0), var_ratios.unbind(0)), weight,
                               spec, unbiased, positions, dtypes, (has_weight, has_bias))
        return tuple(g for g in grads if g is not None)

    return forward, backward


def _example_inputs(key, n: int, c: int, positions: int, seed: int):
    """Random arguments of the backward chain (the forward's are its third onwards) for ``(n, c)`` moments."""
    candidates, _, _, _, device, stats_dtype, mean_dtype, var_dtype, weight_dtype, bias_dtype = key
    g = torch.Generator().manual_seed(seed)
    k = len(candidates)

    def rand(*shape, dtype=stats_dtype, low=0.5):
        return (torch.rand(shape, generator=g, dtype=torch.float64) + low).to(device=device, dtype=dtype)

    args = [rand(n, c, low=-0.5), rand(n, c, low=-0.5), rand(n, c, low=-0.5), rand(n, c),
            torch.softmax(rand(k), 0).to(mean_dtype), torch.softmax(rand(k), 0).to(var_dtype)]
    args += [rand(c, dtype=d) for d in (weight_dtype, bias_dtype) if d is not None]
    return args + [positions]


def _groups(key) -> int:
    return next((kind.groups for kind in key[0] if kind.groups), 1)


def _build_kernels(key, spec: _CallSpec) -> ChainKernels:
    """Compile both chains of ``key``'s family, and check them against the eager chains on inputs of other shapes."""
    forward, backward = _chain_functions(key, spec)
    device_type = key[4].type
    groups = _groups(key)
    # sizes that are neither 0, 1 nor equal to one another, so that tracing keeps every one symbolic
    example = _example_inputs(key, 5, 7 * groups, 13, seed=0)
    kernels = ChainKernels(_compiled.compile_function(forward, example[2:], device_type),
                           _compiled.compile_function(backward, example, device_type))
    for n, c, positions in ((3, 11 * groups, 2), (1, groups, 9), (2, 2 * groups, 1)):
        if key[3] and positions == 1:
            continue  # the unbiased IN variance divides by |S| - 1
        args = _example_inputs(key, n, c, positions, seed=n)
        for compiled, eager, inputs in ((kernels.forward, forward, args[2:]), (kernels.backward, backward, args)):
            expected = eager(*inputs)
            got = compiled(list(inputs))
            if len(got) != len(expected):
                raise RuntimeError(f"the compiled chain returned {len(got)} tensors instead of {len(expected)}")
            for a, b in zip(got, expected):
                tolerance = {torch.float64: 1e-9, torch.float32: 1e-4}.get(b.dtype, 2e-2)
                torch.testing.assert_close(a, b, rtol=tolerance, atol=tolerance)
    return kernels

