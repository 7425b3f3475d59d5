//! `GET /friends` and `POST /friends`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Serialize;
use serde_json::{json, Value};

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

pub async fn upload(State(state): State<AppState>, req: Authed) -> Result<Response, ApiError> {
    let entries = match req.params.get("friends") {
        Some(Value::Array(entries)) => entries.clone(),
        Some(Value::Object(map)) => map.values().cloned().collect(), // form style friends[0][..]
        _ => {
            return Err(ApiError::bad_request(
                "param is missing or the value is empty: friends",
            ))
        }
    };
    let outcome = people::upload_friends(&state.db, req.user, entries).await?;
    // New mutual contacts are told at once (behaviour.md "Contacts change live").
    state.engine.people_changed(vec![req.user]).await?;
    let created: Vec<wire::FriendRow> = outcome.saved.iter().map(wire::friend_row).collect();
    if outcome.rejected.is_empty() {
        return Ok(error::json(StatusCode::CREATED, &created));
    }
    let errors: Vec<Value> = outcome
        .rejected
        .into_iter()
        .map(|r| json!({"friend": r.entry, "errors": r.errors}))
        .collect();
    Err(ApiError::unprocessable(json!({
        "result": "Some friends could not be created",
        "created": created,
        "errors": errors,
    })))
}
