"""The SN detection release's trained detectors: converted exactly into detectron2 through ``ssn://`` and the configs.

The release's files cannot be fetched from here, so each test writes one in the release's layout (Detectron.pytorch's
``torch.save`` of ``{"step", "model", "optimizer", ...}``, the release's module names) from
``detectron_pytorch_reference.ReleaseRCNN``, a plain re-implementation of the release's inference forward with
trained-looking random weights, places it in the cache as a user places a file by hand, builds the model from the
shipped config with detectron2's own ``merge_from_file`` / ``build_model`` / ``DetectionCheckpointer``, and compares
the two models part by part: backbone and FPN features, the RPN's outputs per anchor, the box head's class
probabilities and box deltas on the same RoIs, the mask logits. In float64 and in float32.
"""
import math
import pickle
from pathlib import Path

import pytest

pytest.importorskip("detectron2")

import torch

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.modeling.poolers import assign_boxes_to_levels
from detectron2.structures import Boxes

import ssn_plugins.detectron2 as sd2
from ssn_plugins import detectron_pytorch, model_zoo
from ssn_plugins.checkpoints import ConversionError

from detectron_pytorch_reference import ReleaseRCNN, generate_anchors, map_rois_to_fpn_levels, trained_looking
from helpers import markdown_table, photo_batch

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs" / "detectron2" / "released"

#: catalogue name -> (body, box head, mask head, BN among the candidates)
RELEASES = {
    "faster_rcnn_R_50_C4_2x_sn_8x32": ("C4", "res5", False, True),
    "faster_rcnn_R_50_FPN_2x_sn_8x2": ("FPN", "2mlp", False, True),
    "faster_rcnn_R_50_FPN_2x_sn_8x1": ("FPN", "2mlp", False, False),
    "mask_rcnn_R_50_FPN_2x_sn_8x1": ("FPN", "4conv1fc", True, False),
}

#: RoIs (image coordinates of a 192 x 256 input) on all four FPN levels under both frameworks' level rules
ROIS = torch.tensor([[10, 20, 50, 60], [100, 30, 140, 90], [30, 40, 130, 150], [60, 10, 250, 120],
                     [-20, -10, 240, 200], [-60, -40, 300, 230], [-150, -150, 400, 350], [5, 5, 60, 190]],
                    dtype=torch.float64)


def release_file(name: str, seed: int = 0):
    """The reference model for ``name`` and the object Detectron.pytorch's ``save_ckpt`` writes for it."""
    body, box, mask, using_bn = RELEASES[name]
    arch = model_zoo.get_entry(name).architecture
    anchors = len(arch["rpn_sizes"]) * len(arch["rpn_aspect_ratios"])
    reference = trained_looking(ReleaseRCNN(body, box, mask, using_bn, num_anchors=anchors), seed)
    saved = {"step": 179999, "train_size": 117266, "batch_size": 16, "model": reference.state_dict(),
             "optimizer": {"state": {}, "param_groups": [{"lr": 0.0002, "momentum": 0.9, "params": [0, 1]}]}}
    return reference, saved


