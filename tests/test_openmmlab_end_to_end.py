"""The OpenMMLab real-data runs, shortened: mmseg DeepLabV3 + SSN (mIoU), mmdet Mask R-CNN + SSN (COCO AP) and
mmaction2 I3D + SSN3d (10-clip top-1) train on the real sets through tools/openmmlab_real_mini.py and report
their metrics."""
import json
from pathlib import Path

import pytest

pytest.importorskip("mmengine")  # needs the full stack; a torch-only install runs the core tests

from helpers import NO_WORKERS, SMALL_CROPS, SMALL_EVAL, average_over, hook_option

from ssn_plugins.cli import openmmlab_real_mini as real_mini

pytestmark = pytest.mark.slow  # pytest -m "not slow" leaves it out; CI runs it

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def run_job(argv):
    """tools/openmmlab_real_mini.py's job, in this process."""
    return real_mini.run(argv)


#: its multi-scale flip test at a third of the image sizes (the same 6 scales x 2 flips, 0.25-0.5 instead of 0.5-1.75)
SMALL_TTA = [f"tta_pipeline.1.transforms.0.{i}.scale_factor={r}"
             for i, r in enumerate((0.25, 0.3, 0.35, 0.4, 0.45, 0.5))]


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the configs read datasets/... relative to the working directory
    return tmp_path


def test_deeplabv3_ssn_on_real_segmentation(in_tmp, capsys):
    summary = run_job([
        "seg", "--work-dir", str(in_tmp / "seg"), "--cfg-options", "train_cfg.max_iters=3", *SMALL_CROPS,
        *SMALL_EVAL, *NO_WORKERS, average_over(2)])
    printed = capsys.readouterr().out  # the job's own report, read before anything here prints
    print(json.dumps(summary))
    assert (in_tmp / "datasets/real_mini_seg/ann_dir/val/voc.png").exists()
    assert summary["iterations"] == 3
    assert sum(summary["selections"]["mean"].values()) == sum(summary["selections"]["var"].values()) == 27
    for when in ("before", "after"):
        assert None not in summary[when].values(), summary[when]  # mmseg's IoUMetric returns every metric
        assert 0.0 <= summary[when]["mIoU"] <= 100.0 and 0.0 < summary[when]["aAcc"] <= 100.0
    assert json.loads((in_tmp / "seg" / "summary.json").read_text()) == summary
    assert (in_tmp / "seg" / "ssn_selection.json").exists()
    assert f"seg: after 3 iterations {summary['after']}" in printed
    assert "returned no" not in printed
    # SwitchNormScalarsHook sent the per-layer chart to the visualizer after the validation
    (chart,) = (in_tmp / "seg").glob("*/vis_data/vis_image/ssn_selection_per_layer_3.png")
    from PIL import Image
    with Image.open(chart) as image:
        assert image.size[0] > 400 and len(set(image.convert("L").getdata())) > 20


def test_real_segmentation_run_accepts_channel_equilibrium(in_tmp):
    """``--ce``: the same run with CE in the ResNet-18 backbone (stem and stages 1-3), which trains."""
    summary = run_job([
        "seg", "--ce", "--work-dir", str(in_tmp / "seg_ce"), "--cfg-options", "train_cfg.max_iters=2", *SMALL_CROPS,
        *SMALL_EVAL, *NO_WORKERS, average_over(1)])
    assert summary["ce"] and summary["iterations"] == 2
    assert summary["after"]["mIoU"] is not None and 0.0 <= summary["after"]["mIoU"] <= 100.0
    import torch
    saved = torch.load(in_tmp / "seg_ce" / "iter_2.pth", map_location="cpu", weights_only=False)["state_dict"]
    ce = sorted({k.split(".ce")[0] for k in saved if ".ce" in k and k.startswith("backbone.")})
    assert ce == ["backbone"] + [f"backbone.layer{s}.{b}" for s in (1, 2, 3) for b in (0, 1)]
    assert float(saved["backbone.layer2.0.ce.mix_logit"]) != 0.0  # starts at 0: training moved it


def test_mask_rcnn_ssn_on_real_instances(in_tmp, capsys):
    summary = run_job([
        "det", "--work-dir", str(in_tmp / "det"), "--cfg-options", "train_cfg.max_epochs=1", *NO_WORKERS,
        average_over(1)])
    printed = capsys.readouterr().out
    print(json.dumps(summary))
    assert summary["iterations"] == 3  # 6 training images, 2 per batch
    for when in ("before", "after"):
        assert set(summary[when]) == {"coco/bbox_mAP", "coco/segm_mAP"}
        # mmdet's CocoMetric returns nothing when nothing was detected: None, and the job says so
        assert all(v is None or 0.0 <= v <= 1.0 for v in summary[when].values())
    missing = sorted({k for when in ("before", "after") for k, v in summary[when].items() if v is None})
    assert (f"det: the evaluator returned no {', '.join(missing)}" in printed) == bool(missing)
    from ssn_plugins.reproduction.runs import FINISHED, find_runs
    (run,) = find_runs(in_tmp / "det")
    assert run.status == FINISHED and (run.task, run.model, run.dataset, run.norm, run.batch) == (
        "instance segmentation", "Mask R-CNN R50-FPN 1 epochs", "real_mini", "SSN", (1, 2))
    final = run.pick()
    assert final.step == 1  # epoch-based: the validation after epoch 1
    if final.metrics:  # mmdet reports nothing when there is no detection; the run then says so
        assert final.metrics["box AP"] == pytest.approx(100 * summary["after"]["coco/bbox_mAP"], abs=0.01)
    else:
        assert "reported no metric" in run.problem


