//! The admin commands' one hook into the engine (`src/admin/`, docs/administration.md).

use std::sync::Arc;

use super::Engine;
use crate::db::{users::UserId, DbError};

impl Engine {
    /// Take `user` offline now and bring the engine in line with the database about them.
    /// Called by `hangin user ban|signout|delete` after `Hub::disconnect_user` closed every
    /// connection of the user (their tokens already revoked, so nothing brings them back):
    /// an open background window ends too, their online mutual contacts get `contact_offline`
    /// and their chats are re-evaluated, exactly as in Presence. `delete` calls it after the
    /// user's rows are gone: then the user is dropped from every chat and contact list
    /// (`World::forget`). Idempotent.
    pub async fn forget_user(self: &Arc<Self>, user: UserId) -> Result<(), DbError> {
        {
            let mut world = self.world.lock();
            let outs = world.take_offline(user, self.db.now_ms());
            self.apply(&world, outs);
        }
        self.people_changed(vec![user]).await
    }
}
