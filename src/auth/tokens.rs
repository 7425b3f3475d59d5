//! The OAuth token endpoint's grants and bearer authentication, Doorkeeper-exact.

use std::net::IpAddr;

use serde::Serialize;

use super::{clients, AuthError};
use crate::auth::Auth;
use crate::db::{self, users::UserId, Db, DbResult};
use crate::secret::{new_secret, sha256};

/// The parameters of `POST /oauth/token`, from wherever they came (query, body, Basic auth).
#[derive(Debug, Default, Clone)]
pub struct TokenRequest {
    pub grant_type: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub number: Option<String>,
    pub code: Option<String>,
    pub refresh_token: Option<String>,
    pub scope: Option<String>,
}

pub enum Grant {
    Password { number: String, code: String },
    Refresh { refresh_token: String },
}

/// Doorkeeper's success body; `uuid` only on the password grant.
#[derive(Debug, Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: i64,
    pub refresh_token: String,
    pub created_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
}

/// Why a bearer token was refused (the three `error_description`s of Doorkeeper).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenProblem {
    Invalid,
    Expired,
    Revoked,
    /// The database could not be asked; not the client's fault.
    Unavailable,
}

fn blank(v: &Option<String>) -> bool {
    v.as_deref().is_none_or(|s| s.trim().is_empty())
}

/// A new access/refresh pair as the client gets it.
struct PairSecrets {
    access: String,
    refresh: String,
}

/// The same pair as the database keeps it: hashes only.
struct PairHashes {
    access: Vec<u8>,
    refresh: Vec<u8>,
}

fn new_pair() -> (PairSecrets, PairHashes) {
    let secrets = PairSecrets {
        access: new_secret(),
        refresh: new_secret(),
    };
    let hashes = PairHashes {
        access: sha256(&secrets.access),
        refresh: sha256(&secrets.refresh),
    };
    (secrets, hashes)
}

impl PairHashes {
    /// Insert the token row; `previous` is the row a refresh grant replaces.
    fn store(
        &self,
        conn: &rusqlite::Connection,
        user_id: UserId,
        client_id: i64,
        now: i64,
        ttl: i64,
        previous: Option<i64>,
    ) -> DbResult<i64> {
        db::tokens::insert(
            conn,
            &db::tokens::NewToken {
                user_id,
                client_id,
                token_hash: &self.access,
                refresh_hash: &self.refresh,
                created_at: now,
                expires_in: ttl,
                previous_token_id: previous,
            },
        )
    }
}

impl PairSecrets {
    fn response(self, ttl: i64, created_ms: i64, uuid: Option<String>) -> TokenResponse {
        TokenResponse {
            access_token: self.access,
            token_type: "Bearer",
            expires_in: ttl,
            refresh_token: self.refresh,
            created_at: created_ms / 1000,
            uuid,
        }
    }
}

pub(super) async fn grant(
    auth: &Auth,
    req: TokenRequest,
    client_ip: IpAddr,
) -> Result<TokenResponse, AuthError> {
    if blank(&req.grant_type) {
        return Err(AuthError::MissingParameter("grant_type"));
    }
    let grant_type = req.grant_type.clone().unwrap_or_default();
    if grant_type != "password" && grant_type != "refresh_token" {
        return Err(AuthError::UnsupportedGrantType);
    }
    let client = {
        let (uid, secret) = (req.client_id.clone(), req.client_secret.clone());
        auth.db
            .read(move |c| clients::authenticate(c, uid.as_deref(), secret.as_deref()))
            .await?
            .ok_or(AuthError::InvalidClient)?
    };
    if !blank(&req.scope) {
        return Err(AuthError::InvalidScope);
    }
    let ttl = auth.config.auth.access_token_ttl.as_secs() as i64;
    match grant_type.as_str() {
        "password" => {
            if blank(&req.number) {
                return Err(AuthError::MissingParameter("number"));
            }
            if blank(&req.code) {
                return Err(AuthError::MissingParameter("code"));
            }
            let raw = req.number.unwrap_or_default();
            let code = req.code.unwrap_or_default().trim().to_string();
            let Some(number) = auth.numbers.login(&raw) else {
                return Err(AuthError::InvalidGrant);
            };
            let result = password_grant(auth, client.id, number.clone(), code, ttl).await;
            if matches!(result, Err(AuthError::InvalidGrant)) {
                // fail2ban-friendly: one line with the number and the address.
                // The number as the wire shows it, like the OTP drivers' lines.
                let shown = auth.numbers.display(&number);
                log::warn!("failed OTP verification for number {shown} from {client_ip}");
            }
            result
        }
        _ => {
            if blank(&req.refresh_token) {
                return Err(AuthError::MissingParameter("refresh_token"));
            }
            refresh_grant(
                &auth.db,
                client.id,
                req.refresh_token.unwrap_or_default(),
                ttl,
            )
            .await
        }
    }
}

