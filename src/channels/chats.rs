//! `ChatsChannel`: the chat list, presence, `createChat`, `go_to_background`.

use std::sync::Arc;

use serde_json::Value;

use super::chat::SpeakError;
use super::world::World;
use super::{ChannelError, Engine, Refusal};
use crate::cable::protocol;
use crate::hub::{ConnHandle, Stream};
use crate::wire::{self, Event};

/// Longest chat name kept (longer names are cut, not refused: the creator still gets a chat).
pub const MAX_CHAT_NAME_CHARS: usize = 255;

impl Engine {
    /// Subscribe: transmit `chats`, then `contacts_online`, then the confirmation; the user
    /// goes online (announced to online mutual contacts) unless they already were, e.g.
    /// returning from the background. All under the world lock, so the snapshot and the notes
    /// that follow it are one consistent sequence.
    pub async fn subscribe_chats(
        self: &Arc<Self>,
        conn: &ConnHandle,
        identifier: Arc<str>,
    ) -> Result<(), ChannelError> {
        let conn = conn.clone();
        self.with_person(conn.user, move |engine, world| {
            engine.subscribe_chats_now(world, &conn, identifier)
        })
        .await?;
        Ok(())
    }

    fn subscribe_chats_now(&self, world: &mut World, conn: &ConnHandle, identifier: Arc<str>) {
        let user = conn.user;
        let (snapshot, outs) = world.subscribe_chats(user);
        let chats: Vec<wire::ChatObject> = snapshot
            .chats
            .iter()
            .filter_map(|id| self.chat_object(world, *id))
            .collect();
        self.transmit(conn, &identifier, &self.payload(Event::Chats, &chats));
        let contacts: Vec<wire::Contact> = snapshot
            .contacts_online
            .iter()
            .filter_map(|u| world.profile(*u).map(|p| self.contact(p)))
            .collect();
        self.transmit(
            conn,
            &identifier,
            &self.payload(Event::ContactsOnline, &contacts),
        );
        conn.send(protocol::confirm(&identifier).into());
        self.hub.subscribe(Stream::User(user), conn, identifier);
        self.apply(world, outs);
    }

    /// Unsubscribe (or connection closed): the last subscription going away takes the user
    /// offline unless a background window is open.
    pub fn unsubscribe_chats(&self, conn: &ConnHandle, identifier: &str) {
        let mut world = self.world.lock();
        self.hub
            .unsubscribe(Stream::User(conn.user), conn.id, identifier);
        let outs = world.unsubscribe_chats(conn.user, self.db.now_ms());
        self.apply(&world, outs);
    }

    /// `createChat {name}`: `own_chat` to the creator's subscription, `chat` to every other
    /// subscription that now sees it (the creator's other devices and online mutual contacts).
    /// Beyond `[limits] live_chats_per_user` the creator gets an `error` payload instead.
    pub fn create_chat(&self, conn: &ConnHandle, identifier: &str, data: &Value) {
        let user = conn.user;
        let name: String = match data.get("name") {
            Some(Value::String(s)) => s.trim().chars().take(MAX_CHAT_NAME_CHARS).collect(),
            Some(Value::Number(n)) => n.to_string(),
            _ => String::new(),
        };
        let mut world = self.world.lock();
        match world.create_chat(user, name) {
            Ok((id, outs)) => {
                if let Some(object) = self.chat_object(&world, id) {
                    self.transmit(conn, identifier, &self.payload(Event::OwnChat, &object));
                    self.hub.broadcast_except(
                        Stream::User(user),
                        &self.payload(Event::Chat, &object),
                        conn.id,
                        identifier,
                    );
                }
                self.apply(&world, outs);
            }
            Err(Refusal::TooManyChats { limit }) => {
                let error = SpeakError {
                    code: "too_many_chats",
                    message: format!("you already have {limit} live chats; end one first"),
                };
                self.transmit(conn, identifier, &self.payload(Event::Error, &error));
            }
            Err(Refusal::NotVisible) => {}
        }
    }

    /// `go_to_background`: open the window (committed, so it survives a restart), then end
    /// every connection of the user with `disconnect` reason `remote`.
    pub async fn go_to_background(&self, conn: &ConnHandle) -> Result<(), ChannelError> {
        {
            let mut world = self.world.lock();
            let outs = world.go_to_background(conn.user, self.db.now_ms());
            self.apply(&world, outs);
        }
        self.windows_changed.notify_one();
        self.db.flush().await?;
        self.hub.disconnect_user(conn.user, "remote", true);
        Ok(())
    }
}
