"""Package-level promises: the core imports no framework, the import graph runs one way, the public API exists,
the built package is complete."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, build_distributions

import ssn_plugins as S

PUBLIC = [
    "sparsemax", "sparsestmax", "SwitchNorm1d", "SwitchNorm2d", "SwitchNorm3d", "SparseSwitchNorm1d",
    "SparseSwitchNorm2d", "SparseSwitchNorm3d", "SyncSwitchNorm", "SyncSparseSwitchNorm", "SyncSwitchNorm2d",
    "SyncSparseSwitchNorm3d", "ChannelEquilibrium", "set_radius", "RadiusScheduler", "recompute_batch_statistics",
    "convert_norm", "convert_sync", "param_groups", "clip_ratio_grad_norm", "describe_selection",
]


def test_public_api():
    missing = [name for name in PUBLIC if not hasattr(S, name)]
    assert not missing


def test_core_imports_only_torch():
    code = ("import sys, ssn_plugins; frameworks = ('detectron2', 'mmengine', 'mmcv', 'mmseg', 'mmdet', 'mmaction', "
            "'timm'); bad = [m for m in frameworks if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


#: the package's tiers, bottom up: each may import its own and lower tiers only
TIERS = {"core": 0, "adapter": 1, "reproduction": 2, "cli": 3}
ADAPTERS = ("detectron2", "openmmlab", "timm")


def _tier(module: str) -> str:
    part = module.split(".")[1] if "." in module else ""
    return "adapter" if part in ADAPTERS else part if part in ("reproduction", "cli") else "core"


def import_graph(root: Path):
    """``{module: modules it imports}`` over the package in ``root``, function-level imports included (a lazy
    import is still an arrow a reader follows); a module's import of its own ancestors aside."""
    modules = {}
    for path in root.rglob("*.py"):
        if "configs" in path.relative_to(root).parts:
            continue
        name = ".".join(path.relative_to(root.parent).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = path
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                imported.update([target] + [f"{target}.{alias.name}" for alias in node.names])
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
        graph[name] = {t for t in imported if t in modules and t != name and not name.startswith(t + ".")}
    return graph


def upward_arrows(graph):
    """Imports of a higher tier, and of another adapter."""
    return sorted(f"{a} -> {b}" for a, targets in graph.items() for b in targets
                  if TIERS[_tier(b)] > TIERS[_tier(a)]
                  or (_tier(a) == _tier(b) == "adapter" and a.split(".")[1] != b.split(".")[1]))


def import_cycles(graph):
    """Every circle a depth-first search meets (a module reached again while still on its path)."""
    state, cycles = {}, []

    def visit(module, path):
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                cycles.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target, path + [target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return cycles


def test_the_import_graph_has_no_cycle_and_no_upward_arrow():
    """core <- adapters (detectron2, openmmlab, timm; none imports another) <- reproduction toolkit <- cli: the
    library never imports the toolkit, and no module reaches itself through others (ResNet -> model zoo ->
    converters -> ResNet was such a circle)."""
    graph = import_graph(Path(S.__file__).parent)
    assert len(graph) > 80 and "ssn_plugins.checkpoints.published" in graph  # the walk found the package
    assert not upward_arrows(graph)
    assert not import_cycles(graph)


def test_the_graph_check_finds_a_lazy_upward_import_and_a_circle(tmp_path):
    """The check above can fail: a function-level import of the toolkit from the core, closing a circle."""
    package = tmp_path / "ssn_plugins"
    (package / "reproduction").mkdir(parents=True)
    (package / "__init__.py").write_text("from . import models\n")
    (package / "models.py").write_text("def from_pretrained():\n    from .reproduction import zoo\n")
    (package / "reproduction" / "__init__.py").write_text("")
    (package / "reproduction" / "zoo.py").write_text("from ..models import from_pretrained\n")
    graph = import_graph(package)
    assert "ssn_plugins.models -> ssn_plugins.reproduction.zoo" in upward_arrows(graph)
    assert ["ssn_plugins.models", "ssn_plugins.reproduction.zoo", "ssn_plugins.models"] in import_cycles(graph)


def test_constructor_conventions():
    for cls in (S.SwitchNorm2d, S.SparseSwitchNorm3d, S.SyncSwitchNorm1d, S.SyncSparseSwitchNorm2d):
        m = cls(16, eps=1e-3, momentum=0.05, using_bn=False, official_compat=False)
        assert m.num_features == 16 and m.eps == 1e-3 and m.momentum == 0.05 and m.candidates == ("IN", "LN")
        assert [n for n, _ in m.named_parameters()] == ["mean_weight", "var_weight", "weight", "bias"]


@pytest.fixture(scope="module")
def distributions(tmp_path_factory):
    return build_distributions(tmp_path_factory.mktemp("built"))


def test_wheel_and_sdist_carry_the_metadata_and_extras_the_pinned_stack_satisfies(distributions):
    """The wheel and sdist build from pyproject.toml alone; their version is the package's one, the licence ships,
    and every requirement of every extra holds for the installed pinned stack (requirements/stack.txt)."""
    import email.parser
    import importlib.metadata
    import platform
    import tarfile
    import zipfile

    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet

    wheel_path, sdist_path = distributions
    with zipfile.ZipFile(wheel_path) as wheel:
        names = set(wheel.namelist())
        (metadata_file,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = email.parser.Parser().parsestr(wheel.read(metadata_file).decode())
    assert (metadata["Name"], metadata["Version"]) == ("ssn-plugins", S.__version__)
    assert SpecifierSet(metadata["Requires-Python"]).contains(platform.python_version())
    assert metadata["License-Expression"] == "Apache-2.0" and any(n.endswith("licenses/LICENSE") for n in names)
    assert {"ssn_plugins/model_zoo.json", "ssn_plugins/reproduction/paper_figures.yaml"} <= names
    assert set(metadata.get_all("Provides-Extra")) == {"detectron2", "mmseg", "mmdet", "mmaction", "timm", "export",
                                                       "reproduce", "test", "all"}
    unmet = []
    for line in metadata.get_all("Requires-Dist"):
        requirement = Requirement(line)
        if requirement.name == "ssn-plugins":  # [all] names the other extras
            continue
        installed = importlib.metadata.version(requirement.name)
        if not requirement.specifier.contains(installed, prereleases=True):
            unmet.append(f"{line}: installed {installed}")
    assert not unmet, unmet
    with tarfile.open(sdist_path) as sdist:
        members = {m.split("/", 1)[1] for m in sdist.getnames() if "/" in m}
    assert {"LICENSE", "pyproject.toml", "README.md", "ssn_plugins/model_zoo.json"} <= members


def test_the_wheel_ships_every_config_and_a_console_script_per_tool(distributions):
    """Every config of the clone's configs/ is in the wheel (and nothing of it as a module), and each console
    script names a module's ``main`` that exists."""
    for framework in ("detectron2", "mmengine"):  # importing every tool needs the frameworks they drive
        pytest.importorskip(framework)
    import configparser
    import importlib
    import zipfile

    from ssn_plugins.config_files import CONFIG_ROOT, shipped_configs

    with zipfile.ZipFile(distributions[0]) as wheel:
        names = set(wheel.namelist())
        (entry_file,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        entries = configparser.ConfigParser()
        entries.read_string(wheel.read(entry_file).decode())
    clone = sorted(p.relative_to(REPO / "configs").as_posix() for p in (REPO / "configs").rglob("*")
                   if p.suffix in (".py", ".yaml") and p.name != "metafile.yaml" and "__pycache__" not in p.parts)
    assert (REPO / "configs").resolve() == CONFIG_ROOT and shipped_configs() == clone and len(clone) > 60
    assert {f"ssn_plugins/configs/{name}" for name in clone} <= names
    assert {f"ssn_plugins/configs/{p}" for p in ("mmseg/deeplabv3/README.md", "mmdet/mask_rcnn/metafile.yaml")} <= names
    scripts = dict(entries["console_scripts"])
    assert {"ssn-train-net", "ssn-mm-train", "ssn-mm-test", "ssn-convert", "ssn-eval-imagenet", "ssn-leaderboard",
            "ssn-reproduce", "ssn-analyze-selection", "ssn-deploy", "ssn-configs"} <= set(scripts)
    for script, target in scripts.items():
        module, function = target.split(":")
        assert callable(getattr(importlib.import_module(module), function)), script
        assert (REPO / "tools" / f"{module.rsplit('.', 1)[1]}.py").exists() or module.startswith(
            ("ssn_plugins.openmmlab.", "ssn_plugins.config_files")), f"{script}: no tools/ wrapper in the clone"
