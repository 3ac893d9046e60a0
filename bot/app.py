"""Wiring, in one place: the store, the model client, metrics, commands, history and the answer
pipeline, handed to a thin relay that the Matrix transport feeds."""

from __future__ import annotations

import asyncio
import logging
import signal

from bot import paths
from bot.config import Settings
from bot.core.command_registry import CommandRegistry, RoomAdmins
from bot.core.commands import RoomCommands
from bot.core.data_commands import DataCommands
from bot.core.history import History
from bot.core.metrics import CountingPort, Metrics
from bot.core.pipeline.context_sources import Conversation, RoomPrompt
from bot.core.pipeline.pipeline import AnswerPipeline
from bot.core.ports import ChatPort
from bot.core.questions import Questions
from bot.core.reactions import Reactions
from bot.core.relay import Relay, RelayParts
from bot.core.rooms import Rooms
from bot.core.tasks import Tasks
from bot.llm.client import ChatModel
from bot.matrix.transport import MatrixTransport
from bot.ops.server import OpsServer
from bot.storage.store import Store
from bot.texts import PromptTexts

log = logging.getLogger(__name__)


def build_relay(
    settings: Settings, store: Store, model: ChatModel, matrix: ChatPort, prompts: PromptTexts
) -> Relay:
    metrics = Metrics()
    port: ChatPort = CountingPort(matrix, metrics)
    tasks = Tasks()
    rooms = Rooms(settings, store.rooms, port, prompts, tasks)
    history = History(settings.bot, store.conversations, port)
    pipeline = AnswerPipeline(
        settings,
        (store.conversations, rooms, model, port, metrics),
        sources=[RoomPrompt(store.rooms, prompts), Conversation(history)],
    )
    metrics.queue.set_function(lambda: pipeline.scheduler.queued)
    questions = Questions(settings, store.conversations, port, rooms, history, pipeline, tasks)
    data = DataCommands(settings, store, questions.regenerate)
    prefix = settings.bot.command_prefix
    commands = CommandRegistry(prefix, RoomAdmins(settings.bot.operators, port))
    commands.add(*RoomCommands(prefix, store.rooms, prompts).specs())
    commands.add(*data.specs())
    reactions = Reactions(settings, store, rooms, questions, data, metrics, port)
    parts = RelayParts(
        store.sync, store.conversations, rooms, questions, reactions, commands, tasks, metrics
    )
    return Relay(settings, port, parts)


async def run_bot(settings: Settings) -> None:
    prompts = PromptTexts(settings.bot.prompts_dir)
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    store = await Store.open(paths.database(settings.data_dir))
    model = ChatModel(settings.llm)
    transport = MatrixTransport(settings, store)
    relay = build_relay(settings, store, model, transport, prompts)
    relay.metrics.awaiting_keys.set_function(lambda: transport.undecryptable.waiting)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, transport.stop)
    ops = OpsServer(settings, relay.metrics, store.db, model, lambda: transport.last_sync)
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
