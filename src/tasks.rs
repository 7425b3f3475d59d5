//! Every background task of a running server under one lifecycle: started through [`Tasks`],
//! told to stop by one cancellation token, and awaited in the order they were started before
//! the database closes — so no loop writes into a closed database or outlives the server.

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The running background tasks and the token that stops them.
pub struct Tasks {
    shutdown: CancellationToken,
    running: Vec<(&'static str, JoinHandle<()>)>,
}

impl Tasks {
    pub fn new(shutdown: CancellationToken) -> Tasks {
        Tasks {
            shutdown,
            running: Vec::new(),
        }
    }

    /// The token every task watches; cancelling it starts the shutdown.
    pub fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Run `task` until it returns; it must return soon after [`Tasks::shutdown`] is cancelled.
    pub fn spawn<F>(&mut self, name: &'static str, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.running.push((name, tokio::spawn(task)));
    }

    /// Take charge of a task spawned elsewhere.
    pub fn adopt(&mut self, name: &'static str, handle: JoinHandle<()>) {
        self.running.push((name, handle));
    }

    /// Cancel the token and await every task in start order, each for at most `grace`; one
    /// that has not finished by then is aborted and named in the log.
    pub async fn stop(mut self, grace: Duration) {
        self.shutdown.cancel();
        for (name, mut handle) in std::mem::take(&mut self.running) {
            match tokio::time::timeout(grace, &mut handle).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) if e.is_panic() => log::error!("background task {name} panicked"),
                Ok(Err(_)) => {}
                Err(_) => {
                    log::warn!("background task {name} did not stop within {grace:?}; aborting it");
                    handle.abort();
                }
            }
        }
    }
}

/// Tasks dropped without [`Tasks::stop`] (a start that failed half-way) are still told to stop.
impl Drop for Tasks {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn stop_cancels_and_awaits_in_start_order() {
        let order = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let mut tasks = Tasks::new(CancellationToken::new());
        for name in ["first", "second"] {
            let token = tasks.shutdown().clone();
            let order = order.clone();
            tasks.spawn(name, async move {
                token.cancelled().await;
                // The first takes longer: awaiting in order still sees both finish.
                if name == "first" {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                order.lock().push(name);
            });
        }
        tasks.stop(Duration::from_secs(5)).await;
        let mut seen = order.lock().clone();
        seen.sort();
        assert_eq!(seen, ["first", "second"]);
    }

    #[tokio::test]
    async fn a_task_that_ignores_the_token_is_aborted_after_the_grace() {
        let dropped = Arc::new(AtomicUsize::new(0));
        struct Mark(Arc<AtomicUsize>);
        impl Drop for Mark {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let mut tasks = Tasks::new(CancellationToken::new());
        let mark = Mark(dropped.clone());
        tasks.spawn("stubborn", async move {
            let _mark = mark;
            std::future::pending::<()>().await;
        });
        tasks.stop(Duration::from_millis(10)).await;
        tokio::task::yield_now().await;
        assert_eq!(dropped.load(Ordering::SeqCst), 1);
    }
}
