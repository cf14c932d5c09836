"""SparsestMax against brute force, sparsemax, and autograd."""
import math

import pytest
import torch

import ssn_plugins as S

from ssn_plugins import max_radius, sparsemax, sparsestmax


def simplex_grid(steps: int) -> torch.Tensor:
    """Every point of a regular grid on the 3-simplex (spacing 1/steps)."""
    a = torch.arange(steps + 1, dtype=torch.float64) / steps
    i, j = torch.meshgrid(a, a, indexing="ij")
    keep = i + j <= 1 + 1e-12
    return torch.stack([i[keep], j[keep], (1 - i[keep] - j[keep]).clamp(min=0)], -1)


def brute_force_sparsemax(z: torch.Tensor) -> torch.Tensor:
    """Sparsemax by its closed form found by trying every support set (K small)."""
    k = z.shape[-1]
    best, best_d = None, math.inf
    for mask in range(1, 2 ** k):
        support = torch.tensor([(mask >> i) & 1 for i in range(k)], dtype=torch.bool)
        tau = (z[support].sum() - 1) / support.sum()
        p = torch.where(support, z - tau, torch.zeros_like(z))
        if (p >= -1e-12).all():
            d = ((p - z) ** 2).sum().item()
            if d < best_d:
                best, best_d = p.clamp(min=0), d
    return best


@pytest.mark.slow
@pytest.mark.parametrize("radius", [0.0, 0.15, 0.3, 0.45, 0.6, 0.7, 0.78, 0.81])
def test_no_grid_point_is_closer(radius):
    grid = simplex_grid(300)
    u = torch.full((3,), 1 / 3, dtype=torch.float64)
    feasible = grid[(grid - u).norm(dim=-1) >= radius - 1e-12]
    z = torch.randn(2000, 3, dtype=torch.float64) * 1.5
    p = sparsestmax(z, radius)
    ours = ((p - z) ** 2).sum(-1)
    grid_best = torch.cdist(z, feasible).pow(2).min(-1).values
    assert (ours <= grid_best + 1e-9).all(), (ours - grid_best).max()


@pytest.mark.parametrize("k", [2, 3, 4, 6])
def test_output_on_simplex_and_outside_circle(k):
    z = torch.randn(500, k, dtype=torch.float64) * 2
    for radius in [0.0, 0.2, 0.5, max_radius(k) * 0.99]:
        p = sparsestmax(z, radius)
        assert (p >= 0).all()
        torch.testing.assert_close(p.sum(-1), torch.ones(500, dtype=torch.float64))
        u = torch.full((k,), 1 / k, dtype=torch.float64)
        assert ((p - u).norm(dim=-1) >= radius - 1e-9).all()


@pytest.mark.parametrize("k", [2, 3, 5])
def test_equals_sparsemax_at_radius_zero(k):
    z = torch.randn(200, k, dtype=torch.float64) * 2
    expected = torch.stack([brute_force_sparsemax(row) for row in z])
    torch.testing.assert_close(sparsemax(z), expected)
    torch.testing.assert_close(sparsestmax(z, 0.0), expected)


@pytest.mark.parametrize("k", [2, 3, 4])
def test_one_hot_beyond_max_radius(k):
    z = torch.randn(300, k, dtype=torch.float64)
    for radius in [max_radius(k), 0.95, 2.0]:
        p = sparsestmax(z, radius)
        assert ((p == 1).sum(-1) == 1).all() and ((p == 0).sum(-1) == k - 1).all()
        assert (p.argmax(-1) == z.argmax(-1)).all()


def test_degenerate_centre_is_deterministic_and_finite():
    z = torch.zeros(4, 3, dtype=torch.float64, requires_grad=True)
    p = sparsestmax(z, 0.4)
    assert torch.equal(p[0], p[1])
    assert p[0, 0] > p[0, 1] == p[0, 2]  # moved towards the first candidate
    p.sum().backward()
    assert torch.isfinite(z.grad).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("k", [2, 3, 4])
