"""Votes, labels, corrections and consent: what people said about answers, and on what terms."""

from __future__ import annotations

from typing import Any

from bot.storage.connection import Database


class SqliteFeedback:
    """Feedback and consent."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def add_vote(
        self,
        reaction_event_id: str,
        answer_event_id: str,
        room_id: str,
        sender: str,
        vote: str,
        raw_key: str,
        ts: int,
        source: str = "vote",
    ) -> bool:
        changed = await self.db.write(
            "INSERT INTO votes (reaction_event_id, answer_event_id, room_id, sender, vote, "
            "raw_key, ts, source) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            reaction_event_id,
            answer_event_id,
            room_id,
            sender,
            vote,
            raw_key,
            ts,
            source,
        )
        return changed == 1

    async def author(self, room_id: str, event_id: str) -> str | None:
        """Who sent a reaction or a correction the bot keeps."""
        row = await self.db.one(
            "SELECT sender FROM votes WHERE room_id = ?1 AND reaction_event_id = ?2 "
            "UNION ALL SELECT sender FROM labels WHERE room_id = ?1 AND reaction_event_id = ?2 "
            "UNION ALL SELECT sender FROM corrections WHERE room_id = ?1 AND event_id = ?2 "
            "UNION ALL SELECT user_id FROM consents WHERE room_id = ?1 AND source_event_id = ?2 "
            "LIMIT 1",
            room_id,
            event_id,
        )
        return row[0] if row else None

    async def withdraw_reaction(self, room_id: str, reaction_event_id: str, now: int) -> bool:
        """A redacted reaction: the vote or label it carried no longer counts."""
        changed = 0
        for table in ("votes", "labels"):
            changed += await self.db.write(
                f"UPDATE {table} SET withdrawn_at = ? "
                "WHERE room_id = ? AND reaction_event_id = ? AND withdrawn_at IS NULL",
                now,
                room_id,
                reaction_event_id,
            )
        return changed > 0

    async def add_label(
        self,
        reaction_event_id: str,
        answer_event_id: str,
        room_id: str,
        sender: str,
        label: str,
        raw_key: str,
        ts: int,
    ) -> bool:
        changed = await self.db.write(
            "INSERT INTO labels (reaction_event_id, answer_event_id, room_id, sender, label, "
            "raw_key, ts) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            reaction_event_id,
            answer_event_id,
            room_id,
            sender,
            label,
            raw_key,
            ts,
        )
        return changed == 1

    async def add_correction(
        self, event_id: str, answer_event_id: str, room_id: str, sender: str, text: str, ts: int
    ) -> None:
        await self.db.write(
            "INSERT INTO corrections (event_id, answer_event_id, room_id, sender, text, ts) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            event_id,
            answer_event_id,
            room_id,
            sender,
            text,
            ts,
        )

    async def stats(self, room_id: str | None) -> list[dict[str, Any]]:
        """Answers, votes and corrections per prompt version (every room when room_id is None)."""
        rows = await self.db.all(
            "SELECT a.room_id, a.prompt_version, COUNT(DISTINCT a.id) AS answers, "
            "COUNT(DISTINCT CASE WHEN a.grounded = 1 THEN a.id END) AS grounded, "
            "COUNT(DISTINCT CASE WHEN a.grounded = 0 THEN a.id END) AS uncovered, "
            "COUNT(DISTINCT CASE WHEN v.vote = 'up' THEN v.reaction_event_id END) AS up, "
            "COUNT(DISTINCT CASE WHEN v.vote = 'down' THEN v.reaction_event_id END) AS down, "
            "COUNT(DISTINCT c.event_id) AS corrections "
            "FROM answers a "
            "LEFT JOIN current_votes v ON v.room_id = a.room_id "
            "AND v.answer_event_id = a.answer_event_id "
            "LEFT JOIN corrections c ON c.room_id = a.room_id "
            "AND c.answer_event_id = a.answer_event_id "
            "WHERE a.status IN ('complete', 'cut') AND (? IS NULL OR a.room_id = ?) "
            "GROUP BY a.room_id, a.prompt_version ORDER BY a.room_id, a.prompt_version",
            room_id,
            room_id,
        )
        return [dict(row) for row in rows]

    async def approval(self, room_id: str) -> list[dict[str, Any]]:
        """Votes per prompt version and model in one room, the figures of `!lucie stats`'s chart
        (counted as stats counts them)."""
        rows = await self.db.all(
            "SELECT a.prompt_version, a.model, "
            "COUNT(DISTINCT CASE WHEN v.vote = 'up' THEN v.reaction_event_id END) AS up, "
            "COUNT(DISTINCT CASE WHEN v.vote = 'down' THEN v.reaction_event_id END) AS down "
            "FROM answers a "
            "LEFT JOIN current_votes v ON v.room_id = a.room_id "
            "AND v.answer_event_id = a.answer_event_id "
            "WHERE a.status IN ('complete', 'cut') AND a.room_id = ? "
            "GROUP BY a.prompt_version, a.model ORDER BY a.prompt_version, a.model",
            room_id,
        )
        return [dict(row) for row in rows]

    async def add_consent(
        self,
        user_id: str,
        action: str,
        notice_version: int,
        room_id: str | None,
        ts: int,
        source_event_id: str | None = None,
    ) -> None:
        await self.db.write(
            "INSERT INTO consents (user_id, action, notice_version, room_id, ts, "
            "source_event_id) VALUES (?, ?, ?, ?, ?, ?)",
            user_id,
            action,
            notice_version,
            room_id,
            ts,
            source_event_id,
        )

    async def consent_given_by(self, room_id: str, event_id: str) -> tuple[str, int] | None:
        """(user, notice version) when this ✅ reaction gave the consent now in force."""
        row = await self.db.one(
            "SELECT c.user_id, c.notice_version FROM consents c WHERE c.room_id = ? "
            "AND c.source_event_id = ? "
            "AND c.id = (SELECT MAX(id) FROM consents WHERE user_id = c.user_id)",
            room_id,
            event_id,
        )
        return (row["user_id"], row["notice_version"]) if row else None

    async def consent(self, user_id: str) -> tuple[str, int, int] | None:
        """The consent in force: (action, notice version, time), or None if never given."""
        row = await self.db.one(
            "SELECT action, notice_version, ts FROM consents WHERE user_id = ? "
            "ORDER BY id DESC LIMIT 1",
            user_id,
        )
        return (row["action"], row["notice_version"], row["ts"]) if row else None
