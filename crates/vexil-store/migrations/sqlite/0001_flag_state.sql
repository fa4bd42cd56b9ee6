-- Flag state, change log and audit log of the embedded store.
--
-- Resources are stored as their full JSON document (`doc`, exactly what `Committed::results`
-- and the change feed return) plus the few columns that reads filter or order on. The JSON is
-- the source of truth; the columns are derived from it inside the same transaction.
--
-- Keys compare with SQLite's default BINARY collation (byte order), which is the order listings
-- and cursors use, and the order every backend must use (see the conformance suite).

CREATE TABLE namespaces (
    key     TEXT    NOT NULL PRIMARY KEY,
    version INTEGER NOT NULL CHECK (version > 0),
    doc     TEXT    NOT NULL
) STRICT, WITHOUT ROWID;

CREATE TABLE flags (
    namespace TEXT    NOT NULL REFERENCES namespaces (key),
    key       TEXT    NOT NULL,
    version   INTEGER NOT NULL CHECK (version > 0),
    -- Lower-cased (Unicode, by Rust) key, name and description joined by U+001F, so that the
    -- case-insensitive text filter is one `instr` without SQLite's ASCII-only `lower`/`LIKE`.
    search    TEXT    NOT NULL,
    doc       TEXT    NOT NULL,
    PRIMARY KEY (namespace, key)
) STRICT, WITHOUT ROWID;

-- One row per (flag, tag), so the tag filter is an index probe rather than a JSON scan.
CREATE TABLE flag_tags (
    namespace TEXT NOT NULL,
    key       TEXT NOT NULL,
    tag       TEXT NOT NULL,
    PRIMARY KEY (namespace, key, tag),
    FOREIGN KEY (namespace, key) REFERENCES flags (namespace, key) ON DELETE CASCADE
) STRICT, WITHOUT ROWID;

CREATE INDEX flag_tags_by_tag ON flag_tags (namespace, tag, key);

CREATE TABLE segments (
    namespace TEXT    NOT NULL REFERENCES namespaces (key),
    key       TEXT    NOT NULL,
    version   INTEGER NOT NULL CHECK (version > 0),
    doc       TEXT    NOT NULL,
    PRIMARY KEY (namespace, key)
) STRICT, WITHOUT ROWID;

-- One row per successful non-empty commit. Kept separately from `changes` so the current
-- revision survives if old changes are ever pruned.
CREATE TABLE revisions (
    revision     INTEGER NOT NULL PRIMARY KEY,
    committed_at INTEGER NOT NULL -- milliseconds since the Unix epoch
) STRICT;

-- The change feed: one row per write, in batch order (`ordinal`).
CREATE TABLE changes (
    revision  INTEGER NOT NULL REFERENCES revisions (revision),
    ordinal   INTEGER NOT NULL,
    namespace TEXT    NOT NULL,
    kind      TEXT    NOT NULL CHECK (kind IN ('namespace', 'flag', 'segment')),
    key       TEXT    NOT NULL,
    after     TEXT, -- the resource JSON after the write; NULL for a delete
    PRIMARY KEY (revision, ordinal)
) STRICT, WITHOUT ROWID;

-- The audit log, hash-chained in `seq` order (see `vexil_store::chain_hash`).
CREATE TABLE audit_events (
    seq       INTEGER NOT NULL PRIMARY KEY,
    id        TEXT    NOT NULL UNIQUE,
    at        INTEGER NOT NULL,
    namespace TEXT    NOT NULL,
    kind      TEXT    NOT NULL,
    key       TEXT    NOT NULL,
    action    TEXT    NOT NULL,
    revision  INTEGER, -- the commit it came with; NULL for an audit-only batch
    prev_hash TEXT    NOT NULL,
    hash      TEXT    NOT NULL,
    doc       TEXT    NOT NULL -- the whole event as JSON, seq and hashes included
) STRICT;

CREATE INDEX audit_events_by_resource ON audit_events (namespace, kind, key, seq);
