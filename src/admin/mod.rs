//! Admin commands (`hangin user …`, `hangin status`, `hangin restore`; docs/administration.md).
//!
//! A running server listens on a control socket in its data dir ([`control`]); the CLI sends
//! each command there, so it acts on the live server at once (connections closed, contacts
//! told). With no server running, the CLI does the same work on the database directly
//! ([`Admin::offline`]), which is safe because nobody is connected then.
//!
//! The coupling with the engine is two calls: `Hub::disconnect_user` and
//! `Engine::forget_user` (see `src/channels/forget.rs`).

pub mod cli;
pub mod control;
pub mod restore;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::db::admin::{self as repo, DbFigures, Deleted, UserCounts, UserSummary};
use crate::db::users::UserId;
use crate::db::{self, Db, DbError};
use crate::metrics::DriverHealth;
use crate::people::numbers::Numbers;
use crate::state::AppState;

/// How long a ban/sign-out waits for the user's connections to finish closing.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// One request on the control socket (one JSON object per line).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    UserList,
    UserShow { user: String },
    UserBan { user: String },
    UserUnban { user: String },
    UserSignout { user: String },
    UserDelete { user: String },
    Status,
}

/// Why an admin command failed; `code` is what the control socket and `--json` report.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadInput(String),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("{0}")]
    Other(String),
}

impl AdminError {
    pub fn code(&self) -> &'static str {
        match self {
            AdminError::NotFound(_) => "not_found",
            AdminError::BadInput(_) => "bad_request",
            AdminError::Db(_) => "database",
            AdminError::Other(_) => "failed",
        }
    }
}

pub type AdminResult<T> = Result<T, AdminError>;

/// A user as `user list` / `user show` print them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UserView {
    pub uuid: String,
    pub number: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub created_at: String,
    pub banned: bool,
    pub sessions: i64,
    pub last_token_at: Option<String>,
    /// Open cable connections; null when no server is running.
    pub connections: Option<usize>,
    /// Connected, or inside a background window.
    pub online: bool,
    /// Only in `user show`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub details: Option<serde_json::Value>,
}

/// What `hangin status` shows.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Status {
    pub version: String,
    pub running: bool,
    pub pid: Option<u32>,
    pub uptime_seconds: Option<u64>,
    pub connections: Option<usize>,
    pub online_users: Option<usize>,
    pub users: i64,
    pub banned_numbers: i64,
    pub live_chats: i64,
    pub messages_today: i64,
    pub database_bytes: u64,
    pub schema_version: i64,
    pub rss_bytes: Option<u64>,
    pub otp: Option<DriverStatus>,
    pub push: Option<DriverStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DriverStatus {
    pub driver: String,
    /// "ok" until the newest outcome is a failure, then "failing".
    pub state: String,
    pub ok: u64,
    pub failed: u64,
    pub last_ok_at: Option<String>,
    pub last_failure_at: Option<String>,
    pub last_error: Option<String>,
}

impl From<DriverHealth> for DriverStatus {
    fn from(h: DriverHealth) -> Self {
        DriverStatus {
            state: h.state().to_string(),
            driver: h.driver,
            ok: h.ok,
            failed: h.failed,
            last_ok_at: h.last_ok_at.map(crate::wire::iso_ms),
            last_failure_at: h.last_failure_at.map(crate::wire::iso_ms),
            last_error: h.last_error,
        }
    }
}

/// The admin operations, on a live server's state or on the bare database.
pub struct Admin {
    db: Db,
    pictures_dir: PathBuf,
    /// `[numbers]`: how a NUMBER argument is read and how numbers are shown.
    numbers: Numbers,
    live: Option<Live>,
}

struct Live {
    state: AppState,
    started: Instant,
}

/// Who a command is about: a user (by uuid or number) or just a number nobody logged in with.
struct Target {
    user: Option<UserSummary>,
    number: String,
}

impl Admin {
    /// For the control socket of a running server.
    pub fn live(state: AppState, started: Instant) -> Admin {
        Admin {
            db: state.db.clone(),
            pictures_dir: state.config.pictures_dir(),
            numbers: state.auth.numbers.clone(),
            live: Some(Live { state, started }),
        }
    }

    /// For the CLI when no server runs: the database only.
    pub fn offline(db: Db, pictures_dir: PathBuf, numbers: Numbers) -> Admin {
        Admin {
            db,
            numbers,
            pictures_dir,
            live: None,
        }
    }

    pub async fn handle(&self, request: Request) -> AdminResult<serde_json::Value> {
        Ok(match request {
            Request::UserList => to_json(&self.list().await?)?,
            Request::UserShow { user } => to_json(&self.show(&user).await?)?,
            Request::UserBan { user } => self.ban(&user).await?,
            Request::UserUnban { user } => self.unban(&user).await?,
            Request::UserSignout { user } => self.sign_out(&user).await?,
            Request::UserDelete { user } => self.delete(&user).await?,
            Request::Status => to_json(&self.status().await?)?,
        })
    }

