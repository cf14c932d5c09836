"""Training scalars of a run, whichever tool wrote them: detectron2's ``metrics.json``, mmengine's
``scalars.json`` (JSON lines), or TensorBoard event files."""
import json
import re
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from ..selection import SCALAR_PREFIX

Series = Dict[str, List[Tuple[int, float]]]

#: a ratio scalar as every writer names it (:func:`ssn_plugins.selection.ratio_scalars`: ``ssn/mean_ratio_GN32``),
#: also under mmengine's ``train/`` / ``val/`` prefixes
RATIO = re.compile(rf"^(?:train/|val/)?{re.escape(SCALAR_PREFIX)}(mean|var)_ratio_(\w+)$")
#: the number of one-hot SSN ratio vectors (:func:`ssn_plugins.selection.radius_scalars`)
ONE_HOT = re.compile(rf"^(?:train/|val/)?{re.escape(SCALAR_PREFIX)}one_hot_vectors$")


def _json_lines(path: Path, step_keys: Sequence[str]) -> Series:
    series: Series = {}
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a crash; the others still count
        step = next((record[k] for k in step_keys if k in record), None)
        if step is None:
            continue
        for key, value in record.items():
            if key not in step_keys and isinstance(value, (int, float)):
                series.setdefault(key, []).append((int(step), float(value)))
    return series


def _events(path: Path) -> Series:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    accumulator = EventAccumulator(str(path), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}


def read_scalars(files: Sequence[Path]) -> Series:
    """Every scalar of the files, by name, as (step, value) pairs in step order."""
    series: Series = {}
    for path in files:
        path = Path(path)
        if path.name.startswith("events.out.tfevents"):
            found = _events(path)
        elif path.name == "metrics.json":
            found = _json_lines(path, ("iteration",))
        else:
            found = _json_lines(path, ("step", "iter"))
        for key, values in found.items():
            series.setdefault(key, []).extend(values)
    return {k: sorted(v) for k, v in series.items()}


def ratio_series(series: Series) -> Tuple[Dict[Tuple[str, str], List[Tuple[int, float]]], List[Tuple[int, float]]]:
    """``{(vector, candidate): points}`` of the mean ratios, and the one-hot count's points."""
    ratios, one_hot = {}, []
    for key, points in series.items():
        found = RATIO.search(key)
        if found:
            ratios[(found.group(1), found.group(2))] = points
        elif ONE_HOT.search(key):
            one_hot = points
    return ratios, one_hot
