//! Chat visibility (behaviour.md "Chats"): viewer V sees chat C when C has not ended and V is
//! a member, or some online member of C is a mutual contact of V. Every event that changes a
//! chat's online members re-evaluates its viewers with [`Engine::apply_change`].

use std::collections::{HashMap, HashSet};

use super::{Engine, Presence};
use crate::db::chats::{Chat, ChatId};
use crate::db::users::{User, UserId};
use crate::db::{self, DbError};
use crate::wire::{self, Event};

/// A chat with everything needed to decide who sees it.
#[derive(Debug, Clone)]
pub struct ChatView {
    pub chat: Chat,
    pub members: Vec<User>,
    /// Mutual contacts of each member.
    pub mutuals: HashMap<UserId, Vec<UserId>>,
    /// Members online when the view was taken.
    pub online_members: Vec<User>,
    /// Online users who see the chat.
    pub viewers: HashSet<UserId>,
}

impl ChatView {
    /// Does `user` see this chat (online or not)?
    pub fn sees(&self, user: UserId) -> bool {
        self.chat.ended_at.is_none()
            && (self.members.iter().any(|m| m.id == user)
                || self
                    .online_members
                    .iter()
                    .any(|m| self.mutuals.get(&m.id).is_some_and(|c| c.contains(&user))))
    }

    pub fn object(&self, base: &str) -> wire::ChatObject {
        wire::chat(&self.chat, &self.online_members, base)
    }
}

impl Engine {
    /// Load a chat and decide its online members and viewers under presence `p`.
    pub(super) async fn chat_view(
        &self,
        p: &Presence,
        id: ChatId,
    ) -> Result<Option<ChatView>, DbError> {
        let loaded = self
            .db
            .read(move |c| {
                let Some(chat) = db::chats::by_id(c, id)? else {
                    return Ok(None);
                };
                let member_ids = db::chats::members(c, id)?;
                let members = db::users::by_ids(c, &member_ids)?;
                let mut mutuals = HashMap::new();
                for m in &member_ids {
                    mutuals.insert(*m, db::users::mutual_contacts(c, *m)?);
                }
                Ok(Some((chat, members, mutuals)))
            })
            .await?;
        Ok(loaded.map(|(chat, members, mutuals)| view_under(p, chat, members, mutuals)))
    }

    /// Views of every live chat `user` is a member of.
    pub(super) async fn member_chat_views(
        &self,
        p: &Presence,
        user: UserId,
    ) -> Result<Vec<ChatView>, DbError> {
        let chats = self
            .db
            .read(move |c| db::chats::live_chats_of(c, user))
            .await?;
        let mut views = Vec::with_capacity(chats.len());
        for chat in chats {
            if let Some(v) = self.chat_view(p, chat.id).await? {
                views.push(v);
            }
        }
        Ok(views)
    }

    /// Every live chat `user` sees: their own, and those of their online mutual contacts.
    pub(super) async fn visible_chats(
        &self,
        p: &Presence,
        user: UserId,
    ) -> Result<Vec<ChatView>, DbError> {
        let contacts = self
            .db
            .read(move |c| db::users::mutual_contacts(c, user))
            .await?;
        let mut holders: Vec<UserId> = contacts.into_iter().filter(|c| p.is_online(*c)).collect();
        holders.push(user);
        let chat_ids = self
            .db
            .read(move |c| {
                let mut ids = Vec::new();
                for h in &holders {
                    ids.extend(
                        db::chats::live_chats_of(c, *h)?
                            .into_iter()
                            .map(|chat| chat.id),
                    );
                }
                Ok(ids)
            })
            .await?;
        let mut unique: Vec<ChatId> = chat_ids;
        unique.sort();
        unique.dedup();
        let mut views = Vec::new();
        for id in unique {
            if let Some(v) = self.chat_view(p, id).await? {
                if v.sees(user) {
                    views.push(v);
                }
            }
        }
        Ok(views)
    }

    /// After the online members of the chats in `before` may have changed: viewers who still
    /// see a chat get `update_chat`, those who no longer do get `delete_chat`; a chat with no
    /// online member ends and all its former viewers get `delete_chat`.
    pub(super) async fn apply_change(
        &self,
        p: &Presence,
        before: Vec<ChatView>,
        base: &str,
    ) -> Result<(), DbError> {
        for old in before {
            let Some(new) = self.chat_view(p, old.chat.id).await? else {
                continue;
            };
            let delete = self.payload(Event::DeleteChat, &old.chat.id.0);
            if new.online_members.is_empty() {
                let id = old.chat.id;
                self.db
                    .write(move |c| db::chats::end(c, id, db::now_ms()))
                    .await?;
                log::debug!("chat {} ended: no member online", id.0);
                self.to_users(&old.viewers, &delete);
                continue;
            }
            let update = self.payload(Event::UpdateChat, &new.object(base));
            self.to_users(&new.viewers, &update);
            self.to_users(old.viewers.difference(&new.viewers), &delete);
        }
        Ok(())
    }
}

fn view_under(
    p: &Presence,
    chat: Chat,
    members: Vec<User>,
    mutuals: HashMap<UserId, Vec<UserId>>,
) -> ChatView {
    let online_members: Vec<User> = members
        .iter()
        .filter(|m| p.is_online(m.id))
        .cloned()
        .collect();
    let mut viewers = HashSet::new();
    if chat.ended_at.is_none() {
        for m in &online_members {
            viewers.insert(m.id);
            if let Some(contacts) = mutuals.get(&m.id) {
                viewers.extend(contacts.iter().copied().filter(|c| p.is_online(*c)));
            }
        }
    }
    ChatView {
        chat,
        members,
        mutuals,
        online_members,
        viewers,
    }
}
