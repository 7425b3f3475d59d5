//! OTP and push drivers against real counterparts on this machine: a fake GSM modem playing the
//! other end of a pseudo-terminal, local HTTP receivers that check Standard Webhooks signatures
//! by hand, a local HTTP/2 TLS server standing in for APNs, real programs for `exec`. Every
//! server is the real binary (`tests/common`).

// The fake modem is a pty opened with libc (no safe wrapper in the dependencies covers it).
#![allow(unsafe_code)]

mod common;

use std::collections::VecDeque;
use std::ffi::CStr;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD as B64URL};
use base64::Engine;
use common::{fresh_number, Server, BIN, CHATS};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

// ---------------------------------------------------------------------------------------------
// Shared helpers

/// Start `hangin serve` with `env` and expect it to exit by itself: (exit code, stderr).
fn start_fails(env: &[(&str, &str)]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .arg("serve")
        .env_remove("JOURNAL_STREAM")
        .env_remove("HANGIN_CONFIG")
        .env("HANGIN_LISTEN", "127.0.0.1:0")
        .env("HANGIN_DATA_DIR", dir.path().join("data"))
        .env("HANGIN_MDNS__ENABLED", "false")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().ok();
            child.wait().ok();
            panic!("the server started despite the misconfiguration {env:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .ok();
    (status.code().unwrap_or(-1), stderr)
}

fn assert_config_error(env: &[(&str, &str)], needle: &str) {
    let (code, stderr) = start_fails(env);
    assert_eq!(code, 2, "exit code for {env:?}; stderr: {stderr}");
    assert!(stderr.contains(needle), "{needle:?} not in: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

async fn wait_for_log(server: &Server, needle: &str, within: Duration) {
    let deadline = Instant::now() + within;
    while !server.log_text().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "{needle:?} not in the log:\n{}",
            server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn assert_delivery_failed(r: reqwest::Response) {
    assert_eq!(r.status(), 502);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "otp_delivery_failed", "{body}");
    assert!(body["error_description"].is_string(), "{body}");
}

async fn log_in(server: &Server, number: &str, code: &str) -> Value {
    let r = server.password_grant(number, code).await;
    assert_eq!(r.status(), 200, "login with the delivered code");
    r.json().await.unwrap()
}

/// The stored device token of a user, read straight from the SQLite file.
fn stored_device_token(server: &Server, uuid: &str) -> Option<String> {
    let db = rusqlite::Connection::open_with_flags(
        server.data_dir.join("hangin.sqlite3"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    db.query_row(
        "SELECT device_token FROM users WHERE uuid = ?1",
        [uuid],
        |r| r.get(0),
    )
    .unwrap()
}

async fn register_device(server: &Server, user: &common::User, token: &str) {
    let r = server
        .http()
        .post(server.url("/user/registerIOSDevice"))
        .bearer_auth(&user.token)
        .json(&json!({ "device_token": token }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// `inviter` creates a chat over the cable and invites `invitees` to it; the chat id.
async fn invite(server: &Server, inviter: &common::User, invitees: &[&common::User]) -> i64 {
    let mut cable = server.online(inviter).await;
    cable
        .perform(CHATS, "createChat", json!({"name": "Pizza"}))
        .await;
    let chat = cable.event("own_chat").await["id"].as_i64().unwrap();
    let uuids: Vec<&str> = invitees.iter().map(|u| u.uuid.as_str()).collect();
    let r = server
        .http()
        .post(server.url("/notifications/invite"))
        .bearer_auth(&inviter.token)
        .json(&json!({"chat_id": chat, "users_to_invite": uuids}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    cable.close().await;
    chat
}

// ---------------------------------------------------------------------------------------------
// Fake modem on a pseudo-terminal

/// A modem's side of a pty: reads commands (and message text after the `> ` prompt), records
/// them, and answers as `script` says. Echo is on until `ATE0`, as on a real modem.
struct FakeModem {
    path: String,
    heard: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    _slave: File,
}

type Script = Box<dyn FnMut(&str) -> String + Send>;

impl FakeModem {
    fn start(mut script: Script) -> FakeModem {
        let (mut master, slave, path) = open_pty();
        let heard = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (heard, stop) = (heard.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut echo = true;
                let mut text_mode = false;
                let mut line = Vec::new();
                let mut byte = [0u8; 1];
                while !stop.load(Ordering::Relaxed) {
                    if !readable(&master, 50) {
                        continue;
                    }
                    match master.read(&mut byte) {
                        Ok(1) => {}
                        _ => break,
                    }
                    let b = byte[0];
                    let heard_now = if text_mode {
                        match b {
                            0x1a => {
                                text_mode = false;
                                Some(format!("TEXT:{}", String::from_utf8_lossy(&line)))
                            }
                            0x1b => {
                                text_mode = false;
                                line.clear();
                                heard.lock().unwrap().push("<ESC>".into());
                                None
                            }
                            _ => {
                                line.push(b);
                                None
                            }
                        }
                    } else {
                        match b {
                            b'\r' => Some(String::from_utf8_lossy(&line).into_owned()),
                            b'\n' => None,
                            0x1b => {
                                heard.lock().unwrap().push("<ESC>".into());
                                None
                            }
                            _ => {
                                line.push(b);
                                None
                            }
                        }
                    };
                    let Some(input) = heard_now else { continue };
                    line.clear();
                    heard.lock().unwrap().push(input.clone());
                    let mut answer = String::new();
                    if echo && !input.starts_with("TEXT:") {
                        answer.push_str(&input);
                        answer.push('\r');
                    }
                    if input == "ATE0" {
                        echo = false;
                    }
                    answer.push_str(&script(&input));
                    text_mode = answer.ends_with("> ");
                    if master.write_all(answer.as_bytes()).is_err() {
                        break;
                    }
                }
            })
        };
        FakeModem {
            path,
            heard,
            stop,
            thread: Some(thread),
            _slave: slave,
        }
    }

    fn heard(&self) -> Vec<String> {
        self.heard.lock().unwrap().clone()
    }

    async fn wait_heard(&self, count: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let heard = self.heard();
            if heard.len() >= count {
                return heard;
            }
            assert!(Instant::now() < deadline, "the modem heard only {heard:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for FakeModem {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().ok();
        }
    }
}

/// A raw-mode pty; the slave end stays open here so the master never reads EIO between opens.
/// Both ends are close-on-exec from birth: a server spawned by a parallel test must not inherit
/// them (an inherited master would keep an "unplugged" modem alive).
fn open_pty() -> (File, File, String) {
    // SAFETY: plain libc pty calls on fds we own; buffers are sized and NUL-terminated.
    unsafe {
        let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        assert!(
            master >= 0,
            "posix_openpt: {}",
            std::io::Error::last_os_error()
        );
        assert_eq!(libc::grantpt(master), 0);
        assert_eq!(libc::unlockpt(master), 0);
        let mut name = [0 as libc::c_char; 256];
        assert_eq!(libc::ptsname_r(master, name.as_mut_ptr(), name.len()), 0);
        let slave = libc::open(
            name.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        );
        assert!(slave >= 0, "open pts: {}", std::io::Error::last_os_error());
        let mut t: libc::termios = std::mem::zeroed();
        assert_eq!(libc::tcgetattr(slave, &mut t), 0);
        libc::cfmakeraw(&mut t);
        assert_eq!(libc::tcsetattr(slave, libc::TCSANOW, &t), 0);
        let path = CStr::from_ptr(name.as_ptr()).to_string_lossy().into_owned();
        (File::from_raw_fd(master), File::from_raw_fd(slave), path)
    }
}

fn readable(file: &File, timeout_ms: i32) -> bool {
    let mut fds = libc::pollfd {
        fd: file.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut fds, 1, timeout_ms) > 0 }
}

/// A well-behaved modem; with `pin`, the SIM is locked until that PIN is entered.
fn good_modem(pin: Option<&'static str>) -> Script {
    let mut unlocked = pin.is_none();
    let mut reference = 0;
    Box::new(move |input: &str| {
        let ok = "\r\nOK\r\n".to_string();
        match input {
            "AT" | "ATE0" | "AT+CMGF=1" => ok,
            "AT+CPIN?" if unlocked => "\r\n+CPIN: READY\r\n\r\nOK\r\n".into(),
            "AT+CPIN?" => "\r\n+CPIN: SIM PIN\r\n\r\nOK\r\n".into(),
            s if s.starts_with("AT+CPIN=") => {
                if Some(&s[9..s.len() - 1]) == pin {
                    unlocked = true;
                    ok
                } else {
                    "\r\n+CME ERROR: 16\r\n".into()
                }
            }
            s if s.starts_with("AT+CSCS=") || s.starts_with("AT+CSMP=") => ok,
            s if s.starts_with("AT+CMGS=") && unlocked => "\r\n> ".into(),
            s if s.starts_with("TEXT:") => {
                reference += 1;
                // A URC in between, as real modems send them whenever they like.
                format!("\r\n+CMTI: \"SM\",3\r\n\r\n+CMGS: {reference}\r\n\r\nOK\r\n")
            }
            _ => "\r\nERROR\r\n".into(),
        }
    })
}

fn modem_env(device: &str, timeout_seconds: &'static str) -> Vec<(String, String)> {
    vec![
        ("HANGIN_OTP__DRIVER".into(), "modem".into()),
        ("HANGIN_OTP__MODEM__DEVICE".into(), device.into()),
        (
            "HANGIN_OTP__MODEM__TIMEOUT_SECONDS".into(),
            timeout_seconds.into(),
        ),
    ]
}

fn as_refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// The 6-digit code inside a delivered text.
fn code_in(text: &str) -> String {
    let digits: Vec<&str> = text
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| s.len() == 6)
        .collect();
    assert_eq!(digits.len(), 1, "one code in {text:?}");
    digits[0].to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn modem_login_speaks_the_exact_at_dialogue_with_pin_unlock() {
    let modem = FakeModem::start(good_modem(Some("4711")));
    let mut env = modem_env(&modem.path, "5");
    env.push(("HANGIN_OTP__MODEM__PIN".into(), "4711".into()));
    let server = Server::start(&as_refs(&env));
    wait_for_log(&server, "ready to send SMS", Duration::from_secs(10)).await;

    let number = fresh_number();
    assert_eq!(server.request_code(&number).await.status(), 204);
    let heard = modem.wait_heard(7).await;
    let text = heard[6]
        .strip_prefix("TEXT:")
        .expect("message text")
        .to_string();
    let code = code_in(&text);
    assert_eq!(
        heard,
        vec![
            "AT".to_string(),
            "ATE0".into(),
            "AT+CPIN?".into(),
            "AT+CPIN=\"4711\"".into(),
            "AT+CMGF=1".into(),
            format!("AT+CMGS=\"+1{number}\""),
            format!("TEXT:Your Hangin code is {code}"),
        ]
    );
    log_in(&server, &number, &code).await;

    // The modem stays set up: the next login is only the message.
    let second = fresh_number();
    assert_eq!(server.request_code(&second).await.status(), 204);
    let heard = modem.wait_heard(9).await;
    assert_eq!(heard[7], format!("AT+CMGS=\"+1{second}\""));
    let code = code_in(heard[8].strip_prefix("TEXT:").unwrap());
    log_in(&server, &second, &code).await;
    assert!(
        !server.log_text().contains("4711"),
        "the PIN must not reach the log"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_logins_go_through_the_modem_one_at_a_time() {
    let mut good = good_modem(None);
    let modem = FakeModem::start(Box::new(move |input: &str| {
        if input.starts_with("TEXT:") {
            // A slow network: an interleaved AT+CMGS would arrive right now.
            std::thread::sleep(Duration::from_millis(150));
        }
        good(input)
    }));
    let server = Server::start(&as_refs(&modem_env(&modem.path, "5")));
    wait_for_log(&server, "ready to send SMS", Duration::from_secs(10)).await;
    let numbers: Vec<String> = (0..3).map(|_| fresh_number()).collect();
    let requests = numbers.iter().map(|n| server.request_code(n));
    for r in futures_util::future::join_all(requests).await {
        assert_eq!(r.status(), 204);
    }
    let heard = modem.wait_heard(4 + 6).await;
    let mut sent_to = Vec::new();
    for pair in heard[4..].chunks(2) {
        let to = pair[0]
            .strip_prefix("AT+CMGS=\"+1")
            .and_then(|s| s.strip_suffix('"'))
            .unwrap_or_else(|| panic!("interleaved dialogue: {heard:?}"));
        assert!(
            pair[1].starts_with("TEXT:"),
            "interleaved dialogue: {heard:?}"
        );
        sent_to.push(to.to_string());
    }
    sent_to.sort();
    let mut want = numbers.clone();
    want.sort();
    assert_eq!(sent_to, want);
}

#[tokio::test(flavor = "multi_thread")]
async fn modem_cms_error_answers_502_and_the_next_request_succeeds() {
    let mut failed_once = false;
    let mut good = good_modem(None);
    let modem = FakeModem::start(Box::new(move |input: &str| {
        if input.starts_with("TEXT:") && !failed_once {
            failed_once = true;
            return "\r\n+CMS ERROR: 500\r\n".into();
        }
        good(input)
    }));
    let mut env = modem_env(&modem.path, "5");
    // A failed delivery must not hold the number back for the resend interval.
    env.push(("HANGIN_AUTH__OTP_RESEND_SECONDS".into(), "30".into()));
    let server = Server::start(&as_refs(&env));
    wait_for_log(&server, "ready to send SMS", Duration::from_secs(10)).await;

    let number = fresh_number();
    assert_delivery_failed(server.request_code(&number).await).await;
    // The log line is read from the server's stderr by another thread: wait for it.
    wait_for_log(&server, "+CMS ERROR: 500", Duration::from_secs(10)).await;
    let before = modem.heard().len();

    assert_eq!(server.request_code(&number).await.status(), 204);
    let heard = modem.wait_heard(before + 8).await;
    let code = code_in(heard[before + 7].strip_prefix("TEXT:").unwrap());
    // After a refusal the modem is set up again, back in the GSM character set.
    assert_eq!(
        heard[before..].to_vec(),
        vec![
            "AT".to_string(),
            "ATE0".into(),
            "AT+CPIN?".into(),
            "AT+CMGF=1".into(),
            "AT+CSCS=\"GSM\"".into(),
            "AT+CSMP=17,167,0,0".into(),
            format!("AT+CMGS=\"+1{number}\""),
            format!("TEXT:Your Hangin code is {code}"),
        ]
    );
    log_in(&server, &number, &code).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn silent_modem_times_out_within_the_configured_time() {
    let modem = FakeModem::start(Box::new(|_: &str| String::new()));
    let server = Server::start(&as_refs(&modem_env(&modem.path, "1")));
    wait_for_log(&server, "is not ready", Duration::from_secs(10)).await;

    let started = Instant::now();
    let r = server.request_code(&fresh_number()).await;
    let took = started.elapsed();
    assert_delivery_failed(r).await;
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "took {took:?} with a 1 s timeout"
    );
    assert!(server.log_text().contains("did not answer"));
}

#[tokio::test(flavor = "multi_thread")]
async fn modem_sends_non_gsm_text_as_ucs2() {
    let modem = FakeModem::start(good_modem(None));
    let mut env = modem_env(&modem.path, "5");
    env.push((
        "HANGIN_OTP__MESSAGE".into(),
        "Dein Code für Hangin: {code} 🎉".into(),
    ));
    let server = Server::start(&as_refs(&env));
    wait_for_log(&server, "ready to send SMS", Duration::from_secs(10)).await;

    let number = fresh_number();
    assert_eq!(server.request_code(&number).await.status(), 204);
    let heard = modem.wait_heard(10).await;
    let hex = |s: &str| -> String { s.encode_utf16().map(|u| format!("{u:04X}")).collect() };
    let unhex = |s: &str| -> String {
        let units: Vec<u16> = (0..s.len())
            .step_by(4)
            .map(|i| u16::from_str_radix(&s[i..i + 4], 16).unwrap())
            .collect();
        String::from_utf16(&units).unwrap()
    };
    assert_eq!(heard[4], "AT+CSCS=\"UCS2\"");
    assert_eq!(heard[5], "AT+CSMP=17,167,0,8");
    assert_eq!(
        heard[6],
        format!("AT+CMGS=\"{}\"", hex(&format!("+1{number}")))
    );
    let text = unhex(heard[7].strip_prefix("TEXT:").unwrap());
    let code = code_in(&text);
    assert_eq!(text, format!("Dein Code für Hangin: {code} 🎉"));
    assert_eq!(
        heard[8..].to_vec(),
        vec!["AT+CSCS=\"GSM\"", "AT+CSMP=17,167,0,0"]
    );
    log_in(&server, &number, &code).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn modem_port_is_reopened_after_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("modem");
    let first = FakeModem::start(good_modem(None));
    std::os::unix::fs::symlink(&first.path, &link).unwrap();
    let server = Server::start(&as_refs(&modem_env(link.to_str().unwrap(), "5")));
    wait_for_log(&server, "ready to send SMS", Duration::from_secs(10)).await;
    let number = fresh_number();
    assert_eq!(server.request_code(&number).await.status(), 204);
    first.wait_heard(6).await;

    // Unplug: the pty goes away; the "re-enumerated" modem is a new pty at the same path.
    drop(first);
    let second = FakeModem::start(good_modem(None));
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink(&second.path, &link).unwrap();

    let number = fresh_number();
    assert_eq!(server.request_code(&number).await.status(), 204);
    let heard = second.wait_heard(6).await;
    assert_eq!(
        heard[..4].to_vec(),
        vec!["AT", "ATE0", "AT+CPIN?", "AT+CMGF=1"]
    );
    let code = code_in(heard.last().unwrap().strip_prefix("TEXT:").unwrap());
    log_in(&server, &number, &code).await;
    assert!(
        server.log_text().contains("reopening"),
        "{}",
        server.log_text()
    );
}

#[test]
fn missing_modem_device_stops_the_server_at_start() {
    assert_config_error(
        &[
            ("HANGIN_OTP__DRIVER", "modem"),
            ("HANGIN_OTP__MODEM__DEVICE", "/dev/no-such-modem"),
        ],
        "/dev/no-such-modem",
    );
    // Checked when the configuration loads, before the port is touched.
    assert_config_error(
        &[
            ("HANGIN_OTP__DRIVER", "modem"),
            ("HANGIN_OTP__MODEM__DEVICE", ""),
        ],
        "otp.modem.device",
    );
    assert_config_error(
        &[
            ("HANGIN_OTP__DRIVER", "modem"),
            ("HANGIN_OTP__MODEM__DEVICE", "/dev/no-such-modem"),
            ("HANGIN_OTP__MODEM__PIN", "12 34"),
        ],
        "otp.modem.pin",
    );
}

// ---------------------------------------------------------------------------------------------
// Webhook receiver

const SECRET_KEY: &[u8] = b"a-webhook-key-for-the-tests-0123";

fn secret() -> String {
    format!("whsec_{}", B64.encode(SECRET_KEY))
}

#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    /// The Standard Webhooks check, written out by hand.
    fn assert_signed(&self) {
        let (id, ts) = (self.header("webhook-id"), self.header("webhook-timestamp"));
        assert!(!id.is_empty(), "webhook-id");
        let ts_secs: i64 = ts.parse().expect("webhook-timestamp is Unix seconds");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!(
            (now - ts_secs).abs() < 60,
            "timestamp {ts_secs} vs now {now}"
        );
        let mut mac = Hmac::<Sha256>::new_from_slice(SECRET_KEY).unwrap();
        mac.update(format!("{id}.{ts}.").as_bytes());
        mac.update(&self.body);
        let want = format!("v1,{}", B64.encode(mac.finalize().into_bytes()));
        let got = self.header("webhook-signature");
        assert!(
            got.split(' ').any(|s| s == want),
            "signature {got:?}, expected {want:?}"
        );
    }
}

/// A local HTTP server recording every POST and answering with scripted statuses (204 after).
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    async fn start(statuses: &[u16]) -> Receiver {
        let got = Arc::new(Mutex::new(Vec::new()));
        let statuses = Arc::new(Mutex::new(
            statuses.iter().copied().collect::<VecDeque<_>>(),
        ));
        let app = {
            let (got, statuses) = (got.clone(), statuses.clone());
            axum::Router::new().fallback(
                move |uri: axum::http::Uri, headers: axum::http::HeaderMap, body: bytes::Bytes| {
                    let (got, statuses) = (got.clone(), statuses.clone());
                    async move {
                        got.lock().unwrap().push(Received {
                            path: uri.path().to_string(),
                            headers,
                            body: body.to_vec(),
                        });
                        let status = statuses.lock().unwrap().pop_front().unwrap_or(204);
                        axum::http::StatusCode::from_u16(status).unwrap()
                    }
                },
            )
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { url, got }
    }

    fn got(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    async fn wait_for(&self, count: usize) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = self.got();
            if got.len() >= count {
                return got;
            }
            assert!(Instant::now() < deadline, "received only {got:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn webhook_otp_is_signed_retried_after_500s_and_logs_in() {
    let receiver = Receiver::start(&[500, 500]).await;
    let url = format!("{}/sms", receiver.url);
    let secret = secret();
    let server = Server::start(&[
        ("HANGIN_OTP__DRIVER", "webhook"),
        ("HANGIN_OTP__WEBHOOK__URL", &url),
        ("HANGIN_OTP__WEBHOOK__SECRET", &secret),
        (
            "HANGIN_OTP__WEBHOOK__HEADERS__AUTHORIZATION",
            "Bearer gateway-token",
        ),
    ]);
    let number = fresh_number();
    let started = Instant::now();
    assert_eq!(server.request_code(&number).await.status(), 204);
    let took = started.elapsed();
    let got = receiver.got();
    assert_eq!(got.len(), 3, "two 500s, then success");
    // Backoff: 0.5 s, then 1 s.
    assert!(
        took >= Duration::from_millis(1400),
        "retried after {took:?}"
    );
    for r in &got {
        assert_eq!(r.path, "/sms");
        r.assert_signed();
        assert_eq!(r.header("authorization"), "Bearer gateway-token");
        assert_eq!(r.header("content-type"), "application/json");
        assert_eq!(r.header("webhook-id"), got[0].header("webhook-id"));
        assert_eq!(r.body, got[0].body, "the same event on every try");
    }
    let doc = got[2].json();
    let code = doc["code"].as_str().unwrap().to_string();
    assert_eq!(
        doc,
        json!({
            "type": "otp",
            "number": number,
            "e164": format!("+1{number}"),
            "code": code,
            "message": format!("Your Hangin code is {code}"),
            "expires_at": doc["expires_at"],
        })
    );
    let expires = doc["expires_at"].as_str().unwrap();
    assert!(
        expires.ends_with('Z') && expires.len() == 24,
        "ISO-8601 UTC: {expires}"
    );
    log_in(&server, &number, &code).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn webhook_otp_failures_answer_502() {
    let receiver = Receiver::start(&[500, 500, 500, 401]).await;
    let secret = secret();
    let server = Server::start(&[
        ("HANGIN_OTP__DRIVER", "webhook"),
        ("HANGIN_OTP__WEBHOOK__URL", &receiver.url),
        ("HANGIN_OTP__WEBHOOK__SECRET", &secret),
    ]);
    assert_delivery_failed(server.request_code(&fresh_number()).await).await;
    assert_eq!(receiver.got().len(), 3, "three tries");
    // A 401 will not get better by retrying: one try.
    assert_delivery_failed(server.request_code(&fresh_number()).await).await;
    assert_eq!(receiver.got().len(), 4);
    assert!(server.log_text().contains("401"), "{}", server.log_text());
    // A healthy receiver again: logins work.
    let number = fresh_number();
    assert_eq!(server.request_code(&number).await.status(), 204);
    let code = receiver.got()[4].json()["code"]
        .as_str()
        .unwrap()
        .to_string();
    log_in(&server, &number, &code).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn otp_send_command_reports_the_webhook_outcome() {
    let receiver = Receiver::start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().display().to_string();
    let (url, secret) = (receiver.url.clone(), secret());
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        common::run_cli(
            &["otp", "send", "(555) 000-1234", "--data-dir", &data],
            &[
                ("HANGIN_OTP__DRIVER", "webhook"),
                ("HANGIN_OTP__WEBHOOK__URL", &url),
                ("HANGIN_OTP__WEBHOOK__SECRET", &secret),
            ],
        )
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("5550001234"), "{out}");
    let got = receiver.got();
    assert_eq!(got.len(), 1);
    got[0].assert_signed();
    assert_eq!(got[0].json()["e164"], "+15550001234");
}

#[tokio::test(flavor = "multi_thread")]
async fn webhook_push_is_signed_with_the_documented_body() {
    let receiver = Receiver::start(&[]).await;
    let secret = secret();
    let server = Server::start(&[
        ("HANGIN_PUSH__DRIVER", "webhook"),
        ("HANGIN_PUSH__WEBHOOK__URL", &receiver.url),
        ("HANGIN_PUSH__WEBHOOK__SECRET", &secret),
    ]);
    let ann = server.sign_up("Ann", "Lee").await;
    let bob = server.sign_up("Bob", "Ray").await;
    server.befriend(&ann, &bob).await;
    register_device(&server, &bob, "0a1b2c").await;
    let chat = invite(&server, &ann, &[&bob]).await;
    let got = receiver.wait_for(1).await;
    got[0].assert_signed();
    assert_eq!(
        got[0].json(),
        json!({
            "type": "push",
            "user_uuid": bob.uuid,
            "device_token": "0a1b2c",
            "title": "Live chat invite! 🎉",
            "subtitle": null,
            "body": "Ann Lee wants to chat with you!\nTap to chat",
            "data": {"chat": chat.to_string()},
        })
    );
}

#[test]
fn misconfigured_webhooks_stop_the_server_at_start() {
    assert_config_error(&[("HANGIN_OTP__DRIVER", "webhook")], "otp.webhook.url");
    assert_config_error(
        &[
            ("HANGIN_OTP__DRIVER", "webhook"),
            ("HANGIN_OTP__WEBHOOK__URL", ""),
            ("HANGIN_OTP__WEBHOOK__SECRET", "s3cret"),
        ],
        "otp.webhook.url",
    );
    // A malformed value fails whichever driver is chosen.
    assert_config_error(
        &[("HANGIN_PUSH__WEBHOOK__TIMEOUT_SECONDS", "0")],
        "push.webhook.timeout_seconds",
    );
    assert_config_error(
        &[
            ("HANGIN_OTP__DRIVER", "webhook"),
            ("HANGIN_OTP__WEBHOOK__URL", "http://127.0.0.1:9/"),
            ("HANGIN_OTP__WEBHOOK__SECRET", "whsec_!!not base64!!"),
        ],
        "otp.webhook.secret",
    );
    assert_config_error(
        &[
            ("HANGIN_PUSH__DRIVER", "webhook"),
            ("HANGIN_PUSH__WEBHOOK__URL", "ftp://example/"),
            ("HANGIN_PUSH__WEBHOOK__SECRET", "s3cret"),
        ],
        "push.webhook.url",
    );
}

/// A config that writes every driver setting `""`, as files have written "not set" all along,
/// still starts and lets people log in through the `log` driver.
#[tokio::test(flavor = "multi_thread")]
async fn empty_driver_settings_still_start_the_server() {
    let mut env = vec![("HANGIN_OTP__EXEC__ARGV", "[]")];
    for key in [
        "HANGIN_OTP__WEBHOOK__URL",
        "HANGIN_OTP__WEBHOOK__SECRET",
        "HANGIN_OTP__MODEM__DEVICE",
        "HANGIN_OTP__MODEM__PIN",
        "HANGIN_PUSH__WEBHOOK__URL",
        "HANGIN_PUSH__WEBHOOK__SECRET",
        "HANGIN_PUSH__APNS__KEY_PATH",
        "HANGIN_PUSH__APNS__KEY_ID",
        "HANGIN_PUSH__APNS__TEAM_ID",
        "HANGIN_PUSH__APNS__TOPIC",
        "HANGIN_PUSH__APNS__HOST",
        "HANGIN_PUSH__APNS__CA_FILE",
    ] {
        env.push((key, ""));
    }
    let server = Server::start(&env);
    // A code through the `log` driver and a login with it.
    server.sign_up("Ann", "Lee").await;
}

// ---------------------------------------------------------------------------------------------
// exec

#[tokio::test(flavor = "multi_thread")]
async fn exec_runs_the_argv_template_without_a_shell() {
    let out = tempfile::tempdir().unwrap();
    // `touch` creates a file named after the filled-in arguments; a shell would have run $(…).
    let target = format!("{}/{{e164}} {{message}}", out.path().display());
    let argv = format!("[\"touch\", \"{target}\"]");
    let server = Server::start(&[
        ("HANGIN_OTP__DRIVER", "exec"),
        ("HANGIN_OTP__EXEC__ARGV", &argv),
        ("HANGIN_OTP__MESSAGE", "code {code}; $(touch pwned) `id`"),
    ]);
    let number = fresh_number();
    assert_eq!(server.request_code(&number).await.status(), 204);
    let names: Vec<String> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    let code = code_in(&names[0]);
    assert_eq!(
        names[0],
        format!("+1{number} code {code}; $(touch pwned) `id`")
    );
    log_in(&server, &number, &code).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_failure_and_timeout_answer_502_with_stderr_in_the_log() {
    let server = Server::start(&[
        ("HANGIN_OTP__DRIVER", "exec"),
        (
            "HANGIN_OTP__EXEC__ARGV",
            r#"["sh", "-c", "echo \"gateway offline for $1\" >&2; exit 3", "sh", "{number}"]"#,
        ),
    ]);
    let number = fresh_number();
    assert_delivery_failed(server.request_code(&number).await).await;
    wait_for_log(
        &server,
        &format!("gateway offline for {number}"),
        Duration::from_secs(5),
    )
    .await;

    let server = Server::start(&[
        ("HANGIN_OTP__DRIVER", "exec"),
        ("HANGIN_OTP__EXEC__ARGV", r#"["sleep", "30"]"#),
        ("HANGIN_OTP__EXEC__TIMEOUT_SECONDS", "1"),
    ]);
    let started = Instant::now();
    assert_delivery_failed(server.request_code(&fresh_number()).await).await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "took {took:?} with a 1 s timeout"
    );
}

#[test]
fn misconfigured_exec_stops_the_server_at_start() {
    assert_config_error(&[("HANGIN_OTP__DRIVER", "exec")], "otp.exec.argv");
    assert_config_error(
        &[
            ("HANGIN_OTP__DRIVER", "exec"),
            (
                "HANGIN_OTP__EXEC__ARGV",
                r#"["no-such-sms-tool", "{e164}"]"#,
            ),
        ],
        "no-such-sms-tool",
    );
}

// ---------------------------------------------------------------------------------------------
// APNs stand-in: HTTP/2 over TLS with a test CA

struct FakeApns {
    host: String,
    ca_file: std::path::PathBuf,
    key_file: std::path::PathBuf,
    public_key: Vec<u8>,
    got: Arc<Mutex<Vec<ApnsRequest>>>,
    connections: Arc<AtomicUsize>,
    _dir: tempfile::TempDir,
}

#[derive(Debug, Clone)]
struct ApnsRequest {
    version: axum::http::Version,
    method: String,
    path: String,
    headers: axum::http::HeaderMap,
    body: Value,
}

/// Tokens the stand-in answers with 410 Unregistered / 400 BadDeviceToken; others get 200.
const GONE_TOKEN: &str = "b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2";
const BAD_TOKEN: &str = "c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3";
const GOOD_TOKEN: &str = "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1";

impl FakeApns {
    async fn start() -> FakeApns {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "hangin test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&leaf_key, &ca, &ca_key)
            .unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.pem()).unwrap();

        // The provider key, as Apple hands it out: a PKCS#8 P-256 key in a .p8 PEM file.
        let apns_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let key_file = dir.path().join("AuthKey_KEYID12345.p8");
        std::fs::write(&key_file, apns_key.serialize_pem()).unwrap();

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
            )
            .unwrap();
        tls.alpn_protocols = vec![b"h2".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let got = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        {
            let (got, connections) = (got.clone(), connections.clone());
            tokio::spawn(async move {
                loop {
                    let (tcp, _) = listener.accept().await.unwrap();
                    connections.fetch_add(1, Ordering::SeqCst);
                    let (acceptor, got) = (acceptor.clone(), got.clone());
                    tokio::spawn(async move {
                        let Ok(tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let service = hyper::service::service_fn(move |req| {
                            let got = got.clone();
                            async move { Ok::<_, std::convert::Infallible>(apns_answer(req, got).await) }
                        });
                        let _ = hyper::server::conn::http2::Builder::new(
                            hyper_util::rt::TokioExecutor::new(),
                        )
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await;
                    });
                }
            });
        }
        FakeApns {
            host,
            ca_file,
            key_file,
            public_key: apns_key.public_key_raw().to_vec(),
            got,
            connections,
            _dir: dir,
        }
    }

    fn env(&self) -> Vec<(String, String)> {
        [
            ("HANGIN_PUSH__DRIVER", "apns".to_string()),
            (
                "HANGIN_PUSH__APNS__KEY_PATH",
                self.key_file.display().to_string(),
            ),
            ("HANGIN_PUSH__APNS__KEY_ID", "KEYID12345".into()),
            ("HANGIN_PUSH__APNS__TEAM_ID", "TEAM123456".into()),
            ("HANGIN_PUSH__APNS__TOPIC", "app.hangin.test".into()),
            ("HANGIN_PUSH__APNS__ENVIRONMENT", "sandbox".into()),
            ("HANGIN_PUSH__APNS__HOST", self.host.clone()),
            (
                "HANGIN_PUSH__APNS__CA_FILE",
                self.ca_file.display().to_string(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    async fn wait_for(&self, count: usize) -> Vec<ApnsRequest> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = self.got.lock().unwrap().clone();
            if got.len() >= count {
                return got;
            }
            assert!(Instant::now() < deadline, "APNs got only {got:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Check the provider token: ES256 over `header.claims`, verified with the public key.
    fn verify_jwt(&self, authorization: &str) -> (Value, Value) {
        let jwt = authorization
            .strip_prefix("bearer ")
            .expect("authorization: bearer <jwt>");
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3, "{jwt}");
        let signature = B64URL.decode(parts[2]).unwrap();
        ring::signature::UnparsedPublicKey::new(
            &ring::signature::ECDSA_P256_SHA256_FIXED,
            &self.public_key,
        )
        .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
        .expect("the JWT's ES256 signature verifies with the key's public half");
        let decode =
            |p: &str| -> Value { serde_json::from_slice(&B64URL.decode(p).unwrap()).unwrap() };
        (decode(parts[0]), decode(parts[1]))
    }
}

async fn apns_answer(
    req: hyper::Request<hyper::body::Incoming>,
    got: Arc<Mutex<Vec<ApnsRequest>>>,
) -> hyper::Response<http_body_util::Full<bytes::Bytes>> {
    use http_body_util::BodyExt;
    let (parts, body) = req.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    let path = parts.uri.path().to_string();
    got.lock().unwrap().push(ApnsRequest {
        version: parts.version,
        method: parts.method.to_string(),
        path: path.clone(),
        headers: parts.headers,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    });
    let (status, reason) = if path.ends_with(GONE_TOKEN) {
        (410, Some("Unregistered"))
    } else if path.ends_with(BAD_TOKEN) {
        (400, Some("BadDeviceToken"))
    } else {
        (200, None)
    };
    let body = reason
        .map(|r| json!({ "reason": r }).to_string())
        .unwrap_or_default();
    hyper::Response::builder()
        .status(status)
        .header("apns-id", "5e5e5e5e-0000-4000-8000-000000000000")
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn apns_push_over_http2_with_an_es256_provider_token() {
    let apns = FakeApns::start().await;
    let env = apns.env();
    let server = Server::start(&as_refs(&env));
    let ann = server.sign_up("Ann", "Lee").await;
    let bob = server.sign_up("Bob", "Ray").await;
    let cat = server.sign_up("Cat", "Day").await;
    let dan = server.sign_up("Dan", "Fox").await;
    for other in [&bob, &cat, &dan] {
        server.befriend(&ann, other).await;
    }
    register_device(&server, &bob, GOOD_TOKEN).await;
    register_device(&server, &cat, GONE_TOKEN).await;
    register_device(&server, &dan, BAD_TOKEN).await;

    let chat = invite(&server, &ann, &[&bob, &cat, &dan]).await;
    let got = apns.wait_for(3).await;
    let to_bob = got
        .iter()
        .find(|r| r.path == format!("/3/device/{GOOD_TOKEN}"))
        .expect("a push to Bob's device");
    assert_eq!(to_bob.version, axum::http::Version::HTTP_2);
    assert_eq!(to_bob.method, "POST");
    let header = |name: &str| to_bob.headers.get(name).unwrap().to_str().unwrap();
    assert_eq!(header("apns-topic"), "app.hangin.test");
    assert_eq!(header("apns-push-type"), "alert");
    assert_eq!(header("apns-priority"), "10");
    let (jwt_header, claims) = apns.verify_jwt(header("authorization"));
    assert_eq!(jwt_header, json!({"alg": "ES256", "kid": "KEYID12345"}));
    assert_eq!(claims["iss"], "TEAM123456");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (claims["iat"].as_i64().unwrap() - now).abs() < 60,
        "{claims}"
    );
    assert_eq!(
        to_bob.body,
        json!({
            "aps": {
                "alert": {"title": "Live chat invite! 🎉", "body": "Ann Lee wants to chat with you!\nTap to chat"},
                "sound": "default",
            },
            "chat": chat.to_string(),
        })
    );

    // 410 Unregistered and 400 BadDeviceToken clear those tokens; Bob's stays.
    let deadline = Instant::now() + Duration::from_secs(5);
    while stored_device_token(&server, &cat.uuid).is_some()
        || stored_device_token(&server, &dan.uuid).is_some()
    {
        assert!(
            Instant::now() < deadline,
            "dead device tokens were not cleared"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        stored_device_token(&server, &bob.uuid).as_deref(),
        Some(GOOD_TOKEN)
    );

    // The next push reuses the connection and the cached provider token.
    invite(&server, &ann, &[&bob]).await;
    let got = apns.wait_for(4).await;
    assert_eq!(
        got[3].headers["authorization"],
        to_bob.headers["authorization"]
    );
    assert_eq!(
        apns.connections.load(Ordering::SeqCst),
        1,
        "one HTTP/2 connection"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn misconfigured_apns_stops_the_server_at_start() {
    let apns = FakeApns::start().await;
    let with = |key: &str, value: &str| -> Vec<(String, String)> {
        let mut env = apns.env();
        env.retain(|(k, _)| k != key);
        env.push((key.to_string(), value.to_string()));
        env
    };
    let unreadable = with("HANGIN_PUSH__APNS__KEY_PATH", "/no/such/AuthKey.p8");
    assert_config_error(&as_refs(&unreadable), "/no/such/AuthKey.p8");
    let not_a_key = with(
        "HANGIN_PUSH__APNS__KEY_PATH",
        apns.ca_file.to_str().unwrap(),
    );
    assert_config_error(&as_refs(&not_a_key), "PRIVATE KEY");
    let no_team = with("HANGIN_PUSH__APNS__TEAM_ID", "");
    assert_config_error(&as_refs(&no_team), "push.apns.team_id");
    assert!(Path::new(&apns.key_file).exists());
}
