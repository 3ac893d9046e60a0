-- Encrypted events the bot could not read yet: kept (still encrypted) until their room key
-- arrives, so a late key or a restart loses no question.
CREATE TABLE undecrypted (
    event_id     TEXT PRIMARY KEY,
    room_id      TEXT NOT NULL,
    sender       TEXT NOT NULL,
    session_id   TEXT NOT NULL,
    source       TEXT NOT NULL,          -- the m.room.encrypted event as received
    received_at  INTEGER NOT NULL,
    noticed_at   INTEGER                 -- when the "could not read" notice went out
);
CREATE INDEX undecrypted_session ON undecrypted (session_id);

-- Room keys already in the server-side key backup, per backup version.
CREATE TABLE backed_up_sessions (
    version     TEXT NOT NULL,
    session_id  TEXT NOT NULL,
    PRIMARY KEY (version, session_id)
) WITHOUT ROWID;
