"""The fused Function's ``(N, C)`` chain compiled by inductor, against the same Function run eagerly and against
autograd through plain operations: float64 (to rounding, and gradcheck), float32 and bf16 (against float64), the
running statistics, compiling at the first call, the fallback and the switch that turns it off.

Each test compiles its families on first use (a few seconds each), so the sets are few and each covers much.
"""
import warnings

import pytest
import torch

import ssn_plugins as S
from ssn_plugins.functional import _compiled, switch_norm
from ssn_plugins.functional._chain import ChainKernels

from helpers import (switch_norm_errors_against_float64, switch_norm_gradcheck, switch_norm_inputs,
                     switch_norm_value_and_grads)


@pytest.fixture
def fresh_families(monkeypatch):
    """No family compiled before the test (each compiles at its first call in it), all forgotten afterwards."""
    monkeypatch.delenv(_compiled.ENVIRONMENT_SWITCH, raising=False)
    _compiled.reset_families()
    yield
    _compiled.reset_families()


def _compiled_families():
    return [key for key, state in _compiled._families.items() if isinstance(state, ChainKernels)]


def _eager(fn):
    """``fn()`` with every family kept eager (the environment switch), then the switch as it was."""
    saved = _compiled._families.copy()
    _compiled._families.clear()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(_compiled.ENVIRONMENT_SWITCH, "0")
        result = fn()
    _compiled._families.clear()
    _compiled._families.update(saved)
    return result


@pytest.mark.parametrize("cands,unbiased,affine,shape", [
    (("IN", "LN", "BN"), False, True, (3, 4, 5, 6)),
    (("IN", "LN", "BN", "GN2"), True, False, (2, 4, 7)),
    (("LN", "BN"), False, True, (1, 3, 2, 3, 2)),  # N = 1
    (("IN",), False, True, (2, 3, 4)),
    (("BN", "GN3"), False, True, (3, 3, 2, 2)),  # C = groups
], ids=["IN+LN+BN", "GN unbiased no-affine", "LN+BN N=1 3d", "IN", "BN+GN C=groups"])
def test_compiled_chain_equals_eager_and_plain_autograd_and_gradchecks_in_float64(fresh_families, cands, unbiased,
                                                                                  affine, shape):
    running = (torch.randn(shape[1], dtype=torch.float64), torch.rand(shape[1], dtype=torch.float64) + 0.5)

    def run(double_backward):
        inputs = switch_norm_inputs(cands, shape, torch.float64, affine)
        return switch_norm_value_and_grads(inputs, cands, True, unbiased, double_backward, [r.clone() for r in running])
    results = [run(False), _eager(lambda: run(False)), run(True)]  # compiled, eager, plain autograd
    assert len(_compiled_families()) == 1, _compiled._families
    for other in results[1:]:
        for a, b in zip(results[0], other):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    assert switch_norm_gradcheck(cands, shape, affine, unbiased)
    assert len(_compiled_families()) == 1
    assert _eager(lambda: switch_norm_gradcheck(cands, shape, affine, unbiased))  # the fallback too


@pytest.mark.parametrize("dtype,tolerance", [(torch.float32, 1e-4), (torch.bfloat16, 3e-2)])
def test_compiled_and_eager_chains_in_float32_and_bf16_match_float64(fresh_families, dtype, tolerance):
    cands = ("IN", "LN", "BN")
    errors = switch_norm_errors_against_float64(cands, dtype)
    assert len(_compiled_families()) == 1
    assert max(errors) < tolerance, errors
    errors = _eager(lambda: switch_norm_errors_against_float64(cands, dtype))
    assert max(errors) < tolerance, errors


