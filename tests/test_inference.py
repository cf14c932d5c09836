"""``ssn_plugins.for_inference``: trained SN/SSN models as native layers, folded into convolutions, exported.

Every check compares the inference model, and the programs exported from it
(TorchScript, torch.export, ONNX in onnxruntime), with the original model in
eval mode on crops of a real photograph, in relative error ``||a - b|| / ||b||``.
The reference is the original model evaluated in float64: float32 outputs
must lie within 1e-5 of it and be about as close to it as the float32
original itself (within 1.2x), so that folding's extra rounding of the
weights is held to the model's own float32 accuracy. These randomly
initialised, trained-looking networks amplify rounding: the float32
ResNet-50 with SSN is 8e-6 from its float64 evaluation, and 1-ulp noise on
its convolution weights alone moves its output by as much. The ResNets'
outputs are their pooled 2048-d features: a random classification head sums
2048 of them with random signs, which multiplies every error by about 40.
"""
import copy

import pytest

pytest.importorskip("onnx")  # needs the full stack; a torch-only install runs the core tests
pytest.importorskip("onnxruntime")
pytest.importorskip("torchvision")

import onnx
import onnxruntime

import torch
import torchvision
from torch import nn

import ssn_plugins as S
from ssn_plugins.checkpoints import build_resnet, read_published
from helpers import Reference, relative_error, photo_batch, published_layout, trained_looking_resnet


def _trained_looking(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random ratio logits, affine parameters and running statistics from real crops, as after training."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, S.SwitchNorm):
                for p in (m.mean_weight, m.var_weight):
                    p.copy_(torch.randn(p.shape, generator=g))
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.bias.shape, generator=g) * 0.4 - 0.2)
    S.recompute_batch_statistics(model, [photo_batch(crops=4, seed=s) for s in range(2)])
    return model.eval()


def _torchvision_resnet50(norm: str) -> nn.Module:
    torch.manual_seed(0)
    model = S.convert_norm(torchvision.models.resnet50(), to=norm, **({"radius": 0.3} if norm == "SSN" else {}))
    model.fc = nn.Identity()  # the features (see the module docstring)
    if norm == "SSN":
        # a mix, as after training: half the layers fixed on BN, some on IN or LN (mean and variance apart),
        # the rest soft; the soft ones' SparsestMax ratios at radius 0.3 are sparse, some one-hot
        for i, layer in enumerate(S.sparse_layers(model)):
            if i % 2 == 0:
                layer.fix("mean", "BN")
                layer.fix("var", "BN")
            elif i % 5 == 1:
                layer.fix("mean", "IN")
                layer.fix("var", "LN")
    return _trained_looking(model)


@pytest.fixture(scope="module", params=["SN", "SSN"])
def resnet50(request):
    return request.param, _torchvision_resnet50(request.param)


def test_torchvision_resnet50_equals_the_original_and_every_fold_is_reported(resnet50):
    norm, model = resnet50
    x = photo_batch(crops=2)
    reference = Reference(model, x)
    with torch.no_grad():
        inference, report = S.for_inference(model)
        reference.check(inference(x))
    assert model.training is False and any(isinstance(m, S.SwitchNorm) for m in model.modules())  # a copy
    assert not any(isinstance(m, S.SwitchNorm) for m in inference.modules())
    assert len(report.replaced) == 53
    kinds = [after for _, _, after in report.replaced]
    if norm == "SN":  # softmax ratios are never zero: every layer mixes all three
        assert set(kinds) == {"FrozenSwitchNorm(IN+LN+BN)"} and not report.folded
    else:
        native_bn = [name for name, _, after in report.replaced if after == "BatchNorm2d"]
        assert len(native_bn) >= 27  # the 27 fixed on BN, and soft ones SparsestMax made one-hot on BN
        assert {name for name, _, _ in report.folded} == set(native_bn)  # each follows a convolution
        assert any(after == "FrozenSwitchNorm(IN+LN)" for after in kinds)
        assert not any(isinstance(m, nn.BatchNorm2d) for m in inference.modules())
        assert "norms folded into convolutions" in report.summary() and "layer1.0.bn1" in str(report)
    for name, _, after in report.folded:
        assert isinstance(inference.get_submodule(name), nn.Identity) and after.startswith("folded into ")


