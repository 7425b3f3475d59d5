//! Background windows: restored at start, ended by a sweeper (behaviour.md "Background mode").

use std::sync::Arc;
use std::time::Duration;

use super::Engine;
use crate::db::users::UserId;
use crate::db::{self, DbError};

/// How often expired windows are looked for.
const SWEEP_EVERY: Duration = Duration::from_millis(250);

impl Engine {
    /// Load stored windows. A restart counts as everyone going to the background: members of
    /// chats that were live get a fresh window, so reconnecting clients find their chats again.
    pub async fn restore(&self) -> Result<(), DbError> {
        let window = self.window_ms;
        let windows = self
            .db
            .write(move |c| {
                let now = db::now_ms();
                let mut windows: std::collections::HashMap<UserId, i64> =
                    db::users::background_windows(c)?.into_iter().collect();
                for (_, member) in db::chats::live_chat_members(c)? {
                    let until = windows.get(&member).copied().unwrap_or(0).max(now + window);
                    if windows.insert(member, until) != Some(until) {
                        db::users::set_background_until(c, member, Some(until))?;
                    }
                }
                Ok(windows)
            })
            .await?;
        let count = windows.len();
        self.presence.lock().await.background = windows;
        if count > 0 {
            log::info!("restored {count} background window(s)");
        }
        Ok(())
    }

    /// End expired windows: the user goes offline exactly as in Presence (unless connected).
    pub async fn sweep_background(&self) -> Result<usize, DbError> {
        let now = db::now_ms();
        let mut p = self.presence.lock().await;
        let expired: Vec<UserId> = p
            .background
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(u, _)| *u)
            .collect();
        let base = self.default_base.clone();
        for user in &expired {
            let user = *user;
            let before = self.member_chat_views(&p, user).await?;
            p.background.remove(&user);
            self.db
                .write(move |c| db::users::set_background_until(c, user, None))
                .await?;
            if p.is_online(user) {
                continue; // still connected: nothing changes for anyone
            }
            if let Err(e) = self.announce(&p, user, false, &base).await {
                log::warn!("announcing the end of a background window failed: {e}");
            }
            self.apply_change(&p, before, &base).await?;
        }
        Ok(expired.len())
    }

    pub fn spawn_sweeper(self: &Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        let engine = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tick.tick() => {
                        if let Err(e) = engine.sweep_background().await {
                            log::warn!("background sweep failed: {e}");
                        }
                    }
                }
            }
        });
    }
}