def test_i3d_ssn3d_on_real_clips(in_tmp):
    """Kinetics-style real clips, the radius schedule, batch averages and ratio scalars in video training."""
    summary = run_job([
        "video", "--work-dir", str(in_tmp / "video"), "--cfg-options", "train_cfg.max_iters=4", *NO_WORKERS,
        average_over(2), hook_option("SwitchNormScalarsHook", "interval", 1), "default_hooks.logger.interval=1",
        "train_dataloader.dataset.pipeline.4.scale=(64,64)", "val_dataloader.dataset.pipeline.4.crop_size=64"])
    print(json.dumps(summary))
    assert (in_tmp / "datasets/real_clips/real_clips_train_list_videos.txt").read_text().count("\n") == 36
    assert summary["iterations"] == 4
    for when in ("before", "after"):
        assert set(summary[when]) == {"acc/top1", "acc/top2", "acc/mean1"}
        assert all(v is not None and 0.0 <= v <= 1.0 for v in summary[when].values()), summary[when]
    run = next(p for p in (in_tmp / "video").iterdir() if p.is_dir())
    log = next(run.glob("*.log")).read_text()
    # before the untrained evaluation and before the final validation
    assert log.count("Recomputing batch-average statistics over 2 training batches") == 2
    scalars = [json.loads(line) for line in (run / "vis_data" / "scalars.json").read_text().splitlines()]
    radii = [s["ssn/radius"] for s in scalars if "ssn/radius" in s]
    assert radii == [0.0, 0.25, 0.5, 0.75]  # t / T before each of the 4 iterations
    assert any("ssn/mean_ratio_BN" in s for s in scalars)
    selection = json.loads((in_tmp / "video" / "ssn_selection.json").read_text())
    assert len(selection) == 53 and selection[0]["name"] == "backbone.conv1.bn"
    assert {layer["type"] for layer in selection} == {"SparseSwitchNorm3d"}
    from ssn_plugins.reproduction.leaderboard import build_rows
    from ssn_plugins.reproduction.runs import FINISHED, find_runs
    (found,) = find_runs(in_tmp / "video")
    assert found.status == FINISHED and (found.task, found.model, found.dataset, found.norm) == (
        "video classification", "I3D R50", "real_clips", "SSN")
    assert found.described == "run record" and found.record["tool"] == "openmmlab_real_mini"
    assert found.settings == [(1, found.batch[1])] and found.record["config"].endswith(".py")
    assert found.pick().metrics["top1"] == pytest.approx(100 * summary["after"]["acc/top1"], abs=0.01)
    (row,) = build_rows([found])
    assert row.run.checkpoint.name == "iter_4.pth" and sum(row.selection["var"].values()) == 53


def test_train_resume_and_test_tools(in_tmp):
    """tools/mm_train.py, its --resume on an mmseg checkpoint (torch 2.14 loading), and tools/mm_test.py."""
    from ssn_plugins.cli import mm_test
    from ssn_plugins.cli import mm_train
    from ssn_plugins.datasets.real_mini import write_segmentation

    write_segmentation(in_tmp / "datasets/real_mini_seg")
    config = str(CONFIGS / real_mini.TASKS["seg"][0])
    small = [*SMALL_CROPS, *SMALL_EVAL, *NO_WORKERS, average_over(1), "default_hooks.logger.interval=1",
             "default_hooks.checkpoint.interval=1"]
    work_dir = in_tmp / "tools"
    # mmengine keeps one visualizer per name in a process: a name per run keeps each run's scalars in its own dir
    mm_train.main([config, "--work-dir", str(work_dir), "--cfg-options", "train_cfg.max_iters=2",
                   "train_cfg.val_interval=100", "visualizer.name=first", *small])
    mm_train.main([config, "--work-dir", str(work_dir), "--resume", "--cfg-options", "train_cfg.max_iters=3",
                   "train_cfg.val_interval=100", "visualizer.name=resumed", *small])
    runs = sorted(p for p in work_dir.iterdir() if p.is_dir())
    steps = [[json.loads(line)["step"] for line in (run / "vis_data" / "scalars.json").read_text().splitlines()
              if "loss" in line] for run in runs]
    assert steps == [[1, 2], [3]]  # the second run went on from the checkpoint of iteration 2
    metrics = mm_test.run([config, str(work_dir / "iter_3.pth"), "--work-dir", str(work_dir), "--cfg-options",
                            "visualizer.name=test", *small])
    assert 0.0 <= metrics["mIoU"] <= 100.0
    # mmseg's multi-scale flip test (6 scales x 2 flips), recorded beside the single-scale test
    tta = mm_test.run([config, str(work_dir / "iter_3.pth"), "--tta", "--work-dir", str(work_dir),
                        "--cfg-options", "visualizer.name=tta", *small, *SMALL_TTA])
    assert 0.0 <= tta["mIoU"] <= 100.0
    from ssn_plugins.reproduction.leaderboard import build_rows
    from ssn_plugins.reproduction.runs import FINISHED, find_runs
    (run,) = find_runs(work_dir)
    assert run.status == FINISHED and run.tool == "mmengine"
    assert (run.task, run.model, run.dataset, run.norm, run.batch) == (
        "semantic segmentation", "DeepLab R18-D8", "real_mini_seg", "SSN", (1, 2))
    tests = [e.metrics for e in run.evaluations if e.kind == "test"]
    assert tests == [{"mIoU": round(metrics["mIoU"], 4)}, {"mIoU (ms)": round(tta["mIoU"], 4)}]
    (row,) = build_rows([run])
    assert row.run.checkpoint.name == "iter_3.pth" and sum(row.selection["mean"].values()) == 27


