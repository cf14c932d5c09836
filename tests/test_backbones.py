"""The SN/SSN ResNet family and the converters from the published checkpoint layout.

The published files cannot be downloaded here, so checkpoints are written in
their layout from our ResNet (random weights and ratio logits, some SSN
selections fixed, batch-average statistics from real photo crops) and
converted; detectron2's ResNet, mmdet's ResNet and the torch model must then
give the same features on a real image.
"""
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("PIL")  # the real photos; the framework tests ask for their framework themselves

import torch
from torch import nn

import ssn_plugins as S
from ssn_plugins.checkpoints import (I3D_R50_INFLATE, ConversionError, read_published, to_detectron2, to_i3d,
                                     to_openmmlab)
from ssn_plugins.models import ResNet

from helpers import (ce_release_layout, d2_resnet50, photo_batch, published_layout, trained_looking_ce_resnet,
                     trained_looking_resnet)

REPO = Path(__file__).resolve().parents[1]

@pytest.fixture(scope="module")
def ssn50(tmp_path_factory):
    model = trained_looking_resnet(50, "SSN")
    path = tmp_path_factory.mktemp("published") / "ssn50.pth"
    torch.save(published_layout(model), path)
    return model, read_published(path)


@pytest.mark.parametrize("depth", [18, 34, 50, 101])
@pytest.mark.parametrize("norm", ["BN", "GN", "SN", "SSN", "SyncSSN"])
def test_resnet_family_builds_and_runs(depth, norm):
    model = ResNet(depth, norm, num_classes=10)
    expected_norms = {18: 20, 34: 36, 50: 53, 101: 104}[depth]
    assert sum(isinstance(m, (torch.nn.BatchNorm2d, torch.nn.GroupNorm, S.SwitchNorm)) for m in model.modules()) \
        == expected_norms
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 10)


def test_resnet_variants():
    v2 = ResNet(50, "SN", version=2)
    assert "sn_out.weight" in v2.state_dict() and "layer1.0.downsample.weight" in v2.state_dict()
    assert v2(torch.randn(2, 3, 64, 64)).shape == (2, 1000)
    ce = ResNet(50, "BN", ce=True, ce_group_sizes=(16, 16))
    ce_layers = [n for n, m in ce.named_modules() if isinstance(m, S.ChannelEquilibrium)]
    assert ce_layers[0] == "ce1" and len(ce_layers) == 1 + 3 + 4 + 6  # stem + stages 1-3, not stage 4
    assert not any(n.startswith("layer4") for n in ce_layers)
    assert ce(torch.randn(2, 3, 64, 64)).shape == (2, 1000)
    assert ce.ce1.group_size == ce.layer2[0].ce.group_size == 16
    paper = ResNet(50, "BN", ce=True)  # the published CE-ResNet-50: groups of 64 in the stem, 16 in the blocks
    assert paper.ce1.group_size == 64 and paper.layer3[2].ce.group_size == 16
    zero = ResNet(18, "SN", last_gamma=True)
    assert torch.count_nonzero(zero.layer1[0].sn2.weight) == 0 and torch.count_nonzero(zero.layer1[0].sn1.weight) > 0
    # the SSN release's stem: padding 0 with ceil_mode gives the same size, other values
    x = torch.randn(1, 3, 224, 224)
    a, b = ResNet(18, "BN", num_classes=0).eval(), ResNet(18, "BN", ceil_mode_pool=True, num_classes=0).eval()
    b.load_state_dict(a.state_dict())
    assert a.stages(x)["stem"].shape == b.stages(x)["stem"].shape == (1, 64, 56, 56)
    assert not torch.allclose(a.stages(x)["stem"], b.stages(x)["stem"])
    with pytest.raises(ValueError, match="depth"):
        ResNet(42)
    with pytest.raises(ValueError, match="unknown norm"):
        ResNet(18, "XN")


