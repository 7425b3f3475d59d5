//! Delivery drivers: OTP codes (SMS) and push notifications. Each family is a trait with one
//! implementation per `driver` config value, chosen once at start. Building a driver checks its
//! resources (URL, key file, device, program), so a misconfiguration stops the server at start
//! instead of failing the first login.

pub mod http_client;
pub mod otp;
pub mod push;
pub mod retry;
pub mod signing;
pub mod webhook;

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

impl DriverError {
    pub fn config(driver: &'static str, reason: impl Into<String>) -> DriverError {
        DriverError::Config {
            driver,
            reason: reason.into(),
        }
    }

    pub fn delivery(driver: &'static str, reason: impl Into<String>) -> DriverError {
        DriverError::Delivery {
            driver,
            reason: reason.into(),
        }
    }
}
