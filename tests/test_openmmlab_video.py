"""Video with mmaction2 on real clips (HMDB51 / UCF101 windows from Debian's pytorch-vision sources):
the Kinetics-style set, the datasets that skip broken videos, the 10-clip test and GN inflation for I3D."""
import shutil
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest

pytest.importorskip("mmengine")  # needs the full stack; a torch-only install runs the core tests
pytest.importorskip("numpy")

import numpy as np

import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.registry import DefaultScope

import ssn_plugins.openmmlab  # noqa: F401
import ssn_plugins.openmmlab.video_datasets as VD
from ssn_plugins.checkpoints import I3D_R50_INFLATE, ConversionError, inflate_openmmlab_resnet
from ssn_plugins.datasets.real_clips import CLASSES, write_kinetics_style, write_video

ROOT = Path(__file__).resolve().parents[1]
REAL_CLIPS_CONFIG = ROOT / "configs/mmaction/real_clips/i3d_r50_ssn3d_8xb4-8x1x1-200it_real-clips-rgb.py"
PIPELINE = [dict(type="DecordInit"), dict(type="SampleFrames", clip_len=8, frame_interval=1, num_clips=1),
            dict(type="DecordDecode"), dict(type="Resize", scale=(64, 64), keep_ratio=False),
            dict(type="FormatShape", input_format="NCTHW"), dict(type="PackActionInputs")]
RAW_PIPELINE = [dict(type="SampleFrames", clip_len=8, frame_interval=1, num_clips=1), dict(type="RawFrameDecode"),
                dict(type="Resize", scale=(64, 64), keep_ratio=False),
                dict(type="FormatShape", input_format="NCTHW"), dict(type="PackActionInputs")]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """A small copy of the real clip set in both layouts: 2 + 2 windows of 16 frames per class."""
    root = tmp_path_factory.mktemp("real_clips")
    counts = write_kinetics_style(root, layouts=("videos", "rawframes"), train_per_class=2, val_per_class=2)
    assert counts == {"train": 6, "val": 6}
    return root


def build_dataset(**cfg):
    from mmaction.registry import DATASETS
    with DefaultScope.overwrite_default_scope("mmaction"):
        return DATASETS.build(cfg)


def test_real_clip_set_layouts(clips):
    import decord
    for layout in ("videos", "rawframes"):
        for split in ("train", "val"):
            lines = (clips / f"real_clips_{split}_list_{layout}.txt").read_text().splitlines()
            assert len(lines) == 6
            labels = [int(line.split()[-1]) for line in lines]
            assert sorted(labels) == [0, 0, 1, 1, 2, 2]  # balanced over the three classes
            for line in lines:
                name, label = line.split()[0], int(line.split()[-1])
                assert name.startswith(CLASSES[label] + "/")
                path = clips / f"{layout}_{split}" / name
                if layout == "videos":
                    reader = decord.VideoReader(str(path))
                    assert len(reader) == 16 and min(reader[0].shape[:2]) == 128
                else:
                    assert sorted(p.name for p in path.iterdir()) == [f"img_{i:05}.jpg" for i in range(1, 17)]
    # validation windows start after the training windows of the same video (the last third of each video)
    train_starts, val_starts = ({line.split()[0].rsplit("_", 1)[0]: int(line.split()[0].rsplit("_", 1)[1][:3])
                                 for line in (clips / f"real_clips_{s}_list_videos.txt").read_text().splitlines()}
                                for s in ("train", "val"))
    for video, start in val_starts.items():
        if video in train_starts:
            assert start >= train_starts[video] + 16


def training_lines(clips, layout="videos"):
    return (clips / f"real_clips_train_list_{layout}.txt").read_text().splitlines()


def video_list(clips, tmp_path, extra, layout="videos"):
    """The real training list plus ``extra`` lines, with every video (or frame folder) copied under ``tmp_path``."""
    root = tmp_path / layout
    shutil.copytree(clips / f"{layout}_train", root)
    ann = tmp_path / "list.txt"
    ann.write_text("\n".join(training_lines(clips, layout) + extra) + "\n")
    return root, ann


def test_video_dataset_skips_unreadable_short_and_missing_videos(clips, tmp_path):
    root, ann = video_list(clips, tmp_path, ["broken.mp4 0", "short.mp4 1", "gone.mp4 2"])
    (root / "broken.mp4").write_bytes(b"\x00not a video" * 100)
    write_video(root / "short.mp4", np.zeros((3, 64, 64, 3), np.uint8))
    lines = training_lines(clips)
    with mock.patch.object(VD, "print_log") as log:
        dataset = build_dataset(type="RobustVideoDataset", ann_file=str(ann), data_prefix=dict(video=str(root)),
                                pipeline=PIPELINE, min_frames=8)
    assert len(dataset) == len(lines)
    reasons = {Path(path).name: reason.split(":")[0] for path, reason in dataset.skipped}
    assert reasons == {"broken.mp4": "unreadable", "short.mp4": "short", "gone.mp4": "missing"}
    message = log.call_args.args[0]
    assert "skipped 3 of 9 videos" in message and "1 missing, 1 short, 1 unreadable" in message
    assert log.call_args.kwargs["level"] == "WARNING"
    sample = dataset[0]
    assert sample["inputs"].shape == (1, 3, 8, 64, 64)


