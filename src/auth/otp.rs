//! OTP codes: CSPRNG generation, argon2id hashing off the async threads, per-number send limits.

use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::Rng;
use rusqlite::Connection;
use tokio::sync::Semaphore;

use crate::config::AuthConfig;
use crate::db::{self, DbError, DbResult};

/// argon2id with 4 MiB and one pass: ~1.5 ms on one x86 core, ~20–30 ms on a Raspberry Pi 4
/// (within the 50 ms budget). A 6-digit code has little entropy anyway; the attempt counter and
/// the rate limits are what protect it, the hash only keeps a stolen database from listing codes.
pub const ARGON2_M_KIB: u32 = 4096;
pub const ARGON2_T: u32 = 1;
pub const ARGON2_P: u32 = 1;

pub fn argon2() -> Argon2<'static> {
    let params =
        Params::new(ARGON2_M_KIB, ARGON2_T, ARGON2_P, None).expect("valid argon2 parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// A 6-digit code from the OS CSPRNG.
pub fn generate_code() -> String {
    format!("{:06}", rand::rngs::OsRng.gen_range(0..1_000_000u32))
}

/// Runs argon2 on blocking threads, at most one per core at a time, so a login burst cannot
/// starve the runtime or the memory of a small board.
#[derive(Clone)]
pub struct CodeHasher {
    slots: Arc<Semaphore>,
}

impl Default for CodeHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl CodeHasher {
    pub fn new() -> Self {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        CodeHasher {
            slots: Arc::new(Semaphore::new(cores)),
        }
    }

    pub async fn hash(&self, code: String) -> DbResult<String> {
        self.run(move || {
            let salt = SaltString::generate(&mut rand::rngs::OsRng);
            argon2()
                .hash_password(code.as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(|e| DbError::Task(format!("argon2: {e}")))
        })
        .await
    }

    pub async fn verify(&self, code: String, hash: String) -> DbResult<bool> {
        self.run(move || {
            let parsed =
                PasswordHash::new(&hash).map_err(|e| DbError::Task(format!("argon2: {e}")))?;
            Ok(argon2().verify_password(code.as_bytes(), &parsed).is_ok())
        })
        .await
    }

    /// Run argon2 work on a blocking thread once a slot is free.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> DbResult<T> + Send + 'static,
    ) -> DbResult<T> {
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|e| DbError::Task(e.to_string()))?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| DbError::Task(e.to_string()))?
    }
}

/// Per-number limits on sending codes.
#[derive(Debug, Clone, Copy)]
pub struct SendLimits {
    per_window: u32,
    window_ms: i64,
    resend_ms: i64,
}

impl From<&AuthConfig> for SendLimits {
    fn from(a: &AuthConfig) -> Self {
        SendLimits {
            per_window: a.otp_per_number,
            window_ms: a.otp_window_seconds as i64 * 1000,
            resend_ms: a.otp_resend_seconds as i64 * 1000,
        }
    }
}

impl SendLimits {
    /// `Ok(Err(seconds))` when the number must wait before another code.
    pub fn check(&self, conn: &Connection, number: &str, now: i64) -> DbResult<Result<(), u64>> {
        let since = now - self.window_ms;
        let (count, newest) = db::otp::sends_since(conn, number, since)?;
        let mut wait_ms = 0i64;
        if count >= self.per_window {
            if let Some(oldest) = db::otp::oldest_since(conn, number, since)? {
                wait_ms = wait_ms.max(oldest + self.window_ms - now);
            }
        }
        if let Some(newest) = newest {
            wait_ms = wait_ms.max(newest + self.resend_ms - now);
        }
        if wait_ms > 0 {
            Ok(Err(((wait_ms + 999) / 1000) as u64))
        } else {
            Ok(Ok(()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_six_digits() {
        for _ in 0..100 {
            let c = generate_code();
            assert_eq!(c.len(), 6);
            assert!(c.chars().all(|ch| ch.is_ascii_digit()));
        }
    }

    #[tokio::test]
    async fn hash_verifies_only_the_right_code() {
        let h = CodeHasher::new();
        let hash = h.hash("123456".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(!hash.contains("123456"));
        assert!(h.verify("123456".into(), hash.clone()).await.unwrap());
        assert!(!h.verify("654321".into(), hash).await.unwrap());
    }
}
