//! Background windows end on time (behaviour.md "Background mode"): the sweeper sleeps until
//! the earliest open window ends, or until a new window opens, never on a fixed tick.

use std::sync::Arc;
use std::time::Duration;

use super::Engine;

impl Engine {
    /// End the windows that are over by now; returns how many ended.
    pub fn sweep_background(&self) -> usize {
        let mut world = self.world.lock();
        let outs = world.expire(self.db.now_ms());
        let ended = outs.len();
        self.apply(&world, outs);
        ended
    }

    pub fn spawn_sweeper(
        self: &Arc<Self>,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let engine = self.clone();
        tokio::spawn(async move {
            loop {
                let next = engine.world.lock().next_deadline();
                let wait = match next {
                    Some(at) => Duration::from_millis((at - engine.db.now_ms()).max(0) as u64),
                    // Nothing to wait for until a window opens.
                    None => Duration::from_secs(3600),
                };
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = engine.windows_changed.notified() => continue,
                    _ = tokio::time::sleep(wait) => {
                        engine.sweep_background();
                    }
                }
            }
        })
    }
}
