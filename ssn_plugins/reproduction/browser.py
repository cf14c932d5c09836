"""Headless Chromium (Debian's ``chromium``) to load the leaderboard's HTML page and photograph it."""
import shutil
import subprocess
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
         "--allow-file-access-from-files"]


def find_browser() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    raise FileNotFoundError("no headless browser found (install Debian's chromium: apt-get install chromium; "
                            "or run the clone's tools/with_env.sh --with-browser as root)")


def dump_dom(page: Path, timeout: float = 120) -> str:
    """The page's DOM after it loaded and its inline script ran."""
    result = subprocess.run([find_browser(), *FLAGS, "--virtual-time-budget=5000", "--dump-dom",
                             Path(page).resolve().as_uri()], capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"chromium failed on {page}: {result.stderr[-2000:]}")
    return result.stdout


def screenshot(page: Path, png: Path, width: int = 1600, height: int = 2200, timeout: float = 120) -> Path:
    result = subprocess.run([find_browser(), *FLAGS, f"--screenshot={Path(png).resolve()}",
                             f"--window-size={width},{height}", Path(page).resolve().as_uri()],
                            capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0 or not Path(png).exists():
        raise RuntimeError(f"chromium could not photograph {page}: {result.stderr[-2000:]}")
    return Path(png)
