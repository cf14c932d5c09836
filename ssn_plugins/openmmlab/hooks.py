"""mmengine hooks for SN/SSN training: radius schedule, batch-average statistics, norm_eval, scalars.

``configs/_base_/ssn_runtime.py`` lists all four in ``custom_hooks``. Each
works on the model unwrapped from its (distributed) wrapper and does nothing
when the model has no layer it concerns.
"""
import copy
import json
import logging
from pathlib import Path
from typing import Iterator, List, Optional

from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.registry import HOOKS
from torch import nn

from ..batch_stats import BATCH_AVERAGE_BATCHES, layers_with_batch_statistics, recompute_batch_statistics
from ..layers import ChannelEquilibrium, SwitchNorm
from ..layers.sparse_switch_norm import check_reopen_prior
from ..optim import unwrapped
from ..radius import RadiusScheduler, reopen_selections, sparse_layers
from ..selection import CHART_TAG, describe_selection, format_selection, radius_scalars, ratio_scalars
from .compat import run_forward, train_dataloader_settings


@HOOKS.register_module(force=True)
class SparsestMaxRadiusHook(Hook):
    """Sets the SparsestMax radius of every SSN layer from the runner's iteration before each step.

    ``radius = max_radius * clamp((iter - start_iter) / (end_iter - start_iter), 0, 1)``
    with ``end_iter`` defaulting to the run's ``max_iters`` (the paper's
    ``t / T``). The radius depends only on the iteration, so a resumed run
    continues the schedule. Puts ``ssn/radius`` and ``ssn/one_hot_vectors``
    (fixed ratio vectors, two per layer) into the message hub's training
    scalars, which the logger prints and sends to the visualizer backends.

    ``reopen_selection=True`` lets a run that starts from a sparse model's
    weights (``load_from``) select again: at iteration 0 every fixed selection
    is re-opened (see ``SparseSwitchNorm.reopen_selection``; ``reopen_prior``
    is its ``prior``) and the ratios train until this schedule fixes them anew.
    A resumed run (iteration > 0) keeps the state of its checkpoint.
    """

    priority = "NORMAL"

    def __init__(self, start_iter: int = 0, end_iter: Optional[int] = None, max_radius: float = 1.0,
                 reopen_selection: bool = False, reopen_prior: float = 0.0):
        check_reopen_prior(reopen_prior, "SparsestMaxRadiusHook reopen_prior")
        if start_iter < 0 or (end_iter is not None and end_iter <= start_iter):
            raise ValueError(f"SparsestMaxRadiusHook needs 0 <= start_iter < end_iter, got start_iter={start_iter}, "
                             f"end_iter={end_iter}")
        self.start_iter, self.end_iter, self.max_radius = start_iter, end_iter, max_radius
        self.reopen_selection, self.reopen_prior = reopen_selection, reopen_prior
        self.scheduler: Optional[RadiusScheduler] = None

    def before_train(self, runner) -> None:
        model = unwrapped(runner.model)
        layers = sparse_layers(model)
        if not layers:
            if self.reopen_selection:
                raise ValueError("SparsestMaxRadiusHook(reopen_selection=True): the model has no SSN layer")
            return
        if self.reopen_selection and runner.iter == 0:
            count = reopen_selections(model, self.reopen_prior)
            print_log(f"SparsestMaxRadiusHook: re-opened the selections of {count} SSN layers (frozen ones keep "
                      f"theirs)", logger="current")
        end_iter = self.end_iter if self.end_iter is not None else runner.max_iters
        self.scheduler = RadiusScheduler(model, total_iters=end_iter, start_iter=self.start_iter,
                                         max_radius=self.max_radius)

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if self.scheduler is None:
            return
        state = self.scheduler.step(runner.iter)
        for name, value in radius_scalars(state).items():
            runner.message_hub.update_scalar(f"train/{name}", value)  # logged without mmengine's "train/"


def norm_eval_layers(model: nn.Module) -> List[nn.Module]:
    """The SN/SSN/CE layers inside modules with ``norm_eval=True`` (each once)."""
    layers = {}
    for owner in model.modules():
        if getattr(owner, "norm_eval", False) is True:
            layers.update((id(m), m) for m in owner.modules() if isinstance(m, (SwitchNorm, ChannelEquilibrium)))
    return list(layers.values())


def pin_norm_eval_layers(model: nn.Module) -> List[nn.Module]:
    """Pin the :func:`norm_eval_layers` to eval mode (``pin_eval``: trainable, statistics kept); returns them."""
    layers = norm_eval_layers(model)
    for layer in layers:
        layer.pin_eval()
    return layers


def _forever(loader) -> Iterator:
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError("BatchAverageStatisticsHook: the training loader yielded no batch (an empty dataset?); "
                             "batch-average statistics need at least one")


