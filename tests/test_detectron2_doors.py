"""detectron2 through its own doors: merge_from_file on every shipped yaml, build_model whatever the import order,
DefaultTrainer (which warns), the input-convention check, LazyConfig and detectron2's lazy training loop."""
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

pytest.importorskip("detectron2")  # needs the full stack; a torch-only install runs the core tests

import torch
from detectron2.config import LazyConfig, get_cfg, instantiate
from omegaconf import OmegaConf

import ssn_plugins as S
import ssn_plugins.detectron2 as sd
from ssn_plugins.detectron2 import lazy as ssn_lazy

from helpers import REPO

YAMLS = sorted((REPO / "configs" / "detectron2").rglob("*.yaml"))
REAL_MINI = REPO / "configs" / "detectron2" / "real_mini" / "mask_rcnn_R_50_FPN_ssn.yaml"
REAL_MINI_LAZY = REAL_MINI.with_suffix(".py")
DETECTRON2_TOOLS = Path(sys.prefix) / "share" / "detectron2" / "tools"  # where tools/with_env.sh keeps them


def d2_config(path=None, *opts):
    cfg = get_cfg()
    sd.add_ssn_config(cfg)
    if path is not None:
        cfg.merge_from_file(str(path))  # detectron2's own loader
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", *opts])
    return cfg


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: str(p.relative_to(REPO / "configs" / "detectron2")))
def test_every_shipped_yaml_loads_with_detectron2s_merge_from_file(path):
    cfg = d2_config(path)
    # detectron2's model-zoo defaults came through the _BASE_ chain, with its VERSION handling
    assert cfg.VERSION == 2 and cfg.MODEL.META_ARCHITECTURE == "GeneralizedRCNN"
    if "_C4_" in path.name:  # Base-RCNN-C4.yaml's
        assert cfg.MODEL.ANCHOR_GENERATOR.SIZES == [[32, 64, 128, 256, 512]]
        assert cfg.MODEL.ROI_HEADS.NAME == "Res5ROIHeads" and cfg.MODEL.RPN.PRE_NMS_TOPK_TEST == 6000
    else:
        assert cfg.MODEL.ANCHOR_GENERATOR.SIZES == [[32], [64], [128], [256], [512]]  # Base-RCNN-FPN.yaml's
        assert cfg.MODEL.ROI_HEADS.IN_FEATURES == ["p2", "p3", "p4", "p5"]
    again = get_cfg()
    sd.add_ssn_config(again)
    sd.merge_config_file(again, str(path))  # the thin alias gives the same config
    again.merge_from_list(["MODEL.DEVICE", "cpu"])
    assert again.dump() == cfg.dump()


def test_model_zoo_bases_are_read_from_the_installed_detectron2_and_a_legacy_base_names_the_fix(tmp_path):
    from detectron2 import model_zoo
    from detectron2.utils.file_io import PathManager

    url = sd.MODEL_ZOO_CONFIGS + "COCO-InstanceSegmentation/../Base-RCNN-FPN.yaml"
    assert PathManager.get_local_path(url) == model_zoo.get_config_file("Base-RCNN-FPN.yaml")
    legacy = tmp_path / "legacy.yaml"
    legacy.write_text('_BASE_: "detectron2://COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml"\n')
    with pytest.raises(FileNotFoundError, match=r'write _BASE_: "https://raw\.githubusercontent\.com/'
                                                r'facebookresearch/detectron2/main/configs/COCO-InstanceSeg'):
        sd.merge_config_file(get_cfg(), str(legacy))


BUILD_CHECK = """
import warnings
{imports}
from detectron2.config import get_cfg
from detectron2.engine import DefaultPredictor, DefaultTrainer
import ssn_plugins as S
from ssn_plugins.detectron2 import add_ssn_config
cfg = get_cfg()
add_ssn_config(cfg)
cfg.merge_from_file({config!r})
cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", "MODEL.SSN.USING_BN", "False",
                     "MODEL.SSN.GN_GROUPS", "8", "MODEL.SSN.EPS", "0.001", "MODEL.SSN.MOMENTUM", "0.05",
                     "MODEL.SSN.OFFICIAL_COMPAT", "True", "MODEL.RESNETS.CE.ENABLED", "True",
                     "MODEL.RESNETS.CE.STEM_GROUP_SIZE", "32", "MODEL.BACKBONE.FREEZE_AT", "2"])
for name, model in (("build_model", build_model(cfg)), ("DefaultTrainer", DefaultTrainer.build_model(cfg)),
                    ("DefaultPredictor", DefaultPredictor(cfg).model)):
    layers = [m for m in model.modules() if isinstance(m, S.SwitchNorm)]
    options = {{(m.candidates, m.eps, m.momentum, m.official_compat) for m in layers}}
    assert options == {{(("IN", "LN", "GN8"), 0.001, 0.05, True)}}, (name, options)
    ce = [m for m in model.modules() if isinstance(m, S.ChannelEquilibrium)]
    assert len(ce) == 14 and model.backbone.bottom_up.stem.conv1.ce.group_size == 32, name
    assert sum(m.frozen for m in layers) == 11, name  # stem + res2 frozen by FREEZE_AT
print("ok")
"""


