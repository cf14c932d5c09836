"""The SN segmentation release's trained ADE20K model: converted exactly into mmseg through ``ssn://`` and its config.

As for the detectors: the release's two files (``torch.save(net.state_dict())`` of the CSAIL framework's encoder and
decoder) are written from ``csail_segmentation_reference``, a plain re-implementation of the release's modules with
trained-looking random weights, placed in the cache by hand, converted by ``ssn://`` when mmengine's
``load_checkpoint`` asks for the config's ``load_from``, and the mmseg model built from the shipped config is
compared with the reference stage by stage and head by head, in float64 and float32.
"""
from pathlib import Path

import pytest

pytest.importorskip("mmseg")

import torch

from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmengine.runner import load_checkpoint

import ssn_plugins.openmmlab  # noqa: F401  (registers the layers and the ssn:// scheme)
from ssn_plugins import csail_segmentation, model_zoo
from ssn_plugins.checkpoints import ConversionError

from csail_segmentation_reference import C1BilinearDeepSup, ResnetDilated8
from detectron_pytorch_reference import trained_looking
from helpers import markdown_table, photo_batch

REPO = Path(__file__).resolve().parents[1]
NAME = "ade20k_c1_deepsup_r50_d8_sn_8x2"
CONFIG = REPO / "configs" / "mmseg" / "released" / "c1-deepsup_r50-d8_sn-8x2_ade20k.py"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SSN_PLUGINS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SSN_PLUGINS_MIRROR", "http://127.0.0.1:9/")  # the discard port: nothing may be fetched
    return tmp_path / "cache" / "checkpoints"


def release_files(seed: int = 0):
    encoder = trained_looking(ResnetDilated8(), seed)
    decoder = trained_looking(C1BilinearDeepSup(), seed + 1)
    return encoder, decoder


def place_by_hand(cache: Path, encoder, decoder) -> None:
    (cache / "downloads").mkdir(parents=True, exist_ok=True)
    for part, state in (("encoder", encoder), ("decoder", decoder)):
        torch.save(state, cache / "downloads" / f"{NAME}.{part}.pth")


def mmseg_model(cfg: Config):
    with DefaultScope.overwrite_default_scope("mmseg"):
        import mmseg.models  # noqa: F401
        from mmseg.registry import MODELS
        return MODELS.build(cfg.model).eval()


def release_input(dtype):
    """A photo as the release feeds it: BGR, 0-255, minus Detectron's caffe means."""
    rgb = photo_batch(size=(96, 128), crops=1, seed=5)
    rgb = rgb * torch.tensor([0.229, 0.224, 0.225])[:, None, None] + torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    bgr = rgb.flip(1) * 255
    return (bgr - torch.tensor([102.9801, 115.9465, 122.7717])[:, None, None]).to(dtype)


def close(actual, expected, dtype, what):
    tol = 1e-10 if dtype == torch.float64 else 2e-4
    scale = expected.abs().max().item()
    err = (actual.double() - expected.double()).abs().max().item()
    assert err <= tol * max(scale, 1.0), f"{what}: max difference {err:.3g} at scale {scale:.3g}"


def test_converted_release_matches_the_release_forward(cache):
    encoder, decoder = release_files()
    place_by_hand(cache, encoder.state_dict(), decoder.state_dict())
    cfg = Config.fromfile(str(CONFIG))
    assert cfg.load_from == f"ssn://{NAME}"
    model = mmseg_model(cfg)
    checkpoint = load_checkpoint(model, cfg.load_from, map_location="cpu", strict=True)  # mmengine's own loader
    assert set(checkpoint["state_dict"]) == set(model.state_dict())
    norms = [m for m in model.modules() if hasattr(m, "official_compat_flag")]
    assert len(norms) == 53 + 2 and all(m.official_compat for m in norms)
    for dtype in (torch.float64, torch.float32):
        x = release_input(dtype)
        model, encoder, decoder = model.to(dtype), encoder.to(dtype), decoder.to(dtype)
        with torch.no_grad():
            ours, theirs = model.backbone(x), encoder(x)
            for stage, (a, b) in enumerate(zip(ours, theirs), 1):
                close(a, b, dtype, f"stage {stage}")
            assert ours[3].shape[-2:] == (12, 16)  # output stride 8
            main, deep_supervision = decoder.logits(theirs)
            close(model.decode_head(ours), main, dtype, "decode head logits")
            close(model.auxiliary_head(ours), deep_supervision, dtype, "deep-supervision logits")


