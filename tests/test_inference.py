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

pytest.importorskip("torchvision")

import torch
import torchvision
from torch import nn

import ssn_plugins as S
from ssn_plugins.checkpoints import read_published
from ssn_plugins.models import ResNet
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
    onnx = pytest.importorskip("onnx")  # the export extra; every other test here needs torch alone
    onnxruntime = pytest.importorskip("onnxruntime")
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
    pytest.importorskip("onnx")  # torch.onnx.export writes it
    onnxruntime = pytest.importorskip("onnxruntime")
    # the authors' math (official_compat) and a published-layout file, converted and loaded
    model = trained_looking_resnet(50, "SSN")
    for i, layer in enumerate(S.sparse_layers(model)[1::4]):  # some single-candidate selections too
        for vector in ("mean", "var"):
            layer.fix(vector, ("BN", "IN", "LN")[i % 3])
    source = tmp_path / "ssn50.pth"
    torch.save(published_layout(model), source)
    published = read_published(source)
    rebuilt = ResNet.from_architecture(published.architecture(), ceil_mode_pool=True).eval()
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


@pytest.mark.parametrize("selection,native", [(("BN", "BN"), nn.BatchNorm2d), (("IN", "IN"), S.FrozenSwitchNorm),
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
        # only what the selection uses; IN stays ours, as torch's InstanceNorm refuses 1x1 maps
        assert inference[2].candidates == tuple(dict.fromkeys(c for c in ("IN", "LN", "BN") if c in selection))
    with torch.no_grad():
        Reference(model, x).check(inference(x))


@pytest.mark.parametrize("candidate", ["IN", "LN", "BN", "GN4", "GN8"])
def test_inference_layer_takes_1x1_maps_and_empty_batches_as_the_trained_layer_does(candidate):
    groups = [c for c in ("GN4", "GN8") if c == candidate] or ["GN4"]
    layer = S.SparseSwitchNorm2d(8, candidates=("IN", "LN", "BN", *groups))
    layer.fix("mean", candidate)
    layer.fix("var", candidate)
    with torch.no_grad():
        layer.weight.uniform_(0.5, 1.5)
        layer.bias.uniform_(-0.2, 0.2)
    model = _fill_running_statistics(nn.Sequential(nn.ReLU(), layer), 4, 8, 5, 5)
    inference, report = S.for_inference(model)
    # GN8 on 8 channels is one channel a group, which GroupNorm refuses on 1x1 maps as InstanceNorm does
    assert type(inference[1]) is {"BN": nn.BatchNorm2d, "LN": nn.GroupNorm, "GN4": nn.GroupNorm}.get(
        candidate, S.FrozenSwitchNorm), report
    for x in (torch.randn(1, 8, 1, 1), torch.randn(3, 8, 1, 1), torch.randn(0, 8, 4, 4), torch.randn(2, 8, 5, 3)):
        with torch.no_grad():
            expected, out = model(x), inference(x)
        # (on 1x1 maps IN's part is 0 up to the rounding of x * scale + shift, scale = gamma / sqrt(eps))
        assert out.shape == expected.shape and torch.allclose(out, expected, atol=1e-3), (candidate, x.shape)


def _fill_running_statistics(model: nn.Module, *shape) -> nn.Module:
    model.train()
    with torch.no_grad():
        for seed in range(2):
            model(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 2 + 1)
    return model.eval()


def _relative_errors(model: nn.Module, inference: nn.Module, *shapes):
    with torch.no_grad():
        return [relative_error(inference(x), model(x)) for x in (torch.randn(s) for s in shapes)]


def test_pre_activation_norms_never_fold_into_the_following_convolution():
    class PreAct(nn.Module):  # norm -> ReLU -> conv, with names that read as pairs
        def __init__(self):
            super().__init__()
            self.bn1, self.conv1 = nn.BatchNorm2d(8), nn.Conv2d(8, 8, 3, padding=1)

        def forward(self, x):
            return self.conv1(torch.relu(self.bn1(x)))

    model = _fill_running_statistics(PreAct(), 16, 8, 6, 6)
    inference, report = S.for_inference(model)
    assert not report.folded and isinstance(inference.bn1, nn.BatchNorm2d)
    # the SN zoo's pre-activation ResNet (BN, and SSN fixed on BN) and torchvision's DenseNet (norm1 -> relu ->
    # conv1): only the norms that consume a convolution's output fold, on batch 1 and odd sizes alike
    from ssn_plugins.models import ResNet
    ssn_v2 = S.convert_norm(ResNet(18, "BN", version=2), to="SSN")
    for layer in S.sparse_layers(ssn_v2):
        layer.fix("mean", "BN")
        layer.fix("var", "BN")
    torch.manual_seed(0)
    for model in (ResNet(18, "BN", version=2), ssn_v2, torchvision.models.densenet121()):
        model = _fill_running_statistics(model, 4, 3, 64, 64)
        inference, report = S.for_inference(model)
        assert report.folded
        for name, _, after in report.folded:  # e.g. "layer1.0.bn2: folded into layer1.0.conv1", never conv2
            if "." in name and name.rsplit(".", 1)[1][-1].isdigit() and "layer" in name:
                assert int(after.rsplit(".", 1)[1][-1]) == int(name.rsplit(".", 1)[1][-1]) - 1, (name, after)
        errors = _relative_errors(model, inference, (1, 3, 64, 64), (3, 3, 37, 53), (2, 3, 32, 32))
        assert max(errors) < 1e-5, (type(model).__name__, errors, report)


def test_folding_follows_the_data_flow_not_the_structure():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)  # conv output used twice
            self.conv2, self.bn2 = nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)  # a pair by data flow, whatever the order
            self.shared = nn.Conv2d(4, 4, 1)  # called twice: folding one of its norms would change the other
            self.bn3, self.bn4 = nn.BatchNorm2d(4), nn.BatchNorm2d(4)

        def forward(self, x):
            y = self.conv1(x)
            z = self.bn1(y) + y
            z = self.bn2(self.conv2(z))
            return self.bn3(self.shared(z)) + self.bn4(self.shared(torch.relu(z)))

    class Untraceable(nn.Module):  # control flow on a tensor: fx cannot trace it, so nothing folds
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)

        def forward(self, x):
            return self.bn(self.conv(x)) if x.sum() > -1e9 else x

    model = _fill_running_statistics(nn.Sequential(Block(), Untraceable()), 8, 4, 6, 6)
    inference, report = S.for_inference(model)
    assert [(name, after) for name, _, after in report.folded] == [("0.bn2", "folded into 0.conv2")]
    assert {name for name, _, _ in report.kept} == {"0.bn1", "0.bn3", "0.bn4", "1.bn"}
    assert max(_relative_errors(model, inference, (1, 4, 6, 6), (3, 4, 5, 7))) < 1e-6


def test_folding_rules_and_what_is_kept():
    class Block(nn.Module):  # torchvision / OpenMMLab style: convK then bnK / normK / snK, traced
        def __init__(self):
            super().__init__()
            self.conv1, self.sn1 = nn.Conv2d(3, 4, 3, padding=1), S.SparseSwitchNorm2d(4)
            self.conv2, self.norm2 = nn.Conv2d(4, 4, 1, bias=False), nn.BatchNorm2d(4)
            self.conv3, self.bn4 = nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)  # other numbers: a pair by data flow

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
    assert {name for name, _, _ in report.folded} == {"0.sn1", "0.norm2", "0.bn4", "2"}
    assert ("0.sn1", "BatchNorm2d", "folded into 0.conv1") in report.folded
    assert inference[0].conv2.bias is not None  # a bias-free convolution gains the folded bias
    kept = {name: before for name, before, _ in report.kept}
    assert kept == {"4": "BatchNorm2d", "5": "ChannelEquilibrium"}  # after a transposed conv
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
