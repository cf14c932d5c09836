"""Channel Equilibrium (Shao et al., ICML 2020)."""
import math

import torch
from torch import Tensor, nn

from .eval_pin import EvalPinnable

__all__ = ["ChannelEquilibrium", "InstanceReweight", "CE_STAGES", "CE_STEM_GROUP_SIZE", "CE_BLOCK_GROUP_SIZE"]

# Where the CE paper puts CE in a ResNet, shared by our ResNet and the detectron2 / OpenMMLab adapters: after the
# stem's norm (groups of 64 channels) and after the last norm of every block in stages 1-3 (groups of 16), before
# the residual addition and ReLU; never in stage 4. The published CE-ResNet-50 is built this way.
CE_STAGES = (1, 2, 3)
CE_STEM_GROUP_SIZE = 64
CE_BLOCK_GROUP_SIZE = 16


def _channel_groups(num_features: int, group_size: int) -> int:
    """Channels per group: ``group_size`` halved until it divides ``num_features`` (as the authors do)."""
    size = min(group_size, num_features)
    while num_features % size:
        size //= 2
    return size


def _stats_dtype(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


class InstanceReweight(nn.Module):
    """The instance-reweighting (IR) branch of :class:`ChannelEquilibrium`.

    For ``x`` of shape ``(N, C, *S)``: the per-sample per-channel variance over
    ``S`` (unbiased, as the authors compute it; biased when ``|S| = 1``) goes
    through ``Linear(C, C/r) → LayerNorm → ReLU → Linear(C/r, C) → sigmoid``,
    giving gates ``g`` of shape ``(N, C)``; the output is
    ``x * g / sqrt(mean variance + eps)``, the mean taken over the batch in
    training and replaced by the ``running_scale`` buffer in eval.
    ``running_scale`` starts at 1 (the authors start it at 0, which divides
    by zero in eval until it has been trained); ``eps`` keeps constant maps finite.

    Shape:
        - Input: ``(N, C, *S)``
        - Output: same shape and dtype as the input
    """

    def __init__(self, num_features: int, reduction: int = 4, momentum: float = 0.1, eps: float = 1e-5,
                 device=None, dtype=None) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        hidden = max(num_features // reduction, 1)
        self.fc = nn.Sequential(
            nn.Linear(num_features, hidden, bias=False, **factory),
            nn.LayerNorm(hidden, **factory),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, num_features, bias=False, **factory),
            nn.Sigmoid(),
        )
        self.momentum = momentum
        self.eps = eps
        self.register_buffer("running_scale", torch.ones(1, **factory))

    def reset_running_stats(self) -> None:
        """``running_scale`` back to 1."""
        self.running_scale.fill_(1.0)

    def reset_parameters(self) -> None:
        """The MLP's default initialisation and fresh running statistics (meta-device / FSDP initialisation)."""
        self.reset_running_stats()
        for m in self.fc:
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        n, c = x.shape[:2]
        positions = math.prod(x.shape[2:])
        var = x.reshape(n, c, positions).var(-1, correction=1 if positions > 1 else 0)
        gates = self.fc(var.to(self.fc[0].weight.dtype))
        if self.training:
            scale = torch.sqrt(var.to(_stats_dtype(x)).mean() + self.eps)
            if n > 0:
                with torch.no_grad():
                    self.running_scale.lerp_(scale.detach().to(self.running_scale.dtype), self.momentum)
        else:
            scale = self.running_scale
        factor = (gates / scale).to(x.dtype)
        return x * factor.reshape(factor.shape + (1,) * (x.dim() - 2))


class ChannelEquilibrium(EvalPinnable):
    r"""Channel Equilibrium block, placed between a normalization layer and its ReLU.

    ``CE(x) = λ · BD(x) + (1 − λ) · IR(x)`` with ``λ = sigmoid(mix_logit)``
    (``mix_logit`` starts at 0) for ``x`` of shape ``(N, C, *S)``:

    - BD, batch decorrelation: channels are split into groups of
      ``group_size`` (halved until it divides ``C``); per group the covariance
      ``Σ`` over ``(N, S)`` plus ``eps·I`` is trace-normalized,
      ``Σ_N = Σ / tr(Σ)``, and ``P ≈ Σ_N^{-1/2}`` comes from ``iterations``
      Newton–Schulz steps ``P ← 1.5 P − 0.5 P³ Σ_N`` from ``P = I``; the
      output is ``P x`` (``x`` not centred, as in the authors' code). In eval
      ``P`` is the running average ``running_wm``.
    - IR, instance reweighting: see :class:`InstanceReweight`.

    Args:
        num_features: ``C``.
        group_size: channels per decorrelation group (the paper: 16 or 64).
        iterations: Newton–Schulz steps ``T`` (the paper: 3).
        reduction: IR's hidden width is ``C / reduction``.
        eps: added to the covariance diagonal and to IR's variance.
        momentum: running-average momentum, PyTorch's convention.

    Buffers: ``running_mean`` ``(G, d, 1)`` (kept for the authors' layout; BD
    does not centre), ``running_wm`` ``(G, d, d)``, ``reweight.running_scale``.
    ``load_state_dict`` also accepts the authors' names (``x_weight``, ``AR.*``).

    Shape:
        - Input: ``(N, C, *S)``
        - Output: same shape and dtype as the input

    Examples::

        >>> norm, ce = nn.BatchNorm2d(64), ChannelEquilibrium(64, group_size=16)
        >>> y = torch.relu(ce(norm(torch.randn(8, 64, 28, 28))))
    """

    def __init__(self, num_features: int, group_size: int = 64, iterations: int = 3, reduction: int = 4,
                 eps: float = 1e-5, momentum: float = 0.1, device=None, dtype=None) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        if num_features <= 0 or group_size <= 0 or iterations < 1:
            raise ValueError(f"ChannelEquilibrium needs num_features > 0, group_size > 0 and iterations >= 1; "
                             f"got {num_features}, {group_size}, {iterations}")
        self.num_features = num_features
        self.group_size = _channel_groups(num_features, group_size)
        self.num_groups = num_features // self.group_size
        self.iterations = iterations
        self.eps = eps
        self.momentum = momentum
        self.mix_logit = nn.Parameter(torch.zeros(1, **factory))
        self.reweight = InstanceReweight(num_features, reduction, momentum, eps, **factory)
        d = self.group_size
        self.register_buffer("running_mean", torch.zeros(self.num_groups, d, 1, **factory))
        self.register_buffer("running_wm", torch.eye(d, **factory).repeat(self.num_groups, 1, 1))

    def reset_running_stats(self) -> None:
        """``running_mean`` 0, ``running_wm`` the identity, IR's ``running_scale`` 1."""
        with torch.no_grad():
            self.running_mean.zero_()
            self.running_wm.copy_(torch.eye(self.group_size, dtype=self.running_wm.dtype,
                                            device=self.running_wm.device).expand_as(self.running_wm))
        self.reweight.reset_running_stats()

    def reset_parameters(self) -> None:
        """``mix_logit`` 0 (λ = 1/2), IR's default initialisation, fresh running statistics."""
        with torch.no_grad():
            self.mix_logit.zero_()
        self.reweight.reset_parameters()
        self.reset_running_stats()

    def _whitening_matrix(self, xg: Tensor) -> Tensor:
        """Newton–Schulz ``Σ_N^{-1/2}`` per group from ``xg`` of shape ``(G, d, m)``."""
        g, d, m = xg.shape
        mean = xg.mean(-1, keepdim=True)
        xc = xg - mean
        eye = torch.eye(d, dtype=xg.dtype, device=xg.device).expand(g, d, d)
        sigma = torch.baddbmm(eye * self.eps, xc, xc.transpose(1, 2), alpha=1.0 / m)
        sigma_n = sigma / sigma.diagonal(dim1=1, dim2=2).sum(-1).reshape(g, 1, 1)
        p = eye
        for _ in range(self.iterations):
            p = torch.baddbmm(p, torch.matrix_power(p, 3), sigma_n, beta=1.5, alpha=-0.5)
        with torch.no_grad():
            self.running_mean.lerp_(mean.to(self.running_mean.dtype), self.momentum)
            self.running_wm.lerp_(p.to(self.running_wm.dtype), self.momentum)
        return p

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() < 3 or x.shape[1] != self.num_features:
            raise ValueError(f"ChannelEquilibrium({self.num_features}) expects input of shape "
                             f"(N, {self.num_features}, *S) with spatial dims, got {tuple(x.shape)}")
        n, c = x.shape[:2]
        if n == 0:
            # Nothing to decorrelate; keep the parameters in the graph for DDP.
            return x + sum(p.sum() for p in self.parameters()).to(x.dtype) * 0
        sd = _stats_dtype(x)
        xg = x.transpose(0, 1).reshape(self.num_groups, self.group_size, -1).to(sd)
        wm = self._whitening_matrix(xg) if self.training else self.running_wm.to(sd)
        decorrelated = torch.bmm(wm, xg).reshape((c, n) + x.shape[2:]).transpose(0, 1).to(x.dtype)
        lam = torch.sigmoid(self.mix_logit).to(x.dtype)
        return lam * decorrelated + (1 - lam) * self.reweight(x)

    def extra_repr(self) -> str:
        return f"{self.num_features}, group_size={self.group_size}, iterations={self.iterations}"

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # The authors' CE module names the mixing logit x_weight and IR "AR".
        renames = {prefix + "x_weight": prefix + "mix_logit"}
        renames.update({k: prefix + "reweight." + k[len(prefix + "AR."):]
                        for k in state_dict if k.startswith(prefix + "AR.")})
        for old, new in renames.items():
            if old in state_dict:
                state_dict[new] = state_dict.pop(old)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