def test_read_published_recovers_architecture_and_outputs(ssn50):
    model, published = ssn50
    assert (published.depth, published.version, published.sparse, published.candidates) == (50, 1, True,
                                                                                            ("IN", "LN", "BN"))
    assert published.ceil_mode_pool and published.num_classes == 1000
    fixed = sum(s is not None for m in S.sparse_layers(model) for s in m.selection)
    assert fixed >= 36 and f"fixed selections: {fixed} of 106" in published.report[1]  # 36 fixed by hand
    rebuilt = S.models.ResNet.from_architecture(published.architecture(), ceil_mode_pool=False).eval()
    rebuilt.load_state_dict(published.state_dict)
    assert [m.selection for m in S.sparse_layers(rebuilt)] == [m.selection for m in S.sparse_layers(model)]
    x = photo_batch()
    torch.testing.assert_close(rebuilt(x), model(x))


def test_read_published_variants(tmp_path):
    sn_v2 = trained_looking_resnet(18, "SN", using_bn=False, version=2)
    raw = published_layout(sn_v2)["state_dict"]  # the file *is* the state dict, with module. prefixes
    published = read_published(raw)
    assert (published.depth, published.version, published.candidates, published.sparse) == (18, 2, ("IN", "LN"),
                                                                                            False)
    rebuilt = S.models.ResNet.from_architecture(published.architecture()).eval()
    rebuilt.load_state_dict(published.state_dict)
    x = photo_batch()
    torch.testing.assert_close(rebuilt(x), sn_v2(x))
    broken = dict(raw)
    broken["module.layer1.0.extra.weight"] = torch.zeros(3)
    with pytest.raises(ConversionError, match="unrecognised keys"):
        read_published(broken)
    with pytest.raises(ConversionError, match="not a state dict"):
        read_published({"epoch": 3})
    with pytest.raises(ConversionError, match="v2"):
        to_detectron2(published)


def assert_same_features_in_detectron2(model, converted, d2, tmp_path):
    """``converted`` loads into ``d2`` through DetectionCheckpointer exactly and gives ``model``'s features."""
    from detectron2.checkpoint import DetectionCheckpointer

    path = tmp_path / "backbone_d2.pkl"
    with open(path, "wb") as f:
        pickle.dump(converted, f)
    d2.eval()
    checkpointer = DetectionCheckpointer(d2)
    incompatible = checkpointer._load_model(checkpointer._load_file(str(path)))
    assert not incompatible.missing_keys and not incompatible.unexpected_keys
    x = photo_batch()
    ours, theirs = model.stages(x), d2(x)
    for name in ("res2", "res3", "res4", "res5"):
        torch.testing.assert_close(theirs[name], ours[name], rtol=1e-4, atol=1e-4, msg=name)


def test_detectron2_backbone_gives_the_same_features(ssn50, tmp_path):
    pytest.importorskip("detectron2")
    model, published = ssn50
    converted, dropped = to_detectron2(published)
    assert dropped == ["fc.weight", "fc.bias"]
    assert_same_features_in_detectron2(model, converted, d2_resnet50(S.SparseSwitchNorm2d), tmp_path)


def test_openmmlab_backbone_gives_the_same_features(tmp_path):
    pytest.importorskip("mmdet")
    import ssn_plugins.openmmlab  # noqa: F401  (registers SN/SSN)
    from mmdet.models.backbones import ResNet as MMResNet
    from mmengine.runner import load_checkpoint

    model = trained_looking_resnet(50, "SN")  # the SN release's stem, which mmdet's ResNet has
    published = read_published(published_layout(model), ceil_mode_pool=False)
    converted, dropped = to_openmmlab(published)
    path = tmp_path / "sn50_mm.pth"
    torch.save(converted, path)
    mm = MMResNet(depth=50, norm_cfg=dict(type="SN"), style="pytorch", out_indices=(0, 1, 2, 3))
    assert mm.norm1 is mm.bn1 and isinstance(mm.bn1, S.SwitchNorm2d)
    load_checkpoint(mm, str(path), strict=True)
    mm.eval()  # mmdet's ResNet.train() returns None, so this cannot be chained
    x = photo_batch()
    ours, theirs = model.stages(x), mm(x)
    for name, feature in zip(("res2", "res3", "res4", "res5"), theirs):
        torch.testing.assert_close(feature, ours[name], rtol=1e-4, atol=1e-4, msg=name)


