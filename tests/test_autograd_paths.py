"""The three ways a SwitchNorm layer is differentiated, against each other and against gradcheck.

Eager training uses a fused Function with a hand-written backward; eval,
``double_backward=True``, ``torch.func`` transforms, tracing and
``torch.compile`` use plain tensor operations (autograd). Both must give the
same values and gradients in float64 (to rounding) and in float32 and bf16
(to their precision); the plain path is the reference, checked by gradcheck.
"""
import itertools

import pytest
import torch
from torch.func import functional_call, grad, vmap

import ssn_plugins as S
from ssn_plugins.radius import batched_ratios
from ssn_plugins.functional import switch_norm

from helpers import (switch_norm_errors_against_float64, switch_norm_gradcheck, switch_norm_inputs,
                     switch_norm_value_and_grads)

pytestmark = pytest.mark.usefixtures("compiled_chain")  # the fused Function as users run it

CANDIDATE_SETS = [("IN", "LN", "BN"), ("IN", "LN"), ("LN", "BN"), ("IN", "BN"), ("BN",), ("IN",)]


@pytest.mark.parametrize("cands", CANDIDATE_SETS, ids="+".join)
@pytest.mark.parametrize("unbiased,affine,shape", [(False, True, (3, 4, 5, 6)), (True, False, (2, 3, 7)),
                                                   (False, True, (2, 3, 2, 3, 2))])
def test_fused_backward_equals_plain_autograd_and_gradcheck_float64(cands, unbiased, affine, shape):
    for training, with_running in [(True, False), (True, True), (False, True)]:
        inputs = switch_norm_inputs(cands, shape, torch.float64, affine)
        running = (torch.randn(shape[1], dtype=torch.float64), torch.rand(shape[1], dtype=torch.float64) + 0.5)
        fused = switch_norm_value_and_grads(inputs, cands, training, unbiased, False, [r.clone() for r in running]
                                 if with_running else None)
        plain = switch_norm_value_and_grads(inputs, cands, training, unbiased, True, [r.clone() for r in running]
                                 if with_running else None)
        for a, b in zip(fused, plain):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    assert switch_norm_gradcheck(cands, shape, affine, unbiased)


@pytest.mark.parametrize("dtype,tolerance", [(torch.float32, 1e-4), (torch.bfloat16, 3e-2)])
@pytest.mark.parametrize("cands", [("IN", "LN", "BN"), ("LN", "BN")], ids="+".join)
def test_fused_backward_in_float32_and_bf16_matches_float64(dtype, tolerance, cands):
    # The dtypes users train in: values and every gradient against the float64 result of the same inputs.
    errors = switch_norm_errors_against_float64(cands, dtype)
    assert max(errors) < tolerance, errors


def test_running_statistics_are_the_same_on_both_paths():
    inputs = switch_norm_inputs(("IN", "LN", "BN"), (4, 6, 5, 5), torch.float32, True)
    buffers = []
    for double_backward in (False, True):
        running = [torch.zeros(6), torch.ones(6)]
        switch_norm_value_and_grads(inputs, ("IN", "LN", "BN"), True, False, double_backward, running)
        buffers.append(running)
    for a, b in zip(*buffers):
        torch.testing.assert_close(a, b)
    assert not torch.equal(buffers[0][0], torch.zeros(6))


def test_in_place_operations_after_the_layer_are_allowed():
    m = S.SwitchNorm2d(4)
    x = torch.randn(2, 4, 5, 5, requires_grad=True)
    y = torch.relu_(m(x))  # ReLU(inplace=True) after the norm, as in every ResNet
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_double_backward_raises_a_clear_error_and_works_with_the_option():
    x = torch.randn(4, 6, 5, 5, dtype=torch.float64, requires_grad=True)
    fused = S.SwitchNorm2d(6).double()
    with pytest.raises(RuntimeError, match="double_backward=True"):
        torch.autograd.grad(fused(x).pow(3).sum(), x, create_graph=True)
    plain = S.SwitchNorm2d(6, double_backward=True).double()
    assert "double_backward=True" in repr(plain)
    # a gradient penalty: gradcheck of the gradient itself (second derivatives against finite differences)
    names = [n for n, _ in plain.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_() for p in plain.parameters())

    def input_grad(x, *ps):
        y = functional_call(plain, dict(zip(names, ps)), (x,))
        return torch.autograd.grad(y.pow(3).sum(), x, create_graph=True)[0]
    assert torch.autograd.gradgradcheck(lambda x, *ps: functional_call(plain, dict(zip(names, ps)), (x,)).pow(3),
                                        (x,) + params)
    penalty = input_grad(x, *params).square().sum()
    penalty.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in params)


