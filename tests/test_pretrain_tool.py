"""tools/pretrain_imagenet.py on a tiny real ImageFolder (Fashion-MNIST images): train, resume, DDP, exports."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("tensorboard")  # needs the full stack; a torch-only install runs the core tests
pytest.importorskip("torchvision")

import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

pytestmark = pytest.mark.slow  # pytest -m "not slow" leaves it out; CI runs it

REPO = Path(__file__).resolve().parents[1]
TOOLS = REPO / "tools"
TINY = ["--depth", "18", "--norm", "SSN", "--batch-setting", "1,8", "--epochs", "2", "--steps", "1",
        "--image-size", "32", "--workers", "0", "--stat-batches", "3"]


def run(*args, env=None):
    result = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, timeout=600,
                            env={**os.environ, **(env or {})})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("fashion_mnist_folder")
    out = run(TOOLS / "make_fashion_mnist_imagefolder.py", root, "--train-per-class", "12", "--val-per-class", "4")
    assert "train: 120 images" in out and "val: 40 images" in out
    assert len(list((root / "train").iterdir())) == 10
    return root


@pytest.fixture(scope="module")
def straight_run(tiny_folder, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("straight")
    return out_dir, run(TOOLS / "pretrain_imagenet.py", tiny_folder, "--work-dir", out_dir, *TINY)


def test_training_writes_checkpoints_scalars_and_exports(straight_run):
    out_dir, stdout = straight_run
    assert "final: val top-1" in stdout and "batch-average statistics over 3 batches" in stdout
    for name in ("last.pth", "final.pth", "metrics.json", "backbone_d2.pkl", "backbone_mm.pth", "backbone_i3d.pth"):
        assert (out_dir / name).exists(), name
    events = EventAccumulator(str(out_dir / "tb"))
    events.Reload()
    radius = [e.value for e in events.Scalars("ssn/radius")]
    assert radius[0] == 0 and radius[-1] > 0.9 and radius == sorted(radius)
    assert {"train/loss", "lr", "val/top1", "val/top5", "ssn/one_hot_vectors"} <= set(events.Tags()["scalars"])
    lrs = [e.value for e in events.Scalars("lr")]
    # lr = 0.1 x batch 8 / 256, divided by 10 at the step after epoch 1
    assert lrs[0] == pytest.approx(0.1 * 8 / 256) and lrs[-1] == pytest.approx(0.1 * 8 / 256 * 0.1)
    # the radius reached 1: every SSN ratio vector is one-hot
    final = torch.load(out_dir / "final.pth", weights_only=True)["state_dict"]
    assert all(final[k].item() for k in final if k.endswith("_fixed"))
    # tools/leaderboard.py reads the run: what it is from its run record, top-1 from metrics.json
    from ssn_plugins.reproduction.leaderboard import build_rows
    from ssn_plugins.reproduction.runs import FINISHED, find_runs
    (run,) = find_runs(out_dir)
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert run.status == FINISHED and run.tool == "pretrain_imagenet" and run.model == "ResNet-18"
    assert run.pick().metrics == {"top1": metrics["top1"], "top5": metrics["top5"]} and run.batch == (1, 8)
    assert run.described == "run record" and run.record["tool"] == "pretrain_imagenet" and run.pretrained == ""
    (row,) = build_rows([run])
    assert sum(row.selection["mean"].values()) == row.selection["layers"]["SSN"] == 20


def test_resumed_run_equals_straight_run(straight_run, tiny_folder, tmp_path):
    out_dir, _ = straight_run
    first = run(TOOLS / "pretrain_imagenet.py", tiny_folder, "--work-dir", tmp_path, *TINY, "--stop-after-epochs", "1")
    assert "continue with --resume" in first and not (tmp_path / "final.pth").exists()
    second = run(TOOLS / "pretrain_imagenet.py", tiny_folder, "--work-dir", tmp_path, *TINY, "--resume")
    assert "resumed from" in second and "at epoch 1" in second
    straight = torch.load(out_dir / "final.pth", weights_only=True)["state_dict"]
    resumed = torch.load(tmp_path / "final.pth", weights_only=True)["state_dict"]
    for key, value in straight.items():
        assert torch.equal(resumed[key], value), key
    changed = subprocess.run([sys.executable, TOOLS / "pretrain_imagenet.py", tiny_folder, "--work-dir", tmp_path,
                              "--depth", "34", *TINY[2:], "--resume"], capture_output=True, text=True)
    assert changed.returncode != 0 and "trained with other depth" in changed.stderr


def test_two_process_gloo_with_sync_ssn(tiny_folder, tmp_path):
    out = run("-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29541",
              TOOLS / "pretrain_imagenet.py", tiny_folder, "--work-dir", tmp_path, "--depth", "18", "--norm", "SyncSSN",
              "--batch-setting", "2,4", "--epochs", "1", "--image-size", "32", "--workers", "0",
              "--stat-batches", "3", env={"OMP_NUM_THREADS": "1"})
    assert "final: val top-1" in out and (tmp_path / "backbone_d2.pkl").exists()
    state = torch.load(tmp_path / "final.pth", weights_only=True)["state_dict"]
    assert "layer1.0.sn1.mean_fixed" in state


def test_subset_keeps_every_class(tiny_folder):
    """``--subset N`` (the ImageNet suite's ``--ci``): N images spread over the class-sorted list."""
    import torchvision
    from ssn_plugins.cli.pretrain_imagenet import _evenly_spaced
    split = _evenly_spaced(torchvision.datasets.ImageFolder(tiny_folder / "train"), 30)
    assert len(split) == len(split.targets) == 30 and sorted(set(split.targets)) == list(range(10))
    assert split[0][1] == split.targets[0]
