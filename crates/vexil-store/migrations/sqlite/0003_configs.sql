-- Configuration entries (`vexil_store::ConfigStore`): the current entry of each key, and every
-- version it has had, so that history and rollback can be served.
--
-- As in 0001, each row is the entry's full JSON document (`doc`, the source of truth). A
-- version row is the stamped entry exactly as that put stored it; the current row repeats the
-- latest one so that reads of the current state need no `MAX(version)`.

CREATE TABLE configs (
    namespace TEXT    NOT NULL REFERENCES namespaces (key),
    key       TEXT    NOT NULL,
    version   INTEGER NOT NULL CHECK (version > 0),
    doc       TEXT    NOT NULL,
    PRIMARY KEY (namespace, key)
) STRICT, WITHOUT ROWID;

-- A delete removes the history with the entry (the audit log keeps what it was), so an entry
-- created again starts over at version 1 without colliding with old rows.
CREATE TABLE config_versions (
    namespace TEXT    NOT NULL,
    key       TEXT    NOT NULL,
    version   INTEGER NOT NULL CHECK (version > 0),
    doc       TEXT    NOT NULL,
    PRIMARY KEY (namespace, key, version),
    FOREIGN KEY (namespace, key) REFERENCES configs (namespace, key) ON DELETE CASCADE
) STRICT, WITHOUT ROWID;

-- The change feed carries config changes too. SQLite cannot alter a CHECK constraint, so the
-- table is rebuilt with the wider one; nothing references `changes`, and the copy keeps every
-- row, so this is safe on a populated database.
CREATE TABLE changes_0003 (
    revision  INTEGER NOT NULL REFERENCES revisions (revision),
    ordinal   INTEGER NOT NULL,
    namespace TEXT    NOT NULL,
    kind      TEXT    NOT NULL CHECK (kind IN ('namespace', 'flag', 'segment', 'config')),
    key       TEXT    NOT NULL,
    after     TEXT, -- the resource JSON after the write; NULL for a delete
    PRIMARY KEY (revision, ordinal)
) STRICT, WITHOUT ROWID;

INSERT INTO changes_0003 (revision, ordinal, namespace, kind, key, after)
    SELECT revision, ordinal, namespace, kind, key, after FROM changes;

DROP TABLE changes;

ALTER TABLE changes_0003 RENAME TO changes;
