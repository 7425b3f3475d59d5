//! `ChatsChannel`: the chat list, presence, `createChat`, `go_to_background`.

use std::sync::Arc;

use serde_json::Value;

use super::{ChannelError, Engine, Presence};
use crate::db::users::UserId;
use crate::db::{self};
use crate::hub::{ConnHandle, Stream};
use crate::wire::{self, Event};

/// Longest chat name kept (longer names are cut, not refused: the creator still gets a chat).
pub const MAX_CHAT_NAME_CHARS: usize = 255;

impl Engine {
    /// Subscribe: transmit `chats`, then `contacts_online`; then the user goes online (announced
    /// to online mutual contacts) unless they already were, e.g. returning from the background.
    pub async fn subscribe_chats(
        &self,
        conn: &ConnHandle,
        identifier: Arc<str>,
        base: &str,
    ) -> Result<(), ChannelError> {
        let user = conn.user;
        let mut p = self.presence.lock().await;
        self.hub
            .subscribe(Stream::User(user), conn, identifier.clone());
        let chats: Vec<wire::ChatObject> = self
            .visible_chats(&p, user)
            .await?
            .iter()
            .map(|v| v.object(base))
            .collect();
        self.transmit(conn, &identifier, &self.payload(Event::Chats, &chats));
        let online = self.online_mutual_contacts(&p, user).await?;
        let contacts: Vec<wire::Contact> = online.iter().map(|u| wire::contact(u, base)).collect();
        self.transmit(
            conn,
            &identifier,
            &self.payload(Event::ContactsOnline, &contacts),
        );

        let was_online = p.is_online(user);
        if p.background.remove(&user).is_some() {
            // Back before the window ended: close it silently.
            self.db
                .write(move |c| db::users::set_background_until(c, user, None))
                .await?;
        }
        if was_online {
            *p.chats_subscriptions.entry(user).or_default() += 1;
            return Ok(());
        }
        let before = self.member_chat_views(&p, user).await?;
        *p.chats_subscriptions.entry(user).or_default() += 1;
        self.announce(&p, user, true, base).await?;
        self.apply_change(&p, before, base).await?;
        Ok(())
    }

    /// Unsubscribe (or connection closed): the last subscription going away takes the user
    /// offline unless a background window is open.
    pub async fn unsubscribe_chats(
        &self,
        conn: &ConnHandle,
        identifier: &str,
    ) -> Result<(), ChannelError> {
        let user = conn.user;
        let mut p = self.presence.lock().await;
        self.hub
            .unsubscribe(Stream::User(user), conn.id, identifier);
        let remaining = match p.chats_subscriptions.get_mut(&user) {
            Some(n) => {
                *n = n.saturating_sub(1);
                *n
            }
            None => 0,
        };
        if remaining > 0 {
            return Ok(());
        }
        p.chats_subscriptions.remove(&user);
        if p.in_background(user) {
            return Ok(());
        }
        // Offline now: views "before" must count the user as online, so take them with the
        // subscription restored for the moment.
        p.chats_subscriptions.insert(user, 1);
        let before = self.member_chat_views(&p, user).await;
        p.chats_subscriptions.remove(&user);
        let base = self.default_base.clone();
        self.announce(&p, user, false, &base).await?;
        self.apply_change(&p, before?, &base).await?;
        Ok(())
    }

    /// `contact_online` / `contact_offline` to every online mutual contact.
    pub(super) async fn announce(
        &self,
        p: &Presence,
        user: UserId,
        online: bool,
        base: &str,
    ) -> Result<(), ChannelError> {
        let contacts = self.online_mutual_contacts(p, user).await?;
        if contacts.is_empty() {
            return Ok(());
        }
        let payload = if online {
            let me = self.db.read(move |c| db::users::by_id(c, user)).await?;
            let Some(me) = me else { return Ok(()) };
            self.payload(Event::ContactOnline, &wire::contact(&me, base))
        } else {
            let uuid = self
                .db
                .read(move |c| db::users::by_id(c, user))
                .await?
                .map(|u| u.uuid);
            let Some(uuid) = uuid else { return Ok(()) };
            self.payload(Event::ContactOffline, &uuid)
        };
        self.to_users(contacts.iter().map(|u| &u.id), &payload);
        Ok(())
    }

    /// `createChat {name}`: `own_chat` to the creator's subscription, `chat` to every other
    /// online viewer (the creator's online mutual contacts).
    pub async fn create_chat(
        &self,
        conn: &ConnHandle,
        identifier: &str,
        data: &Value,
        base: &str,
    ) -> Result<(), ChannelError> {
        let user = conn.user;
        let name: String = match data.get("name") {
            Some(Value::String(s)) => s.trim().chars().take(MAX_CHAT_NAME_CHARS).collect(),
            Some(Value::Number(n)) => n.to_string(),
            _ => String::new(),
        };
        let p = self.presence.lock().await;
        let chat = self
            .db
            .write(move |c| db::chats::create(c, user, &name))
            .await?;
        let Some(view) = self.chat_view(&p, chat.id).await? else {
            return Ok(());
        };
        let object = view.object(base);
        self.transmit(conn, identifier, &self.payload(Event::OwnChat, &object));
        let others: Vec<UserId> = view
            .viewers
            .iter()
            .copied()
            .filter(|v| *v != user)
            .collect();
        self.to_users(&others, &self.payload(Event::Chat, &object));
        Ok(())
    }

    /// `go_to_background`: open the window (stored, so it survives restarts) and end every
    /// connection of the user with `disconnect` reason `remote`.
    pub async fn go_to_background(&self, user: UserId) -> Result<(), ChannelError> {
        let until = db::now_ms() + self.window_ms;
        {
            let mut p = self.presence.lock().await;
            self.db
                .write(move |c| db::users::set_background_until(c, user, Some(until)))
                .await?;
            p.background.insert(user, until);
        }
        self.hub.disconnect_user(user, "remote", true);
        Ok(())
    }
}
