"""timm: SN/SSN as ``norm_layer`` in ``timm.create_model`` (norm + activation models too), ``convert_norm`` on
timm models keeping their fused activations, and a few training steps with the recipe."""
import functools
import warnings

import pytest

pytest.importorskip("timm")

import timm
import torch
from torch import nn

import ssn_plugins as S
import ssn_plugins.timm as st
from helpers import relative_error

ACTIVATIONS = (nn.ReLU, nn.SiLU, nn.Hardswish, nn.GELU)


def activations(model):
    return sum(isinstance(m, ACTIVATIONS) for m in model.modules())


def norm_kinds(model):
    return {type(m).__name__ for m in model.modules() if isinstance(m, S.SwitchNorm)}


@pytest.mark.parametrize("name, kind", [("efficientnet_b0", "SparseSwitchNormAct2d"),
                                        ("regnety_002", "SparseSwitchNormAct2d"), ("resnet18", "SparseSwitchNorm2d")])
@pytest.mark.parametrize("norm_layer", ["ssn", S.SparseSwitchNorm2d, functools.partial(S.SparseSwitchNorm2d,
                                                                                         candidates=("IN", "BN"))],
                         ids=["name", "class", "partial"])
def test_create_model_accepts_ssn_and_keeps_every_activation(name, kind, norm_layer):
    reference = timm.create_model(name, num_classes=3)
    model = timm.create_model(name, num_classes=3, norm_layer=norm_layer)
    assert norm_kinds(model) == {kind}
    assert activations(model) == activations(reference) > 0
    if isinstance(norm_layer, functools.partial):
        assert {m.candidates for m in model.modules() if isinstance(m, S.SwitchNorm)} == {("IN", "BN")}
    out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 3) and torch.isfinite(out).all()


def test_norm_act_layers_take_the_models_activation_and_timms_arguments():
    model = timm.create_model("efficientnet_b0", num_classes=3, norm_layer="sn")
    assert type(model.bn1).__name__ == "SwitchNormAct2d" and isinstance(model.bn1.act, nn.SiLU)
    assert model.bn1.act.inplace  # EfficientNet asks for inplace=True
    layer = st.SparseSwitchNormAct2d(8, act_layer="gelu", apply_act=True, drop_layer=nn.Dropout, radius=0.4)
    assert type(layer.act).__name__ == "GELU" and isinstance(layer.drop, nn.Dropout)  # (timm's own GELU class)
    assert float(layer.radius) == pytest.approx(0.4)
    assert isinstance(st.SparseSwitchNormAct2d(8, apply_act=False).act, nn.Identity)


def test_convert_norm_keeps_timms_fused_activations_and_the_layer_ranks():
    model = timm.create_model("efficientnet_b0", num_classes=3)
    acts = {name: m.act for name, m in model.named_modules() if hasattr(m, "act") and isinstance(m, nn.BatchNorm2d)}
    silu_before = activations(model)
    S.convert_norm(model, to="SSN")
    assert activations(model) == silu_before == 49
    assert norm_kinds(model) == {"SparseSwitchNormAct2d"}
    modules = dict(model.named_modules())
    assert all(modules[name].act is act for name, act in acts.items())  # the very modules, settings and all
    assert torch.isfinite(model(torch.randn(2, 3, 64, 64))).all()


def test_without_the_adapter_timms_norm_act_layers_are_refused_and_the_adapter_is_reversible():
    st.unregister()
    try:
        with pytest.raises(TypeError, match="BatchNormAct2d.*import ssn_plugins.timm first"):
            S.convert_norm(timm.create_model("efficientnet_b0"), to="SSN")
        with pytest.raises(Exception):
            timm.create_model("efficientnet_b0", norm_layer="ssn")
    finally:
        st.register()
    assert norm_kinds(timm.create_model("efficientnet_b0", norm_layer="ssn")) == {"SparseSwitchNormAct2d"}


def test_convert_sync_on_a_timm_model_keeps_the_activations():
    model = timm.create_model("efficientnet_b0", num_classes=3, norm_layer="ssn")
    S.convert_sync(model)
    assert norm_kinds(model) == {"SyncSparseSwitchNormAct2d"} and activations(model) == 49


@pytest.mark.usefixtures("compiled_chain")
def test_a_timm_model_trains_with_ssn_and_the_recipe_until_every_layer_selects():
    torch.manual_seed(0)
    model = timm.create_model("efficientnet_b0", num_classes=3, norm_layer="ssn")
    steps = 12
    optimizer = torch.optim.SGD(S.param_groups(model, lr=0.01, weight_decay=1e-4), lr=0.01, momentum=0.9)
    S.install_ratio_clipping(optimizer, model)
    scheduler = S.RadiusScheduler(model, total_iters=steps - 2)  # one-hot from radius 0.82 on
    x, target = torch.randn(4, 3, 48, 48), torch.tensor([0, 1, 2, 1])
    radii, losses = [], []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in range(steps):
            radii.append(scheduler.step(step)["radius"])
            loss = nn.functional.cross_entropy(model(x), target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    recipe_warnings = [str(w.message) for w in caught if str(w.message).startswith(("SSN layers", "SN/SSN ratio"))]
    assert recipe_warnings == []
    assert radii == sorted(radii) and radii[0] == 0.0 and radii[-1] == 1.0
    layers = S.sparse_layers(model)
    assert len(layers) == 49 and all(None not in layer.selection for layer in layers)  # every vector selected
    assert all(torch.isfinite(torch.tensor(losses)))
    assert activations(model) == 49
    model.eval()
    y = torch.randn(2, 3, 48, 48)
    inference, report = S.for_inference(model)
    assert len(report.replaced) == 49 and activations(inference) == 49
    torch.testing.assert_close(inference(y), model(y), rtol=1e-4, atol=1e-4)
    # bf16 keeps 8 bits: the bf16 inference model is about as close to the float32 model as the bf16 original
    with torch.no_grad():
        reference = model(y)
        original = model.to(torch.bfloat16)(y.bfloat16()).float()
        bf16 = S.for_inference(model)[0](y.bfloat16()).float()
    assert relative_error(bf16, reference) < 1.25 * relative_error(original, reference) + 1e-3
