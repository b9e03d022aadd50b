-- One row rewritten to find out whether the store can write again after a storage fault
-- (disk full, read-only, I/O error): a write that succeeds here means messages can be stored.

CREATE TABLE store_probe (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    at TEXT NOT NULL
);
