"""The SparsestMax radius schedule, usable from any training loop."""
import math
from typing import Dict, List, Optional

import torch
from torch import nn

from .layers.sparse_switch_norm import SparseSwitchNorm
from .layers.switch_norm import RATIO_PARAMETERS
from .sparsestmax import check_radius, sparsestmax

__all__ = ["set_radius", "RadiusScheduler", "sparse_layers", "precompute_ratios", "batched_ratios",
           "reopen_selections"]


def sparse_layers(model: nn.Module) -> List[SparseSwitchNorm]:
    """Every :class:`SparseSwitchNorm` in ``model``, in ``model.modules()`` order."""
    return [m for m in model.modules() if isinstance(m, SparseSwitchNorm)]


def reopen_selections(model: nn.Module, prior: float = 0.0) -> int:
    """Re-open the fixed selections of every SSN layer whose ratio logits train (to select again when finetuning).

    See :meth:`SparseSwitchNorm.reopen_selection`. Layers whose logits do not
    require gradients (frozen stages: ``FREEZE_AT``, ``frozen_stages``,
    ``requires_grad=False``) keep their selection: re-opened, they could never
    select again and would compute uniform mixtures instead. Returns how many
    layers were re-opened.
    """
    reopened = 0
    for layer in sparse_layers(model):
        if layer.mean_weight.requires_grad or layer.var_weight.requires_grad:
            layer.reopen_selection(prior)
            reopened += 1
    return reopened


def set_radius(model: nn.Module, radius: float) -> Dict[str, int]:
    """Set the SparsestMax radius of every SSN layer and fix the ratios that became one-hot.

    All open ratio vectors are projected in one batched call per device,
    dtype and candidate count, with the same logits, radius buffer and
    arithmetic as the forward pass (so both agree on every selection in every
    dtype), with two host synchronisations per device in all (one reads the
    flag buffers, see :meth:`SparseSwitchNorm.fix`; one the projections).
    Fixed logits are reset to their exact one-hot values (an optimizer's
    momentum may have nudged them).

    Args:
        model: any module; layers other than :class:`SparseSwitchNorm` are ignored.
        radius: a finite number ``>= 0``.

    Returns:
        ``{"layers": number of SSN layers, "fixed": fixed ratio vectors,
        "newly_fixed": vectors fixed by this call}`` (two vectors per layer).

    Raises:
        ValueError: on a bad radius, or when an open layer's ratio logits are
            not finite (a diverged run), naming the layer.
    """
    radius = check_radius(float(radius), "set_radius")
    names = {id(m): name for name, m in model.named_modules()}
    layers = sparse_layers(model)
    open_vectors = {}  # (device, dtype, K) -> [(layer, vector index)]
    with torch.no_grad():
        _read_flags(layers)
        for layer in layers:
            layer.radius.fill_(radius)
            for v, index in enumerate(layer._selected):
                if index is None:
                    logits = layer._logits(v)
                    open_vectors.setdefault((logits.device, logits.dtype, logits.shape[0]), []).append((layer, v))
                else:
                    layer._logits(v).copy_(layer._one_hot(index))
        found = []
        for entries in open_vectors.values():
            logits = torch.stack([layer._logits(v) for layer, v in entries])
            ratios = sparsestmax(logits, torch.stack([layer.radius for layer, _ in entries]))
            one_hot = (ratios > 0).sum(-1) == 1
            finite = torch.isfinite(logits).all(-1)
            found.append((entries, torch.stack([one_hot.long(), ratios.argmax(-1), finite.long()], -1)))
        newly_fixed = 0
        for entries, flags in found:
            for (layer, v), (is_one_hot, index, finite) in zip(entries, flags.tolist()):
                if not finite:
                    vector = RATIO_PARAMETERS[v]
                    raise ValueError(f"SSN layer {names.get(id(layer)) or type(layer).__name__!r}: ratio logits "
                                     f"{vector} are not finite ({layer._logits(v).tolist()}); the training "
                                     f"diverged (lower the learning rate or check the loss)")
                if is_one_hot:
                    layer.fix(("mean", "var")[v], layer.candidates[index])
                    newly_fixed += 1
    fixed = sum(index is not None for layer in layers for index in layer._selected)
    return {"layers": len(layers), "fixed": fixed, "newly_fixed": newly_fixed}


def _read_flags(layers: List[SparseSwitchNorm]) -> None:
    """Take flags written into the buffers directly (``m.mean_fixed.fill_(True)``) as selections: one read per device."""
    by_device = {}
    for layer in layers:
        if not layer.mean_fixed.is_meta:
            by_device.setdefault(layer.mean_fixed.device, []).append(layer)
    for group in by_device.values():
        rows = torch.stack([torch.stack([layer.mean_fixed.long(), layer.var_fixed.long(),
                                         layer.mean_weight.argmax(), layer.var_weight.argmax()]) for layer in group])
        for layer, (mean_flag, var_flag, mean_argmax, var_argmax) in zip(group, rows.tolist()):
            selected = [mean_argmax if mean_flag else None, var_argmax if var_flag else None]
            # a vector fixed on the host stays on its candidate (its logits are one-hot; momentum may nudge them)
            selected = [old if old is not None and new is not None else new
                        for old, new in zip(layer._selected, selected)]
            if selected != layer._selected:
                layer._apply_selection(selected)


