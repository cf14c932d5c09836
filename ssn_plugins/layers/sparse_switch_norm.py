"""Sparse Switchable Normalization (Shao et al., CVPR 2019) as ``torch.nn`` modules."""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
from torch import Tensor

from ..functional import kind_of, native_kernel_takes, selected_norm
from ..recipe_checks import UNSCHEDULED_STEPS, warn_unscheduled
from ..sparsestmax import check_radius, sparsestmax
from .switch_norm import RATIO_PARAMETERS, SwitchNorm, SwitchNorm1d, SwitchNorm2d, SwitchNorm3d, _Synchronized

__all__ = [
    "SparseSwitchNorm", "SparseSwitchNorm1d", "SparseSwitchNorm2d", "SparseSwitchNorm3d",
    "SyncSparseSwitchNorm", "SyncSparseSwitchNorm1d", "SyncSparseSwitchNorm2d", "SyncSparseSwitchNorm3d",
    "precompute_ratios", "read_selection_flags", "RATIO_VECTORS",
]

#: the ratio vectors by name ("mean", "var"), in the order of RATIO_PARAMETERS
RATIO_VECTORS = tuple(name[:-len("_weight")] for name in RATIO_PARAMETERS)


def check_reopen_prior(prior: float, owner: str) -> float:
    """``prior`` of :meth:`SparseSwitchNorm.reopen_selection`, or a ValueError naming ``owner`` unless in ``[0, 1)``."""
    if not 0.0 <= prior < 1.0:
        raise ValueError(f"{owner}: prior must lie in [0, 1), got {prior}")
    return float(prior)


