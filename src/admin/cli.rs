//! The admin subcommands on the command line: talk to the running server's control socket, or
//! work on the database when no server runs.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use serde_json::Value;

use super::control::{self, Probe, Refused};
use super::{restore, Admin, Request, Status};
use crate::cli::UserCommand;
use crate::config::Config;
use crate::db::Db;

/// `hangin status` when no server runs (as `systemctl status` and LSB say).
pub const EXIT_NOT_RUNNING: u8 = 3;

/// Run as root against a data dir another user owns (the service's `DynamicUser`): whatever
/// this command creates there (a restored database, WAL files) is handed to that user at the
/// end, or the service could not open it. (Switching to that user instead does not work: SQLite
/// resolves the full path, and `/var/lib/private` is closed to everyone but root.)
struct HandBack {
    dir: PathBuf,
    /// Only the database's files (`hangin.sqlite3*`): other root-owned files are the admin's.
    prefix: std::ffi::OsString,
    owner: Option<(u32, u32)>,
}

impl HandBack {
    fn new(config: &Config) -> HandBack {
        use std::os::unix::fs::MetadataExt;
        // SAFETY: geteuid has no preconditions.
        let root = rustix::process::geteuid().is_root();
        let owner = std::fs::metadata(&config.data_dir)
            .ok()
            .filter(|m| root && m.uid() != 0)
            .map(|m| (m.uid(), m.gid()));
        HandBack {
            dir: config.data_dir.clone(),
            prefix: config.db_path().file_name().unwrap_or_default().to_owned(),
            owner,
        }
    }
}

impl Drop for HandBack {
    fn drop(&mut self) {
        use std::os::unix::fs::MetadataExt;
        let Some((uid, gid)) = self.owner else { return };
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            if !entry
                .file_name()
                .as_encoded_bytes()
                .starts_with(self.prefix.as_encoded_bytes())
            {
                continue;
            }
            let path = entry.path();
            let ours = std::fs::symlink_metadata(&path).is_ok_and(|m| m.uid() == 0);
            if ours {
                if let Err(e) = std::os::unix::fs::lchown(&path, Some(uid), Some(gid)) {
                    eprintln!("hangin: cannot hand {} to uid {uid}: {e}", path.display());
                }
            }
        }
    }
}

fn open_existing(config: &Config) -> anyhow::Result<Db> {
    let path = config.db_path();
    if !path.exists() {
        anyhow::bail!(
            "no database at {} (is --data-dir or --config right?)",
            path.display()
        );
    }
    Ok(Db::open(&path)?)
}

fn denied(config: &Config, e: std::io::Error) -> anyhow::Error {
    anyhow::anyhow!(
        "cannot use the control socket {}: {e}. Run this as root or as the service's user \
         (docs/administration.md)",
        control::socket_path(&config.data_dir).display()
    )
}

/// Send `request` to the running server, or do it on the database when none runs.
async fn perform(config: &Config, request: Request) -> anyhow::Result<Result<Value, Refused>> {
    match control::probe(&config.data_dir).await {
        Probe::Running(mut stream) => control::call(&mut stream, &request).await,
        Probe::NotRunning => {
            let db = open_existing(config)?;
            let admin = Admin::offline(db.clone(), config.pictures_dir(), numbers(config)?);
            let result = admin.handle(request).await.map_err(|e| Refused {
                code: e.code().to_string(),
                message: e.to_string(),
            });
            tokio::task::spawn_blocking(move || db.close()).await?;
            Ok(result)
        }
        Probe::Denied(e) => Err(denied(config, e)),
    }
}

fn fail(json: bool, refused: Refused) -> ExitCode {
    if json {
        println!(
            "{}",
            serde_json::json!({"error": refused.code, "message": refused.message})
        );
    }
    eprintln!("hangin: {}", refused.message);
    ExitCode::FAILURE
}

