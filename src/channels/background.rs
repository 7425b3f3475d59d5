//! Background windows end on time (behaviour.md "Background mode"): the sweeper sleeps until
//! the earliest open window ends, or until a new window opens, never on a fixed tick.

use std::sync::Arc;

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
            let clock = engine.db.clock().clone();
            loop {
                let next = engine.world.lock().next_deadline();
                let window_ends = async {
                    match next {
                        Some(at) => clock.sleep_until_ms(at).await,
                        // Nothing to wait for until a window opens.
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = engine.windows_changed.notified() => continue,
                    _ = window_ends => {
                        engine.sweep_background();
                    }
                }
            }
        })
    }
}