def test_exported_resnet50_runs_in_onnxruntime_torch_export_and_torchscript(resnet50, tmp_path):
    _, model = resnet50
    x = photo_batch(crops=2)
    inference, _ = S.for_inference(model)
    path = tmp_path / "model.onnx"
    torch.onnx.export(inference, (x,), path, dynamo=True)
    onnx.checker.check_model(onnx.load(path))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    other = photo_batch(crops=2, seed=7)  # not the export's example input
    reference = Reference(model, other)
    (out,) = session.run(None, {session.get_inputs()[0].name: other.numpy()})
    reference.check(torch.from_numpy(out))
    program = torch.export.export(inference, (x,))
    with torch.no_grad():
        reference.check(program.module()(other))
        reference.check(torch.jit.trace(inference, x)(other))


def test_our_resnet_from_a_published_layout_checkpoint(tmp_path):
    # the authors' math (official_compat) and a published-layout file, converted and loaded
    model = trained_looking_resnet(50, "SSN")
    for i, layer in enumerate(S.sparse_layers(model)[1::4]):  # some single-candidate selections too
        for vector in ("mean", "var"):
            layer.fix(vector, ("BN", "IN", "LN")[i % 3])
    source = tmp_path / "ssn50.pth"
    torch.save(published_layout(model), source)
    published = read_published(source)
    rebuilt = build_resnet(published.architecture(), ceil_mode_pool=True).eval()
    rebuilt.load_state_dict(published.state_dict)
    rebuilt.fc = nn.Identity()  # the features (see the module docstring)
    x = photo_batch(crops=2, size=(160, 192))
    reference = Reference(rebuilt, x)
    with torch.no_grad():
        inference, report = S.for_inference(rebuilt)
        reference.check(inference(x))
    # the authors' unbiased IN variance has no native module: IN/LN selections stay FrozenSwitchNorm
    assert all(m.official_compat for m in inference.modules() if isinstance(m, S.FrozenSwitchNorm))
    assert any(after == "FrozenSwitchNorm(IN)" for _, _, after in report.replaced)
    assert not any(after.startswith("GroupNorm") for _, _, after in report.replaced)  # LN is the authors' too
    assert report.folded  # BN selections (running statistics) fold whatever the variance convention
    exported = torch.onnx.export(inference, (x,), dynamo=True)
    session = onnxruntime.InferenceSession(exported.model_proto.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    reference.check(torch.from_numpy(out))


@pytest.mark.parametrize("selection,native", [(("BN", "BN"), nn.BatchNorm2d), (("IN", "IN"), nn.InstanceNorm2d),
                                              (("LN", "LN"), nn.GroupNorm), (("BN", "LN"), S.FrozenSwitchNorm)])
def test_each_fixed_selection_becomes_its_native_module(selection, native):
    layer = S.SparseSwitchNorm2d(6)
    layer.fix("mean", selection[0])
    layer.fix("var", selection[1])
    # a ReLU between the convolution and the norm: nothing folds
    model = _trained_looking(nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), layer))
    x = photo_batch(crops=2)
    inference, report = S.for_inference(model)
    assert type(inference[2]) is native and not report.folded
    if native is S.FrozenSwitchNorm:
        assert inference[2].candidates == ("LN", "BN")  # only what the selection uses
    with torch.no_grad():
        Reference(model, x).check(inference(x))