@pytest.mark.slow
@pytest.mark.parametrize("imports", ["from detectron2.modeling import build_model\nimport ssn_plugins.detectron2",
                                     "import ssn_plugins.detectron2\nfrom detectron2.modeling import build_model"],
                         ids=["isort order (detectron2 first)", "plugin first"])
def test_build_model_applies_the_config_whatever_the_import_order(imports):
    code = BUILD_CHECK.format(imports=imports, config=str(REAL_MINI))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-3000:]


def test_unregister_gives_detectron2_back_and_register_restores_the_plugin():
    code = """
from detectron2.layers import get_norm
from detectron2.modeling import META_ARCH_REGISTRY
import ssn_plugins.detectron2 as sd
sd.unregister()
assert "get" not in vars(META_ARCH_REGISTRY)
try:
    get_norm("SSN", 8)
except KeyError:
    pass
else:
    raise AssertionError("SSN still resolves")
import detectron2.modeling.backbone.resnet as resnet
assert not getattr(resnet.get_norm, "ssn_plugins", False)
sd.register()
assert type(resnet.get_norm("SSN", 8)).__name__ == "SparseSwitchNorm2d"
assert META_ARCH_REGISTRY.get("GeneralizedRCNN").ssn_plugins
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-3000:]


def test_ssn_weights_with_other_inputs_than_the_config_warn_at_build():
    from detectron2.modeling import build_model

    def warnings_of(cfg):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            build_model(cfg)
        return [str(w.message) for w in caught if "was trained on" in str(w.message)]

    shipped = d2_config(REPO / "configs" / "detectron2" / "mask_rcnn_R_50_FPN_1x_ssn.yaml")
    assert warnings_of(shipped) == []
    bgr = shipped.clone()
    bgr.merge_from_list(["INPUT.FORMAT", "BGR", "MODEL.PIXEL_MEAN", "[103.53, 116.28, 123.675]",
                         "MODEL.PIXEL_STD", "[1.0, 1.0, 1.0]"])  # detectron2's defaults
    (message,) = warnings_of(bgr)
    assert message.startswith("ssn://resnet50_ssn_8x32 was trained on RGB inputs") and 'INPUT.FORMAT: "RGB"' in message
    other = bgr.clone()
    other.merge_from_list(["MODEL.WEIGHTS", ""])  # weights the catalogue does not know: not checked
    assert warnings_of(other) == []


SMALL = ["INPUT.MIN_SIZE_TRAIN", "(128,)", "INPUT.MAX_SIZE_TRAIN", "160", "DATALOADER.NUM_WORKERS", "0",
         "SOLVER.MAX_ITER", "1", "MODEL.SSN.BATCH_AVERAGE_ITERS", "1", "DATASETS.TEST", "()"]


@pytest.mark.slow
@pytest.mark.usefixtures("compiled_chain")
def test_plain_default_trainer_warns_and_the_recipe_trainer_does_not(tmp_path):
    """detectron2's DefaultTrainer builds SSN layers but has none of the recipe: it says so at the first step."""
    from detectron2.engine import DefaultTrainer

    from ssn_plugins.detectron2.trainer import Trainer, prepare_real_mini, real_mini_root

    prepare_real_mini(REPO / real_mini_root())
    sd.register_real_mini(REPO / real_mini_root())
    for trainer_class, expected in ((DefaultTrainer, True), (Trainer, False)):
        cfg = d2_config(REAL_MINI, *SMALL, "OUTPUT_DIR", str(tmp_path / trainer_class.__name__))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer = trainer_class(cfg)
            trainer.train()
        messages = [str(w.message) for w in caught]
        hooks = [m for m in messages if "trains without the recipe's hooks" in m]
        groups = [m for m in messages if m.startswith("SN/SSN ratio logits")]
        assert bool(hooks) == expected and bool(groups) == expected, (trainer_class.__name__, messages)
        if expected:
            assert "ssn_plugins.detectron2.Trainer" in hooks[0] and "REOPEN_SELECTION" in hooks[0]


