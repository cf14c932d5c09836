"""mmaction2 video datasets that skip unreadable or short videos instead of crashing an epoch.

Kinetics as downloaded always holds some broken videos (truncated downloads,
clips of a few frames, entries whose file is gone). mmaction2's
``VideoDataset`` / ``RawframeDataset`` fail on the first of them, often hours
into an epoch, inside a dataloader worker. These subclasses take the same
arguments plus:

- ``min_frames`` (default 1): a video with fewer frames is skipped;
- ``scan`` (default ``True``): when the dataset is built, every video of the
  annotation file is checked (a video file is opened with decord and its frames
  counted; a raw-frame folder must hold its first and last frame), and the bad
  ones are dropped with one warning that counts them by reason and names a few;
  the list is in ``dataset.skipped`` as ``(path, reason)``. Set it to ``False``
  for very large sets whose files are known to be good: the runtime guard below
  still applies.

At run time, a training sample whose loading fails is skipped with a warning
and another one is drawn (mmengine's refetch); ``dataset.failures`` counts them
in each process. If the pipeline fails on each of the first
:data:`FAILURES_BEFORE_GIVING_UP` samples and never succeeds, the error is
raised instead: that is a broken pipeline, not a broken video. In test mode a
failure is raised with the video's name, since dropping a test video would
change the metric silently.

Use them as ``dataset=dict(type='RobustVideoDataset', ...)`` after adding
``'ssn_plugins.openmmlab.video_datasets'`` to ``custom_imports``.
"""
import os.path as osp
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import List, Optional

from mmengine.fileio import get_file_backend
from mmengine.fileio.backends import LocalBackend
from mmengine.logging import print_log

from mmaction.datasets import RawframeDataset, VideoDataset
from mmaction.registry import DATASETS

#: failures before any sample has loaded (in a process) after which the training pipeline is taken to be broken
FAILURES_BEFORE_GIVING_UP = 20
_NAMED_IN_WARNING = 5


class _SkipsBrokenVideos:
    """Scan-time filtering and run-time skipping shared by the two datasets."""

    def __init__(self, *args, min_frames: int = 1, scan: bool = True, scan_threads: int = 8, **kwargs) -> None:
        if min_frames < 1:
            raise ValueError(f"min_frames must be at least 1, got {min_frames}")
        self.min_frames = min_frames
        self.scan = scan
        self.scan_threads = scan_threads
        self.skipped: List[tuple] = []
        self.failures = 0
        self._loaded = 0
        super().__init__(*args, **kwargs)

    def _video_path(self, info: dict) -> str:
        raise NotImplementedError

    def _problem(self, info: dict) -> Optional[str]:
        """Why this video cannot be used, or ``None``."""
        raise NotImplementedError

    def filter_data(self) -> List[dict]:
        data_list = super().filter_data()
        if not self.scan or not data_list:
            return data_list
        if not isinstance(get_file_backend(self._video_path(data_list[0])), LocalBackend):
            print_log(f"{type(self).__name__}: videos are not on a local disk, so they are not scanned; "
                      "broken ones are skipped when training reaches them", logger="current")
            return data_list
        with ThreadPoolExecutor(self.scan_threads) as pool:
            problems = list(pool.map(self._problem, data_list))
        kept = [info for info, problem in zip(data_list, problems) if problem is None]
        self.skipped = [(self._video_path(info), problem) for info, problem in zip(data_list, problems)
                        if problem is not None]
        if self.skipped:
            kinds = Counter(problem.split(":")[0] for _, problem in self.skipped)
            named = "; ".join(f"{path} ({problem})" for path, problem in self.skipped[:_NAMED_IN_WARNING])
            more = len(self.skipped) - _NAMED_IN_WARNING
            print_log(f"{type(self).__name__}: skipped {len(self.skipped)} of {len(data_list)} videos in "
                      f"{self.ann_file} ({', '.join(f'{n} {kind}' for kind, n in sorted(kinds.items()))}): "
                      f"{named}" + (f"; and {more} more (dataset.skipped lists them)" if more > 0 else ""),
                      logger="current", level="WARNING")
        if not kept:
            raise ValueError(f"none of the {len(data_list)} videos in {self.ann_file} can be used; "
                             f"the first: {self.skipped[0][0]} ({self.skipped[0][1]})")
        return kept

    def prepare_data(self, idx: int):
        try:
            data = super().prepare_data(idx)
        except Exception as error:  # decoders raise RuntimeError, DECORDError, OSError, ValueError...
            path = self._video_path(self.get_data_info(idx))
            if self.test_mode:
                raise RuntimeError(f"cannot load test video {path}: {type(error).__name__}: {error}") from error
            self.failures += 1
            if self._loaded == 0 and self.failures >= FAILURES_BEFORE_GIVING_UP:
                raise RuntimeError(f"the training pipeline failed on each of the first {self.failures} videos it "
                                   f"tried, so the pipeline rather than the videos is broken; the last one, "
                                   f"{path}: {type(error).__name__}: {error}") from error
            print_log(f"{type(self).__name__}: skipping {path}: {type(error).__name__}: {error} "
                      f"({self.failures} skipped at run time in this process)", logger="current", level="WARNING")
            return None  # mmengine's BaseDataset draws another sample
        self._loaded += 1
        return data


@DATASETS.register_module()
class RobustVideoDataset(_SkipsBrokenVideos, VideoDataset):
    """``VideoDataset`` (a list of ``path label`` lines) that skips unreadable or short videos."""

    def _video_path(self, info: dict) -> str:
        return info["filename"]

    def _problem(self, info: dict) -> Optional[str]:
        path = info["filename"]
        if not osp.isfile(path):
            return "missing"
        try:
            import decord
            frames = len(decord.VideoReader(path, num_threads=1))
        except Exception as error:  # decord raises its own DECORDError for undecodable files
            return f"unreadable: {type(error).__name__}: {str(error).splitlines()[0][:200]}"
        if frames < self.min_frames:
            return f"short: {frames} frames < {self.min_frames}"
        return None


@DATASETS.register_module()
class RobustRawframeDataset(_SkipsBrokenVideos, RawframeDataset):
    """``RawframeDataset`` (``frame_dir total_frames label`` lines) that skips missing or short frame folders."""

    def _video_path(self, info: dict) -> str:
        return info["frame_dir"]

    def _problem(self, info: dict) -> Optional[str]:
        directory, total = info["frame_dir"], info["total_frames"]
        if not osp.isdir(directory):
            return "missing"
        if total < self.min_frames:
            return f"short: {total} frames < {self.min_frames}"
        if self.modality != "RGB":  # flow folders name frames by axis; the run-time guard covers them
            return None
        first = self.start_index + info.get("offset", 0)
        for index in (first, first + total - 1):
            frame = osp.join(directory, self.filename_tmpl.format(index))
            if not osp.isfile(frame):
                return f"unreadable: frame {frame} is missing"
        return None