pub async fn user(cmd: UserCommand, config: Config) -> anyhow::Result<ExitCode> {
    let _hand_back = HandBack::new(&config);
    let (request, json) = match cmd {
        UserCommand::List { json } => (Request::UserList, json),
        UserCommand::Show { user, json } => (Request::UserShow { user }, json),
        UserCommand::Ban { user, json } => (Request::UserBan { user }, json),
        UserCommand::Unban { user, json } => (Request::UserUnban { user }, json),
        UserCommand::Signout { user, json } => (Request::UserSignout { user }, json),
        UserCommand::Delete { user, json } => (Request::UserDelete { user }, json),
    };
    let result = match perform(&config, request.clone()).await? {
        Ok(v) => v,
        Err(refused) => return Ok(fail(json, refused)),
    };
    if json {
        println!("{}", serde_json::to_string(&result)?);
        return Ok(ExitCode::SUCCESS);
    }
    print_user_result(&request, &result);
    Ok(ExitCode::SUCCESS)
}

/// A JSON value as a table cell: strings bare, null as `-`.
fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// The human-readable form of a `hangin user …` answer.
fn print_user_result(request: &Request, result: &Value) {
    match request {
        Request::UserList => print_user_list(result),
        Request::UserShow { .. } => print_user_show(result),
        Request::UserBan { .. } => println!(
            "banned {}{}: {} token(s) revoked, {} connection(s) closed",
            cell(&result["number"]),
            if result["already_banned"] == true {
                " (it already was)"
            } else {
                ""
            },
            cell(&result["tokens_revoked"]),
            cell(&result["connections_closed"])
        ),
        Request::UserUnban { .. } => println!("lifted the ban on {}", cell(&result["number"])),
        Request::UserSignout { .. } => println!(
            "signed {} out: {} token(s) revoked, {} connection(s) closed",
            cell(&result["uuid"]),
            cell(&result["tokens_revoked"]),
            cell(&result["connections_closed"])
        ),
        Request::UserDelete { .. } => println!(
            "deleted {}: {} address-book entries, {} token(s), {} membership(s), {} message(s), \
             {} chat(s) of their own; {} chat(s) handed to another member; picture: {}",
            cell(&result["uuid"]),
            cell(&result["address_book"]),
            cell(&result["tokens"]),
            cell(&result["memberships"]),
            cell(&result["messages"]),
            cell(&result["chats"]),
            cell(&result["chats_handed_over"]),
            if result["picture"] == true {
                "removed"
            } else {
                "none"
            }
        ),
        Request::Status => {}
    }
}

fn print_user_list(result: &Value) {
    let users = result.as_array().cloned().unwrap_or_default();
    if users.is_empty() {
        println!("no users");
    }
    for u in users {
        let name = format!("{} {}", cell(&u["first_name"]), cell(&u["last_name"]));
        let mut flags = Vec::new();
        if u["online"] == true {
            flags.push("online");
        }
        if u["banned"] == true {
            flags.push("banned");
        }
        println!(
            "{}\t{}\t{}\tsince {}\t{} session(s)\t{}",
            cell(&u["uuid"]),
            cell(&u["number"]),
            name.trim(),
            cell(&u["created_at"]),
            cell(&u["sessions"]),
            flags.join(",")
        );
    }
}

fn print_user_show(result: &Value) {
    for key in [
        "uuid",
        "number",
        "first_name",
        "last_name",
        "created_at",
        "banned",
        "sessions",
        "last_token_at",
        "connections",
        "online",
    ] {
        println!("{key:<18}{}", cell(&result[key]));
    }
    if let Some(details) = result["details"].as_object() {
        for (key, value) in details {
            println!("{key:<18}{}", cell(value));
        }
    }
}

