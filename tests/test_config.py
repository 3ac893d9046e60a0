"""Configuration: TOML plus LUCIE_BOT_ variables; a bad one stops start-up with one clear line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.config import ConfigError, load_settings
from bot.texts import PromptTexts

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "config" / "example.toml"


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LUCIE_BOT_")}
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**clean, **(env or {})},
        timeout=60,
    )


def test_example_config_loads_with_documented_defaults(monkeypatch):
    for name in list(os.environ):
        if name.startswith("LUCIE_BOT_"):
            monkeypatch.delenv(name)
    settings = load_settings(EXAMPLE)
    assert settings.llm.base_url == "http://127.0.0.1:8000/v1"
    assert settings.llm.model == "OpenLLM-France/Lucie-7B-Instruct"
    assert settings.bot.command_prefix == "!lucie"
    assert settings.bot.catch_up_minutes == 10
    assert "@*:agent.*.tchap.gouv.fr" in settings.matrix.allowed_inviters
    prompts = PromptTexts(settings.bot.prompts_dir)
    assert "aucune garantie" in prompts.join_notice("fr", "!lucie")
    assert "no guarantee" in prompts.join_notice("en", "!lucie")
    assert settings.data.collection == "opt_in" and settings.data.licence == "CC-BY-4.0"
    assert settings.data.reason_emojis["✂️"] == "too_long" and settings.data.scrub
    assert "CC-BY-4.0" in prompts.consent_notice("fr", "!lucie", settings.data.licence)
    assert "!lucie consent no" in prompts.consent_notice("en", "!lucie", "CC0-1.0")


def test_environment_overrides_the_file_with_nested_names(monkeypatch):
    monkeypatch.setenv("LUCIE_BOT_MATRIX__HOMESERVER", "https://matrix.agent.example.tchap.gouv.fr")
    monkeypatch.setenv("LUCIE_BOT_MATRIX__USER_ID", "@lucie:agent.example.tchap.gouv.fr")
    monkeypatch.setenv("LUCIE_BOT_MATRIX__PASSWORD", "pw-9f3k2")
    monkeypatch.setenv("LUCIE_BOT_LLM__BASE_URL", "http://vllm:8000/v1/")
    monkeypatch.setenv("LUCIE_BOT_LLM__MODEL", "other-model")
    monkeypatch.setenv("LUCIE_BOT_LLM__API_KEY", "sk-test")
    monkeypatch.setenv("LUCIE_BOT_DATA_DIR", "/var/lib/lucie-bot")
    monkeypatch.setenv("LUCIE_BOT_BOT__OPERATORS", '["@ops:example.org"]')
    settings = load_settings(EXAMPLE)
    assert settings.matrix.homeserver == "https://matrix.agent.example.tchap.gouv.fr"
    assert settings.matrix.user_id == "@lucie:agent.example.tchap.gouv.fr"
    assert settings.matrix.password.get_secret_value() == "pw-9f3k2"
    assert settings.llm.base_url == "http://vllm:8000/v1"
    assert settings.llm.model == "other-model"
    assert settings.llm.api_key.get_secret_value() == "sk-test"
    assert settings.data_dir == Path("/var/lib/lucie-bot")
    assert settings.bot.operators == ["@ops:example.org"]
    assert "pw-9f3k2" not in repr(settings) and "sk-test" not in repr(settings)


def test_environment_alone_is_enough(monkeypatch):
    monkeypatch.setenv("LUCIE_BOT_MATRIX__HOMESERVER", "http://127.0.0.1:8008")
    monkeypatch.setenv("LUCIE_BOT_MATRIX__USER_ID", "@lucie:localhost")
    monkeypatch.setenv("LUCIE_BOT_MATRIX__ACCESS_TOKEN", "syt_token")
    monkeypatch.setenv("LUCIE_BOT_MATRIX__DEVICE_ID", "DEVICE")
    settings = load_settings(None)
    assert settings.matrix.device_id == "DEVICE"


@pytest.mark.parametrize(
    ("toml", "env", "expected"),
    [
        ("[llm]\nmodel = 'x'\n", {}, "invalid setting matrix: Field required"),
        (
            "[matrix]\nhomeserver = 'matrix.org'\nuser_id = '@a:b'\npassword = 'p'\n",
            {},
            "invalid setting matrix.homeserver: must start with http:// or https://",
        ),
        (
            "[matrix]\nhomeserver = 'http://h'\nuser_id = 'lucie'\npassword = 'p'\n",
            {},
            "invalid setting matrix.user_id: must be a full Matrix id",
        ),
        (
            "[matrix]\nhomeserver = 'http://h'\nuser_id = '@a:b'\n",
            {},
            "invalid setting matrix: set matrix.password, or matrix.access_token",
        ),
        (
            "[matrix]\nhomeserver = 'http://h'\nuser_id = '@a:b'\npassword = 'p'\n",
            {"LUCIE_BOT_LLM__TEMPERATURE": "hot"},
            "invalid setting llm.temperature: Input should be a valid number",
        ),
        (
            "[matrix]\nhomeserver = 'http://h'\nuser_id = '@a:b'\npassword = 'p'\n"
            "[bot]\nlang = 1\n",
            {},
            "unknown setting bot.lang: did you mean bot.default_lang? (config file or environment)",
        ),
        ("[matrix\n", {}, "is not valid TOML"),
        (
            "[matrix]\nhomeserver = 'http://h'\nuser_id = '@a:b'\npassword = 'p'\n"
            "[[guard.rules]]\ncategory = 'S2'\npatterns = ['(unclosed']\n",
            {},
            "invalid setting guard.rules.patterns: pattern '(unclosed' is not valid RE2",
        ),
        (
            "[matrix]\nhomeserver = 'http://h'\nuser_id = '@a:b'\npassword = 'p'\n"
            "[guard]\nbackends = ['rules', 'llama_guard']\n",
            {},
            "invalid setting guard: backend llama_guard needs guard.llama_guard.url",
        ),
        (
            "[matrix]\nhomeserver = 'http://h'\nuser_id = '@a:b'\npassword = 'p'\n",
            {"LUCIE_BOT_GUARD__ACTIONS": '{"S1": "shrug"}'},
            "invalid setting guard.actions.S1: Input should be 'refuse', 'log' or 'allow'",
        ),
    ],
)
def test_bad_config_fails_with_one_clear_line(tmp_path, toml, env, expected):
    config = tmp_path / "bad.toml"
    config.write_text(toml)
    result = run_cli("run", "--config", str(config), env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]
    assert "Traceback" not in result.stderr


def test_missing_config_file_is_named(tmp_path):
    result = run_cli("run", "--config", str(tmp_path / "nope.toml"))
    assert result.returncode == 2
    assert result.stderr.strip() == f"lucie-bot: config file not found: {tmp_path / 'nope.toml'}"


def test_check_config_accepts_the_example():
    result = run_cli("check-config", "--config", str(EXAMPLE))
    assert result.returncode == 0, result.stderr
    assert "configuration ok" in result.stdout


def test_config_error_type_is_raised_in_process(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[matrix]\nhomeserver = 'http://h'\n")
    with pytest.raises(ConfigError, match=r"matrix\.user_id"):
        load_settings(bad)


MATRIX = "[matrix]\nhomeserver = 'http://h'\nuser_id = '@a:b'\npassword = 'p'\n"
LONG_SECRET = "k" * 32


def test_empty_environment_variables_never_blank_the_file(monkeypatch, tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(MATRIX + f"[data]\npseudonym_secret = '{LONG_SECRET}'\n")
    # what docker compose passes for ${VAR:-} when VAR is unset
    monkeypatch.setenv("LUCIE_BOT_DATA__PSEUDONYM_SECRET", "")
    monkeypatch.setenv("LUCIE_BOT_MATRIX__PASSWORD", "")
    settings = load_settings(config)
    assert settings.data.pseudonym_secret.get_secret_value() == LONG_SECRET
    assert settings.matrix.password.get_secret_value() == "p"


@pytest.mark.parametrize(
    ("toml_secret", "env"),
    [
        (None, {}),  # never set
        ("", {}),
        ("test-pseudonym-secret", {}),  # 21 characters
        (" " * 40, {}),  # blank is no secret
        ("k" * 31, {}),
        (None, {"LUCIE_BOT_DATA__PSEUDONYM_SECRET": "short"}),
    ],
)
def test_export_refuses_a_missing_or_short_pseudonym_secret(tmp_path, toml_secret, env):
    data = f"[data]\npseudonym_secret = '{toml_secret}'\n" if toml_secret is not None else ""
    config = tmp_path / "config.toml"
    config.write_text(f"data_dir = '{tmp_path}'\n" + MATRIX + data)
    out = tmp_path / "out.jsonl"
    result = run_cli(
        "export", "--config", str(config), "--format", "sft", "--out", str(out), env=env
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "data.pseudonym_secret" in lines[0] and "at least 32 characters" in lines[0]
    assert not out.exists()


def test_export_takes_the_files_secret_when_compose_passes_an_empty_variable(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(
        f"data_dir = '{tmp_path}'\n" + MATRIX + f"[data]\npseudonym_secret = '{LONG_SECRET}'\n"
    )
    out = tmp_path / "out.jsonl"
    result = run_cli(
        "export", "--config", str(config), "--format", "sft", "--out", str(out),
        env={"LUCIE_BOT_DATA__PSEUDONYM_SECRET": ""},
    )  # fmt: skip
    assert result.returncode == 2
    # past the secret: the next check is the database, absent from this empty folder
    assert (
        result.stderr.strip() == f"lucie-bot: no database at {tmp_path}/lucie-bot.sqlite3:"
        " check data_dir"
    )
