"""From runs to the papers' tables: the figures file, the suites, the leaderboard, the selection charts.

Runs are produced here by the project's own tools (tools/reproduce.py launching train_fashion_mnist.py and
detectron2_real_mini.py), never written by hand.
"""
import csv
import io
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

# (the framework each test needs is asked for in that test: a torch-only install runs the rest)

import torch

import ssn_plugins as S
from ssn_plugins.reproduction import figures as F
from ssn_plugins.reproduction.leaderboard import build_rows, match_figure
from ssn_plugins.reproduction.runs import FINISHED, MISSING, PARTIAL, UNREADABLE, find_runs, read_run
from ssn_plugins.reproduction.suites import get_suite, plan

REPO = Path(__file__).resolve().parents[1]
TOOLS = REPO / "tools"


def tool(*args, cwd=None, timeout=900, check=True):
    result = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, cwd=cwd or REPO,
                            timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if check:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


# ------------------------------------------------------------------------------------------ the papers' figures
def test_model_zoo_tables_are_generated_from_the_figures_file():
    text = (REPO / "MODEL_ZOO.md").read_text()
    assert F.update_markdown(text, F.generated_blocks()) == text, \
        "MODEL_ZOO.md differs from paper_figures.yaml: run `python tools/leaderboard.py --paper --update`"
    assert F.update_markdown(text, F.catalogue_blocks(), F.CATALOGUE_BEGIN) == text, \
        "MODEL_ZOO.md differs from ssn_plugins/model_zoo.json: run `python tools/leaderboard.py --paper --update`"
    assert "| SSN | 77.2 | 77.0 | 76.8 | 76.1 | 75.9 | – |" in text  # the batch table, as the papers print it
    assert "dadb0f1a0c49c31aedd6cb83d4996a03" in text


def test_figures_file_rows_and_paper_tables():
    rows = F.paper_figures()
    by_key = {(r.table, r.norm, r.batch, r.metric): r.value for r in rows}
    assert by_key[("imagenet-r50-batch-sizes", "BN", (8, 2), "top1")] == 65.3
    assert by_key[("coco-mask-rcnn-2x", "SN", (8, 2), "mask AP")] == 36.5
    assert by_key[("cityscapes-deeplab", "SyncSN", (8, 2), "mIoU (ms)")] == 77.5
    assert by_key[("kinetics-i3d-b4", "GN", (None, 4), "top5 (10-clip)")] == 90.6
    assert len(rows) == 22 + 2 + 4 + 10 + 6 + 3 + 8 + 8 + 4 + 6 + 6
    out = tool(TOOLS / "leaderboard.py", "--paper").stdout
    for table in F.load_tables():
        assert f"### {table['title']}" in out


def test_figures_file_errors_name_the_table(tmp_path):
    bad = tmp_path / "figures.yaml"
    bad.write_text("sources: {SN: x}\ntables:\n- {id: t1, title: T, task: c, dataset: d, model: m, metrics: [top1],"
                   " pivot: batch, figures: [{norm: BN, source: nowhere, batch: [8, 2], top1: 1.0}]}\n")
    with pytest.raises(ValueError, match="t1.*unknown source 'nowhere'"):
        F.paper_figures(bad)


def test_detectron2_expected_results_are_the_papers_figures():
    """TEST.EXPECTED_RESULTS of every detectron2 config is the matching figure (none without one)."""
    pytest.importorskip("detectron2")
    from detectron2.config import get_cfg

    import ssn_plugins.detectron2 as sd
    from ssn_plugins.reproduction.runs import Run
    from ssn_plugins.run_identity import describe_detectron2_config
    figures = F.paper_figures()
    checked = 0
    for path in sorted((REPO / "configs" / "detectron2").glob("*.yaml")):
        cfg = get_cfg()
        sd.add_ssn_config(cfg)
        sd.merge_config_file(cfg, path)
        run = Run(path, "detectron2", "config")
        run.describe(describe_detectron2_config(cfg, 8))
        expected = []
        for task, metric in (("bbox", "box AP"), ("segm", "mask AP")):
            if metric == "mask AP" and not cfg.MODEL.MASK_ON:
                continue
            figure = match_figure(figures, run.task, run.dataset, run.model, run.norm, run.batch, metric,
                                  reference=False)
            if figure is not None:
                expected.append([task, "AP", figure.value, 0.5])
        assert [list(e) for e in cfg.TEST.EXPECTED_RESULTS] == expected, path.name
        checked += bool(expected)
    assert checked == 4  # 2x frozen BN, GN, SN Mask R-CNN and SN Faster R-CNN


