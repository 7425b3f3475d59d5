//! Delivery drivers: OTP codes (SMS) and push notifications. Each family is a trait with one
//! implementation per `driver` config value, chosen once at start.

pub mod otp;
pub mod push;

/// A driver that cannot do its work: named, with the reason (shown in logs and at startup).
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("{driver} driver is misconfigured: {reason}")]
    Config {
        driver: &'static str,
        reason: String,
    },
    #[error("{driver} delivery failed: {reason}")]
    Delivery {
        driver: &'static str,
        reason: String,
    },
}