class SparseSwitchNorm(SwitchNorm):
    """:class:`SwitchNorm` whose ratios come from SparsestMax and end up one-hot.

    The ratios are ``sparsestmax(mean_weight, radius)`` and
    ``sparsestmax(var_weight, radius)``. The ``radius`` buffer is set each
    iteration by :func:`ssn_plugins.set_radius` (usually through
    :class:`ssn_plugins.RadiusScheduler`), which also *fixes* every ratio
    vector that has become one-hot: its logits are overwritten with the
    one-hot vector, ``mean_fixed`` / ``var_fixed`` is set and it receives no
    more gradient. Fixed selections are saved in checkpoints, so finetuning
    from a sparse model keeps them unless :meth:`reopen_selection` is called.

    Once both vectors are fixed the layer computes only what they select: a
    single candidate runs through PyTorch's native kernel (BN:
    ``F.batch_norm``, IN: ``F.instance_norm``, LN: ``F.group_norm(1)``),
    numerically equal to the general path; different candidates for mean and
    variance compute just those two.

    Takes the arguments of :class:`SwitchNorm` (with at least two candidates)
    plus ``radius`` (initial value, a finite number ``>= 0``; default 0:
    SparsestMax is then sparsemax). Buffers added: ``radius`` (0-d, float32
    even when the layer is cast to half precision, so the schedule keeps its
    resolution), ``mean_fixed``, ``var_fixed`` (0-d bool). The authors' layout
    (``(1,)`` shaped, ``long`` flags) loads too. Change a selection with
    :meth:`fix` and :meth:`reopen_selection`; flags written into the buffers
    directly (``m.mean_fixed.fill_(True)``, DDP's broadcast of rank 0's
    buffers) take effect at the next forward (a set flag fixes the vector on
    its largest logit, a cleared one re-opens it), and a state dict always
    saves the selection the layer runs with.

    Shape:
        - Input: ``(N, C, *S)``, as for :class:`SwitchNorm`
        - Output: same shape and dtype as the input

    Examples::

        >>> m = SparseSwitchNorm2d(64)
        >>> scheduler = RadiusScheduler(m, total_iters=1000)   # usually the whole model
        >>> scheduler.step(900)                                  # radius 0.9: every vector one-hot
        >>> m.selection                                          # e.g. ('BN', 'IN')
    """

    def __init__(self, num_features: int, *args, radius: float = 0.0, **kwargs) -> None:
        super().__init__(num_features, *args, **kwargs)
        name = type(self).__name__
        if len(self.candidates) < 2:
            raise ValueError(f"{name} needs at least 2 candidates to select from, got {list(self.candidates)}; "
                             f"a single normalizer is a plain norm layer")
        device = self.mean_weight.device
        self._initial_radius = check_radius(radius, name)
        self.register_buffer("radius", torch.tensor(float(radius), dtype=torch.float32, device=device))
        self.register_buffer("mean_fixed", torch.tensor(False, device=device))
        self.register_buffer("var_fixed", torch.tensor(False, device=device))
        # Host-side copy of the fixed selections (candidate index or None), so forward picks its path
        # without reading device memory; the flag buffers are read again when their version counters say
        # something wrote them (loading, DDP's broadcast from rank 0, a direct fill_).
        self._selected: List[Optional[int]] = [None, None]
        self._flags_read = self._flags_version()
        # Ratios projected ahead of the forward (use_ratios), with the version counters of the tensors
        # they came from: valid while those are unchanged.
        self._precomputed: Optional[tuple] = None

    def reset_parameters(self) -> None:
        """:meth:`SwitchNorm.reset_parameters`, plus the initial radius and open (unfixed) selections."""
        super().reset_parameters()
        with torch.no_grad():
            self.radius.fill_(self._initial_radius)
            self.mean_fixed.fill_(False)
            self.var_fixed.fill_(False)
        self._selected = [None, None]
        self._precomputed = None
        self._flags_read = self._flags_version()

    def _flags_version(self) -> tuple:
        return (self.mean_fixed.data_ptr(), self.mean_fixed._version, self.var_fixed.data_ptr(),
                self.var_fixed._version)

    def __getstate__(self):
        # The precomputed ratios carry this forward's autograd graph, which neither pickles nor deep-copies.
        state = dict(super().__getstate__())
        state["_precomputed"] = None
        return state

    def _apply(self, fn, recurse=True):
        # model.half() / .to(torch.bfloat16) would round the radius to 8 bits of mantissa (0.81 -> 0.809),
        # moving the schedule and the one-hot threshold; it stays float32 like the integer buffers stay.
        radius = self._buffers["radius"]
        result = super()._apply(fn, recurse)
        new = self._buffers["radius"]
        if new is not None and new.dtype in (torch.float16, torch.bfloat16):
            self._buffers["radius"] = (new.float() if radius.is_meta or new.is_meta
                                       else radius.to(device=new.device, dtype=torch.float32))
        return result

    # ---------------------------------------------------------------- selection
    @property
    def selection(self) -> Tuple[Optional[str], Optional[str]]:
        """The fixed candidate for the mean and for the variance (``None`` while still soft)."""
        return tuple(None if i is None else self.candidates[i] for i in self._selected)

    def open_vectors(self) -> Tuple[int, ...]:
        """The ratio vectors still soft: 0 (mean), 1 (variance), in the order of ``RATIO_PARAMETERS``."""
        return tuple(v for v, index in enumerate(self._selected) if index is None)

    def ratio_logits(self, vector: int) -> Tensor:
        """The logits parameter of ratio vector ``vector`` (0: ``mean_weight``, 1: ``var_weight``)."""
        return self.mean_weight if vector == 0 else self.var_weight

    def one_hot_logits(self, index: int, size: Optional[int] = None) -> Tensor:
        """A one-hot vector on candidate ``index`` (of ``size`` entries, default K), in the logits' dtype."""
        one_hot = torch.zeros(size or len(self.candidates), dtype=self.mean_weight.dtype,
                              device=self.mean_weight.device)
        one_hot[index] = 1.0  # a device-side fill: no host synchronisation
        return one_hot

    def snap_fixed_logits(self) -> None:
        """Reset fixed vectors' logits to their exact one-hot values (an optimizer's momentum may nudge them)."""
        with torch.no_grad():
            for v, index in enumerate(self._selected):
                if index is not None:
                    self.ratio_logits(v).copy_(self.one_hot_logits(index))

    def use_ratios(self, ratios: Sequence[Optional[Tensor]]) -> None:
        """Use ``ratios`` (a SparsestMax projection per open vector, ``None`` for fixed ones) in later forwards.

        They serve every :meth:`ratios` call while the logits, the radius and
        the selection are unchanged (an optimizer step, ``set_radius``, loading
        or ``.to()`` ends that), so a projection made once per iteration for
        all layers together (:func:`precompute_ratios`) is the forward's own.
        A projection that requires gradients is dropped once its gradient has
        been computed, so a later forward never reuses a graph that backward
        has freed; until then it also serves the re-computation of a
        non-reentrant ``torch.utils.checkpoint`` region.
        """
        ratios = [self.one_hot_logits(index) if index is not None else r
                  for r, index in zip(ratios, self._selected)]
        if any(r is None for r in ratios):
            raise ValueError(f"{type(self).__name__}.use_ratios: every open vector needs its projection")
        for r in ratios:
            if r.requires_grad:
                r.register_hook(self._drop_used_ratios)
        self._precomputed = (self._ratio_inputs_version(), tuple(ratios))

    def has_current_ratios(self) -> bool:
        """Whether the ratios given to :meth:`use_ratios` can serve a forward now.

        They must come from the current logits, radius and selection; and a
        projection made without gradients cannot serve a forward that trains
        the logits.
        """
        if self._precomputed is None or self._precomputed[0] != self._ratio_inputs_version():
            return False
        if not torch.is_grad_enabled() or any(r.requires_grad for r in self._precomputed[1]):
            return True
        return not any(self.ratio_logits(v).requires_grad for v in self.open_vectors())

    def forget_ratios(self) -> None:
        """Drop the ratios given to :meth:`use_ratios`: the next forward projects its own."""
        self._precomputed = None

    def _drop_used_ratios(self, grad: Tensor) -> Tensor:
        self.forget_ratios()
        return grad

    def fix(self, vector: str, candidate: str) -> None:
        """Fix the ``"mean"`` or ``"var"`` ratios on ``candidate`` (logits become one-hot)."""
        if vector not in RATIO_VECTORS:
            raise ValueError(f"{type(self).__name__}.fix: vector must be 'mean' or 'var', got {vector!r}")
        if candidate not in self.candidates:
            raise ValueError(f"{type(self).__name__}.fix: {candidate!r} is not a candidate of this layer; "
                             f"choose from {list(self.candidates)}")
        selected = list(self._selected)
        selected[RATIO_VECTORS.index(vector)] = self.candidates.index(candidate)
        self._apply_selection(selected)

    def reopen_selection(self, prior: float = 0.0) -> None:
        """Let fixed ratios train again (to re-select when finetuning a sparse model).

        A fixed vector's one-hot logits are a vertex of the simplex, where
        SparsestMax has a zero gradient and returns the vertex itself at every
        radius, so the next :func:`~ssn_plugins.set_radius` would fix it again
        at once. The logits therefore move off the vertex, to
        ``prior * (one_hot - 1/K)`` (centred on 0, like a new layer's, where
        float32 resolves small updates): ``prior = 0`` (default) starts the
        choice afresh from uniform ratios, as training from scratch does;
        ``0 < prior < 1`` starts it biased towards the old selection. The
        layer then trains its ratios until the new run's radius schedule fixes
        them again (start that schedule at a small radius: a radius beyond the
        point's distance from the centre pushes it outwards, towards the old
        choice, before the ratios have trained).
        """
        self._apply_selection([None, None], check_reopen_prior(prior, "reopen_selection"))

    def _refresh_selection(self) -> None:
        """Re-read the host-side selection from the buffers (after loading a checkpoint or editing a flag).

        A set flag fixes the vector on its largest logit (the logits become
        that one-hot vector, as :meth:`fix` leaves them).
        """
        if self.mean_fixed.is_meta or self.mean_weight.is_meta:
            return  # no values yet (meta device); read again once they are loaded
        flags, argmax = torch.stack([torch.stack([self.mean_fixed.long(), self.var_fixed.long()]),
                                     torch.stack([self.mean_weight.argmax(), self.var_weight.argmax()])]).tolist()
        self._selected = [None, None]  # the loaded logits of open vectors stay as loaded
        self._apply_selection([a if f else None for f, a in zip(flags, argmax)])

    def _apply_selection(self, selected: List[Optional[int]], prior: float = 0.0) -> None:
        """Take ``selected`` (candidate index or None per vector) as the selection, in the flag buffers too.

        The one place a selection changes (:meth:`fix`, :meth:`reopen_selection`,
        loading, flags read by ``set_radius``): fixed logits become one-hot, and a
        vector opened here moves off its vertex to ``prior * (one_hot - 1/K)``
        (its one-hot logits would be fixed again at once; see :meth:`reopen_selection`).
        """
        k = len(self.candidates)
        with torch.no_grad():
            for v, (old, index) in enumerate(zip(self._selected, selected)):
                if index is not None:
                    self.ratio_logits(v).copy_(self.one_hot_logits(index))
                elif old is not None:
                    self.ratio_logits(v).copy_((self.one_hot_logits(old) - 1.0 / k) * prior)
                getattr(self, f"{RATIO_VECTORS[v]}_fixed").fill_(index is not None)
        self._selected = list(selected)
        self._precomputed = None
        self._flags_read = self._flags_version()

    # ------------------------------------------------------------------- ratios
    def _ratio_inputs_version(self) -> tuple:
        """Changes whenever the logits or the radius are written or moved (optimizer steps, set_radius, loading,
        ``.to()``)."""
        return (self.mean_weight.data_ptr(), self.mean_weight._version, self.var_weight.data_ptr(),
                self.var_weight._version, self.radius.data_ptr(), self.radius._version, tuple(self._selected))

    def ratios(self) -> Tuple[Tensor, Tensor]:
        """``(mean_ratios, var_ratios)``: SparsestMax of the logits, or the fixed one-hot vectors."""
        # A compiled forward projects its own ratios: version counters are invisible to the compiler.
        if not torch.compiler.is_compiling() and self.has_current_ratios():
            return self._precomputed[1]
        self._precomputed = None
        mean_index, var_index = self._selected
        if mean_index is None and var_index is None:
            return tuple(sparsestmax(torch.stack([self.mean_weight, self.var_weight]), self.radius).unbind(0))
        return tuple(
            self.one_hot_logits(index) if index is not None else sparsestmax(self.ratio_logits(v), self.radius)
            for v, index in enumerate(self._selected))

    def _uses_batch_statistics(self) -> bool:
        if None in self._selected:
            return super()._uses_batch_statistics()
        return "BN" in self.selection

    def _tie_fixed_logits(self, t: Tensor) -> Tensor:
        """``t``, tied in a distributed training run to the logits, which take no part in the output.

        DDP expects a gradient for every parameter each step, so there the
        fixed logits are kept in the graph with a zero gradient (added to the
        cheapest tensor of the branch, times 0); elsewhere they get none (and
        an optimizer leaves them alone).
        """
        if not (self.training and torch.is_grad_enabled() and dist.is_available() and dist.is_initialized()):
            return t
        return torch.add(t, torch.dot(self.mean_weight, self.var_weight).to(t.dtype), alpha=0)

    def _can_run_native(self, candidate: str, x: Tensor) -> bool:
        """Whether ``candidate`` alone matches a native kernel under this layer's settings and dtypes."""
        batch = kind_of(candidate).batch_statistics
        tensors = [self.weight, self.bias] + ([self.running_mean, self.running_var] if batch else [])
        if not native_kernel_takes(x, tensors):
            return False
        if batch:
            # Synchronised statistics, and the authors' variance in training, need the general path.
            return not (self.training and (self._process_group() is not None or self.official_compat))
        return not self.official_compat

    def _native(self, x: Tensor, candidate: str) -> Tensor:
        """One selected candidate through PyTorch's own kernel (the fast path), the fixed logits tied."""
        statistics = self._running_statistics(kind_of(candidate).batch_statistics)
        if self.weight is None:  # affine=False: the output is the only tensor to tie the logits to
            return self._tie_fixed_logits(selected_norm(x, candidate, **statistics, training=self.training,
                                                        eps=self.eps))
        return selected_norm(x, candidate, **statistics, weight=self._tie_fixed_logits(self.weight), bias=self.bias,
                             training=self.training, eps=self.eps)

    # until set_radius marks the layer (mark_scheduled), its training forwards are counted (recipe_checks)
    _radius_scheduled = False
    _unscheduled_steps = 0

    def mark_scheduled(self) -> None:
        """Record that something sets this layer's radius (``set_radius`` calls it): no "no schedule" warning."""
        self._radius_scheduled = True

    def _note_training(self) -> None:
        super()._note_training()
        if self._radius_scheduled or self._unscheduled_steps >= UNSCHEDULED_STEPS:
            return
        if any(self.ratio_logits(v).requires_grad for v in self.open_vectors()):
            self._unscheduled_steps += 1
            if self._unscheduled_steps == UNSCHEDULED_STEPS:
                warn_unscheduled()

    def forward(self, x: Tensor) -> Tensor:
        self._check_input_dim(x)
        if not torch.compiler.is_compiling() and getattr(self, "_flags_read", None) != self._flags_version():
            # the flags were written behind the host-side selection: e.g. DDP broadcast rank 0's loaded
            # selection, which this process must run too (its collectives would not match otherwise)
            read_selection_flags([self])
        if self._is_training_step():
            self._note_training()
        mean_index, var_index = self._selected
        if mean_index is None and var_index is None:
            return self._normalize(x, *self.ratios(), self.candidates, self.weight)
        if mean_index == var_index and self._can_run_native(self.candidates[mean_index], x):
            return self._native(x, self.candidates[mean_index])
        if mean_index is None or var_index is None:  # one vector fixed: the mixture with its one-hot ratios
            mean_ratios, var_ratios = self.ratios()
            return self._normalize(x, self._tie_fixed_logits(mean_ratios), var_ratios, self.candidates, self.weight)
        # Both fixed on different candidates (or no native kernel): compute only the selected ones.
        used = sorted({mean_index, var_index})
        candidates = tuple(self.candidates[i] for i in used)
        mean_ratios = self._tie_fixed_logits(self.one_hot_logits(used.index(mean_index), len(used)))
        var_ratios = self.one_hot_logits(used.index(var_index), len(used))
        return self._normalize(x, mean_ratios, var_ratios, candidates, self.weight)

    def extra_repr(self) -> str:
        s = super().extra_repr()
        mean_sel, var_sel = self.selection
        if mean_sel is not None or var_sel is not None:
            s += f", selection=(mean: {mean_sel}, var: {var_sel})"
        return s

    # --------------------------------------------------------- checkpoint layout
    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # The authors store radius and the flags as (1,) tensors, the flags as long.
        for name in ("radius", "mean_fixed", "var_fixed"):
            key = prefix + name
            if key in state_dict and state_dict[key].shape == (1,):
                state_dict[key] = state_dict[key].reshape(())
        for name in ("mean_fixed", "var_fixed"):
            key = prefix + name
            if key in state_dict:
                state_dict[key] = state_dict[key].bool()
        radius = state_dict.get(prefix + "radius")
        if radius is not None and not radius.is_meta and not (torch.isfinite(radius).all() and (radius >= 0).all()):
            error_msgs.append(f"{prefix}radius must be a finite number >= 0, got {radius.tolist()} "
                              f"(a checkpoint of a diverged run?)")
            return
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        self._refresh_selection()

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        # Momentum can nudge fixed logits between two set_radius calls; the
        # checkpoint stores the exact one-hot vector, as the authors' files do.
        for v, index in enumerate(self._selected):
            if index is not None:
                destination[prefix + RATIO_PARAMETERS[v]] = self.one_hot_logits(index)
            # what is saved is what runs: the host-side selection, whatever was written into the flag buffers
            destination[prefix + f"{RATIO_VECTORS[v]}_fixed"] = torch.tensor(index is not None,
                                                                             device=self.radius.device)


