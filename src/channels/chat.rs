//! `ChatChannel`: joining a chat (with its history) and `speak`.

use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use super::{full_name, ChannelError, Engine};
use crate::db::chats::{Chat, ChatId};
use crate::db::users::{User, UserId};
use crate::db::{self};
use crate::drivers::push::Notification;
use crate::hub::{ConnHandle, Stream};
use crate::wire::{self, Event};

pub const KINDS: [&str; 4] = ["text", "image", "audio", "video"];
pub const STATUSES: [&str; 3] = ["draft", "sent", "delivered"];

/// The `error` payload of a refused `speak` (sent to the speaker only).
#[derive(Debug, Serialize, PartialEq)]
pub struct SpeakError {
    pub code: &'static str,
    pub message: String,
}

/// A valid `speak`.
#[derive(Debug, PartialEq)]
pub struct Speech {
    pub body: String,
    pub kind: &'static str,
    pub status: &'static str,
}

/// Validate `speak` data (behaviour.md "Messages").
pub fn validate_speech(data: &Value, max_body_bytes: usize) -> Result<Speech, SpeakError> {
    let err = |code, message: String| Err(SpeakError { code, message });
    let body = match data.get("body") {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) => return err("blank_body", "body can't be blank".into()),
        Some(_) => return err("invalid_body", "body must be a string".into()),
    };
    if body.trim().is_empty() {
        return err("blank_body", "body can't be blank".into());
    }
    if body.len() > max_body_bytes {
        return err(
            "body_too_long",
            format!("body is longer than {max_body_bytes} bytes"),
        );
    }
    let pick = |key: &str,
                allowed: &[&'static str],
                default: &'static str|
     -> Result<&'static str, SpeakError> {
        match data.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::String(s)) => {
                allowed
                    .iter()
                    .copied()
                    .find(|a| a == s)
                    .ok_or_else(|| SpeakError {
                        code: if key == "kind" {
                            "invalid_kind"
                        } else {
                            "invalid_status"
                        },
                        message: format!("{key} must be one of {}", allowed.join(", ")),
                    })
            }
            Some(_) => Err(SpeakError {
                code: if key == "kind" {
                    "invalid_kind"
                } else {
                    "invalid_status"
                },
                message: format!("{key} must be a string"),
            }),
        }
    };
    let kind = pick("kind", &KINDS, "text")?;
    let status = pick("status", &STATUSES, "sent")?;
    Ok(Speech { body, kind, status })
}

impl Engine {
    /// Subscribe to a chat: allowed only when the subscriber sees it. Joins (membership),
    /// sends `update_chat` to every online viewer, starts the stream, transmits the history.
    pub async fn join_chat(
        &self,
        conn: &ConnHandle,
        identifier: Arc<str>,
        chat: ChatId,
        base: &str,
    ) -> Result<(), ChannelError> {
        let user = conn.user;
        let p = self.presence.lock().await;
        let before = self.chat_view(&p, chat).await?;
        let Some(before) = before.filter(|v| v.sees(user)) else {
            return Err(ChannelError::NotVisible(chat.0));
        };
        self.db
            .write(move |c| db::chats::add_member(c, chat, user))
            .await?;
        let Some(after) = self.chat_view(&p, chat).await? else {
            return Err(ChannelError::NotVisible(chat.0));
        };
        let update = self.payload(Event::UpdateChat, &after.object(base));
        self.to_users(&after.viewers, &update);
        let delete = self.payload(Event::DeleteChat, &chat.0);
        self.to_users(before.viewers.difference(&after.viewers), &delete);
        drop(p);

        self.hub
            .subscribe(Stream::Chat(chat), conn, identifier.clone());
        let history = self.db.read(move |c| db::chats::history(c, chat)).await?;
        let messages: Vec<wire::MessageObject> = history.iter().map(wire::message).collect();
        self.transmit(conn, &identifier, &self.payload(Event::Messages, &messages));
        Ok(())
    }

    pub fn leave_chat(&self, conn: &ConnHandle, identifier: &str, chat: ChatId) {
        self.hub
            .unsubscribe(Stream::Chat(chat), conn.id, identifier);
    }

    /// `speak`: validate, commit, then broadcast; pushes for members in background mode.
    pub async fn speak(
        &self,
        conn: &ConnHandle,
        identifier: &str,
        chat: ChatId,
        data: &Value,
    ) -> Result<(), ChannelError> {
        let spoken = self.commit_speech(conn.user, chat, data).await?;
        self.publish_speech(conn, identifier, chat, spoken);
        Ok(())
    }

