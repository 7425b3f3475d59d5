//! `ChatChannel`: joining a chat (with its history) and `speak`.

use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use axum::extract::ws::Utf8Bytes;

use super::{full_name, ChannelError, Engine, Refusal};
use crate::cable::protocol;
use crate::db::chats::ChatId;
use crate::db::users::User;
use crate::db::{self, DbError};
use crate::drivers::push::Notification;
use crate::hub::{channel_frame, ConnHandle, Stream};
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
    /// Subscribe to a chat: allowed only when the subscriber sees it. Joining makes the user a
    /// member (viewers are told as the world decides); then, on the writer in commit order,
    /// the history is read, transmitted with the confirmation, and the subscription starts
    /// streaming. A message committed before that point is in the history, one committed
    /// after it comes live: each exactly once, in the order the history holds them.
    pub async fn join_chat(
        self: &Arc<Self>,
        conn: &ConnHandle,
        identifier: Arc<str>,
        chat: ChatId,
    ) -> Result<(), ChannelError> {
        let user = conn.user;
        self.with_person(user, move |engine, world| {
            let (_joined, outs) = world.join(user, chat)?;
            engine.apply(world, outs);
            Ok(())
        })
        .await?
        .map_err(|_: Refusal| ChannelError::NotVisible(chat.0))?;
        let (limit, bytes) = (self.history_messages, self.history_bytes);
        let hub = self.hub.clone();
        let conn = conn.clone();
        let history_payload = {
            let style = self.style;
            move |history: &[db::chats::Message]| {
                let messages: Vec<wire::MessageObject> =
                    history.iter().map(wire::message).collect();
                wire::payload(Event::Messages, style, &messages)
            }
        };
        self.db
            .write_then(
                move |c| db::chats::history(c, chat, limit, bytes),
                move |history| {
                    let history = history?;
                    conn.send(Utf8Bytes::from(channel_frame(
                        &identifier,
                        &history_payload(&history),
                    )));
                    conn.send(protocol::confirm(&identifier).into());
                    hub.subscribe(Stream::Chat(chat), &conn, identifier);
                    Ok::<(), DbError>(())
                },
            )
            .await??;
        Ok(())
    }

    pub fn leave_chat(&self, conn: &ConnHandle, identifier: &str, chat: ChatId) {
        self.hub
            .unsubscribe(Stream::Chat(chat), conn.id, identifier);
    }

    /// `speak`: validate, commit, then — on the writer, in commit order — broadcast to the
    /// chat and queue pushes for members in background mode. Resolves once that is done. The
    /// speaker gets an `error` payload when the data is invalid, the chat has ended, or the
    /// message could not be stored.
    pub async fn speak(
        self: &Arc<Self>,
        conn: &ConnHandle,
        identifier: Arc<str>,
        chat: ChatId,
        data: &Value,
    ) {
        let speech = match validate_speech(data, self.message_body_bytes) {
            Ok(s) => s,
            Err(e) => {
                // Through the writer's queue all the same, so the speaker's earlier messages
                // come back before this refusal, as they were sent.
                let payload = self.payload(Event::Error, &e);
                let speaker = conn.clone();
                let refused = self
                    .db
                    .write_then(
                        |_| Ok(()),
                        move |_| {
                            speaker.send(Utf8Bytes::from(channel_frame(&identifier, &payload)))
                        },
                    )
                    .await;
                if let Err(e) = refused {
                    log::warn!("a refused speak could not be answered: {e}");
                }
                return;
            }
        };
        let user = conn.user;
        let engine = self.clone();
        let clock = self.db.clock().clone();
        let speaker = conn.clone();
        let done = self
            .db
            .write_then(
                move |c| {
                    // One read of the chat row: it must be live, and its name titles pushes.
                    let Some(chat_name) = db::chats::by_id(c, chat)?
                        .filter(|c| c.ended_at.is_none())
                        .map(|c| c.name)
                    else {
                        return Ok(None);
                    };
                    let Some(me) = db::users::by_id(c, user)? else {
                        return Ok(None);
                    };
                    db::chats::insert_message(
                        c,
                        chat,
                        user,
                        speech.kind,
                        speech.status,
                        &speech.body,
                    )?;
                    let targets =
                        db::chats::background_push_targets(c, chat, user, clock.now_ms())?;
                    Ok(Some(Saved {
                        chat_name,
                        speaker: me,
                        speech,
                        push_to: targets,
                    }))
                },
                move |outcome| engine.publish_speech(&speaker, &identifier, chat, outcome),
            )
            .await;
        if let Err(e) = done {
            log::warn!("speak of user {} was not queued: {e}", user.0);
        }
    }

    /// `speak`, second half (on the writer's publishing thread, in commit order).
    fn publish_speech(
        &self,
        conn: &ConnHandle,
        identifier: &str,
        chat: ChatId,
        outcome: Result<Option<Saved>, DbError>,
    ) {
        let saved = match outcome {
            Ok(Some(saved)) => saved,
            Ok(None) => {
                let e = SpeakError {
                    code: "chat_ended",
                    message: "this chat has ended; nothing was stored".into(),
                };
                self.transmit(conn, identifier, &self.payload(Event::Error, &e));
                return;
            }
            Err(e) => {
                log::error!("a message of user {} was not stored: {e}", conn.user.0);
                let e = SpeakError {
                    code: "not_stored",
                    message: "the server could not store this message; send it again".into(),
                };
                self.transmit(conn, identifier, &self.payload(Event::Error, &e));
                return;
            }
        };
        crate::metrics::message_stored();
        let Saved {
            chat_name,
            speaker: me,
            speech,
            push_to,
        } = saved;
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
                title: chat_name.clone(),
                subtitle: Some(subtitle.clone()),
                body: speech.body.clone(),
                data: serde_json::json!({"chat": chat.0.to_string()}),
            });
        }
    }
}

/// A committed message with what its broadcast and pushes need.
#[derive(Debug)]
struct Saved {
    chat_name: String,
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
