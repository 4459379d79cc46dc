-- Beat's tables in the SQLite broker file (or in the local schedule file when the broker has no
-- shared store). Kept apart from the broker's own schema: only beat reads or writes them.

-- One row per lock name: who leads, and until when (epoch seconds) unless renewed.
CREATE TABLE IF NOT EXISTS celeriac_beat_lock (
    name       TEXT PRIMARY KEY,
    owner      TEXT NOT NULL,
    expires_at REAL NOT NULL
);

-- The last run of every schedule entry. `version` grows by one per claimed run: a claim names the
-- version it read and fails when another process claimed first.
CREATE TABLE IF NOT EXISTS celeriac_beat_state (
    namespace       TEXT NOT NULL,
    entry           TEXT NOT NULL,
    version         INTEGER NOT NULL,
    last_run_at     REAL,
    due_at          REAL,
    total_run_count INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (namespace, entry)
);
