"""`docs …` and `sources`: what a room's answers are grounded in, and who may change it."""

from __future__ import annotations

from bot.config import Settings
from bot.core.clock import date_text
from bot.core.command_registry import Command, CommandSpec, HelpLine, IsAdmin
from bot.core.documents import RoomDocuments
from bot.core.events import TextMessage
from bot.core.stores import ConversationStore
from bot.rag.citations import excerpt, source_label
from bot.rag.ports import DocumentRow, DocumentStore
from bot.texts import say

DOCS_HELP = (
    HelpLine("", "documents et collections du salon", "the room's documents and collections"),
    HelpLine("add", "indexer un fichier (en répondant au message du fichier)",
             "index a file (as a reply to the file's message)"),
    HelpLine("remove <n>", "retirer un document (celui qui l'a partagé, ou un admin)",
             "remove a document (its sharer, or an admin)"),
    HelpLine("auto on|off", "indexer chaque fichier partagé ici", "index every file shared here",
             admin=True),
    HelpLine("use|unuse <nom>", "utiliser ou non une collection", "use a collection or not",
             admin=True, usage_en="use|unuse <name>"),
)  # fmt: skip
SOURCES_HELP = (
    HelpLine("", "les passages derrière ma dernière réponse (ou celle à laquelle vous répondez)",
             "the passages behind my last answer (or the one you reply to)"),
)  # fmt: skip
ADMIN_ACTIONS = frozenset({"auto", "use", "unuse"})
MAX_LISTED = 30


class DocCommands:
    def __init__(
        self,
        settings: Settings,
        documents: RoomDocuments,
        stores: tuple[DocumentStore, ConversationStore],
        is_admin: IsAdmin,
    ) -> None:
        self.settings = settings
        self.documents = documents
        self.store, self.answers = stores
        self.is_admin = is_admin
        self.prefix = settings.bot.command_prefix

    def specs(self) -> list[CommandSpec]:
        return [
            CommandSpec("docs", self.docs, DOCS_HELP, admin_actions=ADMIN_ACTIONS),
            CommandSpec("sources", self.sources, SOURCES_HELP),
        ]

    async def docs(self, command: Command, message: TextMessage, lang: str) -> str:
        if not self.settings.rag.enabled:
            return say(lang, "docs.disabled")
        action = command.action or "list"
        if action == "list":
            return await self._list(message.room_id, lang)
        if action == "add":
            return await self._add(message, lang)
        if action == "remove":
            return await self._remove(command, message, lang)
        if action == "auto" and command.args[1:2] in (["on"], ["off"]):
            on = command.args[1] == "on"
            await self.store.set_auto_index(message.room_id, on)
            return say(lang, "docs.auto_on" if on else "docs.auto_off")
        if action in ("use", "unuse") and len(command.args) == 2:
            name = command.rest.split()[1]  # as typed: collection names keep their case
            if action == "use" and not self._may_turn_on(name, message.sender):
                return say(lang, "docs.restricted", name=name[:60])
            return await self._use(message.room_id, name, action == "use", lang)
        return say(lang, "docs.usage", prefix=self.prefix)

    async def _list(self, room_id: str, lang: str) -> str:
        rows = await self.store.room_documents(room_id)
        lines = [self._line(n, row, lang) for n, row in enumerate(rows[:MAX_LISTED], 1)]
        if len(rows) > MAX_LISTED:
            lines.append(say(lang, "docs.more", count=len(rows) - MAX_LISTED))
        used = await self.store.room_collections(room_id, self.settings.rag.collections)
        collections = ", ".join(used) if used else say(lang, "docs.no_collection")
        documents = "\n".join(lines) if lines else say(lang, "docs.none")
        return say(lang, "docs.list", documents=documents, collections=collections,
                   prefix=self.prefix)  # fmt: skip

    def _line(self, number: int, row: DocumentRow, lang: str) -> str:
        size = say(lang, "docs.pages", pages=row.pages) if row.pages else ""
        return say(lang, "docs.line", n=number, name=row.name, size=size, passages=row.passages,
                   who=row.sharer or "?", when=date_text(row.added_at))  # fmt: skip

    async def _add(self, message: TextMessage, lang: str) -> str:
        if message.reply_to is None:
            return say(lang, "docs.add_usage", prefix=self.prefix)
        file = await self.documents.port.fetch_file(message.room_id, message.reply_to)
        if file is None:
            return say(lang, "docs.not_a_file", prefix=self.prefix)
        refused = await self.documents.index_later(file, lang, message.sender)
        return refused or say(lang, "docs.adding", name=file.name)

    async def _remove(self, command: Command, message: TextMessage, lang: str) -> str:
        rows = await self.store.room_documents(message.room_id)
        number = command.args[1] if len(command.args) > 1 else ""
        if not number.isdigit() or not 1 <= int(number) <= len(rows):
            return say(lang, "docs.remove_usage", prefix=self.prefix)
        row = rows[int(number) - 1]
        if row.sharer != message.sender and not await self.is_admin(
            message.room_id, message.sender
        ):
            return say(lang, "docs.not_yours")
        await self.store.remove_document(row.id)
        return say(lang, "docs.removed", name=row.name)

    def _may_turn_on(self, name: str, sender: str) -> bool:
        """A collection may hold one ministry's procedures: room admins turn on the defaults
        and those the operators opened to all; any other, only an operator."""
        rag = self.settings.rag
        opened = name in rag.collections or name in rag.open_collections
        return opened or sender in self.settings.bot.operators

    async def _use(self, room_id: str, name: str, used: bool, lang: str) -> str:
        known = {row.name for row in await self.store.collections()}
        known |= set(self.settings.rag.collections)  # a default may be declined before it exists
        if name not in known:
            return say(lang, "docs.unknown_collection", name=name[:60])
        await self.store.use_collection(room_id, name, used)
        return say(lang, "docs.used" if used else "docs.unused", name=name)

    async def sources(self, command: Command, message: TextMessage, lang: str) -> str:
        answer_id: int | None = None
        if message.reply_to:
            answer = await self.answers.answer_by_event(message.room_id, message.reply_to)
            answer_id = answer.id if answer else None
        else:
            answer_id = await self.store.last_sourced_answer(message.room_id)
        found = await self.store.answer_sources(answer_id) if answer_id is not None else []
        if not found:
            return say(lang, "sources.none")
        lines = [
            f"[{n}] {source_label(item, lang)}\n> {excerpt(item.text)}"
            for n, item in enumerate(found, 1)
        ]
        return say(lang, "sources.list", lines="\n".join(lines))
