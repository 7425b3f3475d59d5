//! Users, their address books (friends), contact links and pictures.

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::{now_ms, DbResult};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(pub i64);

#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub id: UserId,
    pub uuid: String,
    pub number: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub picture_key: Option<String>,
    pub device_token: Option<String>,
    pub background_until: Option<i64>,
}

/// `SELECT <the columns of [`User`]> FROM users WHERE <filter>`, as one literal: the writer
/// reads the speaker of every message through [`by_id`], and a statement built with `format!`
/// cost an allocation and a longer cache lookup each time.
macro_rules! select_user_where {
    ($filter:literal) => {
        concat!(
            "SELECT id, uuid, number, first_name, last_name, picture_key, device_token, background_until",
            " FROM users WHERE ",
            $filter
        )
    };
}

fn user_from_row(r: &Row) -> rusqlite::Result<User> {
    Ok(User {
        id: UserId(r.get(0)?),
        uuid: r.get(1)?,
        number: r.get(2)?,
        first_name: r.get(3)?,
        last_name: r.get(4)?,
        picture_key: r.get(5)?,
        device_token: r.get(6)?,
        background_until: r.get(7)?,
    })
}

fn one(conn: &Connection, sql: &str, param: &dyn rusqlite::ToSql) -> DbResult<Option<User>> {
    Ok(conn
        .prepare_cached(sql)?
        .query_row([param], user_from_row)
        .optional()?)
}

pub fn by_id(conn: &Connection, id: UserId) -> DbResult<Option<User>> {
    one(conn, select_user_where!("id = ?1"), &id.0)
}

pub fn by_uuid(conn: &Connection, uuid: &str) -> DbResult<Option<User>> {
    one(conn, select_user_where!("uuid = ?1"), &uuid)
}

pub fn by_number(conn: &Connection, number: &str) -> DbResult<Option<User>> {
    one(conn, select_user_where!("number = ?1"), &number)
}

/// Mutual contact pairs among `users`, each once (smaller id first). Streamed through a
/// filter: at start only the present are wanted, however many accounts the server has.
pub fn mutual_pairs_among(
    conn: &Connection,
    users: &std::collections::HashSet<UserId>,
) -> DbResult<Vec<(UserId, UserId)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT a.owner_id, a.contact_id FROM contacts a
         JOIN contacts b ON b.owner_id = a.contact_id AND b.contact_id = a.owner_id
         WHERE a.owner_id < a.contact_id",
    )?;
    let mut rows = stmt.query([])?;
    let mut pairs = Vec::new();
    while let Some(r) = rows.next()? {
        let pair = (UserId(r.get(0)?), UserId(r.get(1)?));
        if users.contains(&pair.0) && users.contains(&pair.1) {
            pairs.push(pair);
        }
    }
    Ok(pairs)
}

/// A user and their mutual contacts (ids ascending), or `None` when there is no such user.
pub fn with_mutual_contacts(
    conn: &Connection,
    id: UserId,
) -> DbResult<Option<(User, Vec<UserId>)>> {
    match by_id(conn, id)? {
        Some(user) => Ok(Some((user, mutual_contacts(conn, id)?))),
        None => Ok(None),
    }
}

/// Create the user of a newly verified number and link every address book that holds it.
pub fn create(conn: &Connection, number: &str) -> DbResult<User> {
    let now = now_ms();
    let uuid = uuid::Uuid::new_v4().to_string();
    conn.prepare_cached(
        "INSERT INTO users (uuid, number, created_at, updated_at) VALUES (?1, ?2, ?3, ?3)",
    )?
    .execute(params![uuid, number, now])?;
    let id = UserId(conn.last_insert_rowid());
    conn.prepare_cached(
        "INSERT OR IGNORE INTO contacts (owner_id, contact_id)
         SELECT owner_id, ?1 FROM friends WHERE number = ?2 AND owner_id != ?1",
    )?
    .execute(params![id.0, number])?;
    Ok(by_id(conn, id)?.expect("just inserted"))
}

pub fn update_names(
    conn: &Connection,
    id: UserId,
    first_name: Option<&str>,
    last_name: Option<&str>,
) -> DbResult<()> {
    conn.prepare_cached(
        "UPDATE users SET first_name = COALESCE(?2, first_name), last_name = COALESCE(?3, last_name),
         updated_at = ?4 WHERE id = ?1",
    )?
    .execute(params![id.0, first_name, last_name, now_ms()])?;
    Ok(())
}

/// A device token belongs to one user: whoever registers it last gets the pushes.
pub fn set_device_token(conn: &Connection, id: UserId, token: &str) -> DbResult<()> {
    conn.prepare_cached(
        "UPDATE users SET device_token = NULL WHERE device_token = ?1 AND id != ?2",
    )?
    .execute(params![token, id.0])?;
    conn.prepare_cached("UPDATE users SET device_token = ?2, updated_at = ?3 WHERE id = ?1")?
        .execute(params![id.0, token, now_ms()])?;
    Ok(())
}

/// Forget a token the push service called invalid.
pub fn clear_device_token(conn: &Connection, token: &str) -> DbResult<usize> {
    Ok(conn
        .prepare_cached("UPDATE users SET device_token = NULL WHERE device_token = ?1")?
        .execute([token])?)
}

pub fn set_background_until(conn: &Connection, id: UserId, until: Option<i64>) -> DbResult<()> {
    conn.prepare_cached("UPDATE users SET background_until = ?2 WHERE id = ?1")?
        .execute(params![id.0, until])?;
    Ok(())
}

