//! The chat rules of behaviour.md ("Presence", "Chats", "Messages", "Background mode",
//! "Invites") behind `ChatsChannel` and `ChatChannel`. Transport-free: the cable layer calls
//! these with a connection handle and the subscription's identifier.
//!
//! Presence and visibility changes are serialized by one async mutex, so every viewer sees a
//! consistent sequence of `update_chat`/`delete_chat`; `speak` does not take it (its path is
//! validate → group commit → fan-out).

mod background;
mod chat;
mod chats;
mod forget;
mod visibility;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use serde::Serialize;

use crate::config::{Config, KeyStyle};
use crate::db::chats::ChatId;
use crate::db::users::{User, UserId};
use crate::db::{self, Db, DbError};
use crate::drivers::push::{Notification, PushQueue};
use crate::hub::{channel_frame, ConnHandle, Hub, Stream};
use crate::wire::{self, Event};

pub use chat::Spoken;
pub use visibility::ChatView;

/// Why a channel action did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("chat {0} does not exist, has ended, or is not visible")]
    NotVisible(i64),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Who is online (behaviour.md "Presence"). Guarded by `Engine::presence`.
#[derive(Default)]
pub struct Presence {
    /// `ChatsChannel` subscriptions per user, over all their connections.
    chats_subscriptions: HashMap<UserId, usize>,
    /// Open background windows (ends, Unix ms), mirrored in `users.background_until`.
    background: HashMap<UserId, i64>,
}

impl Presence {
    pub fn is_online(&self, user: UserId) -> bool {
        self.chats_subscriptions.get(&user).is_some_and(|n| *n > 0)
            || self.background.contains_key(&user)
    }

    pub fn in_background(&self, user: UserId) -> bool {
        self.background.contains_key(&user)
    }
}

pub struct Engine {
    db: Db,
    hub: Arc<Hub>,
    push: PushQueue,
    style: KeyStyle,
    window_ms: i64,
    message_body_bytes: usize,
    /// Base of picture URLs for events no request caused (window expiry).
    default_base: String,
    presence: tokio::sync::Mutex<Presence>,
}

impl Engine {
    pub fn new(db: Db, hub: Arc<Hub>, push: PushQueue, config: &Config) -> Arc<Engine> {
        let default_base = if config.public_url.is_empty() {
            let listen = if config.listen.is_empty() {
                &config.tls.listen
            } else {
                &config.listen
            };
            let scheme = if config.listen.is_empty() {
                "https"
            } else {
                "http"
            };
            format!("{scheme}://{listen}")
        } else {
            config.public_url.trim_end_matches('/').to_string()
        };
        Arc::new(Engine {
            db,
            hub,
            push,
            style: config.cable.key_style,
            window_ms: config.cable.background_window_seconds as i64 * 1000,
            message_body_bytes: config.limits.message_body_bytes,
            default_base,
            presence: tokio::sync::Mutex::new(Presence::default()),
        })
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// Encode `{"<event>": value}` once for any number of recipients.
    fn payload<T: Serialize + ?Sized>(&self, event: Event, value: &T) -> String {
        wire::payload(event, self.style, value)
    }

    /// Send a payload to one subscription of one connection.
    fn transmit(&self, conn: &ConnHandle, identifier: &str, payload: &str) {
        conn.send(Utf8Bytes::from(channel_frame(identifier, payload)));
    }

    /// Send a payload to every `ChatsChannel` subscription of each user.
    fn to_users<'a>(&self, users: impl IntoIterator<Item = &'a UserId>, payload: &str) {
        for user in users {
            self.hub.broadcast(Stream::User(*user), payload);
        }
    }

    /// Online mutual contacts of `user`, as users.
    async fn online_mutual_contacts(
        &self,
        p: &Presence,
        user: UserId,
    ) -> Result<Vec<User>, DbError> {
        let ids = self
            .db
            .read(move |c| db::users::mutual_contacts(c, user))
            .await?;
        let online: Vec<UserId> = ids.into_iter().filter(|id| p.is_online(*id)).collect();
        if online.is_empty() {
            return Ok(Vec::new());
        }
        self.db.read(move |c| db::users::by_ids(c, &online)).await
    }

    /// `POST /notifications/invite`: push an invite to each mutual contact with a device token.
    /// Returns how many pushes were queued.
    pub async fn invite(
        &self,
        inviter: UserId,
        chat: ChatId,
        uuids: Vec<String>,
    ) -> Result<usize, ChannelError> {
        let view = {
            let p = self.presence.lock().await;
            self.chat_view(&p, chat).await?
        };
        if !view.as_ref().is_some_and(|v| v.sees(inviter)) {
            return Err(ChannelError::NotVisible(chat.0));
        }
        let invitees = self
            .db
            .read(move |c| {
                let me = db::users::by_id(c, inviter)?;
                let mut out = Vec::new();
                for uuid in uuids.iter().take(1000) {
                    if let Some(u) = db::users::by_uuid(c, uuid)? {
                        if u.id != inviter
                            && u.device_token.is_some()
                            && db::users::are_mutual(c, inviter, u.id)?
                        {
                            out.push(u);
                        }
                    }
                }
                Ok((me, out))
            })
            .await?;
        let (Some(me), invitees) = invitees else {
            return Ok(0);
        };
        let name = full_name(&me);
        for u in &invitees {
            self.push.enqueue(Notification {
                device_token: u.device_token.clone().unwrap_or_default(),
                user_uuid: u.uuid.clone(),
                title: "Live chat invite! 🎉".into(),
                subtitle: None,
                body: format!("{name} wants to chat with you!\nTap to chat"),
                data: serde_json::json!({"chat": chat.0.to_string()}),
            });
        }
        Ok(invitees.len())
    }

    /// Connections and subscriptions right now (for logs and the load tool).
    pub async fn online_count(&self) -> usize {
        let p = self.presence.lock().await;
        let mut users: HashSet<UserId> = p.chats_subscriptions.keys().copied().collect();
        users.extend(p.background.keys().copied());
        users.len()
    }
}

/// "First Last" as the push subtitle and invite text show it.
pub fn full_name(u: &User) -> String {
    let first = u.first_name.as_deref().unwrap_or("");
    let last = u.last_name.as_deref().unwrap_or("");
    format!("{first} {last}").trim().to_string()
}