def test_equal_logits_of_any_value_move_towards_the_first_candidate(dtype, k):
    """Equal logits such as (1, 1, 1) land a few ulps off the centre after the plane projection; that rounding
    must neither pick a direction out of the plane (which used to leave the ratios at the centre) nor give NaN."""
    values = torch.tensor([0.0, 1.0, -3.7, 1 / 3, 1000.1], dtype=dtype)
    radii = torch.linspace(0.01, max_radius(k) * 0.999, 25, dtype=torch.float64)
    z = values.repeat_interleave(len(radii))[:, None].expand(-1, k).contiguous()
    r = radii.repeat(len(values)).to(dtype)
    p = sparsestmax(z, r).double()
    u = torch.full((k,), 1 / k, dtype=torch.float64)
    vertex = torch.zeros(k, dtype=torch.float64)
    vertex[0] = 1
    expected = u + (r.double() / max_radius(k))[:, None] * (vertex - u)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(p, expected, atol=tol, rtol=0)


def test_nearly_equal_float32_logits_stay_finite_and_feasible():
    g = torch.Generator().manual_seed(0)
    z = 1 + 1e-7 * torch.randn(2000, 3, generator=g)
    for radius in [0.1, 0.5952, 0.7, 0.8]:
        p = sparsestmax(z, radius)
        assert torch.isfinite(p).all() and (p >= 0).all()
        assert ((p.double() - 1 / 3).norm(dim=-1) >= radius - 1e-5).all()


def test_batched_and_dim_and_per_row_radius():
    z = torch.randn(5, 3, 7, dtype=torch.float64)
    radius = torch.rand(5, 7, dtype=torch.float64) * 0.8
    batched = sparsestmax(z, radius, dim=1)
    for i in range(5):
        for j in range(7):
            torch.testing.assert_close(batched[i, :, j], sparsestmax(z[i, :, j], radius[i, j].item()))


@pytest.mark.parametrize("radius", [0.0, 0.2, 0.45, 0.7, 0.9])
def test_gradcheck(radius):
    z = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: sparsestmax(t, radius), (z,))
    assert torch.autograd.gradcheck(sparsemax, (z,))


def test_bad_input():
    with pytest.raises(ValueError, match="radius"):
        sparsestmax(torch.randn(3), -0.1)
    with pytest.raises(ValueError, match="radius"):
        sparsestmax(torch.randn(3), float("nan"))
    with pytest.raises(ValueError, match="at least 2"):
        sparsestmax(torch.randn(4, 1), 0.1)
    with pytest.raises(TypeError, match="floating-point"):
        sparsestmax(torch.ones(3, dtype=torch.long), 0.1)


# ------------------------------------------------------------------ real precision (float32, bf16, fp16)
def _brute_force_candidates(z: torch.Tensor, radius: float, directions: int = 20000) -> torch.Tensor:
    """Feasible points that contain the optimum up to sampling: a simplex grid, and points on the circle of
    ``radius`` around the centre and on each face's circle (K = 3: dense angles; K = 4: random directions
    plus the direction of ``z`` itself), all in float64."""
    k = z.shape[-1]
    g = torch.Generator().manual_seed(0)
    u = torch.full((k,), 1 / k, dtype=torch.float64)
    points = [simplex_grid(300)] if k == 3 else [torch.distributions.Dirichlet(torch.ones(k, dtype=torch.float64))
                                                 .sample((40000,))]
    for mask in range(1, 2 ** k):
        support = torch.tensor([(mask >> i) & 1 for i in range(k)], dtype=torch.float64)
        size = int(support.sum())
        if size < 2:
            continue
        centroid = support / size
        face_r2 = radius ** 2 - ((centroid - u) ** 2).sum()
        if face_r2 <= 0:
            continue
        raw = torch.randn(directions, k, dtype=torch.float64, generator=g)
        if k == 3 and size == 3:
            angles = torch.linspace(0, 2 * math.pi, directions, dtype=torch.float64)
            basis = torch.tensor([[1, -1, 0], [1, 1, -2]], dtype=torch.float64)
            basis = basis / basis.norm(dim=1, keepdim=True)
            raw = torch.cos(angles)[:, None] * basis[0] + torch.sin(angles)[:, None] * basis[1]
        raw = torch.cat([raw, (z.double() - z.double().mean()).unsqueeze(0)]) * support
        raw = raw - (raw.sum(-1, keepdim=True) / size) * support
        raw = raw / raw.norm(dim=-1, keepdim=True).clamp_min(1e-300)
        on_circle = centroid + raw * face_r2.sqrt()
        points.append(on_circle[(on_circle >= -1e-15).all(-1)])
    candidates = torch.cat(points).clamp(min=0)
    return candidates[(candidates - u).norm(dim=-1) >= radius - 1e-12]


