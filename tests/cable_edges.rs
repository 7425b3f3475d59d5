//! Issue 11, websocket hygiene: the closing handshake, protocol errors, oversized binary
//! frames, the subscription cap, a database fault during the upgrade and dead peers, each over
//! real TCP against the real server (docs/websocket.md). Malformed frames are written as raw
//! bytes after a hand-made handshake, because no websocket library sends them.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::{Cable, Server, CHATS};

/// How long the server may take to close TCP after the closing handshake completed.
const RELEASE: Duration = Duration::from_millis(500);

/// A websocket client that speaks raw frames.
struct RawWs {
    tcp: TcpStream,
    /// Bytes read but not parsed yet.
    buf: Vec<u8>,
}

/// A frame as a client sends it: `first` is FIN/RSV/opcode; masked unless `masked` is false.
fn frame(first: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut out = vec![first];
    let mask_bit = if masked { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n <= 0xffff => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason.as_bytes());
    p
}

impl RawWs {
    async fn connect(port: u16, token: &str) -> RawWs {
        let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let request = format!(
            "GET /cable?access_token={token} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
             Upgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Protocol: actioncable-v1-json\r\n\r\n"
        );
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut ws = RawWs {
            tcp,
            buf: Vec::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        let head = loop {
            if let Some(end) = ws.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&ws.buf[..end]).into_owned();
                ws.buf.drain(..end + 4);
                break head;
            }
            assert!(ws.fill(deadline).await > 0, "EOF during the handshake");
        };
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        ws
    }

    /// Connect and read the welcome frame.
    async fn open(port: u16, token: &str) -> RawWs {
        let mut ws = Self::connect(port, token).await;
        let (op, payload) = ws.read_frame().await.expect("welcome frame");
        assert_eq!((op, payload.as_slice()), (1, &br#"{"type":"welcome"}"#[..]));
        ws
    }

    /// Read more bytes; 0 on EOF. Panics on timeout or a reset.
    async fn fill(&mut self, deadline: Instant) -> usize {
        let mut chunk = [0u8; 4096];
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, self.tcp.read(&mut chunk)).await {
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                n
            }
            Ok(Err(e)) => panic!("read failed: {e}"),
            Err(_) => panic!("nothing arrived in time"),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.tcp.write_all(bytes).await.unwrap();
    }

    /// The next server frame (opcode, payload); `None` on EOF. Server frames are unmasked.
    async fn read_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        self.read_frame_by(Instant::now() + Duration::from_secs(5))
            .await
    }

    async fn read_frame_by(&mut self, deadline: Instant) -> Option<(u8, Vec<u8>)> {
        loop {
            if let Some((op, payload, used)) = parse_server_frame(&self.buf) {
                self.buf.drain(..used);
                return Some((op, payload));
            }
            if self.fill(deadline).await == 0 {
                return None;
            }
        }
    }

    /// Read frames (pings and other text frames aside) up to the server's Close; its code.
    /// Panics when no Close arrives within 5 s (pings keep coming from a server that never
    /// closes).
    async fn expect_close(&mut self) -> Option<u16> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match self.read_frame_by(deadline).await {
                Some((8, payload)) => {
                    return (payload.len() >= 2)
                        .then(|| u16::from_be_bytes([payload[0], payload[1]]))
                }
                Some((1, _)) => continue,
                Some(other) => panic!("unexpected frame {other:?} before the Close"),
                None => panic!("the server closed TCP without sending a Close frame"),
            }
        }
    }

    /// The server closes TCP within `within` (EOF); how long it took.
    async fn expect_released(&mut self, within: Duration) -> Duration {
        let started = Instant::now();
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout(within, self.tcp.read(&mut chunk)).await {
            Ok(Ok(0)) => started.elapsed(),
            Ok(Ok(n)) => panic!("{n} bytes after the Close: {:?}", &chunk[..n.min(64)]),
            // Reset: released as well (the kernel had unread input of ours).
            Ok(Err(_)) => started.elapsed(),
            Err(_) => panic!("the server still holds the socket after {within:?}"),
        }
    }
}

fn parse_server_frame(buf: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
    if buf.len() < 2 {
        return None;
    }
    assert_eq!(buf[1] & 0x80, 0, "server frames are unmasked");
    let (len, at) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
        127 if buf.len() >= 10 => (
            u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize,
            10,
        ),
        126 | 127 => return None,
        n => (n as usize, 2),
    };
    if buf.len() < at + len {
        return None;
    }
    Some((buf[0] & 0x0f, buf[at..at + len].to_vec(), at + len))
}

