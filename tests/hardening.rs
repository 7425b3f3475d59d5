//! Issue 12 (connections, proxies, URLs, storage faults, file modes, malformed requests) against
//! the real binary over real TCP. Storage faults are real: a tmpfs the test mounts and fills
//! (root only, as in CI; skipped with a note otherwise), a database file deleted under the server.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::{Cable, Server, User, BIN, CHATS};

/// Read until the server closes; (seconds it took, bytes). Gives up after `limit`.
async fn until_closed(stream: &mut TcpStream, limit: Duration) -> (f64, Vec<u8>, bool) {
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match tokio::time::timeout_at((started + limit).into(), stream.read(&mut buf)).await {
            Err(_) => break false,
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    };
    (started.elapsed().as_secs_f64(), got, closed)
}

async fn connect(s: &Server) -> TcpStream {
    TcpStream::connect(("127.0.0.1", s.port)).await.unwrap()
}

/// A connection the server has admitted and keeps open: one keep-alive request answered on
/// it proves it (instead of waiting a while and hoping the accept loop got there).
async fn connect_admitted(s: &Server) -> TcpStream {
    let mut c = connect(s).await;
    c.write_all(b"GET /up HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = c.read(&mut buf).await.unwrap();
    assert!(
        text(&buf[..n]).starts_with("HTTP/1.1 200"),
        "{}",
        text(&buf[..n])
    );
    c
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The JSON body of a raw HTTP/1.1 response.
fn body_json(raw: &[u8]) -> Value {
    let t = text(raw);
    let body = t.split("\r\n\r\n").nth(1).unwrap_or("");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {t}"))
}

#[tokio::test]
async fn silent_half_header_and_idle_keepalive_connections_are_closed() {
    let s = Server::start(&[
        ("HANGIN_LIMITS__HEADER_TIMEOUT_SECONDS", "1"),
        ("HANGIN_LIMITS__KEEPALIVE_TIMEOUT_SECONDS", "3"),
    ]);
    let limit = Duration::from_secs(8);

    let mut silent = connect(&s).await;
    let mut half = connect(&s).await;
    half.write_all(b"GET /up HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    let (silent_s, (half_s, _, half_closed)) =
        tokio::join!(async { until_closed(&mut silent, limit).await }, async {
            until_closed(&mut half, limit).await
        });
    let (silent_s, _, silent_closed) = silent_s;
    assert!(
        silent_closed,
        "a silent connection was still open after {limit:?}"
    );
    assert!(
        half_closed,
        "half a request head was still open after {limit:?}"
    );
    assert!(
        (0.8..2.5).contains(&silent_s),
        "silent closed after {silent_s} s"
    );
    assert!(
        (0.8..2.5).contains(&half_s),
        "half head closed after {half_s} s"
    );

    // Idle keep-alive: its own (longer) timeout, counted from the end of the response.
    let mut idle = connect(&s).await;
    idle.write_all(b"GET /up HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(
        text(&buf[..n]).starts_with("HTTP/1.1 200"),
        "{}",
        text(&buf[..n])
    );
    let (idle_s, _, idle_closed) = until_closed(&mut idle, limit).await;
    assert!(
        idle_closed,
        "an idle keep-alive connection was still open after {limit:?}"
    );
    assert!((2.5..4.5).contains(&idle_s), "idle closed after {idle_s} s");

    // A keep-alive connection that starts its next head gets the head timeout, not the idle one.
    let mut again = connect(&s).await;
    again
        .write_all(b"GET /up HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let n = again.read(&mut buf).await.unwrap();
    assert!(text(&buf[..n]).starts_with("HTTP/1.1 200"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    again.write_all(b"GET /up HTTP/1.1\r\nHo").await.unwrap();
    let (again_s, _, again_closed) = until_closed(&mut again, limit).await;
    assert!(
        again_closed && (0.8..2.2).contains(&again_s),
        "closed: {again_closed} after {again_s} s"
    );

    // A client that keeps using its connection keeps it.
    let mut busy = connect(&s).await;
    for _ in 0..4 {
        busy.write_all(b"GET /up HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let n = busy.read(&mut buf).await.unwrap();
        assert!(text(&buf[..n]).starts_with("HTTP/1.1 200"));
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
}

#[tokio::test]
async fn a_request_body_that_stops_arriving_is_cut() {
    let s = Server::start(&[("HANGIN_LIMITS__HEADER_TIMEOUT_SECONDS", "1")]);
    let mut c = connect(&s).await;
    c.write_all(
        b"POST /create HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"num",
    )
    .await
    .unwrap();
    let (secs, raw, closed) = until_closed(&mut c, Duration::from_secs(6)).await;
    assert!(closed, "a stalled body held its connection for 6 s");
    assert!(secs < 3.0, "took {secs} s");
    assert!(text(&raw).starts_with("HTTP/1.1 400"), "{}", text(&raw));
    assert_eq!(body_json(&raw)["error"], "bad_request");
}

#[tokio::test]
async fn connection_cap_refuses_with_503_and_recovers() {
    let s = Server::start(&[
        ("HANGIN_LIMITS__MAX_CONNECTIONS", "4"),
        ("HANGIN_LIMITS__MAX_CONNECTIONS_PER_ADDRESS", "0"),
        ("HANGIN_LIMITS__HEADER_TIMEOUT_SECONDS", "30"),
    ]);
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(connect_admitted(&s).await);
    }
    for _ in 0..3 {
        let mut extra = connect(&s).await;
        extra
            .write_all(b"GET /up HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let (secs, raw, closed) = until_closed(&mut extra, Duration::from_secs(5)).await;
        assert!(
            closed && secs < 3.0,
            "refused connection not closed ({secs} s)"
        );
        assert!(text(&raw).starts_with("HTTP/1.1 503"), "{}", text(&raw));
        assert!(text(&raw).to_ascii_lowercase().contains("retry-after:"));
        assert_eq!(body_json(&raw)["error"], "too_many_connections");
    }
    drop(held);
    // The slots come back once the server has seen the closes: wait for that, not a while.
    let r = wait_up(&s, 200).await;
    assert_eq!(r.status(), 200);
    assert!(
        s.log_lines("at most 4 connections").len() == 1,
        "{}",
        s.log_text()
    );
}

#[tokio::test]
async fn per_address_cap_counts_each_address_alone() {
    let s = Server::start(&[
        ("HANGIN_LIMITS__MAX_CONNECTIONS_PER_ADDRESS", "3"),
        ("HANGIN_LIMITS__HEADER_TIMEOUT_SECONDS", "30"),
    ]);
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect_admitted(&s).await);
    }
    let mut fourth = connect(&s).await;
    let (_, raw, closed) = until_closed(&mut fourth, Duration::from_secs(5)).await;
    assert!(closed);
    assert!(text(&raw).starts_with("HTTP/1.1 503"), "{}", text(&raw));
    assert_eq!(body_json(&raw)["error"], "too_many_connections");

    // Another address is not affected (all of 127/8 is loopback on Linux).
    let other = tokio::net::TcpSocket::new_v4().unwrap();
    other.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut other = other
        .connect(format!("127.0.0.1:{}", s.port).parse().unwrap())
        .await
        .unwrap();
    other
        .write_all(b"GET /up HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (_, raw, _) = until_closed(&mut other, Duration::from_secs(5)).await;
    assert!(text(&raw).starts_with("HTTP/1.1 200"), "{}", text(&raw));

    // Slots come back when connections close.
    drop(held);
    // The slots come back once the server has seen the closes: wait for that, not a while.
    let r = wait_up(&s, 200).await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn forwarded_for_from_an_appending_proxy_cannot_be_chosen_by_the_client() {
    let s = Server::start(&[
        ("HANGIN_TRUSTED_PROXIES", r#"["127.0.0.1/32"]"#),
        ("HANGIN_AUTH__CREATE_PER_ADDRESS_PER_HOUR", "3"),
    ]);
    // nginx `$proxy_add_x_forwarded_for`: whatever the client sent, then the address nginx saw.
    let mut accepted = 0;
    for i in 0..6 {
        let r = s
            .http()
            .post(s.url("/create"))
            .query(&[("number", common::fresh_number())])
            .header("x-forwarded-for", format!("10.9.8.{i}, 192.168.7.7"))
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            204 => accepted += 1,
            429 => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(
        accepted, 3,
        "the per-address limit must hold for 192.168.7.7"
    );

    // The fail2ban line names the address the proxy saw, not the one the client wrote.
    let number = common::fresh_number();
    let r = s
        .http()
        .post(s.url("/create"))
        .query(&[("number", number.as_str())])
        .header("x-forwarded-for", "192.168.7.8")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = s
        .http()
        .post(s.url("/oauth/token"))
        .query(&[
            ("client_id", s.client_id.as_str()),
            ("client_secret", s.client_secret.as_str()),
            ("grant_type", "password"),
            ("number", number.as_str()),
            ("code", "000000x"),
        ])
        .header("x-forwarded-for", "203.0.113.66, 192.168.7.8")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let lines = s.wait_log_lines("failed OTP verification", 1).await;
    assert!(lines[0].ends_with("from 192.168.7.8"), "{lines:?}");
}

async fn upload_picture(s: &Server, u: &User) -> String {
    let part = reqwest::multipart::Part::bytes(common::tiny_png())
        .file_name("me.png")
        .mime_str("image/png")
        .unwrap();
    let form = reqwest::multipart::Form::new().part("user[profile_picture]", part);
    let r = s
        .http()
        .post(s.url("/user/addProfilePicture"))
        .bearer_auth(&u.token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    body["profile_pic"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn another_users_host_header_never_reaches_my_frames() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let s = Server::start(&[]);
    let victim = s.sign_up("Vic", "Tim").await;
    let evil = s.sign_up("Eve", "Il").await;
    s.befriend(&victim, &evil).await;
    upload_picture(&s, &victim).await;
    upload_picture(&s, &evil).await;
    let base = format!("http://127.0.0.1:{}/blobs/", s.port);

    let mut v = s.online(&victim).await;
    let mut req = format!("{}?access_token={}", s.ws_url(), evil.token)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("host", "tracker.evil.example".parse().unwrap());
    let (ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let mut e = Cable {
        ws,
        backlog: Vec::new(),
        pings: Vec::new(),
        closed: None,
    };
    assert_eq!(e.next_frame(|_| true).await, json!({"type": "welcome"}));
    e.subscribe(CHATS).await;

    let online = v.event("contact_online").await;
    assert_eq!(online["uuid"], evil.uuid);
    let pic = online["profile_pic"].as_str().unwrap();
    assert!(pic.starts_with(&base), "victim got {pic}");

    // A chat the evil user creates: the update the victim gets carries pictures too.
    e.perform(CHATS, "createChat", json!({"name": "trap"}))
        .await;
    let chat = v.event("chat").await;
    assert!(!chat.to_string().contains("evil.example"), "{chat}");
    let frames = v.drain(Duration::from_millis(800)).await;
    let all = serde_json::to_string(&frames).unwrap();
    assert!(!all.contains("evil.example"), "victim frames: {all}");

    // REST bodies for the victim: its own Host only.
    let r = s
        .http()
        .get(s.url("/friends"))
        .bearer_auth(&victim.token)
        .send()
        .await
        .unwrap();
    let body = r.text().await.unwrap();
    assert!(!body.contains("evil.example"), "{body}");
    assert!(body.contains(&base), "{body}");
}

#[tokio::test]
async fn malformed_chunked_body_is_400_and_bad_path_is_json() {
    let s = Server::start(&[]);
    let mut c = connect(&s).await;
    c.write_all(
        b"POST /create HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\nzz\r\n",
    )
    .await
    .unwrap();
    let (_, raw, _) = until_closed(&mut c, Duration::from_secs(5)).await;
    assert!(text(&raw).starts_with("HTTP/1.1 400"), "{}", text(&raw));
    assert_eq!(body_json(&raw)["error"], "bad_request");

    let r = s.http().get(s.url("/blobs/%ff")).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "bad_request");
    assert!(body["error_description"].as_str().unwrap().len() > 5);
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test]
async fn files_are_private_whatever_the_umask() {
    // The servers this test starts inherit it.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
    let s = Server::start_first_time(&[]);
    let u = s.sign_up("Mo", "De").await;
    upload_picture(&s, &u).await;
    let backup = s.dir.path().join("backup.sqlite3");
    let (code, _, err) = common::run_cli(
        &["backup", backup.to_str().unwrap()],
        &[("HANGIN_DATA_DIR", s.data_dir.to_str().unwrap())],
    );
    assert_eq!(code, 0, "{err}");

    assert_eq!(mode(&s.data_dir), 0o700, "data dir");
    for name in [
        "hangin.sqlite3",
        "hangin.sqlite3-wal",
        "hangin.sqlite3-shm",
        "client-credentials.json",
    ] {
        assert_eq!(mode(&s.data_dir.join(name)), 0o600, "{name}");
    }
    assert_eq!(mode(&s.pictures_dir()), 0o700, "pictures dir");
    let pictures: Vec<PathBuf> = std::fs::read_dir(s.pictures_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(!pictures.is_empty());
    for p in pictures {
        assert_eq!(mode(&p), 0o600, "{}", p.display());
    }
    assert_eq!(mode(&backup), 0o600, "backup");
}

/// Wait for the server process to exit by itself; its exit code.
fn wait_exit(s: &mut Server, limit: Duration) -> Option<i32> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = s.child.try_wait().unwrap() {
            return Some(status.code().unwrap_or(-1));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// `hangin serve` that is expected to refuse: (exit code, stderr), or `None` if it kept running.
fn serve_expecting_refusal(data_dir: &Path) -> Option<(i32, String)> {
    let mut child = Command::new(BIN)
        .arg("serve")
        .env_remove("JOURNAL_STREAM")
        .env_remove("HANGIN_CONFIG")
        .env("HANGIN_LISTEN", "127.0.0.1:0")
        .env("HANGIN_DATA_DIR", data_dir)
        .env("HANGIN_MDNS__ENABLED", "false")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            use std::io::Read;
            child.stderr.take().unwrap().read_to_string(&mut err).ok();
            return Some((status.code().unwrap_or(-1), err));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().ok();
    child.wait().ok();
    None
}

#[tokio::test]
async fn deleted_database_stops_the_server_and_credentials_survive() {
    let mut s = Server::start_first_time(&[]);
    let creds = std::fs::read(s.credentials_path()).unwrap();
    s.sign_up("Del", "Eted").await;
    std::fs::remove_file(s.db_path()).unwrap();
    let code = wait_exit(&mut s, Duration::from_secs(10))
        .expect("the server kept running on a deleted database");
    assert_ne!(code, 0, "must exit non-zero so systemd restarts it");
    assert!(
        !s.log_lines("was deleted while the server was running")
            .is_empty(),
        "{}",
        s.log_text()
    );

    // The restart finds an empty database next to the apps' credentials: it refuses, and the
    // credentials are left as they were.
    let (code, err) = serve_expecting_refusal(&s.data_dir)
        .expect("a start next to existing credentials must refuse, not serve");
    assert_ne!(code, 0);
    assert!(err.contains("client-credentials.json exists"), "{err}");
    assert_eq!(std::fs::read(s.credentials_path()).unwrap(), creds);
}

/// A tmpfs of `size` the test mounts on a fresh directory; unmounted on drop.
struct Mount {
    dir: tempfile::TempDir,
}

impl Mount {
    fn tmpfs(size: &str) -> Option<Mount> {
        // SAFETY: geteuid cannot fail.
        if !common::is_root() {
            eprintln!("SKIPPED: mounting a tmpfs needs root (CI runs as root)");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(dir.path())
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount -t tmpfs failed");
        Some(Mount { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn remount(&self, opts: &str) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,{opts}")])
            .arg(self.dir.path())
            .status()
            .unwrap()
            .success();
        assert!(ok, "remount {opts} failed");
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Fill the filesystem at `dir` until it refuses another byte.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 4096];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
    path
}

async fn wait_up(s: &Server, status: u16) -> reqwest::Response {
    let deadline = Instant::now() + Duration::from_secs(6);
    loop {
        // While every slot is still taken, the server answers 503 before reading the request
        // and closes; the client may then see the answer as unexpected: that is "not yet".
        match s.http().get(s.url("/up")).send().await {
            Ok(r) if r.status().as_u16() == status || Instant::now() > deadline => return r,
            Err(e) if Instant::now() > deadline => panic!("GET /up: {e}"),
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn assert_unavailable(status: u16, headers: &reqwest::header::HeaderMap, body: &Value) {
    assert_eq!(status, 503, "{body}");
    assert!(headers.contains_key("retry-after"), "{headers:?}");
    assert!(
        body["error"].is_string() && body["error_description"].is_string(),
        "{body}"
    );
}

#[tokio::test]
async fn full_disk_shows_in_up_and_writes_answer_503() {
    let Some(mnt) = Mount::tmpfs("4m") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_in(dir, mnt.path().join("data"), &[]);
    let u = s.sign_up("Full", "Disk").await;
    assert_eq!(wait_up(&s, 200).await.status(), 200);

    let filler = fill(mnt.path());
    let r = wait_up(&s, 503).await;
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    assert_unavailable(status, &headers, &r.json().await.unwrap());

    let r = s
        .http()
        .patch(s.url("/user"))
        .bearer_auth(&u.token)
        .json(&json!({"user": {"first_name": "Fuller"}}))
        .send()
        .await
        .unwrap();
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    assert_unavailable(status, &headers, &r.json().await.unwrap());

    let part = reqwest::multipart::Part::bytes(common::tiny_png())
        .file_name("me.png")
        .mime_str("image/png")
        .unwrap();
    let r = s
        .http()
        .post(s.url("/user/addProfilePicture"))
        .bearer_auth(&u.token)
        .multipart(reqwest::multipart::Form::new().part("user[profile_picture]", part))
        .send()
        .await
        .unwrap();
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    assert_unavailable(status, &headers, &r.json().await.unwrap());

    // Space again: healthy again, writes work, nothing restarted.
    std::fs::remove_file(filler).unwrap();
    assert_eq!(wait_up(&s, 200).await.status(), 200);
    let r = s
        .http()
        .patch(s.url("/user"))
        .bearer_auth(&u.token)
        .json(&json!({"user": {"first_name": "Fuller"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    drop(s);
}

#[tokio::test]
async fn read_only_data_dir_refuses_to_start_with_a_clear_error() {
    let Some(mnt) = Mount::tmpfs("16m") else {
        return;
    };
    let data = mnt.path().join("data");
    {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Server::start_in(dir, data.clone(), &[]);
        s.sign_up("Read", "Only").await;
        assert!(s.terminate().success());
    }
    mnt.remount("ro");
    let result = serve_expecting_refusal(&data);
    mnt.remount("rw");
    let (code, err) = result.expect("a server on a read-only data dir must not serve");
    assert_ne!(code, 0);
    assert!(
        err.contains(&data.display().to_string()) && err.to_ascii_lowercase().contains("read-only"),
        "{err}"
    );
}

/// An ext4 image on a loop device with `errors=remount-ro`, as an SD card's filesystem often is;
/// `trigger_fs_error` makes the kernel turn it read-only under the running server (a tmpfs cannot
/// be remounted read-only while the database is open for writing).
struct Ext4 {
    dir: tempfile::TempDir,
    device: String,
}

impl Ext4 {
    fn mount() -> Option<Ext4> {
        // SAFETY: geteuid cannot fail.
        if !common::is_root() {
            eprintln!("SKIPPED: a loop mount needs root (CI runs as root)");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("fs.img");
        std::fs::File::create(&image)
            .unwrap()
            .set_len(16 << 20)
            .unwrap();
        let mkfs = Command::new("mkfs.ext4")
            .args(["-q", "-F"])
            .arg(&image)
            .status();
        let point = dir.path().join("mnt");
        std::fs::create_dir(&point).unwrap();
        let mounted = mkfs.is_ok_and(|s| s.success())
            && Command::new("mount")
                .args(["-o", "loop,errors=remount-ro"])
                .arg(&image)
                .arg(&point)
                .status()
                .is_ok_and(|s| s.success());
        if !mounted {
            eprintln!("SKIPPED: no mkfs.ext4 or no loop devices here");
            return None;
        }
        let source = Command::new("findmnt")
            .args(["-n", "-o", "SOURCE"])
            .arg(&point)
            .output()
            .unwrap();
        let device = text(&source.stdout)
            .trim()
            .rsplit('/')
            .next()
            .unwrap()
            .to_string();
        Some(Ext4 { dir, device })
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }

    fn fail(&self) {
        std::fs::write(
            format!("/sys/fs/ext4/{}/trigger_fs_error", self.device),
            "1",
        )
        .unwrap();
    }
}

impl Drop for Ext4 {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.path()).status();
    }
}

#[tokio::test]
async fn filesystem_turning_read_only_under_the_server_answers_503() {
    let Some(fs) = Ext4::mount() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start_in(dir, fs.path().join("data"), &[]);
    let u = s.sign_up("Read", "Only").await;
    assert_eq!(wait_up(&s, 200).await.status(), 200);

    fs.fail();
    let r = wait_up(&s, 503).await;
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    assert_unavailable(status, &headers, &r.json().await.unwrap());
    let r = s
        .http()
        .patch(s.url("/user"))
        .bearer_auth(&u.token)
        .json(&json!({"user": {"first_name": "Ro"}}))
        .send()
        .await
        .unwrap();
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    assert_unavailable(status, &headers, &r.json().await.unwrap());
    s.child.kill().ok();
    s.child.wait().ok();
}

#[tokio::test]
async fn a_client_that_does_not_read_its_response_is_closed() {
    let s = Server::start(&[
        ("HANGIN_LIMITS__PICTURE_BYTES", "16777216"),
        ("HANGIN_LIMITS__KEEPALIVE_TIMEOUT_SECONDS", "2"),
    ]);
    let u = s.sign_up("Slow", "Reader").await;
    // A "PNG" of 12 MB: far more than the socket buffers between us hold.
    let mut big = common::tiny_png();
    big.resize(12 << 20, 0);
    let size = big.len();
    let part = reqwest::multipart::Part::bytes(big)
        .file_name("big.png")
        .mime_str("image/png")
        .unwrap();
    let r = s
        .http()
        .post(s.url("/user/addProfilePicture"))
        .bearer_auth(&u.token)
        .multipart(reqwest::multipart::Form::new().part("user[profile_picture]", part))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let url: String = r.json::<Value>().await.unwrap()["profile_pic"]
        .as_str()
        .unwrap()
        .into();
    let path = url.split_once("/blobs/").unwrap().1;

    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut c = socket
        .connect(format!("127.0.0.1:{}", s.port).parse().unwrap())
        .await
        .unwrap();
    c.write_all(format!("GET /blobs/{path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    // Do not read for a while: the server's writes block.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (_, got, closed) = until_closed(&mut c, Duration::from_secs(5)).await;
    assert!(
        closed,
        "the connection was kept for a client that does not read"
    );
    assert!(
        got.len() < size,
        "the whole response went out ({} bytes)",
        got.len()
    );
}

/// After a restart every client reconnects at once: the listener's accept queue is 4,096 deep
/// (or the kernel's `somaxconn`, if lower), not tokio's 1,024, so a burst of thousands is not
/// dropped into TCP's one-second retransmission. `ss` shows a listener's backlog as Send-Q.
#[tokio::test]
async fn the_listener_takes_a_reconnect_burst_into_its_backlog() {
    let s = Server::start(&[]);
    let port = s
        .url("")
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .to_string();
    let out = Command::new("ss")
        .args(["-Hltn", &format!("sport = :{port}")])
        .output()
        .expect("ss (iproute2) runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let backlog: u32 = text
        .split_whitespace()
        .nth(2)
        .and_then(|q| q.parse().ok())
        .unwrap_or_else(|| panic!("no listener on port {port} in `ss` output: {text:?}"));
    let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(backlog, 4096.min(somaxconn), "{text}");
}
