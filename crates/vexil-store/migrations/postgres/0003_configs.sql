-- Configuration entries (`vexil_store::ConfigStore`), the same model as
-- `migrations/sqlite/0003_configs.sql`, which is the reference: the current entry of each key
-- and every version it has had, each as its full JSON document (`text`, for the reasons given
-- in 0001), keyed `COLLATE "C"` so listings are in byte order like every backend.

CREATE TABLE configs (
    namespace text COLLATE "C" NOT NULL REFERENCES namespaces (key),
    key       text COLLATE "C" NOT NULL,
    version   bigint NOT NULL CHECK (version > 0),
    doc       text   NOT NULL,
    PRIMARY KEY (namespace, key)
);

-- A delete removes the history with the entry (the audit log keeps what it was), so an entry
-- created again starts over at version 1 without colliding with old rows.
CREATE TABLE config_versions (
    namespace text COLLATE "C" NOT NULL,
    key       text COLLATE "C" NOT NULL,
    version   bigint NOT NULL CHECK (version > 0),
    doc       text   NOT NULL,
    PRIMARY KEY (namespace, key, version),
    FOREIGN KEY (namespace, key) REFERENCES configs (namespace, key) ON DELETE CASCADE
);

-- The change feed carries config changes too. 0001 declared the check inline, so it has
-- PostgreSQL's default name; replacing it keeps every row (they all satisfy the wider check).
ALTER TABLE changes
    DROP CONSTRAINT changes_kind_check,
    ADD CONSTRAINT changes_kind_check
        CHECK (kind IN ('namespace', 'flag', 'segment', 'config'));
