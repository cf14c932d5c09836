"""Shared test helpers."""
import torch
from torch.func import functional_call


def gradcheck_module(module: torch.nn.Module, x: torch.Tensor) -> bool:
    """``torch.autograd.gradcheck`` of ``module(x)`` with respect to ``x`` and every parameter (float64)."""
    names = [n for n, _ in module.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_() for p in module.parameters())
    return torch.autograd.gradcheck(lambda x, *ps: functional_call(module, dict(zip(names, ps)), (x,)),
                                    (x.detach().requires_grad_(),) + params)


def trained_looking_norms(model: torch.nn.Module, seed: int = 0, fix_every: int = 2) -> torch.nn.Module:
    """Give every SN/SSN layer of ``model`` what training leaves: random ratio logits, γ, β and running
    statistics; SSN layers at radius 0.3 with every ``fix_every``-th one fixed on BN (the papers find about
    half BN), a few on IN for the mean and LN for the variance. Returns the model in eval mode."""
    import ssn_plugins as S
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, S.SwitchNorm):
                m.mean_weight.copy_(torch.randn(m.mean_weight.shape, generator=g))
                m.var_weight.copy_(torch.randn(m.var_weight.shape, generator=g))
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.bias.shape, generator=g) * 0.4 - 0.2)
                if m.running_mean is not None:
                    m.running_mean.normal_(0, 0.2, generator=g)
                    m.running_var.uniform_(0.5, 2.0, generator=g)
    for i, m in enumerate(S.sparse_layers(model)):
        S.set_radius(m, 0.3)
        if i % fix_every == 0:
            m.fix("mean", "BN")
            m.fix("var", "BN")
        elif i % 7 == 1:
            m.fix("mean", "IN")
            m.fix("var", "LN")
    return model.eval()
