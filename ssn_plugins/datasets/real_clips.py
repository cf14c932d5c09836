"""A small Kinetics-style action set from real, labelled clips (HMDB51 and UCF101).

Debian's ``pytorch-vision`` source package ships, as test assets, six labelled
action clips: three HMDB51 "wave" clips, one HMDB51 "cartwheel" clip and two
UCF101 "SoccerJuggling" clips (30 fps, 49 to 251 frames, 240 pixels high).
:func:`write_kinetics_style` cuts each video into windows of ``length`` frames,
the first two thirds of each video for training and the last third for
validation, and writes them in the layouts mmaction2 reads for Kinetics-400:

- ``layout="videos"``: ``root/videos_{split}/<class>/<clip>.mp4`` and
  ``root/real_clips_{split}_list_videos.txt`` (``<class>/<clip>.mp4 <label>``),
  for ``VideoDataset`` with ``DecordInit``;
- ``layout="rawframes"``: ``root/rawframes_{split}/<class>/<clip>/img_00001.jpg ...``
  and ``root/real_clips_{split}_list_rawframes.txt``
  (``<class>/<clip> <frames> <label>``), for ``RawframeDataset``.

Each class gets the same number of windows (spread evenly over its videos and
over each video's part), so chance is 1/3. The validation windows come from
later moments of the training videos, not from other videos: a score on them
shows that a pipeline learns, not how well it generalises.
"""
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..cache import data_cache
from .debian_source import download_orig_tarball, extract_members

CLASSES = ("wave", "cartwheel", "soccer_juggling")
#: file in pytorch-vision's test/assets/videos -> class
SOURCE_CLIPS = {
    "RATRACE_wave_f_nm_np1_fr_goo_37.avi": "wave",
    "SchoolRulesHowTheyHelpUs_wave_f_nm_np1_ba_med_0.avi": "wave",
    "TrumanShow_wave_f_nm_np1_fr_med_26.avi": "wave",
    "hmdb51_Turnk_r_Pippi_Michel_cartwheel_f_cm_np2_le_med_6.avi": "cartwheel",
    "v_SoccerJuggling_g23_c01.avi": "soccer_juggling",
    "v_SoccerJuggling_g24_c01.avi": "soccer_juggling",
}
DEBIAN_PACKAGE = "pytorch-vision"
TARBALL = "pytorch-vision_0.14.1.orig.tar.gz"
TARBALL_SHA256 = "ced67e1cf1f97e168cdf271851a4d0b6d382ab7936e7bcbb39aaa87239c324b6"
ASSETS = "vision-0.14.1/test/assets/videos/"
LAYOUTS = ("videos", "rawframes")


def default_cache() -> Path:
    return data_cache() / DEBIAN_PACKAGE


def source_clips(cache: Optional[Path] = None) -> Dict[Path, str]:
    """The six labelled source videos (downloaded and extracted on first use): ``{path: class}``."""
    cache = Path(cache or default_cache())
    clips = cache / "videos"
    if not all((clips / name).exists() for name in SOURCE_CLIPS):
        tarball = download_orig_tarball(DEBIAN_PACKAGE, TARBALL, TARBALL_SHA256, cache)
        extract_members(tarball, ASSETS, list(SOURCE_CLIPS), clips)
    return {clips / name: label for name, label in SOURCE_CLIPS.items()}


def window_starts(begin: int, end: int, length: int, count: int) -> List[int]:
    """``count`` starts of ``length``-frame windows spread evenly over frames ``[begin, end)``."""
    if end - begin < length:
        raise ValueError(f"frames [{begin}, {end}) cannot hold a {length}-frame window")
    return [int(s) for s in np.linspace(begin, end - length, count).round()]


def _split_counts(total: int, parts: int) -> List[int]:
    return [total // parts + (i < total % parts) for i in range(parts)]


def _read_frames(path: Path) -> np.ndarray:
    import decord
    reader = decord.VideoReader(str(path))
    return reader.get_batch(list(range(len(reader)))).asnumpy()  # (T, H, W, 3) RGB


def _resize_short_side(frames: np.ndarray, short_side: int) -> np.ndarray:
    import cv2
    h, w = frames.shape[1:3]
    scale = short_side / min(h, w)
    size = (int(round(w * scale)), int(round(h * scale)))
    return np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames])


def write_video(path: Path, frames: np.ndarray, fps: float = 30.0) -> None:
    """Write ``(T, H, W, 3)`` RGB uint8 frames as an MPEG-4 part 2 ``.mp4`` (OpenCV's bundled FFmpeg)."""
    import cv2
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (frames.shape[2], frames.shape[1]))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {path}")
    for frame in frames:
        writer.write(np.ascontiguousarray(frame[..., ::-1]))
    writer.release()


def write_frames(directory: Path, frames: np.ndarray, template: str = "img_{:05}.jpg") -> None:
    """Write frames as JPEGs numbered from 1 (mmaction2's raw-frame naming)."""
    import cv2
    directory.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames, start=1):
        cv2.imwrite(str(directory / template.format(i)), np.ascontiguousarray(frame[..., ::-1]),
                    [cv2.IMWRITE_JPEG_QUALITY, 95])


def write_kinetics_style(root: Path, layouts: Sequence[str] = ("videos",), length: int = 16,
                         train_per_class: int = 12, val_per_class: int = 6, short_side: int = 128,
                         cache: Optional[Path] = None) -> Dict[str, int]:
    """Write the set under ``root`` in each of ``layouts``; returns ``{split: windows}``.

    ``length`` frames per window, ``short_side`` pixels on the shorter side.
    """
    unknown = set(layouts) - set(LAYOUTS)
    if unknown:
        raise ValueError(f"unknown layouts {sorted(unknown)}; choose from {LAYOUTS}")
    root = Path(root)
    per_split = {"train": train_per_class, "val": val_per_class}
    lines = {(split, layout): [] for split in per_split for layout in layouts}
    by_class: Dict[str, List[Path]] = {}
    for path, label in source_clips(cache).items():
        by_class.setdefault(label, []).append(path)
    for label_index, label in enumerate(CLASSES):
        videos = by_class[label]
        counts = {split: _split_counts(n, len(videos)) for split, n in per_split.items()}
        for v, path in enumerate(videos):
            frames = _resize_short_side(_read_frames(path), short_side)
            cut = len(frames) * 2 // 3
            regions = {"train": (0, cut), "val": (cut, len(frames))}
            for split, (begin, end) in regions.items():
                for start in window_starts(begin, end, length, counts[split][v]):
                    name = f"{path.stem}_{start:03d}"
                    window = frames[start:start + length]
                    if "videos" in layouts:
                        write_video(root / f"videos_{split}" / label / f"{name}.mp4", window)
                        lines[split, "videos"].append(f"{label}/{name}.mp4 {label_index}")
                    if "rawframes" in layouts:
                        write_frames(root / f"rawframes_{split}" / label / name, window)
                        lines[split, "rawframes"].append(f"{label}/{name} {length} {label_index}")
    for (split, layout), entries in lines.items():
        (root / f"real_clips_{split}_list_{layout}.txt").write_text("\n".join(entries) + "\n")
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return {split: len(lines[split, layouts[0]]) for split in per_split}