def test_every_recipe_option_changes_the_trainers_pieces():
    """Each MODEL.SSN training option reaches the hook or optimizer it configures (layer options: above)."""
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), S.SparseSwitchNorm2d(4))
    base = REPO / "configs" / "detectron2" / "mask_rcnn_R_50_FPN_1x_ssn.yaml"

    def hooks(*opts):
        return {type(h).__name__: h for h in sd.ssn_hooks(d2_config(base, *opts), model, lambda: iter([]))}

    default = hooks()
    assert set(default) == {"RadiusSchedule", "BatchAverageStatistics", "RatioScalars", "SelectionChart"}
    schedule = hooks("MODEL.SSN.RADIUS_START_ITER", "10", "MODEL.SSN.RADIUS_END_ITER", "50",
                     "MODEL.SSN.MAX_RADIUS", "0.5")["RadiusSchedule"].scheduler
    assert (schedule.start_iter, schedule.total_iters, schedule.max_radius) == (10, 50, 0.5)
    assert default["RadiusSchedule"].scheduler.total_iters == 90000  # -1: SOLVER.MAX_ITER
    assert "BatchAverageStatistics" not in hooks("MODEL.SSN.INFERENCE_STATS", "moving_average")
    assert hooks("MODEL.SSN.BATCH_AVERAGE_ITERS", "7")["BatchAverageStatistics"]._num_iter == 7
    assert "RatioScalars" not in hooks("MODEL.SSN.SCALARS_PERIOD", "0")
    assert hooks("MODEL.SSN.SCALARS_PERIOD", "5")["RatioScalars"]._period == 5
    assert "SelectionChart" not in hooks("MODEL.SSN.SELECTION_CHART", "False")

    def ratio_group(*opts):
        optimizer = sd.build_ssn_optimizer(d2_config(base, *opts), model)
        return next(g for g in optimizer.param_groups if any(p is model[1].mean_weight for p in g["params"])), \
            optimizer
    group, optimizer = ratio_group("MODEL.SSN.RATIO_LR_FACTOR", "0.5", "MODEL.SSN.RATIO_WEIGHT_DECAY", "0.001")
    assert (group["lr"], group["weight_decay"]) == pytest.approx((0.01, 0.001))
    assert len(optimizer._optimizer_step_pre_hooks) == 1  # the ratio clipping
    assert len(ratio_group("MODEL.SSN.RATIO_CLIP", "None")[1]._optimizer_step_pre_hooks) == 0


def lazy_config(path, **settings):
    cfg = LazyConfig.load(str(path))
    for key, value in settings.items():
        node, _, name = key.rpartition(".")
        setattr(OmegaConf.select(cfg, node) if node else cfg, name, value)
    return cfg


@pytest.mark.parametrize("name, kind, weights", [("mask_rcnn_R_50_FPN_1x_sn", S.SwitchNorm2d, "ssn://resnet50_sn_8x32"),
                                                 ("mask_rcnn_R_50_FPN_1x_ssn", S.SparseSwitchNorm2d,
                                                  "ssn://resnet50_ssn_8x32")])
def test_the_lazy_configs_build_the_yaml_twins_model_and_the_recipe_optimizer(name, kind, weights):
    cfg = lazy_config(REPO / "configs" / "detectron2" / f"{name}.py", **{
        "train.device": "cpu", "optimizer.recipe.train_loader": None,  # (the COCO loader needs COCO)
        "optimizer.recipe.inference_stats": "moving_average"})
    yaml_twin = sd.build_model(d2_config(REPO / "configs" / "detectron2" / f"{name}.yaml", "MODEL.WEIGHTS", ""))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = instantiate(cfg.model)
        cfg.optimizer.params.model = model  # as detectron2's lazy loop does
        optimizer = instantiate(cfg.optimizer)
    assert not [w for w in caught if "was trained on" in str(w.message)]  # RGB inputs, as the weights expect
    assert cfg.train.init_checkpoint == weights and model.input_format == "RGB"
    layers = [m for m in model.modules() if isinstance(m, S.SwitchNorm)]
    assert len(layers) == 69 and {type(m) for m in layers} == {kind}
    assert [n for n, _ in model.named_parameters()] == [n for n, _ in yaml_twin.named_parameters()]
    settings = {id(p): (g["lr"], g["weight_decay"]) for g in optimizer.param_groups for p in g["params"]}
    norm = model.backbone.bottom_up.res2[0].conv1.norm
    assert settings[id(norm.mean_weight)] == pytest.approx((0.002, 0.0))  # lr/10, no decay
    assert settings[id(norm.weight)] == pytest.approx((0.02, 0.0))  # weight_decay_norm
    assert settings[id(model.backbone.bottom_up.res2[0].conv1.weight)] == pytest.approx((0.02, 1e-4))
    assert len(optimizer._optimizer_step_pre_hooks) == 1 and len(optimizer._optimizer_step_post_hooks) == 1
    assert ssn_lazy._RECIPES[model].radius_end_iter == 90000  # train.max_iter, read by interpolation


