//! First boot of the package: the shipped default config (`systemd/hangin.toml`, installed as
//! /etc/hangin/hangin.toml) passes `config check` and serves on a machine with no modem and no
//! internet, with login codes in the log and one start line saying what to configure. The
//! refusal of the `log` driver on a LAN address stays for anyone who did not opt in.

mod common;

use std::path::{Path, PathBuf};

use common::{run_cli, Server};

fn shipped_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/hangin.toml")
}

#[test]
fn shipped_config_passes_config_check() {
    let dir = tempfile::tempdir().unwrap();
    let config = shipped_config();
    let (code, out, err) = run_cli(
        &["config", "check", "--config", config.to_str().unwrap()],
        &[("HANGIN_DATA_DIR", dir.path().to_str().unwrap())],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("listen = \"0.0.0.0:3000\""), "{out}");
    assert!(out.contains("driver = \"log\""), "{out}");
    assert!(err.contains("configuration OK"), "{err}");
}

/// Without the admin's opt-in, the `log` driver on a LAN address is refused, by `config check`
/// as by `serve` (exit 2, one line naming the fix); on loopback it needs no opt-in.
#[test]
fn log_driver_on_the_lan_needs_the_opt_in() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(shipped_config()).unwrap();
    assert!(text.contains("\nallow_insecure_log_driver = true\n"));
    let refused = dir.path().join("refused.toml");
    std::fs::write(
        &refused,
        text.replace(
            "\nallow_insecure_log_driver = true\n",
            "\nallow_insecure_log_driver = false\n",
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let env = [("HANGIN_DATA_DIR", data.to_str().unwrap())];
    for command in ["config", "serve"] {
        let mut args = vec![command];
        if command == "config" {
            args.push("check");
        }
        args.extend(["--config", refused.to_str().unwrap()]);
        let (code, _, err) = run_cli(&args, &env);
        assert_eq!(code, 2, "{command}: {err}");
        assert!(err.contains("allow_insecure_log_driver = true"), "{err}");
    }
    let (code, _, err) = run_cli(
        &[
            "config",
            "check",
            "--config",
            refused.to_str().unwrap(),
            "--listen",
            "127.0.0.1:3000",
        ],
        &env,
    );
    assert_eq!(code, 0, "{err}");
}

/// `serve` on the shipped file (only the data dir, the port and mDNS overridden, as the tests
/// must stay on loopback): it starts without any device, says in one line how to get real
/// delivery, and the first person can log in with the code from the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_config_serves_and_lets_the_first_person_in() {
    let config = shipped_config();
    let s = Server::start_first_time(&[("HANGIN_CONFIG", config.to_str().unwrap())]);
    let r = s.http().get(s.url("/up")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let hint = s.log_lines("login codes go to this log");
    assert_eq!(hint.len(), 1, "{}", s.log_text());
    assert!(
        hint[0].contains("journalctl -u hangin -g 'OTP for'"),
        "{}",
        hint[0]
    );
    assert!(hint[0].contains("[otp] driver"), "{}", hint[0]);
    let user = s.sign_up("First", "Person").await;
    let r = s
        .http()
        .get(s.url("/user"))
        .bearer_auth(&user.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
