"""LazyConfig pieces: the SN/SSN recipe in detectron2's own lazy training loop.

``tools/lazyconfig_train_net.py`` builds ``cfg.model``, sets
``cfg.optimizer.params.model`` to it, instantiates ``cfg.optimizer`` and runs
a fixed list of hooks: the optimizer is the one piece that sees the model,
so the recipe comes with it. In a LazyConfig::

    from ssn_plugins.detectron2 import lazy as ssn
    optimizer = ssn.sgd()        # in place of detectron2's common.optim.SGD

which is::

    optimizer = L(RecipeSGD)(
        params=L(optimizer_params)(base_lr="${..lr}", weight_decay_norm=0.0),   # ratio logits: lr/10, no decay
        lr=0.02, momentum=0.9, weight_decay=1e-4,
        ratio_clip=1.0,                                                          # their gradient norm, clipped
        recipe=L(TrainingRecipe)(max_iter="${train.max_iter}", eval_period="${train.eval_period}",
                                 train_loader="${dataloader.train}", init_checkpoint="${train.init_checkpoint}"),
    )

:class:`TrainingRecipe` does what the Yacs trainer's hooks do, driven by the
optimizer's steps and detectron2's event storage (so a resumed run goes on
where it stopped): the SparsestMax radius schedule, batch-average BN
statistics recomputed before every evaluation and before the final
checkpoint (so ``--eval-only`` on it evaluates what training evaluated),
the ``ssn/*`` scalars and the per-layer selection chart, ``FREEZE_AT`` for
SN/SSN layers, re-opened selections on request, and the input-convention
check of ``ssn://`` weights. Norm layers with options:
:class:`~.norms.SwitchNormLayer`. The shipped
``configs/detectron2/mask_rcnn_R_50_FPN_1x_{sn,ssn}.py`` put it all together.
"""
import logging
import warnings
import weakref
from typing import Iterable, Optional

import torch
from detectron2.config import LazyCall as L
from detectron2.utils import comm
from detectron2.utils.events import get_event_storage

from ..batch_stats import BATCH_AVERAGE_BATCHES, layers_with_batch_statistics
from ..layers import SwitchNorm
from ..model_zoo import INPUT_CONVENTIONS
from ..optim import RATIO_CLIP, check_ratio_clip, install_ratio_clipping, unwrapped
from ..radius import RadiusScheduler, check_schedule, reopen_selections, sparse_layers
from ..selection import radius_scalars, ratio_scalars
from .build import check_input_convention, freeze_switch_norms, mark_recipe_hooks
from .hooks import put_selection_chart, recompute_detection_statistics
from .optimizer import optimizer_params as _optimizer_params

__all__ = ["ParamGroups", "optimizer_params", "TrainingRecipe", "RecipeOptimizer", "RecipeSGD", "RecipeAdamW",
           "recipe", "sgd", "adamw", "set_norm", "set_input_convention"]

# under detectron2's logger, which detectron2's default_setup prints and writes to the run's log.txt
logger = logging.getLogger("detectron2.ssn_plugins")


class ParamGroups(list):
    """The optimizer's parameter groups, with the ``model`` they came from (the recipe needs both)."""

    def __init__(self, groups: Iterable[dict], model: torch.nn.Module) -> None:
        super().__init__(groups)
        self.model = model


def optimizer_params(model: torch.nn.Module, base_lr: float, **kwargs) -> ParamGroups:
    """:func:`.optimizer.optimizer_params` (``get_default_optimizer_params``'s arguments plus
    ``ratio_lr_factor``, ``ratio_weight_decay``), keeping the model for :class:`RecipeOptimizer`."""
    return ParamGroups(_optimizer_params(model, base_lr, **kwargs), model)


# model -> its TrainingRecipe: the model's forward pre-hook is a module-level function (the model still pickles),
# and a deep copy of the model (for_inference, EMA) is not in the table, so its forwards do nothing here
_RECIPES: "weakref.WeakKeyDictionary[torch.nn.Module, TrainingRecipe]" = weakref.WeakKeyDictionary()


