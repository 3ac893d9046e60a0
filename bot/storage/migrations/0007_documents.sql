-- Grounding: documents shared in rooms and operators' collections, cut into passages that are
-- searched by their terms (FTS5, BM25) and by meaning (vectors), and what each answer used.

CREATE TABLE collections (
    name        TEXT PRIMARY KEY,
    exportable  INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL
) WITHOUT ROWID;

-- A document belongs to a room (shared by a message) or to a collection (added by `kb add`).
-- It is searched only once 'ready': a file being indexed, or one that failed, is never found.
CREATE TABLE documents (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    version     TEXT NOT NULL,              -- sha256 of the file's bytes
    kind        TEXT NOT NULL,
    size        INTEGER NOT NULL,
    pages       INTEGER,
    passages    INTEGER NOT NULL DEFAULT 0,
    status      TEXT NOT NULL DEFAULT 'indexing' CHECK (status IN ('indexing', 'ready')),
    added_at    INTEGER NOT NULL,
    room_id     TEXT,
    event_id    TEXT,
    sharer      TEXT,
    collection  TEXT REFERENCES collections (name),
    path        TEXT,
    embedded    INTEGER NOT NULL DEFAULT 0,  -- every passage has a vector
    CHECK ((room_id IS NULL) <> (collection IS NULL))
);
CREATE INDEX documents_room_event ON documents (room_id, event_id);
CREATE INDEX documents_collection_path ON documents (collection, path);
CREATE INDEX documents_sharer ON documents (sharer);
CREATE INDEX documents_status ON documents (status);

CREATE TABLE passages (
    id           INTEGER PRIMARY KEY,
    document_id  INTEGER NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    ordinal      INTEGER NOT NULL,
    page         INTEGER,
    section      TEXT,
    text         TEXT NOT NULL
);
CREATE INDEX passages_document ON passages (document_id, ordinal);

-- The passages' analysed terms (bot/rag/analysis.py: folded, stemmed, stop words out); the
-- rowid is the passage's id. `owner` holds one token naming the passage's room or collection
-- (bot/storage/document_store.py), so that a search intersects the scope inside the index
-- instead of ranking the whole corpus; its BM25 weight is 0.
CREATE VIRTUAL TABLE passage_terms USING fts5 (
    terms, owner, tokenize = 'unicode61 remove_diacritics 2'
);
-- How many passages hold each term: a search leaves out the terms too common to be worth their
-- cost (their BM25 weight is small and scoring every passage holding them is what takes time).
CREATE VIRTUAL TABLE passage_vocab USING fts5vocab (passage_terms, 'col');

-- L2-normalised float32 little-endian vectors.
CREATE TABLE passage_vectors (
    passage_id  INTEGER PRIMARY KEY REFERENCES passages (id) ON DELETE CASCADE,
    vector      BLOB NOT NULL
);

-- FTS5 knows no foreign keys: a passage's terms go with it, in the same statement, however the
-- passage goes (its document removed, replaced, or cascaded). The index's segments keep deleted
-- terms until merged: a removal ends with the 'optimize' command (bot/storage/document_store.py).
CREATE TRIGGER passages_gone AFTER DELETE ON passages BEGIN
    DELETE FROM passage_terms WHERE rowid = OLD.id;
    DELETE FROM passage_vectors WHERE passage_id = OLD.id;
END;

-- Bumped whenever a searchable document of a room or collection appears or goes, so that
-- vectors held in memory are read again only when their room or collection changed (the
-- `lucie-bot kb` command changes collections from another process).
CREATE TABLE document_generations (
    owner       TEXT PRIMARY KEY,            -- 'room:<room id>' or 'collection:<name>'
    generation  INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TRIGGER documents_ready AFTER UPDATE OF status ON documents
WHEN NEW.status = 'ready' AND OLD.status <> 'ready' BEGIN
    INSERT INTO document_generations (owner, generation)
    VALUES (CASE WHEN NEW.collection IS NULL THEN 'room:' || NEW.room_id
            ELSE 'collection:' || NEW.collection END, 1)
    ON CONFLICT (owner) DO UPDATE SET generation = generation + 1;
END;

CREATE TRIGGER documents_gone AFTER DELETE ON documents WHEN OLD.status = 'ready' BEGIN
    INSERT INTO document_generations (owner, generation)
    VALUES (CASE WHEN OLD.collection IS NULL THEN 'room:' || OLD.room_id
            ELSE 'collection:' || OLD.collection END, 1)
    ON CONFLICT (owner) DO UPDATE SET generation = generation + 1;
END;

CREATE TABLE room_documents (
    room_id     TEXT PRIMARY KEY,
    auto_index  INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

-- A room's choices: used = 1 adds a collection, used = 0 opts out of a default one.
CREATE TABLE room_collections (
    room_id     TEXT NOT NULL,
    collection  TEXT NOT NULL,
    used        INTEGER NOT NULL,
    PRIMARY KEY (room_id, collection)
) WITHOUT ROWID;

-- The passages given to the model for an answer, in rank order. No passage text here: it is
-- read from `passages` while the passage exists. A newer version of a file leaves the rows
-- (passage_id becomes NULL, the citation fields stay); removing a document (redaction,
-- `docs remove`, "forget me", `kb remove`) deletes its rows.
CREATE TABLE answer_sources (
    answer_id         INTEGER NOT NULL REFERENCES answers (id) ON DELETE CASCADE,
    rank              INTEGER NOT NULL,
    passage_id        INTEGER REFERENCES passages (id) ON DELETE SET NULL,
    document_id       INTEGER,
    document_version  TEXT,
    document_name     TEXT,
    page              INTEGER,
    section           TEXT,
    collection        TEXT,
    event_id          TEXT,
    score             REAL,
    lexical_rank      INTEGER,
    dense_rank        INTEGER,
    cited             INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (answer_id, rank)
) WITHOUT ROWID;
CREATE INDEX answer_sources_passage ON answer_sources (passage_id);
CREATE INDEX answer_sources_document ON answer_sources (document_id);

-- NULL: the room uses no documents; 0: documents were searched, nothing relevant; 1: grounded.
ALTER TABLE answers ADD COLUMN grounded INTEGER;
-- `!lucie sources` without a reply: the room's latest answer that was given sources.
CREATE INDEX answers_grounded ON answers (room_id, id) WHERE grounded = 1;
