"""``for_inference`` and ``tools/deploy.py`` on the framework models: detectron2 Mask R-CNN with SSN in the
backbone, FPN and both heads, mmseg DeepLabV3 and mmaction2 I3D with SSN, on a real photo (the bundled VOC image).

Each model gets trained-looking SN/SSN layers (random ratio logits, half of the SSN layers fixed on BN,
random running statistics), is saved as a checkpoint, and must give the same outputs after
``for_inference`` (against its float64 evaluation, as in test_inference.py) and after export and reload.
"""
import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("numpy")  # needs the full stack; a torch-only install runs the core tests
pytest.importorskip("PIL")

import numpy as np

import torch
from PIL import Image

import ssn_plugins as S
from helpers import Reference, trained_looking_norms
from ssn_plugins.datasets.real_mini import load_annotated_images
from ssn_plugins.export import flatten_tensors, relative_errors

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"


def _deploy_tool():
    spec = importlib.util.spec_from_file_location("deploy_tool", REPO / "tools" / "deploy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def photo():
    image = Image.fromarray(load_annotated_images()[0].image)  # the VOC photo (people, a bottle, a chair)
    return np.array(image.resize((320, 240), Image.BILINEAR))


def _run_tool(capsys, *argv):
    _deploy_tool().main([str(a) for a in argv])
    out = capsys.readouterr().out
    errors = [float(line.split("relative error ")[1].split()[0])
              for line in out.splitlines() if "relative error" in line]
    assert len(errors) == 2 and max(errors) < 1e-4, out  # the inference model, then the exported file
    (probes,) = [line for line in out.splitlines() if line.startswith("inference model vs original on other")]
    probe_errors = [float(part.rsplit(": ", 1)[1]) for part in probes.split("inputs: ", 1)[1].split(", ")]
    # batch 1 at two odd sizes and a batch of two, unlike the export input
    assert len(probe_errors) == 3 and max(probe_errors) < 1e-4 and "batch 2 at" in probes, out
    return out


# ------------------------------------------------------------------------------------------------ detectron2
@pytest.fixture(scope="module")
def mask_rcnn(tmp_path_factory):
    import ssn_plugins.detectron2 as sd
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model
    config = CONFIGS / "detectron2" / "mask_rcnn_R_50_FPN_1x_ssn.yaml"
    cfg = get_cfg()
    sd.add_ssn_config(cfg)
    sd.merge_config_file(cfg, str(config))
    # score threshold 0: a randomly initialised detector's 100 best boxes are compared, not an empty list
    opts = ["MODEL.WEIGHTS", "", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"]
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", *opts])
    torch.manual_seed(0)
    model = trained_looking_norms(build_model(cfg))
    checkpoint = tmp_path_factory.mktemp("d2") / "model_final.pth"
    torch.save({"model": model.state_dict()}, checkpoint)
    return config, checkpoint, opts


def test_detectron2_mask_rcnn_with_ssn_everywhere(mask_rcnn, photo):
    from ssn_plugins.detectron2 import deploy
    config, checkpoint, opts = mask_rcnn
    model, cfg = deploy.load_model(str(config), str(checkpoint), opts)
    assert sum(isinstance(m, S.SparseSwitchNorm) for m in model.modules()) == 69  # backbone, FPN, box and mask heads
    inputs = deploy.image_inputs(photo, cfg)
    inference, report = S.for_inference(model)
    assert len(report.replaced) == 69 and len(report.folded) >= 30
    assert not any(isinstance(m, S.SwitchNorm) for m in inference.modules())
    # the features of every FPN level against the float64 model, then the detections themselves
    backbone, (images,) = deploy.exportable(model, inputs, "backbone")
    reference = Reference(backbone, images)
    with torch.no_grad():
        features = deploy.exportable(inference, inputs, "backbone")[0](images)
        assert len(features) == 5
        reference.check(features)
        expected = model.inference(inputs, do_postprocess=False)[0]
        got = inference.inference(inputs, do_postprocess=False)[0]
    assert len(got) == len(expected) == 100
    # detections whose scores tie to ~1e-8 (a random detector's) may swap places: pair each with its own box first
    from detectron2.structures import pairwise_iou
    overlap = pairwise_iou(got.pred_boxes, expected.pred_boxes)
    pairs = overlap.argmax(1)
    assert sorted(pairs.tolist()) == list(range(100)) and bool((overlap.max(1).values > 0.999).all())
    assert int((pairs != torch.arange(100)).sum()) <= 4  # only near-ties moved
    for field in ("pred_boxes", "scores", "pred_classes", "pred_masks"):
        a, b = (getattr(i, field) for i in (got, expected[pairs]))
        a, b = (t.tensor if hasattr(t, "tensor") else t for t in (a, b))
        assert relative_errors([a.float()], [b.float()])[0] < 1e-5, field


def test_deploy_tool_detectron2_whole_model_and_backbone(mask_rcnn, tmp_path, capsys):
    config, checkpoint, opts = mask_rcnn
    photo_file = tmp_path / "photo.png"
    Image.fromarray(load_annotated_images()[0].image).save(photo_file)
    out = _run_tool(capsys, config, checkpoint, "-o", tmp_path / "mask_rcnn.ts", "--input", photo_file,
                    "--max-size", 320, "--opts", *opts)
    assert "69 SN/SSN layers replaced" in out and (tmp_path / "mask_rcnn.ts").is_file()
    _run_tool(capsys, config, checkpoint, "-o", tmp_path / "backbone.onnx", "--format", "onnx", "--part", "backbone",
              "--max-size", 256, "--opts", *opts)
    with pytest.raises(SystemExit, match="use --format torchscript for the whole detector"):
        _deploy_tool().main([str(config), str(checkpoint), "-o", str(tmp_path / "x.onnx"), "--format", "onnx"])


# ------------------------------------------------------------------------------------------------ OpenMMLab
def _mm_checkpoint(tmp_path_factory, config: Path, cfg_options=None, trained=None):
    from ssn_plugins.openmmlab import deploy
    from mmengine.config import Config
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import MODELS, DefaultScope
    cfg = Config.fromfile(str(config))
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope(cfg.get("default_scope")):
        model = trained_looking_norms(revert_sync_batchnorm(MODELS.build(cfg.model)))
    if trained is not None:
        trained(model)
    checkpoint = tmp_path_factory.mktemp(config.stem) / "latest.pth"
    torch.save({"state_dict": model.state_dict(), "meta": {}}, checkpoint)
    loaded, _ = deploy.load_model(str(config), str(checkpoint), cfg_options)
    return loaded, checkpoint


def _check_mm_model(model, x):
    from ssn_plugins.openmmlab import deploy
    original = deploy.TensorForward(model).eval()
    reference = Reference(original, x)
    inference, report = S.for_inference(model)
    assert report.replaced and report.folded
    with torch.no_grad():
        (out,) = deploy.TensorForward(inference)(x)
    reference.check(out)
    return report


DEEPLAB = CONFIGS / "mmseg" / "deeplabv3" / "deeplabv3_r50-d8_ssn_8xb2-80k_cityscapes-512x1024.py"
DEEPLAB_OPTIONS = {"model.backbone.init_cfg": None}  # no ImageNet download


def _image_pool_on_in(model):
    # the ASPP image-pool norm always sees a 1x1 map; training may fix it on IN, whose output there is beta
    (layer,) = [m for m in model.decode_head.image_pool.modules() if isinstance(m, S.SparseSwitchNorm)]
    layer.fix("mean", "IN")
    layer.fix("var", "IN")


def test_mmseg_deeplabv3_with_ssn(tmp_path_factory, tmp_path, photo, capsys):
    from ssn_plugins.openmmlab import deploy
    model, checkpoint = _mm_checkpoint(tmp_path_factory, DEEPLAB, DEEPLAB_OPTIONS, trained=_image_pool_on_in)
    x = deploy.preprocessed_inputs(model, photo)
    assert x.shape == (1, 3, 240, 320)
    report = _check_mm_model(model, x)
    assert len(report.replaced) == sum(isinstance(m, S.SwitchNorm) for m in model.modules()) >= 60
    assert [after for name, _, after in report.replaced if "image_pool" in name] == ["FrozenSwitchNorm(IN)"]
    _run_tool(capsys, DEEPLAB, checkpoint, "-o", tmp_path / "deeplabv3.onnx", "--format", "onnx", "--max-size", 160,
              "--cfg-options", "model.backbone.init_cfg=None")


I3D = CONFIGS / "mmaction" / "i3d" / "i3d_r50_ssn3d_8xb4-32x2x1-100e_kinetics400-rgb.py"
I3D_OPTIONS = {"model.backbone.pretrained": None, "model.backbone.pretrained2d": False}


def test_mmaction2_i3d_with_ssn(tmp_path_factory, tmp_path, photo, capsys):
    from ssn_plugins.openmmlab import deploy
    model, checkpoint = _mm_checkpoint(tmp_path_factory, I3D, I3D_OPTIONS)
    assert any(isinstance(m, S.SparseSwitchNorm3d) for m in model.modules())
    small = np.array(Image.fromarray(photo).resize((96, 72), Image.BILINEAR))
    x = deploy.preprocessed_inputs(model, small, clip_length=8)
    assert x.shape == (1, 1, 3, 8, 72, 88)
    report = _check_mm_model(model, x)
    assert any(after == "BatchNorm3d" for _, _, after in report.replaced)
    _run_tool(capsys, I3D, checkpoint, "-o", tmp_path / "i3d.pt2", "--format", "export", "--max-size", 96,
              "--cfg-options", "model.backbone.pretrained=None", "model.backbone.pretrained2d=False")


def test_deploy_tool_options(tmp_path_factory, tmp_path, capsys):
    _, checkpoint = _mm_checkpoint(tmp_path_factory, I3D, I3D_OPTIONS)
    options = ["--cfg-options", "model.backbone.pretrained=None", "model.backbone.pretrained2d=False"]
    out = _run_tool(capsys, I3D, checkpoint, "-o", tmp_path / "i3d.pt2", "--format", "export", "--max-size", 96,
                    "--no-fold", "--verbose", "--clip-length", 16, *options)
    assert "0 norms folded into convolutions" in out and "  replaced " in out and "  folded " not in out
    assert "inputs: (1, 1, 3, 16, 72, 80)" in out  # 16 frames panned over a 96x72 photo (default 8)
    with pytest.raises(SystemExit, match="above the tolerance 1e-12"):
        _deploy_tool().main([str(I3D), str(checkpoint), "-o", str(tmp_path / "tight.pt2"), "--format", "export",
                             "--max-size", "96", "--tolerance", "1e-12", *options])
    assert "norms folded into convolutions" in capsys.readouterr().out


def test_deploy_tool_reads_a_checkpoint_with_foreign_objects_only_with_trust_pickle(tmp_path_factory, tmp_path,
                                                                                   capsys, mask_rcnn):
    import datetime
    import pickle
    _, checkpoint = _mm_checkpoint(tmp_path_factory, I3D, I3D_OPTIONS)
    foreign = tmp_path / "shared.pth"
    torch.save({**torch.load(checkpoint, weights_only=True), "note": datetime.date(2026, 12, 2)}, foreign)
    args = [I3D, foreign, "-o", tmp_path / "i3d.pt2", "--format", "export", "--max-size", 96, "--cfg-options",
            "model.backbone.pretrained=None", "model.backbone.pretrained2d=False"]
    with pytest.raises(pickle.UnpicklingError, match=r"shared.pth: refused by weights-only loading.*--trust-pickle"):
        _deploy_tool().main([str(a) for a in args])
    _run_tool(capsys, *args, "--trust-pickle")
    config, d2_checkpoint, opts = mask_rcnn  # detectron2's checkpointer decides itself: the flag is refused
    with pytest.raises(SystemExit, match="--trust-pickle is for OpenMMLab checkpoints"):
        _deploy_tool().main([str(config), str(d2_checkpoint), "-o", str(tmp_path / "x.ts"), "--trust-pickle"])


def test_deploy_tool_names_a_missing_checkpoint_or_config_in_one_line(tmp_path):
    for config, checkpoint, message in ((DEEPLAB, tmp_path / "missing.pth", "missing.pth: no such checkpoint file"),
                                        (tmp_path / "x.py", DEEPLAB, "x.py. is neither a file nor a shipped config")):
        with pytest.raises(SystemExit, match=message):
            _deploy_tool().main([str(config), str(checkpoint), "-o", str(tmp_path / "x.onnx")])


def test_exported_outputs_are_flattened_and_compared_strictly():
    assert [t.shape for t in flatten_tensors({"b": torch.zeros(2), "a": (torch.ones(1), [torch.ones(3)])})] == [
        (1,), (3,), (2,)]
    with pytest.raises(TypeError, match="outputs must be tensors"):
        flatten_tensors({"a": "text"})
    with pytest.raises(ValueError, match="shape"):
        relative_errors([torch.zeros(2)], [torch.zeros(3)])
    assert relative_errors([torch.zeros(2)], [torch.zeros(2)]) == [0.0]


def test_detections_that_swap_places_on_a_score_tie_are_paired_but_a_moved_box_is_not():
    pytest.importorskip("detectron2")
    from ssn_plugins.detectron2.deploy import align_detections
    boxes = torch.tensor([[0., 0., 10., 10.], [20., 20., 40., 40.], [5., 50., 25., 90.]])
    scores, classes = torch.tensor([0.9, 0.0183922, 0.0183921]), torch.tensor([1, 2, 3])
    masks, size = torch.rand(3, 1, 28, 28), torch.tensor([240, 320])
    reference = [boxes, classes, masks, scores, size]
    swap = torch.tensor([0, 2, 1])
    swapped = [boxes[swap], classes[swap], masks[swap], scores[swap], size]
    aligned = align_detections(swapped, reference)
    assert all(torch.equal(a, b) for a, b in zip(aligned, reference))
    assert max(relative_errors(swapped, reference)) > 0.1  # compared as they came, they differ
    moved = [boxes + torch.tensor([[0.], [0.], [3.]]), classes, masks, scores, size]  # a box 3 px off: not a tie
    assert all(torch.equal(a, b) for a, b in zip(align_detections(moved, reference), moved))
