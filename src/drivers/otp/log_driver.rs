use async_trait::async_trait;

use super::{OtpMessage, OtpSender};
use crate::drivers::DriverError;

/// Writes the code to the log. Development only: the server refuses it on a non-loopback
/// listener unless `allow_insecure_log_driver = true`.
pub struct LogOtp;

#[async_trait]
impl OtpSender for LogOtp {
    async fn send(&self, message: &OtpMessage) -> Result<(), DriverError> {
        log::info!("OTP for {}: {}", message.number, message.code);
        Ok(())
    }
}
