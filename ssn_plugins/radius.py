"""The SparsestMax radius schedule, usable from any training loop."""
import math
import warnings
from typing import Dict, List

import torch
import torch.distributed as dist
from torch import nn

from .layers.sparse_switch_norm import RATIO_VECTORS, SparseSwitchNorm, precompute_ratios, read_selection_flags
from .layers.switch_norm import RATIO_PARAMETERS, _Synchronized
from .sparsestmax import check_radius

__all__ = ["set_radius", "RadiusScheduler", "check_schedule", "sparse_layers", "precompute_ratios",
           "batched_ratios", "reopen_selections"]


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
    dtype and candidate count (:func:`precompute_ratios`), and the layers use
    that same projection in the next forward (until the logits change), so
    selection and forward agree in every dtype and SparsestMax runs once per
    iteration. Two host synchronisations per device in all (one reads the
    flag buffers, :func:`read_selection_flags`; one the projections), and in
    a distributed run with synchronised layers one all-reduce that checks the
    selections agree across processes (it raises naming the layers that differ). Fixed
    logits are reset to their exact one-hot values (an optimizer's momentum
    may have nudged them).

    Args:
        model: any module; layers other than :class:`SparseSwitchNorm` are ignored.
        radius: a finite number ``>= 0``.

    Layers with an open selection whose ratio logits do not require
    gradients (frozen stages) are left as they are, radius included, with a
    warning: their logits never move, so the schedule could only select by a
    tie-break. :func:`~ssn_plugins.convert_norm` fixes a frozen BatchNorm's
    replacement on BN, so converted frozen stages keep their pretrained BN.

    Returns:
        ``{"layers": number of SSN layers, "fixed": fixed ratio vectors,
        "newly_fixed": vectors fixed by this call, "frozen_open": layers left
        out as frozen}`` (two vectors per layer).

    Raises:
        ValueError: on a bad radius, or when an open layer's ratio logits are
            not finite (a diverged run), naming the layer.
    """
    radius = check_radius(float(radius), "set_radius")
    all_layers = sparse_layers(model)
    with torch.no_grad():
        read_selection_flags(all_layers)
    # Logits that cannot train never move, so a growing radius would decide their selection by its tie-break
    # (uniform logits go to IN), not by training: such layers keep the ratios they were loaded with.
    frozen = [layer for layer in all_layers if layer.open_vectors() and not _trainable_logits(layer)]
    frozen_ids = {id(layer) for layer in frozen}
    layers = [layer for layer in all_layers if id(layer) not in frozen_ids]
    if frozen:
        warnings.warn(f"set_radius: {len(frozen)} SSN layers have an open selection but ratio logits that do not "
                      f"train (a frozen stage: FREEZE_AT, frozen_stages, requires_grad=False); they keep their "
                      f"loaded ratios and radius. Load weights with fixed selections, or fix them "
                      f"(layer.fix('mean', 'BN'); layer.fix('var', 'BN')) to keep a pretrained BN", stacklevel=2)
    with torch.no_grad():
        for layer in all_layers:
            layer.mark_scheduled()
        for layer in layers:
            layer.radius.fill_(radius)
            layer.snap_fixed_logits()
    projected = precompute_ratios(layers)  # with gradients when enabled: the next forward's ratios
    entries = list(projected.items())
    newly_fixed = 0
    if entries:
        with torch.no_grad():
            names = {id(m): name for name, m in model.named_modules()}
            layer_of = {id(m): m for m in layers}
            by_group = {}  # the groups of precompute_ratios' batched calls
            for (layer_id, v), ratios in entries:
                logits = layer_of[layer_id].ratio_logits(v)
                by_group.setdefault((logits.device, logits.dtype, logits.shape[0]), []).append(((layer_id, v), ratios))
            for group in by_group.values():
                ratios = torch.stack([r.detach() for _, r in group])
                logits = torch.stack([layer_of[key[0]].ratio_logits(key[1]) for key, _ in group])
                flags = torch.stack([((ratios > 0).sum(-1) == 1).long(), ratios.argmax(-1),
                                     torch.isfinite(logits).all(-1).long()], -1)
                fixed_here = 0
                for ((layer_id, v), _), (is_one_hot, index, finite) in zip(group, flags.tolist()):
                    layer = layer_of[layer_id]
                    if not finite:
                        raise ValueError(f"SSN layer {names.get(layer_id) or type(layer).__name__!r}: ratio logits "
                                         f"{RATIO_PARAMETERS[v]} are not finite ({layer.ratio_logits(v).tolist()}); "
                                         f"the training diverged (lower the learning rate or check the loss)")
                    if is_one_hot:
                        layer.fix(RATIO_VECTORS[v], layer.candidates[index])
                        fixed_here += 1
                if fixed_here:
                    # the group's projection was one batched call that read the newly fixed logits, which must
                    # get no gradient from now on: its other layers project again in the forward
                    for (layer_id, _), _ in group:
                        layer_of[layer_id].forget_ratios()
                newly_fixed += fixed_here
    _check_selections_agree(model, all_layers)
    fixed = sum(2 - len(layer.open_vectors()) for layer in all_layers)
    return {"layers": len(all_layers), "fixed": fixed, "newly_fixed": newly_fixed, "frozen_open": len(frozen)}


def _check_selections_agree(model: nn.Module, layers: List[SparseSwitchNorm]) -> None:
    """Raise when synchronised layers select differently across processes (their collectives would not match).

    Under DDP the ratio logits stay identical everywhere, and so do the selections; logits that diverged (no
    DDP, a checkpoint loaded on one process only) would leave one process waiting in an all-reduce the other
    never makes. One all-reduce, only in a distributed run with synchronised layers.
    """
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
            and any(isinstance(layer, _Synchronized) for layer in layers)):
        return
    codes = torch.tensor([-1 if index is None else index for layer in layers for index in layer._selected],
                         dtype=torch.long, device=layers[0].radius.device)
    extremes = torch.stack([codes, -codes])
    dist.all_reduce(extremes, op=dist.ReduceOp.MAX)
    differ = (extremes[0] != -extremes[1]).reshape(-1, 2).any(-1).tolist()
    if any(differ):
        names = {id(m): name for name, m in model.named_modules()}
        shown = [f"{names.get(id(layer), '?')} {layer.selection} here" for layer, d in zip(layers, differ) if d]
        raise RuntimeError(f"set_radius: {sum(differ)} SSN layers select differently across processes "
                           f"({'; '.join(shown[:3])}{', ...' if len(shown) > 3 else ''}); their synchronised "
                           f"statistics would stop matching. Train under DDP (it keeps the ratio logits identical) "
                           f"and load checkpoints on every process (or broadcast them before the first forward)")


def _trainable_logits(layer: SparseSwitchNorm) -> bool:
    return any(layer.ratio_logits(v).requires_grad for v in layer.open_vectors())


def _precompute_hook(model: nn.Module, args) -> None:
    # A module-level function (not a closure over a layer list) so that a model with the hook can be
    # pickled, and a deep copy's hook works on the copy's own layers. A compiled forward projects each
    # layer's ratios in its own graph (fused by the compiler), which the cache below cannot enter.
    if not torch.compiler.is_compiling():
        precompute_ratios(sparse_layers(model), only_stale=True)  # set_radius's projection serves as it is


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


def check_schedule(start_iter: int, end_iter: int, max_radius: float) -> None:
    """The checks of :class:`RadiusScheduler`'s arguments, for a schedule configured before its model exists."""
    if not 0 <= start_iter < end_iter:
        raise ValueError(f"need 0 <= start_iter < end_iter, got start_iter={start_iter}, end_iter={end_iter}")
    if not math.isfinite(max_radius) or max_radius < 0:
        raise ValueError(f"max_radius must be a finite number >= 0, got {max_radius}")


