//! The chat rules of behaviour.md ("Presence", "Chats", "Messages", "Background mode",
//! "Invites") behind `ChatsChannel` and `ChatChannel`. Transport-free: the cable layer calls
//! these with a connection handle and the subscription's identifier.
//!
//! Who is online, who is in which live chat and who sees what lives in memory in a pure state
//! machine, [`world::World`]. The engine holds it under one short, synchronous lock: an event
//! runs the machine, then — still under the lock, so every subscriber gets the notes of
//! consecutive events in order — renders the notes it produced into the subscribers' send
//! queues and queues the database changes with the writer. Nothing under the lock waits for
//! I/O, so one user's activity delays another's by microseconds of CPU at most.
//!
//! `speak` does not take the lock: validate → group commit → broadcast, where the broadcast
//! runs after the commit on the writer's publishing thread, in commit order, so every subscriber receives a chat's messages in
//! the order the history holds them.

mod background;
mod chat;
mod chats;
mod forget;
#[cfg(test)]
mod model_tests;
pub mod world;

use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use parking_lot::Mutex;
use serde::Serialize;

use crate::config::{Config, KeyStyle};
use crate::db::chats::ChatId;
use crate::db::users::{User, UserId};
use crate::db::{self, Db, DbError};
use crate::drivers::push::{Notification, PushQueue};
use crate::hub::{channel_frame, ChatNote, ConnHandle, Hub};
use crate::wire::{self, Event};

pub use chat::validate_speech;
pub use world::Refusal;
use world::{Change, Note, Out, Stored, World};

/// Why a channel action did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("chat {0} does not exist, has ended, or is not visible")]
    NotVisible(i64),
    #[error(transparent)]
    Db(#[from] DbError),
}

pub struct Engine {
    db: Db,
    hub: Arc<Hub>,
    push: PushQueue,
    style: KeyStyle,
    message_body_bytes: usize,
    history_messages: usize,
    history_bytes: usize,
    /// Base of picture URLs in cable frames: one for the whole server, never a request's Host
    /// (another user's `Host` header must not end up in your frames). Set once the listeners
    /// are bound (see [`Engine::set_base`]).
    base: parking_lot::RwLock<String>,
    world: Mutex<World>,
    /// Wakes the background sweeper when a window opens (it may end before the one it waits on).
    windows_changed: tokio::sync::Notify,
}

