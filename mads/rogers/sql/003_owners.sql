-- Each conversation belongs to the person who created it (their principal name), or to the
-- system. Conversations from before owners existed belong to the person named in created_by
-- ("user.<name>"), else to the system.

ALTER TABLE conversations ADD COLUMN owner TEXT NOT NULL DEFAULT 'system';

UPDATE conversations SET owner = substr(created_by, 6) WHERE created_by LIKE 'user.%';

CREATE INDEX conversations_owner ON conversations (owner, created_at, id);