def test_openmmlab_metafiles_are_generated_from_the_figures_file():
    pytest.importorskip("mmengine")
    import yaml
    from modelindex.load_model_index import load

    from ssn_plugins.reproduction.metafiles import FAMILIES, render_metafile, render_model_index, render_readme
    configs = REPO / "configs"
    for family in FAMILIES:
        for name, render in (("metafile.yaml", render_metafile), ("README.md", render_readme)):
            path = configs / family / name
            assert path.read_text() == render(configs / family, REPO), \
                f"{path} is stale: run `python tools/leaderboard.py --paper --update`"
    assert (REPO / "model-index.yml").read_text() == render_model_index()
    # OpenMMLab's own reader (modelindex, which mim uses) loads every metafile through model-index.yml
    index = load(str(REPO / "model-index.yml"))
    index.build_models_with_collections()
    assert [e for e in index.collect_check_errors() if e["errors"]] == []
    models = {m.name: m for m in index.models}
    assert len(models) == sum(len(list((configs / f).glob("*.py"))) for f in FAMILIES)
    sn_city = models["deeplabv3_r50-d8_sn_8xb2-80k_cityscapes-512x1024"]
    assert [(r.task, r.metrics) for r in sn_city.results] == [
        ("Semantic Segmentation", {"mIoU": 72.1, "mIoU(ms+flip)": 75.8})]
    assert sn_city.weights is None and sn_city.paper["URL"] == "https://arxiv.org/abs/1806.10779"
    assert sn_city.metadata.data["Pretrained"] == "ssn://resnet50_sn_8x4"
    assert sn_city.metadata.data["Pretrained Licence"] == "CC-BY-NC 4.0"
    # box AP under Object Detection, mask AP under Instance Segmentation; mmdet's 8 x 2 from auto_scale_lr
    mask_rcnn = models["mask-rcnn_r50_fpn_sn-all_2x_coco"]
    assert [(r.task, r.metrics) for r in mask_rcnn.results] == [
        ("Object Detection", {"box AP": 41.0}), ("Instance Segmentation", {"mask AP": 36.5})]
    assert (mask_rcnn.metadata.batch_size, mask_rcnn.metadata.training_resources) == (16, "8x GPUs")
    # CE is published as CE, with no baseline's figure
    ce = models["deeplabv3_r50-d8_ce_8xb2-80k_cityscapes-512x1024"]
    assert ce.metadata.data["Norm"] == "SyncBN+CE" and not ce.results
    assert ce.paper["URL"] == "https://arxiv.org/abs/2003.00214"
    released = models["c1-deepsup_r50-d8_sn-8x2_ade20k"]
    assert released.weights == "ssn://ade20k_c1_deepsup_r50_d8_sn_8x2"
    assert released.results[0].metrics == {"mIoU": 38.72, "mIoU(ms+flip)": 39.21}
    i3d = yaml.safe_load((configs / "mmaction/i3d/metafile.yaml").read_text())["Models"]
    gn_b4 = next(m for m in i3d if m["Name"] == "i3d_r50_gn_8xb4-32x2x1-100e_kinetics400-rgb")
    assert gn_b4["Results"][0]["Metrics"] == {"top1 acc": 72.8, "top5 acc": 90.6}


def test_a_config_pretrained_at_another_setting_is_not_published_with_the_figure(tmp_path):
    """The metafile names a figure measured from other pretrained weights instead of publishing it as a result."""
    pytest.importorskip("mmengine")
    from ssn_plugins.reproduction.metafiles import config_entry
    family = tmp_path / "configs" / "mmseg" / "deeplabv3"
    family.mkdir(parents=True)
    base = REPO / "configs/mmseg/deeplabv3/deeplabv3_r50-d8_sn_8xb2-160k_ade20k-512x512.py"
    config = family / "deeplabv3_r50-d8_sn-from-8x32_8xb2-160k_ade20k-512x512.py"
    config.write_text(f"_base_ = {str(base)!r}\nmodel = dict(pretrained='ssn://resnet50_sn_8x32')\n")
    entry = config_entry(config, tmp_path)
    assert entry["Results"] == []
    assert entry["Metadata"]["Paper Figure"] == ("not compared with SN(8,2) in SN (ade20k-deeplab): pretrained: (8,32) "
                                                 "here, (8,2) in the figure")


# ------------------------------------------------------------------------------------------ selection from files
def test_describe_state_dict_equals_describe_selection_float32():
    model = torch.nn.Sequential(S.SwitchNorm2d(4), S.SparseSwitchNorm2d(4), S.SparseSwitchNorm2d(4, radius=0.3),
                                S.SwitchNorm2d(4, candidates=("IN", "LN")))
    with torch.no_grad():
        for m in model:
            m.mean_weight.copy_(torch.randn_like(m.mean_weight))
            m.var_weight.copy_(torch.randn_like(m.var_weight))
    model[1].fix("mean", "LN")
    from_model = S.describe_selection(model)
    from_file = S.describe_state_dict(model.state_dict())
    assert [r["name"] for r in from_file] == [r["name"] for r in from_model]
    for a, b in zip(from_model, from_file):
        assert a["candidates"] == b["candidates"] and a["selection"] == b["selection"]
        assert a["type"].startswith(b["type"])  # SwitchNorm2d is a SwitchNorm; the file does not say 2d
        assert a["mean_ratios"] == pytest.approx(b["mean_ratios"], abs=2e-4)
        assert a["var_ratios"] == pytest.approx(b["var_ratios"], abs=2e-4)
    assert from_file[1]["selection"] == ("LN", None)