    /// `speak`, first half: validate and commit (durable once this returns). Sends nothing, so
    /// a connection can commit several messages at once and still publish them in order.
    pub async fn commit_speech(
        &self,
        user: UserId,
        chat: ChatId,
        data: &Value,
    ) -> Result<Spoken, ChannelError> {
        let speech = match validate_speech(data, self.message_body_bytes) {
            Ok(s) => s,
            Err(e) => return Ok(Spoken::Refused(e)),
        };
        let saved = self
            .db
            .write(move |c| {
                let Some(chat_row) = db::chats::by_id(c, chat)? else {
                    return Ok(None);
                };
                let Some(me) = db::users::by_id(c, user)? else {
                    return Ok(None);
                };
                db::chats::insert_message(c, chat, user, speech.kind, speech.status, &speech.body)?;
                let targets = db::chats::background_push_targets(c, chat, user, db::now_ms())?;
                Ok(Some(Saved {
                    chat: chat_row,
                    speaker: me,
                    speech,
                    push_to: targets,
                }))
            })
            .await?;
        if saved.is_some() {
            crate::metrics::message_stored();
        }
        Ok(match saved {
            Some(s) => Spoken::Saved(Box::new(s)),
            None => Spoken::Gone,
        })
    }

    /// `speak`, second half: the error to the speaker, or the message to the chat and pushes.
    pub fn publish_speech(
        &self,
        conn: &ConnHandle,
        identifier: &str,
        chat: ChatId,
        spoken: Spoken,
    ) {
        let saved = match spoken {
            Spoken::Saved(s) => s,
            Spoken::Refused(e) => {
                self.transmit(conn, identifier, &self.payload(Event::Error, &e));
                return;
            }
            Spoken::Gone => return,
        };
        let Saved {
            chat: chat_row,
            speaker: me,
            speech,
            push_to,
        } = *saved;
        let message = wire::MessageObject {
            user_uuid: me.uuid.clone(),
            kind: speech.kind.to_string(),
            first_name: me.first_name.clone().unwrap_or_default(),
            last_name: me.last_name.clone().unwrap_or_default(),
            body: speech.body.clone(),
        };
        self.hub
            .broadcast(Stream::Chat(chat), &self.payload(Event::Message, &message));
        let subtitle = full_name(&me);
        for (uuid, token) in push_to {
            self.push.enqueue(Notification {
                device_token: token,
                user_uuid: uuid,
                title: chat_row.name.clone(),
                subtitle: Some(subtitle.clone()),
                body: speech.body.clone(),
                data: serde_json::json!({"chat": chat.0.to_string()}),
            });
        }
    }
}

/// What the first half of `speak` decided.
#[derive(Debug)]
pub enum Spoken {
    /// Invalid: the speaker gets an `error` payload.
    Refused(SpeakError),
    /// Committed: broadcast it.
    Saved(Box<Saved>),
    /// The chat or the speaker no longer exists: nothing to send.
    Gone,
}

/// A committed message with what its broadcast and pushes need.
#[derive(Debug)]
pub struct Saved {
    chat: Chat,
    speaker: User,
    speech: Speech,
    /// Members in background mode with a device token: (uuid, token).
    push_to: Vec<(String, String)>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn speech_defaults_and_limits() {
        assert_eq!(
            validate_speech(&json!({"body":"hi"}), 10).unwrap(),
            Speech {
                body: "hi".into(),
                kind: "text",
                status: "sent"
            }
        );
        assert_eq!(
            validate_speech(&json!({"body":" \n"}), 10)
                .unwrap_err()
                .code,
            "blank_body"
        );
        assert_eq!(
            validate_speech(&json!({}), 10).unwrap_err().code,
            "blank_body"
        );
        assert_eq!(
            validate_speech(&json!({"body":"x","kind":"hologram"}), 10)
                .unwrap_err()
                .code,
            "invalid_kind"
        );
        assert_eq!(
            validate_speech(&json!({"body":"x","status":"shouted"}), 10)
                .unwrap_err()
                .code,
            "invalid_status"
        );
        assert_eq!(
            validate_speech(&json!({"body":"é".repeat(6)}), 10)
                .unwrap_err()
                .code,
            "body_too_long"
        );
        assert!(validate_speech(&json!({"body":"é".repeat(5)}), 10).is_ok());
    }
}
