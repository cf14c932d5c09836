"""Shared test helpers. Only torch at import: the core's tests run on a torch-only install; the photo and
framework helpers import what they need when called."""
import contextlib
import os
import re
import sys
from pathlib import Path
from typing import Tuple

import torch
from torch import nn
from torch.func import functional_call

import ssn_plugins as S
from ssn_plugins.functional import switch_norm
from ssn_plugins.models import ResNet


@contextlib.contextmanager
def gloo_worker(rank: int, world: int, init_file: str, timeout_s: float = 1800):
    """The gloo process group of an ``mp.spawn`` test worker.

    After a clean run the worker waits for the others, destroys the group and
    leaves with ``os._exit(0)``, skipping the interpreter's teardown, where
    gloo's background threads can abort a finished process ("terminate called
    without an active exception"): that failed one CI run whose results were
    already written and correct. An error propagates as usual (a non-zero exit
    that ``mp.spawn`` reports).
    """
    import torch.distributed as dist
    import datetime
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=timeout_s))  # a collective that never matches fails
    try:
        yield
        dist.barrier()  # neither process tears gloo down while the other still talks to it
    except BaseException:
        dist.destroy_process_group()
        raise
    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


#: an input shape per spatial rank (1-, 2- and 3-d layers), C = 4
SHAPES = {1: (6, 4, 7), 2: (4, 4, 5, 6), 3: (3, 4, 3, 4, 5)}


def randomize(m: torch.nn.Module) -> torch.nn.Module:
    """``m`` with every parameter drawn from N(0, 1)."""
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn_like(p))
    return m


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def _joined(outputs) -> torch.Tensor:
    from ssn_plugins.export import flatten_tensors
    return torch.cat([t.flatten() for t in flatten_tensors(outputs)])


class Reference:
    """The original model's float64 outputs on ``x`` (all of them, joined) and the float32 original's error to them."""

    def __init__(self, model: torch.nn.Module, x: torch.Tensor):
        import copy
        with torch.no_grad():
            self.exact = _joined(copy.deepcopy(model).double()(x.double()))
            self.floor = relative_error(_joined(model(x)), self.exact)

    def check(self, outputs) -> None:
        error = relative_error(_joined(outputs), self.exact)
        assert error < 1e-5 and error < 1.2 * self.floor + 1e-7, (error, self.floor)


def gradcheck_module(module: torch.nn.Module, x: torch.Tensor) -> bool:
    """``torch.autograd.gradcheck`` of ``module(x)`` with respect to ``x`` and every parameter (float64)."""
    names = [n for n, _ in module.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_() for p in module.parameters())
    return torch.autograd.gradcheck(lambda x, *ps: functional_call(module, dict(zip(names, ps)), (x,)),
                                    (x.detach().requires_grad_(),) + params)


def trained_looking_norms(model: torch.nn.Module, seed: int = 0, fix_every: int = 2) -> torch.nn.Module:
    """Give every SN/SSN layer of ``model`` what training leaves: random ratio logits, γ, β and running
    statistics; SSN layers at radius 0.3 with every ``fix_every``-th one fixed on BN (the papers find about
    half BN), a few on IN for the mean and LN for the variance. Returns the model in eval mode."""
    import ssn_plugins as S
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, S.SwitchNorm):
                m.mean_weight.copy_(torch.randn(m.mean_weight.shape, generator=g))
                m.var_weight.copy_(torch.randn(m.var_weight.shape, generator=g))
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.bias.shape, generator=g) * 0.4 - 0.2)
                if m.running_mean is not None:
                    m.running_mean.normal_(0, 0.2, generator=g)
                    m.running_var.uniform_(0.5, 2.0, generator=g)
    for i, m in enumerate(S.sparse_layers(model)):
        S.set_radius(m, 0.3)
        if i % fix_every == 0:
            m.fix("mean", "BN")
            m.fix("var", "BN")
        elif i % 7 == 1:
            m.fix("mean", "IN")
            m.fix("var", "LN")
    return model.eval()


