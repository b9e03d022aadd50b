-- Files attached to conversations. The bytes live beside the database, content-addressed
-- (artifacts/<first two hex digits>/<sha256>), written once; a row says which conversation
-- holds which content under which name. The same bytes attached twice are stored once.

CREATE TABLE artifacts (
    conversation_id TEXT NOT NULL,
    id TEXT NOT NULL,
    name TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size INTEGER NOT NULL,
    attached_by TEXT NOT NULL,
    attached_at TEXT NOT NULL,
    PRIMARY KEY (conversation_id, id)
);
