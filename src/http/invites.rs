//! `POST /notifications/invite`.

use axum::extract::State;
use axum::http::StatusCode;
use serde_json::Value;

use super::error::ApiError;
use super::params::{scalar_text, Authed};
use crate::channels::ChannelError;
use crate::db::chats::ChatId;
use crate::state::AppState;

pub async fn invite(State(state): State<AppState>, req: Authed) -> Result<StatusCode, ApiError> {
    let malformed = |what: &str| {
        ApiError::unprocessable(
            serde_json::json!({"error": "malformed_invite", "error_description": what}),
        )
    };
    let chat = ["chat_id", "chatId"]
        .iter()
        .find_map(|k| req.params.get(k).and_then(scalar_text))
        .and_then(|s| s.trim().parse::<i64>().ok())
        .filter(|id| *id > 0)
        .ok_or_else(|| malformed("chat_id must be a chat id"))?;
    let uuids: Vec<String> = match req.params.get("users_to_invite") {
        Some(Value::Array(items)) => items.iter().filter_map(scalar_text).collect(),
        Some(Value::String(one)) => vec![one.clone()],
        None => Vec::new(),
        Some(_) => return Err(malformed("users_to_invite must be a list of user uuids")),
    };
    match state.engine.invite(req.user, ChatId(chat), uuids).await {
        Ok(_) => Ok(StatusCode::NO_CONTENT),
        Err(ChannelError::NotVisible(_)) => {
            Err(ApiError::not_found("No such chat, or you do not see it."))
        }
        Err(ChannelError::Db(e)) => Err(e.into()),
    }
}
