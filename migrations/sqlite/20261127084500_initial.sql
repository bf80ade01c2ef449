-- The whole schema. Conventions shared with the PostgreSQL migration:
-- timestamps are INTEGER epoch milliseconds, JSON is TEXT, booleans are INTEGER 0/1.

-- The inbox: every webhook as received, in arrival order (AUTOINCREMENT: ids are never
-- reused, even after pruning).
CREATE TABLE events (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    dedupe_key      TEXT    NOT NULL UNIQUE,
    event_type      TEXT    NOT NULL,
    session_id      TEXT,
    content_id      TEXT,
    body            TEXT    NOT NULL,
    received_at     INTEGER NOT NULL,
    status          TEXT    NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'processed', 'ignored')),
    lease_owner     TEXT,
    lease_until     INTEGER,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER,
    processed_at    INTEGER,
    last_error      TEXT
);
CREATE INDEX events_pending ON events (id) WHERE status = 'pending';
CREATE INDEX events_session ON events (session_id, id);
CREATE INDEX events_received_at ON events (received_at);

-- Every rule decision: fired, or the reason it did not.
CREATE TABLE decisions (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id   INTEGER NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    session_id TEXT,
    rule_id    TEXT    NOT NULL,
    fired      INTEGER NOT NULL CHECK (fired IN (0, 1)),
    reason     TEXT    NOT NULL,
    detail     TEXT,
    decided_at INTEGER NOT NULL
);
CREATE INDEX decisions_event ON decisions (event_id);
CREATE INDEX decisions_rule ON decisions (rule_id, decided_at);
CREATE INDEX decisions_session_fired ON decisions (session_id, decided_at) WHERE fired = 1;

-- Reply steps to deliver; (event, rule, step) can be planned once only.
CREATE TABLE jobs (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id           INTEGER NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    rule_id            TEXT    NOT NULL,
    step               INTEGER NOT NULL,
    session_id         TEXT    NOT NULL,
    kind               TEXT    NOT NULL CHECK (kind IN ('text', 'file', 'file_url')),
    payload            TEXT    NOT NULL,
    sync               INTEGER NOT NULL DEFAULT 0 CHECK (sync IN (0, 1)),
    status             TEXT    NOT NULL DEFAULT 'planned'
                       CHECK (status IN ('planned', 'sending', 'sent', 'failed', 'dead',
                                         'expired', 'skipped', 'dry_run')),
    attempts           INTEGER NOT NULL DEFAULT 0,
    next_attempt_at    INTEGER,
    lease_owner        TEXT,
    lease_until        INTEGER,
    attempt_started_at INTEGER,
    age_from           INTEGER NOT NULL,
    wts_message_id     TEXT,
    wts_status         TEXT,
    last_error         TEXT,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL,
    sent_at            INTEGER,
    UNIQUE (event_id, rule_id, step)
);
CREATE INDEX jobs_due ON jobs (status, next_attempt_at);
CREATE INDEX jobs_session ON jobs (session_id, id);
CREATE INDEX jobs_rule ON jobs (rule_id, status);
CREATE INDEX jobs_wts_message ON jobs (wts_message_id) WHERE wts_message_id IS NOT NULL;

-- Last firing per rule and scope ('session:<id>' or 'contact:<id>').
CREATE TABLE cooldowns (
    rule_id  TEXT    NOT NULL,
    scope    TEXT    NOT NULL,
    fired_at INTEGER NOT NULL,
    PRIMARY KEY (rule_id, scope)
);

CREATE TABLE rules (
    id          TEXT    PRIMARY KEY,
    definition  TEXT    NOT NULL,
    source      TEXT    NOT NULL CHECK (source IN ('api', 'file')),
    source_path TEXT,
    revision    INTEGER NOT NULL DEFAULT 1,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

-- Kept after a rule is deleted, so it can be restored.
CREATE TABLE rule_revisions (
    rule_id  TEXT    NOT NULL,
    revision INTEGER NOT NULL,
    actor    TEXT    NOT NULL,
    at       INTEGER NOT NULL,
    action   TEXT    NOT NULL,
    before   TEXT,
    after    TEXT,
    PRIMARY KEY (rule_id, revision)
);

CREATE TABLE assets (
    name       TEXT    PRIMARY KEY,
    sha256     TEXT    NOT NULL,
    size       INTEGER NOT NULL,
    mime       TEXT    NOT NULL,
    source     TEXT    NOT NULL CHECK (source IN ('upload', 'rules')),
    created_at INTEGER NOT NULL
);
CREATE INDEX assets_sha256 ON assets (sha256);

-- Content-addressed bytes, so every instance can read every asset.
CREATE TABLE blobs (
    sha256 TEXT PRIMARY KEY,
    bytes  BLOB NOT NULL
);

-- WTS fileIds already uploaded, per WTS base URL and content.
CREATE TABLE wts_files (
    base_url    TEXT    NOT NULL,
    sha256      TEXT    NOT NULL,
    file_id     TEXT    NOT NULL,
    uploaded_at INTEGER NOT NULL,
    PRIMARY KEY (base_url, sha256)
);

-- API tokens; only a sha256 of each secret is kept.
CREATE TABLE tokens (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT    NOT NULL,
    role       TEXT    NOT NULL CHECK (role IN ('admin', 'editor', 'viewer')),
    token_hash TEXT    NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- GCRA theoretical arrival time per budget, shared by every instance.
CREATE TABLE pacing (
    name TEXT    PRIMARY KEY,
    tat  INTEGER NOT NULL
);
