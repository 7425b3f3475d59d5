//! Push notifications (edge.md "Push drivers"). Requests and cable actions only enqueue; one
//! worker task hands notifications to the driver, so a slow push service never blocks anyone.

mod apns;
mod log_driver;
mod webhook;

use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;
use tokio::sync::mpsc;

use super::DriverError;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, PushDriverKind};
use crate::db::{users, Db};

pub use apns::ApnsPush;
pub use log_driver::LogPush;
pub use webhook::WebhookPush;

/// One alert for one device.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Notification {
    pub device_token: String,
    pub user_uuid: String,
    pub title: String,
    pub subtitle: Option<String>,
    pub body: String,
    /// Custom data, e.g. `{"chat":"6"}`.
    pub data: serde_json::Value,
}

/// What the push service said about a delivery.
#[derive(Debug, PartialEq, Eq)]
pub enum PushOutcome {
    Delivered,
    /// The device token is dead (APNs 410 / BadDeviceToken / Unregistered): forget it.
    InvalidToken,
}

#[async_trait]
pub trait Pusher: Send + Sync {
    async fn send(&self, notification: &Notification) -> Result<PushOutcome, DriverError>;
}

/// Build the configured driver, checking its key file, URL and settings now.
pub fn from_config(config: &Config) -> Result<Arc<dyn Pusher>, DriverError> {
    Ok(match config.push.driver {
        PushDriverKind::Log => Arc::new(LogPush),
        PushDriverKind::Webhook => Arc::new(WebhookPush::from_config(&config.push.webhook)?),
        PushDriverKind::Apns => Arc::new(ApnsPush::from_config(&config.push.apns)?),
    })
}

/// The sending side of the bounded push queue.
#[derive(Clone)]
pub struct PushQueue {
    tx: mpsc::Sender<Notification>,
}

impl PushQueue {
    /// The queue, and the worker that drains it into `pusher` until `shutdown` (run it as a
    /// background task; what is still queued then is dropped, as the process ends anyway).
    pub fn new(
        pusher: Arc<dyn Pusher>,
        db: Db,
        capacity: usize,
        shutdown: CancellationToken,
    ) -> (
        PushQueue,
        impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let (tx, mut rx) = mpsc::channel::<Notification>(capacity.max(1));
        let worker = async move {
            loop {
                let n = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    next = rx.recv() => match next {
                        Some(n) => n,
                        None => break,
                    },
                };
                match pusher.send(&n).await {
                    Ok(PushOutcome::Delivered) => crate::metrics::push_sent("delivered", None),
                    Ok(PushOutcome::InvalidToken) => {
                        crate::metrics::push_sent("invalid_token", None);
                        log::info!(
                            "push service rejected the device token of {}; forgetting it",
                            n.user_uuid
                        );
                        let token = n.device_token.clone();
                        if let Err(e) = db
                            .write(move |c| users::clear_device_token(c, &token))
                            .await
                        {
                            log::warn!("could not clear a dead device token: {e}");
                        }
                    }
                    Err(e) => {
                        crate::metrics::push_sent("failed", Some(&e));
                        log::warn!("push to {} failed: {e}", n.user_uuid)
                    }
                }
            }
        };
        (PushQueue { tx }, worker)
    }

    /// Queue a notification; never waits. A full queue drops it with a warning.
    pub fn enqueue(&self, notification: Notification) {
        if let Err(e) = self.tx.try_send(notification) {
            crate::metrics::push_sent("dropped", None);
            log::warn!("push queue full or closed; dropped a notification: {e}");
        }
    }
}
