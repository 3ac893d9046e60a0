-- Rooms are walls: a record is found by (room, event id), never by an event id alone, so an
-- event id named from another room finds nothing. Event ids of old room versions are chosen by
-- the sending server, so a hostile server could also reuse one of another room's ids.
CREATE TABLE messages_v2 (
    room_id      TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    sender       TEXT NOT NULL,
    sender_name  TEXT,
    body         TEXT NOT NULL,
    ts           INTEGER NOT NULL,
    reply_to     TEXT,
    thread_root  TEXT,
    from_bot     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (room_id, event_id)
);
INSERT INTO messages_v2 (room_id, event_id, sender, sender_name, body, ts, reply_to, thread_root,
    from_bot)
SELECT room_id, event_id, sender, sender_name, body, ts, reply_to, thread_root, from_bot
FROM messages;
DROP TABLE messages;
ALTER TABLE messages_v2 RENAME TO messages;
CREATE INDEX messages_room_ts ON messages (room_id, ts);
CREATE INDEX messages_thread ON messages (room_id, thread_root) WHERE thread_root IS NOT NULL;
CREATE INDEX messages_sender ON messages (sender);

CREATE TABLE answers_v3 (
    id                 INTEGER PRIMARY KEY,
    room_id            TEXT NOT NULL,
    question_event_id  TEXT NOT NULL,
    sibling            INTEGER NOT NULL DEFAULT 0,
    question_ts        INTEGER NOT NULL,
    thread_root        TEXT,
    answer_event_id    TEXT,
    status             TEXT NOT NULL DEFAULT 'queued'
                       CHECK (status IN ('queued', 'streaming', 'complete', 'cut', 'error', 'skipped')),
    error              TEXT,
    request_messages   TEXT,
    context_event_ids  TEXT,
    prompt_version     INTEGER NOT NULL DEFAULT 0,
    model              TEXT,
    sampling           TEXT,
    text               TEXT,
    tokens             INTEGER,
    edits              INTEGER NOT NULL DEFAULT 0,
    attempts           INTEGER NOT NULL DEFAULT 0,
    created_at         INTEGER NOT NULL,
    started_at         INTEGER,
    first_token_at     INTEGER,
    first_visible_at   INTEGER,
    finished_at        INTEGER,
    erased_at          INTEGER,
    -- 0: the room had collection switched off when this answer was made; never exported
    collected          INTEGER NOT NULL DEFAULT 1,
    UNIQUE (room_id, question_event_id, sibling),
    UNIQUE (room_id, answer_event_id)
);
INSERT INTO answers_v3 (id, room_id, question_event_id, sibling, question_ts, thread_root,
    answer_event_id, status, error, request_messages, context_event_ids, prompt_version, model,
    sampling, text, tokens, edits, attempts, created_at, started_at, first_token_at,
    first_visible_at, finished_at, erased_at)
SELECT id, room_id, question_event_id, sibling, question_ts, thread_root, answer_event_id, status,
    error, request_messages, context_event_ids, prompt_version, model, sampling, text, tokens,
    edits, attempts, created_at, started_at, first_token_at, first_visible_at, finished_at,
    erased_at
FROM answers;
DROP TABLE answers;
ALTER TABLE answers_v3 RENAME TO answers;
CREATE INDEX answers_open ON answers (status) WHERE status IN ('queued', 'streaming');
CREATE INDEX answers_finished ON answers (finished_at);

-- Commands and regenerations already carried out, per room.
CREATE TABLE handled_events_v2 (
    room_id   TEXT NOT NULL,
    event_id  TEXT NOT NULL,
    ts        INTEGER NOT NULL,
    PRIMARY KEY (room_id, event_id)
) WITHOUT ROWID;
INSERT INTO handled_events_v2 (room_id, event_id, ts)
SELECT '', event_id, ts FROM handled_events;
DROP TABLE handled_events;
ALTER TABLE handled_events_v2 RENAME TO handled_events;

CREATE INDEX votes_room_answer ON votes (room_id, answer_event_id, sender);
CREATE INDEX labels_room_answer ON labels (room_id, answer_event_id, sender);
CREATE INDEX corrections_room_answer ON corrections (room_id, answer_event_id);

-- One vote per person per answer: their latest reaction still standing (👍 then 👎 is a 👎;
-- five 👍 variants are one 👍; withdrawing the last one withdraws the vote). Arrival order, not
-- the sender's clock, decides which is latest.
CREATE VIEW current_votes AS
SELECT v.* FROM votes v
WHERE v.withdrawn_at IS NULL
  AND NOT EXISTS (
    SELECT 1 FROM votes w
    WHERE w.room_id = v.room_id AND w.answer_event_id = v.answer_event_id
      AND w.sender = v.sender AND w.withdrawn_at IS NULL AND w.rowid > v.rowid
  );

-- The consent notice version a room was last shown: a raised data.notice_version asks again.
-- NULL for notices posted before versions were kept: taken as the version in force at the
-- first start after this upgrade.
ALTER TABLE rooms ADD COLUMN consent_notice_version INTEGER;
-- What the bot knew of a room's DM-ness (NULL: not known yet).
ALTER TABLE rooms ADD COLUMN direct INTEGER;
