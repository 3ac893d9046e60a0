"""Promises about the project itself: lint-clean, valid compose file, README opening."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def ruff(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "ruff", *args, "bot", "tests", "bench"]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_ruff_lint_and_format_are_clean():
    lint = ruff("check")
    assert lint.returncode == 0, lint.stdout
    form = ruff("format", "--check")
    assert form.returncode == 0, form.stdout


def test_compose_file_describes_the_bot_service():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    bot = compose["services"]["bot"]
    assert bot["build"] == "." and (ROOT / "Dockerfile").is_file()
    assert "./config:/config:ro" in bot["volumes"]
    assert bot["environment"]["LUCIE_BOT_DATA_DIR"] == "/data"
    if shutil.which("docker") and _succeeds("docker", "compose", "version"):
        assert _succeeds("docker", "compose", "config", "-q")


def _succeeds(*command: str) -> bool:
    result = subprocess.run(command, cwd=ROOT, capture_output=True, timeout=60)
    return result.returncode == 0


def test_readme_opens_with_the_two_setup_commands_and_ci_runs_the_second():
    blocks = (ROOT / "README.md").read_text().split("```")
    commands = [line for line in blocks[1].splitlines()[1:] if line and not line.startswith("#")]
    assert len(commands) == 2
    run, test = commands
    assert "lucie-bot run --config" in run
    assert "pytest" in test
    assert test in (ROOT / ".ci" / "run").read_text()
