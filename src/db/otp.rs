//! One-time login codes: argon2id hashes with expiry, attempt counter and single use.

use rusqlite::{params, Connection, OptionalExtension};

use super::DbResult;

#[derive(Debug, Clone, PartialEq)]
pub struct OtpCode {
    pub id: i64,
    pub code_hash: String,
    pub expires_at: i64,
    pub attempts: i64,
}

pub fn insert(
    conn: &Connection,
    number: &str,
    code_hash: &str,
    now: i64,
    expires_at: i64,
) -> DbResult<i64> {
    conn.prepare_cached(
        "INSERT INTO otp_codes (number, code_hash, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![number, code_hash, now, expires_at])?;
    Ok(conn.last_insert_rowid())
}

/// The newest code of the number that is unused and unexpired (older codes are superseded).
pub fn newest_live(conn: &Connection, number: &str, now: i64) -> DbResult<Option<OtpCode>> {
    Ok(conn
        .prepare_cached(
            "SELECT id, code_hash, expires_at, attempts, used_at FROM otp_codes
             WHERE number = ?1 ORDER BY id DESC LIMIT 1",
        )?
        .query_row([number], |r| {
            Ok((
                OtpCode {
                    id: r.get(0)?,
                    code_hash: r.get(1)?,
                    expires_at: r.get(2)?,
                    attempts: r.get(3)?,
                },
                r.get::<_, Option<i64>>(4)?,
            ))
        })
        .optional()?
        .and_then(|(code, used)| (used.is_none() && code.expires_at > now).then_some(code)))
}

/// Count one attempt against the code; false when the code has no attempts left or is spent.
pub fn take_attempt(conn: &Connection, id: i64, max_attempts: u32) -> DbResult<bool> {
    Ok(conn
        .prepare_cached(
            "UPDATE otp_codes SET attempts = attempts + 1
             WHERE id = ?1 AND used_at IS NULL AND attempts < ?2",
        )?
        .execute(params![id, max_attempts])?
        == 1)
}

/// Mark the code used; false when another request used it first.
pub fn consume(conn: &Connection, id: i64, now: i64) -> DbResult<bool> {
    Ok(conn
        .prepare_cached("UPDATE otp_codes SET used_at = ?2 WHERE id = ?1 AND used_at IS NULL")?
        .execute(params![id, now])?
        == 1)
}

/// (codes sent since `since`, newest send time) for the per-number rate limit.
pub fn sends_since(conn: &Connection, number: &str, since: i64) -> DbResult<(u32, Option<i64>)> {
    Ok(conn
        .prepare_cached("SELECT COUNT(*), MAX(created_at) FROM otp_codes WHERE number = ?1 AND created_at >= ?2")?
        .query_row(params![number, since], |r| Ok((r.get(0)?, r.get(1)?)))?)
}

/// The oldest send inside the window (when the window frees a slot again).
pub fn oldest_since(conn: &Connection, number: &str, since: i64) -> DbResult<Option<i64>> {
    Ok(conn
        .prepare_cached(
            "SELECT MIN(created_at) FROM otp_codes WHERE number = ?1 AND created_at >= ?2",
        )?
        .query_row(params![number, since], |r| r.get(0))?)
}

/// Drop codes that can no longer be used nor count for a rate limit.
pub fn purge_before(conn: &Connection, before: i64) -> DbResult<usize> {
    Ok(conn
        .prepare_cached("DELETE FROM otp_codes WHERE created_at < ?1 AND expires_at < ?1")?
        .execute([before])?)
}

/// Withdraw a code whose delivery failed: it reached nobody, so it must neither be usable nor
/// count against the number's send limits.
pub fn delete(conn: &Connection, id: i64) -> DbResult<()> {
    conn.prepare_cached("DELETE FROM otp_codes WHERE id = ?1")?
        .execute([id])?;
    Ok(())
}