@HOOKS.register_module(force=True)
class BatchAverageStatisticsHook(Hook):
    """Recomputes BN statistics as averages over training batches before validation and testing.

    The SN paper's recommended inference mode: the running statistics of every
    SN/SSN layer with a BN candidate (and every BatchNorm) become averages over
    ``num_iters`` batches (default: one pass over the training set, at most
    200 batches, the paper's figure) of a loader built from the config's
    ``train_dataloader`` (its own loader, so training's data order is
    untouched), pooled over processes. Layers frozen by ``norm_eval`` keep
    their statistics. The new statistics stay in the model and
    are saved in later checkpoints. A test run whose config has no
    ``train_dataloader`` keeps the checkpoint's statistics, with a warning.
    """

    priority = "ABOVE_NORMAL"  # before anything else that runs at before_val / before_test

    def __init__(self, num_iters: Optional[int] = None, before_val: bool = True, before_test: bool = True):
        if num_iters is not None and num_iters < 1:
            raise ValueError(f"num_iters must be >= 1 or None, got {num_iters}")
        self.num_iters, self._before_val, self._before_test = num_iters, before_val, before_test
        self._batches: Optional[Iterator] = None
        self._count = num_iters

    def _recompute(self, runner) -> None:
        model = unwrapped(runner.model)
        if not layers_with_batch_statistics(model):
            return
        if self._batches is None:
            # the runner's train_dataloader settings (a dict until the train loop builds its own loader from it)
            loader_cfg = train_dataloader_settings(runner)
            if not isinstance(loader_cfg, dict):
                print_log("BatchAverageStatisticsHook: no train_dataloader settings to build a loader from; "
                          "keeping the moving-average statistics", logger="current", level=logging.WARNING)
                return
            loader = runner.build_dataloader(copy.deepcopy(loader_cfg), seed=runner.seed)
            self._count = self.num_iters if self.num_iters is not None else min(len(loader), BATCH_AVERAGE_BATCHES)
            self._batches = _forever(loader)
        print_log(f"Recomputing batch-average statistics over {self._count} training batches ...", logger="current")

        def forward(m, batch):
            run_forward(m, m.data_preprocessor(batch, True), "loss")

        # norm_eval layers keep their statistics here (for this pass only: pinning them is SwitchNormEvalHook's)
        recompute_batch_statistics(model, self._batches, self._count, forward=forward,
                                   frozen=norm_eval_layers(model))  # pooled over processes

    def before_val(self, runner) -> None:
        if self._before_val:
            self._recompute(runner)

    def before_test(self, runner) -> None:
        if self._before_test:
            self._recompute(runner)


@HOOKS.register_module(force=True)
class SwitchNormEvalHook(Hook):
    """Extends ``norm_eval=True`` to SN/SSN/CE layers.

    OpenMMLab backbones with ``norm_eval=True`` put their ``_BatchNorm`` layers
    in eval mode whenever they enter training mode; SN/SSN/CE layers are not
    ``_BatchNorm`` subclasses, so before training this hook pins every one of
    them inside a module with ``norm_eval=True`` to eval mode (the layers'
    ``pin_eval``, which every later ``model.train()`` honours): they then
    normalize with their running statistics and stop updating them, as frozen
    BatchNorm does. Their parameters still train unless ``norm_cfg`` has
    ``requires_grad=False``.
    """

    priority = "NORMAL"

    def before_train(self, runner) -> None:
        layers = pin_norm_eval_layers(unwrapped(runner.model))
        if layers:
            print_log(f"SwitchNormEvalHook: {len(layers)} SN/SSN/CE layers follow norm_eval=True", logger="current")


@HOOKS.register_module(force=True)
class SwitchNormScalarsHook(Hook):
    """Sends the mean SN/SSN ratio of each candidate to the visualizer backends, and reports the selection.

    Every ``interval`` iterations it writes ``ssn/mean_ratio_<IN|LN|BN>`` and
    ``ssn/var_ratio_<...>`` (averaged over layers) with
    ``runner.visualizer.add_scalars`` (TensorBoard, local JSON, ...). After
    each validation, with ``selection_chart``, it sends the per-layer ratio
    chart as the image ``ssn_selection_per_layer`` (``runner.visualizer.add_image``:
    TensorBoard, or ``vis_image/`` for the local backend). After training it
    logs each layer's ratios and selection and writes them to
    ``<work_dir>/ssn_selection.json``.
    """

    priority = "LOW"

    def __init__(self, interval: int = 50, selection_chart: bool = True):
        if interval < 1:
            raise ValueError(f"SwitchNormScalarsHook: interval must be >= 1 (leave the hook out to turn the scalars "
                             f"off), got {interval}")
        if not isinstance(selection_chart, bool):
            raise TypeError(f"SwitchNormScalarsHook: selection_chart must be True or False, got {selection_chart!r}")
        self.interval = interval
        self.selection_chart = selection_chart

    def after_val_epoch(self, runner, metrics=None) -> None:
        if not self.selection_chart or not is_main_process():
            return
        rows = describe_selection(unwrapped(runner.model))
        if not rows:
            return
        from ..selection_plots import layer_ratio_chart, png_to_rgb
        image = png_to_rgb(layer_ratio_chart(rows, f"iteration {runner.iter}"))
        # mmengine's local backend names a file after the tag: no folder separator in it
        runner.visualizer.add_image(CHART_TAG.replace("/", "_"), image, step=runner.iter)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if not self.every_n_train_iters(runner, self.interval) or not is_main_process():
            return
        scalars = ratio_scalars(unwrapped(runner.model))
        if scalars:
            runner.visualizer.add_scalars(scalars, step=runner.iter + 1)

    def after_train(self, runner) -> None:
        if not is_main_process():
            return
        rows = describe_selection(unwrapped(runner.model))
        if not rows:
            return
        print_log("normalizer per layer:\n" + format_selection(rows), logger="current")
        Path(runner.work_dir, "ssn_selection.json").write_text(json.dumps(rows, indent=1))
