"""Run records (what ran, written by the tools) and the leaderboard's "not comparable" rule."""
import json

import pytest

from ssn_plugins.reproduction.leaderboard import build_rows, table_records
from ssn_plugins.run_record import RUN_RECORD, pretrain_setting, read_run_record, write_run_record
from ssn_plugins.reproduction.runs import FINISHED, PARTIAL, UNREADABLE, Evaluation, Run, apply_record, read_run


def test_the_launch_and_tool_halves_merge_and_a_resume_keeps_every_setting(tmp_path):
    write_run_record(tmp_path, suite="coco-faster-rcnn-2x", run="sn", table="coco-faster-rcnn-2x",
                     figure="coco-faster-rcnn-2x: SN @ (8,2)")
    write_run_record(tmp_path, tool="train_net", gpus=8, images_per_gpu=2, norm="SN")
    record = read_run_record(tmp_path)
    assert record["suite"] == "coco-faster-rcnn-2x" and record["tool"] == "train_net"
    assert record["settings"] == [[8, 2]]
    write_run_record(tmp_path, tool="train_net", gpus=8, images_per_gpu=2)   # resumed the same way
    assert read_run_record(tmp_path)["settings"] == [[8, 2]]
    write_run_record(tmp_path, tool="train_net", gpus=4, images_per_gpu=2)   # resumed on half the GPUs
    assert read_run_record(tmp_path)["settings"] == [[8, 2], [4, 2]]
    assert not list(tmp_path.glob("*.partial"))
    with pytest.raises(TypeError, match="unknown field.*'batch'"):
        write_run_record(tmp_path, batch=16)


def test_a_bad_record_is_an_unreadable_run_and_a_record_alone_a_partial_one(tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / RUN_RECORD).write_text("{not json")
    run = read_run(tmp_path / "bad")
    assert run.status == UNREADABLE and RUN_RECORD in run.problem
    (tmp_path / "bad" / RUN_RECORD).write_text(json.dumps({"schema": 99}))
    assert "not a schema-1 run record" in read_run(tmp_path / "bad").problem
    write_run_record(tmp_path / "launched", suite="real-mini", run="sn", tool="detectron2_real_mini")
    (tmp_path / "launched" / "reproduce.log").write_text("ValueError: no such dataset\n")
    run = read_run(tmp_path / "launched")
    assert (run.status, run.tool) == (PARTIAL, "detectron2_real_mini")
    assert run.problem == "the tool wrote nothing yet; stopped with ValueError: no such dataset"


def test_pretrain_setting_comes_from_the_catalogue():
    assert pretrain_setting("ssn://resnet50_sn_8x2") == (8, 2)
    assert pretrain_setting("ssn://detectron2/resnet50_sn_8x32") == (8, 32)
    assert pretrain_setting("work_dirs/x/final.pth") is None and pretrain_setting("") is None
    # a test records the training setting of a released trained model, never an ImageNet backbone's pretraining
    from ssn_plugins.run_record import trained_setting
    assert trained_setting("ssn://mask_rcnn_R_50_FPN_2x_sn_8x1") == (8, 1)
    assert trained_setting("ssn://resnet50_sn_8x32") == trained_setting("model_final.pth") == (None, None)


def _run(tmp_path, metrics, record=None, **described):
    """A finished run with one validation, described by ``record`` (as the tools write it) or by ``described``
    (as inference from a config would)."""
    run = Run(tmp_path, "detectron2", FINISHED, **described)
    run.evaluations.append(Evaluation(180000, metrics))
    if record is not None:
        apply_record(run, record)
    return run


FASTER_SN = dict(task="detection", dataset="COCO", model="Faster R-CNN R50-FPN 2x", norm="SN",
                 suite="coco-faster-rcnn-2x", figure="coco-faster-rcnn-2x: SN @ (8,2)",
                 pretrained="ssn://detectron2/resnet50_sn_8x32")
ADE_SN = dict(task="semantic segmentation", dataset="ADE20K", model="DeepLab R50-D8", norm="SN",
              suite="ade20k-deeplab", figure="ade20k-deeplab: SN(8,2) @ (8,2)", gpus=8, images_per_gpu=2,
              settings=[[8, 2]])


def _verdicts(runs):
    return [(r["metric"], r["paper"], r["reproduced"], r["described by"])
            for r in table_records(build_rows(runs, with_selection=False))]


def test_a_run_at_another_setting_than_its_figure_is_not_comparable(tmp_path):
    # tools/reproduce.py --allow-setting-change ran the 8-GPU suite in one process: the record says so
    one_process = _run(tmp_path, {"box AP": 39.1}, {**FASTER_SN, "gpus": 1, "images_per_gpu": 2,
                                                    "settings": [[1, 2]]})
    assert _verdicts([one_process]) == [
        ("box AP", "39.30", "not comparable (GPUs: 1 here, 8 in the figure)", "run record")]
    eight = _run(tmp_path, {"box AP": 39.1}, {**FASTER_SN, "gpus": 8, "images_per_gpu": 2, "settings": [[8, 2]]})
    assert _verdicts([eight]) == [("box AP", "39.30", "yes", "run record")]
    resumed = _run(tmp_path, {"box AP": 39.1}, {**FASTER_SN, "gpus": 4, "images_per_gpu": 2,
                                                "settings": [[8, 2], [4, 2]]})
    assert _verdicts([resumed])[0][2] == ("not comparable (resumed with another setting: (8,2), then (4,2); GPUs: 4 "
                                          "here, 8 in the figure)")
    # the suite's CI variant: another schedule is another model
    short = _run(tmp_path, {"box AP": 0.1}, {**FASTER_SN, "model": "Faster R-CNN R50-FPN 4 iters", "gpus": 8,
                                             "images_per_gpu": 2, "settings": [[8, 2]]})
    assert _verdicts([short])[0][2] == ("not comparable (model: Faster R-CNN R50-FPN 4 iters here, Faster R-CNN "
                                        "R50-FPN 2x in the figure)")