# ------------------------------------------------------------------------------------------ the CPU suites
@pytest.fixture(scope="module")
def fashion_suite(tmp_path_factory):
    """The CI-sized Fashion-MNIST suite (BN and SSN at 32, 8, 2 images per batch), launched by reproduce.py."""
    pytest.importorskip("tensorboard")
    work = tmp_path_factory.mktemp("reproduce")
    out = tool(TOOLS / "reproduce.py", "fashion-mnist-batch-sizes", "--ci", "--norms", "BN", "SSN",
               "--work-dir", work).stdout
    return work, work / "fashion-mnist-batch-sizes", out


def test_suite_runs_then_skips_finished_runs(fashion_suite):
    work, suite_dir, out = fashion_suite
    assert out.count(": new: ") == 6 and "leaderboard:" in out
    again = tool(TOOLS / "reproduce.py", "fashion-mnist-batch-sizes", "--ci", "--norms", "BN", "SSN",
                 "--work-dir", work).stdout
    assert again.count(": finished: nothing to do") == 6
    dry = tool(TOOLS / "reproduce.py", "fashion-mnist-batch-sizes", "--ci", "--work-dir", work, "--dry-run").stdout
    assert dry.count(": new: ") == 6 and dry.count("finished") == 6  # GN and SN not run yet
    assert "--norm GN --batch-size 2" in dry and not (suite_dir / "gn_1x2").exists()


def test_leaderboard_reads_the_suite(fashion_suite):
    work, suite_dir, _ = fashion_suite
    runs = find_runs(suite_dir)
    assert len(runs) == 6 and all(r.status == FINISHED for r in runs)
    by_name = {r.path.name: r for r in runs}
    ssn = by_name["ssn_1x8"]
    metrics = json.loads((suite_dir / "ssn_1x8" / "metrics.json").read_text())
    assert ssn.pick().metrics == {"top1": metrics["top1"]} and ssn.batch == (1, 8) and ssn.norm == "SSN"
    assert ssn.dataset == "Fashion-MNIST" and ssn.task == "classification"
    # described by the run record: the launcher's half (suite, run) and the tool's (what ran)
    assert ssn.described == "run record" and ssn.settings == [(1, 8)]
    assert (ssn.record["suite"], ssn.record["run"], ssn.record["tool"]) == (
        "fashion-mnist-batch-sizes", "ssn_1x8", "train_fashion_mnist")
    assert ssn.record["figure"] is None and ssn.record["commit"]  # no paper table for this suite
    records = list(csv.DictReader(io.StringIO(tool(TOOLS / "leaderboard.py", suite_dir, "--format", "csv").stdout)))
    assert len(records) == 6
    ssn_row = next(r for r in records if r["run"].endswith("ssn_1x8"))
    assert ssn_row["ours"] == f"{metrics['top1']:.2f}" and ssn_row["paper"] == "–"  # no paper figure on this data
    counts = re.findall(r"(IN|LN|BN) (\d+)", ssn_row["selection"].split(";")[0])
    assert sum(int(n) for _, n in counts) == 9  # the small ResNet's 9 SSN layers, all fixed at the end
    bn_row = next(r for r in records if r["run"].endswith("bn_1x8"))
    assert bn_row["selection"] == "no SN/SSN layers"
    assert (suite_dir / "leaderboard.md").read_text().count("| finished |") == 6


