//! Issue "Foundation": defaults, CLI, migrations, backup under load, group commit, bad config.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{run_cli, wait_until, Server, BIN};
use hangin::db::{self, Db};

#[tokio::test]
async fn default_data_dir_holds_database_and_private_credentials() {
    let cwd = tempfile::tempdir().unwrap();
    // Embedded defaults except the port (3000 may be taken on a developer machine).
    let mut child = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0"])
        .current_dir(cwd.path())
        .env_remove("JOURNAL_STREAM")
        .env("HANGIN_MDNS__ENABLED", "false")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(rest) = line.split("listening on http://").nth(1) {
                let _ = tx.send(rest.split_whitespace().next().unwrap().to_string());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("server started");
    let root: serde_json::Value = reqwest::get(format!("http://{addr}/"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(root, serde_json::json!({"hello": "world"}));
    let up = reqwest::get(format!("http://{addr}/up")).await.unwrap();
    assert_eq!(up.status(), 200);
    assert_eq!(
        up.json::<serde_json::Value>().await.unwrap(),
        serde_json::json!({"status": "ok"})
    );
    let data = cwd.path().join("data");
    assert!(data.join("hangin.sqlite3").exists());
    let creds = data.join("client-credentials.json");
    let mode = std::fs::metadata(&creds).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&creds).unwrap()).unwrap();
    assert!(doc["client_id"].as_str().unwrap().len() >= 32);
    // The generated client really works at the token endpoint (wrong grant, right client).
    let r = reqwest::Client::new()
        .post(format!("http://{addr}/oauth/token"))
        .query(&[
            ("client_id", doc["client_id"].as_str().unwrap()),
            ("client_secret", doc["client_secret"].as_str().unwrap()),
            ("grant_type", "refresh_token"),
            ("refresh_token", "nope"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        400,
        "a known client with a bad refresh token is invalid_grant, not invalid_client"
    );
    common::sigterm(&child);
    assert!(child.wait().unwrap().success());
}

#[test]
fn migrate_twice_is_a_no_op_and_old_databases_are_upgraded() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let (code, out, err) = run_cli(&["migrate", "--data-dir", &d], &[]);
    assert_eq!(code, 0, "{err}");
    let all = format!("{} migration(s) applied", db::latest_version());
    assert!(out.contains(&all), "{out}");
    let (code, out, _) = run_cli(&["migrate", "--data-dir", &d], &[]);
    assert_eq!(code, 0);
    assert!(out.contains("0 migration(s) applied"), "{out}");

    // A database from before the first migration (an empty SQLite file) is brought up to date.
    let old = tempfile::tempdir().unwrap();
    let path = old.path().join("hangin.sqlite3");
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch("CREATE TABLE unrelated(x);")
        .unwrap();
    assert_eq!(db::migration_status(&path).unwrap().0, 0);
    let (code, out, err) = run_cli(
        &["migrate", "--data-dir", &old.path().display().to_string()],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("schema version {0} of {0}", db::latest_version())),
        "{out}"
    );
    let conn = rusqlite::Connection::open(&path).unwrap();
    let tables: i64 = conn
        .query_row("SELECT COUNT(*) FROM sqlite_master WHERE type='table' AND name IN ('users','messages','chats')", [], |r| r.get(0))
        .unwrap();
    assert_eq!(tables, 3);
}

#[tokio::test]
async fn backup_while_writing_passes_integrity_check() {
    let server = Server::start(&[]);
    let user = server.sign_up("Back", "Up").await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Uploads committed so far: the backup starts after some, and stops after more.
    let written = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let writer = {
        let (http, url, token, stop, written) = (
            server.http(),
            server.url("/friends"),
            user.token.clone(),
            stop.clone(),
            written.clone(),
        );
        tokio::spawn(async move {
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let friends: Vec<_> = (0..20)
                    .map(|i| serde_json::json!({"first_name": "F", "last_name": "L", "number": format!("555{:07}", n * 20 + i)}))
                    .collect();
                let r = http
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&serde_json::json!({"friends": friends}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 201);
                n += 1;
                written.store(n, std::sync::atomic::Ordering::Relaxed);
            }
            n
        })
    };
    let uploads = || written.load(std::sync::atomic::Ordering::Relaxed);
    wait_until("two uploads before the backup", || uploads() >= 2).await;
    let dest = server.dir.path().join("backup.sqlite3");
    let (code, out, err) = run_cli(
        &[
            "backup",
            &dest.display().to_string(),
            "--data-dir",
            &server.data_dir.display().to_string(),
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("backed up"), "{out}");
    let after_backup = uploads();
    wait_until("an upload after the backup", || uploads() > after_backup).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let batches = writer.await.unwrap();
    assert!(batches > 2, "the writer ran during the backup");
    let conn = rusqlite::Connection::open(&dest).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let friends: i64 = conn
        .query_row("SELECT COUNT(*) FROM friends", [], |r| r.get(0))
        .unwrap();
    assert!(friends > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_makes_10000_writes_durable_in_few_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hangin.sqlite3");
    let store = Db::open(&path).unwrap();
    store
        .write(|c| {
            Ok(c.execute(
                "CREATE TABLE probe (id INTEGER PRIMARY KEY, v INTEGER NOT NULL)",
                [],
            )?)
        })
        .await
        .unwrap();
    let before = store
        .stats()
        .transactions
        .load(std::sync::atomic::Ordering::Relaxed);
    let mut tasks = Vec::new();
    for i in 0..10_000i64 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            s.write(move |c| Ok(c.execute("INSERT INTO probe (v) VALUES (?1)", [i])?))
                .await
                .unwrap()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 1);
    }
    let transactions = store
        .stats()
        .transactions
        .load(std::sync::atomic::Ordering::Relaxed)
        - before;
    store.close();
    // Durable: a fresh connection (after the writer is gone) sees every row.
    let conn = rusqlite::Connection::open(&path).unwrap();
    let rows: i64 = conn
        .query_row("SELECT COUNT(*) FROM probe", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 10_000);
    assert!(
        transactions < 1_000,
        "10,000 writes took {transactions} transactions"
    );
    eprintln!("10,000 writes committed in {transactions} transactions");
}