def read_selection_flags(layers: Sequence[SparseSwitchNorm]) -> None:
    """Take flags written into the buffers directly (``m.mean_fixed.fill_(True)``, DDP's broadcast) as selections.

    One read per device for all ``layers``. A set flag fixes an open vector on
    its largest logit, a cleared one re-opens it; a vector fixed on the host
    stays on its candidate (its logits are one-hot, but momentum may nudge them,
    and a copy carries them as they were).
    """
    by_device = {}
    for layer in layers:
        if not layer.mean_fixed.is_meta:
            by_device.setdefault(layer.mean_fixed.device, []).append(layer)
    for group in by_device.values():
        rows = torch.stack([torch.stack([layer.mean_fixed.long(), layer.var_fixed.long(),
                                         layer.mean_weight.argmax(), layer.var_weight.argmax()]) for layer in group])
        for layer, (mean_flag, var_flag, mean_argmax, var_argmax) in zip(group, rows.tolist()):
            selected = [mean_argmax if mean_flag else None, var_argmax if var_flag else None]
            selected = [old if old is not None and new is not None else new
                        for old, new in zip(layer._selected, selected)]
            if selected != layer._selected:
                layer._apply_selection(selected)
            layer._flags_read = layer._flags_version()


def precompute_ratios(layers: Sequence[SparseSwitchNorm],
                      only_stale: bool = False) -> Dict[Tuple[int, int], Tensor]:
    """Project the open ratio vectors of all ``layers`` in one SparsestMax call per device, dtype and size.

    Each layer uses its share in its next forwards (:meth:`SparseSwitchNorm.use_ratios`),
    differentiably when gradients are enabled: gradients flow back to every
    layer's logits. ``only_stale`` skips layers whose given ratios are still
    valid. Returns ``{(id(layer), vector): ratios}`` of the projected vectors.
    """
    groups = {}
    for layer in layers:
        if only_stale and layer.has_current_ratios():
            continue
        for v in layer.open_vectors():
            logits = layer.ratio_logits(v)
            groups.setdefault((logits.device, logits.dtype, logits.shape[0]), []).append((layer, v))
    projected = {}
    for entries in groups.values():
        logits = torch.stack([layer.ratio_logits(v) for layer, v in entries])
        radii = torch.stack([layer.radius for layer, _ in entries])
        for (layer, v), ratios in zip(entries, sparsestmax(logits, radii).unbind(0)):
            projected[id(layer), v] = ratios
    for layer in {id(layer): layer for entries in groups.values() for layer, _ in entries}.values():
        layer.use_ratios([projected.get((id(layer), v)) for v in range(len(RATIO_VECTORS))])
    return projected


