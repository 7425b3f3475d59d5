//! People: numbers, address books and contacts, profiles, pictures (behaviour.md "People and
//! numbers", "Contacts", "Pictures"). Transport-free; the HTTP handlers call these.

pub mod numbers;
pub mod pictures;

use serde_json::Value;

use crate::db::users::{Friend, User, UserId};
use crate::db::{self, Db, DbError};

pub const MAX_NAME_CHARS: usize = 100;
/// Entries accepted in one address-book upload.
pub const MAX_FRIENDS_PER_UPLOAD: usize = 5000;

#[derive(Debug, thiserror::Error)]
pub enum PeopleError {
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

pub struct UploadOutcome {
    /// The rows saved (created or renamed), in upload order.
    pub saved: Vec<Friend>,
    /// Entries left out because their number cannot be parsed (or they are not objects).
    pub skipped: usize,
}

fn string_field(entry: &Value, key: &str) -> String {
    match entry.get(key) {
        Some(Value::String(s)) => s.trim().to_string(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

/// A name as stored: missing or empty is `""`, longer than [`MAX_NAME_CHARS`] is cut there (an
/// address book is the phone's, not something its owner can fix for us).
fn friend_name(entry: &Value, key: &str) -> String {
    let name = string_field(entry, key);
    match name.char_indices().nth(MAX_NAME_CHARS) {
        Some((cut, _)) => name[..cut].to_string(),
        None => name,
    }
}

/// One address-book entry as `(first, last, E.164 number)`, or `None` when its number cannot be
/// parsed.
pub fn parse_friend(numbers: &numbers::Numbers, entry: &Value) -> Option<(String, String, String)> {
    if !entry.is_object() {
        return None;
    }
    let number = numbers.parse(&string_field(entry, "number"))?;
    Some((
        friend_name(entry, "first_name"),
        friend_name(entry, "last_name"),
        number,
    ))
}

/// `POST /friends`: save every entry with a parseable number (idempotent per number), skip the
/// others. Numbers are stored in E.164, so an entry links to the user of that number whatever
/// form either was written in.
pub async fn upload_friends(
    db: &Db,
    numbers: &numbers::Numbers,
    owner: UserId,
    entries: Vec<Value>,
) -> Result<UploadOutcome, PeopleError> {
    if entries.len() > MAX_FRIENDS_PER_UPLOAD {
        return Err(PeopleError::BadRequest(format!(
            "at most {MAX_FRIENDS_PER_UPLOAD} friends per request"
        )));
    }
    let mut valid = Vec::with_capacity(entries.len());
    let mut skipped = 0;
    for entry in &entries {
        match parse_friend(numbers, entry) {
            Some(v) => valid.push(v),
            None => {
                skipped += 1;
                log::debug!("POST /friends: skipping an entry without a parseable number: {entry}");
            }
        }
    }
    let saved = if valid.is_empty() {
        Vec::new()
    } else {
        db.write(move |c| {
            valid
                .iter()
                .map(|(f, l, n)| db::users::upsert_friend(c, owner, f, l, n))
                .collect::<Result<Vec<_>, _>>()
        })
        .await?
    };
    Ok(UploadOutcome { saved, skipped })
}

/// `GET /friends`: address-book entries without an account, and the users behind the others.
pub async fn address_book(db: &Db, owner: UserId) -> Result<(Vec<Friend>, Vec<User>), PeopleError> {
    let book = db.read(move |c| db::users::address_book(c, owner)).await?;
    let mut friends = Vec::new();
    let mut contacts: Vec<User> = Vec::new();
    for (friend, user) in book {
        match user {
            Some(u) => {
                if !contacts.iter().any(|c| c.id == u.id) {
                    contacts.push(u)
                }
            }
            None => friends.push(friend),
        }
    }
    Ok((friends, contacts))
}

/// A user's profile, or `None` when the account no longer exists.
pub async fn profile(db: &Db, id: UserId) -> Result<Option<User>, PeopleError> {
    Ok(db.read(move |c| db::users::by_id(c, id)).await?)
}

/// `PATCH /user`: set the names given (`None` keeps the stored one) and return the profile as
/// stored, or `None` when the account no longer exists. Check [`validate_names`] first.
pub async fn rename(
    db: &Db,
    id: UserId,
    first: Option<String>,
    last: Option<String>,
) -> Result<Option<User>, PeopleError> {
    Ok(db
        .write(move |c| {
            db::users::update_names(c, id, first.as_deref(), last.as_deref())?;
            db::users::by_id(c, id)
        })
        .await?)
}

/// `POST /user/registerIOSDevice`: the device token pushes go to.
pub async fn register_device(db: &Db, id: UserId, token: String) -> Result<(), PeopleError> {
    Ok(db
        .write(move |c| db::users::set_device_token(c, id, &token))
        .await?)
}

/// Validation of a profile update; errors keyed by field, Rails-style.
pub fn validate_names(
    first: Option<&str>,
    last: Option<&str>,
) -> Result<(), serde_json::Map<String, Value>> {
    let mut errors = serde_json::Map::new();
    for (key, value) in [("first_name", first), ("last_name", last)] {
        if value.is_some_and(|v| v.chars().count() > MAX_NAME_CHARS) {
            errors.insert(
                key.into(),
                // wire.md's exact text (Rails would add "(maximum is 100 characters)").
                Value::from(vec!["is too long"]),
            );
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn friend_entries_need_only_a_parseable_number() {
        let us = numbers::Numbers::us();
        assert_eq!(
            parse_friend(
                &us,
                &json!({"first_name":" A ","last_name":"B","number":"(555) 123-4567"})
            ),
            Some(("A".into(), "B".into(), "+15551234567".into()))
        );
        assert_eq!(
            parse_friend(&us, &json!({"number":"+972 50 234 5678"})),
            Some((String::new(), String::new(), "+972502345678".into()))
        );
        let long = "é".repeat(150);
        let (first, _, _) =
            parse_friend(&us, &json!({"first_name": long, "number":"5551234567"})).unwrap();
        assert_eq!(first.chars().count(), MAX_NAME_CHARS);
        assert_eq!(
            parse_friend(&us, &json!({"first_name":"A","number":"12"})),
            None
        );
        assert_eq!(parse_friend(&us, &json!({"first_name":"A"})), None);
        assert_eq!(parse_friend(&us, &json!("5551234567")), None);
    }
}
