-- Feedback events waiting for the team's webhook (webhook.url), in the order they happened: a
-- receiver that is down, or a restart, loses none of them. A delivered or refused event is
-- deleted; past webhook.queue_size the oldest are dropped. Each body is the JSON sent, byte for
-- byte at every try (pseudonyms only, never a user id).
-- person (the author's local pseudonym, as in incidents) and (room_id, source_event_id) are set
-- on feedback only, so that consent withdrawn, "forget me" and a redaction take back what has
-- not left yet; a removal or "person forgotten" event has none: it carries nothing new and must
-- still go.
CREATE TABLE webhook_outbox (
    id               INTEGER PRIMARY KEY,
    person           TEXT,
    room_id          TEXT,
    source_event_id  TEXT,
    body             BLOB NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    created_at       INTEGER NOT NULL
);
CREATE INDEX webhook_outbox_person ON webhook_outbox (person) WHERE person IS NOT NULL;
CREATE INDEX webhook_outbox_source ON webhook_outbox (room_id, source_event_id)
    WHERE source_event_id IS NOT NULL;

-- Feedback that left (or was leaving: written just before its first try), so that its removal
-- is sent, and only then: a vote made before consent never left, nor may its withdrawal. The
-- newest webhook.FORWARDED_KEPT are kept; erased with their event or their author.
CREATE TABLE webhook_forwarded (
    id               INTEGER PRIMARY KEY,
    room_id          TEXT NOT NULL,
    source_event_id  TEXT NOT NULL,
    person           TEXT NOT NULL,
    UNIQUE (room_id, source_event_id)
);
CREATE INDEX webhook_forwarded_person ON webhook_forwarded (person);

-- People something was forwarded about (local pseudonyms, one row each): told to the receiver
-- when they ask to be forgotten, and only then.
CREATE TABLE webhook_people (
    person  TEXT PRIMARY KEY
) WITHOUT ROWID;