def test_folding_rules_and_what_is_kept():
    class Block(nn.Module):  # torchvision / OpenMMLab style: convK then bnK / normK / snK
        def __init__(self):
            super().__init__()
            self.conv1, self.sn1 = nn.Conv2d(3, 4, 3, padding=1), S.SparseSwitchNorm2d(4)
            self.conv2, self.norm2 = nn.Conv2d(4, 4, 1, bias=False), nn.BatchNorm2d(4)
            self.conv3, self.bn4 = nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)  # different numbers: not a pair

        def forward(self, x):
            return self.bn4(self.conv3(self.norm2(self.conv2(self.sn1(self.conv1(x))))))

    model = nn.Sequential(Block(), nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4), nn.ConvTranspose2d(4, 4, 2),
                          nn.BatchNorm2d(4), S.ChannelEquilibrium(4, group_size=2))
    model[0].sn1.fix("mean", "BN")
    model[0].sn1.fix("var", "BN")
    model.train()
    x = photo_batch(crops=2)
    for _ in range(3):  # running statistics from real data
        model(x)
    reference = Reference(model.eval(), x)
    with torch.no_grad():
        inference, report = S.for_inference(model)
        reference.check(inference(x))
        unfolded, unfolded_report = S.for_inference(model, fold=False)
        reference.check(unfolded(x))
    assert {name for name, _, _ in report.folded} == {"0.sn1", "0.norm2", "2"}
    assert ("0.sn1", "BatchNorm2d", "folded into 0.conv1") in report.folded
    assert inference[0].conv2.bias is not None  # a bias-free convolution gains the folded bias
    kept = {name: before for name, before, _ in report.kept}
    assert kept == {"0.bn4": "BatchNorm2d", "4": "BatchNorm2d", "5": "ChannelEquilibrium"}  # after a transposed conv
    assert not unfolded_report.folded and isinstance(unfolded[0].sn1, nn.BatchNorm2d)


def test_detectron2_style_conv_with_norm_is_folded():
    class ConvWithNorm(nn.Conv2d):  # detectron2.layers.Conv2d: the norm runs inside the convolution's forward
        def __init__(self, *args, norm=None, **kwargs):
            super().__init__(*args, **kwargs)
            self.norm = norm

        def forward(self, x):
            x = super().forward(x)
            return self.norm(x) if self.norm is not None else x

    layer = S.SparseSwitchNorm2d(5)
    layer.fix("mean", "BN")
    layer.fix("var", "BN")
    model = _trained_looking(nn.Sequential(ConvWithNorm(3, 5, 3, bias=False, norm=layer), nn.ReLU()))
    x = photo_batch(crops=2)
    inference, report = S.for_inference(model)
    assert report.folded == [("0.norm", "BatchNorm2d", "folded into 0")]
    with torch.no_grad():
        Reference(model, x).check(inference(x))


def test_bf16_model():
    # bf16 keeps 8 bits, so its outputs are compared with the float32 model's: the inference model
    # (whose folded weights are rounded once more) is about as close to them as the bf16 original
    model = _torchvision_resnet50("SSN")
    x = photo_batch(crops=2)
    with torch.no_grad():
        reference = model(x)
        model = model.to(torch.bfloat16)
        original = model(x.bfloat16())
        inference, _ = S.for_inference(model)
        out = inference(x.bfloat16())
    assert out.dtype == torch.bfloat16
    assert relative_error(out, reference) < 1.25 * relative_error(original, reference)


def test_inplace_and_the_training_mode():
    model = _torchvision_resnet50("SN").train()
    copy_before = copy.deepcopy(model)
    inference, _ = S.for_inference(model, inplace=True)
    assert inference is model and not inference.training
    x = photo_batch(crops=2)
    with torch.no_grad():
        Reference(copy_before.eval(), x).check(inference(x))


def test_float64_model_keeps_float64_ratios():
    model = _trained_looking(nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), S.SwitchNorm2d(6))).double()
    x = photo_batch(crops=2).double()
    inference, _ = S.for_inference(model)
    assert inference[2].mean_ratios.dtype == torch.float64
    with torch.no_grad():
        assert relative_error(inference(x), model(x)) < 1e-13
