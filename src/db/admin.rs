//! Repository functions of the admin commands (`hangin user …`, `hangin status`): listing and
//! describing people, bans, revoking sessions, deleting a person and their data.

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use super::users::UserId;
use super::DbResult;

/// One line of `hangin user list`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct UserSummary {
    #[serde(skip)]
    pub id: UserId,
    pub uuid: String,
    pub number: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    /// Unix ms.
    pub created_at: i64,
    pub banned: bool,
    /// Sign-ins whose refresh token can still be used (not revoked, not spent).
    pub sessions: i64,
    /// Unix ms of the newest token issued (a login or a refresh), if any.
    pub last_token_at: Option<i64>,
}

/// The counts of `hangin user show` beyond the summary.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct UserCounts {
    /// Entries of the address book they uploaded.
    pub address_book: i64,
    /// Users whose number their address book holds.
    pub contacts: i64,
    pub mutual_contacts: i64,
    /// Chats they are a member of (live or ended).
    pub chats: i64,
    pub live_chats: i64,
    pub messages_written: i64,
    pub has_picture: bool,
    pub has_device_token: bool,
    /// Unix ms when an open background window ends.
    pub background_until: Option<i64>,
}

const SUMMARY_SQL: &str = "SELECT u.id, u.uuid, u.number, u.first_name, u.last_name, u.created_at,
        EXISTS (SELECT 1 FROM bans b WHERE b.number = u.number),
        (SELECT count(*) FROM access_tokens t
          WHERE t.user_id = u.id AND t.revoked_at IS NULL AND t.refresh_used_at IS NULL),
        (SELECT max(t.created_at) FROM access_tokens t WHERE t.user_id = u.id)
   FROM users u";

fn summary_from_row(r: &rusqlite::Row) -> rusqlite::Result<UserSummary> {
    Ok(UserSummary {
        id: UserId(r.get(0)?),
        uuid: r.get(1)?,
        number: r.get(2)?,
        first_name: r.get(3)?,
        last_name: r.get(4)?,
        created_at: r.get(5)?,
        banned: r.get(6)?,
        sessions: r.get(7)?,
        last_token_at: r.get(8)?,
    })
}

