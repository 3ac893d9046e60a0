"""The whole loop through `lucie-bot demo`'s terminal chat, typed into a pseudo-terminal as a
person would, on the real demo stack (Synapse, the small model, the embeddings server, the bot,
an encrypted room): ask, vote, consent, correct, retry, vote again, switch the room's language,
stats; quit; then the export holds the vote, the correction and the regeneration pair, loaded
with Hugging Face `datasets`."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pexpect
import pytest
from datasets import load_dataset

from tests.support.bot_process import ROOT
from tests.support.synapse import free_port
from tests.test_demo import alive, children_of

# the first start makes Synapse's database, starts the model and embeddings servers and
# indexes the guide; an answer of the small model (256 tokens at most) takes seconds on two
# cores, after the retrieval and the prompt's processing
START_S, ANSWER_S, NOTICE_S, STOP_S = 300, 240, 60, 120
# colours and cursor moves (CSI), and hyperlinks or titles (OSC)
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)")
REDRAW = re.compile(r"\x1b\[\d+F\x1b\[J")
CORRECTION = "La bonne réponse : allez voir le musée Carnavalet."


# `lucie-bot export --format hf` writes every format as a config of one dataset folder
class Terminal:
    """The demo in a pseudo-terminal: what it printed, raw and as a person reads it."""

    def __init__(self, child: pexpect.spawn) -> None:
        self.child = child
        self.raw = ""
        self.read_upto = 0  # in the readable text: what the last wait consumed

    @property
    def text(self) -> str:
        return ANSI.sub("", self.raw).replace("\r", "")

    def wait_for(self, pattern: str, within: float) -> re.Match[str]:
        """The first match after what earlier waits consumed; fails with the screen so far."""
        deadline = time.monotonic() + within
        compiled = re.compile(pattern)
        while True:
            found = compiled.search(self.text, self.read_upto)
            if found:
                self.read_upto = found.end()
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"no {pattern!r} within {within} s:\n{self.text[-6000:]}")
            try:
                self.raw += self.child.read_nonblocking(65536, timeout=0.5)
            except pexpect.TIMEOUT:
                pass
            except pexpect.EOF:
                if not compiled.search(self.text, self.read_upto):
                    raise AssertionError(
                        f"ended before {pattern!r}:\n{self.text[-6000:]}"
                    ) from None

    def type(self, line: str) -> None:
        self.child.sendline(line)

    def answer(self, number: int) -> str:
        """Answer [number] once final: its header without the streaming mark, then its text."""
        found = self.wait_for(rf"\nLucie \[{number}\]\n(.+)\n", ANSWER_S)
        return found.group(1).strip()


def spawn_demo(folder: Path) -> pexpect.spawn:
    ports = [free_port() for _ in range(4)]
    options = ["--synapse-port", "--model-port", "--ops-port", "--embeddings-port"]
    args = ["-m", "bot", "demo", "--data", str(folder)]
    for option, port in zip(options, ports, strict=True):
        args += [option, str(port)]
    env = {**os.environ, "TERM": "xterm-256color"}
    env.pop("NO_COLOR", None)
    # its own session (pexpect forks a session leader): its group is its pid
    return pexpect.spawn(
        sys.executable, args, cwd=str(ROOT), env=env, encoding="utf-8", dimensions=(60, 140)
    )


def stop(child: pexpect.spawn, children: dict[int, str]) -> None:
    """Ctrl-C as a person would, then by force: the demo, its group, and each child by pid
    (the demo's children run in their own sessions)."""
    if child.isalive():
        child.kill(signal.SIGINT)
        deadline = time.monotonic() + STOP_S
        while child.isalive() and time.monotonic() < deadline:
            with contextlib.suppress(pexpect.TIMEOUT, pexpect.EOF):
                child.read_nonblocking(65536, timeout=1)
        if child.isalive():
            os.killpg(child.pid, signal.SIGKILL)
    for pid in children:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
    child.close(force=True)


def export(config: Path, fmt: str, out: Path) -> None:
    command = [sys.executable, "-m", "bot", "export", "--config", str(config)]
    done = subprocess.run(
        [*command, "--format", fmt, "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr


def exported_rows(folder: Path, tmp: Path) -> dict[str, list[dict[str, Any]]]:
    """The SFT, KTO and DPO rows, read with the loader trainers use."""
    config = folder / "bot.toml"
    export(config, "hf", tmp / "ds")
    return {
        name: list(load_dataset(str(tmp / "ds"), name, split="train"))
        for name in ("sft", "kto", "dpo")
    }


@pytest.mark.slow
def test_the_whole_loop_through_the_terminal_chat_then_the_export(tmp_path):
    folder = tmp_path / "demo"
    started = time.monotonic()
    child = spawn_demo(folder)
    screen = Terminal(child)
    children: dict[int, str] = {}
    try:
        screen.wait_for(r"Écrivez votre question puis Entrée", START_S)
        children = children_of(child.pid)
        screen.wait_for(r"SmolLM2, 135 millions de paramètres", 5)
        screen.wait_for(r"--model-url http://HÔTE:PORT/v1", 5)
        # the bot joins the encrypted room and says what it is; a question sent before its
        # join would be history to it
        screen.wait_for(r"votre accord, seulement si vous le voulez", NOTICE_S)
        screen.type("Donne-moi cinq idées de sorties à Paris, avec une phrase pour chacune.")
        first_shown = len(screen.raw)
        screen.wait_for(r"\nLucie \[1\] …\n", ANSWER_S)  # shown while it streams
        first = screen.answer(1)
        assert first
        assert REDRAW.search(screen.raw, first_shown), "the answer was not redrawn in place"

        screen.type("/react 1 👍")
        screen.wait_for(r"👍 envoyé sur la réponse \[1\]\.", NOTICE_S)
        screen.type("/react 1 too_long")  # a reason by its name
        screen.wait_for(r"✂️ envoyé sur la réponse \[1\]\.", NOTICE_S)
        screen.type("/unreact 1 ✂️")
        screen.wait_for(r"Réaction ✂️ retirée de la réponse \[1\]\.", NOTICE_S)
        screen.type("/react 7 👍")
        screen.wait_for(r"Pas de réponse \[7\] : les réponses vont de \[1\] à \[1\]\.", 5)
        screen.type("/reply 1")
        screen.wait_for(r"Usage : /reply N TEXTE", 5)

        screen.type("!lucie consent yes")
        screen.wait_for(r"votre accord est enregistré", NOTICE_S)
        screen.type(f"/correct 1 {CORRECTION}")
        screen.wait_for(r"votre correction est enregistrée", NOTICE_S)
        screen.type("/retry 1")
        second = screen.answer(2)
        assert second
        screen.type("/+ 2")
        screen.wait_for(r"👍 envoyé sur la réponse \[2\]\.", NOTICE_S)
        screen.type("/react accurate")  # the last answer, [2]
        screen.wait_for(r"🎯 envoyé sur la réponse \[2\]\.", NOTICE_S)

        # the chat follows the room's language from the bot's own confirmation
        screen.type("!lucie lang en")
        screen.wait_for(r"Room language: English\.", NOTICE_S)
        screen.type("/react 9 👍")
        screen.wait_for(r"No answer \[9\]: answers go from \[1\] to \[2\]\.", 5)
        screen.type("/help")
        screen.wait_for(r"Terminal commands", 5)

        screen.type("!lucie stats")
        stats = screen.wait_for(r"Statistics: *\n((?:.*\n){1,6})", NOTICE_S).group(1)
        stats = " ".join(stats.split())
        assert "2 answers" in stats and "👍 1 / 👎 1" in stats and "1 corrections" in stats

        child.sendintr()  # Ctrl-C: everything stops, with no word from the HTTP libraries
        screen.wait_for(r"stopping…", STOP_S)
        child.expect(pexpect.EOF, timeout=STOP_S)
        said = screen.text[screen.read_upto :] + ANSI.sub("", child.before or "")
        child.close()
        assert child.exitstatus == 0, screen.text[-3000:]
        assert not said.strip(), said
    finally:
        stop(child, children)
    assert not [pid for pid in children if alive(pid)], children
    loop_s = time.monotonic() - started

    rows = exported_rows(folder, tmp_path)
    kto = {row["completion"][0]["content"]: row for row in rows["kto"]}
    assert len(kto) == 2, rows["kto"]
    # the 👍 on [1] was replaced by the 👎 its correction counts as; [2] kept its 👍
    labels = sorted(row["label"] for row in kto.values())
    assert labels == [False, True]
    dpo = {row["metadata"]["source"]: row for row in rows["dpo"]}
    assert set(dpo) == {"correction", "regeneration"}, rows["dpo"]
    assert dpo["correction"]["chosen"][0]["content"] == CORRECTION
    rejected = dpo["correction"]["rejected"][0]["content"]
    assert dpo["regeneration"]["rejected"][0]["content"] == rejected
    assert dpo["regeneration"]["chosen"][0]["content"] != rejected
    question = dpo["regeneration"]["prompt"][-1]["content"]
    assert "cinq idées de sorties à Paris" in question
    sft = {row["metadata"]["source"] for row in rows["sft"]}
    assert sft == {"vote", "correction"}, rows["sft"]
    # the reasons: ✂️ was taken back (its reaction redacted), 🎯 stands
    export(folder / "bot.toml", "oasst", tmp_path / "oasst.jsonl")
    trees = (tmp_path / "oasst.jsonl").read_text(encoding="utf-8")
    assert '"accurate"' in trees and '"too_long"' not in trees
    print(f"loop {loop_s:.0f} s, export {time.monotonic() - started - loop_s:.0f} s")
    print(json.dumps({name: len(found) for name, found in rows.items()}))
