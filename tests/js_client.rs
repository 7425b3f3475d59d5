//! The official `@rails/actioncable` JS client (npm, unmodified) connects, subscribes to both
//! channels, performs `createChat` and `speak`, and receives the frames — run under Node.

mod common;

use std::path::Path;
use std::process::Command;

use common::Server;

#[tokio::test]
async fn official_actioncable_client_works_unmodified() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js");
    if !dir.join("node_modules/@rails/actioncable").exists() {
        // One-time install from the npm registry, pinned by package-lock.json.
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status()
            .expect("npm (Node.js) is needed for this test");
        assert!(status.success(), "npm ci failed in {}", dir.display());
    }
    let s = Server::start(&[]);
    let (a, b) = (
        s.sign_up("Ada", "Node").await,
        s.sign_up("Bea", "Node").await,
    );
    s.befriend(&a, &b).await;
    let cable_url = s.ws_url();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg("actioncable_client.mjs")
            .current_dir(dir)
            .env("HANGIN_CABLE_URL", cable_url)
            .env("TOKEN_A", &a.token)
            .env("TOKEN_B", &b.token)
            .env("UUID_A", &a.uuid)
            .env("UUID_B", &b.uuid)
            .output()
            .expect("node is needed for this test")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "node client failed:\n{stdout}\n{stderr}\nserver log:\n{}",
        s.log_text()
    );
    assert!(stdout.contains("all frames received"), "{stdout}");
}
