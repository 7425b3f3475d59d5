//! OTP codes: CSPRNG generation, argon2id hashing off the async threads, per-number send limits.

use std::sync::Arc;

use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
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
///
/// Each hash needs `ARGON2_M_KIB` of working memory. It is kept in a pool (at most one buffer
/// per slot) rather than allocated per hash: glibc serves a 4 MiB request freed and made again
/// on changing threads from ever new places, and a burst of 2,000 logins grew the server to
/// ~700 MB RSS that way (README "Performance"); with the pool it stays near 20 MB.
#[derive(Clone)]
pub struct CodeHasher {
    slots: Arc<Semaphore>,
    memory: Arc<parking_lot::Mutex<Vec<Vec<Block>>>>,
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
            memory: Arc::new(parking_lot::Mutex::new(Vec::new())),
        }
    }

    /// The PHC string (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`) of `code` under a fresh salt.
    pub async fn hash(&self, code: String) -> DbResult<String> {
        self.run(move |memory| {
            let salt = SaltString::generate(&mut rand::rngs::OsRng);
            let argon = argon2();
            let output = raw_hash(&argon, code.as_bytes(), &salt, None, memory)?;
            let params = ParamsString::try_from(argon.params()).map_err(argon_error)?;
            Ok(PasswordHash {
                algorithm: Algorithm::Argon2id.ident(),
                version: Some(Version::V0x13.into()),
                params,
                salt: Some(salt.as_salt()),
                hash: Some(output),
            }
            .to_string())
        })
        .await
    }

    /// Does `code` match the PHC string `hash` (whatever argon2 parameters it was made with)?
    pub async fn verify(&self, code: String, hash: String) -> DbResult<bool> {
        self.run(move |memory| {
            let parsed = PasswordHash::new(&hash).map_err(argon_error)?;
            let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
                return Ok(false);
            };
            let algorithm = Algorithm::try_from(parsed.algorithm).map_err(argon_error)?;
            let version = match parsed.version {
                Some(v) => Version::try_from(v).map_err(argon_error)?,
                None => Version::default(),
            };
            let params = Params::try_from(&parsed).map_err(argon_error)?;
            let argon = Argon2::new(algorithm, version, params);
            let computed = raw_hash(&argon, code.as_bytes(), &salt, Some(expected.len()), memory)?;
            // `Output` compares in constant time.
            Ok(computed == expected)
        })
        .await
    }

    /// Run argon2 work on a blocking thread once a slot is free, with pooled working memory.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Vec<Block>) -> DbResult<T> + Send + 'static,
    ) -> DbResult<T> {
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|e| DbError::Task(e.to_string()))?;
        let pool = self.memory.clone();
        tokio::task::spawn_blocking(move || {
            let mut memory = pool.lock().pop().unwrap_or_default();
            let result = work(&mut memory);
            pool.lock().push(memory);
            result
        })
        .await
        .map_err(|e| DbError::Task(e.to_string()))?
    }
}

fn argon_error(e: impl std::fmt::Display) -> DbError {
    DbError::Task(format!("argon2: {e}"))
}

/// argon2's raw output for `password` and `salt`, computed in `memory` (grown as needed and
/// kept for the next hash). Every block is written before it is read, so reuse is safe.
fn raw_hash(
    argon: &Argon2,
    password: &[u8],
    salt: &impl AsRef<str>,
    output_len: Option<usize>,
    memory: &mut Vec<Block>,
) -> DbResult<Output> {
    let salt = argon2::password_hash::Salt::from_b64(salt.as_ref()).map_err(argon_error)?;
    let mut salt_bytes = [0u8; 64];
    let salt_bytes = salt.decode_b64(&mut salt_bytes).map_err(argon_error)?;
    let blocks = argon.params().block_count();
    if memory.len() < blocks {
        memory.resize(blocks, Block::default());
    }
    let len = output_len
        .or(argon.params().output_len())
        .unwrap_or(Params::DEFAULT_OUTPUT_LEN);
    Output::init_with(len, |out| {
        argon
            .hash_password_into_with_memory(password, salt_bytes, out, &mut memory[..blocks])
            .map_err(|_| argon2::password_hash::Error::Password)
    })
    .map_err(argon_error)
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
            window_ms: a.otp_window.as_millis() as i64,
            resend_ms: a.otp_resend.as_millis() as i64,
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

    #[tokio::test]
    async fn pooled_hashes_are_standard_phc_strings() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        let h = CodeHasher::new();
        // Ours verifies with the argon2 crate's own verifier…
        let ours = h.hash("246810".into()).await.unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(argon2().verify_password(b"246810", &parsed).is_ok());
        assert!(argon2().verify_password(b"246811", &parsed).is_err());
        // …and the crate's hashes (also with other parameters, e.g. older rows) verify with ours.
        for params in [
            Params::new(ARGON2_M_KIB, ARGON2_T, ARGON2_P, None).unwrap(),
            Params::new(19_456, 2, 1, None).unwrap(),
            Params::new(1024, 1, 1, Some(16)).unwrap(),
        ] {
            let salt = SaltString::generate(&mut rand::rngs::OsRng);
            let theirs = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
                .hash_password(b"135790", &salt)
                .unwrap()
                .to_string();
            assert!(h.verify("135790".into(), theirs.clone()).await.unwrap());
            assert!(!h.verify("135791".into(), theirs).await.unwrap());
        }
        // The pool keeps at most one buffer per slot, whatever the number of hashes.
        let slots = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert!(h.memory.lock().len() <= slots);
    }
}
