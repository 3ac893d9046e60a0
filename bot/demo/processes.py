"""Child processes the demo owns: started with their output in a log, stopped by their own pid."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path


class OwnedProcess:
    def __init__(self, command: list[str], log: Path, cwd: Path) -> None:
        self.log = log
        with open(log, "ab") as output:
            self.process = subprocess.Popen(
                command, cwd=cwd, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
            )

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it lingers (blocking: run it in a worker thread)."""
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
