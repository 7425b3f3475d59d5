//! Integration-test harness: the real `hangin` binary on 127.0.0.1:0 with a fresh data dir,
//! driven over real TCP (HTTP via reqwest, websockets via tokio-tungstenite). OTP codes are read
//! from the `log` driver's lines on the server's stderr, as an operator would.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// The server binary under test: this build's, or `$HANGIN_TEST_BIN` (e.g. `.ci/qemu-hangin`,
/// which runs the cross-built ARM binary under qemu). `Command::new(BIN)` works either way.
pub const BIN: TestBin = TestBin;

pub struct TestBin;

impl TestBin {
    pub fn path(&self) -> &'static std::ffi::OsStr {
        static PATH: std::sync::OnceLock<std::ffi::OsString> = std::sync::OnceLock::new();
        PATH.get_or_init(|| {
            std::env::var_os("HANGIN_TEST_BIN")
                .unwrap_or_else(|| env!("CARGO_BIN_EXE_hangin").into())
        })
    }
}

impl AsRef<std::ffi::OsStr> for TestBin {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.path()
    }
}

/// A started `hangin` process; its HTTP and cable API through [`Api`] (`Deref`).
pub struct Server {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub data_dir: PathBuf,
    pub api: Api,
    env: Vec<(String, String)>,
}

/// What a test talks to: a server's address, an OAuth client of it, and the log lines where the
/// `log` OTP driver writes its codes. The same for a spawned binary ([`Server`]) and a server
/// started in-process (tests/virtual_time.rs).
pub struct Api {
    pub base: String,
    pub port: u16,
    pub client_id: String,
    pub client_secret: String,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl std::ops::Deref for Server {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

impl std::ops::DerefMut for Server {
    fn deref_mut(&mut self) -> &mut Api {
        &mut self.api
    }
}

/// Environment every test server gets: loopback only, no mDNS, generous per-address limit.
pub fn base_env(data_dir: &Path) -> Vec<(String, String)> {
    vec![
        ("HANGIN_LISTEN".into(), "127.0.0.1:0".into()),
        ("HANGIN_DATA_DIR".into(), data_dir.display().to_string()),
        ("HANGIN_MDNS__ENABLED".into(), "false".into()),
        (
            "HANGIN_AUTH__CREATE_PER_ADDRESS_PER_HOUR".into(),
            "1000000".into(),
        ),
        ("HANGIN_AUTH__OTP_RESEND_SECONDS".into(), "0".into()),
        ("HANGIN_LOG_LEVEL".into(), "info".into()),
    ]
}

/// Run a `hangin` subcommand against a data dir; (exit code, stdout, stderr).
pub fn run_cli(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env_remove("JOURNAL_STREAM")
        .env("HANGIN_MDNS__ENABLED", "false")
        .envs(env.iter().map(|(k, v)| (k.to_string(), v.to_string())))
        .output()
        .expect("run hangin");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

impl Server {
    pub fn start(extra: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let data_dir = dir.path().join("data");
        Self::start_in(dir, data_dir, extra)
    }

    pub fn start_in(dir: tempfile::TempDir, data_dir: PathBuf, extra: &[(&str, &str)]) -> Server {
        let (code, out, err) = run_cli(
            &[
                "client",
                "create",
                "tests",
                "--json",
                "--data-dir",
                &data_dir.display().to_string(),
            ],
            &[],
        );
        assert_eq!(code, 0, "client create failed: {err}");
        let creds: Value = serde_json::from_str(out.trim()).expect("client json");
        Self::launch(dir, data_dir, extra, creds)
    }

    /// First start on an empty data dir, as an operator does it: the server makes its own OAuth
    /// client, and the tests use the credentials it writes to `client-credentials.json`.
    pub fn start_first_time(extra: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let data_dir = dir.path().join("data");
        let mut server = Self::launch(dir, data_dir, extra, Value::Null);
        let text = std::fs::read_to_string(server.credentials_path()).expect("credentials file");
        let creds: Value = serde_json::from_str(&text).expect("credentials json");
        server.client_id = creds["client_id"].as_str().unwrap().to_string();
        server.client_secret = creds["client_secret"].as_str().unwrap().to_string();
        server
    }

    fn launch(
        dir: tempfile::TempDir,
        data_dir: PathBuf,
        extra: &[(&str, &str)],
        creds: Value,
    ) -> Server {
        let mut env = base_env(&data_dir);
        for (k, v) in extra {
            env.retain(|(ek, _)| ek != k);
            env.push((k.to_string(), v.to_string()));
        }
        let text = |k: &str| creds[k].as_str().unwrap_or_default().to_string();
        let mut server = Server {
            child: spawn(&env),
            dir,
            data_dir,
            api: Api {
                base: String::new(),
                port: 0,
                client_id: text("client_id"),
                client_secret: text("client_secret"),
                log: Arc::new(Mutex::new(Vec::new())),
            },
            env,
        };
        server.attach_log();
        server
    }

    pub fn credentials_path(&self) -> PathBuf {
        self.data_dir.join("client-credentials.json")
    }

    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("hangin.sqlite3")
    }

    pub fn pictures_dir(&self) -> PathBuf {
        self.data_dir.join("pictures")
    }

    /// A field of the server process's `/proc/<pid>/status` in KiB (`VmRSS`, `VmHWM`).
    pub fn proc_status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("read /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc status"))
    }

