//! The control socket: `<data_dir>/control.sock`, a Unix socket of mode 0600 made by the server.
//! The protocol is one JSON object per line each way: a [`Request`] (`{"cmd":"user_ban",
//! "user":"5551234567"}`), then `{"ok":true,"result":…}` or
//! `{"ok":false,"error":"not_found","message":"…"}`. Only root and the server's own user may
//! connect (the file mode, and the peer's credentials are checked too).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

use super::{Admin, Request};

pub const SOCKET_NAME: &str = "control.sock";
/// Longest request line.
const MAX_LINE: u64 = 64 * 1024;
/// A client that sends nothing for this long is dropped.
const IDLE: Duration = Duration::from_secs(60);

pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET_NAME)
}

/// Bind the control socket. A socket file left by a server that died is replaced; one that
/// answers means another server uses this data dir, which is refused.
pub fn bind(data_dir: &Path) -> anyhow::Result<UnixListener> {
    let path = socket_path(data_dir);
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(&path).is_ok() {
            anyhow::bail!(
                "another hangin server is running on {} (its control socket {} answers)",
                data_dir.display(),
                path.display()
            );
        }
        std::fs::remove_file(&path)
            .with_context(|| format!("cannot remove the stale socket {}", path.display()))?;
    }
    // Bind under a private name, restrict it, then move it into place: the socket is never
    // reachable under its real name with a looser mode.
    let tmp = data_dir.join(format!(".{SOCKET_NAME}.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp)
        .with_context(|| format!("cannot create the control socket {}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(&tmp, &path)?;
    Ok(listener)
}

/// Serve admin requests until shutdown; the socket file is removed at the end, once every
/// client's request has ended.
pub async fn serve(
    listener: UnixListener,
    path: PathBuf,
    admin: Arc<Admin>,
    shutdown: CancellationToken,
) {
    let mut clients = tokio::task::JoinSet::new();
    let own_uid = rustix::process::geteuid().as_raw();
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((s, _)) => s,
                Err(e) => {
                    log::warn!("control socket: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let allowed = stream
            .peer_cred()
            .map(|c| c.uid() == 0 || c.uid() == own_uid)
            .unwrap_or(false);
        if !allowed {
            log::warn!("control socket: refused a client of another user");
            continue;
        }
        // Reap the clients that are done, so the set holds only live ones.
        while clients.try_join_next().is_some() {}
        let admin = admin.clone();
        let shutdown = shutdown.clone();
        clients.spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = serve_client(stream, &admin) => {}
            }
        });
    }
    while clients.join_next().await.is_some() {}
    let _ = std::fs::remove_file(&path);
}

async fn serve_client(stream: UnixStream, admin: &Admin) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    loop {
        let mut line = Vec::new();
        let read = tokio::time::timeout(
            IDLE,
            (&mut reader)
                .take(MAX_LINE + 1)
                .read_until(b'\n', &mut line),
        )
        .await;
        match read {
            Ok(Ok(0)) | Err(_) | Ok(Err(_)) => return,
            Ok(Ok(_)) => {}
        }
        let reply = if line.len() as u64 > MAX_LINE {
            error_reply("bad_request", "request line too long")
        } else {
            answer(admin, &line).await
        };
        let mut text = reply.to_string();
        text.push('\n');
        if write.write_all(text.as_bytes()).await.is_err() || line.len() as u64 > MAX_LINE {
            return;
        }
    }
}

async fn answer(admin: &Admin, line: &[u8]) -> Value {
    let request: Request = match serde_json::from_slice(line) {
        Ok(r) => r,
        Err(e) => return error_reply("bad_request", &format!("not a request: {e}")),
    };
    match admin.handle(request).await {
        Ok(result) => json!({"ok": true, "result": result}),
        Err(e) => error_reply(e.code(), &e.to_string()),
    }
}

fn error_reply(code: &str, message: &str) -> Value {
    json!({"ok": false, "error": code, "message": message})
}

/// Is a server answering on the data dir's control socket?
pub enum Probe {
    Running(UnixStream),
    /// No socket, or nobody listening on it (a server that died).
    NotRunning,
    /// The socket exists but this user may not use it.
    Denied(std::io::Error),
}

pub async fn probe(data_dir: &Path) -> Probe {
    match UnixStream::connect(socket_path(data_dir)).await {
        Ok(s) => Probe::Running(s),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            Probe::NotRunning
        }
        Err(e) => Probe::Denied(e),
    }
}

/// A failed request as the server reported it.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Refused {
    pub code: String,
    pub message: String,
}

/// Send one request and read its reply.
pub async fn call(
    stream: &mut UnixStream,
    request: &Request,
) -> anyhow::Result<Result<Value, Refused>> {
    let mut text = serde_json::to_string(request)?;
    text.push('\n');
    stream.write_all(text.as_bytes()).await?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    // A delete or ban waits for connections to close (at most a few seconds).
    tokio::time::timeout(Duration::from_secs(60), reader.read_line(&mut line))
        .await
        .context("the server did not answer on its control socket")??;
    let reply: Value = serde_json::from_str(&line)
        .with_context(|| format!("unreadable reply on the control socket: {line:?}"))?;
    if reply["ok"] == true {
        Ok(Ok(reply["result"].clone()))
    } else {
        Ok(Err(Refused {
            code: reply["error"].as_str().unwrap_or("failed").to_string(),
            message: reply["message"].as_str().unwrap_or("failed").to_string(),
        }))
    }
}
