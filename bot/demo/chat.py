"""A terminal chat as the demo person: a real Matrix client, reading lines from stdin, offering
what a Matrix client does for this bot: numbered answers shown as they stream, reactions (votes
and reasons) and their withdrawal, replies to a chosen answer (`!lucie correct`, `!lucie retry`),
file sharing; its own hints in the room's language."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import uuid4

from nio import (
    AsyncClient,
    AsyncClientConfig,
    MegolmEvent,
    RoomMessagesResponse,
    RoomRedactResponse,
    RoomSendResponse,
    SyncResponse,
)
from nio.api import Api
from nio.crypto import ENCRYPTION_ENABLED

from bot.config import DEFAULT_REASONS
from bot.core.governance import bare_emoji
from bot.demo.chat_commands import (
    Action,
    Help,
    Problem,
    Quit,
    React,
    Reply,
    Send,
    Unreact,
    Upload,
    parse_line,
)
from bot.demo.chat_texts import REPLY_EXAMPLES, help_text, hint, lang_set_by
from bot.demo.chat_upload import send_message, upload_file
from bot.demo.chat_view import Transcript
from bot.demo.homeserver import Account
from bot.matrix.nio_client import exchange_keys

__all__ = ["HELP", "ChatOptions", "chat_client", "handle_line", "sync_once", "upload_file"]

HELP = help_text("fr", "!lucie", DEFAULT_REASONS)
# the bot's notices looked through at start for the room's language: a page of this many
HISTORY_LIMIT = 200
JOIN_WAIT_S = 90  # the bot's first sync after a cold start, on a busy machine


@dataclass(frozen=True)
class ChatOptions:
    """What the chat knows of the bot from its configuration."""

    bot_id: str
    prefix: str = "!lucie"
    default_lang: str = "fr"
    reasons: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_REASONS))
    model_note: bool = False  # the demo's own tiny model answers: say what to expect
    terminal: bool | None = None  # None: whether stdout is a terminal


def chat_client(homeserver: str, person: Account, store: Path) -> AsyncClient:
    """The person's client; with end-to-end encryption (its keys kept in `store`) when olm is
    installed, so that it can also talk in a room someone turned encryption on for."""
    store.mkdir(parents=True, exist_ok=True, mode=0o700)
    config = AsyncClientConfig(
        max_timeouts=3, encryption_enabled=ENCRYPTION_ENABLED, store_sync_tokens=False
    )
    client = AsyncClient(
        homeserver, person.user_id, device_id=person.device_id, store_path=str(store), config=config
    )
    client.restore_login(person.user_id, person.device_id, person.access_token)
    return client


async def sync_once(client: AsyncClient, timeout_ms: int) -> SyncResponse | None:
    """One sync, then the key exchanges encryption needs (new devices, one-time keys)."""
    response = await client.sync(timeout=timeout_ms)
    if client.olm:
        await exchange_keys(client)
    return response if isinstance(response, SyncResponse) else None


class Chat:
    """The person's side of the room: what the chat numbered, the reactions it sent (their
    event ids, to take them back), the room's language."""

    def __init__(
        self, client: AsyncClient, room_id: str, options: ChatOptions, transcript: Transcript
    ) -> None:
        self.client = client
        self.room_id = room_id
        self.options = options
        self.transcript = transcript
        self.reactions: dict[tuple[str, str], str] = {}  # (answer, bare key) -> reaction

    @property
    def lang(self) -> str:
        return self.transcript.lang

    async def handle(self, line: str) -> str | None:
        """Run a line; what to print ("" for nothing), or None to quit."""
        action = parse_line(line, self.options.prefix, self.options.reasons)
        if isinstance(action, Quit):
            return None
        return await self.run(action) if action is not None else ""

    async def run(self, action: Action) -> str:
        lang = self.lang
        if isinstance(action, Problem):
            values = dict(action.values)
            if action.key == "reply_usage":
                values["example"] = REPLY_EXAMPLES[lang].get(str(values["command"]), "…")
            return hint(lang, action.key, **values)
        if isinstance(action, Help):
            return help_text(lang, self.options.prefix, self.options.reasons)
        if isinstance(action, Upload):
            return await upload_file(self.client, self.room_id, Path(action.path), lang)
        if isinstance(action, Send):
            content = {"msgtype": "m.text", "body": action.body, "m.mentions": {}}
            return await send_message(self.client, self.room_id, content, lang)
        if isinstance(action, Quit):
            return ""
        target = self._target(action.number)
        if isinstance(target, str):
            return target
        number, event_id = target
        if isinstance(action, Reply):
            return await self._reply(event_id, action.body)
        if isinstance(action, React):
            return await self._react(number, event_id, action.key)
        assert isinstance(action, Unreact)
        return await self._unreact(number, event_id, action.key)

    def _target(self, number: int | None) -> tuple[int, str] | str:
        """The answer numbered so (the last one for None), or why there is none."""
        answers = self.transcript.answers
        if not answers:
            return hint(self.lang, "answer_none")
        number = len(answers) if number is None else number
        event_id = self.transcript.answer_id(number)
        if event_id is None:
            return hint(self.lang, "answer_unknown", n=number, last=len(answers))
        return number, event_id

    async def _reply(self, event_id: str, body: str) -> str:
        # no quoted fallback: the spec dropped it (v1.13) and the bot reads the relation alone;
        # the answer's author is mentioned, as clients do for a reply
        content = {
            "msgtype": "m.text",
            "body": body,
            "m.mentions": {"user_ids": [self.options.bot_id]},
            "m.relates_to": {"m.in_reply_to": {"event_id": event_id}},
        }
        return await send_message(self.client, self.room_id, content, self.lang)

    async def _react(self, number: int, event_id: str, key: str) -> str:
        mine = (event_id, bare_emoji(key))
        if mine in self.reactions:
            return hint(self.lang, "react_already", key=key, n=number)
        content = {"m.relates_to": {"rel_type": "m.annotation", "event_id": event_id, "key": key}}
        response = await send_event(self.client, self.room_id, "m.reaction", content)
        if not isinstance(response, RoomSendResponse):
            return hint(self.lang, "refused", why=response)
        self.reactions[mine] = response.event_id
        return hint(self.lang, "react_sent", key=key, n=number)

    async def _unreact(self, number: int, event_id: str, key: str) -> str:
        reaction = self.reactions.get((event_id, bare_emoji(key)))
        if reaction is None:
            return hint(self.lang, "unreact_none", key=key, n=number)
        response = await self.client.room_redact(self.room_id, reaction)
        if not isinstance(response, RoomRedactResponse):
            return hint(self.lang, "refused", why=response)
        del self.reactions[(event_id, bare_emoji(key))]
        return hint(self.lang, "unreact_done", key=key, n=number)

    # what the bot says
    def on_event(self, event: Any) -> None:
        if isinstance(event, MegolmEvent):
            if event.sender == self.options.bot_id:
                self.transcript.say(hint(self.lang, "undecryptable"))
            return
        source = getattr(event, "source", None)
        if not isinstance(source, dict):
            return
        if (lang := self.lang_of(source)) is not None:
            self.transcript.lang = lang
        self.transcript.show(source)

    def lang_of(self, source: dict[str, Any]) -> str | None:
        """The language the bot says the room now speaks, if this event is where it says so."""
        content = source.get("content")
        if source.get("sender") != self.options.bot_id or not isinstance(content, dict):
            return None
        if content.get("msgtype") != "m.notice" or not isinstance(content.get("body"), str):
            return None
        return lang_set_by(content["body"])

    async def learn_language(self) -> None:
        """The bot's latest word on the room's language, from the room's recent history (the
        bot's configured default until it said otherwise)."""
        response = await self.client.room_messages(
            self.room_id,
            limit=HISTORY_LIMIT,
            message_filter={"senders": [self.options.bot_id], "types": ["m.room.message"]},
        )
        if not isinstance(response, RoomMessagesResponse):
            return
        for event in response.chunk:  # newest first
            source = getattr(event, "source", None)
            if isinstance(source, dict) and (lang := self.lang_of(source)) is not None:
                self.transcript.lang = lang
                return