    async fn resolve(&self, who: &str) -> AdminResult<Target> {
        let who = who.trim().to_string();
        if uuid::Uuid::parse_str(&who).is_ok() {
            let found = self
                .db
                .read(move |c| match db::users::by_uuid(c, &who)? {
                    Some(u) => repo::summary(c, u.id),
                    None => Ok(None),
                })
                .await?;
            let user =
                found.ok_or_else(|| AdminError::NotFound("no user with that uuid".into()))?;
            return Ok(Target {
                number: user.number.clone(),
                user: Some(user),
            });
        }
        let Some(number) = self.numbers.parse(&who) else {
            return Err(AdminError::BadInput(format!(
                "{who:?} is neither a uuid nor a phone number"
            )));
        };
        let n = number.clone();
        let user = self
            .db
            .read(move |c| match db::users::by_number(c, &n)? {
                Some(u) => repo::summary(c, u.id),
                None => Ok(None),
            })
            .await?;
        Ok(Target { user, number })
    }

    async fn resolve_user(&self, who: &str) -> AdminResult<UserSummary> {
        self.resolve(who)
            .await?
            .user
            .ok_or_else(|| AdminError::NotFound("no user with that number".into()))
    }

    fn connections(&self, user: UserId) -> Option<usize> {
        self.live
            .as_ref()
            .map(|l| l.state.hub.user_connection_count(user))
    }

    fn view(&self, s: UserSummary, background_until: Option<i64>) -> UserView {
        let connections = self.connections(s.id);
        let in_window =
            self.live.is_some() && background_until.is_some_and(|t| t > self.db.now_ms());
        UserView {
            online: connections.unwrap_or(0) > 0 || in_window,
            connections,
            uuid: s.uuid,
            number: self.numbers.display(&s.number),
            first_name: s.first_name,
            last_name: s.last_name,
            created_at: crate::wire::iso_ms(s.created_at),
            banned: s.banned,
            sessions: s.sessions,
            last_token_at: s.last_token_at.map(crate::wire::iso_ms),
            details: None,
        }
    }

    pub async fn list(&self) -> AdminResult<Vec<UserView>> {
        let rows = self
            .db
            .read(|c| {
                let users = repo::list_users(c)?;
                let windows: std::collections::HashMap<UserId, i64> =
                    db::users::background_windows(c)?.into_iter().collect();
                Ok((users, windows))
            })
            .await?;
        let (users, windows) = rows;
        Ok(users
            .into_iter()
            .map(|u| {
                let w = windows.get(&u.id).copied();
                self.view(u, w)
            })
            .collect())
    }

    pub async fn show(&self, who: &str) -> AdminResult<UserView> {
        let user = self.resolve_user(who).await?;
        let id = user.id;
        let counts: UserCounts = self.db.read(move |c| repo::counts(c, id)).await?;
        let mut view = self.view(user, counts.background_until);
        let mut details = to_json(&counts)?;
        details["background_until"] = counts
            .background_until
            .map(crate::wire::iso_ms)
            .map_or(serde_json::Value::Null, serde_json::Value::String);
        view.details = Some(details);
        Ok(view)
    }