def detectron2_model(name: str):
    """The detectron2 model of the shipped config, its weights loaded by ``DetectionCheckpointer`` from ``ssn://``."""
    cfg = get_cfg()
    sd2.add_ssn_config(cfg)
    cfg.merge_from_file(str(CONFIGS / f"{name}.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg).eval()
    assert cfg.MODEL.WEIGHTS == f"ssn://{name}"
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    return cfg, model


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SSN_PLUGINS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SSN_PLUGINS_MIRROR", "http://127.0.0.1:9/")  # the discard port: nothing may be fetched
    return tmp_path / "cache" / "checkpoints"


def place_by_hand(cache: Path, name: str, saved: dict) -> Path:
    target = cache / "downloads" / f"{name}.pth"
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(saved, target)
    return target


def close(actual, expected, dtype, what):
    """Agreement to rounding: 1e-10 of the tensor's scale in float64, 2e-4 in float32."""
    tol = 1e-10 if dtype == torch.float64 else 2e-4
    scale = expected.abs().max().item()
    err = (actual.double() - expected.double()).abs().max().item()
    assert err <= tol * max(scale, 1.0), f"{what}: max difference {err:.3g} at scale {scale:.3g}"


def anchor_matching(model, sizes, ratios):
    """For each detectron2 anchor of a location, the Detectron anchor of the same shape, found by geometry."""
    ours = next(iter(model.proposal_generator.anchor_generator.cell_anchors)).double()
    theirs = generate_anchors(16, sizes, ratios)
    wh_ours = torch.stack([ours[:, 2] - ours[:, 0], ours[:, 3] - ours[:, 1]], 1)
    wh_theirs = torch.stack([theirs[:, 2] - theirs[:, 0] + 1, theirs[:, 3] - theirs[:, 1] + 1], 1)
    distance = (wh_ours[:, None].log() - wh_theirs[None].log()).abs().sum(-1)
    match = distance.argmin(1)
    assert sorted(match.tolist()) == list(range(len(theirs)))  # a permutation
    assert distance.min(1).values.max() < 0.1  # quantised in Detectron, but the same anchors
    return match


def compare(name: str, reference, model, dtype):
    reference, model = reference.to(dtype), model.to(dtype)
    x = photo_batch(size=(192, 256), crops=1, seed=3).to(dtype)
    body = RELEASES[name][0]
    with torch.no_grad():
        ours, theirs = model.backbone(x), reference.features(x)
        if body == "FPN":
            levels = [ours[f"p{k}"] for k in (6, 5, 4, 3, 2)]
            for k, (a, b) in zip((6, 5, 4, 3, 2), zip(levels, theirs)):
                close(a, b, dtype, f"P{k}")
        else:
            levels = [ours["res4"]]
            close(levels[0], theirs, dtype, "res4")
        # the RPN, anchor by anchor
        rpn_in = [ours[f] for f in model.proposal_generator.in_features]
        objectness, deltas = model.proposal_generator.rpn_head(rpn_in)
        ref_rpn = reference.rpn(theirs)
        if body == "FPN":
            ref_rpn = ref_rpn[::-1]  # p2 .. p6
            match = torch.arange(3)
        else:
            arch = model_zoo.get_entry(name).architecture
            match = anchor_matching(model, arch["rpn_sizes"], arch["rpn_aspect_ratios"])
        for level, (obj, delta, (ref_obj, ref_delta)) in enumerate(zip(objectness, deltas, ref_rpn)):
            close(obj, ref_obj[:, match], dtype, f"RPN objectness, level {level}")
            ref_delta = ref_delta.view(1, -1, 4, *ref_delta.shape[2:])[:, match].flatten(1, 2)
            close(delta, ref_delta, dtype, f"RPN deltas, level {level}")
        # the box head on the same RoIs (both frameworks put each RoI on the same FPN level)
        rois = ROIS.to(dtype)
        rows = torch.cat([rois.new_zeros(len(rois), 1), rois], 1)
        heads = model.roi_heads
        if body == "FPN":
            d2_levels = assign_boxes_to_levels([Boxes(rois)], 2, 5, 224, 4) + 2
            assert torch.equal(d2_levels, map_rois_to_fpn_levels(rois)) and len(set(d2_levels.tolist())) == 4
            pooled = heads.box_pooler([ours[f] for f in heads.box_in_features], [Boxes(rois)])
            scores, box_deltas = heads.box_predictor(heads.box_head(pooled))
        else:
            pooled = heads._shared_roi_transform([ours[f] for f in heads.in_features], [Boxes(rois)])
            scores, box_deltas = heads.box_predictor(pooled.mean(dim=[2, 3]))
        probabilities, ref_deltas = reference.boxes(theirs, rows)
        background_last = list(range(1, probabilities.shape[1])) + [0]
        close(torch.softmax(scores, 1), probabilities[:, background_last], dtype, "class probabilities")
        close(box_deltas, ref_deltas[:, 4:], dtype, "box deltas")
        if RELEASES[name][2]:
            masks = heads.mask_head.layers(heads.mask_pooler([ours[f] for f in heads.mask_in_features],
                                                             [Boxes(rois)]))
            close(masks, reference.mask_logits(theirs, rows)[:, 1:], dtype, "mask logits")


@pytest.mark.parametrize("name", ["faster_rcnn_R_50_C4_2x_sn_8x32", "faster_rcnn_R_50_FPN_2x_sn_8x2",
                                  "mask_rcnn_R_50_FPN_2x_sn_8x1"])
def test_converted_release_matches_the_release_forward(name, cache):
    reference, saved = release_file(name)
    place_by_hand(cache, name, saved)
    cfg, model = detectron2_model(name)
    # every weight of the model came from the converted file (a key left at its initial value would differ)
    with open(cache / "converted" / f"{name}_d2.pkl", "rb") as f:
        state = pickle.load(f)["model"]
    model_state = model.state_dict()
    assert set(state) == set(model_state)
    for key, value in state.items():
        assert torch.equal(model_state[key].cpu(), value.to(model_state[key].dtype)), key
    norms = [m for m in model.modules() if hasattr(m, "official_compat_flag")]
    assert norms and all(m.official_compat for m in norms)
    for dtype in (torch.float64, torch.float32):
        compare(name, reference, model, dtype)


def test_release_configs_load_and_match_the_catalogue(cache):
    """Each shipped config: detectron2's own loader reads it, it names its model and the release's figures."""
    for name, (body, box, mask, using_bn) in RELEASES.items():
        entry = model_zoo.get_entry(name)
        assert entry.task == "detection" and entry.release == "SN-detection" and entry.licence
        assert entry.config == f"configs/detectron2/released/{name}.yaml"
        cfg = get_cfg()
        sd2.add_ssn_config(cfg)
        cfg.merge_from_file(str(REPO / entry.config))
        assert cfg.MODEL.WEIGHTS == f"ssn://{name}" and cfg.MODEL.MASK_ON == mask
        assert cfg.MODEL.SSN.USING_BN == using_bn and cfg.MODEL.SSN.INFERENCE_STATS == "moving_average"
        assert cfg.MODEL.ROI_BOX_HEAD.POOLER_TYPE == "ROIAlign"  # Caffe2's, not detectron2's aligned default
        assert (cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST) == (entry.test["min_size"], entry.test["max_size"])
        assert cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST == entry.test["nms"]
        assert (cfg.MODEL.RPN.PRE_NMS_TOPK_TEST, cfg.MODEL.RPN.POST_NMS_TOPK_TEST) == (
            entry.test["rpn_pre_nms_topk"], entry.test["rpn_post_nms_topk"])
        expected = {"bbox": entry.results["box AP"], **({"segm": entry.results["mask AP"]} if mask else {})}
        assert {task: value for task, _, value, _ in cfg.TEST.EXPECTED_RESULTS} == expected
        # the release's normalisation: RGB, (x / 255 - mean) / std
        image = torch.rand(3, 4, 5) * 255
        ours = (image - torch.tensor(cfg.MODEL.PIXEL_MEAN)[:, None, None]) / torch.tensor(cfg.MODEL.PIXEL_STD)[
            :, None, None]
        theirs = (image / 255 - torch.tensor([0.485, 0.456, 0.406])[:, None, None]) / torch.tensor(
            [0.229, 0.224, 0.225])[:, None, None]
        assert cfg.INPUT.FORMAT == "RGB" and torch.allclose(ours, theirs, atol=1e-5)
        cfg.MODEL.DEVICE = "cpu"
        model = build_model(cfg)
        _, saved = release_file(name)
        converted, _ = detectron_pytorch.to_detectron2(saved, entry.architecture)
        result = model.load_state_dict(converted["model"], strict=False)
        assert not result.unexpected_keys and not result.missing_keys, name
        assert math.isclose(model.roi_heads.box_predictor.cls_score.bias[-1].item(),
                            saved["model"]["Box_Outs.cls_score.bias"][0].item())  # the background, moved last


def test_wrong_files_are_refused_with_the_reason(cache):
    _, faster = release_file("faster_rcnn_R_50_FPN_2x_sn_8x1")
    mask_arch = model_zoo.get_entry("mask_rcnn_R_50_FPN_2x_sn_8x1").architecture
    with pytest.raises(ConversionError, match="no mask head"):
        detectron_pytorch.to_detectron2(faster, {**mask_arch, "box_head": "2mlp"})
    c4_arch = model_zoo.get_entry("faster_rcnn_R_50_C4_2x_sn_8x32").architecture
    with pytest.raises(ConversionError, match=r"no rule for key 'Conv_Body\.conv_(top|body)"):
        detectron_pytorch.to_detectron2(faster, c4_arch)
    fpn_arch = model_zoo.get_entry("faster_rcnn_R_50_FPN_2x_sn_8x1").architecture
    with pytest.raises(ConversionError, match="should have 91 rows"):
        detectron_pytorch.to_detectron2(faster, {**fpn_arch, "num_classes": 91})
    damaged = {**faster["model"], "Conv_Body.conv_top.1.weight": torch.full((1, 256, 1, 1), float("nan"))}
    with pytest.raises(ConversionError, match="NaN"):
        detectron_pytorch.to_detectron2({"model": damaged}, fpn_arch)
    # only detectron2's layout exists for a trained Detectron.pytorch detector
    with pytest.raises(model_zoo.ModelZooError, match="only the 'detectron2' layout"):
        model_zoo.local_path("ssn://openmmlab/mask_rcnn_R_50_FPN_2x_sn_8x1")
    # a file placed by hand that is not the catalogued architecture: the error names the file and the reason
    place_by_hand(cache, "mask_rcnn_R_50_FPN_2x_sn_8x1", faster)
    with pytest.raises(model_zoo.ModelZooError, match="mask_rcnn_R_50_FPN_2x_sn_8x1.*no rule for key"):
        model_zoo.local_path("ssn://mask_rcnn_R_50_FPN_2x_sn_8x1", default_layout="detectron2")


def test_anchor_order_is_detectron2s_size_major_order():
    # detectron2 index s * R + r holds Detectron's anchor r * S + s (checked by geometry in the comparison above)
    assert detectron_pytorch.anchor_order([32, 64], [0.5, 1, 2]) == [0, 2, 4, 1, 3, 5]
    assert detectron_pytorch.anchor_order([32], [0.5, 1, 2]) == [0, 1, 2]


def test_eval_suite_runs_the_released_model_through_the_users_commands(cache, tmp_path):
    """``tools/reproduce.py coco-released-detectors --ci``: detectron2's ``--eval-only`` of the shipped config on the
    real mini photos in COCO's classes; the run succeeds though its AP misses the figure (random weights here), and
    its row says what was tested, without comparing photos of the mini set with a COCO val2017 figure."""
    import json
    import os
    import subprocess
    import sys

    name = "mask_rcnn_R_50_FPN_2x_sn_8x1"
    _, saved = release_file(name)
    place_by_hand(cache, name, saved)
    work = tmp_path / "work"
    result = subprocess.run([sys.executable, "tools/reproduce.py", "coco-released-detectors", "--ci", "--norms", name,
                             "--work-dir", str(work)], cwd=REPO, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    folder = work / "coco-released-detectors" / name
    records = [json.loads(line) for line in (folder / "test_results.json").read_text().splitlines()]
    assert [r["checkpoint"] for r in records] == [f"ssn://{name}"] and records[0]["moving_average"]
    assert {"bbox/AP", "segm/AP"} <= set(records[0]["metrics"])
    assert not any("-" in k.rpartition("/")[2] for k in records[0]["metrics"])  # no per-category entries
    log = (folder / "reproduce.log").read_text()
    assert "TEST.EXPECTED_RESULTS: bbox AP is" in log and "the figure is 41.01" in log
    board = (work / "coco-released-detectors" / "leaderboard.md").read_text()
    row = next(r for r in markdown_table(board) if r["metric"] == "box AP")
    assert (row["status"], row["dataset"]) == ("finished", "real_mini")
    assert row["model"].startswith("Mask R-CNN R50-FPN")
    assert row["paper"] == "–" and row["reproduced"] == "–"  # no COCO figure beside a mini-set result
    # what ran, from the run record train_net.py wrote: the release's weights at the release's batch setting
    run_record = json.loads((folder / "run_record.json").read_text())
    assert run_record["evaluated_only"] and run_record["weights"] == f"ssn://{name}"
    assert (row["batch"], row["described by"]) == ("(8,1)", "run record")
    assert run_record["suite"] == "coco-released-detectors"


def test_leaderboard_puts_the_release_figure_beside_a_coco_test_of_its_model(tmp_path):
    import json

    import yaml

    from ssn_plugins.reproduction.leaderboard import build_rows, table_records
    from ssn_plugins.reproduction.runs import read_run

    name = "mask_rcnn_R_50_FPN_2x_sn_8x1"
    cfg = get_cfg()
    sd2.add_ssn_config(cfg)
    cfg.merge_from_file(str(CONFIGS / f"{name}.yaml"))
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.yaml").write_text(cfg.dump())
    record = {"checkpoint": f"ssn://{name}", "tta": False, "moving_average": True,
              "metrics": {"bbox/AP": 40.73, "segm/AP": 36.02, "bbox/AP50": 61.0}}
    (folder / "test_results.json").write_text(json.dumps(record) + "\n")
    run = read_run(folder)
    assert (run.status, run.dataset, run.tested_weights) == ("finished", "COCO", f"ssn://{name}")
    assert yaml.safe_load((folder / "config.yaml").read_text())["MODEL"]["WEIGHTS"] == f"ssn://{name}"
    records = {r["metric"]: r for r in table_records(build_rows([run], with_selection=False))}
    assert (records["box AP"]["paper"], records["box AP"]["reproduced"]) == ("41.01", "yes")
    assert (records["mask AP"]["paper"], records["mask AP"]["source"]) == ("36.12", "SN-detection release")
    # the C4 model is named as such (not "R50-FPN")
    cfg = get_cfg()
    sd2.add_ssn_config(cfg)
    cfg.merge_from_file(str(CONFIGS / "faster_rcnn_R_50_C4_2x_sn_8x32.yaml"))
    (folder / "config.yaml").write_text(cfg.dump())
    (folder / "test_results.json").write_text(json.dumps(
        {**record, "checkpoint": "ssn://faster_rcnn_R_50_C4_2x_sn_8x32", "metrics": {"bbox/AP": 37.0}}) + "\n")
    run = read_run(folder)
    row = table_records(build_rows([run], with_selection=False))[0]
    assert run.model.startswith("Faster R-CNN R50-C4") and (row["paper"], row["reproduced"]) == ("38.07", "below")


def test_expected_results_are_reported_not_enforced(caplog):
    from ssn_plugins.detectron2.trainer import report_expected_results

    cfg = get_cfg()
    sd2.add_ssn_config(cfg)
    cfg.TEST.EXPECTED_RESULTS = [["bbox", "AP", 41.0, 0.5], ["segm", "AP", 36.5, 0.5]]
    with caplog.at_level("WARNING"):
        assert report_expected_results(cfg, {"bbox": {"AP": 40.8}}) is False  # no segm result: no KeyError, no exit
    assert "segm AP is no result" in caplog.text and "bbox AP" not in caplog.text
    assert report_expected_results(cfg, {"bbox": {"AP": 40.8}, "segm": {"AP": 36.2}}) is True


def test_a_download_names_the_releases_licence_once(cache, capsys):
    with pytest.raises(model_zoo.ModelZooError, match="cannot download"):
        model_zoo.local_path("ssn://faster_rcnn_R_50_FPN_2x_sn_8x2", default_layout="detectron2")
    err = capsys.readouterr().err
    assert err.count("the SN-detection release's licence: MIT") == 1


@pytest.mark.parametrize("name", list(RELEASES))
def test_lazyconfig_twin_is_the_yaml_model(name, cache):
    """Each released model's LazyConfig twin (detectron2's ``LazyConfig.load`` + ``instantiate``) holds the same
    parameters as the yaml model and, given the converted weights, returns the same detections."""
    from detectron2.config import LazyConfig, instantiate

    _, saved = release_file(name, seed=1)
    converted, _ = detectron_pytorch.to_detectron2(saved, model_zoo.get_entry(name).architecture)
    cfg = get_cfg()
    sd2.add_ssn_config(cfg)
    cfg.merge_from_file(str(CONFIGS / f"{name}.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    from_yaml = build_model(cfg).eval()
    lazy = LazyConfig.load(str(CONFIGS / f"{name}.py"))
    assert lazy.train.init_checkpoint == f"ssn://{name}"
    twin = instantiate(lazy.model).eval()
    for model in (from_yaml, twin):
        result = model.load_state_dict(converted["model"], strict=False)
        assert not result.missing_keys and not result.unexpected_keys
    assert twin.input_format == "RGB" and torch.equal(twin.pixel_mean, from_yaml.pixel_mean)
    photo = photo_batch(size=(192, 256), crops=1, seed=4)[0]
    image = ((photo * torch.tensor([0.229, 0.224, 0.225])[:, None, None] + torch.tensor([0.485, 0.456, 0.406])[
        :, None, None]) * 255).round()
    inputs = [{"image": image, "height": 192, "width": 256}]
    with torch.no_grad():
        ours, theirs = twin(inputs)[0]["instances"], from_yaml(inputs)[0]["instances"]
    assert len(ours) == len(theirs) > 0, (len(ours), len(theirs))  # detections to compare
    for field in ("pred_boxes", "scores", "pred_classes") + (("pred_masks",) if RELEASES[name][2] else ()):
        a, b = ours.get(field), theirs.get(field)
        a, b = (a.tensor, b.tensor) if field == "pred_boxes" else (a, b)
        assert torch.equal(a, b), field