#[tokio::test]
async fn a_failing_write_rolls_back_alone() {
    let dir = tempfile::tempdir().unwrap();
    let store = Db::open(&dir.path().join("hangin.sqlite3")).unwrap();
    store
        .write(|c| Ok(c.execute("CREATE TABLE t (v INTEGER UNIQUE)", [])?))
        .await
        .unwrap();
    let (a, b, c) = tokio::join!(
        store.write(|c| Ok(c.execute("INSERT INTO t VALUES (1)", [])?)),
        store.write(|c| {
            c.execute("INSERT INTO t VALUES (2)", [])?;
            Ok(c.execute("INSERT INTO t VALUES (1)", [])?) // violates UNIQUE: this write only is undone
        }),
        store.write(|c| Ok(c.execute("INSERT INTO t VALUES (3)", [])?)),
    );
    assert!(a.is_ok() && b.is_err() && c.is_ok());
    let values: Vec<i64> = store
        .read(|c| {
            let mut s = c.prepare("SELECT v FROM t ORDER BY v")?;
            let v = s
                .query_map([], |r| r.get(0))?
                .collect::<Result<Vec<i64>, _>>()?;
            Ok(v)
        })
        .await
        .unwrap();
    assert_eq!(values, vec![1, 3]);
}

fn one_line_exit_2(args: &[&str], env: &[(&str, &str)], expect: &str) {
    let (code, out, err) = run_cli(args, env);
    assert_eq!(code, 2, "stdout: {out}\nstderr: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one clear line, got: {err}");
    assert!(
        lines[0].contains(expect),
        "{:?} should name {expect:?}",
        lines[0]
    );
}