def photo_path() -> Path:
    """A real photo (matplotlib's sample data; the test is skipped on a torch-only install)."""
    import pytest
    matplotlib = pytest.importorskip("matplotlib")
    return Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


def photo_batch(size=(128, 160), crops=2, seed=0) -> torch.Tensor:
    """Random crops of a real photograph, ImageNet-normalized, ``(crops, 3, H, W)``."""
    import pytest
    np = pytest.importorskip("numpy")
    Image = pytest.importorskip("PIL.Image")
    image = torch.from_numpy(np.asarray(Image.open(photo_path()).convert("RGB"), dtype=np.float32) / 255)
    image = image.permute(2, 0, 1)
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(crops):
        top = int(torch.randint(0, image.shape[1] - size[0], (1,), generator=g))
        left = int(torch.randint(0, image.shape[2] - size[1], (1,), generator=g))
        out.append(image[:, top:top + size[0], left:left + size[1]])
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    return (torch.stack(out) - mean) / std


def trained_looking_resnet(depth=50, norm="SSN", using_bn=True, version=1, ceil=False) -> ResNet:
    torch.manual_seed(0)
    candidates = ("IN", "LN", "BN") if using_bn else ("IN", "LN")
    # the authors' layers (unbiased IN variance): converted files must reproduce their math
    model = ResNet(depth, norm, norm_kwargs={"candidates": candidates, "official_compat": True}, version=version,
                   ceil_mode_pool=ceil)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, S.SwitchNorm):
                m.mean_weight.copy_(torch.randn_like(m.mean_weight))
                m.var_weight.copy_(torch.randn_like(m.var_weight))
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    if norm == "SSN":
        layers = S.sparse_layers(model)
        for i, m in enumerate(layers[::3]):
            m.fix("mean", candidates[i % len(candidates)])
            m.fix("var", candidates[(i + 1) % len(candidates)])
        S.set_radius(model, 0.35)
    if using_bn:
        S.recompute_batch_statistics(model, [photo_batch(crops=4, seed=s) for s in range(3)])
    return model.eval()


def published_layout(model: ResNet) -> dict:
    """What the authors' training script saves: ``module.`` keys, (1,C,1,1) / (1,C,1) shapes, long flags."""
    switchable = {name for name, m in model.named_modules() if isinstance(m, S.SwitchNorm)}
    sd = {}
    for key, value in model.state_dict().items():
        owner, name = key.rsplit(".", 1)
        if name in ("num_batches_tracked", "official_compat_flag"):
            continue
        if owner not in switchable:  # only the SN layers have the authors' shapes
            pass
        elif name in ("weight", "bias"):
            value = value.reshape(1, -1, 1, 1)
        elif name in ("running_mean", "running_var"):
            value = value.reshape(1, -1, 1)
        elif name in ("mean_fixed", "var_fixed"):
            value = value.long().reshape(1)
        elif name == "radius":
            value = value.reshape(1)
        sd["module." + key] = value.clone()
    return {"epoch": 100, "arch": "resnet", "state_dict": sd, "best_prec1": torch.tensor(76.9), "optimizer": {}}


def ce_release_layout(model: ResNet) -> dict:
    """What the CE release saves for a BN + CE ResNet (``bn1``, ``layerK.i.bnN``, ``layerK.i.ce``; CE's ``AR.*`` and
    ``x_weight``), ``module.`` keys under ``state_dict``."""
    sd = {}
    for key, value in model.state_dict().items():
        key = re.sub(r"^((?:layer\d\.\d+\.)?)sn(\d)\.", r"\1bn\2.", key)
        key = key.replace(".reweight.", ".AR.").replace(".mix_logit", ".x_weight")
        sd["module." + key] = value.clone()
    return {"epoch": 100, "state_dict": sd, "best_prec1": 78.2}


def trained_looking_ce_resnet(depth: int = 50, seed: int = 0) -> ResNet:
    """A BN + CE ResNet as the CE release builds it, with CE and BN running estimates from real photo crops and
    non-trivial mixing logits; eval mode."""
    torch.manual_seed(seed)
    model = ResNet(depth, "BN", ce=True).train()
    with torch.no_grad():
        for s in range(3):
            model(photo_batch(crops=4, seed=5 + s))
        for i, m in enumerate(m for m in model.modules() if isinstance(m, S.ChannelEquilibrium)):
            m.mix_logit.fill_(0.4 - 0.1 * (i % 5))
    return model.eval()


