"""Feedback on its way to a webhook: the outbox of events not delivered yet, and the facts about
answers and reactions that forwarding reads (bot.core.feedback_events)."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from bot.core.feedback_events import AnswerFacts, GivenFeedback
from bot.core.pseudonyms import LocalPseudonyms
from bot.storage.connection import Database
from bot.storage.local_keys import PEOPLE_KEY, local_key

# what is remembered of feedback that left, to send its removal: the newest ones (a removal of
# older feedback is not sent, erring on the side of saying nothing)
FORWARDED_KEPT = 100_000


@dataclass(frozen=True)
class Pending:
    id: int
    body: bytes
    attempts: int


@dataclass(frozen=True)
class Claim:
    """What a try's claim remembered first (None: already remembered, or nothing)."""

    record: int | None  # its webhook_forwarded row
    person: str | None  # its webhook_people row


@dataclass(frozen=True)
class Source:
    """What an event is about, for taking it back: the author, and the reaction or message."""

    user_id: str
    room_id: str
    event_id: str


class SqliteOutbox:
    """Events in order of arrival, at most `size` of them: past it the oldest go."""

    def __init__(self, db: Database, size: int) -> None:
        self.db = db
        self.size = size
        self._people: LocalPseudonyms | None = None

    async def person(self, user_id: str) -> str:
        """The local pseudonym the erasure store also finds people by (bot.storage.erasure_store):
        an outbox row names no one."""
        if self._people is None:
            self._people = LocalPseudonyms(await local_key(self.db, PEOPLE_KEY))
        return self._people.of(user_id)

    async def put(self, source: Source | None, body: bytes, now: int) -> int:
        """Keep one event (source: None for one that nothing may take back); return how many old
        ones made way for it."""
        person = await self.person(source.user_id) if source else None
        room_id, event_id = (source.room_id, source.event_id) if source else (None, None)
        counts = await self.db.batch(
            [
                (
                    "INSERT INTO webhook_outbox (person, room_id, source_event_id, body, "
                    "created_at) VALUES (?, ?, ?, ?, ?)",
                    (person, room_id, event_id, body, now),
                ),
                # ids only grow: a range of the primary key, nothing read below the bound (an
                # OFFSET walked every row kept, at each event); ids taken back early leave
                # fewer than size rows, never more
                (
                    "DELETE FROM webhook_outbox WHERE id <= "
                    "(SELECT MAX(id) FROM webhook_outbox) - ?",
                    (self.size,),
                ),
            ]
        )
        return counts[1]

    async def head(self) -> Pending | None:
        """The oldest event waiting."""
        row = await self.db.one("SELECT id, body, attempts FROM webhook_outbox ORDER BY id LIMIT 1")
        return Pending(row["id"], bytes(row["body"]), row["attempts"]) if row else None

    async def claim(self, event_id: int) -> Claim | None:
        """Before a try: None when the event no longer waits (taken back since it was read);
        else it is remembered as having left. In one transaction with the check, so that a
        withdrawal sees either the event still waiting or the record of it leaving."""

        def run(conn: sqlite3.Connection) -> Claim | None:
            row = conn.execute(
                "SELECT person, room_id, source_event_id FROM webhook_outbox WHERE id = ?",
                (event_id,),
            ).fetchone()
            if row is None:
                return None
            person, room_id, source_event_id = row
            if person is None or source_event_id is None:
                return Claim(None, None)  # nothing to take back later
            cursor = conn.execute(
                "INSERT OR IGNORE INTO webhook_forwarded (room_id, source_event_id, person) "
                "VALUES (?, ?, ?)",
                (room_id, source_event_id, person),
            )
            record = cursor.lastrowid if cursor.rowcount == 1 else None
            conn.execute(
                "DELETE FROM webhook_forwarded WHERE id <= "
                "(SELECT MAX(id) FROM webhook_forwarded) - ?",
                (FORWARDED_KEPT,),
            )
            cursor = conn.execute(
                "INSERT OR IGNORE INTO webhook_people (person) VALUES (?)", (person,)
            )
            return Claim(record, person if cursor.rowcount == 1 else None)

        return await self.db.in_thread(run, write=True)

    async def unclaim(self, claim: Claim) -> None:
        """The try reached no one (no connection was made): what its claim first remembered is
        forgotten, so that no removal follows what never left."""
        await self.db.batch(
            [
                ("DELETE FROM webhook_forwarded WHERE id = ?", (claim.record,)),
                ("DELETE FROM webhook_people WHERE person = ?", (claim.person,)),
            ]
        )

    async def failed_once(self, event_id: int) -> None:
        await self.db.write(
            "UPDATE webhook_outbox SET attempts = attempts + 1 WHERE id = ?", event_id
        )

    async def done(self, event_id: int) -> None:
        """Delivered, or given up: either way never sent again."""
        await self.db.write("DELETE FROM webhook_outbox WHERE id = ?", event_id)

    async def take_back(self, room_id: str, source_event_id: str) -> bool:
        """Drop what this reaction or message made that has not left; whether any of it left."""

        def run(conn: sqlite3.Connection) -> bool:
            key = (room_id, source_event_id)
            conn.execute(
                "DELETE FROM webhook_outbox WHERE room_id = ? AND source_event_id = ?", key
            )
            left = conn.execute(
                "SELECT 1 FROM webhook_forwarded WHERE room_id = ? AND source_event_id = ?", key
            ).fetchone()
            return left is not None

        return await self.db.in_thread(run, write=True)

    async def drop_person(self, user_id: str) -> int:
        """Drop the person's events that have not left."""
        person = await self.person(user_id)
        return await self.db.write("DELETE FROM webhook_outbox WHERE person = ?", person)

    async def forget_person(self, user_id: str) -> bool:
        """Drop the person's events that have not left, and what is remembered of those that did;
        whether any did."""
        person = await self.person(user_id)
        counts = await self.db.batch(
            [
                ("DELETE FROM webhook_outbox WHERE person = ?", (person,)),
                ("DELETE FROM webhook_forwarded WHERE person = ?", (person,)),
                ("DELETE FROM webhook_people WHERE person = ?", (person,)),
            ]
        )
        return counts[2] != 0

    async def waiting(self) -> int:
        row = await self.db.one("SELECT COUNT(*) FROM webhook_outbox")
        return int(row[0]) if row else 0