/// Every user, oldest first.
pub fn list_users(conn: &Connection) -> DbResult<Vec<UserSummary>> {
    let mut stmt = conn.prepare(&format!("{SUMMARY_SQL} ORDER BY u.id"))?;
    let rows = stmt.query_map([], summary_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn summary(conn: &Connection, id: UserId) -> DbResult<Option<UserSummary>> {
    Ok(conn
        .prepare(&format!("{SUMMARY_SQL} WHERE u.id = ?1"))?
        .query_row([id.0], summary_from_row)
        .optional()?)
}

pub fn counts(conn: &Connection, id: UserId) -> DbResult<UserCounts> {
    let count = |sql: &str| -> rusqlite::Result<i64> { conn.query_row(sql, [id.0], |r| r.get(0)) };
    let (has_picture, has_device_token, background_until) = conn.query_row(
        "SELECT picture_key IS NOT NULL, device_token IS NOT NULL, background_until
           FROM users WHERE id = ?1",
        [id.0],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    Ok(UserCounts {
        address_book: count("SELECT count(*) FROM friends WHERE owner_id = ?1")?,
        contacts: count("SELECT count(*) FROM contacts WHERE owner_id = ?1")?,
        mutual_contacts: count(
            "SELECT count(*) FROM contacts a JOIN contacts b
               ON b.owner_id = a.contact_id AND b.contact_id = a.owner_id
             WHERE a.owner_id = ?1",
        )?,
        chats: count("SELECT count(*) FROM chat_members WHERE user_id = ?1")?,
        live_chats: count(
            "SELECT count(*) FROM chat_members m JOIN chats c ON c.id = m.chat_id
             WHERE m.user_id = ?1 AND c.ended_at IS NULL",
        )?,
        messages_written: count("SELECT count(*) FROM messages WHERE user_id = ?1")?,
        has_picture,
        has_device_token,
        background_until,
    })
}

pub fn is_banned(conn: &Connection, number: &str) -> DbResult<bool> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM bans WHERE number = ?1")?
        .query_row([number], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Ban `number`; false when it already was.
pub fn ban(conn: &Connection, number: &str, now: i64) -> DbResult<bool> {
    Ok(conn
        .prepare_cached("INSERT OR IGNORE INTO bans (number, created_at) VALUES (?1, ?2)")?
        .execute(params![number, now])?
        == 1)
}

/// Lift a ban; false when there was none.
pub fn unban(conn: &Connection, number: &str) -> DbResult<bool> {
    Ok(conn
        .prepare_cached("DELETE FROM bans WHERE number = ?1")?
        .execute([number])?
        == 1)
}

/// Banned numbers with the time of the ban (Unix ms), oldest first.
pub fn bans(conn: &Connection) -> DbResult<Vec<(String, i64)>> {
    let mut stmt = conn.prepare("SELECT number, created_at FROM bans ORDER BY created_at")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Sign `user` out everywhere: every access and refresh token dies, and the device stops
/// receiving pushes (it belongs to a session that no longer exists). Returns the tokens revoked.
pub fn sign_out(conn: &Connection, user: UserId, now: i64) -> DbResult<usize> {
    let revoked = conn
        .prepare_cached(
            "UPDATE access_tokens SET revoked_at = ?2 WHERE user_id = ?1 AND revoked_at IS NULL",
        )?
        .execute(params![user.0, now])?;
    conn.prepare_cached(
        "UPDATE users SET device_token = NULL, background_until = NULL WHERE id = ?1",
    )?
    .execute([user.0])?;
    Ok(revoked)
}

/// Unused codes of `number` (a ban makes a code sent just before it worthless).
pub fn delete_codes(conn: &Connection, number: &str) -> DbResult<usize> {
    Ok(conn
        .prepare_cached("DELETE FROM otp_codes WHERE number = ?1")?
        .execute([number])?)
}

/// What [`delete_user`] removed.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Deleted {
    pub address_book: i64,
    pub tokens: i64,
    pub memberships: i64,
    pub messages: i64,
    /// Chats they started that nobody else belongs to (removed with them).
    pub chats: i64,
    /// Chats they started that others belong to: kept, with the earliest other member as starter.
    pub chats_handed_over: i64,
    /// The picture file to unlink once the deletion is committed.
    #[serde(skip)]
    pub picture_key: Option<String>,
}

/// Delete the person and their data: the user row, address book, contact links both ways,
/// tokens, device token, picture, memberships and the messages they wrote. Chats they started
/// that other people belong to stay (their messages are those people's), handed to the
/// earliest other member. Address books of *other* people that hold their number are those
/// people's data and stay.
pub fn delete_user(conn: &Connection, user: UserId) -> DbResult<Deleted> {
    let count =
        |sql: &str| -> rusqlite::Result<i64> { conn.query_row(sql, [user.0], |r| r.get(0)) };
    let mut out = Deleted {
        address_book: count("SELECT count(*) FROM friends WHERE owner_id = ?1")?,
        tokens: count("SELECT count(*) FROM access_tokens WHERE user_id = ?1")?,
        memberships: count("SELECT count(*) FROM chat_members WHERE user_id = ?1")?,
        messages: count("SELECT count(*) FROM messages WHERE user_id = ?1")?,
        ..Deleted::default()
    };
    out.chats_handed_over = conn.execute(
        "UPDATE chats SET starter_id = (
             SELECT m.user_id FROM chat_members m
              WHERE m.chat_id = chats.id AND m.user_id != ?1
              ORDER BY m.joined_at, m.user_id LIMIT 1)
          WHERE starter_id = ?1
            AND EXISTS (SELECT 1 FROM chat_members m WHERE m.chat_id = chats.id AND m.user_id != ?1)",
        [user.0],
    )? as i64;
    out.chats = count("SELECT count(*) FROM chats WHERE starter_id = ?1")?;
    out.picture_key = conn
        .query_row(
            "SELECT picture_key FROM users WHERE id = ?1",
            [user.0],
            |r| r.get(0),
        )
        .optional()?
        .flatten();
    let number: Option<String> = conn
        .query_row("SELECT number FROM users WHERE id = ?1", [user.0], |r| {
            r.get(0)
        })
        .optional()?;
    // Foreign keys cascade to friends, contacts, tokens, memberships, messages and the chats
    // left to them alone (with those chats' members and messages).
    conn.execute("DELETE FROM users WHERE id = ?1", [user.0])?;
    if let Some(key) = &out.picture_key {
        conn.execute("DELETE FROM blobs WHERE key = ?1", [key])?;
    }
    if let Some(number) = number {
        delete_codes(conn, &number)?;
    }
    Ok(out)
}

/// The figures of `hangin status` that live in the database.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct DbFigures {
    pub users: i64,
    pub banned_numbers: i64,
    pub live_chats: i64,
    pub messages_today: i64,
    pub schema_version: i64,
}

/// Counts for `status`; `since` is the start of "today" (Unix ms).
pub fn figures(conn: &Connection, since: i64) -> DbResult<DbFigures> {
    let one = |sql: &str| -> rusqlite::Result<i64> { conn.query_row(sql, [], |r| r.get(0)) };
    Ok(DbFigures {
        users: one("SELECT count(*) FROM users")?,
        banned_numbers: one("SELECT count(*) FROM bans")?,
        live_chats: live_chats(conn)?,
        // Ids grow with time: walk back from the newest message to the last one before
        // `since`, then count a rowid range. Costs today's messages, not the whole table.
        messages_today: conn.query_row(
            "SELECT count(*) FROM messages WHERE id > coalesce(
                 (SELECT id FROM messages WHERE created_at < ?1 ORDER BY id DESC LIMIT 1), 0)",
            [since],
            |r| r.get(0),
        )?,
        schema_version: one("PRAGMA user_version")?,
    })
}

/// Chats that have not ended (the partial index `chats_live` answers this).
pub fn live_chats(conn: &Connection) -> DbResult<i64> {
    Ok(conn
        .prepare_cached("SELECT count(*) FROM chats WHERE ended_at IS NULL")?
        .query_row([], |r| r.get(0))?)
}
