//! `POST /notifications/invite`.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::error::ApiError;
use super::params::{field, scalar_text, Authed};
use crate::channels::ChannelError;
use crate::db::chats::ChatId;
use crate::state::AppState;

/// `POST /notifications/invite`.
#[derive(Deserialize)]
struct Invite {
    #[serde(default, deserialize_with = "field::text")]
    chat_id: Option<String>,
    /// The React client's spelling; `chat_id` wins when both are sent.
    #[serde(default, rename = "chatId", deserialize_with = "field::text")]
    chat_id_camel: Option<String>,
    #[serde(default, deserialize_with = "invitees")]
    users_to_invite: Invitees,
}

/// `users_to_invite`: a list (its non-scalar items skipped) or one uuid; absent = nobody.
enum Invitees {
    Uuids(Vec<String>),
    NotAList,
}

impl Default for Invitees {
    fn default() -> Self {
        Invitees::Uuids(Vec::new())
    }
}

fn invitees<'de, D: Deserializer<'de>>(d: D) -> Result<Invitees, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Array(items) => Invitees::Uuids(items.iter().filter_map(scalar_text).collect()),
        Value::String(one) => Invitees::Uuids(vec![one]),
        _ => Invitees::NotAList,
    })
}

pub async fn invite(State(state): State<AppState>, req: Authed) -> Result<StatusCode, ApiError> {
    let malformed = |what: &str| {
        ApiError::unprocessable(
            serde_json::json!({"error": "malformed_invite", "error_description": what}),
        )
    };
    let user = req.user;
    let invite: Invite = req.params.into_request()?;
    let chat = invite
        .chat_id
        .or(invite.chat_id_camel)
        .and_then(|s| s.trim().parse::<i64>().ok())
        .filter(|id| *id > 0)
        .ok_or_else(|| malformed("chat_id must be a chat id"))?;
    let uuids = match invite.users_to_invite {
        Invitees::Uuids(uuids) => uuids,
        Invitees::NotAList => {
            return Err(malformed("users_to_invite must be a list of user uuids"))
        }
    };
    match state.engine.invite(user, ChatId(chat), uuids).await {
        Ok(_) => Ok(StatusCode::NO_CONTENT),
        Err(ChannelError::NotVisible(_)) => {
            Err(ApiError::not_found("No such chat, or you do not see it."))
        }
        Err(ChannelError::Db(e)) => Err(e.into()),
    }
}
