"""Channel Equilibrium against plain formulas, an eigendecomposition, and autograd."""
import pytest
import torch

import ssn_plugins as S

from helpers import gradcheck_module


def plain_ce(x, ce):
    """CE written per group and per sample with explicit loops (training mode)."""
    n, c = x.shape[:2]
    d = ce.group_size
    out_bd = torch.empty_like(x)
    for g in range(ce.num_groups):
        xs = x[:, g * d:(g + 1) * d].transpose(0, 1).reshape(d, -1)  # (d, N*S)
        xc = xs - xs.mean(1, keepdim=True)
        sigma = xc @ xc.T / xs.shape[1] + ce.eps * torch.eye(d, dtype=x.dtype)
        sigma_n = sigma / torch.trace(sigma)
        p = torch.eye(d, dtype=x.dtype)
        for _ in range(ce.iterations):
            p = 1.5 * p - 0.5 * p @ p @ p @ sigma_n
        out_bd[:, g * d:(g + 1) * d] = (p @ xs).reshape((d, n) + x.shape[2:]).transpose(0, 1)
    var = torch.stack([torch.stack([x[i, j].flatten().var() for j in range(c)]) for i in range(n)])
    fc = ce.reweight.fc
    gates = torch.sigmoid(fc[3](torch.relu(fc[1](fc[0](var)))))
    scale = torch.sqrt(var.mean() + ce.eps)
    out_ir = x * (gates / scale).reshape(n, c, *([1] * (x.dim() - 2)))
    lam = torch.sigmoid(ce.mix_logit)
    return lam * out_bd + (1 - lam) * out_ir


@pytest.mark.parametrize("shape,group_size", [((4, 16, 5, 5), 4), ((3, 12, 2, 3, 4), 16), ((6, 8, 7), 8)])
def test_equals_plain_formula(shape, group_size):
    ce = S.ChannelEquilibrium(shape[1], group_size=group_size).double()
    with torch.no_grad():
        ce.mix_logit.fill_(0.3)
    x = torch.randn(shape, dtype=torch.float64) * 2 + 1
    torch.testing.assert_close(ce(x), plain_ce(x, ce))
    assert ce.group_size * ce.num_groups == shape[1]


def test_group_size_halves_until_it_divides():
    assert S.ChannelEquilibrium(48, group_size=64).group_size == 48  # capped at C
    assert S.ChannelEquilibrium(96, group_size=64).group_size == 32
    assert S.ChannelEquilibrium(40, group_size=16).group_size == 8


def test_newton_schulz_converges_to_inverse_square_root():
    ce = S.ChannelEquilibrium(8, group_size=8, iterations=40).double()
    x = torch.randn(64, 8, 4, 4, dtype=torch.float64) @ torch.eye(4, dtype=torch.float64)
    xs = x.transpose(0, 1).reshape(8, -1)
    xc = xs - xs.mean(1, keepdim=True)
    sigma = xc @ xc.T / xs.shape[1] + ce.eps * torch.eye(8, dtype=torch.float64)
    evals, evecs = torch.linalg.eigh(sigma / torch.trace(sigma))
    expected = evecs @ torch.diag(evals.rsqrt()) @ evecs.T
    got = ce._whitening_matrix(xs.unsqueeze(0))[0]
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)


def test_eval_uses_running_estimates():
    ce = S.ChannelEquilibrium(8, group_size=4, momentum=1.0).double()
    x = torch.randn(6, 8, 5, 5, dtype=torch.float64)
    train_out = ce(x)
    ce.eval()
    # with momentum 1 the running estimates are this batch's: eval reproduces training up to the IR scale
    torch.testing.assert_close(ce(x), train_out)
    assert torch.isfinite(S.ChannelEquilibrium(8).eval()(torch.randn(1, 8, 3, 3))).all()


def test_gradcheck():
    # hidden width 4 and random LayerNorm bias keep the ReLU away from its kink at 0
    ce = S.ChannelEquilibrium(8, group_size=4, iterations=2, reduction=2).double()
    with torch.no_grad():
        for p in ce.parameters():
            p.copy_(torch.randn_like(p))
    assert gradcheck_module(ce, torch.randn(3, 8, 3, 3, dtype=torch.float64))


def test_edge_cases_and_authors_names():
    ce = S.ChannelEquilibrium(8, group_size=4)
    y = ce(torch.randn(0, 8, 3, 3))
    assert y.shape == (0, 8, 3, 3)
    assert torch.isfinite(ce(torch.randn(2, 8, 1, 1))).all()
    with pytest.raises(ValueError, match=r"\(N, 8, \*S\)"):
        ce(torch.randn(2, 8))
    authors = {("x_weight" if k == "mix_logit" else k.replace("reweight.", "AR.")): v
               for k, v in ce.state_dict().items()}
    other = S.ChannelEquilibrium(8, group_size=4)
    result = other.load_state_dict(authors)
    assert not result.missing_keys and not result.unexpected_keys
    for k, v in ce.state_dict().items():
        assert torch.equal(other.state_dict()[k], v)
