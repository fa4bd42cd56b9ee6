-- Identity: users, custom roles, role bindings and API tokens (`vexil_store::IdentityStore`).
--
-- As in 0001, each resource is its full JSON document (`doc`, the source of truth) plus the
-- columns that reads or the commit's checks look up. Identity is small and read whole, so there
-- is no change log: replicas notice writes by polling the single-row revision counter below.
-- Identity audit events go into `audit_events` with the flag events (one hash chain), with a
-- NULL `revision`, since they consume no flag revision.

CREATE TABLE users (
    name    TEXT    NOT NULL PRIMARY KEY,
    version INTEGER NOT NULL CHECK (version > 0),
    doc     TEXT    NOT NULL
) STRICT, WITHOUT ROWID;

-- Custom roles only; the built-in ones are never stored.
CREATE TABLE roles (
    name    TEXT    NOT NULL PRIMARY KEY,
    version INTEGER NOT NULL CHECK (version > 0),
    doc     TEXT    NOT NULL
) STRICT, WITHOUT ROWID;

-- No foreign keys to users or tokens: `subject` is `user:<name>` or `token:<id>`, and what
-- outlives what (a user's bindings when the user goes) is the service's rule, not the store's.
CREATE TABLE role_bindings (
    id      TEXT NOT NULL PRIMARY KEY,
    subject TEXT NOT NULL, -- `Subject`'s display form
    doc     TEXT NOT NULL
) STRICT, WITHOUT ROWID;

CREATE INDEX role_bindings_by_subject ON role_bindings (subject, id);

-- `digest` is unique so that one secret can never authenticate as two tokens; the commit
-- checks it first and reports a duplicate as `AlreadyExists`.
CREATE TABLE api_tokens (
    id     TEXT NOT NULL PRIMARY KEY,
    digest TEXT NOT NULL UNIQUE, -- hex SHA-256 of the secret
    doc    TEXT NOT NULL
) STRICT, WITHOUT ROWID;

-- The identity revision: bumped once by every identity commit that has writes. `revision` is
-- the latest one (0 before the first identity write).
CREATE TABLE identity_revision (
    singleton INTEGER NOT NULL PRIMARY KEY CHECK (singleton = 1),
    revision  INTEGER NOT NULL CHECK (revision >= 0)
) STRICT;

INSERT INTO identity_revision (singleton, revision) VALUES (1, 0);