def test_lazy_pieces_check_their_arguments_when_instantiated():
    with pytest.raises(ValueError, match="needs a train_loader"):
        ssn_lazy.TrainingRecipe(max_iter=10)
    with pytest.raises(ValueError, match="start_iter < end_iter"):
        ssn_lazy.TrainingRecipe(max_iter=10, radius_start_iter=10, inference_stats="moving_average")
    with pytest.raises(TypeError, match="must come from ssn_plugins.detectron2.lazy.optimizer_params"):
        ssn_lazy.RecipeSGD(torch.nn.Linear(2, 2).parameters(), lr=0.1)
    with pytest.raises(ValueError, match="unknown norm 'SNN'.*did you mean 'SN' or 'SSN'"):
        sd.SwitchNormLayer("SNN")
    with pytest.raises(TypeError, match="using_bm"):
        sd.SwitchNormLayer("SSN", using_bm=False)
    layer = sd.SwitchNormLayer("SSN", candidates=("IN", "LN"))(16)
    assert isinstance(layer, S.SparseSwitchNorm2d) and layer.candidates == ("IN", "LN")
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), S.SwitchNorm2d(4))
    clipped = ssn_lazy.RecipeSGD(ssn_lazy.optimizer_params(model, base_lr=0.1), lr=0.1)
    unclipped = ssn_lazy.RecipeSGD(ssn_lazy.optimizer_params(model, base_lr=0.1), lr=0.1, ratio_clip=None)
    for p in S.ratio_parameters(model):
        p.grad = torch.full_like(p, 10.0)
    unclipped.step()
    assert all(torch.all(p.grad == 10.0) for p in S.ratio_parameters(model))
    clipped.step()
    assert torch.cat([p.grad for p in S.ratio_parameters(model)]).norm() == pytest.approx(1.0, rel=1e-5)


def run_lazy_loop(args, cwd, timeout=900):
    script = DETECTRON2_TOOLS / "lazyconfig_train_net.py"
    assert script.is_file(), f"{script} is missing: tools/with_env.sh keeps detectron2's tools there"
    result = subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True, text=True,
                            cwd=cwd, timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result.stdout + result.stderr


@pytest.mark.slow
def test_detectron2s_lazy_training_loop_trains_ssn_with_the_recipe(tmp_path):
    """detectron2's own tools/lazyconfig_train_net.py, run as detectron2 documents it, on the real mini set."""
    from ssn_plugins.detectron2.trainer import prepare_real_mini, real_mini_root

    prepare_real_mini(REPO / real_mini_root())
    out = tmp_path / "lazy"
    small = [f"train.output_dir={out}", "train.max_iter=3", "train.log_period=1", "optimizer.recipe.scalars_period=1",
             "optimizer.recipe.batch_average_iters=2", "dataloader.train.num_workers=0",
             "dataloader.test.num_workers=0", "dataloader.train.mapper.augmentations.0.short_edge_length=[160]",
             "dataloader.train.mapper.augmentations.0.max_size=224",
             "dataloader.test.mapper.augmentations.0.short_edge_length=160",
             "dataloader.test.mapper.augmentations.0.max_size=224"]
    log = run_lazy_loop(["--config-file", REAL_MINI_LAZY, *small], cwd=REPO)
    rows = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    ssn_rows = [r for r in rows if "ssn/radius" in r]
    assert [r["iteration"] for r in ssn_rows] == [0, 1, 2]
    assert [r["ssn/radius"] for r in ssn_rows] == pytest.approx([0.0, 1 / 3, 2 / 3])  # the schedule, t / T
    assert ssn_rows[-1]["ssn/one_hot_vectors"] == 138  # radius 1 for iteration 3: every layer selected
    # the batch averages are recomputed before the final checkpoint is written, and before the final evaluation
    recomputed = log.index("Recomputing batch-average statistics over 2 iterations")
    assert recomputed < log.index(f"Saving checkpoint to {out}/model_final.pth") < log.index("copypaste: Task: bbox")
    state = torch.load(out / "model_final.pth", map_location="cpu", weights_only=True)["model"]
    flags = [v for k, v in state.items() if k.endswith(("mean_fixed", "var_fixed"))]
    assert len(flags) == 138 and all(bool(f) for f in flags)
    # --eval-only on that checkpoint, as detectron2 documents it
    evaluated = run_lazy_loop(["--config-file", REAL_MINI_LAZY, "--eval-only", f"train.init_checkpoint={out}/"
                               "model_final.pth", f"train.output_dir={tmp_path / 'eval'}", *small[5:]], cwd=REPO)
    assert "copypaste: Task: bbox" in evaluated