#[test]
fn bad_config_exits_2_with_one_line_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hangin.toml");
    let f = file.display().to_string();
    std::fs::write(&file, "[auth]\notp_tll_seconds = 5\n").unwrap();
    one_line_exit_2(
        &["config", "check", "--config", &f],
        &[],
        "auth.otp_tll_seconds",
    );
    std::fs::write(&file, "[cable]\nkey_style = \"kebab\"\n").unwrap();
    one_line_exit_2(&["config", "check", "--config", &f], &[], "cable.key_style");
    std::fs::write(&file, "").unwrap();
    one_line_exit_2(
        &["config", "check", "--config", &f],
        &[("HANGIN_LIMITS__FRAME_BYTES", "lots")],
        "limits.frame_bytes",
    );
    let missing = dir.path().join("nope.toml").display().to_string();
    one_line_exit_2(&["serve", "--config", &missing], &[], "nope.toml");
    let unreadable = dir.path().display().to_string(); // a directory cannot be read as a file
    one_line_exit_2(&["serve", "--config", &unreadable], &[], &unreadable);
}

/// `hangin config example` prints a commented file that `config check` accepts as is, even
/// where the present configuration is broken; `--package` prints the shipped file exactly.
#[test]
fn config_example_is_a_valid_file_and_the_package_form_is_the_shipped_one() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, "[auth]\nnope = 1\n").unwrap();
    let (code, out, err) = run_cli(
        &["config", "example"],
        &[("HANGIN_CONFIG", broken.to_str().unwrap())],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("\n[limits]\n") && out.contains("\n# "),
        "{out}"
    );
    let file = dir.path().join("example.toml");
    std::fs::write(&file, &out).unwrap();
    let data = dir.path().join("data");
    let (code, checked, err) = run_cli(
        &["config", "check", "--config", file.to_str().unwrap()],
        &[("HANGIN_DATA_DIR", data.to_str().unwrap())],
    );
    assert_eq!(code, 0, "{err}");
    assert!(checked.contains("listen = \"127.0.0.1:3000\""), "{checked}");
    let (code, package, err) = run_cli(&["config", "example", "--package"], &[]);
    assert_eq!(code, 0, "{err}");
    let shipped =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/hangin.toml"))
            .unwrap();
    assert!(
        package == shipped,
        "systemd/hangin.toml is not `hangin config example --package`"
    );
}

#[test]
fn config_check_prints_effective_config_with_secrets_masked() {
    let (code, out, err) = run_cli(
        &["config", "check"],
        &[
            ("HANGIN_OTP__WEBHOOK__SECRET", "whsec_c2VjcmV0"),
            ("HANGIN_CABLE__KEY_STYLE", "camel"),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("key_style = \"camel\""), "{out}");
    assert!(!out.contains("whsec_c2VjcmV0"));
    assert!(out.contains("********"));
}

#[test]
fn client_commands_print_the_documented_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let (code, out, _) = run_cli(&["client", "create", "phone", "--data-dir", &d], &[]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("client_id: ") && lines[1].starts_with("client_secret: "),
        "{out}"
    );
    let (_, out, _) = run_cli(
        &["client", "create", "web", "--json", "--data-dir", &d],
        &[],
    );
    let doc: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(doc["name"], "web");
    let (_, out, _) = run_cli(&["client", "list", "--data-dir", &d], &[]);
    assert!(out.contains("phone") && out.contains("web"));
    assert!(
        !out.contains(doc["client_secret"].as_str().unwrap()),
        "secrets are never listed"
    );
    let (code, _, _) = run_cli(&["client", "delete", "phone", "--data-dir", &d], &[]);
    assert_eq!(code, 0);
    let (_, out, _) = run_cli(&["client", "list", "--data-dir", &d], &[]);
    assert!(!out.contains("phone"));
}
