"""tools/with_env.sh's checks before it builds anything: a missing or unsupported interpreter is named with the
fix, and a second first run waits for the one holding the environment's lock. (The full build is what every
other test runs in.)"""
import os
import stat
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def with_env(tmp_path, python, *args, timeout=60):
    env = {**os.environ, "SSN_PLUGINS_PYTHON": str(python), "SSN_PLUGINS_CACHE": str(tmp_path / "cache")}
    return subprocess.run(["bash", str(REPO / "tools" / "with_env.sh"), *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


def fake_python(tmp_path, version: str) -> Path:
    """An "interpreter" that reports ``version`` and succeeds at everything else (it builds nothing)."""
    path = tmp_path / f"python{version}"
    path.write_text(f'#!/bin/sh\ncase "$2" in *version_info*) echo {version};; esac\nexit 0\n')
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def test_a_missing_interpreter_is_named_before_anything_is_created(tmp_path):
    result = with_env(tmp_path, "python9.9", "true")
    assert result.returncode == 2
    assert "no 'python9.9' on PATH" in result.stderr and "SSN_PLUGINS_PYTHON" in result.stderr
    assert not (tmp_path / "cache").exists()


def test_an_unsupported_interpreter_is_refused(tmp_path):
    result = with_env(tmp_path, fake_python(tmp_path, "3.8.10"), "true")
    assert result.returncode == 2 and "is Python 3.8.10" in result.stderr and "needs 3.11" in result.stderr
    assert not (tmp_path / "cache").exists()


def test_a_second_first_run_waits_for_the_lock(tmp_path):
    python = fake_python(tmp_path, "3.11.7")
    first = with_env(tmp_path, python, "true")  # the fake interpreter builds nothing: the build fails ...
    assert first.returncode != 0 and "creating" in first.stderr
    (lock,) = (tmp_path / "cache").glob("venv-*.lock")  # ... after taking the environment's lock
    holder = subprocess.Popen(["flock", str(lock), "sleep", "3"])
    try:
        time.sleep(0.5)
        start = time.monotonic()
        second = with_env(tmp_path, python, "true")
        waited = time.monotonic() - start
    finally:
        holder.wait()
    assert "another run is building" in second.stderr and waited > 2
    assert second.stderr.index("another run is building") < second.stderr.index("creating")


def test_the_environment_key_follows_what_is_installed_not_the_comments(tmp_path):
    """Rewording or adding a comment in the recipe, stack.txt or pyproject.toml reuses the environment; a changed
    pin, recipe line or extra builds a new one (``--print-env`` names it without building anything)."""
    import shutil
    clone = tmp_path / "clone"
    for name in ("tools/with_env.sh", "requirements/stack.txt", "pyproject.toml"):
        (clone / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, clone / name)
    python = fake_python(tmp_path, "3.11.7")

    def key():
        env = {**os.environ, "SSN_PLUGINS_PYTHON": str(python), "SSN_PLUGINS_CACHE": str(tmp_path / "cache")}
        result = subprocess.run(["bash", str(clone / "tools/with_env.sh"), "--print-env"], env=env,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        return Path(result.stdout.strip()).name

    def edit(name, old, new):
        path = clone / name
        assert old in path.read_text(), (name, old)
        path.write_text(path.read_text().replace(old, new, 1))

    first = key()
    assert first.startswith("venv-") and not (tmp_path / "cache").exists()  # nothing built, nothing created
    edit("tools/with_env.sh", "# torch first: mmcv's build compiles against its headers",
         "# torch goes first, since mmcv's build compiles against its headers\n  # (a second comment line)")
    edit("tools/with_env.sh", 'MMCV_VERSION=2.1.0', 'MMCV_VERSION=2.1.0  # the last release for mmengine 0.10')
    edit("requirements/stack.txt", "torchvision==0.29.1", "torchvision==0.29.1  # torch's twin\n# a note")
    edit("pyproject.toml", "timm = [", "# the timm adapter\ntimm = [")
    assert key() == first
    for name, old, new in (("tools/with_env.sh", "MIM_VERSION=0.3.9", "MIM_VERSION=0.3.10"),
                           ("requirements/stack.txt", "timm==1.0.31", "timm==1.0.32"),
                           ("pyproject.toml", '"tifffile",', '"tifffile", "rich",')):
        edit(name, old, new)
        changed = key()
        assert changed != first, (name, old)
        first = changed