def _before_forward(module: torch.nn.Module, args) -> None:
    recipe = _RECIPES.get(module)
    if recipe is not None:
        recipe.before_forward()


def _storage():
    try:
        return get_event_storage()
    except AssertionError:
        raise RuntimeError("ssn_plugins.detectron2.lazy.TrainingRecipe reads the iteration from detectron2's event "
                           "storage: step the optimizer inside a detectron2 trainer (tools/lazyconfig_train_net.py)"
                           ) from None


class TrainingRecipe:
    """The SN/SSN training recipe for detectron2's lazy loop; :class:`RecipeOptimizer` attaches it.

    Args:
        max_iter: the run's ``train.max_iter`` (the schedule's end and the final evaluation).
        eval_period: ``train.eval_period``: batch-average statistics are recomputed before each evaluation.
        train_loader: the training loader the batch averages are computed on (``"${dataloader.train}"``:
            a loader of its own, so training's data order is untouched); ``None`` with
            ``inference_stats="moving_average"``.
        init_checkpoint: ``train.init_checkpoint``, for the input-convention check of ``ssn://`` weights.
        radius_start_iter, radius_end_iter, max_radius: the SparsestMax radius grows linearly from 0 at
            ``radius_start_iter`` to ``max_radius`` at ``radius_end_iter`` (default ``max_iter``), as
            ``MODEL.SSN.RADIUS_*``.
        inference_stats: ``"batch_average"`` (the paper's) or ``"moving_average"`` (the running averages).
        batch_average_iters: batches per recomputation (the paper: 200).
        scalars_period: iterations between ``ssn/*`` scalars in the event storage (0: none).
        selection_chart: the per-layer ratio chart as an event-storage image at each recomputation.
        reopen_selection, reopen_prior: re-open the loaded weights' fixed selections before the first
            iteration of a fresh run (not a resumed one), as ``MODEL.SSN.REOPEN_SELECTION``.
    """

    def __init__(self, max_iter: int, eval_period: int = 0, train_loader=None, init_checkpoint: str = "",
                 radius_start_iter: int = 0, radius_end_iter: Optional[int] = None, max_radius: float = 1.0,
                 inference_stats: str = "batch_average", batch_average_iters: int = BATCH_AVERAGE_BATCHES,
                 scalars_period: int = 20, selection_chart: bool = True, reopen_selection: bool = False,
                 reopen_prior: float = 0.0) -> None:
        if inference_stats not in ("batch_average", "moving_average"):
            raise ValueError(f"TrainingRecipe: inference_stats must be 'batch_average' or 'moving_average', "
                             f"got {inference_stats!r}")
        if inference_stats == "batch_average" and (train_loader is None or batch_average_iters < 1):
            raise ValueError("TrainingRecipe(inference_stats='batch_average') needs a train_loader "
                             "(\"${dataloader.train}\") and batch_average_iters >= 1; use "
                             "inference_stats='moving_average' to keep the running averages")
        if scalars_period < 0:
            raise ValueError(f"TrainingRecipe: scalars_period must be >= 0 (0: off), got {scalars_period}")
        self.max_iter, self.eval_period = int(max_iter), int(eval_period)
        self.radius_end_iter = int(max_iter if radius_end_iter is None else radius_end_iter)
        self.radius_start_iter, self.max_radius = int(radius_start_iter), float(max_radius)
        check_schedule(self.radius_start_iter, self.radius_end_iter, self.max_radius)
        self.train_loader, self.init_checkpoint = train_loader, init_checkpoint
        self.inference_stats, self.batch_average_iters = inference_stats, int(batch_average_iters)
        self.scalars_period, self.selection_chart = int(scalars_period), bool(selection_chart)
        self.reopen_selection, self.reopen_prior = bool(reopen_selection), float(reopen_prior)
        self.model: Optional[torch.nn.Module] = None
        self.scheduler: Optional[RadiusScheduler] = None
        self._data = None
        self._stale = False  # trained since the last batch-average recomputation

    def attach(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Drive ``model``'s recipe from ``optimizer``'s steps (once per model)."""
        model = unwrapped(model)
        if self.model is not None:
            raise RuntimeError("TrainingRecipe.attach: this recipe already drives a model")
        self.model = model
        frozen = freeze_switch_norms(model)  # ResNet(freeze_at=...) froze their parameters, as FREEZE_AT does
        if frozen:
            logger.info("froze %d SN/SSN layers of frozen stages (eval mode, no gradients)", frozen)
        if hasattr(model, "pixel_mean") and hasattr(model, "input_format"):
            check_input_convention(self.init_checkpoint, model.input_format, model.pixel_mean.flatten().tolist(),
                                   model.pixel_std.flatten().tolist())
        if sparse_layers(model):
            self.scheduler = RadiusScheduler(model, total_iters=self.radius_end_iter,
                                             start_iter=self.radius_start_iter, max_radius=self.max_radius)
        mark_recipe_hooks(model)
        _RECIPES[model] = self
        model.register_forward_pre_hook(_before_forward)
        optimizer.register_step_post_hook(self._after_step)

    def _batch_average_due(self) -> bool:
        return self.inference_stats == "batch_average" and bool(layers_with_batch_statistics(self.model))

    def recompute(self, iteration: int) -> None:
        """Batch-average statistics now (every process: they are pooled), and the selection chart."""
        if self._data is None:
            self._data = iter(self.train_loader)
        logger.info("Recomputing batch-average statistics over %d iterations ...", self.batch_average_iters)
        recompute_detection_statistics(self.model, self._data, self.batch_average_iters)
        self._stale = False
        if self.selection_chart and comm.is_main_process() and any(
                isinstance(m, SwitchNorm) for m in self.model.modules()):
            put_selection_chart(_storage(), self.model, iteration)

    def before_forward(self) -> None:
        if self.model.training:
            if torch.is_grad_enabled():  # a training step (batch averaging runs without gradients)
                if self.reopen_selection and _storage().iter == 0:
                    self.reopen_selection = False
                    count = reopen_selections(self.model, self.reopen_prior)
                    logger.info("re-opened the SSN selections of the loaded weights in %d layers", count)
                self._stale = True
        elif self._stale and self._batch_average_due():
            # an evaluation whose step skipped the recomputation (AMP's grad scaler skips steps with inf gradients)
            self.recompute(_storage().iter + 1)

    def _after_step(self, optimizer, args, kwargs) -> None:
        storage = _storage()
        next_iter = storage.iter + 1
        if self.scheduler is not None:
            state = self.scheduler.step(next_iter)  # the radius of the next iteration
            state["radius"] = self.scheduler.radius_at(storage.iter)  # the one this iteration used
        if self.scalars_period and next_iter % self.scalars_period == 0 and comm.is_main_process():
            scalars = ratio_scalars(self.model)
            if self.scheduler is not None:
                scalars.update(radius_scalars(state))
            storage.put_scalars(**scalars, smoothing_hint=False)
        evaluation = next_iter == self.max_iter or (self.eval_period > 0 and next_iter % self.eval_period == 0)
        if evaluation and self._batch_average_due():
            self.recompute(next_iter)


class RecipeOptimizer:
    """Mix-in for a ``torch.optim`` class: ratio-gradient clipping and the :class:`TrainingRecipe`.

    ``params`` must be :func:`optimizer_params`' groups (they carry the model).
    ``ratio_clip``: the gradient norm of all ratio logits together is clipped
    to it before every step (``None``: off). ``recipe``: a
    :class:`TrainingRecipe` to attach (``None``: optimizer rules only).
    """

    def __init__(self, params, *args, ratio_clip: Optional[float] = RATIO_CLIP,
                 recipe: Optional[TrainingRecipe] = None, **kwargs) -> None:
        model = getattr(params, "model", None)
        if model is None:
            raise TypeError(f"{type(self).__name__}: params must come from ssn_plugins.detectron2.lazy."
                            f"optimizer_params (they carry the model that clipping and the recipe work on)")
        super().__init__(params, *args, **kwargs)
        install_ratio_clipping(self, model, check_ratio_clip(ratio_clip, f"{type(self).__name__} ratio_clip"))
        if recipe is not None:
            recipe.attach(model, self)
        elif sparse_layers(model):
            warnings.warn(f"{type(self).__name__} without a recipe: nothing sets the SSN layers' radius "
                          f"(pass recipe=L(TrainingRecipe)(...))", UserWarning, stacklevel=2)


class RecipeSGD(RecipeOptimizer, torch.optim.SGD):
    """``torch.optim.SGD`` with :class:`RecipeOptimizer`'s ratio clipping and training recipe."""


class RecipeAdamW(RecipeOptimizer, torch.optim.AdamW):
    """``torch.optim.AdamW`` with :class:`RecipeOptimizer`'s ratio clipping and training recipe."""


def recipe(**options):
    """A fresh ``L(TrainingRecipe)`` for a LazyConfig, its run settings read from ``train`` and ``dataloader``."""
    settings = dict(max_iter="${train.max_iter}", eval_period="${train.eval_period}",
                    train_loader="${dataloader.train}", init_checkpoint="${train.init_checkpoint}")
    return L(TrainingRecipe)(**{**settings, **options})


def sgd(**options):
    """detectron2's ``common/optim.py`` ``SGD`` with the recipe, as a fresh LazyConfig node (the loop sets
    ``params.model``); ``options`` override its arguments. A function, not a shared node: a config that edits
    what it imported must not change it for the next config loaded in the process."""
    return L(RecipeSGD)(**{**dict(params=L(optimizer_params)(base_lr="${..lr}", weight_decay_norm=0.0), lr=0.02,
                                  momentum=0.9, weight_decay=1e-4, ratio_clip=RATIO_CLIP, recipe=recipe()),
                           **options})


def adamw(**options):
    """detectron2's ``common/optim.py`` ``AdamW`` with the recipe, as :func:`sgd`."""
    return L(RecipeAdamW)(**{**dict(params=L(optimizer_params)(base_lr="${..lr}", weight_decay_norm=0.0),
                                    lr=1e-4, betas=(0.9, 0.999), weight_decay=0.1, ratio_clip=RATIO_CLIP,
                                    recipe=recipe()), **options})


def set_norm(model, norm) -> None:
    """Set ``norm`` (a name such as ``"SSN"``, or ``L(SwitchNormLayer)(...)``) everywhere in the LazyConfig of
    detectron2's R-CNN, with FPN (``common/models/mask_rcnn_fpn.py``: stem, stages, FPN, box and mask heads, those
    the config has) or C4 (``common/models/mask_rcnn_c4.py``: stem, stages, the res5 head, the mask head)."""
    fpn = "bottom_up" in model.backbone
    resnet = model.backbone.bottom_up if fpn else model.backbone
    resnet.stem.norm = norm
    resnet.stages.norm = norm
    if fpn:
        model.backbone.norm = norm
    if "res5" in model.roi_heads:
        model.roi_heads.res5.norm = norm
    for head in ("box_head", "mask_head"):
        if model.roi_heads.get(head) is not None:
            model.roi_heads[head].conv_norm = norm


def set_input_convention(model, dataloader, convention: str) -> None:
    """The channel order, mean and standard deviation of one of :data:`ssn_plugins.model_zoo.INPUT_CONVENTIONS`
    (``"rgb-imagenet"``: the published SN/SSN models') on a LazyConfig's model and its train mapper (which the test
    mapper reads); a catalogue entry's ``input`` names the convention of its weights."""
    values = INPUT_CONVENTIONS[convention]
    model.pixel_mean, model.pixel_std = list(values["mean"]), list(values["std"])
    model.input_format = values["format"]
    dataloader.train.mapper.image_format = values["format"]