def test_the_tools_read_a_checkpoint_with_foreign_objects_only_when_that_file_is_trusted(in_tmp):
    """mm_train.py --trust-checkpoint FILE and mm_test.py --trust-pickle: without them a checkpoint holding an object
    beyond tensors and mmengine's own is refused by name; with them that file (and only it) is read."""
    import datetime
    import pickle

    import torch

    from ssn_plugins.datasets.real_mini import write_segmentation
    from ssn_plugins.cli import mm_test
    from ssn_plugins.cli import mm_train

    write_segmentation(in_tmp / "datasets/real_mini_seg")
    config = str(CONFIGS / real_mini.TASKS["seg"][0])
    small = [*SMALL_CROPS, *SMALL_EVAL, *NO_WORKERS, average_over(1), "train_cfg.val_interval=100",
             "default_hooks.checkpoint.interval=1"]
    work_dir = in_tmp / "own"
    mm_train.main([config, "--work-dir", str(work_dir), "--cfg-options", "train_cfg.max_iters=1",
                   "visualizer.name=own", *small])
    foreign = in_tmp / "shared.pth"
    torch.save({**torch.load(work_dir / "iter_1.pth", weights_only=True), "note": datetime.date(2026, 12, 2)},
               foreign)
    test = [config, str(foreign), "--work-dir", str(in_tmp / "test"), "--cfg-options", *small]
    with pytest.raises(pickle.UnpicklingError, match=r"shared.pth: refused by weights-only loading.*datetime\.date"):
        mm_test.run([*test, "visualizer.name=refused"])
    assert 0.0 <= mm_test.run([*test, "visualizer.name=trusted", "--trust-pickle"])["mIoU"] <= 100.0
    train = [config, "--work-dir", str(in_tmp / "finetune"), "--cfg-options", f"load_from={foreign}",
             "train_cfg.max_iters=1", *small]
    with pytest.raises(pickle.UnpicklingError, match="--trust-checkpoint"):
        mm_train.main([*train, "visualizer.name=refused_train"])
    mm_train.main([*train, "visualizer.name=trusted_train", "--trust-checkpoint", str(foreign)])
    assert (in_tmp / "finetune" / "iter_1.pth").is_file()


def test_tta_without_a_tta_pipeline_is_refused(in_tmp):
    from ssn_plugins.cli import mm_test
    config = str(CONFIGS / real_mini.TASKS["det"][0])
    with pytest.raises(SystemExit, match="--tta needs tta_pipeline"):
        mm_test.run([config, "missing.pth", "--tta", "--work-dir", str(in_tmp)])


def test_two_process_training_on_cpu(in_tmp):
    """``torchrun`` + ``--launcher pytorch`` on CPU: gloo, and a DDP wrapper without device_ids."""
    import socket
    import subprocess
    import sys

    from ssn_plugins.datasets.real_mini import write_segmentation

    write_segmentation(in_tmp / "datasets/real_mini_seg")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    work_dir = in_tmp / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(port),
               str(CONFIGS.parent / "tools" / "mm_train.py"), str(CONFIGS / real_mini.TASKS["seg"][0]),
               "--launcher", "pytorch",
               "--work-dir", str(work_dir), "--cfg-options", "train_cfg.max_iters=2", "train_cfg.val_interval=100",
               *SMALL_CROPS, "train_dataloader.num_workers=0", "train_dataloader.persistent_workers=False",
               "default_hooks.logger.interval=1"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    log = next(work_dir.glob("*/*.log")).read_text()
    assert "Distributed launcher: pytorch" in log and "Distributed training: True" in log
    assert "GPU number: 2" in log  # mmengine's name for the world size
    record = json.loads((work_dir / "run_record.json").read_text())
    assert (record["tool"], record["gpus"], record["images_per_gpu"]) == ("mm_train", 2, 2)
    assert record["settings"] == [[2, 2]] and record["task"] == "semantic segmentation"
    assert (work_dir / "iter_2.pth").exists()
