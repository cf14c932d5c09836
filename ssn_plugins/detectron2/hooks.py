"""detectron2 training hooks: radius schedule, batch-average statistics, ratio scalars, selection chart."""
import logging

import torch
from detectron2.engine import HookBase
from detectron2.utils import comm
from detectron2.utils.events import EventStorage

from ..batch_stats import BATCH_AVERAGE_BATCHES, layers_with_batch_statistics, recompute_batch_statistics
from ..layers import SwitchNorm
from ..optim import check_ratio_clip
from ..radius import RadiusScheduler, sparse_layers
from ..selection import CHART_TAG, describe_selection, radius_scalars, ratio_scalars
from .build import mark_recipe_hooks

logger = logging.getLogger(__name__)


def recompute_detection_statistics(model: torch.nn.Module, batches, num_iter: int) -> int:
    """``recompute_batch_statistics`` for a detectron2 model, whose training forward logs to an
    ``EventStorage``: a throwaway one takes those events, as in detectron2's ``PreciseBN``."""
    with EventStorage():
        return recompute_batch_statistics(model, batches, num_iter)


class RadiusSchedule(HookBase):
    """Sets the SparsestMax radius from the trainer's iteration before every step (a resumed run goes on)."""

    def __init__(self, model: torch.nn.Module, start_iter: int, end_iter: int, max_radius: float = 1.0):
        self.scheduler = RadiusScheduler(model, total_iters=end_iter, start_iter=start_iter, max_radius=max_radius)

    def before_step(self):
        state = self.scheduler.step(self.trainer.iter)
        self.trainer.storage.put_scalars(**radius_scalars(state), smoothing_hint=False)


class BatchAverageStatistics(HookBase):
    """Recomputes BN statistics as batch averages before each evaluation and after training.

    detectron2's ``PreciseBN`` does this for BatchNorm only; this covers SN/SSN
    layers too, and pools the averages over the processes of a distributed
    run (every process runs it). Put it before ``EvalHook`` with the same period.
    """

    def __init__(self, period: int, model: torch.nn.Module, data_loader, num_iter: int):
        self._period, self._model, self._data_loader, self._num_iter = period, model, data_loader, num_iter
        self._data_iter = None
        self._enabled = bool(layers_with_batch_statistics(model))

    def after_step(self):
        next_iter = self.trainer.iter + 1
        if self._period > 0 and next_iter % self._period == 0 and next_iter != self.trainer.max_iter:
            self.update_stats()

    def after_train(self):
        if self.trainer.iter + 1 >= self.trainer.max_iter:
            self.update_stats()

    def update_stats(self):
        if not self._enabled:
            return
        if self._data_iter is None:
            self._data_iter = iter(self._data_loader)
        logger.info("Recomputing batch-average statistics over %d iterations ...", self._num_iter)
        recompute_detection_statistics(self._model, self._data_iter, self._num_iter)


class RatioScalars(HookBase):
    """Puts the mean SN/SSN ratio of each candidate (over layers) into the event storage (TensorBoard)."""

    def __init__(self, model: torch.nn.Module, period: int = 20):
        self._model = model
        self._enabled = any(isinstance(m, SwitchNorm) for m in model.modules())
        self._period = period

    def after_step(self):
        if not self._enabled or (self.trainer.iter + 1) % self._period or not comm.is_main_process():
            return
        self.trainer.storage.put_scalars(**ratio_scalars(self._model), smoothing_hint=False)


class SelectionChart(HookBase):
    """At each evaluation, puts the per-layer ratio chart into the event storage as ``ssn/selection_per_layer``.

    Evaluations are where detectron2's ``EvalHook`` runs them: every ``eval_period`` iterations and at the
    last one. TensorBoard shows the image under its name, one per evaluation.
    """

    def __init__(self, model: torch.nn.Module, eval_period: int, max_iter: int):
        self._model = model
        self._enabled = any(isinstance(m, SwitchNorm) for m in model.modules())
        self._period, self._max_iter = eval_period, max_iter

    def after_step(self):
        next_iter = self.trainer.iter + 1
        due = next_iter == self._max_iter or (self._period > 0 and next_iter % self._period == 0)
        if not self._enabled or not due or not comm.is_main_process():
            return
        put_selection_chart(self.trainer.storage, self._model, next_iter)


