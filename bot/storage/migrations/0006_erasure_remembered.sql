-- Erasure is remembered: an erased message stays erased, even when it is fetched again from the
-- homeserver, or was in the context of an answer still waiting for the model when it went.
CREATE TABLE erased_events (
    room_id    TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    erased_at  INTEGER NOT NULL,
    PRIMARY KEY (room_id, event_id)
) WITHOUT ROWID;
-- "forget me": what the person had written until then is never stored again.
CREATE TABLE erased_people (
    user_id    TEXT PRIMARY KEY,
    erased_at  INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO erased_people (user_id, erased_at)
SELECT user_id, MAX(ts) FROM consents WHERE action = 'erased' GROUP BY user_id;

-- Reactions, corrections and waiting events are keyed by room and event id too: an id chosen
-- by another room's server must not shadow one of this room's.
DROP VIEW current_votes;
CREATE TABLE votes_v2 (
    reaction_event_id  TEXT NOT NULL,
    answer_event_id    TEXT NOT NULL,
    room_id            TEXT NOT NULL,
    sender             TEXT NOT NULL,
    vote               TEXT NOT NULL CHECK (vote IN ('up', 'down')),
    raw_key            TEXT NOT NULL,
    ts                 INTEGER NOT NULL,
    withdrawn_at       INTEGER,
    source             TEXT NOT NULL DEFAULT 'vote' CHECK (source IN ('vote', 'correction')),
    PRIMARY KEY (room_id, reaction_event_id)
);
INSERT INTO votes_v2 (reaction_event_id, answer_event_id, room_id, sender, vote, raw_key, ts,
    withdrawn_at, source)
SELECT reaction_event_id, answer_event_id, room_id, sender, vote, raw_key, ts, withdrawn_at, source
FROM votes ORDER BY rowid;
DROP TABLE votes;
ALTER TABLE votes_v2 RENAME TO votes;
CREATE INDEX votes_room_answer ON votes (room_id, answer_event_id, sender);
CREATE INDEX votes_sender ON votes (sender);

CREATE TABLE labels_v2 (
    reaction_event_id  TEXT NOT NULL,
    answer_event_id    TEXT NOT NULL,
    room_id            TEXT NOT NULL,
    sender             TEXT NOT NULL,
    label              TEXT NOT NULL,
    raw_key            TEXT NOT NULL,
    ts                 INTEGER NOT NULL,
    withdrawn_at       INTEGER,
    PRIMARY KEY (room_id, reaction_event_id)
);
INSERT INTO labels_v2 SELECT reaction_event_id, answer_event_id, room_id, sender, label, raw_key,
    ts, withdrawn_at FROM labels ORDER BY rowid;
DROP TABLE labels;
ALTER TABLE labels_v2 RENAME TO labels;
CREATE INDEX labels_room_answer ON labels (room_id, answer_event_id, sender);

CREATE TABLE corrections_v2 (
    event_id         TEXT NOT NULL,
    answer_event_id  TEXT NOT NULL,
    room_id          TEXT NOT NULL,
    sender           TEXT NOT NULL,
    text             TEXT NOT NULL,
    ts               INTEGER NOT NULL,
    PRIMARY KEY (room_id, event_id)
);
INSERT INTO corrections_v2 SELECT event_id, answer_event_id, room_id, sender, text, ts
FROM corrections ORDER BY rowid;
DROP TABLE corrections;
ALTER TABLE corrections_v2 RENAME TO corrections;
CREATE INDEX corrections_room_answer ON corrections (room_id, answer_event_id);

CREATE TABLE undecrypted_v2 (
    event_id     TEXT NOT NULL,
    room_id      TEXT NOT NULL,
    sender       TEXT NOT NULL,
    session_id   TEXT NOT NULL,
    source       TEXT NOT NULL,
    received_at  INTEGER NOT NULL,
    noticed_at   INTEGER,
    PRIMARY KEY (room_id, event_id)
);
INSERT INTO undecrypted_v2 SELECT event_id, room_id, sender, session_id, source, received_at,
    noticed_at FROM undecrypted ORDER BY rowid;
DROP TABLE undecrypted;
ALTER TABLE undecrypted_v2 RENAME TO undecrypted;
CREATE INDEX undecrypted_session ON undecrypted (room_id, sender, session_id);

CREATE VIEW current_votes AS
SELECT v.* FROM votes v
WHERE v.withdrawn_at IS NULL
  AND NOT EXISTS (
    SELECT 1 FROM votes w
    WHERE w.room_id = v.room_id AND w.answer_event_id = v.answer_event_id
      AND w.sender = v.sender AND w.withdrawn_at IS NULL AND w.rowid > v.rowid
  );
