"""A trained Switchable Normalization layer with everything but the input frozen, for inference."""
from typing import Optional, Sequence

from torch import Tensor, nn

from ..functional import check_candidates, native_kernel_takes, selected_norm, switch_norm

__all__ = ["FrozenSwitchNorm"]


class FrozenSwitchNorm(nn.Module):
    r"""Inference-only Switchable Normalization: fixed ratios, affine and BN statistics.

    What :func:`ssn_plugins.for_inference` makes of a trained
    :class:`~ssn_plugins.SwitchNorm` or a soft
    :class:`~ssn_plugins.SparseSwitchNorm` (as ``FrozenBatchNorm2d`` is of a
    BatchNorm): the ratios are constants, so no softmax or SparsestMax runs,
    and only ``candidates`` (those with a nonzero mean or variance ratio) are
    computed; BN uses the running statistics (batch statistics when the layer
    kept none). The forward is plain tensor operations, so it traces, compiles
    and exports (``torch.jit.trace``, ``torch.export``, ONNX).

    Args:
        num_features: ``C``.
        mean_ratios, var_ratios: ``(K,)`` ratios over ``candidates``.
        candidates: a subsequence of ``("IN", "LN", "BN", "GN<groups>")``.
        eps: added to the variance.
        weight, bias: ``(C,)`` affine parameters, or ``None``.
        running_mean, running_var: ``(C,)`` BN statistics, or ``None``.
        official_compat: the authors' unbiased IN variance (see :class:`~ssn_plugins.SwitchNorm`).

    Buffers (no parameters): ``mean_ratios``, ``var_ratios``, ``weight``,
    ``bias``, ``running_mean``, ``running_var``.

    Shape:
        - Input: ``(N, C, *S)``
        - Output: same shape and dtype as the input
    """

    def __init__(self, num_features: int, mean_ratios: Tensor, var_ratios: Tensor, candidates: Sequence[str],
                 eps: float = 1e-5, weight: Optional[Tensor] = None, bias: Optional[Tensor] = None,
                 running_mean: Optional[Tensor] = None, running_var: Optional[Tensor] = None,
                 official_compat: bool = False) -> None:
        super().__init__()
        self.candidates = check_candidates(candidates, num_features)
        if list(candidates) != list(self.candidates):
            raise ValueError(f"FrozenSwitchNorm: candidates must be in the order {self.candidates}, "
                             f"the order of the ratios; got {list(candidates)}")
        k = len(self.candidates)
        if mean_ratios.shape != (k,) or var_ratios.shape != (k,):
            raise ValueError(f"FrozenSwitchNorm: {k} candidates need ratio vectors of shape ({k},), got "
                             f"{tuple(mean_ratios.shape)} and {tuple(var_ratios.shape)}")
        if (weight is None) != (bias is None):
            raise ValueError("FrozenSwitchNorm: give both weight and bias, or neither")
        if (running_mean is None) != (running_var is None):
            raise ValueError("FrozenSwitchNorm: give both running_mean and running_var, or neither")
        self.num_features = num_features
        self.eps = eps
        self.official_compat = bool(official_compat)
        for name, value in (("mean_ratios", mean_ratios), ("var_ratios", var_ratios), ("weight", weight),
                            ("bias", bias), ("running_mean", running_mean), ("running_var", running_var)):
            self.register_buffer(name, None if value is None else value.detach().clone())

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() < 2 or x.shape[1] != self.num_features:
            raise ValueError(f"FrozenSwitchNorm({self.num_features}) got input of shape {tuple(x.shape)}; "
                             f"expected (N, {self.num_features}, *S)")
        if len(self.candidates) == 1 and not self.official_compat and native_kernel_takes(
                x, (self.weight, self.bias, self.running_mean, self.running_var)):
            # one candidate (IN, or GN of one channel a group, which torch's modules refuse on 1x1 maps): the
            # fixed layer's own kernel, exact where the mixture's x * scale + shift would round beta on 1x1 maps
            return selected_norm(x, self.candidates[0], running_mean=self.running_mean, running_var=self.running_var,
                                 weight=self.weight, bias=self.bias, training=False, eps=self.eps)
        return switch_norm(x, self.mean_ratios, self.var_ratios, self.candidates, running_mean=self.running_mean,
                           running_var=self.running_var, weight=self.weight, bias=self.bias, training=False,
                           eps=self.eps, unbiased_in=self.official_compat)

    def extra_repr(self) -> str:
        ratios = ", ".join(f"{c}: {m:.3g}/{v:.3g}" for c, m, v in
                           zip(self.candidates, self.mean_ratios.tolist(), self.var_ratios.tolist()))
        s = f"{self.num_features}, eps={self.eps}, mean/var ratios=({ratios})"
        if self.official_compat:
            s += ", official_compat=True"
        return s