/// The client closes; the server answers with Close (RFC 6455 §5.5.1) echoing the code and
/// closes TCP at once instead of holding it until its next ping.
#[tokio::test]
async fn a_client_close_is_answered_with_close_and_the_socket_released() {
    let s = Server::start(&[]);
    let a = s.sign_up("Ann", "Able").await;
    let mut ws = RawWs::open(s.port, &a.token).await;
    ws.send(&frame(0x81, CHATS_SUBSCRIBE.as_bytes(), true))
        .await;
    // Wait for the confirmation, so the connection has a subscription to clean up.
    loop {
        let (op, payload) = ws.read_frame().await.expect("frames");
        if op == 1 && String::from_utf8_lossy(&payload).contains("confirm_subscription") {
            break;
        }
    }
    let started = Instant::now();
    ws.send(&frame(0x88, &close_payload(1000, "bye"), true))
        .await;
    assert_eq!(ws.expect_close().await, Some(1000));
    let released = ws.expect_released(RELEASE).await;
    eprintln!(
        "close answered and socket released {:?} after the client's Close",
        started.elapsed()
    );
    assert!(released <= RELEASE);

    // A Close carrying a reserved code (1005 must never be sent) is answered with 1002.
    let mut ws = RawWs::open(s.port, &a.token).await;
    ws.send(&frame(0x88, &close_payload(1005, ""), true)).await;
    assert_eq!(ws.expect_close().await, Some(1002));
    ws.expect_released(RELEASE).await;
}

const CHATS_SUBSCRIBE: &str =
    r#"{"command":"subscribe","identifier":"{\"channel\":\"ChatsChannel\"}"}"#;

/// Every protocol violation fails the connection with its RFC 6455 §7.4.1 code, and the
/// server closes TCP once the client answers the Close; the server serves on.
#[tokio::test]
async fn protocol_errors_fail_the_connection_with_their_code_and_release_it() {
    let s = Server::start(&[]);
    let a = s.sign_up("Ann", "Able").await;
    let cat = |parts: &[Vec<u8>]| parts.concat();
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "invalid UTF-8 in a text frame",
            frame(0x81, b"{\"a\":\"\xff\xfe\"}", true),
            1007,
        ),
        (
            "invalid UTF-8 across the fragments of a text message",
            cat(&[
                frame(0x01, b"{\"a\":\"\xc3", true),
                frame(0x80, b"(\"}", true),
            ]),
            1007,
        ),
        (
            "an unmasked frame",
            frame(0x81, CHATS_SUBSCRIBE.as_bytes(), false),
            1002,
        ),
        ("the RSV1 bit", frame(0xc1, b"{}", true), 1002),
        ("the RSV3 bit", frame(0x91, b"{}", true), 1002),
        ("reserved data opcode 0x3", frame(0x83, b"x", true), 1002),
        ("reserved control opcode 0xB", frame(0x8b, b"", true), 1002),
        ("a 200-byte ping", frame(0x89, &[b'p'; 200], true), 1002),
        ("a fragmented ping", frame(0x09, b"p", true), 1002),
        ("a stray continuation frame", frame(0x80, b"x", true), 1002),
        (
            "a new message inside a fragmented one",
            cat(&[frame(0x01, b"{", true), frame(0x81, b"{}", true)]),
            1002,
        ),
        ("a one-byte close payload", frame(0x88, &[3], true), 1002),
    ];
    for (what, bytes, code) in cases {
        let mut ws = RawWs::open(s.port, &a.token).await;
        ws.send(&bytes).await;
        assert_eq!(ws.expect_close().await, Some(code), "{what}");
        // A conforming client answers the Close; then the server closes TCP.
        ws.send(&frame(0x88, &close_payload(code, ""), true)).await;
        let took = ws.expect_released(RELEASE).await;
        eprintln!("{what}: close {code}, socket released after {took:?}");
    }
    // Nobody else noticed.
    let mut c = s.online(&a).await;
    c.assert_silent().await;
}

/// Binary frames mean nothing (like the original), but one above `[limits] frame_bytes` closes
/// with 1009 like an oversized text frame; a client that never answers our Close is cut off
/// after a second.
#[tokio::test]
async fn a_binary_frame_over_the_limit_closes_with_1009() {
    let s = Server::start(&[]);
    let a = s.sign_up("Ann", "Able").await;
    let mut ws = RawWs::open(s.port, &a.token).await;
    // A small one is ignored and the connection serves on.
    ws.send(&frame(0x82, b"\x00\x01", true)).await;
    ws.send(&frame(0x81, CHATS_SUBSCRIBE.as_bytes(), true))
        .await;
    loop {
        let (op, payload) = ws.read_frame().await.expect("frames");
        assert_eq!(op, 1, "only text frames");
        if String::from_utf8_lossy(&payload).contains("confirm_subscription") {
            break;
        }
    }
    ws.send(&frame(0x82, &vec![7u8; 100 * 1024], true)).await;
    assert_eq!(ws.expect_close().await, Some(1009));
    let took = ws.expect_released(Duration::from_secs(2)).await;
    eprintln!("oversized binary: 1009, unanswered Close, socket released after {took:?}");
}