def test_release_config_has_the_releases_test_settings():
    cfg = Config.fromfile(str(CONFIG))
    entry = model_zoo.get_entry(NAME)
    assert entry.config == str(CONFIG.relative_to(REPO)) and entry.task == "semantic segmentation"
    assert entry.parts.keys() == {"encoder", "decoder"} and len(entry.by_hand) == 2
    preprocessor = cfg.model.data_preprocessor
    convention = entry.input_convention
    assert not preprocessor.bgr_to_rgb and convention["format"] == "BGR"
    assert tuple(preprocessor.mean) == convention["mean"] and tuple(preprocessor.std) == convention["std"]
    resize, multiple = (t for t in cfg.test_pipeline if t.type in ("Resize", "ResizeToMultiple"))
    assert resize.scale == (entry.test["max_size"], entry.test["short_side"]) and resize.keep_ratio
    assert multiple.size_divisor == entry.test["size_divisor"]
    assert cfg.test_dataloader.dataset.pipeline == cfg.test_pipeline
    scales = cfg.tta_pipeline[1].transforms[0]
    assert [t.scale for t in scales] == [(entry.test["max_size"], s) for s in entry.test["ms_short_sides"]]
    assert not any(t.type == "RandomFlip" for group in cfg.tta_pipeline[1].transforms for t in group)
    assert "BatchAverageStatisticsHook" not in {h.type for h in cfg.custom_hooks}  # the trained running averages
    model = mmseg_model(cfg)
    assert model.backbone.conv1.kernel_size == (7, 7) and model.decode_head.num_classes == 150
    # the release's mmseg-side figures: mIoU single and multi-scale, as the leaderboard reads mmseg's metrics
    assert entry.results == {"mIoU": 38.72, "mIoU (ms)": 39.21, "aAcc": 78.90}


def test_wrong_files_are_refused_with_the_reason(cache):
    encoder, decoder = release_files()
    arch = model_zoo.get_entry(NAME).architecture
    with pytest.raises(ConversionError, match="decoder: no rule for key 'ppm"):
        csail_segmentation.to_openmmlab(encoder.state_dict(), {"ppm.0.weight": torch.zeros(1)}, arch)
    with pytest.raises(ConversionError, match="classifier has 150 classes, the catalogue says 151"):
        csail_segmentation.to_openmmlab(encoder.state_dict(), decoder.state_dict(), {**arch, "num_classes": 151})
    with pytest.raises(ConversionError, match="encoder: "):
        csail_segmentation.to_openmmlab(decoder.state_dict(), decoder.state_dict(), arch)
    with pytest.raises(model_zoo.ModelZooError, match="only the 'openmmlab' layout"):
        model_zoo.local_path(f"ssn://detectron2/{NAME}")
    with pytest.raises(model_zoo.ModelZooError, match="published as 2 files"):
        model_zoo.download(NAME)
    # one part missing: the download of that part fails and names where to put it by hand
    (cache / "downloads").mkdir(parents=True)
    torch.save(encoder.state_dict(), cache / "downloads" / f"{NAME}.encoder.pth")
    with pytest.raises(model_zoo.ModelZooError,
                       match=rf"(?s)cannot download ssn://{NAME} \(decoder\).*save it as .*{NAME}\.decoder\.pth"):
        model_zoo.local_path(f"ssn://{NAME}", default_layout="openmmlab")