def test_i3d_checkpoint_loads_into_mmaction_resnet3d(ssn50, tmp_path):
    pytest.importorskip("mmaction")
    import ssn_plugins.openmmlab  # noqa: F401
    from mmaction.models.backbones import ResNet3d

    model, published = ssn50
    converted, _ = to_i3d(published)
    path = tmp_path / "ssn50_i3d.pth"
    torch.save(converted, path)
    i3d = ResNet3d(depth=50, pretrained=None, pretrained2d=False, norm_cfg=dict(type="SSN3d"),
                   conv1_kernel=(5, 7, 7), conv1_stride_t=2, pool1_stride_t=2, inflate=I3D_R50_INFLATE,
                   inflate_style="3x1x1", zero_init_residual=False)
    result = i3d.load_state_dict(torch.load(path, weights_only=True)["state_dict"], strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    # selections, ratios and statistics survive; kernels sum back to the 2-D ones over time
    assert [m.selection for m in S.sparse_layers(i3d)] == [m.selection for m in S.sparse_layers(model)]
    torch.testing.assert_close(i3d.layer2[0].conv1.bn.running_var, model.layer2[0].sn1.running_var)
    assert i3d.layer1[0].conv1.conv.weight.shape[2] == 3 and i3d.layer1[0].conv2.conv.weight.shape[2] == 1
    torch.testing.assert_close(i3d.conv1.conv.weight.sum(2), model.conv1.weight)
    torch.testing.assert_close(i3d.layer1[0].conv1.conv.weight.sum(2), model.layer1[0].conv1.weight)
    video = torch.randn(1, 3, 8, 64, 64)
    i3d.eval()
    assert torch.isfinite(i3d(video)).all()


@pytest.mark.parametrize("norm", ["SN", "SSN"])
def test_i3d_without_temporal_kernels_gives_the_2d_features_on_a_still_video(norm):
    """Ratios, selections, running statistics and affine parameters all reach the right 5-D layers: with
    1-frame kernels, a video of one repeated photo gives the 2-D model's features at every frame (eval mode;
    IN over (T, H, W) and LN over (C, T, H, W) of identical frames equal IN / LN of one frame)."""
    pytest.importorskip("mmaction")
    import ssn_plugins.openmmlab  # noqa: F401
    from mmaction.models.backbones import ResNet3d

    model = trained_looking_resnet(50, norm)  # the padded stem pooling, which ResNet3d has
    published = read_published(published_layout(model), ceil_mode_pool=False)
    flat = tuple((0,) * n for n in (3, 4, 6, 3))
    converted, _ = to_i3d(published, conv1_t=1, inflate=flat)
    i3d = ResNet3d(depth=50, pretrained=None, pretrained2d=False, norm_cfg=dict(type=f"{norm}3d"),
                   conv1_kernel=(1, 7, 7), conv1_stride_t=1, pool1_stride_t=1, inflate=flat)
    i3d.load_state_dict(converted["state_dict"], strict=True)
    switchable = [m for net in (model, i3d) for m in net.modules() if isinstance(m, S.SwitchNorm)]
    assert all(m.official_compat for m in switchable)  # the authors' math travels with the converted file
    for m in switchable:
        # the unbiased IN variance over (T, H, W) of identical frames is not the one over (H, W): compare the
        # paper's math, for which the identity is exact
        m.official_compat = False
    model.double().eval(), i3d.double().eval()  # float64: 53 layers of 3-D against 2-D kernels sum in other orders
    x = photo_batch(size=(96, 128)).double()
    with torch.no_grad():
        expected = model.stages(x)["res5"]
        video = i3d(x.unsqueeze(2).repeat(1, 1, 4, 1, 1))  # (N, C, T, H, W), 4 identical frames
    assert video.shape[2] == 2  # mmaction2's pool2 halves time after layer1
    for t in range(video.shape[2]):
        torch.testing.assert_close(video[:, :, t], expected, rtol=1e-9, atol=1e-9)


def test_convert_checkpoint_tool(tmp_path):
    import subprocess
    import sys

    model = trained_looking_resnet(18, "SSN")
    source = tmp_path / "ssn18.pth"
    torch.save(published_layout(model), source)
    tool = Path(__file__).resolve().parents[1] / "tools" / "convert_checkpoint.py"
    # the stem pooling is not in the weights: this model has the padded (SN) stem, not the SSN release's
    result = subprocess.run([sys.executable, str(tool), str(source), "--padded-pool", "-o",
                             str(tmp_path / "out" / "ssn18")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "ResNet-18 v1, SSN" in result.stdout and "dropped fc.weight, fc.bias" in result.stdout
    for suffix in (".pth", "_d2.pkl", "_mm.pth", "_i3d.pth"):
        assert (tmp_path / "out" / f"ssn18{suffix}").stat().st_size > 1_000_000
    saved = torch.load(tmp_path / "out" / "ssn18.pth", weights_only=True)
    rebuilt = S.models.ResNet.from_architecture(saved["meta"]["ssn_plugins"]).eval()
    rebuilt.load_state_dict(saved["state_dict"])
    x = photo_batch()
    torch.testing.assert_close(rebuilt(x), model(x))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    result = subprocess.run([sys.executable, str(tool), str(tmp_path / "junk.pth"), "-o", str(tmp_path / "j")],
                            capture_output=True, text=True)
    assert result.returncode != 0 and "conversion failed" in result.stderr


def test_the_converter_never_writes_over_its_input(tmp_path):
    """``-o`` naming the input's stem would replace the user's release file (whose checksum identifies it)."""

    from ssn_plugins.checkpoints import ConversionError
    from ssn_plugins.cli import convert_checkpoint
    source = tmp_path / "resnet18_ssn.pth"
    torch.save(published_layout(trained_looking_resnet(18, "SSN")), source)
    original = source.read_bytes()
    with pytest.raises(ConversionError, match="resnet18_ssn.pth is the input file: .*give -o another name"):
        convert_checkpoint.convert_file(source, tmp_path / "resnet18_ssn", ["torch", "detectron2"])
    inflated_name = source.rename(tmp_path / "x_i3d.pth")  # the name --to i3d -o x would write
    with pytest.raises(ConversionError, match="is the input file"):
        convert_checkpoint.inflate_openmmlab(inflated_name, tmp_path / "x", "bn", 18)
    assert inflated_name.read_bytes() == original
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x_i3d.pth"]  # nothing else was written


class _RunsCode:
    """An object whose unpickling would run code (here: make a folder)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os
        return os.mkdir, (self.marker,)


def test_the_trust_pickle_advice_only_for_a_pickle_and_naming_what_it_imports(tmp_path):
    """torch says "weights_only" for any input it cannot read; advising full unpickling for random bytes cannot help,
    and for a malicious file it invites harm (R12). The advice names what full unpickling would import."""
    import pickle
    import random

    import numpy as np

    from ssn_plugins.checkpoints import ConversionError, load_checkpoint_file
    rng = random.Random(0)
    (tmp_path / "random.pth").write_bytes(bytes(rng.getrandbits(8) for _ in range(4096)))
    (tmp_path / "error_page.pth").write_bytes(b'{"error": "quota exceeded"}')  # a server's error body
    for name in ("random.pth", "error_page.pth"):
        with pytest.raises(ConversionError) as refused:
            load_checkpoint_file(tmp_path / name)
        assert str(refused.value) == (f"{tmp_path / name}: not a readable checkpoint (neither a torch.save file nor "
                                      f"a pickle)")
    marker = tmp_path / "ran"
    torch.save({"state_dict": _RunsCode(marker)}, tmp_path / "malicious.pth")
    with pytest.raises(ConversionError, match=r"refused by weights-only loading: it imports posix\.mkdir; only if you "
                                              r"trust where the file came from, load it with trust_pickle=True"):
        load_checkpoint_file(tmp_path / "malicious.pth")
    assert not marker.exists()  # nothing of it ran
    with open(tmp_path / "model_d2.pkl", "wb") as f:  # detectron2's format: a plain pickle of numpy arrays
        pickle.dump({"model": {"w": np.zeros(3)}, "__author__": "ssn_plugins"}, f)
    with pytest.raises(ConversionError, match=r"a plain pickle, not a torch\.save file \(a detectron2 \.pkl\?\); it "
                                              r"imports numpy\.core\.multiarray\._reconstruct, numpy\.ndarray"):
        load_checkpoint_file(tmp_path / "model_d2.pkl")


def test_ce_backbone_gives_the_same_features_in_detectron2(tmp_path):
    pytest.importorskip("detectron2")
    from ssn_plugins.detectron2 import add_channel_equilibrium

    torch.manual_seed(0)
    model = ResNet(50, "SN", ce=True, norm_kwargs={"official_compat": True})  # the authors' layers
    model.train()
    with torch.no_grad():
        for _ in range(3):  # running estimates of CE and BN from real crops
            model(photo_batch(crops=4, seed=5))
        for m in model.modules():
            if isinstance(m, S.ChannelEquilibrium):
                m.mix_logit.fill_(0.4)
    model.eval()
    published = read_published(published_layout(model), ceil_mode_pool=False)
    assert published.ce and published.ce_group_sizes == (64, 16)
    converted, _ = to_detectron2(published)
    d2 = d2_resnet50(S.SwitchNorm2d)
    assert add_channel_equilibrium(d2) == 1 + 3 + 4 + 6
    assert_same_features_in_detectron2(model, converted, d2, tmp_path)


@pytest.fixture(scope="module")
def ce_release(tmp_path_factory):
    """The CE release's layout (BN + CE, ``bn*``, ``layerK.i.ce``, ``AR.*``, ``x_weight``) and what reads it."""
    model = trained_looking_ce_resnet()
    path = tmp_path_factory.mktemp("published") / "resnet50_ce.pth"
    torch.save(ce_release_layout(model), path)
    return model, read_published(path)


def test_ce_release_is_read_as_published(ce_release):
    model, published = ce_release
    assert (published.norm, published.ce, published.ce_group_sizes, published.ceil_mode_pool) == ("BN", True,
                                                                                                 (64, 16), False)
    assert "BN, with CE (groups of 64 in the stem, 16 in the blocks)" in published.report[0]
    rebuilt = S.models.ResNet.from_architecture(published.architecture()).eval()
    rebuilt.load_state_dict(published.state_dict)
    x = photo_batch()
    torch.testing.assert_close(rebuilt(x), model(x))
    sd = ce_release_layout(model)["state_dict"]
    assert "module.layer1.0.ce.AR.fc.0.weight" in sd and "module.ce1.x_weight" in sd  # the release's own names
    assert not any(k.startswith("module.layer4.0.ce") for k in sd)  # stages 1-3 only


def test_ce_release_gives_the_same_features_in_every_framework(ce_release, tmp_path):
    """The converted CE-ResNet-50 gives our ResNet's features in detectron2 (BN + CE), mmdet's ``ResNetCE`` and
    (loaded strictly) mmaction2's ``ResNet3dCE``."""
    pytest.importorskip("detectron2")
    pytest.importorskip("mmdet")
    pytest.importorskip("mmaction")
    import ssn_plugins.openmmlab  # noqa: F401
    from detectron2.layers import FrozenBatchNorm2d  # noqa: F401  (detectron2's norms resolve "BN" below)
    from mmdet.utils import register_all_modules
    from mmengine.registry import MODELS, DefaultScope
    from mmengine.runner import load_checkpoint

    from ssn_plugins.detectron2 import add_channel_equilibrium

    model, published = ce_release
    d2 = d2_resnet50("BN")
    add_channel_equilibrium(d2)
    assert_same_features_in_detectron2(model, to_detectron2(published)[0], d2, tmp_path)

    register_all_modules(init_default_scope=False)
    path = tmp_path / "ce_mm.pth"
    torch.save(to_openmmlab(published)[0], path)
    with DefaultScope.overwrite_default_scope("mmdet"):
        mm = MODELS.build(dict(type="ResNetCE", depth=50, style="pytorch", out_indices=(0, 1, 2, 3)))
    assert type(mm).__module__.startswith("mmdet") and mm.ce1.group_size == 64 and mm.layer3[5].ce.group_size == 16
    load_checkpoint(mm, str(path), strict=True)
    mm.eval()
    x = photo_batch()
    ours, theirs = model.stages(x), mm(x)
    for name, feature in zip(("res2", "res3", "res4", "res5"), theirs):
        torch.testing.assert_close(feature, ours[name], rtol=1e-4, atol=1e-4, msg=name)
    # CE runs as a hook on the norm it follows: folding that norm into its convolution keeps it
    deployed, report = S.for_inference(mm)
    assert report.folded and not any(isinstance(m, torch.nn.BatchNorm2d) for m in deployed.layer1.modules())
    for name, feature in zip(("res2", "res3", "res4", "res5"), deployed(x)):
        torch.testing.assert_close(feature, ours[name], rtol=1e-4, atol=1e-4, msg=name)

    from mmaction.utils import register_all_modules as register_mmaction
    register_mmaction(init_default_scope=False)
    converted = to_i3d(published)[0]
    with DefaultScope.overwrite_default_scope("mmaction"):
        i3d = MODELS.build(dict(type="ResNet3dCE", depth=50, pretrained=None, pretrained2d=False,
                                conv1_kernel=(5, 7, 7), conv1_stride_t=2, pool1_stride_t=2, inflate=I3D_R50_INFLATE,
                                inflate_style="3x1x1", zero_init_residual=False))
    result = i3d.load_state_dict(converted["state_dict"], strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    torch.testing.assert_close(i3d.layer2[1].ce.running_wm, model.layer2[1].ce.running_wm)
    i3d.eval()
    assert torch.isfinite(i3d(torch.randn(1, 3, 8, 64, 64))).all()


def test_converted_resnet18_fixed_on_in_evaluates_a_small_image():
    torchvision = pytest.importorskip("torchvision")
    model = S.convert_norm(torchvision.models.resnet18(num_classes=10), "SSN")
    for m in S.sparse_layers(model.layer4):
        m.fix("mean", "IN")
        m.fix("var", "IN")
    model.eval()
    assert torch.isfinite(model(torch.randn(1, 3, 32, 32))).all()  # layer4's maps are 1x1


def convert(*args):
    return subprocess.run([sys.executable, str(REPO / "tools" / "convert_checkpoint.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def assert_one_line_failure(result, *fragments):
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("conversion failed: "), result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def test_converter_cli_failures_are_one_line(tmp_path):
    from helpers import published_layout, trained_looking_resnet

    good = tmp_path / "ssn18.pth"
    layout = published_layout(trained_looking_resnet(18, "SSN"))
    torch.save(layout, good)
    (tmp_path / "empty.pth").write_bytes(b"")
    (tmp_path / "truncated.pth").write_bytes(good.read_bytes()[:200])
    for name, fragment in [("missing.pth", "no such file"), ("empty.pth", "empty"), (".", "not a file"),
                           ("truncated.pth", "not a readable checkpoint")]:
        line = assert_one_line_failure(convert(tmp_path / name, "-o", tmp_path / "out"), fragment)
        assert "--trust-pickle" not in line
    line = assert_one_line_failure(convert(tmp_path / "missing.pth", "--trust-pickle", "-o", tmp_path / "out"))
    wrong = dict(layout["state_dict"])
    wrong["module.layer1.0.conv1.weight"] = torch.zeros(64, 64, 5, 5)
    torch.save(wrong, tmp_path / "wrong_shape.pth")
    assert_one_line_failure(convert(tmp_path / "wrong_shape.pth", "-o", tmp_path / "out"), "size mismatch")
    nan_radius = dict(layout["state_dict"])
    nan_radius["module.sn1.radius"] = torch.tensor([float("nan")])
    torch.save(nan_radius, tmp_path / "nan_radius.pth")
    assert_one_line_failure(convert(tmp_path / "nan_radius.pth", "-o", tmp_path / "out"), "radius")
    nan_var = dict(layout["state_dict"])
    nan_var["module.sn1.running_var"] = torch.full_like(nan_var["module.sn1.running_var"], float("nan"))
    torch.save(nan_var, tmp_path / "nan_var.pth")
    assert_one_line_failure(convert(tmp_path / "nan_var.pth", "-o", tmp_path / "out"), "running_var")
    (tmp_path / "a_file").write_text("x")
    assert_one_line_failure(convert(good, "-o", tmp_path / "a_file" / "sub" / "out"), "cannot create")
    assert not list(tmp_path.glob("out*"))  # nothing written by any failure
    result = convert(good, "--to", "i3d", "--i3d-conv1-t", "0", "-o", tmp_path / "out")
    assert result.returncode != 0 and "must be >= 1" in result.stderr
    # --depth must match the checkpoint
    mm_file = tmp_path / "mm.pth"
    assert convert(good, "--to", "openmmlab", "-o", tmp_path / "mm").returncode == 0
    (tmp_path / "mm_mm.pth").rename(mm_file)
    for depth in (18, 34, 101):
        expected = "" if depth == 18 else "blocks per stage"
        result = convert(mm_file, "--openmmlab-norm", "bn", "--depth", depth, "--to", "i3d", "-o", tmp_path / "i3d")
        if depth == 18:
            assert result.returncode == 0, result.stderr
        else:
            assert_one_line_failure(result, expected)


def test_converted_files_carry_the_authors_math(tmp_path):
    from helpers import photo_batch, published_layout, trained_looking_resnet

    authors = trained_looking_resnet(18, "SN")  # built with official_compat=True: the authors' layers
    torch.save(published_layout(authors), tmp_path / "authors.pth")
    assert convert(tmp_path / "authors.pth", "--to", "torch", "-o", tmp_path / "conv" / "sn18").returncode == 0
    ours = S.models.ResNet(18, "SN").eval()  # built with defaults, as the README says: nothing set by hand
    ours.load_state_dict(torch.load(tmp_path / "conv" / "sn18.pth", weights_only=True)["state_dict"])
    x = photo_batch()
    with torch.no_grad():
        torch.testing.assert_close(ours(x), authors(x))
        for m in ours.modules():
            if isinstance(m, S.SwitchNorm):
                m.official_compat = False
        assert not torch.allclose(ours(x), authors(x), rtol=1e-4, atol=1e-4)  # the paper's math differs


def test_a_trained_resnet_is_described_as_a_release_and_loads_back_from_its_converted_file(tmp_path):
    """PublishedModel.from_model (the pretraining tool's export) and load_converted (from_pretrained's reader) are
    inverse: the rebuilt network gives the same output; a backbone file loads with backbone_only only."""
    from ssn_plugins.checkpoints import PublishedModel, to_layout
    model = trained_looking_resnet(18, "SSN").eval()
    described = PublishedModel.from_model(model)
    assert (described.depth, described.norm, described.candidates, described.sparse) == (18, "SSN",
                                                                                           ("IN", "LN", "BN"), True)
    saved, _ = to_layout(described, "torch")
    torch.save(saved, tmp_path / "r18.pth")
    x = photo_batch()
    torch.testing.assert_close(S.load_converted(tmp_path / "r18.pth")(x), model(x))
    backbone = S.load_converted(saved, backbone_only=True)
    assert not hasattr(backbone, "fc") and backbone(x).shape[1] == 512
    with pytest.raises(ConversionError, match="a backbone without the classifier"):
        S.load_converted({"state_dict": {k: v for k, v in saved["state_dict"].items() if not k.startswith("fc.")},
                          "meta": saved["meta"]})
    with pytest.raises(ValueError, match="no architecture to record"):
        ResNet(18, lambda c: nn.BatchNorm2d(c)).architecture()
