"""Llama Guard 3 (1B or 8B) behind OpenAI-compatible chat completions (vLLM, llama.cpp).

Two ways to ask, per guard.llama_guard.prompt:
- "server": the exchange goes as chat turns and the served model's chat template writes Llama
  Guard's task prompt (vLLM with the Hugging Face template, llama.cpp with the GGUF's);
- "bot": the bot writes the task prompt itself and sends it as one user turn, for servers
  whose template is a plain chat one.

An answer is always judged with a user turn before it, as Llama Guard expects: the question it
answers, or an empty turn when the question is not known. The verdict is read strictly: "safe",
or "unsafe" and a line of S-codes; anything else means the model could not tell."""

from __future__ import annotations

import re
from typing import Any

import httpx

from bot.config import LlamaGuardSettings
from bot.guard.categories import LLAMA_GUARD_CODES, UNKNOWN, llama_guard_policy
from bot.guard.ports import Exchange, ModerationUnavailable
from bot.guard.remote import RemoteModerator, bounded

# The question only gives an answer its context; its end is where the actual ask usually sits.
MAX_CONTEXT_CHARS = 4000
MAX_VERDICT_TOKENS = 48  # "unsafe" and all fourteen codes, comma separated
MAX_VERDICT_CHARS = 512  # a verdict is at most about 60 characters
MAX_CODES = 16

# People's texts must not end the conversation block, open a forged category list, end their
# turn in the model's own chat format (<|eot_id|>…), or start a forged turn on a line of their
# own. Each pattern repeats one character class once, after a fixed start: linear time.
_MARKER = re.compile(r"<([^\S\n]*(?:begin|end)\b)", re.IGNORECASE)
_TURN = re.compile(r"^([^\S\n]*)(user|agent)([^\S\n]*:)", re.IGNORECASE | re.MULTILINE)


def neutralised(text: str) -> str:
    """The text with Llama Guard's structure markers made inert and still readable."""
    # \r, \u2028 and the like end lines for the model too: one kind of line end for _TURN
    text = "\n".join(text.splitlines()).replace("<|", "‹|")
    text = _MARKER.sub(r"‹\1", text)
    return _TURN.sub(r"\1> \2\3", text)


def task_prompt(exchange: Exchange) -> str:
    """Llama Guard 3's task prompt, written from its documented format."""
    role = "Agent" if exchange.role == "assistant" else "User"
    turns = [f"User: {_question(exchange)}"] if role == "Agent" else []
    turns.append(f"{role}: {neutralised(bounded(exchange.text))}")
    conversation = "\n\n".join(turns)
    return (
        f"Task: Check if there is unsafe content in '{role}' messages in conversations"
        " according our safety policy with the below categories.\n\n"
        f"<BEGIN UNSAFE CONTENT CATEGORIES>\n{llama_guard_policy()}\n"
        "<END UNSAFE CONTENT CATEGORIES>\n\n"
        f"<BEGIN CONVERSATION>\n\n{conversation}\n\n<END CONVERSATION>\n\n"
        f"Provide your safety assessment for ONLY THE LAST {role} message in the above"
        " conversation:\n"
        " - First line must read 'safe' or 'unsafe'.\n"
        " - If unsafe, a second line must include a comma-separated list of violated categories."
    )


def chat_turns(exchange: Exchange) -> list[dict[str, str]]:
    """The exchange as chat messages, for a server whose template writes the task prompt."""
    text = neutralised(bounded(exchange.text))
    if exchange.role == "user":
        return [{"role": "user", "content": text}]
    return [
        {"role": "user", "content": _question(exchange)},
        {"role": "assistant", "content": text},
    ]


def _question(exchange: Exchange) -> str:
    question = exchange.question or ""
    if len(question) > MAX_CONTEXT_CHARS:
        question = "[…] " + question[-MAX_CONTEXT_CHARS:]
    return neutralised(question)


def parse_verdict(content: str) -> tuple[str, ...]:
    """() for "safe"; the categories for "unsafe" (codes outside S1–S14, or none at all, are
    UNKNOWN); ModerationUnavailable for anything else, a refusal or an empty answer included."""
    if len(content) > MAX_VERDICT_CHARS:
        raise ModerationUnavailable("answer is not a verdict")
    lines = [line.strip() for line in content.splitlines() if line.strip()]
    verdict = lines[0].lower() if lines else ""
    if verdict == "safe":
        return ()
    if verdict != "unsafe":
        raise ModerationUnavailable("answer is not a verdict")
    codes = lines[1].split(",")[:MAX_CODES] if len(lines) > 1 else []
    found: dict[str, None] = {}  # ordered and without repeats
    for code in (code.strip().upper() for code in codes):
        if code:
            found[code if code in LLAMA_GUARD_CODES else UNKNOWN] = None
    return tuple(found) or (UNKNOWN,)


def _content(answer: Any) -> str:
    try:
        content = answer["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise ModerationUnavailable("answer has no message") from None
    if not isinstance(content, str):
        raise ModerationUnavailable("answer has no message")
    return content


class LlamaGuardModerator(RemoteModerator):
    """A Moderator asking a Llama Guard 3 model; each check is one bounded request."""

    name = "llama_guard"

    def __init__(
        self,
        settings: LlamaGuardSettings,
        timeout_s: float,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        url, key = settings.url, settings.api_key
        super().__init__(
            url, "chat/completions", key, timeout_s, transport, "guard.llama_guard.url"
        )
        self.settings = settings

    async def check(self, exchange: Exchange) -> tuple[str, ...]:
        if self.settings.prompt == "bot":
            messages = [{"role": "user", "content": task_prompt(exchange)}]
        else:
            messages = chat_turns(exchange)
        body = {
            "model": self.settings.model,
            "messages": messages,
            "temperature": 0,
            "max_tokens": MAX_VERDICT_TOKENS,
            "stream": False,
        }
        return parse_verdict(_content(await self.ask(body)))