@pytest.mark.parametrize("cls", [S.SwitchNorm2d, S.SparseSwitchNorm2d])
def test_torch_func_grad_and_vmap_work(cls):
    # torch.func transforms see plain operations (the fused Function is skipped under them)
    torch.manual_seed(0)
    x = torch.randn(3, 5, 4, 4, dtype=torch.float64)
    weights = torch.arange(5.0, dtype=x.dtype).view(5, 1, 1)
    with pytest.raises(RuntimeError, match="track_running_stats=False, or run it in eval mode"):
        tracked = cls(5).double()
        grad(lambda x: tracked(x).sum())(x)  # running statistics cannot be updated under torch.func
    with pytest.raises(RuntimeError, match="track_running_stats=False, or run it in eval mode"):
        tracked_params = {k: v.detach() for k, v in tracked.named_parameters()}
        grad(lambda p: functional_call(tracked, p, (x,)).sum())(tracked_params)
    m = cls(5, track_running_stats=False).double()
    params = {k: v.detach() for k, v in m.named_parameters()}

    def loss(params, x):
        return functional_call(m, params, (x,)).pow(2).mul(weights).sum()
    grads = grad(loss)(params, x)
    assert torch.equal(grad(lambda p: loss(p, x))(params)["weight"], grads["weight"])  # x captured, not an argument
    loss(dict(m.named_parameters()), x).backward()
    for name, g in grads.items():
        torch.testing.assert_close(g, getattr(m, name).grad, rtol=1e-10, atol=1e-12)
    # per-sample input gradients (batches of 2 inside vmap) of a layer in eval mode
    m = cls(5).double().eval()
    xs = torch.randn(4, 2, 5, 4, 4, dtype=torch.float64)
    per_sample = vmap(grad(lambda x: m(x).pow(3).sum()))(xs)
    for i in range(4):
        xi = xs[i].clone().requires_grad_()
        torch.testing.assert_close(per_sample[i], torch.autograd.grad(m(xi).pow(3).sum(), xi)[0])


def _fixed_logits(layer, name):
    # a fixed selection's logits take no part in the output
    index = {"mean_weight": 0, "var_weight": 1}.get(name)
    return index is not None and getattr(layer, "_selected", [None, None])[index] is not None


def _layers():
    fixed = S.SparseSwitchNorm2d(6)
    fixed.fix("mean", "IN")
    fixed.fix("var", "IN")
    mixed = S.SparseSwitchNorm2d(6)
    mixed.fix("mean", "BN")
    mixed.fix("var", "LN")
    half_open = S.SparseSwitchNorm2d(6, radius=0.3)
    half_open.fix("mean", "BN")
    return {"SN": S.SwitchNorm2d(6), "SSN soft": S.SparseSwitchNorm2d(6, radius=0.3), "SSN one fixed": half_open,
            "SSN fixed BN/LN": mixed, "SSN fixed IN": fixed, "SN video": S.SwitchNorm3d(6)}


@pytest.mark.parametrize("name", list(_layers()))
def test_torch_compile_has_no_graph_break_and_matches_eager(name):
    torch.manual_seed(0)
    layer = _layers()[name]
    eager = _layers()[name]
    eager.load_state_dict(layer.state_dict())
    shape = (4, 6, 3, 5, 5) if "video" in name else (4, 6, 7, 7)
    x = torch.randn(shape) * 2 + 0.5
    for mode in ("train", "eval"):
        layer.train(mode == "train")
        eager.train(mode == "train")
        torch._dynamo.reset()
        explanation = torch._dynamo.explain(layer)(x)
        assert explanation.graph_break_count == 0, explanation.break_reasons
        eager.load_state_dict(layer.state_dict())  # explain ran one forward (a running-statistics update)
        compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
        outputs = []
        for model, owner in ((compiled, layer), (eager, eager)):
            xi = x.clone().requires_grad_()
            y = model(xi)
            used = [p for n, p in owner.named_parameters() if p.requires_grad and not _fixed_logits(owner, n)]
            grads = torch.autograd.grad(y.pow(2).sum(), [xi] + used)
            outputs.append((y,) + grads)
        for a, b in zip(*outputs):  # float32 sums in another order: relative to each tensor's largest entry
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * max(0.1, b.abs().max().item()))
        for a, b in zip(layer.buffers(), eager.buffers()):
            torch.testing.assert_close(a, b)


