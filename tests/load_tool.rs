//! The load tool (`tools/hangin-load`) against the real server binary, at small sizes: every
//! scenario runs end to end and its numbers add up (all deliveries arrive, every acknowledged
//! message is in the database, every login gets a token). The full-size runs are in the README.

use std::path::PathBuf;
use std::time::Duration;

use hangin_load::report::Report;
use hangin_load::scenarios::{self, Ctx};

fn ctx(first_number: u64) -> Ctx {
    hangin_load::raise_nofile();
    Ctx {
        bin: PathBuf::from(env!("CARGO_BIN_EXE_hangin")),
        url: None,
        data_dir: None,
        pid: None,
        otp_log: None,
        server_cpus: Vec::new(),
        sources: Vec::new(),
        connect_concurrency: 32,
        first_number,
    }
}

fn value(r: &Report, key: &str) -> f64 {
    r.figures
        .iter()
        .find(|f| f.key == key)
        .unwrap_or_else(|| panic!("no figure {key} in {}", r.render()))
        .value
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_delivers_every_message_to_every_subscriber() {
    let r = scenarios::fanout(
        &ctx(5_550_000_000),
        &scenarios::FanoutArgs {
            subscribers: 40,
            rate: 50.0,
            messages: 30,
            warmup: 2,
            padding: 10,
        },
    )
    .await
    .unwrap();
    assert_eq!(value(&r, "fanout_missing"), 0.0, "{}", r.render());
    assert_eq!(r.details["delivery"]["count"], 40 * 30);
    assert!(value(&r, "fanout_p99_ms") > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storm_counts_only_durable_messages() {
    let mut c = ctx(5_551_000_000);
    let dir = tempfile::tempdir().unwrap();
    c.data_dir = Some(dir.path().join("data"));
    let r = scenarios::storm(
        &c,
        &scenarios::StormArgs {
            chats: 5,
            speakers: 2,
            listeners: 1,
            duration: Duration::from_millis(1500),
            window: 2,
            padding: 10,
        },
    )
    .await
    .unwrap();
    let acked = r.details["messages_acknowledged"].as_u64().unwrap();
    assert!(acked > 10, "{}", r.render());
    // Every echo the speakers saw was committed before it was broadcast.
    assert_eq!(
        r.details["messages_in_database"].as_u64(),
        Some(acked),
        "{}",
        r.render()
    );
    assert_eq!(value(&r, "storm_closed_early"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_holds_every_connection_and_login_issues_every_token() {
    let r = scenarios::idle(
        &ctx(5_552_000_000),
        &scenarios::IdleArgs {
            conns: 60,
            group: 6,
            chat: true,
            hold: Duration::from_secs(4),
        },
    )
    .await
    .unwrap();
    assert_eq!(value(&r, "idle_closed_early"), 0.0, "{}", r.render());
    assert!(value(&r, "idle_rss_conns_mb") > value(&r, "idle_rss_start_mb"));
    // Every connection heard its group's "hello".
    assert_eq!(r.details["hello_delivery"]["count"], 60);

    let r = scenarios::login(
        &ctx(5_553_000_000),
        &scenarios::LoginArgs {
            logins: 30,
            concurrency: 4,
        },
    )
    .await
    .unwrap();
    assert!(value(&r, "login_token_per_s") > 0.0, "{}", r.render());
    assert_eq!(r.details["token_latency"]["count"], 30);

    let r = scenarios::ready(
        &ctx(5_554_000_000),
        &scenarios::ReadyArgs {
            runs: 2,
            users: 20,
            settle: Duration::from_millis(200),
        },
    )
    .await
    .unwrap();
    assert_eq!(r.details["ready"]["count"], 2);
    assert!(value(&r, "ready_ms") > 0.0);
}