/// Closing 1,000 websockets one after another: each Close is answered and its socket
/// released at once, so the whole run takes well under a minute (it took minutes when every
/// socket lingered until the next ping).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_1000_sockets_one_after_another_is_quick() {
    // 200 sockets at once from one address: past the default per-address cap of 128.
    let s = Server::start(&[("HANGIN_LIMITS__MAX_CONNECTIONS_PER_ADDRESS", "0")]);
    let a = s.sign_up("Ann", "Able").await;
    let mut closing = Duration::ZERO;
    let mut slowest = Duration::ZERO;
    // In batches, so neither side needs 1,000 descriptors at once.
    for _ in 0..5 {
        let mut open = Vec::with_capacity(200);
        for _ in 0..200 {
            open.push(RawWs::open(s.port, &a.token).await);
        }
        for mut ws in open {
            let started = Instant::now();
            ws.send(&frame(0x88, &close_payload(1000, ""), true)).await;
            assert_eq!(ws.expect_close().await, Some(1000));
            ws.expect_released(RELEASE).await;
            let took = started.elapsed();
            closing += took;
            slowest = slowest.max(took);
        }
    }
    eprintln!(
        "closed 1000 websockets one after another in {closing:?} (slowest {slowest:?}, mean {:?})",
        closing / 1000
    );
    assert!(closing < Duration::from_secs(20), "{closing:?}");
}

