"""Promises about the project itself: lint-clean, valid compose file, README opening."""

from __future__ import annotations

import os
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


def test_compose_files_describe_the_stack_and_the_existing_servers_variant():
    full = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert set(full["services"]) == {"synapse", "vllm", "bot"}
    bot = full["services"]["bot"]
    assert bot["build"] == "." and (ROOT / "Dockerfile").is_file()
    assert "./config:/config:ro" in bot["volumes"]
    assert bot["environment"]["LUCIE_BOT_LLM__BASE_URL"] == "http://vllm:8000/v1"
    assert "OpenLLM-France/Lucie-7B-Instruct" in full["services"]["vllm"]["command"]
    gpu = full["services"]["vllm"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"]
    synapse_config = yaml.safe_load((ROOT / "config/synapse/homeserver.yaml").read_text())
    assert synapse_config["listeners"][0]["port"] == 8008
    assert set(full["volumes"]) == {"synapse-data", "huggingface-cache", "lucie-bot-data"}
    existing = yaml.safe_load((ROOT / "docker-compose.existing.yml").read_text())
    assert set(existing["services"]) == {"bot"}
    assert "LUCIE_BOT_MATRIX__HOMESERVER" in existing["services"]["bot"]["environment"]
    if shutil.which("docker") and _succeeds("docker", "compose", "version"):
        assert _succeeds("docker", "compose", "config", "-q")
        env = {"LUCIE_BOT_MATRIX__HOMESERVER": "https://h", "LUCIE_BOT_MATRIX__USER_ID": "@b:h",
               "LUCIE_BOT_LLM__BASE_URL": "http://m/v1"}  # fmt: skip
        assert _succeeds("docker", "compose", "-f", "docker-compose.existing.yml", "config",
                         "-q", env=env)  # fmt: skip


def _succeeds(*command: str, env: dict[str, str] | None = None) -> bool:
    environment = {**os.environ, **(env or {})}
    result = subprocess.run(command, cwd=ROOT, capture_output=True, timeout=60, env=environment)
    return result.returncode == 0


def test_readme_opens_with_the_two_setup_commands_and_ci_runs_the_second():
    blocks = (ROOT / "README.md").read_text().split("```")
    commands = [line for line in blocks[1].splitlines()[1:] if line and not line.startswith("#")]
    assert len(commands) == 2
    run, test = commands
    assert run.endswith("lucie-bot demo")
    assert test.endswith("python -m pytest --durations=15")  # the suite's slowest tests shown
    assert test in (ROOT / ".ci" / "run").read_text()
