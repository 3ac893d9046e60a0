"""The bot's state in one SQLite database, kept by aggregate: each store keeps one kind of thing
behind a protocol of bot.core.stores, over one shared connection and one migration sequence."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bot.storage.connection import Database
from bot.storage.conversation_store import SqliteConversations
from bot.storage.crypto_store import SqliteCryptoBookkeeping
from bot.storage.document_store import SqliteDocuments
from bot.storage.erasure_store import SqliteErasure
from bot.storage.feedback_store import SqliteFeedback
from bot.storage.incident_store import SqliteIncidents
from bot.storage.reminder_store import SqliteReminders
from bot.storage.room_store import SqliteRooms
from bot.storage.sync_store import SqliteSyncPosition
from bot.storage.usage_store import SqliteUsage


@dataclass(frozen=True)
class Store:
    db: Database
    sync: SqliteSyncPosition
    rooms: SqliteRooms
    conversations: SqliteConversations
    feedback: SqliteFeedback
    erasure: SqliteErasure
    crypto: SqliteCryptoBookkeeping
    documents: SqliteDocuments
    usage: SqliteUsage
    incidents: SqliteIncidents
    reminders: SqliteReminders

    @classmethod
    async def open(cls, path: Path) -> Store:
        return cls.over(await Database.open(path))

    @classmethod
    def over(cls, db: Database) -> Store:
        return cls(
            db=db,
            sync=SqliteSyncPosition(db),
            rooms=SqliteRooms(db),
            conversations=SqliteConversations(db),
            feedback=SqliteFeedback(db),
            erasure=SqliteErasure(db),
            crypto=SqliteCryptoBookkeeping(db),
            documents=SqliteDocuments(db),
            usage=SqliteUsage(db),
            incidents=SqliteIncidents(db),
            reminders=SqliteReminders(db),
        )

    async def close(self) -> None:
        await self.db.close()
