"""The docs' code, run as printed: the marked snippets (``<!-- snippet: NAME -->``: timm, the README's detectron2
yaml, detectron2's DefaultPredictor) by their own tests with what they need, and every other fenced block by its
language: python executed, yaml merged into a detectron2 config, json parsed, shell commands parsed by the tools
they name."""
import json
import os
import re
import shlex
import warnings
from pathlib import Path

import pytest

from helpers import REPO, doc_snippet, photo_path


def test_the_timm_snippet_trains_until_every_layer_selects(capsys):
    pytest.importorskip("timm")
    namespace = {}
    exec(compile(doc_snippet("docs/timm.md", "timm"), "docs/timm.md", "exec"), namespace)
    import ssn_plugins as S
    counts = S.count_selections(S.describe_selection(namespace["model"]))
    assert "soft" not in counts["mean"] and "soft" not in counts["var"]
    assert sum(counts["mean"].values()) == 49  # EfficientNet-B0's norms, each with its SiLU kept
    assert "'soft'" not in capsys.readouterr().out


def test_the_readme_detectron2_yaml_loads_with_merge_from_file_and_builds_what_it_says(tmp_path):
    pytest.importorskip("detectron2")
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    import ssn_plugins as S
    from ssn_plugins.detectron2 import add_ssn_config

    path = tmp_path / "taste.yaml"
    path.write_text(doc_snippet("README.md", "readme-detectron2-yaml"))
    cfg = get_cfg()
    add_ssn_config(cfg)
    cfg.merge_from_file(str(path))
    cfg.MODEL.DEVICE = "cpu"
    assert cfg.MODEL.ANCHOR_GENERATOR.SIZES == [[32], [64], [128], [256], [512]]  # detectron2's FPN base
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = build_model(cfg)  # the weights are loaded later, by the checkpointer: nothing is downloaded here
    assert not [w for w in caught if "was trained on" in str(w.message)]  # the input convention matches
    norms = [m for m in model.modules() if isinstance(m, S.SwitchNorm)]
    assert len(norms) == 53 + 8 and all(isinstance(m, S.SparseSwitchNorm2d) for m in norms)


def test_the_default_predictor_snippet_detects_with_a_saved_model(tmp_path):
    pytest.importorskip("detectron2")
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    from ssn_plugins.detectron2 import add_ssn_config

    config = REPO / "configs" / "detectron2" / "mask_rcnn_R_50_FPN_1x_ssn.yaml"
    cfg = get_cfg()
    add_ssn_config(cfg)
    cfg.merge_from_file(str(config))
    cfg.MODEL.DEVICE, cfg.MODEL.WEIGHTS = "cpu", ""
    DetectionCheckpointer(build_model(cfg), save_dir=str(tmp_path)).save("model_final")
    code = doc_snippet("docs/detectron2.md", "default-predictor")
    for printed, here in (('"configs/detectron2/', f'"{REPO}/configs/detectron2/'),
                          ('"output/model_final.pth"', f'"{tmp_path}/model_final.pth"'),
                          ('"input.jpg"', f'"{photo_path()}"')):
        assert printed in code
        code = code.replace(printed, here)
    namespace = {}
    cwd = os.getcwd()
    try:
        exec(compile(code, "docs/detectron2.md", "exec"), namespace)
    finally:
        os.chdir(cwd)
    instances = namespace["outputs"]["instances"]
    assert instances.image_size == (600, 512)  # the photo's own (height, width): the predictor resized back
    assert {"pred_boxes", "scores", "pred_classes", "pred_masks"} <= set(instances.get_fields())
    predictor = namespace["predictor"]
    assert predictor.input_format == "RGB" and not predictor.model.training


# ------------------------------------------------------------------------------ every other fenced block
FENCED = re.compile(r"(<!-- snippet: [\w-]+ -->\n)?```(\w*)\n(.*?)\n```", re.S)
PAGES = sorted({*REPO.glob("*.md"), *(REPO / "docs").glob("*.md"), REPO / "tools" / "README.md",
                *(REPO / "configs").rglob("README.md")})
