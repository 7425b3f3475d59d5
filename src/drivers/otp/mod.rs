//! OTP delivery (edge.md "OTP drivers"). The code is handed to a driver; a failure answers
//! `/create` with 502 `otp_delivery_failed` and breaks nothing else.

mod exec;
mod log_driver;
mod modem;
mod webhook;

use std::sync::Arc;

use async_trait::async_trait;

use super::DriverError;
use crate::config::{Config, OtpDriverKind};

pub use exec::ExecOtp;
pub use log_driver::LogOtp;
pub use modem::ModemOtp;
pub use webhook::WebhookOtp;

/// One text message to one phone.
#[derive(Debug, Clone)]
pub struct OtpMessage {
    /// The number as the wire shows it (10 digits for US numbers under the default settings).
    pub number: String,
    /// The number in E.164 (`+15551234567`), for gateways and modems.
    pub e164: String,
    pub code: String,
    /// The rendered message text.
    pub text: String,
    /// Unix seconds when the code expires.
    pub expires_at: i64,
}

#[async_trait]
pub trait OtpSender: Send + Sync {
    async fn send(&self, message: &OtpMessage) -> Result<(), DriverError>;
}

/// Build the configured driver, checking its resources now rather than at the first login
/// (the modem's port is opened; it must run inside the tokio runtime).
pub fn from_config(config: &Config) -> Result<Arc<dyn OtpSender>, DriverError> {
    Ok(match config.otp.driver {
        OtpDriverKind::Log => Arc::new(LogOtp),
        OtpDriverKind::Webhook => Arc::new(WebhookOtp::from_config(&config.otp.webhook)?),
        OtpDriverKind::Exec => Arc::new(ExecOtp::from_config(&config.otp.exec)?),
        OtpDriverKind::Modem => Arc::new(ModemOtp::open(&config.otp.modem, &config.otp.message)?),
    })
}

/// The checks of `from_config` that leave the outside world alone (`hangin config check` runs
/// beside a serving instance, which holds the modem's port exclusively).
pub fn check(config: &Config) -> Result<(), DriverError> {
    match config.otp.driver {
        OtpDriverKind::Log => Ok(()),
        OtpDriverKind::Webhook => WebhookOtp::from_config(&config.otp.webhook).map(drop),
        OtpDriverKind::Exec => ExecOtp::from_config(&config.otp.exec).map(drop),
        OtpDriverKind::Modem => modem::check(&config.otp.modem, &config.otp.message),
    }
}

/// Render the message template.
pub fn render(template: &str, code: &str) -> String {
    template.replace("{code}", code)
}