class TinyDetector(torch.nn.Module):
    """A model with detectron2's training interface (a dict of losses) and SSN layers, for the lazy recipe."""

    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), S.SparseSwitchNorm2d(8), torch.nn.ReLU(),
                                        torch.nn.Conv2d(8, 4, 1), S.SparseSwitchNorm2d(4))

    def forward(self, batch):
        out = self.body(batch)
        return {"loss": out.square().mean()} if self.training else out


def train_with_recipe(iterations, **recipe_options):
    from detectron2.engine import SimpleTrainer

    torch.manual_seed(0)
    model = TinyDetector()
    batches = [torch.randn(4, 3, 9, 9) for _ in range(4)]
    recipe = ssn_lazy.TrainingRecipe(**{"max_iter": iterations, "train_loader": batches * 10, **recipe_options})
    optimizer = ssn_lazy.RecipeSGD(ssn_lazy.optimizer_params(model, base_lr=0.01), lr=0.01, recipe=recipe)
    radii = []
    model.register_forward_pre_hook(lambda m, a: radii.append(float(m.body[1].radius)) if m.training and
                                    torch.is_grad_enabled() else None)
    trainer = SimpleTrainer(model, iter(batches * 10), optimizer)
    trainer.train(0, iterations)
    return model, trainer.storage, radii


def test_every_training_recipe_option_changes_what_the_lazy_loop_does():
    _, _, radii = train_with_recipe(4)
    assert radii == pytest.approx([0.0, 0.25, 0.5, 0.75])  # t / max_iter
    _, _, radii = train_with_recipe(4, radius_start_iter=2, radius_end_iter=4, max_radius=0.5)
    assert radii == pytest.approx([0.0, 0.0, 0.0, 0.25])
    _, storage, _ = train_with_recipe(4, scalars_period=2)
    assert [i for _, i in storage.history("ssn/radius").values()] == [1, 3]
    assert "ssn/radius" not in train_with_recipe(2, scalars_period=0)[1].histories()
    # batch averaging replaces the running statistics by averages over batch_average_iters batches
    averaged, _, _ = train_with_recipe(2, batch_average_iters=3)
    moving, _, _ = train_with_recipe(2, inference_stats="moving_average", train_loader=None)
    assert not torch.allclose(averaged.body[1].running_mean, moving.body[1].running_mean)
    charted = train_with_recipe(2, selection_chart=True)[1]  # (at the recomputation before the final checkpoint)
    uncharted = train_with_recipe(2, selection_chart=False)[1]
    assert [name for name, *_ in charted._vis_data] == ["ssn/selection_per_layer"]
    assert uncharted._vis_data == []


def test_the_lazy_recipe_reopens_selections_on_request_and_freezes_frozen_stages():
    from detectron2.engine import SimpleTrainer

    for reopen in (False, True):
        model = TinyDetector()
        layer = model.body[1]
        layer.fix("mean", "BN"), layer.fix("var", "BN")
        model.body[4].requires_grad_(False)  # a frozen stage, as ResNet(freeze_at=...) leaves it
        recipe = ssn_lazy.TrainingRecipe(max_iter=10, inference_stats="moving_average", reopen_selection=reopen)
        optimizer = ssn_lazy.RecipeSGD(ssn_lazy.optimizer_params(model, base_lr=0.01), lr=0.01, recipe=recipe)
        assert model.body[4].frozen and not model.body[4].training
        SimpleTrainer(model, iter([torch.randn(4, 3, 9, 9)] * 2), optimizer).train(0, 1)
        assert layer.selection == ((None, None) if reopen else ("BN", "BN"))