class RadiusScheduler:
    """Maps the global iteration to the SparsestMax radius and applies it.

    ``radius(t) = max_radius * clamp((t - start_iter) / (total_iters - start_iter), 0, 1)``:
    by default ``t / total_iters`` as in the paper (``total_iters`` is the
    iteration at which the radius reaches ``max_radius``; the adapters' ``END_ITER`` /
    ``end_iter`` settings pass it), so with three candidates
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

    def __init__(self, model: nn.Module, total_iters: int, start_iter: int = 0, max_radius: float = 1.0) -> None:
        check_schedule(start_iter, total_iters, max_radius)
        self.model = model
        self._hook = batched_ratios(model)  # None when the model already had it (a second scheduler)
        self.start_iter = start_iter
        self.total_iters = total_iters
        self.max_radius = max_radius

    def remove(self) -> None:
        """Remove the batched-projection hook this scheduler installed (the layers keep their radius)."""
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def radius_at(self, iteration: int) -> float:
        """The radius for global iteration ``iteration``."""
        progress = (iteration - self.start_iter) / (self.total_iters - self.start_iter)
        return self.max_radius * min(max(progress, 0.0), 1.0)

    def step(self, iteration: int) -> Dict[str, float]:
        """Apply the radius of ``iteration`` to the model; returns :func:`set_radius`'s counts and the radius."""
        radius = self.radius_at(iteration)
        return {"radius": radius, **set_radius(self.model, radius)}