async fn password_grant(
    auth: &Auth,
    client_id: i64,
    number: String,
    code: String,
    ttl: i64,
) -> Result<TokenResponse, AuthError> {
    let live = {
        let number = number.clone();
        let clock = auth.db.clock().clone();
        auth.db
            .read(move |c| db::otp::newest_live(c, &number, clock.now_ms()))
            .await?
    };
    let Some(stored) = live else {
        return Err(AuthError::InvalidGrant);
    };
    // Spend an attempt before checking, so parallel guesses cannot exceed the limit.
    let max = auth.config.auth.otp_max_attempts;
    let id = stored.id;
    if !auth
        .db
        .write(move |c| db::otp::take_attempt(c, id, max))
        .await?
    {
        return Err(AuthError::InvalidGrant);
    }
    if !auth.hasher.verify(code, stored.code_hash).await? {
        return Err(AuthError::InvalidGrant);
    }
    let (secrets, hashes) = new_pair();
    let clock = auth.db.clock().clone();
    let issued = auth
        .db
        .write(move |c| {
            let now = clock.now_ms();
            if !db::otp::consume(c, id, now)? {
                return Ok(None);
            }
            let user = match db::users::by_number(c, &number)? {
                Some(u) => u,
                None => db::users::create(c, &number)?,
            };
            hashes.store(c, user.id, client_id, now, ttl, None)?;
            Ok(Some((user.uuid, now)))
        })
        .await?;
    let (uuid, created_ms) = issued.ok_or(AuthError::InvalidGrant)?;
    Ok(secrets.response(ttl, created_ms, Some(uuid)))
}

async fn refresh_grant(
    db: &Db,
    client_id: i64,
    refresh_token: String,
    ttl: i64,
) -> Result<TokenResponse, AuthError> {
    let presented = sha256(&refresh_token);
    let (secrets, hashes) = new_pair();
    let clock = db.clock().clone();
    let issued = db
        .write(move |c| {
            let Some(old) = db::tokens::by_refresh_hash(c, &presented)? else {
                return Ok(None);
            };
            let now = clock.now_ms();
            if old.client_id != client_id || !db::tokens::spend_refresh(c, old.id, now)? {
                return Ok(None);
            }
            hashes.store(c, old.user_id, client_id, now, ttl, Some(old.id))?;
            Ok(Some(now))
        })
        .await?;
    let created_ms = issued.ok_or(AuthError::InvalidGrant)?;
    Ok(secrets.response(ttl, created_ms, None))
}

pub(super) async fn authenticate(db: &Db, token: &str) -> Result<UserId, TokenProblem> {
    if token.is_empty() || token.len() > 512 {
        return Err(TokenProblem::Invalid);
    }
    let hash = sha256(token);
    let row = db
        .read(move |c| db::tokens::by_access_hash(c, &hash))
        .await
        .map_err(|e| {
            log::error!("token lookup failed: {e}");
            TokenProblem::Unavailable
        })?
        .ok_or(TokenProblem::Invalid)?;
    let now = db.now_ms();
    // Doorkeeper retires the previous pair on first presentation, even of an expired token.
    if let Some(previous) = row.previous_token_id {
        let id = row.id;
        let retired: DbResult<()> = db
            .write(move |c| db::tokens::retire_previous(c, id, previous, now))
            .await;
        if let Err(e) = retired {
            log::warn!("could not retire a refreshed token: {e}");
        }
    }
    if row.revoked_at.is_some() {
        return Err(TokenProblem::Revoked);
    }
    if now >= row.created_at + row.expires_in * 1000 {
        return Err(TokenProblem::Expired);
    }
    Ok(row.user_id)
}