def test_eval_suite_runs_the_released_model_through_the_users_commands(cache, tmp_path):
    """``tools/reproduce.py ade20k-released-segmenter --ci``: ``tools/mm_test.py`` single-scale, then ``--tta``, of the
    shipped config on the real mini photos in ADE20K's classes; both evaluations stay in the run's row."""
    import json
    import os
    import subprocess
    import sys

    encoder, decoder = release_files()
    place_by_hand(cache, encoder.state_dict(), decoder.state_dict())
    work = tmp_path / "work"
    result = subprocess.run([sys.executable, "tools/reproduce.py", "ade20k-released-segmenter", "--ci",
                             "--work-dir", str(work)], cwd=REPO, capture_output=True, text=True, timeout=900,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    folder = work / "ade20k-released-segmenter" / NAME
    records = [json.loads(line) for line in (folder / "test_results.json").read_text().splitlines()]
    assert [(r["checkpoint"], r["tta"], r["moving_average"]) for r in records] == [
        (f"ssn://{NAME}", False, True), (f"ssn://{NAME}", True, True)]
    assert all("mIoU" in r["metrics"] for r in records)
    board = (work / "ade20k-released-segmenter" / "leaderboard.md").read_text()
    rows = {r["metric"]: r for r in markdown_table(board) if r["run"] == f"ade20k-released-segmenter/{NAME}"}
    assert set(rows) == {"mIoU", "mIoU (ms)"}  # single- and multi-scale, both kept
    assert all(r["status"] == "finished" and r["dataset"] == "real_mini_seg" and r["paper"] == "–"
               for r in rows.values())
    # what ran, from the run record mm_test.py wrote: the release's weights at the release's batch setting
    assert all((r["batch"], r["described by"]) == ("(8,2)", "run record") for r in rows.values())
    run_record = json.loads((work / "ade20k-released-segmenter" / NAME / "run_record.json").read_text())
    assert run_record["evaluated_only"] and run_record["tool"] == "mm_test" and run_record["weights"] == f"ssn://{NAME}"


def test_leaderboard_puts_the_release_figures_beside_an_ade20k_test_of_its_model(tmp_path):
    import json

    from ssn_plugins.reproduction.leaderboard import build_rows, table_records
    from ssn_plugins.reproduction.runs import read_run

    folder = tmp_path / NAME
    (folder / "20261201_120000").mkdir(parents=True)  # mmengine's log folder
    Config.fromfile(str(CONFIG)).dump(str(folder / CONFIG.name))
    with open(folder / "test_results.json", "w") as f:
        for tta, miou in ((False, 38.80), (True, 38.20)):
            f.write(json.dumps({"checkpoint": f"ssn://{NAME}", "tta": tta, "moving_average": True,
                                "metrics": {"aAcc": 78.9, "mIoU": miou, "mAcc": 48.0}}) + "\n")
    run = read_run(folder)
    assert (run.status, run.dataset, run.task) == ("finished", "ADE20K", "semantic segmentation")
    records = {r["metric"]: r for r in table_records(build_rows([run], with_selection=False))}
    assert (records["mIoU"]["ours"], records["mIoU"]["paper"], records["mIoU"]["reproduced"]) == (
        "38.80", "38.72", "yes")
    assert (records["mIoU (ms)"]["paper"], records["mIoU (ms)"]["reproduced"]) == ("39.21", "below")
    assert records["mIoU"]["source"] == "SN-segmentation release"


def test_real_mini_photos_in_ade20k_classes():
    from ssn_plugins.datasets.real_mini import SEG_CLASSES
    from ssn_plugins.openmmlab.seg_datasets import RealMiniSegInADE20KClasses

    label_map = RealMiniSegInADE20KClasses.get_label_map()
    ade = RealMiniSegInADE20KClasses.METAINFO["classes"]
    assert {SEG_CLASSES[v]: ade[k] for v, k in label_map.items() if k != 255} == {
        "bottle": "bottle", "chair": "chair", "person": "person", "diningtable": "table"}
    with pytest.raises(ValueError, match="reduce_zero_label=False"):
        RealMiniSegInADE20KClasses(reduce_zero_label=True, data_root="nowhere", lazy_init=True)
