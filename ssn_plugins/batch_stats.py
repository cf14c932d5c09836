"""Batch-average inference statistics (the SN paper's recommended inference mode)."""
import itertools
import logging
from typing import Any, Callable, Dict, Iterable, List, Optional

import torch
import torch.distributed as dist
from torch import nn

from .functional import batch_moments
from .layers.channel_equilibrium import ChannelEquilibrium
from .layers.switch_norm import SwitchNorm

__all__ = ["recompute_batch_statistics", "layers_with_batch_statistics", "average_statistics_across_processes",
           "BATCH_AVERAGE_BATCHES"]

#: how many training batches a batch average takes by default (the SN paper: about 200 iterations)
BATCH_AVERAGE_BATCHES = 200

logger = logging.getLogger(__name__)


def layers_with_batch_statistics(model: nn.Module) -> List[nn.Module]:
    """The SN/SSN layers with a BN candidate and the ``torch.nn`` BatchNorm layers that track running statistics."""
    return [m for m in model.modules()
            if isinstance(m, (SwitchNorm, nn.modules.batchnorm._BatchNorm))
            and getattr(m, "running_mean", None) is not None]


def _default_forward(model: nn.Module, batch: Any) -> Any:
    return model(batch)


def _saw_data(seen: dict, index: int):
    def hook(module, args):
        x = args[0] if args else None
        if isinstance(x, torch.Tensor) and (x.shape[0] > 0 or getattr(module, "_process_group", lambda: None)()):
            seen[index] = True
    return hook


_END = object()


def _synchronised(module: nn.Module) -> bool:
    return isinstance(module, nn.SyncBatchNorm) or getattr(module, "_process_group", lambda: None)() is not None


def _batch_agreement(layers: List[nn.Module]) -> Callable[[bool], bool]:
    """``agree(have_batch)``: whether every process has a batch, where synchronised layers need them all.

    Their forwards are collectives: a process that ran one batch more would wait for (or, with gloo, garble)
    the others'. Elsewhere each process goes on alone (``agree`` is ``have_batch``).
    """
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
            and any(_synchronised(m) for m in layers)):
        return lambda have_batch: have_batch
    device = layers[0].running_mean.device

    def agree(have_batch: bool) -> bool:
        flag = torch.tensor([int(have_batch)], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return bool(flag.item())
    return agree


@torch.no_grad()
def recompute_batch_statistics(
    model: nn.Module,
    batches: Iterable[Any],
    num_batches: Optional[int] = None,
    forward: Callable[[nn.Module, Any], Any] = _default_forward,
    frozen: Iterable[nn.Module] = (),
    pool_across_processes: bool = True,
) -> int:
    """Set BN running statistics to their average over ``num_batches`` training batches.

    Every SN/SSN layer with a BN candidate, and every ``torch.nn`` BatchNorm,
    gets ``running_mean = mean_b(m_b)`` and ``running_var = mean_b(v_b + m_b²) −
    running_mean²``, where ``m_b`` and ``v_b`` are the statistics batch ``b``
    would have written into the running buffers (for SN/SSN and BatchNorm the
    unbiased variance; with ``official_compat`` the authors' variance). The
    model runs in training mode without gradients (the batch statistics are
    what BN uses in training); parameters do not change. Afterwards every
    module's own training mode, the momenta and ``num_batches_tracked`` are as
    before, and Channel Equilibrium's running estimates are put back (they are
    not batch averages). Synchronised layers average over all processes, and
    in a distributed run every layer's averages are then pooled over the
    processes (:func:`average_statistics_across_processes`), so that
    evaluation sees one model everywhere; the call is then a collective that
    every process must make (``pool_across_processes=False`` keeps each
    process's own averages).

    A batch in which a layer sees no sample (``N = 0``, as detectron2's mask
    head can) does not count for that layer; a layer that sees none at all
    keeps its statistics, with a warning, and adds nothing to the pooling
    (processes are weighted by the batches each layer counted). With
    synchronised layers every process runs as many batches as the one with
    the fewest (a warning says so where that cuts a loader short), as their
    forwards are collectives. If the loader or a forward fails
    midway, every statistic is put back as it was.

    Frozen normalization keeps its statistics and normalizes with them: the
    layers that are in eval mode while ``model`` is in training mode, the
    layers that stay in eval mode when the model is put in training mode
    (OpenMMLab's ``norm_eval``, frozen stages), and the modules in ``frozen``.

    Args:
        model: any module.
        batches: an iterable of inputs (e.g. a training data loader).
        num_batches: how many to use (the paper: about 200 iterations,
            :data:`BATCH_AVERAGE_BATCHES`); all if ``None``.
        forward: ``forward(model, batch)`` runs one batch; the default is ``model(batch)``.
        frozen: modules whose normalization layers keep their statistics.
        pool_across_processes: pool the averages over the default process
            group when one is initialised.

    Returns:
        The number of batches used.
    """
    modes = [(m, m.training) for m in model.modules()]
    if not model.training:
        model.train()  # layers that stay in eval (norm_eval, freeze()) keep their statistics
    for m in frozen:
        m.eval()
    layers = [m for m in layers_with_batch_statistics(model) if m.training]
    equilibrium = [m for m in model.modules() if isinstance(m, ChannelEquilibrium)]
    equilibrium_state = [[b.clone() for b in m.buffers()] for m in equilibrium]
    if not layers:
        for m, mode in modes:
            m.training = mode
        logger.warning("recompute_batch_statistics: the model has no BN / SN / SSN layer with running statistics "
                       "in training mode; nothing to recompute")
        return 0
    saved = [(m.momentum, m.num_batches_tracked.clone() if m.num_batches_tracked is not None else None,
              m.running_mean.clone(), m.running_var.clone()) for m in layers]
    sums = [[torch.zeros_like(m.running_mean), torch.zeros_like(m.running_var)] for m in layers]
    counts = [0] * len(layers)
    seen = {}
    handles = [m.register_forward_pre_hook(_saw_data(seen, i)) for i, m in enumerate(layers)]
    used = 0
    finished = False
    try:
        for m in layers:
            # With momentum 1 the running buffers hold exactly the last batch's statistics.
            m.momentum = 1.0
        iterator = iter(batches if num_batches is None else itertools.islice(batches, num_batches))
        agree = _batch_agreement(layers)
        while True:
            batch = next(iterator, _END)
            if not agree(batch is not _END):
                if batch is not _END:
                    logger.warning("recompute_batch_statistics: another process ran out of batches after %d; the "
                                   "synchronised layers need every process in each batch, so every process stops "
                                   "there", used)
                break
            seen.clear()
            forward(model, batch)
            for i, ((mean_sum, second_moment_sum), m) in enumerate(zip(sums, layers)):
                if seen.get(i):
                    mean_sum += m.running_mean
                    second_moment_sum += m.running_var + m.running_mean ** 2
                    counts[i] += 1
            used += 1
        finished = used > 0
    finally:
        for handle in handles:
            handle.remove()
        for m, (momentum, tracked, running_mean, running_var), count in zip(layers, saved, counts):
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)
            if not finished or count == 0:  # an error, no batch, or no sample for this layer: as it was
                m.running_mean.copy_(running_mean)
                m.running_var.copy_(running_var)
        for m, state in zip(equilibrium, equilibrium_state):
            for buffer, value in zip(m.buffers(), state):
                buffer.copy_(value)
        for m, mode in modes:
            m.training = mode
    if used == 0:
        raise ValueError("recompute_batch_statistics got no batches; running statistics are unchanged")
    if num_batches is not None and used < num_batches:
        logger.warning("recompute_batch_statistics: asked for %d batches, the iterable held %d", num_batches, used)
    unseen = sum(count == 0 for count in counts)
    if unseen:
        logger.warning("recompute_batch_statistics: %d of %d layers saw no sample in %d batches and keep their "
                       "statistics", unseen, len(layers), used)
    for (mean_sum, second_moment_sum), m, count in zip(sums, layers, counts):
        if count:
            mean = mean_sum / count
            m.running_mean.copy_(mean)
            m.running_var.copy_(torch.clamp(second_moment_sum / count - mean ** 2, min=0))
    if pool_across_processes:
        average_statistics_across_processes(model, {id(m): count for m, count in zip(layers, counts)})
    return used


