"""Wiring: one store, one model client, one Matrix connection, one relay."""

from __future__ import annotations

import asyncio
import logging
import signal

from bot.config import Settings
from bot.core.conversation import Relay
from bot.llm.client import ChatModel
from bot.matrix.transport import MatrixTransport
from bot.ops.server import OpsServer
from bot.storage.store import Store
from bot.texts import PromptTexts

log = logging.getLogger(__name__)
DATABASE_NAME = "lucie-bot.sqlite3"


async def run_bot(settings: Settings) -> None:
    prompts = PromptTexts(settings.bot.prompts_dir)
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    store = await Store.open(settings.data_dir / DATABASE_NAME)
    model = ChatModel(settings.llm)
    transport = MatrixTransport(settings, store)
    relay = Relay(settings, store, model, transport, prompts)
    relay.metrics.awaiting_keys.set_function(lambda: transport.undecryptable.waiting)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, transport.stop)
    ops = OpsServer(settings, relay.metrics, store, model, lambda: transport.last_sync)
    try:
        if settings.ops.enabled:
            await ops.start()
        await transport.login()
        log.info("lucie-bot running as %s, model %s", settings.matrix.user_id, settings.llm.model)
        await transport.run(relay)
    finally:
        # no new questions now; answers under way get a grace period, and any still running
        # after it stay "streaming" in the database, completed in the same reply at next start
        await relay.drain(settings.bot.shutdown_grace_s)
        await ops.stop()
        await transport.close()
        await model.aclose()
        await store.close()
        log.info("lucie-bot stopped")