/// `[limits] subscriptions_per_connection` (default 100): the subscribe beyond is rejected,
/// the connection stays, and a freed slot can be used again.
#[tokio::test]
async fn subscriptions_per_connection_are_capped() {
    let s = Server::start(&[]);
    let a = s.sign_up("Ann", "Able").await;
    let mut c = s.cable(&a).await;
    // Distinct identifier strings are distinct subscriptions (ActionCable compares strings).
    let ident = |n: usize| format!(r#"{{"channel":"ChatsChannel","n":{n}}}"#);
    for n in 0..100 {
        assert_eq!(
            c.subscribe_result(&ident(n)).await,
            "confirm_subscription",
            "subscription {n}"
        );
    }
    assert_eq!(c.subscribe_result(&ident(100)).await, "reject_subscription");
    assert_eq!(c.subscribe_result(CHATS).await, "reject_subscription");
    c.command("unsubscribe", &ident(7), None).await;
    assert_eq!(c.subscribe_result(CHATS).await, "confirm_subscription");
    assert!(c.closed.is_none());
}

/// A database fault while the upgrade checks the token is not the client's fault: it is told
/// to reconnect (`server_restart`, `reconnect: true`), not `unauthorized` for good. Once the
/// fault is over the same token connects, and a bad token still gets `unauthorized`.
#[tokio::test]
async fn a_database_fault_during_the_upgrade_asks_the_client_to_reconnect() {
    let s = Server::start(&[]);
    let a = s.sign_up("Ann", "Able").await;
    // A real fault in the server's token lookup: the table it reads is gone (as after a botched
    // manual repair), so SQLite fails the query.
    let db = rusqlite::Connection::open(s.db_path()).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    db.execute_batch("ALTER TABLE access_tokens RENAME TO access_tokens_away")
        .unwrap();
    let url = format!("{}?access_token={}", s.ws_url(), a.token);
    let mut c = Cable::connect_raw(&url).await;
    assert_eq!(
        c.next_frame(|_| true).await,
        json!({"type": "disconnect", "reason": "server_restart", "reconnect": true})
    );
    assert_eq!(c.wait_closed().await, Some(1000));
    s.wait_log_lines("token lookup failed", 1).await;

    db.execute_batch("ALTER TABLE access_tokens_away RENAME TO access_tokens")
        .unwrap();
    let mut c = s.cable(&a).await;
    c.subscribe(CHATS).await;
    let mut bad = Cable::connect_raw(&format!("{}?access_token=nope", s.ws_url())).await;
    assert_eq!(
        bad.next_frame(|_| true).await,
        json!({"type": "disconnect", "reason": "unauthorized", "reconnect": false})
    );
}

const ROLE: &str = "HANGIN_TEST_DEAD_PEER_ROLE";
const CLIENT_URL: &str = "HANGIN_TEST_DEAD_PEER_URL";
const READY: &str = "dead-peer client ready";
const DEAD_PEER_TEST: &str = "a_peer_whose_network_vanishes_goes_offline_within_60_seconds";

/// A's phone loses its network (no FIN, no RST: the link just goes down) while B, A's contact,
/// watches: B is told `contact_offline` within 60 s, with the default configuration.
///
/// Runs in a network namespace of its own (`unshare -rn`, as the mDNS test does): the server
/// and B there, A's client in a second namespace behind a veth pair whose far end goes down.
#[test]
fn a_peer_whose_network_vanishes_goes_offline_within_60_seconds() {
    match std::env::var(ROLE).as_deref() {
        Ok("net") => dead_peer_in_namespace(),
        Ok("client") => dead_peer_client(),
        _ => {
            let out = Command::new("unshare")
                .arg("-rn")
                .arg(std::env::current_exe().unwrap())
                .args([DEAD_PEER_TEST, "--exact", "--nocapture", "--test-threads=1"])
                .env(ROLE, "net")
                .output()
                .expect("run unshare (util-linux)");
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            eprintln!("{text}");
            assert!(
                out.status.success(),
                "inside the namespace (needs unprivileged user namespaces or root):\n{text}"
            );
            assert!(text.contains("1 passed"), "{text}");
        }
    }
}

fn ip(args: &[&str]) {
    let ip = ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("iproute2's ip");
    run(Command::new(ip).args(args));
}

/// `ip` inside the network namespace of process `pid`.
fn ip_in(pid: u32, args: &[&str]) {
    run(Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-n", "ip"])
        .args(args));
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Kills the child when dropped (the test may fail halfway).
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn dead_peer_in_namespace() {
    ip(&["link", "set", "lo", "up"]);
    // A second namespace for A's phone, held open by a sleeping process.
    let holder = Reaped(
        Command::new("unshare")
            .args(["-n", "sleep", "600"])
            .spawn()
            .expect("unshare -n"),
    );
    let pid = holder.0.id();
    let own = std::fs::read_link("/proc/self/ns/net").unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::read_link(format!("/proc/{pid}/ns/net"))
        .ok()
        .as_ref()
        == Some(&own)
    {
        assert!(
            Instant::now() < deadline,
            "the holder never left our namespace"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    ip(&["link", "add", "hd0", "type", "veth", "peer", "name", "hd1"]);
    ip(&["link", "set", "hd1", "netns", &pid.to_string()]);
    ip(&["addr", "add", "10.79.0.1/24", "dev", "hd0"]);
    ip(&["link", "set", "hd0", "up"]);
    ip_in(pid, &["link", "set", "lo", "up"]);
    ip_in(pid, &["addr", "add", "10.79.0.2/24", "dev", "hd1"]);
    ip_in(pid, &["link", "set", "hd1", "up"]);

    let s = Server::start(&[
        ("HANGIN_LISTEN", "0.0.0.0:0"),
        ("HANGIN_ALLOW_INSECURE_LOG_DRIVER", "true"),
    ]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let a = s.sign_up("Ann", "Able").await;
        let b = s.sign_up("Bob", "Baker").await;
        s.befriend(&a, &b).await;
        let mut cb = s.online(&b).await;

        // A's phone, across the veth pair, online on ChatsChannel.
        let mut phone = Reaped(
            Command::new("nsenter")
                .args(["-t", &pid.to_string(), "-n"])
                .arg(std::env::current_exe().unwrap())
                .args([DEAD_PEER_TEST, "--exact", "--nocapture", "--test-threads=1"])
                .env(ROLE, "client")
                .env(
                    CLIENT_URL,
                    format!("ws://10.79.0.1:{}/cable?access_token={}", s.port, a.token),
                )
                .stdout(Stdio::piped())
                .spawn()
                .expect("nsenter"),
        );
        let stdout = phone.0.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains(READY) {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(20))
            .expect("A's client did not come online");
        assert_eq!(cb.event("contact_online").await, a.contact());

        // The phone's network vanishes: nothing more arrives from it, not even a FIN.
        ip_in(pid, &["link", "set", "hd1", "down"]);
        let vanished = Instant::now();
        let limit = Duration::from_secs(60);
        let offline = loop {
            let frames = cb.drain(Duration::from_secs(1)).await;
            if let Some(f) = frames
                .iter()
                .find(|f| f["message"].get("contact_offline").is_some())
            {
                break f["message"]["contact_offline"].clone();
            }
            assert!(frames.is_empty(), "unexpected frames for B: {frames:?}");
            assert!(
                vanished.elapsed() < limit,
                "A still online {limit:?} after its network vanished"
            );
        };
        let took = vanished.elapsed();
        assert_eq!(offline, Value::String(a.uuid.clone()));
        eprintln!("dead peer: B saw contact_offline {took:?} after A's link went down");
        assert!(took < limit, "{took:?}");
        drop(phone);
    });
    drop(holder);
}

/// A's phone: online on ChatsChannel, then it just sits there until it is killed.
fn dead_peer_client() {
    let url = std::env::var(CLIENT_URL).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut c = Cable::connect(&url).await;
        c.subscribe(CHATS).await;
        println!("{READY}");
        tokio::time::sleep(Duration::from_secs(300)).await;
    });
}
