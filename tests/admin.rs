//! Admin commands (docs/administration.md) against the real server over TCP: the effect of
//! each command is checked through what connected cable clients and HTTP callers see.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// `hangin <args> --data-dir <server's>`: (exit code, stdout, stderr).
fn admin(s: &Server, args: &[&str]) -> (i32, String, String) {
    let dir = s.data_dir.display().to_string();
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--data-dir", &dir]);
    run_cli(&all, &[])
}

fn admin_json(s: &Server, args: &[&str]) -> Value {
    let (code, out, err) = admin(s, args);
    assert_eq!(code, 0, "hangin {args:?} failed: {err}");
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// The disconnect frame a banned or signed-out user's socket gets, then the close.
async fn expect_unauthorized_close(c: &mut Cable) {
    let f = c.next_frame(|f| f["type"] == "disconnect").await;
    assert_eq!(
        f,
        json!({"type": "disconnect", "reason": "unauthorized", "reconnect": false})
    );
    // Frames queued before the disconnect may sit in the backlog; none may follow it before
    // the server closes the socket (and none can after).
    c.backlog.clear();
    c.wait_closed().await;
    assert!(
        c.backlog.is_empty(),
        "frames after disconnect: {:?}",
        c.backlog
    );
}

async fn status_of(s: &Server, token: &str) -> u16 {
    s.get_user(token).await.status().as_u16()
}

#[tokio::test]
async fn ban_closes_the_socket_tells_contacts_and_refuses_codes() {
    let s = Server::start(&[]);
    let a = s.sign_up("Ann", "Archer").await;
    let b = s.sign_up("Bob", "Baker").await;
    s.befriend(&a, &b).await;
    let mut ca = s.online(&a).await;
    let mut cb = s.online(&b).await;
    assert_eq!(ca.event("contact_online").await["uuid"], b.uuid.as_str());
    // The running server's view: B connected once, online, not banned.
    let row_of_b = |list: Value| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|u| u["uuid"] == b.uuid.as_str())
            .unwrap()
            .clone()
    };
    let row = row_of_b(admin_json(&s, &["user", "list", "--json"]));
    assert_eq!(
        (&row["online"], &row["connections"], &row["banned"]),
        (&json!(true), &json!(1), &json!(false)),
        "{row}"
    );
    let show = admin_json(&s, &["user", "show", &b.number, "--json"]);
    assert_eq!(
        (&show["online"], &show["connections"]),
        (&json!(true), &json!(1))
    );

    let out = admin_json(&s, &["user", "ban", &b.number, "--json"]);
    assert_eq!(out["number"], b.number.as_str());
    assert_eq!(out["uuid"], b.uuid.as_str());
    assert_eq!(out["connections_closed"], 1);
    assert!(out["tokens_revoked"].as_u64().unwrap() >= 1);

    expect_unauthorized_close(&mut cb).await;
    assert_eq!(ca.event("contact_offline").await, b.uuid.as_str());
    // No new code, no old token, no refresh.
    let r = s.request_code(&b.number).await;
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "banned");
    assert!(
        s.log_lines(&format!("OTP for {}", b.number)).len() == 1,
        "no code was sent after the ban"
    );
    assert_eq!(status_of(&s, &b.token).await, 401);
    assert_eq!(s.refresh_grant(&b.refresh).await.status(), 400);
    let again = Cable::connect_raw(&format!("{}?access_token={}", s.ws_url(), b.token)).await;
    let mut again = again;
    let f = again.next_frame(|_| true).await;
    assert_eq!(f["type"], "disconnect");
    // A is untouched.
    assert_eq!(status_of(&s, &a.token).await, 200);

    let row = row_of_b(admin_json(&s, &["user", "list", "--json"]));
    assert_eq!(row["banned"], true);
    assert_eq!(row["online"], false);
    assert_eq!(row["sessions"], 0);

    // Unban: codes flow again and B can log in.
    let (code, out, err) = admin(&s, &["user", "unban", &b.uuid]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("lifted the ban"), "{out}");
    assert_eq!(s.request_code(&b.number).await.status(), 204);
    let code = s.nth_otp(&b.number, 2).await;
    assert_eq!(s.password_grant(&b.number, &code).await.status(), 200);
    // Unbanning what is not banned is an error.
    let (code, _, err) = admin(&s, &["user", "unban", &b.number]);
    assert_eq!(code, 1);
    assert!(err.contains("not banned"), "{err}");
}

