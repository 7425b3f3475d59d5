//! OAuth clients: creation (CLI and first start), listing, authentication of the token endpoint.

use std::path::Path;

use rusqlite::Connection;
use serde::Serialize;

use crate::db::{self, DbResult};
use crate::secret::{hex, new_secret, sha256};

#[derive(Debug, Serialize)]
pub struct NewClient {
    pub name: String,
    pub client_id: String,
    pub client_secret: String,
}

pub fn create(conn: &Connection, name: &str) -> DbResult<NewClient> {
    let uid = new_secret();
    let secret = new_secret();
    db::clients::insert(conn, name, &uid, &hex(&sha256(&secret)))?;
    Ok(NewClient {
        name: name.to_string(),
        client_id: uid,
        client_secret: secret,
    })
}

/// The client whose id and secret match; `None` for every kind of mismatch (Doorkeeper's
/// `invalid_client` does not say which part was wrong).
pub fn authenticate(
    conn: &Connection,
    uid: Option<&str>,
    secret: Option<&str>,
) -> DbResult<Option<db::clients::Client>> {
    let (Some(uid), Some(secret)) = (uid, secret) else {
        return Ok(None);
    };
    let Some(client) = db::clients::by_uid(conn, uid)? else {
        return Ok(None);
    };
    let presented = hex(&sha256(secret));
    Ok(constant_time_eq(presented.as_bytes(), client.secret_hash.as_bytes()).then_some(client))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Write credentials to a new file only the owner can read. An existing file is never
/// replaced: apps are configured with what it holds (the open fails with `AlreadyExists`).
pub fn write_credentials(path: &Path, client: &NewClient) -> std::io::Result<()> {
    let mut text = serde_json::to_string_pretty(client).expect("plain struct serializes");
    text.push('\n');
    crate::private_file::write(path, text.as_bytes(), crate::private_file::Existing::Keep)
}