def test_training_skips_a_video_that_breaks_after_the_scan(clips, tmp_path):
    root, ann = video_list(clips, tmp_path, [])
    dataset = build_dataset(type="RobustVideoDataset", ann_file=str(ann), data_prefix=dict(video=str(root)),
                            pipeline=PIPELINE)
    victim = Path(dataset.get_data_info(0)["filename"])
    victim.write_bytes(b"truncated")
    with mock.patch.object(VD, "print_log") as log:
        sample = dataset[0]  # another video instead, never an exception
    assert sample["inputs"].shape == (1, 3, 8, 64, 64)
    # mmengine redraws uniformly, so the broken video itself may come up again: each draw of it is one failure
    assert dataset.failures == log.call_count >= 1
    assert all(victim.name in call.args[0] for call in log.call_args_list)
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, collate_fn=pseudo_collate)
    with mock.patch.object(VD, "print_log"):
        batches = list(loader)  # a whole epoch
    assert sum(len(b["inputs"]) for b in batches) == len(dataset)

    test_set = build_dataset(type="RobustVideoDataset", ann_file=str(ann), data_prefix=dict(video=str(root)),
                             pipeline=PIPELINE, test_mode=True, scan=False)
    with pytest.raises(RuntimeError, match=victim.name):
        test_set[0]  # dropping a test video would change the metric: say which one failed


def test_a_pipeline_that_fails_everywhere_is_reported_not_skipped_forever(clips, tmp_path):
    root, ann = video_list(clips, tmp_path, [])
    bad_pipeline = PIPELINE[1:]  # a config mistake: DecordDecode without DecordInit fails on every video
    dataset = build_dataset(type="RobustVideoDataset", ann_file=str(ann), data_prefix=dict(video=str(root)),
                            pipeline=bad_pipeline)
    with mock.patch.object(VD, "print_log"), pytest.raises(RuntimeError, match="pipeline rather than the videos"):
        dataset[0]
    assert dataset.failures == VD.FAILURES_BEFORE_GIVING_UP


def test_rawframe_dataset_skips_missing_incomplete_and_short_folders(clips, tmp_path):
    lines = training_lines(clips, "rawframes")
    incomplete, short = lines[1].split()[0], lines[2].split()[0]
    root, ann = video_list(clips, tmp_path, ["wave/not_there 16 0", f"{short} 4 {lines[2].split()[-1]}"],
                           "rawframes")
    (root / incomplete / "img_00016.jpg").unlink()
    with mock.patch.object(VD, "print_log"):
        dataset = build_dataset(type="RobustRawframeDataset", ann_file=str(ann), data_prefix=dict(img=str(root)),
                                pipeline=RAW_PIPELINE, min_frames=8)
    reasons = sorted((Path(path).name, reason.split(":")[0]) for path, reason in dataset.skipped)
    assert reasons == sorted([(Path(incomplete).name, "unreadable"), ("not_there", "missing"),
                              (Path(short).name, "short")])
    assert len(dataset) == len(lines) - 1
    assert dataset[0]["inputs"].shape == (1, 3, 8, 64, 64)


def test_unusable_arguments_and_empty_sets_are_refused(clips, tmp_path):
    ann = tmp_path / "list.txt"
    ann.write_text("gone.mp4 0\n")
    with pytest.raises(ValueError, match="none of the 1 videos"), mock.patch.object(VD, "print_log"):
        build_dataset(type="RobustVideoDataset", ann_file=str(ann), data_prefix=dict(video=str(tmp_path)),
                      pipeline=PIPELINE)
    with pytest.raises(ValueError, match="min_frames"):
        build_dataset(type="RobustVideoDataset", ann_file=str(ann), pipeline=PIPELINE, min_frames=0)


