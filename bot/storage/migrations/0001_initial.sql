-- Rooms the bot is in, with what their admins chose.
CREATE TABLE rooms (
    room_id      TEXT PRIMARY KEY,
    joined_at    INTEGER NOT NULL,           -- ms; messages older than this are never answered
    mode         TEXT NOT NULL DEFAULT 'mention' CHECK (mode IN ('mention', 'all')),
    lang         TEXT CHECK (lang IN ('fr', 'en')),   -- NULL: the configured default
    notice_sent  INTEGER NOT NULL DEFAULT 0,
    dm_reset_at  INTEGER NOT NULL DEFAULT 0  -- ms; DM context starts after this
);

-- Every version of a room's system prompt; text NULL means "back to the default".
CREATE TABLE prompts (
    room_id  TEXT NOT NULL,
    version  INTEGER NOT NULL,
    text     TEXT,
    set_by   TEXT NOT NULL,
    set_at   INTEGER NOT NULL,
    PRIMARY KEY (room_id, version)
);

-- Texts the bot took part in: questions, its answers, and links of reply chains it followed.
CREATE TABLE messages (
    event_id     TEXT PRIMARY KEY,
    room_id      TEXT NOT NULL,
    sender       TEXT NOT NULL,
    sender_name  TEXT,
    body         TEXT NOT NULL,
    ts           INTEGER NOT NULL,
    reply_to     TEXT,
    thread_root  TEXT,
    from_bot     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX messages_room_ts ON messages (room_id, ts);
CREATE INDEX messages_thread ON messages (room_id, thread_root) WHERE thread_root IS NOT NULL;

-- One row per question the bot decided to answer; the row exists before the answer does,
-- so a restart knows what is owed and never answers twice.
CREATE TABLE answers (
    id                 INTEGER PRIMARY KEY,
    room_id            TEXT NOT NULL,
    question_event_id  TEXT NOT NULL UNIQUE,
    question_ts        INTEGER NOT NULL,
    thread_root        TEXT,
    answer_event_id    TEXT UNIQUE,
    status             TEXT NOT NULL DEFAULT 'queued'
                       CHECK (status IN ('queued', 'streaming', 'complete', 'cut', 'error', 'skipped')),
    error              TEXT,
    request_messages   TEXT,                 -- JSON: exactly what was sent to the model
    prompt_version     INTEGER NOT NULL DEFAULT 0,
    model              TEXT,
    sampling           TEXT,                 -- JSON
    text               TEXT,
    tokens             INTEGER,
    edits              INTEGER NOT NULL DEFAULT 0,
    attempts           INTEGER NOT NULL DEFAULT 0,
    created_at         INTEGER NOT NULL,
    started_at         INTEGER,
    first_token_at     INTEGER,
    first_visible_at   INTEGER,
    finished_at        INTEGER
);
CREATE INDEX answers_open ON answers (status) WHERE status IN ('queued', 'streaming');

-- 👍/👎 reactions on answers; a redaction withdraws one.
CREATE TABLE votes (
    reaction_event_id  TEXT PRIMARY KEY,
    answer_event_id    TEXT NOT NULL,
    room_id            TEXT NOT NULL,
    sender             TEXT NOT NULL,
    vote               TEXT NOT NULL CHECK (vote IN ('up', 'down')),
    raw_key            TEXT NOT NULL,
    ts                 INTEGER NOT NULL,
    withdrawn_at       INTEGER
);
CREATE INDEX votes_answer ON votes (answer_event_id);

CREATE TABLE sync_state (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    next_batch  TEXT NOT NULL
);

-- Commands already carried out, so a sync replayed after a crash does not run them twice.
CREATE TABLE handled_events (
    event_id  TEXT PRIMARY KEY,
    ts        INTEGER NOT NULL
);
