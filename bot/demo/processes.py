"""Child processes the demo owns: started with their output in a log, bound to the demo's life,
recorded in pid files, stopped by their own pid; and who holds a port the demo wants.

Children die with the demo even when it cannot stop them itself (SIGKILL, a crash, the terminal
closed mid-way). On Linux each child asks the kernel for SIGTERM when its parent dies
(PR_SET_PDEATHSIG), set by a few lines of Python that the child runs before it becomes the real
command (exec keeps the setting). Why this way:

- not through Popen's preexec_fn: Python code between fork and exec can deadlock on a lock that
  another thread held at the fork, and the demo has threads (asyncio.to_thread, the chat's
  stdin reader);
- not through a wrapper process that watches a pipe and stays between the demo and the child:
  one more interpreter per child, signals to forward, and the pid to stop is no longer the
  server's;
- the kernel's "parent" is the thread that forked, not the process: a child forked from an
  asyncio.to_thread worker would get SIGTERM whenever that worker thread ends. Children are
  therefore forked from the main thread only (OwnedProcess refuses any other); the waits for
  them to answer run in worker threads, which is harmless.

The pid files (pids/NAME.pid: the pid, then the command and the process's start time as JSON)
let a later run recognise its own leftovers, should one survive anyway (a child that ignores
SIGTERM, a system without PR_SET_PDEATHSIG), and stop them instead of failing on a taken port.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
# Runs in the child with -I -S (no site, no environment): only ctypes and os, in milliseconds.
# The parent's pid, checked after prctl, catches a parent that died before the call.
BIND_TO_PARENT = (
    "import ctypes, os, signal, sys\n"
    "if ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM) != 0:\n"
    "    sys.exit('lucie-bot demo: prctl(PR_SET_PDEATHSIG) failed')\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit(0)\n"
    "os.execvp(sys.argv[2], sys.argv[2:])\n"
)
STOP_TIMEOUT_S = 30


def _binds_to_parent() -> bool:
    return sys.platform.startswith("linux")


class OwnedProcess:
    def __init__(self, command: list[str], log: Path, cwd: Path, pid_file: Path | None = None):
        if _binds_to_parent() and threading.current_thread() is not threading.main_thread():
            # see the module's docstring: the child would die with this thread
            raise RuntimeError("demo children are started from the main thread")
        self.command = command
        self.log = log
        self.pid_file = pid_file
        launch = command
        if _binds_to_parent():
            launch = [sys.executable, "-I", "-S", "-c", BIND_TO_PARENT, str(os.getpid()), *command]
        with open(log, "ab") as output:
            # its own session: Ctrl-C in the terminal reaches the demo, which stops the children
            # in order (the bot before the servers it uses)
            self.process = subprocess.Popen(
                launch, cwd=cwd, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
            )
        if pid_file is not None:
            write_pid_file(pid_file, self.process.pid, command)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it lingers (blocking: run it in a worker thread)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self.pid_file is not None:
            self.pid_file.unlink(missing_ok=True)


def start_time(pid: int) -> int | None:
    """When the process started, in clock ticks since boot (field 22 of /proc/PID/stat): with
    the pid, it names one process for good, where a pid alone is reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z" and _threads(pid) <= 1:
        # a zombie has ended, only its parent has not collected it yet; but a zombie leader
        # whose other threads are still exiting still holds its files, listening sockets too
        return None
    return int(fields[19])


def _threads(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return 0


def command_line(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0")[:-1]]


def write_pid_file(path: Path, pid: int, command: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    record = {"command": command, "start_time": start_time(pid)}
    path.write_text(f"{pid}\n{json.dumps(record)}\n")


def read_pid_file(path: Path) -> tuple[int, list[str], int | None] | None:
    try:
        pid_line, record_line = path.read_text().splitlines()[:2]
        record = json.loads(record_line)
        return int(pid_line), list(record["command"]), record.get("start_time")
    except (OSError, ValueError, KeyError, TypeError):
        return None


def stop_leftovers(pids: Path) -> list[str]:
    """Stop the children a dead run left behind: a pid file whose process still runs the very
    command it records, started when it records. Others (the process ended, or its pid now
    names another process) are stale files, removed. Says what it stopped."""
    stopped = []
    for path in sorted(pids.glob("*.pid")) if pids.is_dir() else []:
        record = read_pid_file(path)
        if record is not None and _ours_still_running(*record) and _terminate(record[0], record[2]):
            stopped.append(
                f"stopped the {path.stem} left running by an earlier run (pid {record[0]})"
            )
        path.unlink(missing_ok=True)
    return stopped


def _ours_still_running(pid: int, command: list[str], started: int | None) -> bool:
    return started is not None and start_time(pid) == started and command_line(pid) == command


def _terminate(pid: int, started: int | None) -> bool:
    """SIGTERM, then SIGKILL; a process that is not the demo's child is polled, not waited.
    False when it may not be signalled (another user's): the port check then names it."""
    for signum, patience in ((signal.SIGTERM, STOP_TIMEOUT_S), (signal.SIGKILL, 10)):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        deadline = time.monotonic() + patience
        while time.monotonic() < deadline:
            if start_time(pid) != started:  # gone (or a zombie: its listening sockets are shut)
                return True
            time.sleep(0.1)
    return start_time(pid) != started


def hold_folder(folder: Path) -> IO[str] | None:
    """An exclusive lock on the folder for as long as the returned file stays open (the kernel
    drops it when this process ends, however it ends); None when another live run holds it,
    whose pid is then in folder/demo.lock."""
    handle = open(folder / "demo.lock", "a+", encoding="utf-8")  # noqa: SIM115 (held open)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    handle.truncate(0)
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def folder_holder(folder: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int((folder / "demo.lock").read_text().split()[0])
    return None


def port_owner(port: int) -> tuple[int, list[str]] | None:
    """The process listening on a TCP port of this network namespace, with its command line:
    the socket's inode from /proc/net/tcp{,6}, then the process holding it among /proc/*/fd.
    None when unknown (another user's process, which this one may not look into)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                    inodes.add(f"socket:[{inode}]")
    if not inodes:
        return None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (entry / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in inodes:
                        pid = int(entry.name)
                        return pid, command_line(pid) or []
    return None