async def send_event(
    client: AsyncClient, room_id: str, event_type: str, content: dict[str, Any]
) -> Any:
    """room_send, except that a reaction in an encrypted room is encrypted too, as Element and
    Tchap send it: nio sends reactions in the clear, which would spare the bot the encrypted
    reactions it must handle."""
    room = client.rooms.get(room_id)
    if event_type != "m.reaction" or not (client.olm and room and room.encrypted):
        return await client.room_send(room_id, event_type, content, ignore_unverified_devices=True)
    # what room_send does before it encrypts: members and their devices known, room key shared
    if not room.members_synced:
        await client.joined_members(room_id)
        if client.should_query_keys:
            await client.keys_query()
    if client.olm.should_share_group_session(room_id):
        await client.share_group_session(room_id, ignore_unverified_devices=True)
    encrypted_type, encrypted = client.encrypt(room_id, event_type, content)
    method, path, data = Api.room_send(
        client.access_token, room_id, encrypted_type, encrypted, uuid4()
    )
    return await client._send(RoomSendResponse, method, path, data, (room_id,))


async def handle_line(
    client: AsyncClient, room_id: str, line: str, chat: Chat | None = None
) -> str:
    """Send a question, or run a /command; what to print, if anything (French, with no answer
    numbered yet, when no chat is given)."""
    if chat is None:
        transcript = Transcript("", sys.stdout, terminal=False)
        chat = Chat(client, room_id, ChatOptions(bot_id=""), transcript)
    return await chat.handle(line) or ""


