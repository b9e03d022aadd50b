-- Messages, conversations and participants. Messages are append-only: a row is never
-- updated or deleted, so `seq` (the rowid) equals the number of messages stored.

CREATE TABLE messages (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    conversation_id TEXT,
    sender TEXT NOT NULL,
    recipient TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('request', 'reply', 'event', 'error')),
    correlation_id TEXT,
    created_at TEXT NOT NULL,
    stored_at TEXT NOT NULL,
    text TEXT NOT NULL DEFAULT '',
    envelope TEXT NOT NULL CHECK (json_valid(envelope))
);

CREATE INDEX messages_conversation ON messages (conversation_id, id);
CREATE INDEX messages_correlation ON messages (correlation_id) WHERE correlation_id IS NOT NULL;

CREATE TABLE conversations (
    id TEXT PRIMARY KEY,
    title TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    created_by TEXT,
    message_count INTEGER NOT NULL DEFAULT 0
);

CREATE INDEX conversations_created ON conversations (created_at, id);

CREATE TABLE participants (
    conversation_id TEXT NOT NULL REFERENCES conversations (id),
    address TEXT NOT NULL,
    first_seen TEXT NOT NULL,
    last_seen TEXT NOT NULL,
    message_count INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (conversation_id, address)
);

-- One trigger, so the conversation row exists before its participants (the order in
-- which several triggers fire is not defined). Triggers fire only for rows really
-- inserted, so a duplicate delivery (ON CONFLICT (id) DO NOTHING) changes no counter.
-- A conversation seen first on the bus (its id minted elsewhere) is created here.
-- Participants are the MADs and principals that sent or received a message; topics
-- (events.*, stream.*) and the bus itself are not.
CREATE TRIGGER messages_track AFTER INSERT ON messages
WHEN new.conversation_id IS NOT NULL
BEGIN
    INSERT INTO conversations (id, title, created_at, updated_at, created_by, message_count)
    VALUES (new.conversation_id, NULL, new.created_at, new.created_at, new.sender, 1)
    ON CONFLICT (id) DO UPDATE SET
        updated_at = max(updated_at, excluded.updated_at),
        message_count = message_count + 1;
    INSERT INTO participants (conversation_id, address, first_seen, last_seen, message_count)
    SELECT new.conversation_id, address, new.created_at, new.created_at, 1
    FROM (SELECT new.sender AS address UNION SELECT new.recipient)
    WHERE address <> 'bus' AND address NOT GLOB 'events.*' AND address NOT GLOB 'stream.*'
    ON CONFLICT (conversation_id, address) DO UPDATE SET
        first_seen = min(first_seen, excluded.first_seen),
        last_seen = max(last_seen, excluded.last_seen),
        message_count = message_count + 1;
END;