def test_leaderboard_lists_missing_partial_and_unreadable_runs(fashion_suite, tmp_path):
    _, suite_dir, _ = fashion_suite
    import shutil
    shutil.copytree(suite_dir / "bn_1x32", tmp_path / "partial")
    (tmp_path / "partial" / "metrics.json").unlink()
    (tmp_path / "partial" / "reproduce.log").write_text("Traceback (most recent call last):\n  ...\n"
                                                        "FloatingPointError: Loss became infinite or NaN\n")
    shutil.copytree(suite_dir / "bn_1x32", tmp_path / "broken")
    (tmp_path / "broken" / "config.json").write_text("{not json")
    (tmp_path / "empty").mkdir()
    runs = find_runs(tmp_path) + find_runs(tmp_path / "empty") + find_runs(tmp_path / "nowhere")
    status = {r.path.name: (r.status, r.problem) for r in runs}
    assert status["partial"][0] == PARTIAL and "not finished" in status["partial"][1]
    assert status["partial"][1].endswith("stopped with FloatingPointError: Loss became infinite or NaN")
    assert status["broken"][0] == UNREADABLE and "config.json" in status["broken"][1]
    assert status["empty"][0] == MISSING and status["nowhere"] == (MISSING, "no such folder")
    listed = tool(TOOLS / "leaderboard.py", tmp_path, tmp_path / "nowhere", check=False)
    text = listed.stdout
    assert "unreadable (config.json" in text and "missing (no such folder)" in text and "partial (" in text
    # a path that holds nothing fails the command (a CI job must notice), unless accepted
    assert listed.returncode == 1 and f"{tmp_path / 'nowhere'}: no such folder" in listed.stderr
    assert tool(TOOLS / "leaderboard.py", tmp_path / "empty", "--allow-missing").returncode == 0
    typo = tool(TOOLS / "reproduce.py", "coco-mask-rcnn", "--dry-run", check=False)
    assert typo.returncode == 2 and "no suite 'coco-mask-rcnn'; did you mean 'coco-mask-rcnn-2x'" in typo.stderr
    refused = tool(TOOLS / "leaderboard.py", "--paper", "--format", "html", check=False)
    assert refused.returncode == 2 and "--paper prints the papers' tables as Markdown" in refused.stderr


def test_interrupted_run_resumes_to_the_uninterrupted_result(fashion_suite, tmp_path):
    """A run stopped after its first epoch is planned as 'resume' and ends equal to an uninterrupted one."""
    args = ["--norm", "SSN", "--batch-size", "32", "--train-size", "320", "--epochs", "2", "--stat-batches", "2",
            "--stat-batch-size", "32"]
    tool(TOOLS / "train_fashion_mnist.py", *args, "--work-dir", tmp_path / "straight")
    tool(TOOLS / "train_fashion_mnist.py", *args, "--work-dir", tmp_path / "cut", "--stop-after-epochs", "1")
    assert read_run(tmp_path / "cut").status == PARTIAL and (tmp_path / "cut" / "last.pth").exists()
    tool(TOOLS / "train_fashion_mnist.py", *args, "--work-dir", tmp_path / "cut", "--resume")
    straight = torch.load(tmp_path / "straight" / "final.pth", weights_only=True)
    resumed = torch.load(tmp_path / "cut" / "final.pth", weights_only=True)
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    # the suite planner resumes a partial folder with the tool's --resume flag
    suite = get_suite("fashion-mnist-batch-sizes", ci=True)
    _, suite_dir, _ = fashion_suite
    import shutil
    shutil.copytree(suite_dir, tmp_path / "suite")
    (tmp_path / "suite" / "ssn_1x2" / "metrics.json").unlink()
    planned = {p.run.name: p for p in plan(suite, tmp_path / "suite", REPO, norms=["SSN"])}
    assert planned["ssn_1x2"].state == "resume" and "--resume" in planned["ssn_1x2"].commands[0]
    assert planned["ssn_1x8"].state == "finished" and not planned["ssn_1x8"].commands


def test_slurm_launcher_through_submitit_local_executor(tmp_path):
    """Jobs through submitit (its local executor here); a re-run while a job is still running does not submit
    it again."""
    pytest.importorskip("tensorboard")
    pytest.importorskip("submitit")
    import time

    from ssn_plugins.reproduction.launch import JOB_FILE
    command = [sys.executable, str(TOOLS / "reproduce.py"), "fashion-mnist-batch-sizes", "--ci", "--norms", "bn_1x2",
               "--launcher", "slurm", "--slurm-cluster", "local", "--work-dir", str(tmp_path)]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
    note = tmp_path / "fashion-mnist-batch-sizes" / "bn_1x2" / JOB_FILE
    deadline = time.time() + 120
    while not note.exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    again = tool(*command[1:]).stdout
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0, out[-2000:] + err[-3000:]
    job = json.loads(note.read_text())["job_id"]
    assert f"submitted {job}" in out
    assert re.search(rf"bn_1x2: job {job} \((RUNNING|PENDING)\) is still queued or running; not submitted again",
                     again), again
    assert "submitted" not in again.replace("not submitted again", "")
    (run,) = find_runs(tmp_path / "fashion-mnist-batch-sizes")
    assert run.status == FINISHED and run.norm == "BN" and run.batch == (1, 2)
    assert len(list((tmp_path / "fashion-mnist-batch-sizes" / "submitit").glob("*/*_result.pkl"))) == 1


