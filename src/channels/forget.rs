//! The admin commands' one hook into the engine (docs/administration.md, `src/admin/`).
//!
//! TODO(lead): the presence rewrite must provide `Engine::forget_user` with this contract.
//! This implementation is the minimal one for the engine as it was when the admin commands
//! landed (presence in memory, everything else read from the database).

use super::{ChannelError, Engine};
use crate::db::{self, users::UserId};

impl Engine {
    /// Take `user` offline now and keep nothing about them: any open background window ends
    /// and, if they were online, their online mutual contacts get `contact_offline` and their
    /// chats are re-evaluated exactly as when a user goes offline (behaviour.md "Presence").
    ///
    /// The admin commands call it after `Hub::disconnect_user` has closed every connection of
    /// the user and those connections' cleanup has run, with their tokens already revoked (so
    /// nothing brings them back). `hangin user delete` calls it twice: before the rows are
    /// deleted (so the announcement can still find the contacts) and again after they are gone
    /// (to drop anything the engine may have loaded about them meanwhile). Idempotent.
    pub async fn forget_user(&self, user: UserId) -> Result<(), ChannelError> {
        let mut p = self.presence.lock().await;
        if !p.is_online(user) {
            p.chats_subscriptions.remove(&user);
            return Ok(());
        }
        let before = self.member_chat_views(&p, user).await?;
        p.chats_subscriptions.remove(&user);
        if p.background.remove(&user).is_some() {
            self.db
                .write(move |c| db::users::set_background_until(c, user, None))
                .await?;
        }
        let base = self.default_base.clone();
        self.announce(&p, user, false, &base).await?;
        self.apply_change(&p, before, &base).await?;
        Ok(())
    }
}
