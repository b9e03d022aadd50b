-- Each message carries a SHA-256 over its stored fields (see store.message_checksum), verified on
-- every read: a changed byte is reported as damage, never returned. Rows stored before this
-- version get theirs when the store opens (they were not checked before; from then on they are).

ALTER TABLE messages ADD COLUMN checksum TEXT;