#: what a python block that continues a page's story needs from the lines before it (by page and first line)
PRELUDES = {
    # the training loop: a loader of two batches of small images (a resumed run would start later)
    ("docs/layers.md", "import torch, torchvision"): (
        "import torch\nloader = [(torch.randn(2, 3, 64, 64), torch.tensor([1, 7])) for _ in range(2)]\n"
        "start_iter = 0\n"),
    # the model and input of the lines before it, at a small size
    ("docs/deployment.md", "inference_model, report = S.for_inference(model)"): (
        "import torch, torchvision\nimport ssn_plugins as S\n"
        "model = S.convert_norm(torchvision.models.resnet18(), to='SSN').eval()\nimages = torch.randn(1, 3, 64, 64)\n"
        "model(images)\n"),
}


def fenced_blocks(language: str):
    """``(page, first line, code)`` of each unmarked fenced block in ``language`` on the documentation pages."""
    for page in PAGES:
        for match in FENCED.finditer(page.read_text()):
            if match.group(2) == language and not match.group(1):
                yield page.relative_to(REPO).as_posix(), match.group(3).splitlines()[0], match.group(3)


def test_every_block_says_its_language():
    """A block is run by its language: one without would be checked by nothing (``text`` is prose: listings)."""
    unnamed = [(page, match.group(3).splitlines()[0]) for page in PAGES for match in FENCED.finditer(page.read_text())
               if not match.group(2)]
    assert not unnamed
    languages = {match.group(2) for page in PAGES for match in FENCED.finditer(page.read_text())}
    assert languages <= {"python", "bash", "yaml", "json", "text"}, languages


@pytest.mark.slow
@pytest.mark.parametrize("page,first,code", list(fenced_blocks("python")), ids=lambda v: str(v)[:40])
def test_every_python_block_runs(page, first, code, tmp_path, monkeypatch):
    """Each python block of the docs, executed as printed (after the lines its page said before it, PRELUDES).
    A block that is an OpenMMLab config is read by mmengine and its model built instead."""
    monkeypatch.chdir(REPO)  # the paths they name (configs/...) are the clone's
    if code.startswith("_base_ = "):
        pytest.importorskip("mmseg")
        from mmengine.config import Config
        from mmseg.registry import MODELS
        from mmseg.utils import register_all_modules
        register_all_modules()
        (tmp_path / "_base_").symlink_to(REPO / "configs" / "_base_")  # '../_base_/...' as from a configs folder
        (tmp_path / "mine").mkdir()
        (tmp_path / "mine" / "config.py").write_text(code)
        cfg = Config.fromfile(str(tmp_path / "mine" / "config.py"))
        assert cfg.model.backbone.norm_cfg.type == "SSN" and "ssn_plugins.openmmlab" in cfg.custom_imports.imports
        import ssn_plugins as S
        cfg.model.pop("pretrained", None)
        model = MODELS.build(cfg.model)
        assert sum(isinstance(m, S.SwitchNorm) for m in model.modules()) > 50
        return
    namespace = {}
    prelude = next((lines for (where, start), lines in PRELUDES.items()
                    if where == page and first.startswith(start)), "")
    exec(compile(prelude + code, page, "exec"), namespace)


@pytest.mark.parametrize("page,first,code", list(fenced_blocks("yaml")), ids=lambda v: str(v)[:40])
def test_every_yaml_block_merges_into_a_detectron2_config(page, first, code, tmp_path):
    pytest.importorskip("detectron2")
    from detectron2.config import get_cfg

    from ssn_plugins.detectron2 import add_ssn_config
    (tmp_path / "block.yaml").write_text(code)
    cfg = get_cfg()
    add_ssn_config(cfg)
    cfg.merge_from_file(str(tmp_path / "block.yaml"))


@pytest.mark.parametrize("page,first,code", list(fenced_blocks("json")), ids=lambda v: str(v)[:40])
def test_every_json_block_parses(page, first, code):
    json.loads(code)


