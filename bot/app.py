"""Wiring, in one place: the store, the model client, metrics, commands, history and the answer
pipeline, handed to a thin relay that the Matrix transport feeds."""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass

from bot import paths
from bot.config import RagSettings, Settings
from bot.core.command_registry import CommandRegistry, RoomAdmins
from bot.core.commands import RoomCommands
from bot.core.data_commands import DataCommands
from bot.core.doc_commands import DocCommands
from bot.core.documents import RoomDocuments
from bot.core.feedback_events import FeedbackForwarding, FeedbackSink
from bot.core.history import History
from bot.core.incidents import Incidents
from bot.core.metrics import CountingPort, Metrics
from bot.core.personal_data import PersonalData
from bot.core.pipeline.context_sources import Conversation, RoomPrompt
from bot.core.pipeline.grounding import Grounding
from bot.core.pipeline.moderation import ModerationRecords, RequestModeration
from bot.core.pipeline.pipeline import AnswerPipeline
from bot.core.ports import ChatPort
from bot.core.pseudonyms import LocalPseudonyms
from bot.core.questions import Questions
from bot.core.quotas import Quotas
from bot.core.reactions import Reactions
from bot.core.relay import Relay, RelayParts
from bot.core.rooms import Rooms
from bot.core.tasks import Tasks
from bot.guard.build import Guard
from bot.llm.client import ChatModel
from bot.matrix.transport import MatrixTransport
from bot.ops.server import OpsServer
from bot.rag.embeddings import HttpReranker, OpenAIEmbedder
from bot.rag.indexer import Indexer
from bot.rag.prepare import Preparer
from bot.rag.retriever import HybridRetriever
from bot.storage.local_keys import PEOPLE_KEY, local_key
from bot.storage.outbox_store import SqliteFeedbackFacts
from bot.storage.store import Store
from bot.texts import PromptTexts
from bot.webhook.delivery import Webhook

log = logging.getLogger(__name__)


@dataclass
class Grounded:
    """Grounding's parts that hold servers or processes, closed when the bot stops."""

    indexer: Indexer
    retriever: HybridRetriever
    preparer: Preparer
    embedder: OpenAIEmbedder | None
    reranker: HttpReranker | None

    @classmethod
    def build(cls, settings: RagSettings, store: Store) -> Grounded:
        embedder = OpenAIEmbedder(settings) if settings.embeddings_url else None
        reranker = HttpReranker(settings) if settings.rerank_url else None
        preparer = Preparer(settings)
        retriever = HybridRetriever(store.documents, settings, embedder, reranker)
        indexer = Indexer(store.documents, preparer, embedder)
        return cls(indexer, retriever, preparer, embedder, reranker)

    async def aclose(self) -> None:
        await self.preparer.close()
        for client in (self.embedder, self.reranker):
            if client is not None:
                await client.aclose()