def d2_resnet50(norm):
    """detectron2's ResNet-50 (stride in the 3x3 convolutions) with ``norm``, all four stages out."""
    from detectron2.modeling.backbone.resnet import BasicStem
    from detectron2.modeling.backbone.resnet import ResNet as D2ResNet

    return D2ResNet(BasicStem(3, 64, norm=norm), D2ResNet.make_default_stages(50, stride_in_1x1=False, norm=norm),
                    out_features=["res2", "res3", "res4", "res5"])


REPO = Path(__file__).resolve().parents[1]


def doc_snippet(page: str, name: str) -> str:
    """The fenced code block right after ``<!-- snippet: NAME -->`` in ``page`` (a path from the repository root):
    the docs' tested snippets, run by the tests as they are printed."""
    text = (REPO / page).read_text()
    match = re.search(rf"<!-- snippet: {re.escape(name)} -->\n```[a-z]*\n(.*?)\n```", text, re.S)
    assert match, f"{page} has no snippet {name!r}"
    return match.group(1)


def markdown_table(text: str) -> list:
    """The rows of the first Markdown table in ``text`` as dicts keyed by its header cells."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(header, (c.strip() for c in line.strip("|").split("|")))) for line in lines[2:]]


def build_distributions(out: Path) -> Tuple[Path, Path]:
    """The wheel and sdist built from a copy of the package's sources (pyproject.toml alone, as pip builds them; the
    tree stays clean) into ``out``."""
    import shutil
    import subprocess
    source = out / "source"
    source.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "ssn_plugins", source / "ssn_plugins", ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run([sys.executable, "-c", "from setuptools import build_meta as b; "
                            "w = b.build_wheel('../dist'); s = b.build_sdist('../dist'); print('BUILT', w, s)"],
                           cwd=source, capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-3000:]
    (line,) = [line for line in built.stdout.splitlines() if line.startswith("BUILT ")]
    wheel, sdist = line.split()[1:]
    return out / "dist" / wheel, out / "dist" / sdist


# the OpenMMLab real-mini jobs' --cfg-options for CPU test runs (the shipped configs at test size)
#: the segmentation config at 128x128 crops instead of 256x256, for speed
SMALL_CROPS = ["model.data_preprocessor.size=(128,128)", "train_dataloader.dataset.pipeline.3.crop_size=(128,128)"]
#: data loading in the main process: forking workers and waiting for them to shut down cost more than the loading here
NO_WORKERS = [f"{loader}_dataloader.{key}" for loader in ("train", "val", "test")
              for key in ("num_workers=0", "persistent_workers=False")]
#: the segmentation evaluations at half their size (256 x 192 instead of 512 x 384)
SMALL_EVAL = ["val_dataloader.dataset.pipeline.1.scale=(256,192)", "test_dataloader.dataset.pipeline.1.scale=(256,192)"]


def hook_option(hook_type: str, key: str, value) -> str:
    """``--cfg-options`` text setting ``key`` of the plugin's hook ``hook_type`` (configs/_base_/ssn_runtime.py): the
    hook is found by its type, since mmengine's options address list entries by position only."""
    from ssn_plugins.config_files import config_file
    runtime = Path(config_file("_base_/ssn_runtime.py"))
    namespace = {}
    exec(compile(runtime.read_text(), str(runtime), "exec"), {"dict": dict}, namespace)
    (index,) = [i for i, hook in enumerate(namespace["custom_hooks"]) if hook["type"] == hook_type]
    return f"custom_hooks.{index}.{key}={value}"


def average_over(batches: int) -> str:
    """``--cfg-options`` text: batch-average statistics over ``batches`` training batches (the BatchAverage hook)."""
    return hook_option("BatchAverageStatisticsHook", "num_iters", batches)


