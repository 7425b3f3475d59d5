//! Chats, their members and their messages.

use rusqlite::{params, Connection, OptionalExtension};

use super::users::UserId;
use super::{now_ms, DbResult};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChatId(pub i64);

#[derive(Debug, Clone, PartialEq)]
pub struct Chat {
    pub id: ChatId,
    pub starter_id: UserId,
    pub name: String,
    pub ended_at: Option<i64>,
}

fn chat_from_row(r: &rusqlite::Row) -> rusqlite::Result<Chat> {
    Ok(Chat {
        id: ChatId(r.get(0)?),
        starter_id: UserId(r.get(1)?),
        name: r.get(2)?,
        ended_at: r.get(3)?,
    })
}

/// Create a chat under the id the engine allocated, with its starter as the first member.
pub fn create(conn: &Connection, id: ChatId, starter: UserId, name: &str) -> DbResult<Chat> {
    let now = now_ms();
    conn.prepare_cached(
        "INSERT INTO chats (id, starter_id, name, created_at) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![id.0, starter.0, name, now])?;
    add_member(conn, id, starter)?;
    Ok(Chat {
        id,
        starter_id: starter,
        name: name.to_string(),
        ended_at: None,
    })
}

/// The largest chat id ever used (0 when there is none).
pub fn max_id(conn: &Connection) -> DbResult<i64> {
    Ok(conn.query_row("SELECT COALESCE(MAX(id), 0) FROM chats", [], |r| r.get(0))?)
}

/// Every live chat with its members in join order (start: the engine's world).
pub fn live_with_members(conn: &Connection) -> DbResult<Vec<(Chat, Vec<UserId>)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, starter_id, name, ended_at FROM chats WHERE ended_at IS NULL ORDER BY id",
    )?;
    let chats: Vec<Chat> = stmt
        .query_map([], chat_from_row)?
        .collect::<Result<_, _>>()?;
    let mut out = Vec::with_capacity(chats.len());
    for chat in chats {
        let members = members(conn, chat.id)?;
        out.push((chat, members));
    }
    Ok(out)
}

pub fn by_id(conn: &Connection, id: ChatId) -> DbResult<Option<Chat>> {
    Ok(conn
        .prepare_cached("SELECT id, starter_id, name, ended_at FROM chats WHERE id = ?1")?
        .query_row([id.0], chat_from_row)
        .optional()?)
}

/// Add a member (idempotent); true when the user was not a member before.
pub fn add_member(conn: &Connection, chat: ChatId, user: UserId) -> DbResult<bool> {
    Ok(conn
        .prepare_cached(
            "INSERT OR IGNORE INTO chat_members (chat_id, user_id, joined_at) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![chat.0, user.0, now_ms()])?
        == 1)
}

pub fn members(conn: &Connection, chat: ChatId) -> DbResult<Vec<UserId>> {
    let mut stmt = conn.prepare_cached(
        "SELECT user_id FROM chat_members WHERE chat_id = ?1 ORDER BY joined_at, user_id",
    )?;
    let rows = stmt.query_map([chat.0], |r| Ok(UserId(r.get(0)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn is_member(conn: &Connection, chat: ChatId, user: UserId) -> DbResult<bool> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM chat_members WHERE chat_id = ?1 AND user_id = ?2")?
        .exists(params![chat.0, user.0])?)
}

/// Live (not ended) chats that `user` is a member of, oldest first.
pub fn live_chats_of(conn: &Connection, user: UserId) -> DbResult<Vec<Chat>> {
    let mut stmt = conn.prepare_cached(
        "SELECT c.id, c.starter_id, c.name, c.ended_at FROM chat_members m JOIN chats c ON c.id = m.chat_id
         WHERE m.user_id = ?1 AND c.ended_at IS NULL ORDER BY c.id",
    )?;
    let rows = stmt.query_map([user.0], chat_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn end(conn: &Connection, chat: ChatId, now: i64) -> DbResult<bool> {
    Ok(conn
        .prepare_cached("UPDATE chats SET ended_at = ?2 WHERE id = ?1 AND ended_at IS NULL")?
        .execute(params![chat.0, now])?
        == 1)
}

/// Members other than `speaker` with an open background window and a device token, in member
/// order: (uuid, device token). One query, as it runs for every message.
pub fn background_push_targets(
    conn: &Connection,
    chat: ChatId,
    speaker: UserId,
    now: i64,
) -> DbResult<Vec<(String, String)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT u.uuid, u.device_token FROM chat_members m JOIN users u ON u.id = m.user_id
         WHERE m.chat_id = ?1 AND m.user_id != ?2 AND u.background_until > ?3
           AND u.device_token IS NOT NULL
         ORDER BY m.joined_at, m.user_id",
    )?;
    let rows = stmt.query_map(params![chat.0, speaker.0, now], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub id: i64,
    pub user_uuid: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub kind: String,
    pub body: String,
}

pub fn insert_message(
    conn: &Connection,
    chat: ChatId,
    user: UserId,
    kind: &str,
    status: &str,
    body: &str,
) -> DbResult<i64> {
    conn.prepare_cached(
        "INSERT INTO messages (chat_id, user_id, kind, status, body, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![chat.0, user.0, kind, status, body, now_ms()])?;
    Ok(conn.last_insert_rowid())
}

/// The newest messages of a chat, at most `max_messages` and — counting each body and its
/// speaker's names — at most `max_bytes`, returned oldest first with the speakers' current
/// names. Bounded, so a chat with a long or hostile history cannot make one join frame huge.
pub fn history(
    conn: &Connection,
    chat: ChatId,
    max_messages: usize,
    max_bytes: usize,
) -> DbResult<Vec<Message>> {
    let mut stmt = conn.prepare_cached(
        "SELECT m.id, u.uuid, u.first_name, u.last_name, m.kind, m.body
         FROM messages m JOIN users u ON u.id = m.user_id WHERE m.chat_id = ?1
         ORDER BY m.id DESC LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![chat.0, max_messages as i64], |r| {
        Ok(Message {
            id: r.get(0)?,
            user_uuid: r.get(1)?,
            first_name: r.get(2)?,
            last_name: r.get(3)?,
            kind: r.get(4)?,
            body: r.get(5)?,
        })
    })?;
    let mut out = Vec::new();
    let mut bytes = 0usize;
    for row in rows {
        let m = row?;
        bytes += m.encoded_len();
        if bytes > max_bytes {
            break;
        }
        out.push(m);
    }
    out.reverse();
    Ok(out)
}

impl Message {
    /// An upper bound of the message's size in a frame: JSON may escape a byte to six.
    fn encoded_len(&self) -> usize {
        let text = self.body.len()
            + self.first_name.as_deref().map_or(0, str::len)
            + self.last_name.as_deref().map_or(0, str::len);
        // Escaping is rare in real text; count it where it happens instead of assuming it.
        let escaped = [
            &self.body,
            self.first_name.as_deref().unwrap_or(""),
            self.last_name.as_deref().unwrap_or(""),
        ]
        .iter()
        .flat_map(|s| s.bytes())
        .filter(|b| {
            *b < 0x20 || *b == b'"' || *b == b'\\' || *b == b'<' || *b == b'>' || *b == b'&'
        })
        .count();
        text + escaped * 5 + self.user_uuid.len() + self.kind.len() + 80
    }
}