class SqlitePeopleNames:
    """Who the bot has heard, as exports name them (bot.storage.export_reader.people): read whole
    once, then only the messages stored since (a range of the rowid)."""

    # rowids of the newest messages come back after they are erased: read again from a little
    # before the last one seen, so that such a message is not missed
    REREAD = 1000

    def __init__(self, db: Database) -> None:
        self.db = db
        self._read_to = 0

    async def new(self) -> set[tuple[str, str | None]]:
        """(user id, display name) of the messages stored since the last call, and a few more."""
        row = await self.db.one("SELECT MAX(rowid) FROM messages")
        last = int(row[0]) if row and row[0] is not None else 0
        rows = await self.db.all(
            "SELECT DISTINCT sender, sender_name FROM messages "
            "WHERE rowid > ? AND rowid <= ? AND from_bot = 0",
            max(0, min(self._read_to, last) - self.REREAD),
            last,
        )
        self._read_to = last
        return {(r["sender"], r["sender_name"]) for r in rows}


class SqliteFeedbackFacts:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def answer_facts(self, room_id: str, answer_event_id: str) -> AnswerFacts | None:
        row = await self.db.one(
            "SELECT model, prompt_version, collected FROM answers "
            "WHERE room_id = ? AND answer_event_id = ?",
            room_id,
            answer_event_id,
        )
        if row is None:
            return None
        return AnswerFacts(row["model"], row["prompt_version"], bool(row["collected"]))

    async def given(self, room_id: str, reaction_event_id: str) -> GivenFeedback | None:
        row = await self.db.one(
            "SELECT CASE source WHEN 'correction' THEN 'correction' ELSE 'vote' END AS kind, "
            "answer_event_id, sender, vote AS value, raw_key FROM votes "
            "WHERE room_id = ?1 AND reaction_event_id = ?2 UNION ALL "
            "SELECT 'label', answer_event_id, sender, label, raw_key FROM labels "
            "WHERE room_id = ?1 AND reaction_event_id = ?2 LIMIT 1",
            room_id,
            reaction_event_id,
        )
        if row is None:
            return None
        return GivenFeedback(
            row["kind"], row["answer_event_id"], row["sender"], row["value"], row["raw_key"]
        )