def small_cnn():
    """A small CNN with BatchNorm2d, GroupNorm and BatchNorm1d layers, for the converters and the recipe."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.GroupNorm(2, 8), nn.ReLU(),
        nn.Identity(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4), nn.BatchNorm1d(4),
    )


def fixed(cls, mean, var, c=8, **kwargs):
    """An SSN layer of ``cls`` with both selections fixed (``mean``, ``var``: candidate names)."""
    m = cls(c, **kwargs)
    m.fix("mean", mean)
    m.fix("var", var)
    return m


#: the SSN class of each input rank
SSN_CLASSES = {1: S.SparseSwitchNorm1d, 2: S.SparseSwitchNorm2d, 3: S.SparseSwitchNorm3d}


def fixed_layer(rank, mean, var, **kwargs):
    """A float64 4-channel SSN layer for ``rank``-d input with both selections fixed."""
    m = SSN_CLASSES[rank](4, **kwargs).double()
    m.fix("mean", mean)
    m.fix("var", var)
    return m


def switch_norm_inputs(cands, shape, dtype, affine, seed=0):
    """``(x, mean_ratios, var_ratios, weight, bias)`` for :func:`switch_norm`, all leaves needing gradients."""
    g = torch.Generator().manual_seed(seed)
    k = len(cands)
    x = (torch.randn(shape, generator=g, dtype=torch.float64) * 3 + 1).to(dtype).requires_grad_()
    mean_ratios = torch.softmax(torch.randn(k, generator=g, dtype=torch.float64), 0).to(dtype).requires_grad_()
    var_ratios = torch.softmax(torch.randn(k, generator=g, dtype=torch.float64), 0).to(dtype).requires_grad_()
    weight = ((torch.rand(shape[1], generator=g, dtype=torch.float64) + 0.5).to(dtype).requires_grad_()
              if affine else None)
    bias = torch.randn(shape[1], generator=g, dtype=torch.float64).to(dtype).requires_grad_() if affine else None
    return x, mean_ratios, var_ratios, weight, bias


def switch_norm_value_and_grads(inputs, cands, training, unbiased, double_backward, running=None, out_grad=None):
    """``(y, *gradients of the inputs that are not None)`` of one :func:`switch_norm` call."""
    x, mean_ratios, var_ratios, weight, bias = inputs
    running_mean, running_var = running if running is not None else (None, None)
    y = switch_norm(x, mean_ratios, var_ratios, cands, running_mean=running_mean, running_var=running_var,
                    weight=weight, bias=bias, training=training, unbiased_in=unbiased, double_backward=double_backward)
    wrt = [t for t in inputs if t is not None]
    out_grad = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(y.dtype) \
        if out_grad is None else out_grad
    return (y,) + torch.autograd.grad(y, wrt, out_grad)


def switch_norm_gradcheck(cands, shape, affine, unbiased) -> bool:
    """``gradcheck`` of a training-mode :func:`switch_norm` (the fused Function) in float64."""
    wrt = tuple(t for t in switch_norm_inputs(cands, shape, torch.float64, affine) if t is not None)

    def fused_fn(x, mean_ratios, var_ratios, *affine_params):
        weight, bias = affine_params if affine else (None, None)
        return switch_norm(x, mean_ratios, var_ratios, cands, weight=weight, bias=bias, training=True,
                           unbiased_in=unbiased)
    return torch.autograd.gradcheck(fused_fn, wrt)


def switch_norm_errors_against_float64(cands, dtype) -> list:
    """Relative errors of a training-mode :func:`switch_norm`'s output and every gradient in ``dtype`` (the fused
    Function) against the plain-autograd float64 result of the same inputs."""
    inputs = switch_norm_inputs(cands, (4, 8, 9, 9), dtype, True)
    low = switch_norm_value_and_grads(inputs, cands, True, False, False)
    exact = switch_norm_value_and_grads([t.detach().double().requires_grad_() for t in inputs], cands, True, False,
                                        True)
    assert all(a.dtype == dtype for a in low)
    return [((a.double() - b).abs().max() / b.abs().max()).item() for a, b in zip(low, exact)]
