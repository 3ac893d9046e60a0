"""What a newcomer meets first: a typo'd key or URL named in one line by `check-config`, a
homeserver that cannot be reached named in the log, a bare `lucie-bot` showing its usage."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.support.synapse import free_port
from tests.test_config import ROOT, run_cli

ACCOUNT = "user_id = '@lucie:example.org'\npassword = 'p'\n"


def check(tmp_path, text: str) -> subprocess.CompletedProcess:
    config = tmp_path / "config.toml"
    config.write_text(f"data_dir = '{tmp_path / 'data'}'\n" + text)
    return run_cli("check-config", "--config", str(config))


def one_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("homeserver", "why"),
    [
        ("https://", "has no host name"),
        ("https://matrix example.org", "contains a space"),
        ("https://:8448", "has no host name"),
        ("matrix.example.org", "must start with http:// or https://"),
        ("https://matrix.example.org:99999", "invalid port"),
    ],
)
def test_a_homeserver_url_without_a_host_or_with_a_space_is_refused(tmp_path, homeserver, why):
    line = one_line(check(tmp_path, f"[matrix]\nhomeserver = '{homeserver}'\n{ACCOUNT}"))
    assert line.startswith("lucie-bot: invalid setting matrix.homeserver: ")
    assert why in line


def test_every_url_setting_is_checked_the_same_way(tmp_path):
    text = f"[matrix]\nhomeserver = 'https://m.example.org'\n{ACCOUNT}"
    assert "llm.base_urls" in one_line(check(tmp_path, text + "[llm]\nbase_urls = ['http://']\n"))
    line = one_line(check(tmp_path, text + "[rag]\nembeddings_url = 'http://a b/v1'\n"))
    assert "rag.embeddings_url" in line


def test_a_valid_url_passes(tmp_path):
    result = check(tmp_path, f"[matrix]\nhomeserver = 'https://[::1]:8448/'\n{ACCOUNT}")
    assert result.returncode == 0, result.stderr
    assert "on https://[::1]:8448" in result.stdout


def test_an_unknown_key_is_named_first_with_the_closest_valid_name(tmp_path):
    text = f"[matrix]\nhomeserver = 'https://m.example.org'\n{ACCOUNT}[llm]\nbase_ulr = 'x'\n"
    # the second mistake is a wrong value; the typo, which explains it, comes first
    line = one_line(check(tmp_path, text + "max_tokens = 'many'\n"))
    assert line == (
        "lucie-bot: unknown setting llm.base_ulr: did you mean llm.base_url?"
        " (config file or environment) (and 1 more)"
    )


def test_a_key_in_the_wrong_table_points_to_the_right_one(tmp_path):
    text = f"[matrix]\nhomeserver = 'https://m.example.org'\n{ACCOUNT}max_tokens = 100\n"
    assert "did you mean llm.max_tokens?" in one_line(check(tmp_path, text))
    assert one_line(check(tmp_path, text.replace("max_tokens", "zzz"))).endswith(
        "unknown setting matrix.zzz (config file or environment)"
    )


def test_a_bare_command_prints_its_usage():
    result = run_cli()
    assert result.returncode == 2
    assert result.stdout.startswith("usage: lucie-bot")
    for command in ("run", "demo", "export", "check-config"):
        assert f"\n    {command} " in result.stdout


def test_an_unreachable_homeserver_is_named_and_ctrl_c_is_quiet(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    config = tmp_path / "config.toml"
    config.write_text(
        f"data_dir = '{tmp_path / 'data'}'\n[matrix]\nhomeserver = '{url}'\n{ACCOUNT}"
        "max_backoff_s = 1\n[ops]\nenabled = false\n"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LUCIE_BOT_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "bot", "run", "--config", str(config)],
        cwd=ROOT, env=clean, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        assert process.stderr is not None
        deadline, seen = time.monotonic() + 60, ""
        while "unreachable" not in seen and time.monotonic() < deadline:
            seen += process.stderr.readline()
        assert f"homeserver {url} unreachable" in seen
        process.send_signal(signal.SIGINT)
        _, rest = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    assert "Traceback" not in rest and "Unclosed" not in rest, rest
    assert (
        rest.strip().splitlines()[-1] == "lucie-bot: stopped before the homeserver could be reached"
    )


def test_ctrl_c_in_a_command_is_one_line(monkeypatch, capsys):
    import bot.cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(bot.cli, "_dispatch", interrupted)
    assert bot.cli.main(["check-config"]) == 130
    assert capsys.readouterr().err == "lucie-bot: interrupted\n"
