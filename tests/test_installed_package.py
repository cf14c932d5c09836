"""The built wheel installed into a fresh virtual environment that already holds the frameworks (this environment's
packages, through a ``.pth`` file: no download), then used from a folder outside the clone with no ``PYTHONPATH``:
each framework's shipped config trains a few steps through the console scripts, and every tool runs."""
import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from helpers import NO_WORKERS, REPO, SMALL_CROPS, SMALL_EVAL, average_over, build_distributions

pytestmark = pytest.mark.slow  # builds the wheel and trains four models; CI runs it

SEG_SMALL = [*SMALL_CROPS, *SMALL_EVAL, *NO_WORKERS, average_over(1)]
SEG_CONFIG = "configs/mmseg/real_mini/deeplabv3_r18-d8_ssn_real-mini-256x256.py"


class Installed:
    """The fresh environment and a working folder outside the clone."""

    def __init__(self, root: Path, wheel: Path):
        self.venv, self.work = root / "venv", root / "work"
        self.work.mkdir()
        assert not list(REPO.glob("*.egg-info")), "an egg-info in the clone would pass for an installed ssn-plugins"
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(self.venv)], check=True)
        self.python = self.venv / "bin" / "python"
        site = self.run("python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip()
        # the frameworks (torch, detectron2, mmcv, mmseg, ...) of the environment this test runs in
        Path(site, "frameworks.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
        installed = subprocess.run([sys.executable, "-m", "pip", "--python", str(self.python), "install", "-q",
                                    "--no-deps", "--no-index", str(wheel)], env=self.env(), capture_output=True,
                                   text=True)
        assert installed.returncode == 0, installed.stderr[-3000:]
        self.site = Path(site)

    def env(self) -> dict:
        """This process's environment without the clone on ``PYTHONPATH``, the fresh environment first on ``PATH``."""
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SSN_REAL_MINI")}
        env["PATH"] = f"{self.venv / 'bin'}{os.pathsep}{env['PATH']}"
        return env

    def run(self, *command, check=True, timeout=900) -> subprocess.CompletedProcess:
        result = subprocess.run([str(self.venv / "bin" / command[0]), *map(str, command[1:])], cwd=self.work,
                                env=self.env(), capture_output=True, text=True, timeout=timeout)
        if check:
            assert result.returncode == 0, f"{command}:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
        return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    root = tmp_path_factory.mktemp("installed")
    wheel, _ = build_distributions(root / "build")
    return Installed(root, wheel)


def test_the_package_comes_from_the_wheel_and_finds_its_configs_by_name(installed):
    where = installed.run("python", "-c", "import ssn_plugins; print(ssn_plugins.__file__)").stdout.strip()
    assert Path(where).is_relative_to(installed.site), where  # not the clone
    from ssn_plugins.config_files import shipped_configs
    assert installed.run("ssn-configs").stdout.split() == shipped_configs()
    path = installed.run("ssn-configs", SEG_CONFIG).stdout.strip()
    assert Path(path).is_relative_to(installed.site) and Path(path).read_text() == (REPO / SEG_CONFIG).read_text()
    missing = installed.run("ssn-configs", "mmseg/deeplabv3/deeplabv3_r50-d8_ssn_8xb2-80k_cityscape.py", check=False)
    assert missing.returncode == 1 and "did you mean 'mmseg/deeplabv3/deeplabv3_r50-d8_ssn_8xb2-80k_cityscapes" \
        in missing.stderr


def test_detectron2_trains_a_shipped_config_by_name(installed):
    installed.run("ssn-train-net", "--config-file", "detectron2/real_mini/mask_rcnn_R_50_FPN_ssn.yaml",
                  "SOLVER.MAX_ITER", "2", "SOLVER.WARMUP_ITERS", "1", "SOLVER.STEPS", "(1,)",
                  "DATALOADER.NUM_WORKERS", "0", "MODEL.SSN.BATCH_AVERAGE_ITERS", "1", "MODEL.DEVICE", "cpu",
                  "OUTPUT_DIR", "out/d2")
    assert (installed.work / "datasets/real_mini/annotations/instances_val.json").exists()  # built by the tool
    assert (installed.work / "out/d2/model_final.pth").exists()
    record = json.loads((installed.work / "out/d2/run_record.json").read_text())
    assert record["tool"] == "train_net" and Path(record["config"]).is_relative_to(installed.site)
    metrics = [json.loads(line) for line in (installed.work / "out/d2/metrics.json").read_text().splitlines()]
    assert max(m["iteration"] for m in metrics if "total_loss" in m) == 1  # two iterations, 0 and 1
    assert any("bbox/AP" in m and "segm/AP" in m for m in metrics)  # and the final COCO evaluation


def test_mmseg_trains_tests_and_deploys_a_shipped_config(installed):
    result = installed.run("ssn-openmmlab-real-mini", "seg", "--work-dir", "out/seg", "--cfg-options",
                           "train_cfg.max_iters=2", *SEG_SMALL)
    summary = json.loads((installed.work / "out/seg/summary.json").read_text())
    assert summary["iterations"] == 2 and 0.0 <= summary["after"]["mIoU"] <= 100.0
    assert f"seg: after 2 iterations {summary['after']}" in result.stdout
    # the clone-relative name resolves to the shipped file here, where no configs/ folder exists
    installed.run("ssn-mm-train", SEG_CONFIG, "--work-dir", "out/seg_train", "--cfg-options",
                  "train_cfg.max_iters=1", "train_cfg.val_interval=1", *SEG_SMALL)
    assert (installed.work / "out/seg_train/iter_1.pth").exists()
    tested = installed.run("ssn-mm-test", SEG_CONFIG, "out/seg_train/iter_1.pth", "--work-dir", "out/seg_test",
                           "--cfg-options", *SEG_SMALL)
    assert "mIoU" in tested.stdout + tested.stderr
    deployed = installed.run("ssn-deploy", SEG_CONFIG, "out/seg_train/iter_1.pth", "-o", "out/seg.onnx",
                             "--format", "onnx", "--max-size", "160")
    assert (installed.work / "out/seg.onnx").stat().st_size > 1e6 and "relative error" in deployed.stdout


def test_mmdet_and_mmaction2_train_their_shipped_configs(installed):
    installed.run("ssn-openmmlab-real-mini", "det", "--work-dir", "out/det", "--cfg-options",
                  "train_cfg.max_epochs=1", *NO_WORKERS, average_over(1))
    assert json.loads((installed.work / "out/det/summary.json").read_text())["iterations"] == 3
    installed.run("ssn-openmmlab-real-mini", "video", "--work-dir", "out/video", "--cfg-options",
                  "train_cfg.max_iters=2", *NO_WORKERS, average_over(1),
                  "train_dataloader.dataset.pipeline.4.scale=(64,64)", "val_dataloader.dataset.pipeline.4.crop_size=64")
    summary = json.loads((installed.work / "out/video/summary.json").read_text())
    assert summary["iterations"] == 2 and all(0.0 <= v <= 1.0 for v in summary["after"].values())


def test_every_tool_runs_from_the_installed_package(installed):
    """The reading tools on the runs above, the launcher's plan, and every console script's options."""
    board = installed.run("ssn-leaderboard", "out").stdout
    rows = {}
    for line in board.splitlines()[2:]:
        rows.setdefault(line.split("|")[1].strip(), []).append(line)
    assert set(rows) == {"out/d2", "out/det", "out/seg", "out/seg_train", "out/seg_test", "out/video"}, board
    assert all(" | finished" in line for lines in rows.values() for line in lines)
    assert [line.split(" | ")[10] for line in rows["out/d2"]] == ["box AP", "mask AP"]
    paper = installed.run("ssn-leaderboard", "--paper").stdout
    assert "### ImageNet ResNet-50, top-1 by batch setting" in paper
    refused = installed.run("ssn-leaderboard", "--paper", "--update", check=False)
    assert refused.returncode == 1 and "installed copy" in refused.stderr
    charts = installed.run("ssn-analyze-selection", "out/d2", "-o", "out/charts").stdout
    assert "SN/SSN layers" in charts and any((installed.work / "out/charts").rglob("*.png"))
    plan = installed.run("ssn-reproduce", "real-mini", "--ci", "--dry-run", "--work-dir", "out/reproduce").stdout
    assert "-m ssn_plugins.cli.detectron2_real_mini" in plan and "tools/" not in plan
    # one run of the suite, launched from the installed package in this folder, then its leaderboard
    launched = installed.run("ssn-reproduce", "real-mini", "--ci", "--norms", "SSN", "--work-dir", "out/reproduce")
    assert "ssn: new:" in launched.stdout
    record = json.loads((installed.work / "out/reproduce/real-mini/ssn/run_record.json").read_text())
    assert (record["tool"], record["suite"]) == ("detectron2_real_mini", "real-mini")
    assert (installed.work / "out/reproduce/real-mini/ssn/real_mini_summary.json").exists()
    scripts = [p.name for p in (installed.venv / "bin").glob("ssn-*")]
    assert len(scripts) >= 14
    for script in scripts:
        assert "usage:" in installed.run(script, "--help").stdout, script
