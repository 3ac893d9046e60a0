-- Several answers to one question (regenerations are siblings), and what each answer was built
-- from, so that erasing a message also erases every answer record that carried it.
CREATE TABLE answers_v2 (
    id                 INTEGER PRIMARY KEY,
    room_id            TEXT NOT NULL,
    question_event_id  TEXT NOT NULL,
    sibling            INTEGER NOT NULL DEFAULT 0,
    question_ts        INTEGER NOT NULL,
    thread_root        TEXT,
    answer_event_id    TEXT UNIQUE,
    status             TEXT NOT NULL DEFAULT 'queued'
                       CHECK (status IN ('queued', 'streaming', 'complete', 'cut', 'error', 'skipped')),
    error              TEXT,
    request_messages   TEXT,
    context_event_ids  TEXT,                 -- JSON: the Matrix events the context came from
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
    erased_at          INTEGER,              -- content removed (redaction or "forget me")
    UNIQUE (question_event_id, sibling)
);
INSERT INTO answers_v2 (id, room_id, question_event_id, sibling, question_ts, thread_root,
    answer_event_id, status, error, request_messages, prompt_version, model, sampling, text,
    tokens, edits, attempts, created_at, started_at, first_token_at, first_visible_at, finished_at)
SELECT id, room_id, question_event_id, 0, question_ts, thread_root, answer_event_id, status, error,
    request_messages, prompt_version, model, sampling, text, tokens, edits, attempts, created_at,
    started_at, first_token_at, first_visible_at, finished_at
FROM answers;
DROP TABLE answers;
ALTER TABLE answers_v2 RENAME TO answers;
CREATE INDEX answers_open ON answers (status) WHERE status IN ('queued', 'streaming');
CREATE INDEX answers_finished ON answers (finished_at);

-- A correction is also a 👎 on the answer it corrects.
ALTER TABLE votes ADD COLUMN source TEXT NOT NULL DEFAULT 'vote' CHECK (source IN ('vote', 'correction'));

-- Reason emojis (❌ incorrect, ✂️ too long…) as labels on answers.
CREATE TABLE labels (
    reaction_event_id  TEXT PRIMARY KEY,
    answer_event_id    TEXT NOT NULL,
    room_id            TEXT NOT NULL,
    sender             TEXT NOT NULL,
    label              TEXT NOT NULL,
    raw_key            TEXT NOT NULL,
    ts                 INTEGER NOT NULL,
    withdrawn_at       INTEGER
);
CREATE INDEX labels_answer ON labels (answer_event_id);

-- "!lucie correct <better answer>" in reply to an answer.
CREATE TABLE corrections (
    event_id         TEXT PRIMARY KEY,
    answer_event_id  TEXT NOT NULL,
    room_id          TEXT NOT NULL,
    sender           TEXT NOT NULL,
    text             TEXT NOT NULL,
    ts               INTEGER NOT NULL
);
CREATE INDEX corrections_answer ON corrections (answer_event_id);

-- Consent history per person; the latest row is in force. After "forget me" only the fact of
-- erasure remains.
CREATE TABLE consents (
    id              INTEGER PRIMARY KEY,
    user_id         TEXT NOT NULL,
    action          TEXT NOT NULL CHECK (action IN ('yes', 'no', 'erased')),
    notice_version  INTEGER NOT NULL,
    room_id         TEXT,
    source_event_id TEXT,                    -- the ✅ reaction, when given that way
    ts              INTEGER NOT NULL
);
CREATE INDEX consents_user ON consents (user_id, id);

ALTER TABLE rooms ADD COLUMN collection INTEGER NOT NULL DEFAULT 1;
ALTER TABLE rooms ADD COLUMN consent_notice_event_id TEXT;
CREATE INDEX votes_sender ON votes (sender);
CREATE INDEX messages_sender ON messages (sender);