def put_selection_chart(storage, model: torch.nn.Module, iteration: int) -> None:
    """The per-layer ratio chart of ``model`` as the event-storage image ``ssn/selection_per_layer``."""
    from ..selection_plots import layer_ratio_chart, png_to_rgb
    image = png_to_rgb(layer_ratio_chart(describe_selection(model), f"iteration {iteration}"))
    storage.put_image(CHART_TAG, torch.from_numpy(image.copy()).permute(2, 0, 1))


def ssn_hooks(cfg, model: torch.nn.Module, train_loader_factory):
    """The hooks a detectron2 trainer needs for ``cfg.MODEL.SSN``; put them before ``EvalHook``.

    ``train_loader_factory()`` builds the loader used for batch-average statistics. Marks ``model`` as driven
    by the recipe (no warning at its first training step; see :func:`.build.complete_model`).
    """
    ssn = validate_ssn_config(cfg)
    mark_recipe_hooks(model)
    hooks = []
    if sparse_layers(model):
        end = ssn.RADIUS_END_ITER if ssn.RADIUS_END_ITER > 0 else cfg.SOLVER.MAX_ITER
        hooks.append(RadiusSchedule(model, ssn.RADIUS_START_ITER, end, ssn.MAX_RADIUS))
    if ssn.INFERENCE_STATS == "batch_average" and layers_with_batch_statistics(model):
        hooks.append(BatchAverageStatistics(cfg.TEST.EVAL_PERIOD, model, train_loader_factory(),
                                            ssn.BATCH_AVERAGE_ITERS))
    if ssn.SCALARS_PERIOD > 0:
        hooks.append(RatioScalars(model, ssn.SCALARS_PERIOD))
    if ssn.SELECTION_CHART:
        hooks.append(SelectionChart(model, cfg.TEST.EVAL_PERIOD, cfg.SOLVER.MAX_ITER))
    return hooks


def validate_ssn_config(cfg):
    """Check ``cfg.MODEL.SSN``'s training settings before training starts; returns ``cfg.MODEL.SSN``.

    Raises a ``ValueError`` naming the key for a value that would only fail later (at the first
    evaluation, hours in), and for a config read without ``add_ssn_config``.
    """
    ssn = cfg.MODEL.get("SSN")
    if ssn is None:
        raise ValueError("cfg.MODEL.SSN is missing: call ssn_plugins.detectron2.add_ssn_config(cfg) before "
                         "merging the config file")
    if ssn.INFERENCE_STATS not in ("batch_average", "moving_average"):
        raise ValueError(f"MODEL.SSN.INFERENCE_STATS must be 'batch_average' or 'moving_average', "
                         f"got {ssn.INFERENCE_STATS!r}")
    if ssn.INFERENCE_STATS == "batch_average" and ssn.BATCH_AVERAGE_ITERS < 1:
        raise ValueError(f"MODEL.SSN.BATCH_AVERAGE_ITERS must be >= 1 with INFERENCE_STATS 'batch_average' "
                         f"(the paper: {BATCH_AVERAGE_BATCHES}), got {ssn.BATCH_AVERAGE_ITERS}; use "
                         f"'moving_average' to skip it")
    if ssn.SCALARS_PERIOD < 0:
        raise ValueError(f"MODEL.SSN.SCALARS_PERIOD must be >= 0 (0 turns the ratio scalars off), "
                         f"got {ssn.SCALARS_PERIOD}")
    check_ratio_clip(ssn.RATIO_CLIP, "MODEL.SSN.RATIO_CLIP")
    return ssn
