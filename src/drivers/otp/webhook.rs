use async_trait::async_trait;

use super::{OtpMessage, OtpSender};
use crate::config::WebhookConfig;
use crate::drivers::webhook::WebhookEndpoint;
use crate::drivers::DriverError;

/// POSTs `{"type":"otp","number","e164","code","message","expires_at"}` to an SMS gateway or
/// any receiver, signed the Standard Webhooks way.
pub struct WebhookOtp {
    endpoint: WebhookEndpoint,
}

impl WebhookOtp {
    pub fn from_config(config: &WebhookConfig) -> Result<WebhookOtp, DriverError> {
        Ok(WebhookOtp {
            endpoint: WebhookEndpoint::from_config("otp webhook", "otp.webhook", config)?,
        })
    }
}

/// The JSON document of one code (`expires_at` in the wire's ISO-8601 UTC form).
pub fn body(message: &OtpMessage) -> serde_json::Value {
    serde_json::json!({
        "type": "otp",
        "number": message.number,
        "e164": message.e164,
        "code": message.code,
        "message": message.text,
        "expires_at": crate::wire::iso_ms(message.expires_at * 1000),
    })
}

#[async_trait]
impl OtpSender for WebhookOtp {
    async fn send(&self, message: &OtpMessage) -> Result<(), DriverError> {
        self.endpoint.deliver(&body(message)).await
    }
}