def test_sigterm_to_the_launcher_stops_its_training_and_a_second_launcher_never_trains_the_same_run(tmp_path):
    pytest.importorskip("tensorboard")
    import signal
    import time

    from ssn_plugins.reproduction.launch import LOCK_FILE, run_folder_busy
    command = [sys.executable, str(TOOLS / "reproduce.py"), "fashion-mnist-batch-sizes", "--ci", "--norms", "bn_1x2",
               "--work-dir", str(tmp_path)]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
    folder = tmp_path / "fashion-mnist-batch-sizes" / "bn_1x2"
    deadline = time.time() + 120
    while not (folder / "reproduce.log").exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(2)  # the training process is up
    assert first.poll() is None, first.communicate()
    # a second launcher on the same work dir refuses the run the first one trains
    second = tool(*command[1:], check=False)
    assert second.returncode == 1 and re.search(r"bn_1x2 is in use by launcher pid \d+", second.stderr), second.stderr
    first.send_signal(signal.SIGTERM)
    out, err = first.communicate(timeout=120)
    assert first.returncode == 128 + signal.SIGTERM, out + err
    # the training got the signal and ended with its launcher: nothing holds the folder, nothing still writes to it
    assert (folder / LOCK_FILE).exists() and run_folder_busy(folder) is None
    log = (folder / "reproduce.log").read_text()
    time.sleep(1)
    assert (folder / "reproduce.log").read_text() == log
    assert "finished" not in [r.status for r in find_runs(tmp_path / "fashion-mnist-batch-sizes")]


def test_analyze_selection_charts_from_a_run(fashion_suite, tmp_path):
    from PIL import Image
    _, suite_dir, _ = fashion_suite
    out = tool(TOOLS / "analyze_selection.py", suite_dir / "ssn_1x2", "-o", tmp_path).stdout
    assert "9 SN/SSN layers" in out
    for name in ("selection_per_layer.png", "selection_per_stage.png", "ratio_trajectories.png"):
        with Image.open(tmp_path / name) as image:
            assert image.size[0] > 400 and image.size[1] > 200
            pixels = torch.tensor(list(image.convert("L").getdata()), dtype=torch.float32)
            assert pixels.std() > 10  # something is drawn
    rows = json.loads((tmp_path / "selection.json").read_text())
    assert len(rows) == 9 and all(r["selection"][0] is not None for r in rows)


def test_analyze_selection_says_in_one_line_why_a_checkpoint_cannot_be_read(tmp_path):
    """A damaged, empty or foreign file is one line naming it and why, not a traceback (R16)."""
    pytest.importorskip("matplotlib")
    from ssn_plugins.cli import analyze_selection
    torch.save({"state_dict": {"w": torch.zeros(1000)}}, tmp_path / "good.pth")
    (tmp_path / "truncated.pth").write_bytes((tmp_path / "good.pth").read_bytes()[:300])
    (tmp_path / "empty.pth").write_bytes(b"")
    torch.save([1, 2, 3], tmp_path / "a_list.pth")
    expected = {"truncated.pth": "not a readable checkpoint (", "empty.pth": "the file is empty",
                "a_list.pth": "holds a list, not a state dict", "good.pth": "has no SN/SSN layers"}
    for name, fragment in expected.items():
        with pytest.raises(SystemExit) as stopped:
            analyze_selection.main([str(tmp_path / name), "-o", str(tmp_path / "out")])
        message = str(stopped.value)
        assert message.startswith(f"analyze_selection: {tmp_path / name}") and fragment in message, message
        assert "\n" not in message
    assert not (tmp_path / "out").exists()