#[tokio::test]
async fn banning_a_number_that_never_logged_in_blocks_its_first_login() {
    let s = Server::start(&[]);
    let number = fresh_number();
    let out = admin_json(&s, &["user", "ban", &number, "--json"]);
    assert_eq!(out["uuid"], Value::Null);
    assert_eq!(s.request_code(&number).await.status(), 403);
    // Bad input is a clear error, not a panic.
    let (code, _, err) = admin(&s, &["user", "ban", "not-a-number"]);
    assert_eq!(code, 1);
    assert!(err.contains("neither a uuid nor a phone number"), "{err}");
    let (code, _, err) = admin(&s, &["user", "show", &uuid_like()]);
    assert_eq!(code, 1);
    assert!(err.contains("no user"), "{err}");
}

fn uuid_like() -> String {
    "00000000-0000-4000-8000-000000000000".into()
}

#[tokio::test]
async fn ban_ends_a_background_window_at_once() {
    let s = Server::start(&[]);
    let a = s.sign_up("Ann", "Archer").await;
    let b = s.sign_up("Bob", "Baker").await;
    s.befriend(&a, &b).await;
    let mut ca = s.online(&a).await;
    let mut cb = s.online(&b).await;
    ca.event("contact_online").await;
    // B goes to the background: the socket closes but B stays online for 5 minutes.
    cb.perform(CHATS, "go_to_background", json!({})).await;
    cb.next_frame(|f| f["type"] == "disconnect").await;
    ca.assert_silent().await;
    let show = admin_json(&s, &["user", "show", &b.uuid, "--json"]);
    assert_eq!(show["online"], true);
    assert_eq!(show["connections"], 0);

    admin_json(&s, &["user", "ban", &b.uuid, "--json"]);
    assert_eq!(ca.event("contact_offline").await, b.uuid.as_str());
    let show = admin_json(&s, &["user", "show", &b.uuid, "--json"]);
    assert_eq!(show["online"], false);
    assert_eq!(show["details"]["has_device_token"], false);
}

#[tokio::test]
async fn signout_revokes_tokens_and_closes_every_connection_but_allows_a_new_login() {
    let s = Server::start(&[]);
    let a = s.sign_up("Ann", "Archer").await;
    let b = s.sign_up("Bob", "Baker").await;
    s.befriend(&a, &b).await;
    let mut ca = s.online(&a).await;
    let mut cb1 = s.online(&b).await;
    let mut cb2 = s.online(&b).await;
    ca.event("contact_online").await;

    let (code, out, err) = admin(&s, &["user", "signout", &b.number]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("2 connection(s) closed"), "{out}");
    expect_unauthorized_close(&mut cb1).await;
    expect_unauthorized_close(&mut cb2).await;
    assert_eq!(ca.event("contact_offline").await, b.uuid.as_str());
    ca.assert_silent().await;
    assert_eq!(status_of(&s, &b.token).await, 401);
    // Not a ban: B logs in again.
    assert_eq!(s.request_code(&b.number).await.status(), 204);
}

