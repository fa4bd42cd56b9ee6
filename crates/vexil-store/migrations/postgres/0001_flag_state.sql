-- Flag state, change log and audit log of the PostgreSQL store: the same model as
-- `migrations/sqlite/0001_flag_state.sql`, which is the reference.
--
-- Resources are stored as their full JSON document (`doc`, exactly what `Committed::results`
-- and the change feed return) plus the few columns that reads filter or order on. The JSON is
-- kept as `text`, not `jsonb`: `jsonb` would rewrite numbers (`5e-324` comes back as 324
-- digits), reorder keys and refuse `\u0000`, and the store must hand back what it was given.
--
-- Keys are `COLLATE "C"` (byte order), the order listings and cursors use in every backend
-- (see the conformance suite), whatever the database's default collation is.

CREATE TABLE namespaces (
    key     text COLLATE "C" NOT NULL PRIMARY KEY,
    version bigint NOT NULL CHECK (version > 0),
    doc     text   NOT NULL
);

CREATE TABLE flags (
    namespace text COLLATE "C" NOT NULL REFERENCES namespaces (key),
    key       text COLLATE "C" NOT NULL,
    version   bigint NOT NULL CHECK (version > 0),
    -- Lower-cased (Unicode, by Rust) key, name and description joined by U+001F, as UTF-8
    -- bytes: the case-insensitive text filter is one `position` with no LIKE wildcards, and
    -- `bytea` holds a NUL, which names and descriptions may contain and `text` cannot.
    search    bytea  NOT NULL,
    doc       text   NOT NULL,
    PRIMARY KEY (namespace, key)
);

-- One row per (flag, tag), so the tag filter is an index probe rather than a JSON scan. Tags
-- are UTF-8 bytes for the same reason as `flags.search`.
CREATE TABLE flag_tags (
    namespace text COLLATE "C" NOT NULL,
    key       text COLLATE "C" NOT NULL,
    tag       bytea NOT NULL,
    PRIMARY KEY (namespace, key, tag),
    FOREIGN KEY (namespace, key) REFERENCES flags (namespace, key) ON DELETE CASCADE
);

CREATE INDEX flag_tags_by_tag ON flag_tags (namespace, tag, key);

CREATE TABLE segments (
    namespace text COLLATE "C" NOT NULL REFERENCES namespaces (key),
    key       text COLLATE "C" NOT NULL,
    version   bigint NOT NULL CHECK (version > 0),
    doc       text   NOT NULL,
    PRIMARY KEY (namespace, key)
);

-- The single-row revision counter. Every commit locks this row first (an UPDATE for a batch
-- with writes, SELECT ... FOR UPDATE for an audit-only batch), which serialises commits across
-- every process on the database: revisions are allocated and become visible in order, and the
-- reads a commit's checks make see every earlier commit. `revision` is the latest committed
-- revision (0 for an empty store).
CREATE TABLE revision_counter (
    singleton boolean NOT NULL PRIMARY KEY DEFAULT true CHECK (singleton),
    revision  bigint  NOT NULL CHECK (revision >= 0)
);

INSERT INTO revision_counter (singleton, revision) VALUES (true, 0);

-- One row per successful non-empty commit. Kept separately from `changes` so the history of
-- revisions survives if old changes are ever pruned.
CREATE TABLE revisions (
    revision     bigint NOT NULL PRIMARY KEY,
    committed_at bigint NOT NULL -- milliseconds since the Unix epoch
);

-- The change feed: one row per write, in batch order (`ordinal`).
CREATE TABLE changes (
    revision  bigint  NOT NULL REFERENCES revisions (revision),
    ordinal   integer NOT NULL,
    namespace text    NOT NULL,
    kind      text    NOT NULL CHECK (kind IN ('namespace', 'flag', 'segment')),
    key       text    NOT NULL,
    after     text, -- the resource JSON after the write; NULL for a delete
    PRIMARY KEY (revision, ordinal)
);

-- The audit log, hash-chained in `seq` order (see `vexil_store::chain_hash`).
CREATE TABLE audit_events (
    seq       bigint NOT NULL PRIMARY KEY,
    id        text   NOT NULL UNIQUE,
    at        bigint NOT NULL,
    namespace text   NOT NULL,
    kind      text   NOT NULL,
    key       text   NOT NULL,
    action    text   NOT NULL,
    revision  bigint, -- the commit it came with; NULL for an audit-only batch
    prev_hash text   NOT NULL,
    hash      text   NOT NULL,
    doc       text   NOT NULL -- the whole event as JSON, seq and hashes included
);

CREATE INDEX audit_events_by_resource ON audit_events (namespace, kind, key, seq);