def build_relay(
    settings: Settings,
    store: Store,
    model: ChatModel,
    matrix: ChatPort,
    prompts: PromptTexts,
    people: LocalPseudonyms,
    grounded: Grounded | None = None,
    guard: Guard | None = None,
    feedback_sink: FeedbackSink | None = None,
    metrics: Metrics | None = None,
) -> Relay:
    metrics = metrics or Metrics()
    port: ChatPort = CountingPort(matrix, metrics)
    tasks = Tasks()
    rooms = Rooms(settings, store.rooms, port, prompts, tasks)
    personal = PersonalData(settings, store.reminders, rooms, metrics)
    history = History(settings.bot, store.conversations, port, personal.masked)
    grounded = grounded or Grounded.build(settings.rag, store)
    guard = guard or Guard.build(settings.guard)
    guard.moderation.observe = metrics.observe_check
    incidents = Incidents(settings, store.incidents, people, port, metrics, tasks)
    records = ModerationRecords(incidents, settings.log_content)
    quotas = Quotas(settings, store.usage, people, metrics)
    pipeline = AnswerPipeline(
        settings,
        (store.conversations, rooms, model, port, metrics),
        sources=[RoomPrompt(store.rooms, prompts), Conversation(history)],
        request_filters=[RequestModeration(settings.guard, guard.moderation, guard.rules, records)],
        grounding=Grounding(settings.rag, store.documents, grounded.retriever),
        quotas=quotas,
    )
    metrics.queue.set_function(lambda: pipeline.scheduler.queued)
    asking = (quotas, metrics, personal)
    questions = Questions(
        settings, store.conversations, port, rooms, history, pipeline, tasks, *asking
    )
    temp_dir = paths.temp(settings.data_dir)
    documents = RoomDocuments(
        settings, store.documents, grounded.indexer, (port, rooms, tasks), temp_dir
    )
    forward = _forwarding(settings, store, feedback_sink)
    data = DataCommands(settings, store, questions.regenerate, documents.forgotten,
                        store.incidents, personal.masked, forward=forward)  # fmt: skip
    commands = _commands(settings, store, port, prompts, (data, documents))
    reactions = Reactions(settings, store, rooms, questions, data, metrics, port, forward=forward)
    parts = RelayParts(store.sync, store.conversations, rooms, questions, reactions, commands,
                       tasks, metrics, documents)  # fmt: skip
    return Relay(settings, port, parts)


def _forwarding(
    settings: Settings, store: Store, sink: FeedbackSink | None
) -> FeedbackForwarding | None:
    """Feedback for a webhook, filtered by consent; None without one."""
    if sink is None:
        return None
    stores = (store.rooms, store.feedback)
    return FeedbackForwarding(settings.data, stores, SqliteFeedbackFacts(store.db), sink)


def _commands(
    settings: Settings,
    store: Store,
    port: ChatPort,
    prompts: PromptTexts,
    handlers: tuple[DataCommands, RoomDocuments],
) -> CommandRegistry:
    data, documents = handlers
    prefix = settings.bot.command_prefix
    admins = RoomAdmins(settings.bot.operators, port)
    commands = CommandRegistry(prefix, admins)
    commands.add(*RoomCommands(prefix, store.rooms, prompts).specs())
    commands.add(*data.specs())
    stores = (store.documents, store.conversations)
    commands.add(*DocCommands(settings, documents, stores, admins).specs())
    return commands


async def run_bot(settings: Settings) -> None:
    prompts = PromptTexts(settings.bot.prompts_dir, settings.guard.policies())
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    store = await Store.open(paths.database(settings.data_dir))
    model = ChatModel(settings.llm)
    transport = MatrixTransport(settings, store)
    grounded = Grounded.build(settings.rag, store)
    guard = Guard.build(settings.guard)
    people = LocalPseudonyms(await local_key(store.db, PEOPLE_KEY))
    metrics = Metrics()
    webhook = Webhook.build(settings, store.db, metrics.registry)
    relay = build_relay(
        settings, store, model, transport, prompts, people, grounded, guard, webhook, metrics
    )
    relay.metrics.awaiting_keys.set_function(lambda: transport.undecryptable.waiting)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, transport.stop)
    ops = OpsServer(settings, relay.metrics, store.db, model, lambda: transport.last_sync)
    try:
        if settings.ops.enabled:
            await ops.start()
        await transport.login()
        if relay.documents is not None:
            await relay.documents.recover()
        if webhook is not None:  # events a restart interrupted go out first
            webhook.start()
        log.info("lucie-bot running as %s, model %s", settings.matrix.user_id, settings.llm.model)
        await transport.run(relay)
    finally:
        # no new questions now; answers under way get a grace period, and any still running
        # after it stay "streaming" in the database, completed in the same reply at next start
        await relay.drain(settings.bot.shutdown_grace_s)
        if webhook is not None:
            await webhook.stop()
        await ops.stop()
        await transport.close()
        await model.aclose()
        await grounded.aclose()
        await guard.aclose()
        await store.close()
        log.info("lucie-bot stopped")