#[tokio::test]
async fn delete_removes_the_person_and_their_data_and_keeps_others_chats() {
    let s = Server::start(&[]);
    let a = s.sign_up("Ann", "Archer").await;
    let b = s.sign_up("Bob", "Baker").await;
    s.befriend(&a, &b).await;
    // B has a picture, a device and a chat of their own that A joined; both spoke.
    let part = reqwest::multipart::Part::bytes(tiny_png())
        .file_name("me.png")
        .mime_str("image/png")
        .unwrap();
    let r = s
        .http()
        .post(s.url("/user/addProfilePicture"))
        .bearer_auth(&b.token)
        .multipart(reqwest::multipart::Form::new().part("profile_picture", part))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let pictures: Vec<_> = std::fs::read_dir(s.pictures_dir()).unwrap().collect();
    assert_eq!(pictures.len(), 1);
    let mut ca = s.online(&a).await;
    let mut cb = s.online(&b).await;
    ca.event("contact_online").await;
    cb.perform(CHATS, "createChat", json!({"name": "Bob's"}))
        .await;
    let chat = cb.event("own_chat").await;
    let id = chat["id"].as_i64().unwrap();
    let ident = chat_ident(id);
    ca.event("chat").await;
    ca.subscribe(&ident).await;
    cb.subscribe(&ident).await;
    cb.perform(&ident, "speak", json!({"body": "from bob"}))
        .await;
    ca.payload(&ident, "message").await;
    ca.perform(&ident, "speak", json!({"body": "from ann"}))
        .await;
    ca.payload(&ident, "message").await;
    // And a chat B alone belongs to.
    cb.perform(CHATS, "createChat", json!({"name": "alone"}))
        .await;
    cb.event("own_chat").await;

    let out = admin_json(&s, &["user", "delete", &b.uuid, "--json"]);
    assert_eq!(out["uuid"], b.uuid.as_str());
    assert_eq!(out["messages"], 1);
    assert_eq!(out["chats"], 1, "the chat only B belonged to");
    assert_eq!(out["chats_handed_over"], 1);
    assert_eq!(out["picture"], true);
    assert_eq!(out["connections_closed"], 1);
    expect_unauthorized_close(&mut cb).await;
    assert_eq!(ca.event("contact_offline").await, b.uuid.as_str());

    // Gone for the CLI, the API and the disk.
    let (code, _, err) = admin(&s, &["user", "show", &b.uuid]);
    assert_eq!(code, 1);
    assert!(err.contains("no user"), "{err}");
    assert_eq!(status_of(&s, &b.token).await, 401);
    assert_eq!(std::fs::read_dir(s.pictures_dir()).unwrap().count(), 0);
    let db = rusqlite::Connection::open(s.db_path()).unwrap();
    let one = |sql: &str| -> i64 { db.query_row(sql, [], |r| r.get(0)).unwrap() };
    assert_eq!(one("SELECT count(*) FROM users"), 1);
    assert_eq!(one("SELECT count(*) FROM blobs"), 0);
    assert_eq!(
        one("SELECT count(*) FROM access_tokens a JOIN users u ON u.id = a.user_id"),
        one("SELECT count(*) FROM access_tokens")
    );
    // A's chat history keeps A's words only; the chat is A's now.
    let bodies: Vec<String> = db
        .prepare("SELECT body FROM messages WHERE chat_id = ?1")
        .unwrap()
        .query_map([id], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(bodies, vec!["from ann".to_string()]);
    // A's address book still holds B's number (A's data), no longer linked to a user.
    let friends: Value = s
        .http()
        .get(s.url("/friends"))
        .bearer_auth(&a.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(friends.to_string().contains(&b.number), "{friends}");
    assert!(!friends.to_string().contains(&b.uuid), "{friends}");
    // The number may sign up again as a new person.
    assert_eq!(s.request_code(&b.number).await.status(), 204);
}

#[tokio::test]
async fn status_shows_the_live_server_and_exits_3_when_stopped() {
    let mut s = Server::start(&[]);
    let a = s.sign_up("Ann", "Archer").await;
    let b = s.sign_up("Bob", "Baker").await;
    s.befriend(&a, &b).await;
    let mut ca = s.online(&a).await;
    let _cb = s.online(&b).await;
    ca.event("contact_online").await;
    ca.perform(CHATS, "createChat", json!({"name": "x"})).await;
    let id = ca.event("own_chat").await["id"].as_i64().unwrap();
    ca.subscribe(&chat_ident(id)).await;
    ca.perform(&chat_ident(id), "speak", json!({"body": "hi"}))
        .await;
    ca.payload(&chat_ident(id), "message").await;

    let st = admin_json(&s, &["status", "--json"]);
    assert_eq!(st["running"], true);
    assert_eq!(st["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(st["pid"], s.child.id());
    assert_eq!(st["connections"], 2);
    assert_eq!(st["online_users"], 2);
    assert_eq!(st["live_chats"], 1);
    assert_eq!(st["messages_today"], 1);
    assert_eq!(st["users"], 2);
    assert!(st["database_bytes"].as_u64().unwrap() > 0);
    assert_eq!(st["otp"]["driver"], "log");
    assert_eq!(st["otp"]["state"], "ok");
    assert_eq!(st["otp"]["ok"], 2);
    assert_eq!(st["push"]["driver"], "log");
    let (code, out, _) = admin(&s, &["status"]);
    assert_eq!(code, 0);
    assert!(out.contains("running (pid"), "{out}");
    assert!(out.contains("online users      2"), "{out}");

    drop(ca);
    assert!(s.terminate().success());
    let (code, out, err) = admin(&s, &["status"]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(out.contains("not running"), "{out}");
    assert!(out.contains("users             2"), "{out}");
}

#[tokio::test]
async fn without_a_server_the_commands_work_on_the_database() {
    let mut s = Server::start(&[]);
    let a = s.sign_up("Ann", "Archer").await;
    assert!(s.terminate().success());
    assert!(
        !s.data_dir.join("control.sock").exists(),
        "socket removed at stop"
    );

    let list = admin_json(&s, &["user", "list", "--json"]);
    assert_eq!(list[0]["uuid"], a.uuid.as_str());
    assert_eq!(list[0]["connections"], Value::Null);
    let out = admin_json(&s, &["user", "ban", &a.number, "--json"]);
    assert_eq!(out["tokens_revoked"], 1);

    s.restart_same_port();
    assert_eq!(s.request_code(&a.number).await.status(), 403);
    assert_eq!(status_of(&s, &a.token).await, 401);
}

#[tokio::test]
async fn a_server_that_died_leaves_a_socket_the_next_start_and_the_cli_handle() {
    let mut s = Server::start(&[]);
    let a = s.sign_up("Ann", "Archer").await;
    s.child.kill().unwrap();
    s.child.wait().unwrap();
    assert!(s.data_dir.join("control.sock").exists());
    // Stale socket: nobody answers, so the CLI uses the database.
    let list = admin_json(&s, &["user", "list", "--json"]);
    assert_eq!(list[0]["uuid"], a.uuid.as_str());
    s.restart_same_port();
    let st = admin_json(&s, &["status", "--json"]);
    assert_eq!(st["running"], true);
    // A second server on the same data dir is refused while the first answers.
    let (code, _, err) = run_cli(
        &[
            "serve",
            "--data-dir",
            &s.data_dir.display().to_string(),
            "--listen",
            "127.0.0.1:0",
        ],
        &[],
    );
    assert_ne!(code, 0);
    assert!(err.contains("another hangin server is running"), "{err}");
}

#[tokio::test]
async fn restore_round_trip_refused_while_running() {
    let mut s = Server::start(&[]);
    let a = s.sign_up("Ann", "Archer").await;
    let backup = s.dir.path().join("backup.sqlite3");
    let (code, _, err) = admin(&s, &["backup", &backup.display().to_string()]);
    assert_eq!(code, 0, "{err}");
    // A change after the backup.
    let c = s.sign_up("Cid", "Cole").await;
    let (code, _, err) = admin(&s, &["restore", &backup.display().to_string()]);
    assert_eq!(code, 1);
    assert!(err.contains("the server is running"), "{err}");

    assert!(s.terminate().success());
    // A file that is not a sound database is refused and the current one stays.
    let junk = s.dir.path().join("junk.sqlite3");
    std::fs::write(&junk, vec![7u8; 8192]).unwrap();
    let (code, _, err) = admin(&s, &["restore", &junk.display().to_string()]);
    assert_eq!(code, 1);
    assert!(
        err.contains("refusing") || err.contains("cannot be read"),
        "{err}"
    );
    let list = admin_json(&s, &["user", "list", "--json"]);
    assert_eq!(list.as_array().unwrap().len(), 2);

    let out = admin_json(&s, &["restore", &backup.display().to_string(), "--json"]);
    assert_eq!(out["users"], 1);
    let previous = out["previous"].as_str().unwrap().to_string();
    assert!(
        previous.contains("hangin.sqlite3.before-restore-"),
        "{previous}"
    );
    assert!(std::path::Path::new(&previous).exists());
    assert_eq!(
        std::fs::metadata(s.db_path()).unwrap().permissions().mode() & 0o777,
        0o600
    );

    s.restart_same_port();
    let list = admin_json(&s, &["user", "list", "--json"]);
    let uuids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["uuid"].as_str().unwrap())
        .collect();
    assert_eq!(uuids, vec![a.uuid.as_str()]);
    assert_eq!(status_of(&s, &a.token).await, 200);
    assert_eq!(status_of(&s, &c.token).await, 401);
    // The kept database still holds the later change.
    let kept = rusqlite::Connection::open(&previous).unwrap();
    let n: i64 = kept
        .query_row("SELECT count(*) FROM users", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 2);
}

#[tokio::test]
async fn the_control_socket_is_0600_and_refuses_other_users() {
    // SAFETY: geteuid has no preconditions.
    if !common::is_root() {
        eprintln!("needs root to run a client as another user; checking the mode only");
    }
    let s = Server::start(&[]);
    let sock = s.data_dir.join("control.sock");
    let meta = std::fs::metadata(&sock).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(meta.uid(), rustix::process::geteuid().as_raw());
    if !common::is_root() {
        return;
    }
    // Another user can reach the directory but not the socket.
    std::fs::set_permissions(s.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&s.data_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(BIN.path())
        .args([
            "user",
            "list",
            "--data-dir",
            &s.data_dir.display().to_string(),
        ])
        .env("HANGIN_MDNS__ENABLED", "false")
        .output()
        .expect("setpriv");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot use the control socket"), "{err}");
}

/// The shipped unit's `DynamicUser` situation: the server runs as a user of its own in a data
/// dir below a root-only directory (`/var/lib/private`); `sudo hangin …` (root) must work,
/// with the server running and without it, and leave no root-owned file behind.
#[tokio::test]
async fn root_administers_a_data_dir_owned_by_the_service_user() {
    if !common::is_root() {
        eprintln!("skipped: needs root (it is what `sudo hangin …` runs as)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let private = dir.path().join("private");
    let data = private.join("hangin");
    std::fs::create_dir_all(&data).unwrap();
    // systemd opens /var/lib/private to the service inside its mount namespace only; here the
    // server needs a way through, while nobody but root may list it.
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o711)).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(&data, Some(65534), Some(65534)).unwrap();
    let data_s = data.display().to_string();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    // The service: uid 65534, as the unit's DynamicUser.
    let mut child = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(BIN.path())
        .args([
            "serve",
            "--data-dir",
            ".",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .current_dir(&data)
        .env("HANGIN_MDNS__ENABLED", "false")
        .env_remove("JOURNAL_STREAM")
        .env_remove("NOTIFY_SOCKET")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !data.join("control.sock").exists() {
        assert!(std::time::Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let number = fresh_number();
    let (code, out, err) = run_cli(&["user", "ban", &number, "--data-dir", &data_s], &[]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, _) = run_cli(&["status", "--data-dir", &data_s], &[]);
    assert_eq!(code, 0);
    assert!(out.contains("1 banned number"), "{out}");
    common::sigterm(&child);
    child.wait().unwrap();
    // Stopped: root works on the database as the owner, and restores as the owner.
    let (code, out, err) = run_cli(&["user", "unban", &number, "--data-dir", &data_s], &[]);
    assert_eq!(code, 0, "{out}{err}");
    let backup = dir.path().join("root-only-backup.sqlite3");
    let (code, _, err) = run_cli(
        &[
            "backup",
            &backup.display().to_string(),
            "--data-dir",
            &data_s,
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = run_cli(
        &[
            "restore",
            &backup.display().to_string(),
            "--data-dir",
            &data_s,
        ],
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    for entry in std::fs::read_dir(&data).unwrap() {
        let entry = entry.unwrap();
        assert_eq!(
            entry.metadata().unwrap().uid(),
            65534,
            "{} is owned by root",
            entry.path().display()
        );
    }
}
