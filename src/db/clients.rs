//! OAuth clients (applications). Secrets are stored as SHA-256 hashes.

use rusqlite::{params, Connection, OptionalExtension};

use super::{now_ms, DbResult};

#[derive(Debug, Clone, PartialEq)]
pub struct Client {
    pub id: i64,
    pub name: String,
    pub uid: String,
    pub secret_hash: String,
    pub created_at: i64,
}

fn from_row(r: &rusqlite::Row) -> rusqlite::Result<Client> {
    Ok(Client {
        id: r.get(0)?,
        name: r.get(1)?,
        uid: r.get(2)?,
        secret_hash: r.get(3)?,
        created_at: r.get(4)?,
    })
}

pub fn insert(conn: &Connection, name: &str, uid: &str, secret_hash: &str) -> DbResult<Client> {
    conn.prepare_cached(
        "INSERT INTO oauth_clients (name, uid, secret_hash, created_at) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![name, uid, secret_hash, now_ms()])?;
    Ok(by_uid(conn, uid)?.expect("just inserted"))
}

pub fn by_uid(conn: &Connection, uid: &str) -> DbResult<Option<Client>> {
    Ok(conn
        .prepare_cached(
            "SELECT id, name, uid, secret_hash, created_at FROM oauth_clients WHERE uid = ?1",
        )?
        .query_row([uid], from_row)
        .optional()?)
}

pub fn list(conn: &Connection) -> DbResult<Vec<Client>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, name, uid, secret_hash, created_at FROM oauth_clients ORDER BY id",
    )?;
    let rows = stmt.query_map([], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Delete by client id or by name; returns how many went (their tokens go with them).
pub fn delete(conn: &Connection, uid_or_name: &str) -> DbResult<usize> {
    Ok(conn
        .prepare_cached("DELETE FROM oauth_clients WHERE uid = ?1 OR name = ?1")?
        .execute([uid_or_name])?)
}