def test_a_run_from_other_pretrained_weights_is_not_comparable(tmp_path):
    from_8x32 = _run(tmp_path, {"mIoU": 38.9}, {**ADE_SN, "pretrained": "ssn://resnet50_sn_8x32"})
    assert _verdicts([from_8x32]) == [
        ("mIoU", "38.70", "not comparable (pretrained: (8,32) here, (8,2) in the figure)", "run record")]
    from_8x2 = _run(tmp_path, {"mIoU": 38.9}, {**ADE_SN, "pretrained": "ssn://resnet50_sn_8x2"})
    assert _verdicts([from_8x2]) == [("mIoU", "38.70", "yes", "run record")]
    # a run without a record (another tool's) is matched by its description, and says it was inferred
    foreign = _run(tmp_path, {"mIoU": 38.9}, task="semantic segmentation", dataset="ADE20K", model="DeepLab R50-D8",
                   norm="SN", batch=(8, 2), pretrained="/data/my_sn_resnet50.pth")
    assert _verdicts([foreign]) == [("mIoU", "38.70", "not comparable (pretrained: /data/my_sn_resnet50.pth, of no "
                                     "known setting here, (8,2) in the figure)", "inferred")]


def test_a_record_naming_a_figure_the_data_file_no_longer_has_says_so(tmp_path):
    run = _run(tmp_path, {"box AP": 39.1}, {**FASTER_SN, "figure": "coco-faster-rcnn-2x: SN @ (4,4)", "gpus": 8,
                                            "images_per_gpu": 2})
    (record,) = table_records(build_rows([run], with_selection=False))
    assert (record["paper"], record["reproduced"]) == ("–", "–")
    assert "names the figure 'coco-faster-rcnn-2x: SN @ (4,4)', which paper_figures.yaml no longer has" in \
        record["status"]


def test_the_html_page_says_when_and_what_and_groups_rows_by_table(tmp_path):
    from ssn_plugins.reproduction.leaderboard import COLUMNS, to_html
    runs = [_run(tmp_path, {"box AP": 39.1}, {**FASTER_SN, "gpus": 8, "images_per_gpu": 2}),
            _run(tmp_path, {"mIoU": 38.9}, {**ADE_SN, "pretrained": "ssn://resnet50_sn_8x2"}),
            _run(tmp_path, {"top1": 90.0}, {"task": "classification", "dataset": "Fashion-MNIST", "norm": "SN",
                                            "model": "small ResNet", "gpus": 1, "images_per_gpu": 8})]
    page = to_html(table_records(build_rows(runs, with_selection=False)),
                   generated={"generated": "2026-12-02T03:00:00+00:00", "ssn_plugins commit": "abc123"})
    assert "generated: <code>2026-12-02T03:00:00+00:00</code>" in page and "<code>abc123</code>" in page
    sections = page.split("<section")[1:]
    assert [s[s.index("<h2>") + 4:s.index("</h2>")] for s in sections] == [
        "ADE20K DeepLab R50 (OS 8), mIoU single / multi-scale (ade20k-deeplab)",
        "COCO Faster R-CNN R50-FPN 2x, box AP (coco-faster-rcnn-2x)", "Runs without a paper figure"]
    assert all(s.count("<tr>") == 2 for s in sections)  # a header and its run
    assert all(f"<dt>{c}</dt>" in page for c in COLUMNS)


def test_the_commit_is_the_checkouts():
    import subprocess
    from pathlib import Path

    from ssn_plugins.run_record import current_commit
    repo = Path(__file__).resolve().parents[1]
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:  # a clone (CI's is one)
        assert current_commit() in (head.stdout.strip(), head.stdout.strip() + "+dirty")
    else:
        assert current_commit().startswith("ssn_plugins ")


def test_a_malformed_run_is_one_unreadable_row_and_links_list_a_run_once(tmp_path):
    """One bad folder must not take the whole leaderboard down (R10), and symbolic links must not repeat runs."""
    from ssn_plugins.reproduction.runs import find_runs
    (tmp_path / "tool_is_a_number").mkdir()
    (tmp_path / "tool_is_a_number" / "config.json").write_text(json.dumps({"tool": 5, "dataset": 7}))
    (tmp_path / "tool_is_a_number" / "metrics.json").write_text(json.dumps({"top1": "high"}))
    good = tmp_path / "good"
    write_run_record(good, tool="train_fashion_mnist", task="classification", dataset="Fashion-MNIST",
                     model="small ResNet", norm="SN", gpus=1, images_per_gpu=8)
    (good / "config.json").write_text(json.dumps({"tool": "train_fashion_mnist"}))
    (good / "metrics.json").write_text(json.dumps({"top1": 80.0, "iterations": 10}))
    (tmp_path / "loop").mkdir()
    (tmp_path / "loop" / "self").symlink_to(tmp_path / "loop")
    (tmp_path / "loop" / "parent").symlink_to(tmp_path)
    runs = find_runs(tmp_path)
    by_name = {r.path.name: r for r in runs}
    assert sorted(by_name) == ["good", "tool_is_a_number"] and len(runs) == 2
    assert by_name["good"].status == FINISHED
    bad = by_name["tool_is_a_number"]
    assert bad.status == UNREADABLE and bad.problem.startswith(("AttributeError", "ValueError", "TypeError"))
    assert len(table_records(build_rows(runs, with_selection=False))) == 2