    fn attach_log(&mut self) {
        let stderr = self.child.stderr.take().expect("stderr piped");
        let log = self.log.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                    let _ = tx.send(addr);
                }
                if std::env::var_os("HANGIN_TEST_LOG").is_some() {
                    eprintln!("[server] {line}");
                }
                log.lock().unwrap().push(line);
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| {
                panic!(
                    "server did not start; log:\n{}",
                    self.log.lock().unwrap().join("\n")
                )
            });
        self.port = addr.rsplit(':').next().unwrap().parse().unwrap();
        self.base = format!("http://{addr}");
    }

    /// SIGKILL and start again on the same data dir (and port).
    pub fn kill9_and_restart(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
        self.restart_same_port();
    }

    pub fn restart_same_port(&mut self) {
        let port = self.port;
        self.env.retain(|(k, _)| k != "HANGIN_LISTEN");
        self.env
            .push(("HANGIN_LISTEN".into(), format!("127.0.0.1:{port}")));
        self.log.lock().unwrap().clear();
        self.child = spawn(&self.env);
        self.attach_log();
    }

    /// SIGTERM; the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        sigterm(&self.child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "server did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Api {
    /// Log lines containing `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }

    /// Wait until at least `count` log lines contain `needle`; the matching lines.
    pub async fn wait_log_lines(&self, needle: &str, count: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let lines = self.log_lines(needle);
            if lines.len() >= count {
                return lines;
            }
            assert!(
                Instant::now() < deadline,
                "expected {count} log lines with {needle:?}, got {lines:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/cable", self.port)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The newest OTP code the log driver printed for `number`.
    pub async fn otp(&self, number: &str) -> String {
        let needle = format!("OTP for {number}: ");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(code) = self
                .log
                .lock()
                .unwrap()
                .iter()
                .rev()
                .find_map(|l| l.split(&needle).nth(1).map(|c| c.trim().to_string()))
            {
                return code;
            }
            assert!(Instant::now() < deadline, "no OTP for {number}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The `n`th code (1-based) the log driver printed for `number`, waiting for it.
    pub async fn nth_otp(&self, number: &str, n: usize) -> String {
        let needle = format!("OTP for {number}: ");
        let lines = self.wait_log_lines(&needle, n).await;
        lines[n - 1]
            .split(&needle)
            .nth(1)
            .unwrap()
            .trim()
            .to_string()
    }

    pub fn http(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    }

    /// `GET /user` with `token` as the bearer.
    pub async fn get_user(&self, token: &str) -> reqwest::Response {
        self.http()
            .get(self.url("/user"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    pub async fn request_code(&self, number: &str) -> reqwest::Response {
        self.http()
            .post(self.url("/create"))
            .query(&[("number", number)])
            .send()
            .await
            .unwrap()
    }

    pub async fn password_grant(&self, number: &str, code: &str) -> reqwest::Response {
        self.token(&[
            ("grant_type", "password"),
            ("number", number),
            ("code", code),
        ])
        .await
    }

    pub async fn refresh_grant(&self, refresh: &str) -> reqwest::Response {
        self.token(&[("grant_type", "refresh_token"), ("refresh_token", refresh)])
            .await
    }

    /// Token request with the client credentials in the query string, as both real clients do.
    pub async fn token(&self, params: &[(&str, &str)]) -> reqwest::Response {
        let mut all = vec![
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.client_secret.as_str()),
        ];
        all.extend_from_slice(params);
        self.http()
            .post(self.url("/oauth/token"))
            .query(&all)
            .send()
            .await
            .unwrap()
    }

    /// Log a new number in and set its names.
    pub async fn sign_up(&self, first: &str, last: &str) -> User {
        self.sign_up_as(&fresh_number(), first, last).await
    }

    /// Log `number` in and set its names.
    pub async fn sign_up_as(&self, number: &str, first: &str, last: &str) -> User {
        let number = number.to_string();
        assert_eq!(self.request_code(&number).await.status(), 204);
        let code = self.otp(&number).await;
        let r = self.password_grant(&number, &code).await;
        assert_eq!(r.status(), 200);
        let t: Value = r.json().await.unwrap();
        let user = User {
            number,
            uuid: t["uuid"].as_str().unwrap().into(),
            token: t["access_token"].as_str().unwrap().into(),
            refresh: t["refresh_token"].as_str().unwrap().into(),
            first: first.into(),
            last: last.into(),
        };
        let r = self
            .http()
            .patch(self.url("/user"))
            .bearer_auth(&user.token)
            .json(&json!({"user": {"first_name": first, "last_name": last}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        user
    }

    pub async fn add_friends(&self, owner: &User, others: &[&User]) {
        let friends: Vec<Value> = others
            .iter()
            .map(|o| friend_entry(&o.first, &o.last, &o.number))
            .collect();
        let r = post_friends(self, owner, json!({ "friends": friends })).await;
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    }

    pub async fn befriend(&self, a: &User, b: &User) {
        self.add_friends(a, &[b]).await;
        self.add_friends(b, &[a]).await;
    }

    pub async fn cable(&self, user: &User) -> Cable {
        Cable::connect(&format!("{}?access_token={}", self.ws_url(), user.token)).await
    }

    /// A cable connection subscribed to ChatsChannel, with `chats` and `contacts_online` read.
    pub async fn online(&self, user: &User) -> Cable {
        let mut c = self.cable(user).await;
        c.subscribe(CHATS).await;
        c.payload(CHATS, "chats").await;
        c.payload(CHATS, "contacts_online").await;
        c
    }
}

fn spawn(env: &[(String, String)]) -> Child {
    Command::new(BIN)
        .arg("serve")
        .env_remove("JOURNAL_STREAM")
        .env_remove("HANGIN_CONFIG")
        // A test run under systemd must not make servers talk to the real service manager.
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .envs(env.iter().cloned())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn hangin")
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Send SIGTERM to a spawned server (a graceful stop).
pub fn sigterm(child: &std::process::Child) {
    let pid = rustix::process::Pid::from_child(child);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
}

/// Whether the tests run as root (permission checks do not apply to root).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// One address-book entry of `POST /friends`.
pub fn friend_entry(first: &str, last: &str, number: &str) -> Value {
    json!({"first_name": first, "last_name": last, "number": number})
}

/// `POST /friends` with `body` as `u`.
pub async fn post_friends(s: &Api, u: &User, body: Value) -> reqwest::Response {
    s.http()
        .post(s.url("/friends"))
        .bearer_auth(&u.token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// `GET path` as `u`, which must answer 200 with JSON.
pub async fn get_json(s: &Api, u: &User, path: &str) -> Value {
    let r = s
        .http()
        .get(s.url(path))
        .bearer_auth(&u.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

pub fn fresh_number() -> String {
    use rand::Rng;
    format!("555{:07}", rand::thread_rng().gen_range(0..10_000_000))
}

#[derive(Debug, Clone)]
pub struct User {
    pub number: String,
    pub uuid: String,
    pub token: String,
    pub refresh: String,
    pub first: String,
    pub last: String,
}

impl User {
    /// The contact object others see for this user.
    pub fn contact(&self) -> Value {
        json!({"uuid": self.uuid, "first_name": self.first, "last_name": self.last, "number": self.number, "profile_pic": null})
    }
}

pub const CHATS: &str = r#"{"channel":"ChatsChannel"}"#;

/// A frame carrying `message` on the subscription `identifier`.
pub fn on(identifier: &str, message: Value) -> Value {
    json!({"identifier": identifier, "message": message})
}

/// The confirmation of a subscription to `identifier`.
pub fn confirm(identifier: &str) -> Value {
    json!({"identifier": identifier, "type": "confirm_subscription"})
}

pub fn chat_ident(id: i64) -> String {
    format!(r#"{{"channel":"ChatChannel", "id":"{id}"}}"#)
}

pub const FRAME_TIMEOUT: Duration = Duration::from_secs(3);

/// How long tests give something that must NOT happen (a frame, a log line, a push) to show
/// up. Absence has no event to wait for, so `quiet_window` is the one place a test waits a
/// fixed time; everything that does happen is waited for with a deadline (`Cable::frames`,
/// `next_frame`, `wait_closed`, `Server::wait_log_lines`, `wait_until`). On loopback a wrong
/// frame arrives within milliseconds; a later one still fails at the connection's next check.
pub const QUIET_WINDOW: Duration = Duration::from_millis(300);

/// Wait out `QUIET_WINDOW` before asserting that something did not happen.
pub async fn quiet_window() {
    tokio::time::sleep(QUIET_WINDOW).await;
}

/// Wait until `done` holds, checking every 10 ms; panics naming `what` after 5 s.
pub async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Assert that none of these connections receives a frame (pings aside) within one shared
/// `QUIET_WINDOW`: the window is waited once, then each connection's buffered frames are read.
pub async fn assert_all_quiet(cables: &mut [(&mut Cable, &str)]) {
    quiet_window().await;
    for (cable, who) in cables.iter_mut() {
        let frames = cable.drain(Duration::from_millis(5)).await;
        assert!(frames.is_empty(), "unexpected frames for {who}: {frames:?}");
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One websocket speaking ActionCable JSON; pings are set aside.
pub struct Cable {
    pub ws: Ws,
    pub backlog: Vec<Value>,
    pub pings: Vec<Value>,
    pub closed: Option<Option<u16>>,
}

impl Cable {
    pub async fn connect(url: &str) -> Cable {
        let mut c = Self::connect_raw(url).await;
        let first = c.next_frame(|_| true).await;
        assert_eq!(first, json!({"type": "welcome"}));
        c
    }

    pub async fn connect_raw(url: &str) -> Cable {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("websocket connect");
        Cable {
            ws,
            backlog: Vec::new(),
            pings: Vec::new(),
            closed: None,
        }
    }

    /// The next frame other than a ping (pings are kept in `pings`); `None` on timeout or close.
    async fn recv(&mut self, timeout: Duration) -> Option<Value> {
        self.recv_or_ping(timeout, false).await
    }

    /// [`Cable::recv`]; with `ping_ends_wait`, an arriving ping also returns (as `None`).
    async fn recv_or_ping(&mut self, timeout: Duration, ping_ends_wait: bool) -> Option<Value> {
        loop {
            let msg = match tokio::time::timeout(timeout, self.ws.next()).await {
                Err(_) => return None,
                Ok(None) => {
                    self.closed.get_or_insert(None);
                    return None;
                }
                Ok(Some(Err(_))) => {
                    self.closed.get_or_insert(None);
                    return None;
                }
                Ok(Some(Ok(m))) => m,
            };
            match msg {
                Message::Text(t) => {
                    let v: Value = serde_json::from_str(&t).expect("server frames are JSON");
                    if v["type"] == "ping" {
                        self.pings.push(v);
                        if ping_ends_wait {
                            return None;
                        }
                        continue;
                    }
                    return Some(v);
                }
                Message::Close(frame) => {
                    self.closed = Some(frame.map(|f| u16::from(f.code)));
                    return None;
                }
                _ => continue,
            }
        }
    }

    /// The first frame (backlog first) matching `pred`; panics after FRAME_TIMEOUT.
    pub async fn next_frame(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(i) = self.backlog.iter().position(&pred) {
            return self.backlog.remove(i);
        }
        let deadline = Instant::now() + FRAME_TIMEOUT;
        while Instant::now() < deadline {
            match self.recv(deadline - Instant::now()).await {
                Some(f) if pred(&f) => return f,
                Some(f) => self.backlog.push(f),
                None if self.closed.is_some() => break,
                None => {}
            }
        }
        panic!(
            "no matching frame; backlog: {:?}; closed: {:?}",
            self.backlog, self.closed
        );
    }

    /// The next `n` frames (pings aside), backlog first, each waited for up to FRAME_TIMEOUT;
    /// fewer if they do not come (the caller's assertion shows what did).
    pub async fn frames(&mut self, n: usize) -> Vec<Value> {
        let take = n.min(self.backlog.len());
        let mut out: Vec<Value> = self.backlog.drain(..take).collect();
        while out.len() < n {
            // A deadline per frame, not per read: pings would restart a per-read timeout.
            let deadline = Instant::now() + FRAME_TIMEOUT;
            let frame = loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match self.recv(left).await {
                    Some(f) => break Some(f),
                    None if self.closed.is_none() && !left.is_zero() => {}
                    None => break None,
                }
            };
            match frame {
                Some(f) => out.push(f),
                None => break,
            }
        }
        out
    }

    /// Wait up to FRAME_TIMEOUT for the server to close the connection (frames read meanwhile
    /// join the backlog); the close code, `None` for a connection that just ended.
    pub async fn wait_closed(&mut self) -> Option<u16> {
        let deadline = Instant::now() + FRAME_TIMEOUT;
        while self.closed.is_none() && Instant::now() < deadline {
            if let Some(f) = self.recv(deadline - Instant::now()).await {
                self.backlog.push(f);
            }
        }
        self.closed
            .unwrap_or_else(|| panic!("the server did not close; backlog: {:?}", self.backlog))
    }

    /// Every frame arriving within `wait` (pings aside), backlog first.
    pub async fn drain(&mut self, wait: Duration) -> Vec<Value> {
        let mut out = std::mem::take(&mut self.backlog);
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            match self.recv(deadline - Instant::now()).await {
                Some(f) => out.push(f),
                None => break,
            }
        }
        out
    }

    pub async fn send_raw(&mut self, text: &str) {
        self.ws
            .send(Message::Text(text.into()))
            .await
            .expect("send");
    }

    pub async fn command(&mut self, command: &str, identifier: &str, data: Option<Value>) {
        let mut msg = json!({"command": command, "identifier": identifier});
        if let Some(d) = data {
            msg["data"] = Value::String(d.to_string());
        }
        self.send_raw(&msg.to_string()).await;
    }

    /// Subscribe and return the confirmation or rejection type.
    pub async fn subscribe_result(&mut self, identifier: &str) -> String {
        self.command("subscribe", identifier, None).await;
        let f = self
            .next_frame(|f| {
                f["identifier"] == identifier
                    && (f["type"] == "confirm_subscription" || f["type"] == "reject_subscription")
            })
            .await;
        f["type"].as_str().unwrap().to_string()
    }

    pub async fn subscribe(&mut self, identifier: &str) {
        assert_eq!(
            self.subscribe_result(identifier).await,
            "confirm_subscription"
        );
    }

    pub async fn perform(&mut self, identifier: &str, action: &str, mut data: Value) {
        data["action"] = json!(action);
        self.command("message", identifier, Some(data)).await;
    }

    /// The next payload on `identifier` holding `key`.
    pub async fn payload(&mut self, identifier: &str, key: &str) -> Value {
        let f = self
            .next_frame(|f| f["identifier"] == identifier && f["message"].get(key).is_some())
            .await;
        f["message"][key].clone()
    }

    pub async fn event(&mut self, key: &str) -> Value {
        self.payload(CHATS, key).await
    }

    /// `createChat` on this ChatsChannel subscription: the new chat's id from `own_chat`.
    pub async fn create_chat(&mut self, name: &str) -> i64 {
        self.perform(CHATS, "createChat", json!({ "name": name }))
            .await;
        self.event("own_chat").await["id"].as_i64().unwrap()
    }

    /// Assert nothing but pings arrives within `wait`.
    pub async fn assert_quiet(&mut self, wait: Duration) {
        let frames = self.drain(wait).await;
        assert!(frames.is_empty(), "unexpected frames: {frames:?}");
    }

    /// Assert nothing but pings arrives within the shared `QUIET_WINDOW`.
    pub async fn assert_silent(&mut self) {
        assert_all_quiet(&mut [(self, "this connection")]).await;
    }

    /// Wait (up to FRAME_TIMEOUT) until `n` pings in all have arrived; other frames meanwhile
    /// join the backlog.
    pub async fn wait_pings(&mut self, n: usize) -> &[Value] {
        let deadline = Instant::now() + FRAME_TIMEOUT;
        while self.pings.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero() && self.closed.is_none(),
                "{} of {n} pings; backlog {:?}",
                self.pings.len(),
                self.backlog
            );
            if let Some(f) = self.recv_or_ping(left, true).await {
                self.backlog.push(f);
            }
        }
        &self.pings
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// Build a tiny valid PNG.
pub fn tiny_png() -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc32(&body).to_be_bytes());
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&1u32.to_be_bytes());
    ihdr.extend_from_slice(&1u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    // zlib stream of one uncompressed block: filter byte + RGB pixel
    let raw = [0u8, 255, 0, 0];
    let mut z = vec![
        0x78,
        0x01,
        0x01,
        raw.len() as u8,
        0,
        !(raw.len() as u8),
        0xff,
    ];
    z.extend_from_slice(&raw);
    z.extend_from_slice(&adler32(&raw).to_be_bytes());
    chunk(&mut out, b"IDAT", &z);
    chunk(&mut out, b"IEND", &[]);
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &d in data {
        a = (a + d as u32) % 65521;
        b = (b + a) % 65521;
    }
    (b << 16) | a
}

/// Frames grouped by their identifier, for assertions over a whole drain.
pub fn by_identifier(frames: &[Value]) -> HashMap<String, Vec<Value>> {
    let mut out: HashMap<String, Vec<Value>> = HashMap::new();
    for f in frames {
        out.entry(f["identifier"].as_str().unwrap_or("").to_string())
            .or_default()
            .push(f.clone());
    }
    out
}
