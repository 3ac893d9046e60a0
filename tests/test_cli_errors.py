"""The bot's own errors reach the operator as one line and an exit code: a database newer than
the code, one locked by another process, a file that is no database, prompts missing."""

from __future__ import annotations

import sqlite3

from tests.test_config import run_cli


def config_for(tmp_path, extra: str = "") -> str:
    config = tmp_path / "config.toml"
    config.write_text(
        f"data_dir = '{tmp_path / 'data'}'\n"
        "[matrix]\nhomeserver = 'http://127.0.0.1:9'\nuser_id = '@a:b'\npassword = 'p'\n"
        "[ops]\nenabled = false\n" + extra
    )
    (tmp_path / "data").mkdir(mode=0o700)
    return str(config)


def one_line(result) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_a_newer_schema_is_one_line(tmp_path):
    config = config_for(tmp_path)
    with sqlite3.connect(tmp_path / "data" / "lucie-bot.sqlite3") as conn:
        conn.execute("PRAGMA user_version = 99")
    result = run_cli("run", "--config", config)
    assert result.returncode == 1
    assert "newer than this bot knows" in one_line(result)


def test_a_database_locked_at_start_is_one_line_and_worth_retrying(tmp_path):
    config = config_for(tmp_path)
    holder = sqlite3.connect(tmp_path / "data" / "lucie-bot.sqlite3", isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        result = run_cli("run", "--config", config)
    finally:
        holder.close()
    assert result.returncode == 75  # EX_TEMPFAIL: a supervisor may start it again
    assert "database is locked" in one_line(result)


def test_a_file_that_is_no_database_is_one_line(tmp_path):
    config = config_for(tmp_path)
    (tmp_path / "data" / "lucie-bot.sqlite3").write_bytes(b"not a database at all" * 100)
    result = run_cli("run", "--config", config)
    assert result.returncode == 1
    assert "cannot be used as the bot's database" in one_line(result)


def test_missing_prompt_files_are_one_line(tmp_path):
    empty = tmp_path / "prompts"
    empty.mkdir()
    result = run_cli("run", "--config", config_for(tmp_path, f"[bot]\nprompts_dir = '{empty}'\n"))
    assert result.returncode == 2
    assert "missing prompt file" in one_line(result)
