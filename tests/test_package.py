"""Package-level promises: the core imports no framework, the public API exists, the built package is complete."""
import subprocess
import sys

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


def test_constructor_conventions():
    for cls in (S.SwitchNorm2d, S.SparseSwitchNorm3d, S.SyncSwitchNorm1d, S.SyncSparseSwitchNorm2d):
        m = cls(16, eps=1e-3, momentum=0.05, using_bn=False, official_compat=False)
        assert m.num_features == 16 and m.eps == 1e-3 and m.momentum == 0.05 and m.candidates == ("IN", "LN")
        assert [n for n, _ in m.named_parameters()] == ["mean_weight", "var_weight", "weight", "bias"]


def test_wheel_and_sdist_carry_the_metadata_and_extras_the_pinned_stack_satisfies(tmp_path):
    """The wheel and sdist build from pyproject.toml alone (a copy of the sources, so the tree stays clean); their
    version is the package's one, the licence ships, and every requirement of every extra holds for the installed
    pinned stack (requirements/stack.txt)."""
    import email.parser
    import importlib.metadata
    import platform
    import shutil
    import tarfile
    import zipfile
    from pathlib import Path

    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet

    repo = Path(__file__).resolve().parents[1]
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(repo / name, source / name)
    shutil.copytree(repo / "ssn_plugins", source / "ssn_plugins", ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run([sys.executable, "-c", "from setuptools import build_meta as b; "
                            "w = b.build_wheel('../dist'); s = b.build_sdist('../dist'); print('BUILT', w, s)"],
                           cwd=source, capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-3000:]
    (line,) = [line for line in built.stdout.splitlines() if line.startswith("BUILT ")]
    wheel_name, sdist_name = line.split()[1:]
    with zipfile.ZipFile(tmp_path / "dist" / wheel_name) as wheel:
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
    with tarfile.open(tmp_path / "dist" / sdist_name) as sdist:
        members = {m.split("/", 1)[1] for m in sdist.getnames() if "/" in m}
    assert {"LICENSE", "pyproject.toml", "README.md", "ssn_plugins/model_zoo.json"} <= members
