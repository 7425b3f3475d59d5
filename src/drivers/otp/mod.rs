//! OTP delivery (edge.md "OTP drivers"). The code is handed to a driver; a failure answers
//! `/create` with 502 `otp_delivery_failed` and breaks nothing else.

mod log_driver;

use std::sync::Arc;

use async_trait::async_trait;

use super::DriverError;
use crate::config::{Config, OtpDriverKind};

pub use log_driver::LogOtp;

/// One text message to one phone.
#[derive(Debug, Clone)]
pub struct OtpMessage {
    /// The 10-digit number.
    pub number: String,
    pub code: String,
    /// The rendered message text.
    pub text: String,
    /// Unix seconds when the code expires.
    pub expires_at: i64,
}

impl OtpMessage {
    pub fn e164(&self) -> String {
        format!("+1{}", self.number)
    }
}

#[async_trait]
pub trait OtpSender: Send + Sync {
    async fn send(&self, message: &OtpMessage) -> Result<(), DriverError>;
}

/// Build the configured driver, checking its resources now rather than at the first login.
pub fn from_config(config: &Config) -> Result<Arc<dyn OtpSender>, DriverError> {
    match config.otp.driver {
        OtpDriverKind::Log => Ok(Arc::new(LogOtp)),
        other => Err(DriverError::Config {
            driver: "otp",
            reason: format!("driver {other:?} is not available in this build"),
        }),
    }
}

/// Render the message template.
pub fn render(template: &str, code: &str) -> String {
    template.replace("{code}", code)
}
