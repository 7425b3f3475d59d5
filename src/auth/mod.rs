//! Login and tokens (behaviour.md "OTP login", "Tokens"; wire.md "Token endpoint"): OTP codes,
//! the OAuth password and refresh grants, bearer-token authentication, OAuth clients.

pub mod clients;
pub mod limiter;
pub mod otp;
pub mod tokens;

use std::net::IpAddr;
use std::sync::Arc;

use crate::config::Config;
use crate::db::{self, Db, DbError};
use crate::drivers::otp::{OtpMessage, OtpSender};
use crate::people::numbers;

pub use tokens::{Grant, TokenProblem, TokenRequest, TokenResponse};

/// Why a login step failed, in the terms of the wire contract.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// With the rule numbers must follow here (`Numbers::login_rule`).
    #[error("invalid number: {0}")]
    InvalidNumber(String),
    #[error("rate limited for {retry_after} s")]
    RateLimited { retry_after: u64 },
    #[error("OTP delivery failed: {0}")]
    OtpDelivery(String),
    #[error("invalid client")]
    InvalidClient,
    #[error("invalid grant")]
    InvalidGrant,
    #[error("unsupported grant type")]
    UnsupportedGrantType,
    #[error("missing parameter {0}")]
    MissingParameter(&'static str),
    #[error("invalid scope")]
    InvalidScope,
    #[error("the number is banned")]
    Banned,
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Everything login needs, shared by the HTTP handlers.
pub struct Auth {
    pub db: Db,
    pub config: Arc<Config>,
    pub otp_sender: Arc<dyn OtpSender>,
    pub address_limiter: limiter::AddressLimiter,
    pub hasher: otp::CodeHasher,
    /// `[numbers]`: how login and address-book numbers are read.
    pub numbers: numbers::Numbers,
}

impl Auth {
    pub fn new(db: Db, config: Arc<Config>, otp_sender: Arc<dyn OtpSender>) -> Auth {
        let per_hour = config.auth.create_per_address_per_hour;
        let numbers = numbers::Numbers::new(
            &config.numbers.default_region,
            &config.numbers.allowed_regions,
        )
        .expect("[numbers] is checked by Config::validate");
        Auth {
            db,
            config,
            otp_sender,
            address_limiter: limiter::AddressLimiter::new(
                per_hour,
                std::time::Duration::from_secs(3600),
            ),
            hasher: otp::CodeHasher::new(),
            numbers,
        }
    }

    /// `POST /create`: issue a code for the number and hand it to the OTP driver.
    pub async fn request_code(&self, raw_number: &str, client: IpAddr) -> Result<(), AuthError> {
        let number = self
            .numbers
            .login(raw_number)
            .ok_or_else(|| AuthError::InvalidNumber(self.numbers.login_rule().to_string()))?;
        if let Err(retry_after) = self.address_limiter.check(client) {
            return Err(AuthError::RateLimited { retry_after });
        }
        let limits = otp::SendLimits::from(&self.config.auth);
        // Cheap check first, so a flood does not cost argon2 work.
        {
            let number = number.clone();
            let now = self.db.now_ms();
            self.db
                .read(move |c| match db::admin::is_banned(c, &number)? {
                    true => Ok(Err(None)),
                    false => Ok(limits.check(c, &number, now)?.map_err(Some)),
                })
                .await?
                .map_err(|wait| {
                    wait.map_or(AuthError::Banned, |retry_after| AuthError::RateLimited {
                        retry_after,
                    })
                })?;
        }
        let code = otp::generate_code();
        let hash = self.hasher.hash(code.clone()).await?;
        let ttl_ms = self.config.auth.otp_ttl.as_millis() as i64;
        let (code_id, expires_at) = {
            let number = number.clone();
            let clock = self.db.clock().clone();
            self.db
                .write(move |c| {
                    let now = clock.now_ms();
                    // Again inside the write: a ban committed meanwhile wins.
                    if db::admin::is_banned(c, &number)? {
                        return Ok(Err(None));
                    }
                    if let Err(retry_after) = limits.check(c, &number, now)? {
                        return Ok(Err(Some(retry_after)));
                    }
                    let id = db::otp::insert(c, &number, &hash, now, now + ttl_ms)?;
                    Ok(Ok((id, now + ttl_ms)))
                })
                .await?
                .map_err(|wait| {
                    wait.map_or(AuthError::Banned, |retry_after| AuthError::RateLimited {
                        retry_after,
                    })
                })?
        };
        let message = OtpMessage {
            text: crate::drivers::otp::render(&self.config.otp.message, &code),
            number: self.numbers.display(&number),
            e164: number,
            code,
            expires_at: expires_at / 1000,
        };
        let sent = self.otp_sender.send(&message).await;
        crate::metrics::otp_sent(crate::metrics::otp_driver(&self.config), &sent);
        if let Err(e) = sent {
            log::warn!("OTP delivery to {} failed: {e}", message.number);
            self.db.write(move |c| db::otp::delete(c, code_id)).await?;
            return Err(AuthError::OtpDelivery(e.to_string()));
        }
        Ok(())
    }

    /// `POST /oauth/token`.
    pub async fn token(
        &self,
        request: TokenRequest,
        client_ip: IpAddr,
    ) -> Result<TokenResponse, AuthError> {
        tokens::grant(self, request, client_ip).await
    }

    /// Resolve a bearer token to its user (Doorkeeper's `doorkeeper_authorize!`).
    pub async fn authenticate(&self, token: &str) -> Result<db::users::UserId, TokenProblem> {
        tokens::authenticate(&self.db, token).await
    }
}
