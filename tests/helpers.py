"""Shared test helpers."""
import torch
from torch.func import functional_call


def gradcheck_module(module: torch.nn.Module, x: torch.Tensor) -> bool:
    """``torch.autograd.gradcheck`` of ``module(x)`` with respect to ``x`` and every parameter (float64)."""
    names = [n for n, _ in module.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_() for p in module.parameters())
    return torch.autograd.gradcheck(lambda x, *ps: functional_call(module, dict(zip(names, ps)), (x,)),
                                    (x.detach().requires_grad_(),) + params)