@pytest.mark.parametrize("k", [3, 4])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("spread", ["ulps", "near", "far"])
def test_low_precision_logits_get_the_exact_projection_of_their_values(k, dtype, spread):
    """Against brute force, near the centre (a few ulps / 1e-5 from uniform, where SSN layers start) and far."""
    g = torch.Generator().manual_seed(k)
    base = torch.ones(12, k)
    if spread == "ulps":
        steps = torch.randint(-3, 4, (12, k), generator=g).float()
        z = (base + steps * torch.finfo(dtype).eps).to(dtype)
        z[0] = torch.ones(k, dtype=dtype)
        z[0, -1] += torch.finfo(dtype).eps  # one ulp above uniform: must move towards the last candidate
    else:
        z = (base + (1e-5 if spread == "near" else 0.8) * torch.randn(12, k, generator=g)).to(dtype)
    z = z[(z.double() - z.double().mean(-1, keepdim=True)).abs().amax(-1) > 0]  # exactly uniform rows: see below
    for radius in (0.05, 0.3, 0.6):
        ours = sparsestmax(z, radius)
        assert ours.dtype == dtype
        exact = sparsestmax(z.double(), radius)
        torch.testing.assert_close(ours, exact.to(dtype), atol=0, rtol=0)
        assert torch.equal(ours > 0, exact > 0) or dtype != torch.float32
        if dtype == torch.float32:
            assert (ours.double() - exact).abs().max() <= 1e-6
        assert torch.equal(exact.argmax(-1), z.double().argmax(-1)) or spread == "far"
        for row, p in zip(z, exact):
            best = ((_brute_force_candidates(row, radius) - row.double()) ** 2).sum(-1).min()
            assert ((p - row.double()) ** 2).sum() <= best + 1e-12
    if spread == "ulps":
        assert sparsestmax(z[:1], 0.3)[0].argmax() == k - 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gradient_of_low_precision_logits_equals_the_float64_gradient(dtype):
    g = torch.Generator().manual_seed(1)
    for offset in (1e-6, 1e-3, 0.5):
        z = (torch.ones(20, 3) + offset * torch.randn(20, 3, generator=g)).to(dtype)
        weights = torch.randn(20, 3, generator=g)
        grads = []
        for t in (z.clone(), z.double()):
            t.requires_grad_()
            (sparsestmax(t, 0.3) * weights.to(t.dtype)).sum().backward()
            grads.append(t.grad.double())
        scale = grads[1].abs().amax(-1, keepdim=True).clamp_min(1.0)
        tolerance = 1e-5 if dtype == torch.float32 else 1e-2
        assert ((grads[0] - grads[1]).abs() / scale).max() <= tolerance