def test_non_contiguous_ratios_and_affine_parameters_give_the_eager_result(fresh_families):
    # the compiled kernels read their inputs with contiguous strides: columns of a table must be copied first
    torch.manual_seed(0)
    x = torch.randn(3, 4, 5, 5, requires_grad=True)
    table = torch.softmax(torch.randn(3, 2), 0).requires_grad_()  # column j: the ratios of vector j
    affine = torch.randn(4, 2).requires_grad_()
    results = []
    for run in (lambda f: f(), _eager):
        def call():
            y = switch_norm(x, table[:, 0], table[:, 1], ("IN", "LN", "BN"), weight=affine[:, 0],
                            bias=affine[:, 1], training=True)
            return (y,) + torch.autograd.grad(y.square().sum(), [x, table, affine])
        results.append(run(call))
    assert _compiled_families()
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_compiled_layers_train_like_eager_ones_running_statistics_and_autocast_included(fresh_families):
    # SN, soft SSN (SparsestMax ratios) and a video layer through several steps, one run compiled and one eager:
    # outputs, every gradient and the running statistics agree in float32, also under bf16 autocast
    def train(cls, shape, autocast):
        torch.manual_seed(0)
        layer = cls(8, **({"radius": 0.3} if cls is S.SparseSwitchNorm2d else {}))
        results = []
        for step in range(3):
            x = (torch.randn(shape) * 2 + 1).requires_grad_()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                y = layer(x)
            grads = torch.autograd.grad(y.float().square().sum(), [x] + list(layer.parameters()), allow_unused=True)
            results += [y.float()] + [g for g in grads if g is not None]
        return results + list(layer.buffers())

    for cls, shape in ((S.SwitchNorm2d, (4, 8, 7, 7)), (S.SparseSwitchNorm2d, (2, 8, 5, 5)),
                       (S.SwitchNorm3d, (2, 8, 3, 4, 4))):
        for autocast in (False, True):
            compiled = train(cls, shape, autocast)
            eager = _eager(lambda: train(cls, shape, autocast))
            for a, b in zip(compiled, eager):
                if not b.is_floating_point():
                    assert torch.equal(a, b)
                    continue
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * max(1.0, b.abs().max().item()))
    assert _compiled_families()


def test_a_family_compiles_at_its_first_call_and_serves_every_shape_after(fresh_families, caplog):
    # at the first call, whatever the process ran before: a run resumed in a new process rounds like the
    # uninterrupted one (tests/test_reproduction.py checks that bitwise)
    layer = S.SwitchNorm2d(6)
    with caplog.at_level("INFO", logger=_compiled.__name__):
        layer(torch.randn(2, 6, 4, 4, requires_grad=True)).sum().backward()
    (key,) = _compiled_families()
    assert _compiled.compile_seconds()[key] > 0
    assert "compiled the (N, C)-sized statistics of SwitchNorm layers (IN+LN+BN, cpu, float32)" in caplog.text
    for shape in ((5, 6, 3, 3), (1, 6, 7, 2), (3, 6, 1, 1)):  # other sizes: the same kernels
        layer(torch.randn(shape, requires_grad=True)).sum().backward()
    S.SwitchNorm3d(6)(torch.randn(2, 6, 2, 3, 3, requires_grad=True)).sum().backward()
    assert _compiled_families() == [key]
    S.SwitchNorm2d(6, candidates=("IN", "LN")).double()(torch.randn(2, 6, 4, 4, dtype=torch.float64,
                                                                    requires_grad=True)).sum().backward()
    assert len(_compiled_families()) == 2  # another candidate set and dtype: another family


def test_a_family_that_fails_to_compile_warns_once_and_stays_eager(fresh_families, monkeypatch):
    def broken(fn, example_inputs, device_type):
        raise RuntimeError("no C++ compiler here")
    monkeypatch.setattr(_compiled, "compile_function", broken)
    layer = S.SwitchNorm2d(6)
    x = torch.randn(3, 6, 4, 4, requires_grad=True)
    failure = r"compiling them failed with RuntimeError: no C\+\+ compiler here"
    with pytest.warns(RuntimeWarning, match=failure) as caught:
        first = layer(x)
        second = layer(x)
    assert len([w for w in caught if issubclass(w.category, RuntimeWarning)]) == 1
    assert not _compiled_families()
    torch.testing.assert_close(first, second)
    expected = _eager(lambda: S.SwitchNorm2d(6)(x))
    torch.testing.assert_close(first, expected)


def test_a_compiled_chain_that_disagrees_with_the_eager_one_is_not_used(fresh_families, monkeypatch):
    # the check of the compiled kernels on other shapes, seen to work: a kernel 1% off is refused
    def off_by_one_percent(fn, example_inputs, device_type):
        return lambda inputs: [t * 1.01 for t in fn(*inputs)]
    monkeypatch.setattr(_compiled, "compile_function", off_by_one_percent)
    x = torch.randn(3, 6, 4, 4, requires_grad=True)
    with pytest.warns(RuntimeWarning, match="compiling them failed with AssertionError"):
        y = S.SwitchNorm2d(6)(x)
    assert not _compiled_families()
    torch.testing.assert_close(y, _eager(lambda: S.SwitchNorm2d(6)(x)))


def test_the_environment_switch_keeps_every_family_eager(fresh_families, monkeypatch):
    monkeypatch.setenv(_compiled.ENVIRONMENT_SWITCH, "0")
    layer = S.SwitchNorm2d(6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(3):
            layer(torch.randn(2, 6, 4, 4, requires_grad=True)).sum().backward()
    assert not _compiled._families and not _compiled.compile_seconds()