@torch.no_grad()
def average_statistics_across_processes(model: nn.Module, batch_counts: Optional[Dict[int, int]] = None) -> int:
    """Give every process the running statistics of all processes pooled (after :func:`recompute_batch_statistics`).

    Each process computed its statistics from its own batches; this sets
    ``running_mean`` to the mean over processes and ``running_var`` to the
    pooled variance ``mean_p(var_p + mean_p²) − running_mean²``, so evaluation
    sees one model everywhere. ``batch_counts`` (``{id(layer): batches}``, as
    :func:`recompute_batch_statistics` passes it) weights each process by the
    batches its layer averaged: a process whose layer saw no sample adds
    nothing, and a layer no process saw keeps each process's statistics. A
    layer missing from it weighs 1 on every process. A no-op (returning 1)
    outside a process group; otherwise a collective that every process must
    call. Returns the number of processes.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return 1
    layers = layers_with_batch_statistics(model)
    if layers:
        # one row per process, every layer's channels side by side: batch_moments pools rows across the
        # group exactly so (float64 sums of w * mean, w * (var + mean²) and w, one all-reduce)
        counts = batch_counts or {}
        means = torch.cat([m.running_mean for m in layers])[None]
        variances = torch.cat([m.running_var for m in layers])[None]
        weights = torch.cat([torch.full_like(m.running_mean, float(counts.get(id(m), 1)), dtype=torch.float64)
                             for m in layers])[None]
        mean, var, total = batch_moments(means, variances, process_group=dist.group.WORLD, weights=weights)
        sizes = [m.num_features for m in layers]
        seen = torch.stack([t[0] for t in total.split(sizes)]).gt(0).tolist()  # (one host sync)
        for m, layer_mean, layer_var, layer_seen in zip(layers, mean.split(sizes), var.split(sizes), seen):
            if layer_seen:
                m.running_mean.copy_(layer_mean)
                m.running_var.copy_(layer_var)
    return dist.get_world_size()