    /// Close every connection of `user`, wait for their cleanup, and take them offline
    /// (ending a background window). The user's tokens are revoked before this runs.
    async fn take_offline(&self, user: UserId) -> AdminResult<usize> {
        let Some(live) = &self.live else {
            return Ok(0);
        };
        let hub = &live.state.hub;
        let closed = hub.user_connection_count(user);
        // "unauthorized" without reconnect: their tokens are gone, retrying cannot help.
        hub.disconnect_user(user, "unauthorized", false);
        let deadline = Instant::now() + CLOSE_WAIT;
        while hub.user_connection_count(user) > 0 {
            if Instant::now() >= deadline {
                log::warn!(
                    "admin: {} connection(s) of user {} still open after {CLOSE_WAIT:?}",
                    hub.user_connection_count(user),
                    user.0
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        live.state
            .engine
            .forget_user(user)
            .await
            .map_err(|e| AdminError::Other(e.to_string()))?;
        // A connection authenticated just before the tokens died may have registered since.
        hub.disconnect_user(user, "unauthorized", false);
        Ok(closed)
    }

    async fn ban(&self, who: &str) -> AdminResult<serde_json::Value> {
        let target = self.resolve(who).await?;
        let number = target.number.clone();
        let user = target.user.as_ref().map(|u| u.id);
        let clock = self.db.clock().clone();
        let (newly, revoked) = self
            .db
            .write(move |c| {
                let now = clock.now_ms();
                let newly = repo::ban(c, &number, now)?;
                repo::delete_codes(c, &number)?;
                let revoked = match user {
                    Some(u) => repo::sign_out(c, u, now)?,
                    None => 0,
                };
                Ok((newly, revoked))
            })
            .await?;
        let closed = match user {
            Some(u) => self.take_offline(u).await?,
            None => 0,
        };
        log::info!(
            "admin: banned a number{} ({revoked} token(s) revoked, {closed} connection(s) closed)",
            if user.is_some() { " with a user" } else { "" }
        );
        Ok(serde_json::json!({
            "number": self.numbers.display(&target.number),
            "uuid": target.user.map(|u| u.uuid),
            "already_banned": !newly,
            "tokens_revoked": revoked,
            "connections_closed": closed,
        }))
    }

    async fn unban(&self, who: &str) -> AdminResult<serde_json::Value> {
        let target = self.resolve(who).await?;
        let number = target.number.clone();
        let lifted = self.db.write(move |c| repo::unban(c, &number)).await?;
        if !lifted {
            return Err(AdminError::NotFound("that number is not banned".into()));
        }
        log::info!("admin: lifted a ban");
        Ok(serde_json::json!({"number": self.numbers.display(&target.number), "unbanned": true}))
    }

    async fn sign_out(&self, who: &str) -> AdminResult<serde_json::Value> {
        let user = self.resolve_user(who).await?;
        let id = user.id;
        let now = self.db.now_ms();
        let revoked = self.db.write(move |c| repo::sign_out(c, id, now)).await?;
        let closed = self.take_offline(id).await?;
        log::info!(
            "admin: signed user {} out ({revoked} token(s) revoked, {closed} connection(s) closed)",
            id.0
        );
        Ok(serde_json::json!({
            "uuid": user.uuid,
            "tokens_revoked": revoked,
            "connections_closed": closed,
        }))
    }

    async fn delete(&self, who: &str) -> AdminResult<serde_json::Value> {
        let user = self.resolve_user(who).await?;
        let id = user.id;
        // Revoke first, so nothing reconnects while the connections close.
        let now = self.db.now_ms();
        self.db.write(move |c| repo::sign_out(c, id, now)).await?;
        let closed = self.take_offline(id).await?;
        let deleted: Deleted = self.db.write(move |c| repo::delete_user(c, id)).await?;
        if let Some(key) = &deleted.picture_key {
            match tokio::fs::remove_file(self.pictures_dir.join(key)).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => log::warn!("admin: could not remove a deleted user's picture: {e}"),
            }
        }
        if let Some(live) = &self.live {
            live.state
                .engine
                .forget_user(id)
                .await
                .map_err(|e| AdminError::Other(e.to_string()))?;
        }
        log::info!("admin: deleted user {} and their data", id.0);
        let mut out = to_json(&deleted)?;
        out["uuid"] = user.uuid.into();
        out["picture"] = deleted.picture_key.is_some().into();
        out["connections_closed"] = closed.into();
        Ok(out)
    }

    pub async fn status(&self) -> AdminResult<Status> {
        let since = local_midnight_ms(self.db.now_ms());
        let figures: DbFigures = self.db.read(move |c| repo::figures(c, since)).await?;
        let path = self.db.path().to_path_buf();
        let mut status = Status {
            version: env!("CARGO_PKG_VERSION").to_string(),
            users: figures.users,
            banned_numbers: figures.banned_numbers,
            live_chats: figures.live_chats,
            messages_today: figures.messages_today,
            schema_version: figures.schema_version,
            database_bytes: database_bytes(&path),
            ..Status::default()
        };
        if let Some(live) = &self.live {
            let (otp, push) = crate::metrics::driver_health();
            status.running = true;
            status.pid = Some(std::process::id());
            status.uptime_seconds = Some(live.started.elapsed().as_secs());
            status.connections = Some(live.state.hub.connection_count());
            status.online_users = Some(live.state.engine.online_count());
            status.live_chats = live.state.engine.live_chat_count() as i64;
            status.rss_bytes = crate::metrics::rss_bytes();
            status.otp = Some(otp.into());
            status.push = Some(push.into());
        }
        Ok(status)
    }
}

/// The database file with its WAL and shared-memory files, in bytes.
pub fn database_bytes(path: &std::path::Path) -> u64 {
    ["", "-wal", "-shm"]
        .iter()
        .filter_map(|suffix| {
            let mut p = path.as_os_str().to_owned();
            p.push(suffix);
            std::fs::metadata(p).ok().map(|m| m.len())
        })
        .sum()
}

/// The start of today in the server's local time zone, as Unix ms.
fn local_midnight_ms(now_ms: i64) -> i64 {
    let secs = now_ms / 1000;
    // The `time` crate's reading of the system zone (localtime_r, as before, without `unsafe`).
    let local = time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|now| Some(now.to_offset(time::UtcOffset::local_offset_at(now).ok()?)));
    let Some(local) = local else {
        return now_ms - now_ms.rem_euclid(86_400_000);
    };
    let into_day = local.hour() as i64 * 3600 + local.minute() as i64 * 60 + local.second() as i64;
    (secs - into_day) * 1000
}

fn to_json<T: Serialize>(value: &T) -> AdminResult<serde_json::Value> {
    serde_json::to_value(value).map_err(|e| AdminError::Other(e.to_string()))
}