def stdin_lines() -> asyncio.Queue[str | None]:
    """Lines typed, then None at the end of input. A thread reads the descriptor itself: stdin
    stays blocking (asyncio's pipe reader would make the terminal, which stdout shares,
    non-blocking, and a long answer could then fail to print), and no lock of sys.stdin is
    held by a thread still reading when the process exits."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | None] = asyncio.Queue()

    def post(line: str | None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody reads any more
            loop.call_soon_threadsafe(queue.put_nowait, line)

    def read() -> None:
        pending = b""
        while True:
            try:
                chunk = os.read(sys.stdin.fileno(), 4096)
            except OSError:
                chunk = b""
            if not chunk:
                if pending:
                    post(pending.decode("utf-8", errors="replace"))
                post(None)
                return
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                post(line.decode("utf-8", errors="replace"))

    threading.Thread(target=read, name="chat-stdin", daemon=True).start()
    return queue


async def terminal_chat(
    homeserver: str,
    person: Account,
    room_id: str,
    bot_id: str,
    store: Path,
    options: ChatOptions | None = None,
) -> None:
    options = options or ChatOptions(bot_id)
    terminal = sys.stdout.isatty() if options.terminal is None else options.terminal
    transcript = Transcript(bot_id, sys.stdout, terminal, options.default_lang)
    client = chat_client(homeserver, person, store)
    chat = Chat(client, room_id, options, transcript)
    follower: asyncio.Task[None] | None = None
    try:
        await sync_once(client, 0)  # start from now: earlier messages are not replayed
        await chat.learn_language()
        await _bot_joined(client, chat)
        transcript.say(hint(chat.lang, "intro"))
        if options.model_note:
            transcript.say(hint(chat.lang, "model_note"))
        follower = asyncio.create_task(_follow(client, room_id, chat))
        lines = stdin_lines()
        while (line := await lines.get()) is not None:
            transcript.typed()
            reply = await chat.handle(line)
            if reply is None:
                break
            if reply:
                transcript.say(reply)
    finally:
        # the sync loop ends before its client closes: a sync still running on a closed client
        # would print nio's "Timed out" and aiohttp's "Unclosed client session" at Ctrl-C
        if follower is not None:
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)
        await client.close()


async def _bot_joined(client: AsyncClient, chat: Chat) -> None:
    """Wait (JOIN_WAIT_S at most) for the bot to join: a first question sent before it would
    never reach it, and in an encrypted room not even be readable by it."""
    deadline = asyncio.get_running_loop().time() + JOIN_WAIT_S
    said = False
    while asyncio.get_running_loop().time() < deadline:
        room = client.rooms.get(chat.room_id)
        member = room.users.get(chat.options.bot_id) if room is not None else None
        if member is not None and not member.invited:
            return
        if not said:
            chat.transcript.say(hint(chat.lang, "joining"))
            said = True
        _show(await sync_once(client, 2_000), chat)
    chat.transcript.say(hint(chat.lang, "not_joined"))


async def _follow(client: AsyncClient, room_id: str, chat: Chat) -> None:
    while True:
        _show(await sync_once(client, 10_000), chat)


def _show(response: SyncResponse | None, chat: Chat) -> None:
    if response is not None and chat.room_id in response.rooms.join:
        for event in response.rooms.join[chat.room_id].timeline.events:
            chat.on_event(event)
