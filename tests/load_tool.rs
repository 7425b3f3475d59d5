//! The load tool (`tools/hangin-load`) against the real server binary, at small sizes: every
//! scenario runs end to end and its numbers add up (all deliveries arrive, every acknowledged
//! message is in the database, every login gets a token). The full-size runs are in the README.

use std::path::PathBuf;
use std::time::Duration;

use hangin_load::report::Report;
use hangin_load::scenarios::{self, Ctx};
use hangin_load::{broadcast, joinstorm, lockhog, reconnect};

fn ctx(first_number: u64) -> Ctx {
    hangin_load::raise_nofile();
    Ctx {
        connect_concurrency: 32,
        first_number,
        ..Ctx::new(PathBuf::from(env!("CARGO_BIN_EXE_hangin")))
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

/// Slow-disk mode delays the server's real flushes: every echo waits for at least one delayed
/// fsync, so durable messages/s fall to what the in-flight window allows per delay; and the
/// server runs pinned where `--server-cpus` says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fsync_delay_slows_the_commits_and_pinning_holds() {
    const DELAY_MS: f64 = 50.0;
    let mut c = ctx(5_555_000_000);
    c.fsync_delay_ms = DELAY_MS;
    c.server_cpus = vec![0];
    let r = scenarios::storm(
        &c,
        &scenarios::StormArgs {
            chats: 3,
            speakers: 2,
            listeners: 1,
            duration: Duration::from_millis(1500),
            window: 2,
            padding: 10,
        },
    )
    .await
    .unwrap();
    assert_eq!(r.details["slowfs"]["active"], true, "{}", r.render());
    assert!(r.details["slowfs"]["flushes_delayed"].as_u64().unwrap() > 5);
    assert!(
        r.details["echo"]["p50_ms"].as_f64().unwrap() >= DELAY_MS,
        "{}",
        r.details["echo"]
    );
    // 3 chats × 2 speakers × 2 in flight, each round at least one delay long.
    let ceiling = (3 * 2 * 2) as f64 / (DELAY_MS / 1e3);
    assert!(
        value(&r, "storm_msgs_per_s") <= ceiling * 1.05,
        "{}",
        r.render()
    );
    assert_eq!(r.details["server_cpus_allowed"], "0");
    assert_eq!(r.profile, "server cpus 0, fsync +50 ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lockhog_times_unrelated_subscribes_while_the_hog_works() {
    let r = lockhog::lockhog(
        &ctx(5_556_000_000),
        &lockhog::LockhogArgs {
            chats: 100,
            window: 8,
            hog_sockets: 3,
            subs_per_socket: 5,
            users: 6,
            pause: Duration::from_millis(50),
            precreate: Duration::from_millis(500),
            duration: Duration::from_secs(2),
        },
    )
    .await
    .unwrap();
    assert_eq!(value(&r, "lockhog_timeouts"), 0.0, "{}", r.render());
    assert!(value(&r, "lockhog_subscribes") >= 6.0, "{}", r.render());
    assert!(value(&r, "lockhog_sub_p50_ms") > 0.0);
    assert!(value(&r, "lockhog_sub_max_ms") >= value(&r, "lockhog_sub_p99_ms"));
    // The hog did its part: chats (or a refusal at a per-user limit) and subscriptions.
    assert!(value(&r, "lockhog_hog_chats") + value(&r, "lockhog_hog_refused") > 0.0);
    assert!(value(&r, "lockhog_hog_subscribes") > 3.0, "{}", r.render());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_brings_every_client_back_after_a_graceful_restart() {
    let r = reconnect::reconnect(
        &ctx(5_557_000_000),
        &reconnect::ReconnectArgs {
            users: 40,
            group: 10,
            chats: 8,
            timeout: Duration::from_secs(30),
        },
    )
    .await
    .unwrap();
    assert_eq!(value(&r, "reconnect_failed"), 0.0, "{}", r.render());
    assert_eq!(r.details["chats_latency"]["count"], 40, "{}", r.render());
    // Every member's re-join was answered (confirmed, or rejected when the chat ended).
    assert_eq!(r.details["rejoin_latency"]["count"], 40);
    assert!(value(&r, "reconnect_all_rejoined_s") >= value(&r, "reconnect_chats_p50_ms") / 1e3);
    assert!(value(&r, "reconnect_shutdown_ms") > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joinstorm_counts_frames_per_join_and_rss() {
    let r = joinstorm::joinstorm(
        &ctx(5_558_000_000),
        &joinstorm::JoinstormArgs {
            clients: 30,
            spread: Duration::from_millis(300),
            quiet: Duration::from_millis(500),
            timeout: Duration::from_secs(30),
        },
    )
    .await
    .unwrap();
    assert_eq!(value(&r, "joinstorm_failed"), 0.0, "{}", r.render());
    assert_eq!(r.details["confirm_latency"]["count"], 30);
    // At least the joiner's confirmation and history.
    assert!(
        value(&r, "joinstorm_frames_per_join") >= 2.0,
        "{}",
        r.render()
    );
    assert!(value(&r, "joinstorm_kib_per_conn") > 0.0, "{}", r.render());
    assert_eq!(r.details["settled"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_steps_up_and_every_message_reaches_every_client() {
    let r = broadcast::broadcast(
        &ctx(5_559_000_000),
        &broadcast::BroadcastArgs {
            step: 15,
            max_clients: 30,
            sample: 6,
            concurrent: 2,
            padding: 20,
            // Sanity, not speed: a shared CI box must not end the stepping early.
            limit_ms: 10_000.0,
            budget: Duration::from_secs(60),
        },
    )
    .await
    .unwrap();
    let steps = r.details["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2, "{}", r.render());
    for s in steps {
        assert_eq!(s["completed"], 6, "{s}");
    }
    assert_eq!(steps[1]["clients"], 30);
    assert_eq!(value(&r, "broadcast_max_clients"), 30.0);
    assert_eq!(value(&r, "broadcast_closed_early"), 0.0);
    assert!(r.notes.iter().any(|n| n.contains("ActionCable")));
}