def test_inductor_compiled_layer_matches_eager():
    # the real compiler once (C++ kernels on CPU; the other compile tests use aot_eager, which is fast)
    torch.manual_seed(0)
    layer, eager = S.SparseSwitchNorm2d(8, radius=0.3), S.SparseSwitchNorm2d(8, radius=0.3)
    eager.load_state_dict(layer.state_dict())
    x = torch.randn(4, 8, 6, 6, requires_grad=True)
    compiled = torch.compile(layer, fullgraph=True)
    results = []
    for model in (compiled, eager):
        y = model(x)
        results.append((y,) + torch.autograd.grad(y.square().sum(), [x, model.weight if model is eager
                                                                       else layer.weight]))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(layer.running_var, eager.running_var)


def test_compiled_resnet_training_step_matches_eager():
    # a whole converted torchvision ResNet step (SSN with ratios batched across layers, as RadiusScheduler sets
    # it up): no graph break anywhere, and the same loss, gradients and running statistics as eager
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    models = []
    for _ in range(2):
        torch.manual_seed(0)
        model = S.convert_norm(torchvision.models.resnet18(num_classes=5), to="SSN", radius=0.2)
        S.sparse_layers(model)[3].fix("mean", "BN")
        batched_ratios(model)
        models.append(model)
    compiled, eager = models
    x, target = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(compiled)(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    eager.load_state_dict(compiled.state_dict())  # explain ran one forward (a running-statistics update)
    step = torch.compile(compiled, backend="aot_eager")
    losses = []
    for model in (step, eager):
        loss = torch.nn.functional.cross_entropy(model(x), target)
        loss.backward()
        losses.append(loss)
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-5, atol=1e-6)
    for (name, a), b in zip(compiled.named_parameters(), eager.parameters()):
        if b.grad is not None:
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-3, atol=1e-5, msg=name)
    for a, b in zip(compiled.buffers(), eager.buffers()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["SN", "SSN soft", "SSN fixed BN/LN"])
def test_eval_layers_trace_and_export_without_the_export_call(name):
    onnx = pytest.importorskip("onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    layer = _layers()[name]
    layer.train()
    for _ in range(3):  # running statistics that are not the initial 0 / 1
        layer(torch.randn(4, 6, 7, 7) * 2 + 1)
    layer.eval()
    x = torch.randn(2, 6, 7, 7)
    with torch.no_grad():
        expected = layer(x)
        traced = torch.jit.trace(layer, x)
    torch.testing.assert_close(traced(x), expected)
    exported = torch.export.export(layer, (x,))
    torch.testing.assert_close(exported.module()(x), expected)
    program = torch.onnx.export(layer, (x,), dynamo=True)
    onnx.checker.check_model(program.model_proto)
    session = onnxruntime.InferenceSession(program.model_proto.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    torch.testing.assert_close(torch.from_numpy(out), expected, rtol=1e-5, atol=1e-5)
    assert not any(n.op_type.startswith("PythonOp") for n in program.model_proto.graph.node)


def test_the_plain_path_is_used_exactly_when_it_must_be():
    # eager training with gradients: the fused Function; eval, no_grad, tracing: plain operations
    m = S.SwitchNorm2d(4)
    x = torch.randn(2, 4, 3, 3, requires_grad=True)
    assert type(m(x).grad_fn).__name__ == "_SwitchNormFunctionBackward"
    assert type(m.eval()(x).grad_fn).__name__ != "_SwitchNormFunctionBackward"
    with torch.no_grad():
        assert m.train()(x).grad_fn is None
    assert type(S.SwitchNorm2d(4, double_backward=True)(x).grad_fn).__name__ != "_SwitchNormFunctionBackward"


@pytest.mark.parametrize("cands,training", list(itertools.product([("IN", "LN", "BN"), ("LN", "BN")], [True, False])))
def test_plain_moments_equal_the_native_kernel(cands, training):
    x = torch.randn(3, 5, 6, 6) * 4 + 2
    inputs = (x, torch.tensor([0.2, 0.3, 0.5])[:len(cands)], torch.tensor([0.5, 0.3, 0.2])[:len(cands)], None, None)
    with torch.no_grad():
        native = switch_norm(*inputs[:3], cands, training=training)
    plain = switch_norm(x.clone().requires_grad_(), *inputs[1:3], cands, training=training, double_backward=True)
    assert plain.grad_fn is not None and type(plain.grad_fn).__name__ != "_SwitchNormFunctionBackward"
    torch.testing.assert_close(native, plain, rtol=1e-5, atol=1e-5)