@pytest.mark.parametrize("total, clip_len, interval", [(16, 8, 1), (300, 32, 2), (70, 32, 2)])
def test_ten_clip_sampling_is_regular(total, clip_len, interval):
    """10 clips from the first frame to the last, evenly spaced (as the configs' test pipelines sample them)."""
    from mmaction.datasets.transforms import SampleFrames
    sampled = SampleFrames(clip_len=clip_len, frame_interval=interval, num_clips=10, test_mode=True)(
        dict(total_frames=total, start_index=0))["frame_inds"].reshape(10, clip_len)
    span = (clip_len - 1) * interval + 1  # frames from a clip's first to its last: the last clip ends on the last frame
    for i in range(10):
        start = round(i * max(total - span, 0) / 9)
        expected = [(start + j * interval) % total for j in range(clip_len)]
        assert list(sampled[i]) == expected


def test_ten_clip_test_averages_softmax_over_clips(clips):
    """The score of a video is the mean over its 10 clips of each clip's softmax, computed clip by clip."""
    from mmaction.registry import MODELS
    cfg = Config.fromfile(str(REAL_CLIPS_CONFIG))
    assert cfg.model.cls_head.average_clips == "prob"
    dataset_cfg = cfg.test_dataloader.dataset
    dataset_cfg.update(ann_file=str(clips / "real_clips_val_list_videos.txt"),
                       data_prefix=dict(video=str(clips / "videos_val")))
    dataset_cfg.pipeline[3] = dict(type="CenterCrop", crop_size=64)  # smaller clips for speed
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope("mmaction"):
        model = MODELS.build(cfg.model)
        model.init_weights()
        model.cls_head.fc_cls.weight.data.normal_(0, 0.05)  # spread the untrained scores apart
        dataset = build_dataset(**dataset_cfg)
    model.eval()
    sample = dataset[0]
    assert sample["inputs"].shape[:3] == (10, 3, 8)
    data = pseudo_collate([sample])
    with torch.no_grad():
        score = model.test_step(data)[0].pred_score
        clips_in = model.data_preprocessor(data, False)["inputs"][0]  # (10, C, T, H, W), normalised
        logits = torch.stack([model.cls_head(model.backbone(clip[None]))[0] for clip in clips_in])
    expected = logits.softmax(-1).mean(0)
    torch.testing.assert_close(score, expected, rtol=1e-5, atol=1e-6)
    assert logits.softmax(-1).std(0).max() > 1e-2  # the clips differ, so the average is a real average
    assert (score - logits.mean(0).softmax(-1)).abs().max() > 1e-3  # probabilities averaged, not logits


def test_gn_resnet_inflates_for_i3d(tmp_path):
    """A 2-D OpenMMLab GN ResNet-50 (as open-mmlab://detectron/resnet50_gn) loads into a GN I3D."""
    from mmaction.models.backbones import ResNet3d
    from mmdet.models.backbones import ResNet

    gn = dict(type="GN", num_groups=32, requires_grad=True)
    torch.manual_seed(0)
    resnet = ResNet(depth=50, norm_cfg=gn)
    for m in resnet.modules():
        if isinstance(m, torch.nn.GroupNorm):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_()
    path = tmp_path / "resnet50_gn.pth"
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in resnet.state_dict().items()},
                "meta": {}}, path)
    subprocess.run([sys.executable, str(ROOT / "tools" / "convert_checkpoint.py"), str(path), "--openmmlab-norm",
                    "gn", "--to", "i3d", "-o", str(tmp_path / "gn_r50")], check=True, capture_output=True)
    converted = torch.load(tmp_path / "gn_r50_i3d.pth", weights_only=True)
    i3d = ResNet3d(depth=50, pretrained=None, pretrained2d=False, norm_cfg=gn,
                   conv1_kernel=(5, 7, 7), conv1_stride_t=2, pool1_stride_t=2, inflate=I3D_R50_INFLATE)
    assert i3d.load_state_dict(converted["state_dict"], strict=True)
    torch.testing.assert_close(i3d.conv1.gn.weight, resnet.gn1.weight)
    torch.testing.assert_close(i3d.layer3[1].conv2.gn.bias, resnet.layer3[1].gn2.bias)
    torch.testing.assert_close(i3d.layer2[0].conv1.conv.weight.sum(2), resnet.layer2[0].conv1.weight)
    assert i3d.layer2[0].conv1.conv.weight.shape[2] == 3 and i3d.layer2[1].conv1.conv.weight.shape[2] == 1
    torch.testing.assert_close(i3d.layer1[0].downsample.gn.weight, resnet.layer1[0].downsample[1].weight)
    with pytest.raises(ConversionError, match=r"stem norms found: \['gn'\]"):
        inflate_openmmlab_resnet(resnet.state_dict(), norm="bn")
    whole_model = {**{f"backbone.{k}": v for k, v in resnet.state_dict().items()}, "neck.lateral.weight": torch.ones(1)}
    converted, dropped = inflate_openmmlab_resnet(whole_model, norm="gn")
    assert dropped == ["neck.lateral.weight"] and len(converted["state_dict"]) == len(resnet.state_dict())