pub async fn status(json: bool, config: Config) -> anyhow::Result<ExitCode> {
    let _hand_back = HandBack::new(&config);
    let status: Status = match control::probe(&config.data_dir).await {
        Probe::Running(mut stream) => match control::call(&mut stream, &Request::Status).await? {
            Ok(v) => serde_json::from_value(v)?,
            Err(refused) => return Ok(fail(json, refused)),
        },
        Probe::NotRunning => {
            let mut status = Status {
                version: env!("CARGO_PKG_VERSION").to_string(),
                ..Status::default()
            };
            if config.db_path().exists() {
                let db = open_existing(&config)?;
                let admin = Admin::offline(db.clone(), config.pictures_dir(), numbers(&config)?);
                status = admin.status().await?;
                tokio::task::spawn_blocking(move || db.close()).await?;
            }
            status
        }
        Probe::Denied(e) => return Err(denied(&config, e)),
    };
    if json {
        println!("{}", serde_json::to_string(&status)?);
    } else {
        print_status(&status);
    }
    Ok(if status.running {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_NOT_RUNNING)
    })
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn print_status(st: &Status) {
    match (st.running, st.pid, st.uptime_seconds) {
        (true, Some(pid), Some(up)) => println!(
            "hangin {}: running (pid {pid}), up {}d {}h {}m {}s",
            st.version,
            up / 86_400,
            up % 86_400 / 3600,
            up % 3600 / 60,
            up % 60
        ),
        _ => println!("hangin {}: not running", st.version),
    }
    let opt = |v: Option<usize>| v.map_or("-".to_string(), |n| n.to_string());
    println!("connections       {}", opt(st.connections));
    println!("online users      {}", opt(st.online_users));
    println!("live chats        {}", st.live_chats);
    println!("messages today    {}", st.messages_today);
    println!(
        "users             {} ({} banned number(s))",
        st.users, st.banned_numbers
    );
    println!(
        "database          {} (schema version {})",
        mib(st.database_bytes),
        st.schema_version
    );
    if let Some(rss) = st.rss_bytes {
        println!("memory (RSS)      {}", mib(rss));
    }
    for (what, d) in [("OTP driver", &st.otp), ("push driver", &st.push)] {
        let Some(d) = d else { continue };
        let mut line = format!(
            "{what:<18}{}: {} ({} ok, {} failed",
            d.driver, d.state, d.ok, d.failed
        );
        if let (Some(at), Some(err)) = (&d.last_failure_at, &d.last_error) {
            line.push_str(&format!("; last failure {at}: {err}"));
        }
        line.push(')');
        println!("{line}");
    }
}

pub async fn restore(path: PathBuf, json: bool, config: Config) -> anyhow::Result<ExitCode> {
    let refuse_running = |config: &Config| -> anyhow::Result<()> {
        anyhow::bail!(
            "the server is running on {}: stop it first (systemctl stop hangin), then restore",
            config.data_dir.display()
        )
    };
    match control::probe(&config.data_dir).await {
        Probe::Running(_) => refuse_running(&config)?,
        Probe::Denied(e) => return Err(denied(&config, e)),
        Probe::NotRunning => {}
    }
    if !config.data_dir.is_dir() {
        anyhow::bail!("no data directory {}", config.data_dir.display());
    }
    let _hand_back = HandBack::new(&config);
    let source =
        std::fs::canonicalize(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let staged = restore::stage(&source, &config.db_path())?;
    let restored = restore::install(&source, &staged, &config.db_path())?;
    if json {
        println!("{}", serde_json::to_string(&restored)?);
    } else {
        println!(
            "restored {} (schema version {}, now {}; integrity ok): {} user(s), {} message(s)",
            restored.from.display(),
            restored.schema_version,
            restored.migrated_to,
            restored.users,
            restored.messages
        );
        match &restored.previous {
            Some(p) => println!("the previous database is kept as {}", p.display()),
            None => println!("there was no database before"),
        }
        println!("pictures are not part of the database backup; the pictures/ directory was left as it is");
    }
    Ok(ExitCode::SUCCESS)
}

/// Used by the server: answer on the (already bound) control socket until shutdown.
pub fn control_server(
    listener: tokio::net::UnixListener,
    state: crate::state::AppState,
    started: std::time::Instant,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let path = control::socket_path(&state.config.data_dir);
    let shutdown = state.shutdown.clone();
    control::serve(
        listener,
        path,
        Arc::new(Admin::live(state, started)),
        shutdown,
    )
}

/// The `[numbers]` rules of this configuration (validated when it was loaded).
fn numbers(config: &Config) -> anyhow::Result<crate::people::numbers::Numbers> {
    crate::people::numbers::Numbers::new(
        &config.numbers.default_region,
        &config.numbers.allowed_regions,
    )
    .map_err(anyhow::Error::msg)
}
