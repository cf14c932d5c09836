"""Switchable Normalization (Luo et al., ICLR 2019 / TPAMI 2019) as ``torch.nn`` modules."""
import math
import operator
from typing import Optional, Sequence, Tuple

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..functional import CANDIDATES, check_candidates, switch_norm, under_torch_func
from ..recipe_checks import watch_ratio_parameters
from .eval_pin import EvalPinnable

__all__ = [
    "SwitchNorm", "SwitchNorm1d", "SwitchNorm2d", "SwitchNorm3d",
    "SyncSwitchNorm", "SyncSwitchNorm1d", "SyncSwitchNorm2d", "SyncSwitchNorm3d", "RATIO_PARAMETERS",
]

#: the names of the ratio logits of every SN/SSN layer: the mean vector's, then the variance vector's
RATIO_PARAMETERS: Tuple[str, str] = ("mean_weight", "var_weight")


class SwitchNorm(EvalPinnable):
    r"""Switchable Normalization over inputs of shape ``(N, C, *S)``.

    Each layer normalizes with a learned mixture of Instance Norm (per sample
    and channel, over ``S``), Layer Norm (per sample, over ``C`` and ``S``) and
    Batch Norm (per channel, over ``N`` and ``S``) statistics:

    .. math::
        y = \gamma \frac{x - \sum_k w^m_k \mu_k}{\sqrt{\sum_k w^v_k \sigma^2_k + \epsilon}} + \beta,
        \qquad w^m = \mathrm{softmax}(\text{mean\_weight}),\ w^v = \mathrm{softmax}(\text{var\_weight})

    This generic class accepts any rank ``>= 2``; :class:`SwitchNorm1d`,
    :class:`SwitchNorm2d` and :class:`SwitchNorm3d` check the rank as
    ``BatchNorm1d/2d/3d`` do. For 3-D (video) input the temporal axis is
    normalized together with space.

    Args:
        num_features: ``C``.
        eps: added to the variance.
        momentum: running-statistics momentum in PyTorch's convention
            (``running = (1 - momentum) * running + momentum * batch``);
            ``None`` for a cumulative average. Always this convention, also
            with ``official_compat`` (the authors' 0.997 is 0.003 here).
        using_bn: include the BN candidate (the authors' option). ``False``
            gives ``[IN, LN]``, for training with one image per GPU. Given
            together with ``candidates``, the two must agree.
        candidates: the candidate list itself (a subset of ``("IN", "LN",
            "BN")``, kept in that order, and at most one GroupNorm
            ``"GN<groups>"``, e.g. ``"GN32"`` (``"GN"`` is ``"GN32"``; the
            groups must divide ``C``), placed last).
            The published layouts (``[IN, LN, BN]``, ``[IN, LN]``) are
            unchanged by a GN candidate's existence. Input of
            shape ``(N, C)`` has one value per sample and channel, so IN is
            undefined there: use ``candidates=("LN", "BN")``, as the authors'
            ``SwitchNorm1d`` does; the layer raises an error otherwise.
        affine: learn ``weight`` (γ) and ``bias`` (β), each ``(C,)``.
        track_running_stats: keep ``running_mean`` / ``running_var`` for the
            BN candidate (otherwise BN uses batch statistics in eval too). The
            default ``None`` keeps them whenever BN is a candidate; ``True``
            without BN is an error (the running statistics are BN's).
        official_compat: the authors' math, to evaluate or finetune their
            checkpoints exactly: the IN variance is unbiased (divides by
            ``|S| - 1``; undefined for ``|S| = 1``, which raises an error), LN
            and BN are derived from it, and ``running_var`` stores that derived
            variance. It changes the math only. It is kept in the buffer
            ``official_compat_flag``, so it travels with the weights: files
            written by ``tools/convert_checkpoint.py`` from the authors'
            releases set it, and loading them sets it in whatever model they
            load into.
        double_backward: differentiate through plain autograd in training
            too, so that gradients of gradients (gradient penalties, some
            meta-learning) work; slower. By default training uses a fused,
            hand-written backward, which raises an error naming this option
            when asked for a second derivative. ``torch.compile``,
            ``torch.func`` transforms and tracing always take the plain path.

    Parameters: ``weight``, ``bias`` ``(C,)``; ``mean_weight``, ``var_weight``
    ``(K,)`` logits over the candidates, initialised to 0: uniform ratios, as
    the authors' 1 gives (softmax and SparsestMax ignore a common shift), but
    where float32 keeps the tiny first ratio updates (about 1e-8 at the
    recipe's lr/10), which vanish next to 1 (float32's step there is 1.2e-7)
    and would leave an SSN layer exactly uniform, i.e. undecided.
    Buffers: ``running_mean``, ``running_var`` ``(C,)``, ``num_batches_tracked``,
    ``official_compat_flag`` (0-d bool). ``load_state_dict`` also accepts the
    authors' layout (``(1, C, 1, 1)`` affine parameters, ``(1, C, 1)`` running
    statistics, no ``num_batches_tracked``) and files without
    ``official_compat_flag`` (the layer keeps its own setting).

    Shape:
        - Input: ``(N, C, *S)`` (:class:`SwitchNorm1d`: ``(N, C)`` or
          ``(N, C, L)``; ``2d``: ``(N, C, H, W)``; ``3d``: ``(N, C, T, H, W)``)
        - Output: same shape and dtype as the input

    Examples::

        >>> m = SwitchNorm2d(64)
        >>> y = m(torch.randn(8, 64, 32, 32))
        >>> mean_ratios, var_ratios = m.ratios()   # softmax of the logits, over [IN, LN, BN]
    """

    _version = 2  # 2: the official_compat buffer

    # mmcv's build_norm_layer names the created attribute after ``_abbr_``: "bn" keeps the ``bn1`` /
    # ``conv1.bn`` keys that OpenMMLab checkpoints and mmaction2's 2-D to 3-D inflation read
    _abbr_ = "bn"

    #: Input ranks this class accepts (``None``: any rank >= 2).
    _input_dims: Optional[Tuple[int, ...]] = None

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: Optional[float] = 0.1,
        using_bn: Optional[bool] = None,
        candidates: Optional[Sequence[str]] = None,
        affine: bool = True,
        track_running_stats: Optional[bool] = None,
        official_compat: bool = False,
        double_backward: bool = False,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        name = type(self).__name__
        try:
            valid = not isinstance(num_features, bool) and operator.index(num_features) > 0
        except TypeError:
            valid = False
        if not valid:
            raise ValueError(f"{name}: num_features must be a positive int, got {num_features!r}")
        num_features = operator.index(num_features)
        if candidates is None:
            candidates = CANDIDATES if using_bn in (None, True) else ("IN", "LN")
        self.candidates = check_candidates(candidates, num_features)
        self.using_bn = "BN" in self.candidates
        if using_bn is not None and bool(using_bn) != self.using_bn:
            raise ValueError(f"{name}: using_bn={using_bn} contradicts candidates={list(self.candidates)}; pass "
                             f"candidates alone")
        if track_running_stats is None:
            track_running_stats = self.using_bn
        elif track_running_stats and not self.using_bn:
            raise ValueError(f"{name}: track_running_stats=True needs the BN candidate (the running statistics are "
                             f"BN's), and candidates are {list(self.candidates)}; leave it unset (None)")
        self.num_features = num_features
        if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps > 0):
            raise ValueError(f"{name}: eps must be a finite number > 0, got {eps!r}")
        self.eps = eps
        if momentum is not None and not 0.0 <= momentum <= 1.0:
            raise ValueError(f"{name}: momentum must lie in [0, 1] (PyTorch's convention) or be None, got {momentum}")
        self.momentum = momentum
        self.affine = affine
        self.double_backward = bool(double_backward)
        self.track_running_stats = bool(track_running_stats)
        k = len(self.candidates)
        self.mean_weight = nn.Parameter(torch.zeros(k, **factory))
        self.var_weight = nn.Parameter(torch.zeros(k, **factory))
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features, **factory))
            self.bias = nn.Parameter(torch.zeros(num_features, **factory))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if self.track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features, **factory))
            self.register_buffer("running_var", torch.ones(num_features, **factory))
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        self.register_buffer("official_compat_flag", torch.tensor(bool(official_compat), device=device))
        # Host-side copy, so forward reads no device memory. The buffer is read when a state dict is loaded
        # and written from this copy when one is saved (DDP rewrites buffers every step, so a forward
        # cannot afford to watch it).
        self._official = bool(official_compat)
        SwitchNorm.reset_parameters(self)  # a subclass's override may need buffers it has not registered yet

    # ------------------------------------------------------- state like torch.nn
    def reset_running_stats(self) -> None:
        """Running mean 0, variance 1, ``num_batches_tracked`` 0 (as ``torch.nn.BatchNorm``)."""
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        """γ = 1, β = 0, uniform ratio logits, fresh running statistics (meta-device / FSDP initialisation)."""
        self.reset_running_stats()
        with torch.no_grad():
            self.mean_weight.zero_()
            self.var_weight.zero_()
            if self.affine:
                self.weight.fill_(1.0)
                self.bias.zero_()
            if not self.official_compat_flag.is_meta:
                self.official_compat_flag.fill_(self._official)

    @property
    def official_compat(self) -> bool:
        """Whether the layer computes the authors' math (see the class docstring); set it as an attribute."""
        return self._official

    @official_compat.setter
    def official_compat(self, value: bool) -> None:
        self._official = bool(value)
        with torch.no_grad():
            if not self.official_compat_flag.is_meta:
                self.official_compat_flag.fill_(self._official)

    def _read_official_flag(self) -> None:
        flag = self.official_compat_flag
        if not flag.is_meta:
            self._official = bool(flag.item())

    # ------------------------------------------------------------------ freezing
    def freeze(self) -> "SwitchNorm":
        """Stop training this layer, as ``FrozenBatchNorm2d`` does for BN.

        Parameters stop requiring gradients and the layer stays in eval mode
        whatever ``train()`` says: BN statistics come from the running buffers
        and are no longer updated; IN and LN still come from the input.
        """
        for p in self.parameters():
            p.requires_grad_(False)
        return self.pin_eval()

    @property
    def frozen(self) -> bool:
        """Whether :meth:`freeze` holds: pinned to eval mode (:meth:`pin_eval`) with no parameter training."""
        return self.eval_pinned and not any(p.requires_grad for p in self.parameters())

    # ------------------------------------------------------------------ ratios
    def ratios(self) -> Tuple[Tensor, Tensor]:
        """The mixing ratios ``(mean_ratios, var_ratios)``, each ``(K,)`` on the simplex."""
        return torch.softmax(self.mean_weight, 0), torch.softmax(self.var_weight, 0)

    # ------------------------------------------------------------------ checks
    def _check_input_dim(self, x: Tensor) -> None:
        """Rank, channels, and the inputs this layer's candidates cannot normalize, each with what to do."""
        name = type(self).__name__
        if self._input_dims is not None and x.dim() not in self._input_dims:
            dims = " or ".join(f"{d}-D" for d in self._input_dims)
            raise ValueError(f"{name} expects {dims} input, got {x.dim()}-D input of shape {tuple(x.shape)}")
        if x.dim() < 2:
            raise ValueError(f"{name} expects input of shape (N, C, *S), got shape {tuple(x.shape)}")
        if x.shape[1] != self.num_features:
            raise ValueError(
                f"{name}({self.num_features}) got input with {x.shape[1]} channels (shape {tuple(x.shape)})")
        positions = math.prod(x.shape[2:])
        if (self.training and self.track_running_stats and under_torch_func(x, self.weight, self.mean_weight)
                and not under_torch_func(self.running_mean)):
            raise RuntimeError(
                f"{name}: in training under a torch.func transform (grad, vmap, ...) the running statistics would "
                f"be updated in place, which torch.func forbids (as for BatchNorm); build the layer with "
                f"track_running_stats=False, or run it in eval mode")
        if "IN" in self.candidates and x.dim() == 2:
            raise ValueError(
                f"{name}: input of shape (N, C) has one value per sample and channel, so Instance Norm is "
                f"undefined; build the layer with candidates=('LN', 'BN') for such input")
        if self.official_compat and positions == 1:
            raise ValueError(
                f"{name}(official_compat=True) uses the unbiased IN variance, which is undefined for a "
                f"single spatial position (input shape {tuple(x.shape)}); use official_compat=False")
        if (self.training and self._uses_batch_statistics() and self._process_group() is None
                and x.shape[0] * positions == 1):
            if x.dim() == 2:
                advice = ("train with more than one sample per batch (or per process, with a Sync layer in a process "
                          "group)")
            else:
                advice = "build the layer with using_bn=False (IN and LN only)"
            if not isinstance(self, _Synchronized):
                advice += f", or use Sync{name} in a distributed run so the statistics span all processes"
            raise ValueError(
                f"{name}: the BN candidate needs more than one value per channel in training, got input of "
                f"shape {tuple(x.shape)}; {advice}")

    def _process_group(self):
        """The group BN statistics are reduced over in this forward, or ``None``."""
        return None

    def _uses_batch_statistics(self) -> bool:
        """Whether this layer's output depends on the BN candidate."""
        return "BN" in self.candidates

    def _count_batch(self) -> None:
        """Count a training batch in ``num_batches_tracked`` (as ``_BatchNorm.forward`` does)."""
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)

    def _momentum(self) -> float:
        """This step's momentum: ``1 / num_batches_tracked`` (a cumulative average) when ``momentum`` is ``None``."""
        if self.momentum is not None:
            return self.momentum
        return 1.0 / float(self.num_batches_tracked) if self.training and self.track_running_stats else 0.0

    # ----------------------------------------------------------------- forward
    def _running_statistics(self, uses_bn: bool) -> dict:
        """The running-statistics arguments of the functional calls, counting the batch when BN uses them."""
        if not uses_bn:
            return {"running_mean": None, "running_var": None, "momentum": 0.0}
        self._count_batch()
        return {"running_mean": self.running_mean, "running_var": self.running_var, "momentum": self._momentum()}

    def _normalize(self, x: Tensor, mean_ratios: Tensor, var_ratios: Tensor,
                   candidates: Tuple[str, ...], weight: Optional[Tensor]) -> Tensor:
        """The general path: mix the statistics of ``candidates`` with the given ratios."""
        uses_bn = "BN" in candidates
        return switch_norm(
            x, mean_ratios, var_ratios, candidates, **self._running_statistics(uses_bn), weight=weight,
            bias=self.bias, training=self.training, eps=self.eps, unbiased_in=self.official_compat,
            unbiased_running_var=not self.official_compat,
            process_group=self._process_group() if uses_bn else None, double_backward=self.double_backward)

    # set by the first training forward (recipe_checks); class-level defaults so old pickles load
    _ratios_watched = False

    def _note_training(self) -> None:
        """Feed the recipe checks (:mod:`ssn_plugins.recipe_checks`); called by training forwards with gradients."""
        if not self._ratios_watched:
            self._ratios_watched = True
            watch_ratio_parameters((self.mean_weight, self.var_weight))

    def _is_training_step(self) -> bool:
        # a compiled forward does not count (its graph would capture the Python-side bookkeeping)
        return self.training and torch.is_grad_enabled() and not torch.compiler.is_compiling()

    def forward(self, x: Tensor) -> Tensor:
        self._check_input_dim(x)
        if self._is_training_step():
            self._note_training()
        mean_ratios, var_ratios = self.ratios()
        return self._normalize(x, mean_ratios, var_ratios, self.candidates, self.weight)

    def extra_repr(self) -> str:
        s = f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, candidates={list(self.candidates)}"
        if not self.affine:
            s += ", affine=False"
        if self.official_compat:
            s += ", official_compat=True"
        if self.double_backward:
            s += ", double_backward=True"
        return s

    # --------------------------------------------------------- checkpoint layout
    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # Migrations by the layout version the file was saved with (``_version``): files without one are
        # the authors' (or converted from them, or ours before versioning) and go through every step.
        version = local_metadata.get("version")
        if version is None or version < self._version:
            self._migrate_state_dict(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        self._read_official_flag()

    def _migrate_state_dict(self, state_dict, prefix) -> None:
        """Bring an older or foreign layout of this layer's entries to the current one, in place."""
        # The authors' checkpoints store (1, C, 1, 1) affine parameters and
        # (1, C, 1) running statistics and have no num_batches_tracked.
        for name in ("weight", "bias", "running_mean", "running_var"):
            key = prefix + name
            if key in state_dict and state_dict[key].dim() > 1 and state_dict[key].numel() == self.num_features:
                state_dict[key] = state_dict[key].reshape(self.num_features)
        nbt = prefix + "num_batches_tracked"
        if self.track_running_stats and nbt not in state_dict and prefix + "running_mean" in state_dict:
            state_dict[nbt] = torch.tensor(0, dtype=torch.long)
        # Files without the flag (the authors' own, and ours before version 2) leave the layer's setting as it is.
        flag = prefix + "official_compat_flag"
        if flag not in state_dict and any(k.startswith(prefix) for k in state_dict):
            state_dict[flag] = self.official_compat_flag.detach().clone()

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        # what is saved is what runs: the host-side setting, whatever was written into the buffer
        destination[prefix + "official_compat_flag"] = torch.tensor(self._official,
                                                                    device=self.official_compat_flag.device)


class _Synchronized:
    """Mix-in: all-reduce the BN statistics over a process group in training.

    Gradients are exact by construction: the reduction is the differentiable
    ``torch.distributed.nn.functional.all_reduce``. Outside a distributed run
    (or with one process) the layer behaves as its plain counterpart.
    """

    def __init__(self, *args, process_group=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.process_group = process_group

    def _process_group(self):
        if not self.training or not (dist.is_available() and dist.is_initialized()):
            return None
        group = self.process_group if self.process_group is not None else dist.group.WORLD
        return group if dist.get_world_size(group) > 1 else None


class SwitchNorm1d(SwitchNorm):
    """:class:`SwitchNorm` for ``(N, C)`` or ``(N, C, L)`` input (see the ``candidates`` note for ``(N, C)``)."""
    _input_dims = (2, 3)


class SwitchNorm2d(SwitchNorm):
    """:class:`SwitchNorm` for ``(N, C, H, W)`` input."""
    _input_dims = (4,)


class SwitchNorm3d(SwitchNorm):
    """:class:`SwitchNorm` for ``(N, C, T, H, W)`` input; time is normalized together with space."""
    _input_dims = (5,)


class SyncSwitchNorm(_Synchronized, SwitchNorm):
    """:class:`SwitchNorm` whose BN statistics span all processes of ``process_group`` (default: world)."""


class SyncSwitchNorm1d(_Synchronized, SwitchNorm1d):
    """:class:`SwitchNorm1d` with synchronised BN statistics."""


class SyncSwitchNorm2d(_Synchronized, SwitchNorm2d):
    """:class:`SwitchNorm2d` with synchronised BN statistics."""


class SyncSwitchNorm3d(_Synchronized, SwitchNorm3d):
    """:class:`SwitchNorm3d` with synchronised BN statistics."""
