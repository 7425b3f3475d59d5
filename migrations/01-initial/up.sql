-- The whole schema of the contract (shared/spec). Times are Unix milliseconds (INTEGER).

CREATE TABLE users (
    id                INTEGER PRIMARY KEY,
    uuid              TEXT    NOT NULL UNIQUE,
    number            TEXT    NOT NULL UNIQUE,          -- 10 digits, normalised
    first_name        TEXT,
    last_name         TEXT,
    picture_key       TEXT REFERENCES blobs(key) ON DELETE SET NULL,
    device_token      TEXT,
    background_until  INTEGER,                          -- open background window ends then
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL
);
CREATE INDEX users_device_token ON users(device_token) WHERE device_token IS NOT NULL;
CREATE INDEX users_background_until ON users(background_until) WHERE background_until IS NOT NULL;

-- One row per address-book entry a user uploaded; unique per (owner, number).
CREATE TABLE friends (
    id          INTEGER PRIMARY KEY,
    owner_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    first_name  TEXT    NOT NULL,
    last_name   TEXT    NOT NULL,
    number      TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    UNIQUE (owner_id, number)
);
CREATE INDEX friends_number ON friends(number);

-- owner_id's address book holds contact_id's number.
CREATE TABLE contacts (
    owner_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    contact_id  INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    PRIMARY KEY (owner_id, contact_id)
) WITHOUT ROWID;
CREATE INDEX contacts_by_contact ON contacts(contact_id, owner_id);

CREATE TABLE oauth_clients (
    id           INTEGER PRIMARY KEY,
    name         TEXT    NOT NULL,
    uid          TEXT    NOT NULL UNIQUE,
    secret_hash  TEXT    NOT NULL,                      -- SHA-256 hex of the secret
    created_at   INTEGER NOT NULL
);

CREATE TABLE access_tokens (
    id                     INTEGER PRIMARY KEY,
    user_id                INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    client_id              INTEGER NOT NULL REFERENCES oauth_clients(id) ON DELETE CASCADE,
    token_hash             BLOB    NOT NULL UNIQUE,     -- SHA-256 of the access token
    refresh_hash           BLOB    UNIQUE,              -- SHA-256 of the refresh token
    created_at             INTEGER NOT NULL,
    expires_in             INTEGER NOT NULL,            -- seconds
    revoked_at             INTEGER,                     -- access (and refresh) token dead
    refresh_used_at        INTEGER,                     -- refresh token spent by a refresh grant
    previous_token_id      INTEGER                      -- Doorkeeper's previous_refresh_token: revoked on first use
);
CREATE INDEX access_tokens_user ON access_tokens(user_id);

CREATE TABLE otp_codes (
    id          INTEGER PRIMARY KEY,
    number      TEXT    NOT NULL,
    code_hash   TEXT    NOT NULL,                       -- argon2id PHC string
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    used_at     INTEGER
);
CREATE INDEX otp_codes_number ON otp_codes(number, created_at);

CREATE TABLE chats (
    id          INTEGER PRIMARY KEY,
    starter_id  INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name        TEXT    NOT NULL DEFAULT '',
    created_at  INTEGER NOT NULL,
    ended_at    INTEGER
);
CREATE INDEX chats_live ON chats(id) WHERE ended_at IS NULL;

CREATE TABLE chat_members (
    chat_id    INTEGER NOT NULL REFERENCES chats(id) ON DELETE CASCADE,
    user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    joined_at  INTEGER NOT NULL,
    PRIMARY KEY (chat_id, user_id)
) WITHOUT ROWID;
CREATE INDEX chat_members_by_user ON chat_members(user_id, chat_id);

CREATE TABLE messages (
    id          INTEGER PRIMARY KEY,
    chat_id     INTEGER NOT NULL REFERENCES chats(id) ON DELETE CASCADE,
    user_id     INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    kind        TEXT    NOT NULL CHECK (kind IN ('text', 'image', 'audio', 'video')),
    status      TEXT    NOT NULL CHECK (status IN ('draft', 'sent', 'delivered')),
    body        TEXT    NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX messages_by_chat ON messages(chat_id, id);

-- Uploaded pictures, stored as files under <data_dir>/pictures/<key>.
CREATE TABLE blobs (
    key           TEXT    PRIMARY KEY,
    content_type  TEXT    NOT NULL,
    byte_size     INTEGER NOT NULL,
    sha256        TEXT    NOT NULL,
    created_at    INTEGER NOT NULL
);

-- One row: this server's identity (mDNS TXT id).
CREATE TABLE server (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    uuid  TEXT NOT NULL
);
