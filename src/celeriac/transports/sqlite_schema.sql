-- The embedded broker's tables (transports/sqlite.py). Every statement is idempotent: it runs
-- once per process on first use, and the result store may keep its own tables in the same file.

-- Every message not yet acked. state: 0 = waiting, 1 = leased to `owner` until `lease_until`,
-- 2 = parked (hidden) until `visible_at`. Fetch order: priority DESC, seq, id. `seq` is 0 for
-- published messages (FIFO by id) and negative for requeued ones (they go to the head).
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    queue TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    seq INTEGER NOT NULL DEFAULT 0,
    state INTEGER NOT NULL DEFAULT 0,
    visible_at REAL NOT NULL DEFAULT 0,
    owner TEXT,
    lease_until REAL,
    deliveries INTEGER NOT NULL DEFAULT 0,
    redelivered INTEGER NOT NULL DEFAULT 0,
    exchange TEXT NOT NULL DEFAULT '',
    routing_key TEXT NOT NULL DEFAULT '',
    headers TEXT NOT NULL,
    properties TEXT NOT NULL,
    content_type TEXT NOT NULL,
    content_encoding TEXT NOT NULL,
    body BLOB NOT NULL,
    published_at REAL NOT NULL
);

-- Waiting messages in fetch order, per queue.
CREATE INDEX IF NOT EXISTS messages_waiting
    ON messages (queue, priority DESC, seq, id) WHERE state = 0;
-- Leases by expiry, for reclaiming a dead holder's messages.
CREATE INDEX IF NOT EXISTS messages_leased ON messages (lease_until) WHERE state = 1;
-- Parked messages by due time.
CREATE INDEX IF NOT EXISTS messages_parked ON messages (visible_at) WHERE state = 2;

-- Queue-to-exchange bindings from `declare`. kind: direct, topic, fanout (headers acts as direct).
CREATE TABLE IF NOT EXISTS bindings (
    exchange TEXT NOT NULL,
    queue TEXT NOT NULL,
    routing_key TEXT NOT NULL,
    kind TEXT NOT NULL,
    PRIMARY KEY (exchange, queue, routing_key)
);

-- Declared queues (for inspection; publishing to an undeclared queue works too).
CREATE TABLE IF NOT EXISTS queues (
    name TEXT PRIMARY KEY,
    declared_at REAL NOT NULL
);

-- Messages that could not be processed, with the reason. `store` is the dead-letter queue name
-- (setting broker_dead_letter_queue), so several stores can share one file.
CREATE TABLE IF NOT EXISTS dead_letters (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    store TEXT NOT NULL,
    queue TEXT NOT NULL,
    reason TEXT NOT NULL,
    time REAL NOT NULL,
    exchange TEXT NOT NULL DEFAULT '',
    routing_key TEXT NOT NULL DEFAULT '',
    headers TEXT NOT NULL,
    properties TEXT NOT NULL,
    content_type TEXT NOT NULL,
    content_encoding TEXT NOT NULL,
    body BLOB NOT NULL
);

CREATE INDEX IF NOT EXISTS dead_letters_store ON dead_letters (store, seq);

-- Broadcasts (remote control, events), kept briefly: subscribers read rows newer than the id they
-- saw when they subscribed; publishers delete rows older than a minute. AUTOINCREMENT so an id is
-- never reused after the table empties.
CREATE TABLE IF NOT EXISTS broadcasts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    exchange TEXT NOT NULL,
    routing_key TEXT NOT NULL,
    headers TEXT NOT NULL,
    properties TEXT NOT NULL,
    content_type TEXT NOT NULL,
    content_encoding TEXT NOT NULL,
    body BLOB NOT NULL,
    created_at REAL NOT NULL
);

CREATE INDEX IF NOT EXISTS broadcasts_exchange ON broadcasts (exchange, id);
CREATE INDEX IF NOT EXISTS broadcasts_created ON broadcasts (created_at);
