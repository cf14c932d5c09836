"""Package-level promises: the core imports no framework, the public API exists."""
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
