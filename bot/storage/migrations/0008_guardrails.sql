-- Guardrails. An answer refused before the model, or replaced after it, says so (JSON: stage,
-- categories, backend); exports keep it out of training rows and may label it a safety example.
ALTER TABLE answers ADD COLUMN refusal TEXT;
-- The operators' policy the model read first, by its hash: exports record it beside the room's
-- own prompt version, as it was then, even after the file changed.
ALTER TABLE answers ADD COLUMN policy_sha256 TEXT;
-- Who asked for a regeneration (NULL: the question's own sender), so that its tokens count
-- against that person's quota, not the asker's.
ALTER TABLE answers ADD COLUMN requested_by TEXT;
-- When a message was last edited: an answer that read it before is no longer what the model
-- read, and is not exported (an edit still replaces the text kept, so people can take back what
-- they wrote).
ALTER TABLE messages ADD COLUMN edited_at INTEGER;
CREATE TABLE policies (
    sha256      TEXT PRIMARY KEY,
    lang        TEXT NOT NULL,
    text        TEXT NOT NULL,
    first_used  INTEGER NOT NULL
) WITHOUT ROWID;
-- Each moderation decision that was not a plain pass: who (a keyed hash, never the user id),
-- where, at which stage, which category; the text only when log_content is on.
CREATE TABLE incidents (
    id         INTEGER PRIMARY KEY,
    room_id    TEXT NOT NULL,
    answer_id  INTEGER,
    stage      TEXT NOT NULL CHECK (stage IN ('question', 'passages', 'answer')),
    category   TEXT NOT NULL,
    backend    TEXT NOT NULL,
    action     TEXT NOT NULL CHECK (action IN ('refuse', 'log', 'unavailable')),
    sender     TEXT NOT NULL,
    text       TEXT,
    ts         INTEGER NOT NULL
);
CREATE INDEX incidents_room ON incidents (room_id, ts);
CREATE INDEX incidents_answer ON incidents (answer_id) WHERE answer_id IS NOT NULL;
-- What each person and room spent, for quotas over hours and days; rows older than the longest
-- window are pruned. People are keyed by a keyed hash, so that "forget me" leaves no id here
-- while the counts still hold.
CREATE TABLE usage (
    scope   TEXT NOT NULL,
    kind    TEXT NOT NULL CHECK (kind IN ('question', 'tokens')),
    amount  INTEGER NOT NULL,
    ts      INTEGER NOT NULL
);
CREATE INDEX usage_scope ON usage (scope, kind, ts);
-- People already reminded not to share personal identifiers (once each).
CREATE TABLE pii_reminded (
    user_id  TEXT PRIMARY KEY,
    ts       INTEGER NOT NULL
) WITHOUT ROWID;
-- Keys the bot makes for itself (the incidents' and quotas' keyed hashes).
CREATE TABLE local_keys (
    name   TEXT PRIMARY KEY,
    value  BLOB NOT NULL
) WITHOUT ROWID;