/// Every open background window: (user, ends at).
pub fn background_windows(conn: &Connection) -> DbResult<Vec<(UserId, i64)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, background_until FROM users WHERE background_until IS NOT NULL",
    )?;
    let rows = stmt.query_map([], |r| Ok((UserId(r.get(0)?), r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

// ---- address book ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
pub struct Friend {
    pub id: i64,
    pub owner_id: UserId,
    pub first_name: String,
    pub last_name: String,
    pub number: String,
    pub created_at: i64,
    pub updated_at: i64,
}

fn friend_from_row(r: &Row) -> rusqlite::Result<Friend> {
    Ok(Friend {
        id: r.get(0)?,
        owner_id: UserId(r.get(1)?),
        first_name: r.get(2)?,
        last_name: r.get(3)?,
        number: r.get(4)?,
        created_at: r.get(5)?,
        updated_at: r.get(6)?,
    })
}

/// Insert or rename one address-book entry and link the owner to the number's user, if any.
pub fn upsert_friend(
    conn: &Connection,
    owner: UserId,
    first_name: &str,
    last_name: &str,
    number: &str,
) -> DbResult<Friend> {
    let now = now_ms();
    let friend = conn
        .prepare_cached(
            "INSERT INTO friends (owner_id, first_name, last_name, number, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?5)
             ON CONFLICT (owner_id, number)
             DO UPDATE SET first_name = excluded.first_name, last_name = excluded.last_name,
                           updated_at = excluded.updated_at
             RETURNING id, owner_id, first_name, last_name, number, created_at, updated_at",
        )?
        .query_row(
            params![owner.0, first_name, last_name, number, now],
            friend_from_row,
        )?;
    conn.prepare_cached(
        "INSERT OR IGNORE INTO contacts (owner_id, contact_id)
         SELECT ?1, id FROM users WHERE number = ?2 AND id != ?1",
    )?
    .execute(params![owner.0, number])?;
    Ok(friend)
}

/// The owner's address book in upload order, each entry with the user who has that number.
pub fn address_book(conn: &Connection, owner: UserId) -> DbResult<Vec<(Friend, Option<User>)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT f.id, f.owner_id, f.first_name, f.last_name, f.number, f.created_at, f.updated_at,
                u.id, u.uuid, u.number, u.first_name, u.last_name, u.picture_key, u.device_token,
                u.background_until
         FROM friends f LEFT JOIN users u ON u.number = f.number AND u.id != f.owner_id
         WHERE f.owner_id = ?1 ORDER BY f.id",
    )?;
    let rows = stmt.query_map([owner.0], |r| {
        let friend = friend_from_row(r)?;
        let user = match r.get::<_, Option<i64>>(7)? {
            None => None,
            Some(id) => Some(User {
                id: UserId(id),
                uuid: r.get(8)?,
                number: r.get(9)?,
                first_name: r.get(10)?,
                last_name: r.get(11)?,
                picture_key: r.get(12)?,
                device_token: r.get(13)?,
                background_until: r.get(14)?,
            }),
        };
        Ok((friend, user))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Users who hold `id`'s number and whose number `id` holds.
pub fn mutual_contacts(conn: &Connection, id: UserId) -> DbResult<Vec<UserId>> {
    let mut stmt = conn.prepare_cached(
        "SELECT a.contact_id FROM contacts a
         JOIN contacts b ON b.owner_id = a.contact_id AND b.contact_id = a.owner_id
         WHERE a.owner_id = ?1 ORDER BY a.contact_id",
    )?;
    let rows = stmt.query_map([id.0], |r| Ok(UserId(r.get(0)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn are_mutual(conn: &Connection, a: UserId, b: UserId) -> DbResult<bool> {
    Ok(conn
        .prepare_cached(
            "SELECT 1 FROM contacts x JOIN contacts y ON y.owner_id = x.contact_id AND y.contact_id = x.owner_id
             WHERE x.owner_id = ?1 AND x.contact_id = ?2",
        )?
        .exists(params![a.0, b.0])?)
}

// ---- pictures -------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
pub struct Blob {
    pub key: String,
    pub content_type: String,
    pub byte_size: i64,
    pub sha256: String,
}

pub fn blob(conn: &Connection, key: &str) -> DbResult<Option<Blob>> {
    Ok(conn
        .prepare_cached("SELECT key, content_type, byte_size, sha256 FROM blobs WHERE key = ?1")?
        .query_row([key], |r| {
            Ok(Blob {
                key: r.get(0)?,
                content_type: r.get(1)?,
                byte_size: r.get(2)?,
                sha256: r.get(3)?,
            })
        })
        .optional()?)
}

/// Point the user at a new picture; returns the key of the picture nothing refers to any more.
pub fn replace_picture(conn: &Connection, id: UserId, blob: &Blob) -> DbResult<Option<String>> {
    conn.prepare_cached(
        "INSERT INTO blobs (key, content_type, byte_size, sha256, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![blob.key, blob.content_type, blob.byte_size, blob.sha256, now_ms()])?;
    let old: Option<String> = conn
        .prepare_cached("SELECT picture_key FROM users WHERE id = ?1")?
        .query_row([id.0], |r| r.get(0))?;
    conn.prepare_cached("UPDATE users SET picture_key = ?2, updated_at = ?3 WHERE id = ?1")?
        .execute(params![id.0, blob.key, now_ms()])?;
    if let Some(old_key) = &old {
        let still_used = conn
            .prepare_cached("SELECT 1 FROM users WHERE picture_key = ?1")?
            .exists([old_key])?;
        if still_used {
            return Ok(None);
        }
        conn.prepare_cached("DELETE FROM blobs WHERE key = ?1")?
            .execute([old_key])?;
    }
    Ok(old)
}
