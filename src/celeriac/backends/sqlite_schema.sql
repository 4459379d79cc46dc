-- The embedded result store's tables (backends/sqlite.py). Every statement is idempotent: it runs
-- once per process on first use, and the broker may keep its own tables in the same file.

-- Values by key. `version` is the `result_writes` counter of the transaction that wrote the row,
-- so a watcher that noted the counter knows which of its keys were written since.
CREATE TABLE IF NOT EXISTS results (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL,
    expires_at REAL,
    version INTEGER NOT NULL
);

CREATE INDEX IF NOT EXISTS results_expiry ON results (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE IF NOT EXISTS result_counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);

INSERT OR IGNORE INTO result_counters (name, value) VALUES ('result_writes', 0);

-- Chord counting: how many header results a chord waits for (size + extra), whether the body was
-- claimed, and each (task_id, idx) part once.
CREATE TABLE IF NOT EXISTS chords (
    group_id TEXT PRIMARY KEY,
    size INTEGER,
    extra INTEGER NOT NULL DEFAULT 0,
    claimed INTEGER NOT NULL DEFAULT 0,
    expires_at REAL
);

CREATE INDEX IF NOT EXISTS chords_expiry ON chords (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE IF NOT EXISTS chord_parts (
    group_id TEXT NOT NULL,
    task_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (group_id, task_id, idx)
);