impl Engine {
    /// Build the engine from what the database holds. A restart counts as everyone going to
    /// the background (see [`World::restore`]); the windows that gives are committed before
    /// this returns.
    pub async fn start(
        db: Db,
        hub: Arc<Hub>,
        push: PushQueue,
        config: &Config,
    ) -> Result<Arc<Engine>, DbError> {
        let stored = db.read(load_present).await?;
        let window_ms = config.cable.background_window.as_millis() as i64;
        let (world, outs) = World::restore(
            stored,
            db.now_ms(),
            window_ms,
            config.limits.live_chats_per_user,
        );
        let engine = Arc::new(Engine {
            db,
            hub,
            push,
            style: config.cable.key_style,
            message_body_bytes: config.limits.message_body_bytes,
            history_messages: config.limits.history_messages,
            history_bytes: config.limits.history_bytes,
            base: parking_lot::RwLock::new(server_base(config, None)),
            world: Mutex::new(world),
            windows_changed: tokio::sync::Notify::new(),
        });
        let restored = outs.len();
        engine.apply(&engine.world.lock(), outs);
        engine.db.flush().await?;
        if restored > 0 {
            log::info!("restart: {restored} member(s) of live chats given a background window");
        }
        Ok(engine)
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

    fn contact(&self, user: &User) -> wire::Contact {
        wire::contact(user, &self.base.read())
    }

    /// Fix the base of picture URLs once the bound address is known (listen port 0).
    pub fn set_base(&self, config: &Config, bound: std::net::SocketAddr, tls: bool) {
        *self.base.write() = server_base(config, Some((bound, tls)));
    }

    /// The chat object of a live chat: its online members in join order.
    fn chat_object(&self, world: &World, id: ChatId) -> Option<wire::ChatObject> {
        let chat = world.chat(id)?;
        Some(wire::ChatObject {
            id: id.0,
            name: chat.name.clone(),
            users: world
                .online_members(id)
                .into_iter()
                .filter_map(|m| world.profile(m).map(|p| self.contact(p)))
                .collect(),
        })
    }

    fn render(&self, world: &World, note: &Note) -> Option<String> {
        Some(match note {
            Note::Chat(id) => self.payload(Event::Chat, &self.chat_object(world, *id)?),
            Note::UpdateChat(id) => self.payload(Event::UpdateChat, &self.chat_object(world, *id)?),
            Note::DeleteChat(id) => self.payload(Event::DeleteChat, &id.0),
            Note::ContactOnline(user) => {
                self.payload(Event::ContactOnline, &self.contact(world.profile(*user)?))
            }
            Note::ContactOffline(uuid) => self.payload(Event::ContactOffline, uuid),
        })
    }

    /// Carry out what the world decided: notes into the subscribers' queues, changes into the
    /// writer's queue (in order, without waiting). Called with the world locked.
    fn apply(&self, world: &World, outs: Vec<Out>) {
        for out in outs {
            match out {
                Out::Send { note, to } => {
                    if let Some(payload) = self.render(world, &note) {
                        self.hub.deliver_to_users(&to, &payload, about(&note));
                    }
                }
                Out::Store(change) => self.store(change),
            }
        }
    }

    fn store(&self, change: Change) {
        // Kept to name the change if storing it fails (a clone, not a format per change).
        let what = change.clone();
        let queued = self.db.submit(
            move |c| match change {
                Change::CreateChat { id, starter, name } => {
                    db::chats::create(c, id, starter, &name).map(|_| ())
                }
                Change::AddMember(chat, user) => db::chats::add_member(c, chat, user).map(|_| ()),
                Change::EndChat(chat, at) => db::chats::end(c, chat, at).map(|_| ()),
                Change::Window(user, until) => db::users::set_background_until(c, user, until),
            },
            move |outcome| {
                if let Err(e) = outcome {
                    log::error!("storing {what:?} failed: {e}");
                }
            },
        );
        if let Err(e) = queued {
            log::error!("storing a presence change failed: {e}");
        }
    }

    /// Users were created, renamed or deleted, or their address books changed: read their
    /// state on the writer, after every write queued before, and apply it in commit order, so
    /// two changes of one person can never be applied out of order. Resolves once applied
    /// (a new user is known before their token response is sent).
    pub async fn people_changed(self: &Arc<Self>, users: Vec<UserId>) -> Result<(), DbError> {
        if users.is_empty() {
            return Ok(());
        }
        let engine = self.clone();
        self.db
            .write_then(
                move |c| {
                    let mut state = Vec::with_capacity(users.len());
                    for user in users {
                        state.push((user, db::users::with_mutual_contacts(c, user)?));
                    }
                    Ok(state)
                },
                move |state| {
                    let state = state?;
                    let mut world = engine.world.lock();
                    let outs = world.people_changed(state, engine.db.now_ms());
                    engine.apply(&world, outs);
                    Ok(())
                },
            )
            .await?
    }

    /// Run `event` on the world with `user` present: at once when the world holds them, else
    /// once their profile and mutual contacts are read and admitted. The read runs on the
    /// writer, after every change queued before, and is admitted in commit order like
    /// [`Engine::people_changed`], so it is never older than what the world has applied. A
    /// user gone from the database is not admitted (the event then finds nobody).
    async fn with_person<R: Send + 'static>(
        self: &Arc<Self>,
        user: UserId,
        event: impl FnOnce(&Engine, &mut World) -> R + Send + 'static,
    ) -> Result<R, DbError> {
        {
            let mut world = self.world.lock();
            if world.knows(user) {
                return Ok(event(self, &mut world));
            }
        }
        let engine = self.clone();
        self.db
            .write_then(
                move |c| db::users::with_mutual_contacts(c, user),
                move |person| {
                    let person = person?;
                    let mut world = engine.world.lock();
                    if let Some((profile, mutuals)) = person {
                        world.admit(user, profile, mutuals);
                    }
                    Ok(event(&engine, &mut world))
                },
            )
            .await?
    }