class _RunsCommand:
    """Pickles as a call to ``os.system``: what a malicious checkpoint in a shared run folder holds."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_readers_of_run_folders_read_checkpoints_weights_only_unless_told_to_trust_them(fashion_suite, tmp_path):
    import datetime
    import shutil
    _, suite_dir, _ = fashion_suite
    shutil.copytree(suite_dir / "ssn_1x2", tmp_path / "shared" / "ssn_1x2")
    (run,) = find_runs(tmp_path / "shared")
    state = torch.load(run.checkpoint, weights_only=True)
    marker = tmp_path / "PWNED"
    torch.save({**state, "extra": _RunsCommand(marker)}, run.checkpoint)
    board = tool(TOOLS / "leaderboard.py", tmp_path / "shared").stdout
    assert "refused by weights-only loading" in board and "posix.system" in board and "--trust-pickle" in board
    refused = tool(TOOLS / "analyze_selection.py", run.checkpoint, "-o", tmp_path / "charts", check=False)
    assert refused.returncode == 1 and "pass --trust-pickle (tools/leaderboard.py, tools/analyze_selection.py)" \
        in refused.stderr and "Traceback" not in refused.stderr
    assert not marker.exists()
    # a file holding a harmless object beyond tensors: read when trusted, and only then
    torch.save({**state, "extra": datetime.date(2026, 12, 2)}, run.checkpoint)
    board = tool(TOOLS / "leaderboard.py", tmp_path / "shared").stdout
    assert "refused by weights-only loading: it imports datetime.date" in board
    assert "mean: BN" in tool(TOOLS / "leaderboard.py", tmp_path / "shared", "--trust-pickle").stdout
    trusted = tool(TOOLS / "analyze_selection.py", run.checkpoint, "-o", tmp_path / "charts", "--trust-pickle").stdout
    assert "9 SN/SSN layers" in trusted


def test_html_leaderboard_loads_in_headless_chromium(fashion_suite, tmp_path):
    from PIL import Image

    from ssn_plugins.reproduction.browser import dump_dom, find_browser
    try:
        find_browser()
    except FileNotFoundError as error:  # CI installs it (tools/with_env.sh --with-browser, .ci/run)
        pytest.skip(str(error))
    _, suite_dir, _ = fashion_suite
    page, shot = tmp_path / "board.html", tmp_path / "board.png"
    tool(TOOLS / "leaderboard.py", suite_dir, "--format", "html", "-o", page, "--screenshot", shot)
    html = page.read_text()
    assert "<link" not in html and "src=\"http" not in html  # self-contained
    dom = dump_dom(page)
    images = dom.count("<img ")
    assert images >= 4  # top-1 by batch, and each SSN run's per-layer chart
    assert f'data-images-loaded="{images}"' in dom, "the browser did not decode every chart"
    assert dom.count("<tr>") == 1 + 6
    with Image.open(shot) as image:
        assert image.size == (1600, 2200)
        assert len(set(image.convert("L").resize((80, 110)).getdata())) > 20  # not a blank page


def test_real_mini_suite_detectron2_run_is_read_with_heldout_ap(tmp_path):
    """One detectron2 run of the real-mini suite (CI size): AP on the training photos and on the held-out ones."""
    pytest.importorskip("detectron2")
    pytest.importorskip("tensorboard")
    out = tool(TOOLS / "reproduce.py", "real-mini", "--ci", "--norms", "SSN", "--work-dir", tmp_path,
               cwd=tmp_path).stdout
    assert "ssn: new:" in out
    (run,) = find_runs(tmp_path / "real-mini")
    assert run.status == FINISHED, run.problem
    assert run.tool == "detectron2" and run.norm == "SSN" and run.model == "Mask R-CNN R50-FPN 4 iters"
    assert run.dataset == "real_mini" and run.batch == (1, 2)
    assert run.described == "run record" and run.record["tool"] == "detectron2_real_mini"
    assert run.record["suite"] == "real-mini" and run.settings == [(1, 2)]
    metrics = run.pick().metrics
    # detectron2 records NaN for a task with no detection to score (likely after 4 iterations from scratch)
    assert {"box AP", "box AP (real_mini_heldout)"} <= set(metrics)
    summary = json.loads((tmp_path / "real-mini" / "ssn" / "real_mini_summary.json").read_text())
    assert summary["test_sets"] == ["real_mini_val", "real_mini_heldout"]
    for name, metric in (("real_mini_val", "box AP"), ("real_mini_heldout", "box AP (real_mini_heldout)")):
        value = summary["ap_after_by_test_set"][name]
        # the tool reports COCO's 0, flagged, where detectron2 recorded NaN (no detection to score)
        if value["detected"]:
            assert metrics[metric] == pytest.approx(value["bbox"], abs=0.01)
        else:
            assert value["bbox"] == 0.0 and math.isnan(metrics[metric])
    (row,) = build_rows([run])
    assert sum(row.selection["mean"].values()) == 69  # every SSN layer of the final checkpoint is counted
    # the detectron2 hook put the per-layer chart into TensorBoard at the final evaluation
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(tmp_path / "real-mini" / "ssn"), size_guidance={"images": 0})
    events.Reload()
    assert "ssn/selection_per_layer" in events.Tags()["images"]
    charts = tool(TOOLS / "analyze_selection.py", tmp_path / "real-mini" / "ssn", "-o", tmp_path / "charts").stdout
    assert "69 SN/SSN layers" in charts and (tmp_path / "charts" / "ratio_trajectories.png").exists()


def test_cluster_suites_dry_run_commands(tmp_path):
    """The GPU suites' commands, as --dry-run prints them: detectron2's own launcher, torchrun for mmengine."""
    # no data set here: the commands are printed, and so is every data root they would miss (exit status 1)
    pytest.importorskip("detectron2")
    pytest.importorskip("mmengine")
    coco = tool(TOOLS / "reproduce.py", "coco-mask-rcnn-2x", "--launcher", "torchrun", "--dry-run",
                "--work-dir", tmp_path, check=False)
    assert coco.returncode == 1 and coco.stdout.count(": new: ") == 4
    frozen = "configs/detectron2/mask_rcnn_R_50_FPN_2x_frozenbn.yaml"
    assert f"-m ssn_plugins.cli.train_net --num-gpus 8 --config-file {frozen}" in coco.stdout
    assert "coco_2017_train: datasets/coco/train2017 (missing; detectron2 reads $DETECTRON2_DATASETS" in coco.stderr
    city = tool(TOOLS / "reproduce.py", "cityscapes-deeplab", "--launcher", "torchrun", "--dry-run", "--norms", "sn",
                "--work-dir", tmp_path, check=False)
    assert city.returncode == 1 and "train_dataloader: data/cityscapes/leftImg8bit/train (missing)" in city.stderr
    city = city.stdout
    assert "torch.distributed.run --nproc_per_node=8 -m ssn_plugins.cli.mm_train" in city
    assert "--launcher pytorch" in city
    assert "deeplabv3_r50-d8_sn_8xb2-80k_cityscapes-512x1024.py" in city and city.count(": new: ") == 1
    local = tool(TOOLS / "reproduce.py", "cityscapes-deeplab", "--dry-run", "--norms", "sn", "--work-dir",
                 tmp_path, check=False).stdout
    assert "torch.distributed.run" not in local and "--launcher" not in local
    # resuming an mmengine run: mm_train's --resume takes an optional path, so it must not swallow the config
    from ssn_plugins.reproduction.suites import command
    train = get_suite("cityscapes-deeplab").runs[0].steps[0]
    resumed = command(train, tmp_path / "w", REPO, "torchrun", 8, resume=True, data=None)
    assert resumed[resumed.index("--resume") + 1] == "auto" and resumed[-2:] == ["--launcher", "pytorch"]
    refused = tool(TOOLS / "reproduce.py", "imagenet-r50-batch-sizes", "--dry-run", "--work-dir", tmp_path,
                   check=False)
    assert refused.returncode == 2 and "needs --data" in refused.stderr
    data = tool(TOOLS / "reproduce.py", "imagenet-r50-batch-sizes", "--dry-run", "--data", tmp_path / "imagenet",
                "--norms", "sn_8x1", "--work-dir", tmp_path, check=False)
    assert data.returncode == 1 and f"--data {tmp_path / 'imagenet'} (no such folder)" in data.stderr
    assert "--no-bn --batch-setting 8,1 --dataset-name ImageNet" in data.stdout and data.stdout.count(": new: ") == 1


def test_ci_shrinks_the_gpu_suites_and_keeps_their_data(tmp_path):
    """``--ci`` of a GPU suite: the same configs and data roots, a few iterations on a slice of the evaluation set
    (the frameworks' own options: detectron2's ``coco_2017_val_100``, mmengine's dataset ``indices``)."""
    pytest.importorskip("detectron2")
    pytest.importorskip("mmengine")
    import argparse

    from detectron2.data import DatasetCatalog
    from mmengine.config import Config, DictAction

    from ssn_plugins.detectron2.trainer import load_config
    for name, indices in (("cityscapes-deeplab", 20), ("kinetics-i3d-b8", 16)):
        full, short = get_suite(name).runs[0].steps, get_suite(name, ci=True).runs[0].steps
        assert [s.tool for s in full] == [s.tool for s in short]
        train = short[0].args
        parser = argparse.ArgumentParser()
        parser.add_argument("--cfg-options", nargs="+", action=DictAction)
        options = parser.parse_args(train[train.index("--cfg-options"):]).cfg_options
        cfg, reference = Config.fromfile(str(REPO / train[0])), Config.fromfile(str(REPO / full[0].args[0]))
        cfg.merge_from_dict(options)
        assert cfg.val_dataloader.dataset.indices == cfg.test_dataloader.dataset.indices == indices
        shrunk = {k: v for k, v in cfg.val_dataloader.dataset.items() if k != "indices"}
        assert shrunk == reference.val_dataloader.dataset  # the same data set, its first few items
        assert all("--cfg-options" in s.args for s in short[1:])  # the test steps read the same slice
    (train,) = get_suite("coco-mask-rcnn-2x", ci=True).runs[2].steps
    config = train.args[train.args.index("--config-file") + 1]
    cfg = load_config(str(REPO / config), train.args[train.args.index("WORK") + 1:])
    assert cfg.SOLVER.MAX_ITER == 20 and cfg.DATASETS.TRAIN == ("coco_2017_train",)
    assert cfg.DATASETS.TEST == ("coco_2017_val_100",) and "coco_2017_val_100" in DatasetCatalog.list()
    (train,) = get_suite("imagenet-r50-batch-sizes", ci=True).runs[0].steps
    assert train.args[-4:] == ["--epochs", "1", "--subset", "2000"]


def test_a_launch_checks_the_data_roots_first(tmp_path):
    """COCO where detectron2 reads it ($DETECTRON2_DATASETS): nothing is missing; without it nothing starts."""
    pytest.importorskip("detectron2")
    pytest.importorskip("mmengine")
    refused = tool(TOOLS / "reproduce.py", "coco-faster-rcnn-2x", "--norms", "sn", "--launcher", "torchrun",
                   "--work-dir", tmp_path / "w", check=False)
    assert refused.returncode == 2 and "input(s) the runs read do not exist" in refused.stderr
    assert not (tmp_path / "w" / "coco-faster-rcnn-2x" / "sn").exists()
    coco = tmp_path / "datasets" / "coco"
    for split in ("train2017", "val2017"):
        (coco / split).mkdir(parents=True)
    (coco / "annotations").mkdir()
    for split in ("train2017", "val2017"):
        (coco / "annotations" / f"instances_{split}.json").write_text("{}")
    found = subprocess.run([sys.executable, str(TOOLS / "reproduce.py"), "coco-faster-rcnn-2x", "--norms", "sn",
                            "--launcher", "torchrun", "--dry-run", "--work-dir", str(tmp_path / "w")],
                           capture_output=True, text=True, cwd=REPO, timeout=300,
                           env={**os.environ, "DETECTRON2_DATASETS": str(tmp_path / "datasets")})
    assert found.returncode == 0 and "missing:" not in found.stderr, found.stderr[-2000:]


def test_slurm_launcher_refuses_a_machine_without_slurm_and_takes_the_schedulers_options(tmp_path):
    pytest.importorskip("tensorboard")
    pytest.importorskip("submitit")
    from submitit.slurm.slurm import _make_sbatch_string

    from ssn_plugins.reproduction.launch import SlurmOptions, slurm_parameters

    empty = tmp_path / "bin"  # a PATH without sbatch, whatever this machine has
    empty.mkdir()
    result = subprocess.run([sys.executable, str(TOOLS / "reproduce.py"), "fashion-mnist-batch-sizes", "--ci",
                             "--norms", "BN", "--launcher", "slurm", "--work-dir", str(tmp_path / "w")],
                            capture_output=True, text=True, cwd=REPO, timeout=300,
                            env={**os.environ, "PATH": str(empty)})
    assert result.returncode == 2 and "no Slurm on this machine (sbatch not found)" in result.stderr
    assert not (tmp_path / "w" / "fashion-mnist-batch-sizes" / "bn_1x32").exists()  # nothing ran locally instead
    params = slurm_parameters(8, SlurmOptions(partition="gpu", account="vision", qos="high", mem="400G",
                                              time_min=600, gpus_per_node=4, cpus_per_gpu=12))
    script = _make_sbatch_string("python x.py", str(tmp_path), time=600,
                                 **{k[len("slurm_"):] if k.startswith("slurm_") else k: v for k, v in params.items()})
    for line in ("--partition=gpu", "--account=vision", "--qos=high", "--mem=400G", "--time=600",
                 "--gpus-per-node=4", "--cpus-per-task=48"):
        assert f"#SBATCH {line}" in script, line


def test_kinetics_suites_run_the_papers_10_clip_test_and_compare_only_it():
    pytest.importorskip("mmengine")
    from mmengine.config import Config

    from ssn_plugins.cli.mm_test import clips_per_video
    from ssn_plugins.reproduction.runs.mmengine import _mm_metrics
    from ssn_plugins.reproduction.suites import get_suite

    for name in ("kinetics-i3d-b8", "kinetics-i3d-b4"):
        for run in get_suite(name).runs:
            train, test = run.steps
            assert (train.tool, test.tool) == ("mm_train", "mm_test") and "--tta" not in test.args
            assert test.args[1] == "WORK/CHECKPOINT"
            assert clips_per_video(Config.fromfile(str(REPO / test.args[0]))) == 10
    assert _mm_metrics({"acc/top1": 0.7, "acc/top5": 0.9}) == {"top1": 70.0, "top5": 90.0}   # training's 1 clip
    assert _mm_metrics({"acc/top1": 0.7}, clips=10) == {"top1 (10-clip)": 70.0}
    figures = F.paper_figures()
    args = ("video classification", "Kinetics-400", "I3D R50", "SN", (8, 8))
    assert match_figure(figures, *args, "top1") is None   # a 1-clip validation is not the papers' figure
    assert match_figure(figures, *args, "top1 (10-clip)").value == 73.5


def test_a_multi_gpu_suite_is_not_run_in_one_process_silently(tmp_path):
    pytest.importorskip("detectron2")
    pytest.importorskip("mmengine")
    refused = tool(TOOLS / "reproduce.py", "coco-faster-rcnn-2x", "--norms", "sn", "--work-dir", tmp_path, check=False)
    assert refused.returncode == 2 and "use 8 GPUs, the papers' setting" in refused.stderr
    assert "--allow-setting-change" in refused.stderr and not (tmp_path / "coco-faster-rcnn-2x" / "sn").exists()
    # the flag lets the launch past that check (here it then stops at the missing COCO, before starting anything)
    allowed = tool(TOOLS / "reproduce.py", "coco-faster-rcnn-2x", "--norms", "sn", "--work-dir", tmp_path,
                   "--allow-setting-change", check=False)
    assert allowed.returncode == 2 and "papers' setting" not in allowed.stderr
    assert "input(s) the runs read do not exist" in allowed.stderr
