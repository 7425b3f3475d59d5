use async_trait::async_trait;

use super::{Notification, PushOutcome, Pusher};
use crate::config::WebhookConfig;
use crate::drivers::webhook::WebhookEndpoint;
use crate::drivers::DriverError;

/// POSTs `{"type":"push","user_uuid","device_token","title","subtitle","body","data"}`, signed
/// like the OTP webhook, for LAN push services (ntfy, Gotify, Home Assistant) behind a small
/// adapter or automation.
pub struct WebhookPush {
    endpoint: WebhookEndpoint,
}

impl WebhookPush {
    pub fn from_config(config: &WebhookConfig) -> Result<WebhookPush, DriverError> {
        Ok(WebhookPush {
            endpoint: WebhookEndpoint::from_config("push webhook", "push.webhook", config)?,
        })
    }
}

pub fn body(n: &Notification) -> serde_json::Value {
    serde_json::json!({
        "type": "push",
        "user_uuid": n.user_uuid,
        "device_token": n.device_token,
        "title": n.title,
        "subtitle": n.subtitle,
        "body": n.body,
        "data": n.data,
    })
}

#[async_trait]
impl Pusher for WebhookPush {
    async fn send(&self, n: &Notification) -> Result<PushOutcome, DriverError> {
        self.endpoint.deliver(&body(n)).await?;
        Ok(PushOutcome::Delivered)
    }
}
