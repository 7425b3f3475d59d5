use async_trait::async_trait;

use super::{Notification, PushOutcome, Pusher};
use crate::drivers::DriverError;

/// Logs each notification (development, and servers without push).
pub struct LogPush;

#[async_trait]
impl Pusher for LogPush {
    async fn send(&self, n: &Notification) -> Result<PushOutcome, DriverError> {
        log::info!(
            "push to {} ({}): title={:?} subtitle={:?} body={:?} data={}",
            n.user_uuid,
            n.device_token,
            n.title,
            n.subtitle,
            n.body,
            n.data
        );
        Ok(PushOutcome::Delivered)
    }
}