def _release_precomputed(layer: SparseSwitchNorm):
    def release(grad):
        layer._precomputed = None
        return grad
    return release


def precompute_ratios(layers: List[SparseSwitchNorm]) -> None:
    """Project the open ratio vectors of all ``layers`` in one SparsestMax call per device, dtype and size.

    Each layer's :meth:`~SparseSwitchNorm.ratios` calls use its share
    (differentiably: gradients flow back to every layer's logits) while its
    logits and radius are unchanged. With gradients enabled the share is
    released once its gradient has been computed, so a later forward never
    reuses a graph that backward has freed; until then it also serves the
    re-computation of a non-reentrant ``torch.utils.checkpoint`` region, which
    must see the tensors the first forward used.
    """
    groups = {}
    for layer in layers:
        layer._precomputed = None
        for v, index in enumerate(layer._selected):
            if index is None:
                logits = layer._logits(v)
                key = (logits.device, logits.dtype, logits.shape[0])
                groups.setdefault(key, []).append((layer, v))
    results = {}
    for entries in groups.values():
        logits = torch.stack([layer._logits(v) for layer, v in entries])
        radii = torch.stack([layer.radius for layer, _ in entries])
        for (layer, v), ratios in zip(entries, sparsestmax(logits, radii).unbind(0)):
            results.setdefault(id(layer), [None, None])[v] = ratios
    for layer in layers:
        if id(layer) in results:
            ratios = results[id(layer)]
            for v, index in enumerate(layer._selected):
                if index is not None:
                    ratios[v] = layer._one_hot(index)
                elif ratios[v].requires_grad:
                    ratios[v].register_hook(_release_precomputed(layer))
            layer._precomputed = (layer._ratio_inputs_version(), tuple(ratios))


def _precompute_hook(model: nn.Module, args) -> None:
    # A module-level function (not a closure over a layer list) so that a model with the hook can be
    # pickled, and a deep copy's hook works on the copy's own layers. A compiled forward projects each
    # layer's ratios in its own graph (fused by the compiler), which the cache below cannot enter.
    if not torch.compiler.is_compiling():
        precompute_ratios(sparse_layers(model))


def batched_ratios(model: nn.Module):
    """Make ``model`` project all its SSN ratio vectors in one batched call per forward.

    Installs a forward pre-hook running :func:`precompute_ratios` on the SSN
    layers the model holds at each call. Without it every layer runs its own
    SparsestMax: the same numbers, but about a hundred small operations per
    layer instead of per model (on a GPU, as many kernel launches).
    :class:`RadiusScheduler` installs it (once per model). Returns the hook handle (``None`` when the model
    already has it).
    """
    for hook in model._forward_pre_hooks.values():
        if hook is _precompute_hook:
            return None
    return model.register_forward_pre_hook(_precompute_hook)


class RadiusScheduler:
    """Maps the global iteration to the SparsestMax radius and applies it.

    ``radius(t) = max_radius * clamp((t - start_iter) / (end_iter - start_iter), 0, 1)``:
    by default ``t / total_iters`` as in the paper, so with three candidates
    every layer is one-hot after about 82 % of training. It also makes the
    model project all ratios in one batched call per forward
    (:func:`batched_ratios`). It holds no iteration counter of its own: a
    resumed run passes its iteration and continues the schedule (the radius
    is also in every SSN layer's state). The model stays picklable and
    deep-copyable.

    Example::

        scheduler = RadiusScheduler(model, total_iters=90_000)
        for it in range(start_iter, 90_000):
            scheduler.step(it)
            ...train one iteration...
    """

    def __init__(self, model: nn.Module, total_iters: int, start_iter: int = 0,
                 end_iter: Optional[int] = None, max_radius: float = 1.0) -> None:
        end_iter = total_iters if end_iter is None else end_iter
        if not 0 <= start_iter < end_iter:
            raise ValueError(f"need 0 <= start_iter < end_iter, got start_iter={start_iter}, end_iter={end_iter}")
        if not math.isfinite(max_radius) or max_radius < 0:
            raise ValueError(f"max_radius must be a finite number >= 0, got {max_radius}")
        self.model = model
        batched_ratios(model)
        self.start_iter = start_iter
        self.end_iter = end_iter
        self.max_radius = max_radius

    def radius_at(self, iteration: int) -> float:
        """The radius for global iteration ``iteration``."""
        progress = (iteration - self.start_iter) / (self.end_iter - self.start_iter)
        return self.max_radius * min(max(progress, 0.0), 1.0)

    def step(self, iteration: int) -> Dict[str, float]:
        """Apply the radius of ``iteration`` to the model; returns :func:`set_radius`'s counts and the radius."""
        radius = self.radius_at(iteration)
        return {"radius": radius, **set_radius(self.model, radius)}