    /// Graceful shutdown: everyone online goes to the background (committed before this
    /// returns), so the chats stay live across the restart. Only then are clients told
    /// `server_restart`.
    pub async fn shutdown(&self) -> Result<(), DbError> {
        {
            let mut world = self.world.lock();
            let outs = world.shutdown(self.db.now_ms());
            log::info!(
                "shutdown: {} online user(s) go to the background, {} live chat(s) kept",
                outs.len(),
                world.live_chat_count()
            );
            self.apply(&world, outs);
        }
        self.db.flush().await
    }

    /// `POST /notifications/invite`: push an invite to each mutual contact with a device token.
    /// Returns how many pushes were queued.
    pub async fn invite(
        &self,
        inviter: UserId,
        chat: ChatId,
        uuids: Vec<String>,
    ) -> Result<usize, ChannelError> {
        let held = {
            let world = self.world.lock();
            world.knows(inviter).then(|| world.sees(inviter, chat))
        };
        let visible = match held {
            Some(visible) => visible,
            // Not held: offline and in no live chat, so it can only see through a contact.
            None => {
                let mutuals = self
                    .db
                    .read(move |c| db::users::mutual_contacts(c, inviter))
                    .await?;
                self.world.lock().seen_through(chat, &mutuals)
            }
        };
        if !visible {
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

    /// Users online right now (for logs, status and the load tool).
    pub fn online_count(&self) -> usize {
        self.world.lock().online_count()
    }

    /// Live chats right now.
    pub fn live_chat_count(&self) -> usize {
        self.world.lock().live_chat_count()
    }
}

/// The base of absolute picture URLs in cable frames: `public_url`, else derived from the
/// address the server is bound to.
fn server_base(config: &Config, bound: Option<(std::net::SocketAddr, bool)>) -> String {
    if let Some(url) = &config.public_url {
        return url.clone();
    }
    match bound {
        // `<host>.local` for 0.0.0.0 / `::` (docs/hardening.md "Absolute URLs").
        Some((addr, tls)) => {
            crate::host::public_base(config, (!tls).then_some(addr), tls.then_some(addr))
        }
        None => match (config.listen, config.tls.listen) {
            (Some(addr), _) => format!("http://{addr}"),
            (None, tls) => format!("https://{}", tls.map(|a| a.to_string()).unwrap_or_default()),
        },
    }
}

/// "First Last" as the push subtitle and invite text show it.
pub fn full_name(u: &User) -> String {
    let first = u.first_name.as_deref().unwrap_or("");
    let last = u.last_name.as_deref().unwrap_or("");
    format!("{first} {last}").trim().to_string()
}

/// The chat a note describes, so that a newer `update_chat` can replace an unsent one.
fn about(note: &Note) -> Option<(ChatId, ChatNote)> {
    match note {
        Note::Chat(id) => Some((*id, ChatNote::Added)),
        Note::UpdateChat(id) => Some((*id, ChatNote::Updated)),
        Note::DeleteChat(id) => Some((*id, ChatNote::Removed)),
        Note::ContactOnline(_) | Note::ContactOffline(_) => None,
    }
}

/// What the world needs at start: the users present (an open background window, or a member
/// of a live chat) with their mutual pairs, the live chats, the windows. Everyone else stays
/// on disk until they come online.
fn load_present(c: &rusqlite::Connection) -> Result<Stored, DbError> {
    let live_chats: Vec<world::StoredChat> = db::chats::live_with_members(c)?
        .into_iter()
        .map(|(chat, members)| world::StoredChat {
            id: chat.id,
            starter: chat.starter_id,
            name: chat.name,
            members,
        })
        .collect();
    let windows = db::users::background_windows(c)?;
    let mut present: std::collections::HashSet<UserId> =
        windows.iter().map(|(user, _)| *user).collect();
    for chat in &live_chats {
        present.extend(chat.members.iter().copied());
    }
    let mut users = Vec::with_capacity(present.len());
    for id in &present {
        users.extend(db::users::by_id(c, *id)?);
    }
    let mutual_pairs = if present.is_empty() {
        Vec::new()
    } else {
        db::users::mutual_pairs_among(c, &present)?
    };
    let stored = Stored {
        mutual_pairs,
        users,
        live_chats,
        windows,
        max_chat_id: db::chats::max_id(c)?,
    };
    db::release_page_cache(c)?;
    Ok(stored)
}
