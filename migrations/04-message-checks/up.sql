-- The same CHECKs on messages.kind and messages.status, written as comparisons instead of
-- IN lists. SQLite evaluates a CHECK's `IN (…)` of three or more constants by building a
-- temporary b-tree of the constants for every inserted row (two per message: open, fill,
-- close). That was ≈ a fifth of the writer thread's CPU in `hangin-load storm`
-- (docs/performance.md "Where the time goes"). The comparisons accept exactly the same values
-- (the columns are NOT NULL TEXT, compared with BINARY collation either way).
-- SQLite cannot alter a CHECK in place: the table is rebuilt (https://sqlite.org/lang_altertable.html,
-- "other kinds of table schema changes"). No table references messages, and ids are kept.
CREATE TABLE messages_new (
    id          INTEGER PRIMARY KEY,
    chat_id     INTEGER NOT NULL REFERENCES chats(id) ON DELETE CASCADE,
    user_id     INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    kind        TEXT    NOT NULL CHECK (kind = 'text' OR kind = 'image' OR kind = 'audio' OR kind = 'video'),
    status      TEXT    NOT NULL CHECK (status = 'draft' OR status = 'sent' OR status = 'delivered'),
    body        TEXT    NOT NULL,
    created_at  INTEGER NOT NULL
);
INSERT INTO messages_new (id, chat_id, user_id, kind, status, body, created_at)
    SELECT id, chat_id, user_id, kind, status, body, created_at FROM messages;
DROP TABLE messages;
ALTER TABLE messages_new RENAME TO messages;
CREATE INDEX messages_by_chat ON messages(chat_id, id);