class _Parsed(Exception):
    """Raised right after a tool's own parser accepted its arguments."""


def _commands(code: str):
    """The shell block's commands: continuation lines joined, comments dropped, ``bash tools/with_env.sh`` off."""
    joined = re.sub(r"\\\n\s*", " ", code)
    for line in joined.splitlines():
        line = re.sub(r"\s+#.*$", "", line).strip()
        if line and not line.startswith("#"):
            yield shlex.split(re.sub(r"^bash tools/with_env.sh (--with-browser )?", "", line))


#: a command written as a pattern (placeholders, optional parts), whose arguments only a reader fills in
TEMPLATE = re.compile(r"^(CONFIG|CHECKPOINT|OUT|FILE|IMAGE|\.\.\.|\[.*)$")
def _console_scripts() -> dict:
    import tomllib
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]


def _tool_module(tool: str):
    """The module of the clone's ``tools/<tool>.py``: the one its wrapper imports ``main`` from."""
    import importlib
    match = re.search(r"^from (ssn_plugins[\w.]*) import main$", (REPO / "tools" / f"{tool}.py").read_text(), re.M)
    assert match, f"tools/{tool}.py is not a wrapper of a package module"
    return importlib.import_module(match.group(1))


def _parse_with(module, argv) -> None:
    """Run ``module.main(argv)`` until its parser has accepted ``argv`` (a refusal exits 2 and fails here)."""
    import argparse
    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        original(self, args, namespace)
        raise _Parsed

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
        with pytest.raises(_Parsed):
            module.main(list(argv))


def _check_pip_install(argv, page: str) -> None:
    """A ``pip install`` line: the extras it names exist, and so does a constraints file it names."""
    import tomllib
    extras = set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    for i, token in enumerate(argv):
        if argv[i - 1] == "-c":
            assert (REPO / token).is_file(), f"{page}: {token}"
        for named in re.findall(r"\[([\w,]+)\]", token):
            assert set(named.split(",")) <= extras, f"{page}: {token}"


@pytest.mark.parametrize("page,first,code", list(fenced_blocks("bash")), ids=lambda v: str(v)[:40])
def test_every_shell_command_names_real_tools_and_configs_and_parses(page, first, code, monkeypatch):
    """Shell blocks train on data sets that are not here (ImageNet, COCO, Cityscapes): each command is checked as
    far as it can be without them. The tool exists (a clone's ``tools/NAME.py`` or an installed ``ssn-*``
    command); every config it names is a shipped one; and the tool's own parser accepts the arguments as printed (a
    pattern with placeholders is checked for its tool only). ``pip install`` lines name real extras; ``mim`` and
    detectron2's lazy tool are checked for the config they are given."""
    import importlib

    from ssn_plugins.config_files import resolve_config
    monkeypatch.chdir(REPO)
    scripts = _console_scripts()
    for argv in _commands(code):
        for token in argv:
            if token.startswith("configs/") or re.match(r"(detectron2|mmseg|mmdet|mmaction)/\S+\.(py|yaml)$", token):
                assert Path(resolve_config(token)).is_file(), f"{page}: {token}"
        if argv[:3] == ["python", "-m", "pytest"] or argv[0] == "mim":
            continue
        if argv[:2] == ["pip", "install"]:
            _check_pip_install(argv, page)
            continue
        if argv[0] in scripts:
            module, rest = importlib.import_module(scripts[argv[0]].split(":")[0]), argv[1:]
        else:
            script = next((a for a in argv if a.endswith(".py")), None)
            assert script, f"{page}: {argv}: no tool"
            if script.startswith("$"):  # detectron2's own tools, in the environment's share/detectron2/tools
                assert script.endswith("/lazyconfig_train_net.py"), script
                continue
            assert script.startswith("tools/") and (REPO / script).is_file(), f"{page}: {script}"
            module, rest = _tool_module(Path(script).stem), argv[argv.index(script) + 1:]
        if not any(TEMPLATE.match(a) for a in rest):
            _parse_with(module, rest)
