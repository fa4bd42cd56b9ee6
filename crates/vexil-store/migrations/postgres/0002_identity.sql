-- Identity: users, custom roles, role bindings and API tokens (`vexil_store::IdentityStore`),
-- the same model as `migrations/sqlite/0002_identity.sql`, which is the reference.
--
-- As in 0001, each resource is its full JSON document (`doc`, as `text` for the reasons given
-- there) plus the columns that reads or the commit's checks look up, keyed `COLLATE "C"` so
-- `load_identity` lists in byte order like every backend. There is no change log: replicas
-- notice identity writes by polling the single-row revision counter below. Identity audit
-- events go into `audit_events` with the flag events (one hash chain), with a NULL `revision`.
--
-- Identity commits take the `revision_counter` row lock first, like flag commits: that lock
-- is what serialises the audit chain's tail, and it also makes the identity checks exact.

CREATE TABLE users (
    name    text COLLATE "C" NOT NULL PRIMARY KEY,
    version bigint NOT NULL CHECK (version > 0),
    doc     text   NOT NULL
);

-- Custom roles only; the built-in ones are never stored.
CREATE TABLE roles (
    name    text COLLATE "C" NOT NULL PRIMARY KEY,
    version bigint NOT NULL CHECK (version > 0),
    doc     text   NOT NULL
);

-- No foreign keys to users or tokens: `subject` is `user:<name>` or `token:<id>`, and what
-- outlives what (a user's bindings when the user goes) is the service's rule, not the store's.
CREATE TABLE role_bindings (
    id      text COLLATE "C" NOT NULL PRIMARY KEY,
    subject text COLLATE "C" NOT NULL, -- `Subject`'s display form
    doc     text NOT NULL
);

CREATE INDEX role_bindings_by_subject ON role_bindings (subject, id);

-- `digest` is unique so that one secret can never authenticate as two tokens; the commit
-- checks it first and reports a duplicate as `AlreadyExists`.
CREATE TABLE api_tokens (
    id     text COLLATE "C" NOT NULL PRIMARY KEY,
    digest text NOT NULL UNIQUE, -- hex SHA-256 of the secret
    doc    text NOT NULL
);

-- The identity revision: bumped once by every identity commit that has writes. `revision` is
-- the latest one (0 before the first identity write).
CREATE TABLE identity_revision (
    singleton boolean NOT NULL PRIMARY KEY DEFAULT true CHECK (singleton),
    revision  bigint  NOT NULL CHECK (revision >= 0)
);

INSERT INTO identity_revision (singleton, revision) VALUES (true, 0);
