"""The authors' training-mode SN and SSN layers, for timing ours against them on the same machine.

Written from switchablenorms/Switchable-Normalization's ``devkit/ops/switchable_norm.py`` (``SwitchNorm2d``) and
switchablenorms/Sparse_SwitchNorm's ``utils/sparse_switchable_norm.py`` (``SSN2d``) with its
``utils/ssn_utils.py`` (``sparsestmax``): the same operations in the same order, with the one CUDA-only line
(``torch.cuda.FloatTensor`` for the cached ratios) made device-free so the layers run on CPU. Nothing here
imports ssn_plugins.
"""
from math import sqrt

import torch
from torch import nn


class AuthorsSwitchNorm2d(nn.Module):
    """``SwitchNorm2d`` of the SN release, training with moving averages (its default)."""

    def __init__(self, num_features, eps=1e-5, momentum=0.9):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.ones(1, num_features, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, num_features, 1, 1))
        self.mean_weight = nn.Parameter(torch.ones(3))
        self.var_weight = nn.Parameter(torch.ones(3))
        self.register_buffer("running_mean", torch.zeros(1, num_features, 1))
        self.register_buffer("running_var", torch.zeros(1, num_features, 1))

    def statistics(self, x):
        mean_in = x.mean(-1, keepdim=True)
        var_in = x.var(-1, keepdim=True)
        mean_ln = mean_in.mean(1, keepdim=True)
        temp = var_in + mean_in ** 2
        var_ln = temp.mean(1, keepdim=True) - mean_ln ** 2
        mean_bn = mean_in.mean(0, keepdim=True)
        var_bn = temp.mean(0, keepdim=True) - mean_bn ** 2
        self.running_mean.mul_(self.momentum)
        self.running_mean.add_((1 - self.momentum) * mean_bn.data)
        self.running_var.mul_(self.momentum)
        self.running_var.add_((1 - self.momentum) * var_bn.data)
        return (mean_in, mean_ln, mean_bn), (var_in, var_ln, var_bn)

    def ratios(self):
        softmax = nn.Softmax(0)
        return softmax(self.mean_weight), softmax(self.var_weight)

    def forward(self, x):
        n, c, h, w = x.size()
        x = x.view(n, c, -1)
        means, variances = self.statistics(x)
        mean_weight, var_weight = self.ratios()
        mean = mean_weight[0] * means[0] + mean_weight[1] * means[1] + mean_weight[2] * means[2]
        var = var_weight[0] * variances[0] + var_weight[1] * variances[1] + var_weight[2] * variances[2]
        x = (x - mean) / (var + self.eps).sqrt()
        x = x.view(n, c, h, w)
        return x * self.weight + self.bias


def _sparsemax(v, z=1):
    v_sorted, _ = torch.sort(v, dim=0, descending=True)
    cssv = torch.cumsum(v_sorted, dim=0) - z
    ind = torch.arange(1, 1 + len(v)).float().to(v.device)
    cond = v_sorted - cssv / ind > 0
    rho = ind.masked_select(cond)[-1]
    tau = cssv.masked_select(cond)[-1] / rho
    w = torch.clamp(v - tau, min=0)
    return w / z


def _sparsestmax(v, rad_in=0, u_in=None):
    w = _sparsemax(v)
    if max(w) - min(w) == 1:
        return w
    ind = (w > 0).float()
    u = ind / torch.sum(ind)
    rad = rad_in if u_in is None else sqrt(rad_in ** 2 - torch.sum((u - u_in) ** 2))
    distance = torch.norm(w - u)
    if distance >= rad:
        return w
    p = rad * (w - u) / distance + u
    if min(p) < 0:
        return _sparsestmax(p, rad, u)
    return p.clamp_(min=0, max=1)


class AuthorsSparseSwitchNorm2d(AuthorsSwitchNorm2d):
    """``SSN2d`` of the SSN release while its ratios are still soft (``radius`` fixed, nothing selected yet)."""

    def __init__(self, num_features, eps=1e-5, momentum=0.997, radius=0.3):
        super().__init__(num_features, eps, momentum)
        self.register_buffer("mean_fixed", torch.LongTensor([0]))
        self.register_buffer("var_fixed", torch.LongTensor([0]))
        self.register_buffer("radius", torch.full((1,), radius))
        with torch.no_grad():  # off the centre: there the release divides by a zero distance (NaN ratios)
            self.mean_weight.copy_(torch.tensor([1.2, 1.0, 0.9]))
            self.var_weight.copy_(torch.tensor([0.9, 1.1, 1.0]))

    def ratios(self):
        rad = self.radius.item()
        picked = []
        for logits, fixed in ((self.mean_weight, self.mean_fixed), (self.var_weight, self.var_fixed)):
            if not fixed:
                ratios = _sparsestmax(logits, rad)
                if max(ratios) - min(ratios) >= 1:
                    fixed.data.fill_(1)
                    logits.data = ratios.data
                    ratios = logits.detach()
            else:
                ratios = logits.detach()
            picked.append(ratios)
        return tuple(picked)
