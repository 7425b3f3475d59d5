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

/// A rejected address-book entry and why.
pub struct RejectedFriend {
    pub entry: Value,
    pub errors: Vec<String>,
}

pub struct UploadOutcome {
    pub saved: Vec<Friend>,
    pub rejected: Vec<RejectedFriend>,
}

fn string_field(entry: &Value, key: &str) -> Option<String> {
    match entry.get(key) {
        Some(Value::String(s)) => Some(s.trim().to_string()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    }
}

/// Validate one address-book entry: `(first, last, number)` or the reasons it is refused.
pub fn validate_friend(entry: &Value) -> Result<(String, String, String), Vec<String>> {
    let mut errors = Vec::new();
    let mut name = |key: &str, label: &str| match string_field(entry, key) {
        Some(v) if !v.is_empty() && v.chars().count() <= MAX_NAME_CHARS => v,
        Some(v) if !v.is_empty() => {
            errors.push(format!(
                "{label} is too long (maximum is {MAX_NAME_CHARS} characters)"
            ));
            String::new()
        }
        _ => {
            errors.push(format!("{label} can't be blank"));
            String::new()
        }
    };
    let first = name("first_name", "First name");
    let last = name("last_name", "Last name");
    let number = match string_field(entry, "number") {
        Some(raw) if !raw.is_empty() => numbers::normalize(&raw),
        _ => None,
    };
    if number.is_none() {
        errors.push("Number must be a 10 digit US number".into());
    }
    if !entry.is_object() {
        return Err(vec!["Friend must be an object".into()]);
    }
    match (errors.is_empty(), number) {
        (true, Some(n)) => Ok((first, last, n)),
        _ => Err(errors),
    }
}

/// `POST /friends`: save every valid entry (idempotent per number), report the others.
pub async fn upload_friends(
    db: &Db,
    owner: UserId,
    entries: Vec<Value>,
) -> Result<UploadOutcome, PeopleError> {
    if entries.len() > MAX_FRIENDS_PER_UPLOAD {
        return Err(PeopleError::BadRequest(format!(
            "at most {MAX_FRIENDS_PER_UPLOAD} friends per request"
        )));
    }
    let mut valid = Vec::new();
    let mut rejected = Vec::new();
    for entry in entries {
        match validate_friend(&entry) {
            Ok(v) => valid.push(v),
            Err(errors) => rejected.push(RejectedFriend { entry, errors }),
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
    Ok(UploadOutcome { saved, rejected })
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
    fn friend_entries_are_checked_field_by_field() {
        assert_eq!(
            validate_friend(&json!({"first_name":"A","last_name":"B","number":"(555) 123-4567"}))
                .unwrap(),
            ("A".into(), "B".into(), "5551234567".into())
        );
        let errs = validate_friend(&json!({"first_name":"A","number":"12"})).unwrap_err();
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(validate_friend(&json!("nope")).is_err());
    }
}
