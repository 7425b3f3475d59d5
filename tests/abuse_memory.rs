//! Issue 12: what one logged-in user can make the server hold, over real TCP against the real
//! server binary (the `hangin-load` abuse scenarios at the sizes). Peaks must stay under
//! 200 MB and memory must come back to ≤ 80 MB once the sockets close.
//!
//! - The slow-consumer bound is the send queue's byte budget (`[limits] send_queue_bytes`):
//!   every never-reading socket is closed as too slow.
//! - The history bomb is bounded by the history limit on join (`[limits] history_messages`,
//!   `history_bytes`): a join sends at most 1 MiB of history, so ten joins cannot pin 740 MB.

use std::path::PathBuf;

use hangin_load::abuse::{self, HistoryBombArgs, SlowArgs, AFTER_CLOSE_MB, PEAK_MB};
use hangin_load::report::Report;
use hangin_load::scenarios::Ctx;

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
async fn never_reading_sockets_are_cut_off_by_bytes_and_memory_comes_back() {
    let r = abuse::slow_consumers(&ctx(5_560_000_000), &SlowArgs::default())
        .await
        .unwrap();
    let text = format!("{}\n{:#}", r.render(), r.details);
    // 1,100 frames of ~25 KB per socket: over 1 MiB, every socket is too slow, every round.
    assert_eq!(value(&r, "slow_too_slow_min"), 20.0, "{text}");
    assert!(value(&r, "slow_rss_peak_mb") < PEAK_MB, "{text}");
    assert!(
        value(&r, "slow_rss_after_close_mb") <= AFTER_CLOSE_MB,
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_bomb_joined_ten_times_stays_bounded() {
    let r = abuse::history_bomb(&ctx(5_561_000_000), &HistoryBombArgs::default())
        .await
        .unwrap();
    let text = format!("{}\n{:#}", r.render(), r.details);
    assert!(value(&r, "bomb_rss_peak_mb") < PEAK_MB, "{text}");
    // 80 sockets that were each sent a 1 MiB history keep no copy of it.
    assert!(value(&r, "bomb_rss_readers_mb") <= AFTER_CLOSE_MB, "{text}");
    assert!(
        value(&r, "bomb_rss_after_close_mb") <= AFTER_CLOSE_MB,
        "{text}"
    );
}

/// The soak scenario at a small size: clients churn through connect, `ChatsChannel`, a chat of
/// their own, `speak`, `go_to_background`, return and disconnect; nothing acknowledged is lost
/// and the server ends without a connection's socket or a thread of its own left over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_soak_loses_nothing_and_leaks_no_descriptors() {
    use std::time::Duration;
    let r = abuse::soak(
        &ctx(5_562_000_000),
        &abuse::SoakArgs {
            clients: 40,
            duration: Duration::from_secs(12),
            mark: Duration::from_secs(4),
            pause: Duration::from_millis(300),
            group: 10,
            sample_every: Duration::from_secs(2),
        },
    )
    .await
    .unwrap();
    let text = format!("{}\n{:#}", r.render(), r.details);
    assert!(value(&r, "soak_cycles") >= 20.0, "{text}");
    assert_eq!(value(&r, "soak_errors"), 0.0, "{text}");
    assert_eq!(value(&r, "soak_lost"), 0.0, "{text}");
    assert!(r.details["acknowledged"].as_u64().unwrap() >= 40, "{text}");
    // Every connection is gone: no socket beyond the baseline. (A database reader the pool
    // opened under load may stay, up to the pool's size.)
    let strings = |key: &str| -> Vec<String> {
        serde_json::from_value(r.details[key].clone()).unwrap_or_default()
    };
    let fds_new = strings("fds_new_at_end");
    assert!(
        fds_new.iter().all(|f| f.ends_with("hangin.sqlite3")),
        "{text}"
    );
    // Threads beyond the baseline may only be tokio's blocking pool, which periodic blocking
    // work (the database file watch, every second) keeps from retiring; nothing else.
    let threads_new = strings("threads_new_at_end");
    assert!(threads_new.iter().all(|t| t == "tokio-rt-worker"), "{text}");
}

/// The engine holds only the people who are online or in a live chat: a server with 10,000
/// accounts and nobody online starts as small as one with 20 (it held every account's profile
/// and contacts before: +10 MB at this size).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rss_after_start_does_not_grow_with_the_number_of_accounts() {
    let mut rss = Vec::new();
    for (users, first_number) in [(20, 5_562_000_000), (10_000, 5_563_000_000)] {
        let r = hangin_load::scenarios::ready(
            &ctx(first_number),
            &hangin_load::scenarios::ReadyArgs {
                runs: 3,
                users,
                settle: std::time::Duration::from_millis(1500),
            },
        )
        .await
        .unwrap();
        rss.push((users, value(&r, "ready_idle_rss_mb")));
    }
    let grown = rss[1].1 - rss[0].1;
    assert!(grown < 2.0, "RSS after start (users, MB): {rss:?}");
}
