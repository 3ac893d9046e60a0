"""A real headless browser (Debian's Chromium) for pages the bot writes: its rendered DOM and a
screenshot, every wait bounded, and the browser killed by its own process group."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
RUN_TIMEOUT_S = 120
INSTALL_TIMEOUT_S = 1200
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # any request the page would make goes to a closed port: a page that needs the network
    # shows it, here, as a missing part
    "--proxy-server=127.0.0.1:9",
    "--proxy-bypass-list=<-loopback>",
]


def find() -> str | None:
    found = shutil.which("chromium")
    if found:
        return found
    return CHROMIUM if Path(CHROMIUM).is_file() else None


def install() -> str:
    """apt-get install chromium (root only); what went wrong when it did not work, else ""."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, env=env
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"{' '.join(command)}: {exc}"
        if done.returncode != 0:
            return f"{' '.join(command)} failed: {done.stderr[-500:]}"
    return ""


def run(binary: str, *args: str, timeout: float = RUN_TIMEOUT_S) -> str:
    """Chromium's standard output; a fresh profile each time, and every process it started
    killed at the end, on time or not."""
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        command = [binary, *FLAGS, f"--user-data-dir={profile}", *args]
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own group: its helpers go with it
        )
        try:
            out, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(process.pid)
            process.communicate(timeout=10)
            raise
        finally:
            _kill_group(process.pid)
        if process.returncode != 0:
            raise RuntimeError(f"chromium exited with {process.returncode}: {err[-2000:]}")
        return out


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # already gone, helpers included
        os.killpg(pid, signal.SIGKILL)


def dump_dom(binary: str, page: Path) -> str:
    return run(binary, "--dump-dom", page.resolve().as_uri())


def screenshot(binary: str, page: Path, png: Path, width: int = 1200, height: int = 2400) -> None:
    run(binary, f"--screenshot={png}", f"--window-size={width},{height}", page.resolve().as_uri())
    if not png.is_file():
        raise RuntimeError(f"chromium wrote no screenshot at {png}")


def png_colours(png: Path) -> int:
    """Distinct colours in a PNG: a blank or failed render has one or two."""
    import numpy as np
    from matplotlib import image

    pixels = image.imread(png)
    flat = (pixels.reshape(-1, pixels.shape[-1]) * 255).astype(np.uint8)
    return len(np.unique(flat, axis=0))
