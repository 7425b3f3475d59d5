//! Access/refresh token rows (Doorkeeper's oauth_access_tokens). Only SHA-256 hashes are stored.

use rusqlite::{params, Connection, OptionalExtension};

use super::users::UserId;
use super::DbResult;

#[derive(Debug, Clone, PartialEq)]
pub struct TokenRow {
    pub id: i64,
    pub user_id: UserId,
    pub client_id: i64,
    pub created_at: i64,
    pub expires_in: i64,
    pub revoked_at: Option<i64>,
    pub refresh_used_at: Option<i64>,
    pub previous_token_id: Option<i64>,
}

const COLUMNS: &str =
    "id, user_id, client_id, created_at, expires_in, revoked_at, refresh_used_at, previous_token_id";

fn from_row(r: &rusqlite::Row) -> rusqlite::Result<TokenRow> {
    Ok(TokenRow {
        id: r.get(0)?,
        user_id: UserId(r.get(1)?),
        client_id: r.get(2)?,
        created_at: r.get(3)?,
        expires_in: r.get(4)?,
        revoked_at: r.get(5)?,
        refresh_used_at: r.get(6)?,
        previous_token_id: r.get(7)?,
    })
}

pub struct NewToken<'a> {
    pub user_id: UserId,
    pub client_id: i64,
    pub token_hash: &'a [u8],
    pub refresh_hash: &'a [u8],
    pub created_at: i64,
    pub expires_in: i64,
    pub previous_token_id: Option<i64>,
}

pub fn insert(conn: &Connection, t: &NewToken) -> DbResult<i64> {
    conn.prepare_cached(
        "INSERT INTO access_tokens (user_id, client_id, token_hash, refresh_hash, created_at, expires_in,
                                    previous_token_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        t.user_id.0,
        t.client_id,
        t.token_hash,
        t.refresh_hash,
        t.created_at,
        t.expires_in,
        t.previous_token_id
    ])?;
    Ok(conn.last_insert_rowid())
}

pub fn by_access_hash(conn: &Connection, hash: &[u8]) -> DbResult<Option<TokenRow>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM access_tokens WHERE token_hash = ?1"
        ))?
        .query_row([hash], from_row)
        .optional()?)
}

pub fn by_refresh_hash(conn: &Connection, hash: &[u8]) -> DbResult<Option<TokenRow>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM access_tokens WHERE refresh_hash = ?1"
        ))?
        .query_row([hash], from_row)
        .optional()?)
}

/// Spend a refresh token; false when it was already spent or revoked (a concurrent refresh won).
pub fn spend_refresh(conn: &Connection, id: i64, now: i64) -> DbResult<bool> {
    Ok(conn
        .prepare_cached(
            "UPDATE access_tokens SET refresh_used_at = ?2
             WHERE id = ?1 AND refresh_used_at IS NULL AND revoked_at IS NULL",
        )?
        .execute(params![id, now])?
        == 1)
}

/// First use of a refreshed access token: the previous pair dies (Doorkeeper's
/// `revoke_previous_refresh_token!`).
pub fn retire_previous(conn: &Connection, id: i64, previous: i64, now: i64) -> DbResult<()> {
    conn.prepare_cached(
        "UPDATE access_tokens SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1",
    )?
    .execute(params![previous, now])?;
    conn.prepare_cached("UPDATE access_tokens SET previous_token_id = NULL WHERE id = ?1")?
        .execute([id])?;
    Ok(())
}