def test_exactly_uniform_is_the_only_fallback():
    for dtype in (torch.float32, torch.bfloat16, torch.float64):
        for value in (1.0, 0.1, 3.7, -2.0):
            z = torch.full((3,), value, dtype=dtype)
            assert sparsestmax(z, 0.3).argmax() == 0  # the deterministic fallback: towards the first candidate
            z[1] = (torch.nextafter(z[1], torch.tensor(100.0, dtype=dtype)) if dtype != torch.bfloat16
                    else z[1] + 2 ** -6)
            assert sparsestmax(z, 0.3).argmax() == 1


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_infinite_logits_give_nan_unless_the_radius_selects_a_vertex(dtype):
    """``inf - inf`` inside the projection used to surface as a finite, IN-heavy point ([0.578, 0.211, 0.211])."""
    inf = float("inf")
    for logits in ([0.0, 0.0, inf], [0.0, inf, 0.0], [-inf, 0.0, 0.0], [inf] * 3, [-inf] * 3):
        z = torch.tensor(logits, dtype=dtype)
        for radius in (0.0, 0.3):
            assert torch.isnan(sparsestmax(z, radius)).all(), (logits, radius)
        top = sparsestmax(z, max_radius(3))  # a vertex needs no projection: the largest logit's
        assert torch.equal(top, torch.zeros(3, dtype=dtype).scatter_(0, z.argmax().view(1), 1.0)), logits
    # one vector's infinity leaves the others in a batch alone
    batch = torch.tensor([[0.0, 0.0, inf], [0.0, 1.0, 2.0]], dtype=dtype)
    out = sparsestmax(batch, 0.3)
    assert torch.isnan(out[0]).all() and torch.equal(out[1], sparsestmax(batch[1], 0.3))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_no_dead_zone_near_the_centre(dtype):
    z = torch.tensor([1.0, 1.0, 1.0 + 1e-5], dtype=dtype, requires_grad=True)
    p = S.sparsestmax(z, 0.1)
    assert p.argmax() == 2  # BN slightly favoured stays favoured (float32 used to jump to IN)
    expected = S.sparsestmax(z.detach().double(), 0.1)
    torch.testing.assert_close(p.double(), expected, atol=1e-6, rtol=0)
    (p * torch.tensor([1.0, 2.0, 0.0], dtype=dtype)).sum().backward()
    assert z.grad.abs().max() > 1.0  # a real gradient (large near the centre, as the math says), not zero


@pytest.mark.parametrize("z", [[1e8, 1.0, 0.0], [1e30, 2.0, 1.0], [3e7, 3e7 + 4, 3e7 - 4]])
def test_huge_logits_stay_on_the_simplex(z):
    for dtype in (torch.float32, torch.float64):
        t = torch.tensor(z, dtype=dtype)
        for p in (S.sparsemax(t), S.sparsestmax(t, 0.3)):
            assert (p >= 0).all() and abs(p.sum().item() - 1) < 1e-6
        torch.testing.assert_close(S.sparsemax(t), S.sparsemax(t - t.max()))  # shift invariance
    assert torch.equal(S.sparsemax(torch.tensor([1e6] * 3)), torch.full((3,), 1 / 3))


def test_non_finite_inputs_give_nan_or_a_vertex_never_an_index_error():
    nan = float("nan")
    assert torch.isnan(S.sparsemax(torch.tensor([nan, 1.0, 0.0]))).all()
    assert torch.isnan(S.sparsemax(torch.full((3,), -float("inf")))).all()
    assert torch.isnan(S.sparsestmax(torch.tensor([nan, 1.0, 0.0]), 0.3)).all()
    assert torch.isnan(S.sparsestmax(torch.tensor([1.0, 2.0, 3.0]), torch.tensor(nan))).all()
    assert torch.isnan(S.sparsestmax(torch.tensor([1.0, 2.0, 3.0]), torch.tensor(-1.0))).all()
    assert torch.equal(S.sparsestmax(torch.tensor([1.0, 2.0, 0.0]), torch.tensor(float("inf"))),
                       torch.tensor([0.0, 1.0, 0.0]))
    assert torch.equal(S.sparsestmax(torch.tensor([1.0, 2.0, 0.0]), torch.tensor(1e9)), torch.tensor([0.0, 1.0, 0.0]))
    assert S.sparsemax(torch.zeros(3, 0)).shape == (3, 0)
