//! `GET /friends` and `POST /friends`.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use super::client_ip::Origin;
use super::error::{self, ApiError};
use super::params::Authed;
use crate::people;
use crate::state::AppState;
use crate::wire;

#[derive(Serialize)]
struct Listing {
    friends: Vec<wire::FriendEntry>,
    contacts: Vec<wire::Contact>,
}

pub async fn list(
    State(state): State<AppState>,
    origin: Origin,
    req: Authed,
) -> Result<Response, ApiError> {
    let (friends, contacts) = people::address_book(&state.db, req.user).await?;
    let body = Listing {
        friends: friends.iter().map(wire::friend_entry).collect(),
        contacts: contacts
            .iter()
            .map(|u| wire::contact(u, &origin.base_url))
            .collect(),
    };
    Ok(error::json(StatusCode::OK, &body))
}

/// `POST /friends`. The entries stay JSON: each is read by `people::upload_friends`, which
/// skips an odd one instead of failing the upload.
#[derive(Deserialize)]
struct Upload {
    #[serde(default, deserialize_with = "entries")]
    friends: Option<Vec<Value>>,
}

/// A list of entries, or the form style `friends[0][number]=…` (an object of entries); any
/// other shape counts as missing.
fn entries<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<Value>>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Array(entries) => Some(entries),
        Value::Object(map) => Some(map.into_iter().map(|(_, v)| v).collect()),
        _ => None,
    })
}

pub async fn upload(State(state): State<AppState>, req: Authed) -> Result<Response, ApiError> {
    let upload: Upload = req.params.into_request()?;
    let Some(entries) = upload.friends else {
        return Err(ApiError::bad_request(
            "param is missing or the value is empty: friends",
        ));
    };
    let outcome = people::upload_friends(&state.db, &state.auth.numbers, req.user, entries).await?;
    // New mutual contacts are told at once (behaviour.md "Contacts change live").
    state.engine.people_changed(vec![req.user]).await?;
    let created: Vec<wire::FriendRow> = outcome.saved.iter().map(wire::friend_row).collect();
    // Always 201 with what was saved: the iOS app only leaves its contacts screen on a 201, so a
    // single odd entry in a real address book must not fail the upload (wire.md POST /friends).
    let mut response = error::json(StatusCode::CREATED, &created);
    response
        .headers_mut()
        .insert("hangin-skipped", HeaderValue::from(outcome.skipped));
    Ok(response)
}
