-- A person's Idempotency-Key and the message it was first used for, so a retry of an acknowledged
-- message returns the stored exchange instead of storing (and answering) it twice. Keys are per
-- owner (principal name): two people may use the same key.

CREATE TABLE idempotency_keys (
    owner TEXT NOT NULL,
    key TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    message_id TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (owner, key)
);