class SparseSwitchNorm1d(SparseSwitchNorm, SwitchNorm1d):
    """:class:`SparseSwitchNorm` for ``(N, C)`` or ``(N, C, L)`` input."""


class SparseSwitchNorm2d(SparseSwitchNorm, SwitchNorm2d):
    """:class:`SparseSwitchNorm` for ``(N, C, H, W)`` input."""


class SparseSwitchNorm3d(SparseSwitchNorm, SwitchNorm3d):
    """:class:`SparseSwitchNorm` for ``(N, C, T, H, W)`` input; time is normalized together with space."""


class SyncSparseSwitchNorm(_Synchronized, SparseSwitchNorm):
    """:class:`SparseSwitchNorm` whose BN statistics span all processes of ``process_group``."""


class SyncSparseSwitchNorm1d(_Synchronized, SparseSwitchNorm1d):
    """:class:`SparseSwitchNorm1d` with synchronised BN statistics."""


class SyncSparseSwitchNorm2d(_Synchronized, SparseSwitchNorm2d):
    """:class:`SparseSwitchNorm2d` with synchronised BN statistics."""


class SyncSparseSwitchNorm3d(_Synchronized, SparseSwitchNorm3d):
    """:class:`SparseSwitchNorm3d` with synchronised BN statistics."""
