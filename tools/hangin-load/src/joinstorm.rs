//! `joinstorm`: M clients, all mutual contacts of one online chat owner, subscribe
//! `ChatsChannel` (online) and then all join the owner's chat within a second (a class joining
//! one chat). Measured: server RSS per connection once the storm has settled, and the frames
//! (and bytes) the clients received per join, which the member-list updates dominate.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

use crate::cable::{self, Ws, CHATS};
use crate::progress;
use crate::report::{Report, Target};
use crate::scenarios::{fleet, mb, new_report, Ctx};
use crate::stats::Samples;

#[derive(Debug, Clone)]
pub struct JoinstormArgs {
    pub clients: usize,
    /// The joins are spread evenly over this long.
    pub spread: Duration,
    /// The storm has settled after this long without a frame (pings aside).
    pub quiet: Duration,
    /// Give up waiting for quiet after this long.
    pub timeout: Duration,
}

/// Frames and bytes all clients received (pings aside), and when the last one came.
#[derive(Default)]
struct Counters {
    frames: AtomicU64,
    bytes: AtomicU64,
    last_ns: AtomicU64,
}

struct Joined {
    confirm_ns: Option<u64>,
    rejected: bool,
    closed_early: bool,
}

pub async fn joinstorm(ctx: &Ctx, a: &JoinstormArgs) -> anyhow::Result<Report> {
    let mut report = new_report(ctx, "joinstorm");
    let m = a.clients;
    let (mut srv, minted) = ctx.provision(m + 1, m + 1, true, &[])?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_start = srv.rss_kib();
    let ws_url = srv.ws.clone();
    let owner_user = minted.users[0].clone();
    let mut owner = cable::connect(&ws_url, &owner_user.token, ctx.source(0)).await?;
    cable::subscribe(&mut owner, CHATS).await?;
    let chat = cable::create_chat(&mut owner, "joinstorm").await?;
    let ident = cable::chat_identifier(chat);
    cable::subscribe(&mut owner, &ident).await?;

    let conns = fleet(
        "connect + ChatsChannel",
        minted.users[1..].to_vec(),
        ctx.connect_concurrency,
        |i, u| {
            let (url, src) = (ws_url.clone(), ctx.source(i + 1));
            async move {
                let mut ws = cable::connect(&url, &u.token, src).await?;
                cable::subscribe(&mut ws, CHATS).await?;
                Ok(ws)
            }
        },
    )
    .await?;
    let counters = Arc::new(Counters::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut triggers = Vec::with_capacity(m);
    let mut handles = Vec::with_capacity(m + 1);
    for ws in std::iter::once(owner).chain(conns) {
        let (tx, rx) = mpsc::channel::<()>(1);
        triggers.push(tx);
        handles.push(tokio::spawn(client(
            ws,
            ident.clone(),
            rx,
            stop_rx.clone(),
            counters.clone(),
        )));
    }
    // The owner (index 0) has joined already; it only listens.
    triggers.remove(0);
    // Online announcements of the setup settle first.
    wait_quiet(&counters, a.quiet, a.timeout).await;
    let rss_online = srv.rss_kib();
    let frames0 = counters.frames.load(Ordering::Relaxed);
    let bytes0 = counters.bytes.load(Ordering::Relaxed);

    progress!("joinstorm: {m} joins over {:?}", a.spread);
    let cpu0 = srv.cpu_seconds();
    let t0 = Instant::now();
    let t0_ns = crate::now_ns();
    for (i, tx) in triggers.iter().enumerate() {
        let at = t0 + a.spread.mul_f64(i as f64 / m.max(1) as f64);
        tokio::time::sleep_until(at.into()).await;
        tx.send(()).await.ok();
    }
    let sent_secs = t0.elapsed().as_secs_f64();
    let settled = wait_quiet(&counters, a.quiet, a.timeout).await;
    let last = counters.last_ns.load(Ordering::Relaxed);
    let storm_secs = last.saturating_sub(t0_ns) as f64 / 1e9;
    let cpu_secs = match (cpu0, srv.cpu_seconds()) {
        (Some(x), Some(y)) => y - x,
        _ => 0.0,
    };
    let frames = counters.frames.load(Ordering::Relaxed) - frames0;
    let bytes = counters.bytes.load(Ordering::Relaxed) - bytes0;
    // "After it settles": a moment more for the server's queues and allocator to come to rest.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_settled = srv.rss_kib();
    let hwm = srv.hwm_kib();
    stop_tx.send(true).ok();
    let mut confirms = Samples::default();
    let mut closed_early = 0usize;
    let mut unanswered = 0usize;
    for (i, h) in handles.into_iter().enumerate() {
        let j = h.await?;
        closed_early += j.closed_early as usize;
        unanswered += j.rejected as usize;
        match j.confirm_ns {
            Some(ns) => confirms.push(ns),
            None if i > 0 => unanswered += 1,
            None => {}
        }
    }
    let (warnings, slow) = srv.warnings();
    srv.stop()?;

    let conns = (m + 1) as f64;
    let per_conn =
        |kib: Option<u64>| (kib.unwrap_or(0) as f64 - rss_start.unwrap_or(0) as f64) / conns;
    report.figure(
        "joinstorm_kib_per_conn",
        &format!("RSS per connection after {m} joins settled"),
        per_conn(rss_settled),
        "KiB",
        (m >= 1000).then_some(Target::AtMost(10.0)),
    );
    report.figure(
        "joinstorm_kib_per_conn_online",
        "RSS per connection before the joins",
        per_conn(rss_online),
        "KiB",
        None,
    );
    report.figure(
        "joinstorm_frames_per_join",
        "frames received per join (all clients)",
        frames as f64 / m.max(1) as f64,
        "",
        None,
    );
    report.figure(
        "joinstorm_kib_per_join",
        "bytes received per join (all clients)",
        bytes as f64 / m.max(1) as f64 / 1024.0,
        "KiB",
        None,
    );
    report.figure(
        "joinstorm_settle_s",
        "first join → last frame",
        storm_secs,
        "s",
        None,
    );
    report.figure(
        "joinstorm_confirm_p99_ms",
        "join → confirm_subscription p99",
        confirms.summary().p99_ms,
        "ms",
        None,
    );
    report.figure(
        "joinstorm_server_cpu_s",
        "server CPU for the storm",
        cpu_secs,
        "s",
        None,
    );
    report.figure(
        "joinstorm_failed",
        "joins unanswered or connections closed",
        (unanswered + closed_early) as f64,
        "",
        Some(Target::AtMost(0.0)),
    );
    report.detail("confirm_latency", confirms.summary());
    report.detail("settled", settled);
    report.detail("joins_sent_over_s", sent_secs);
    report.detail(
        "rss_mb",
        json!({"start": mb(rss_start), "online": mb(rss_online), "settled": mb(rss_settled), "peak": mb(hwm)}),
    );
    report.detail("frames", frames);
    report.detail("bytes", bytes);
    report.detail(
        "server_warnings",
        json!({"total": warnings, "too_slow": slow}),
    );
    report.detail(
        "args",
        json!({"clients": m, "spread_s": a.spread.as_secs_f64(), "quiet_s": a.quiet.as_secs_f64()}),
    );
    Ok(report.finish())
}

/// Until no frame has arrived for `quiet` (true), or `timeout` (false).
async fn wait_quiet(c: &Counters, quiet: Duration, timeout: Duration) -> bool {
    let t0 = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let last = c.last_ns.load(Ordering::Relaxed);
        if crate::now_ns().saturating_sub(last) >= quiet.as_nanos() as u64 {
            return true;
        }
        if t0.elapsed() > timeout {
            progress!("joinstorm: frames still arriving after {timeout:?}");
            return false;
        }
    }
}

/// Read and count every frame; on the trigger, join the chat and time its confirmation.
async fn client(
    mut ws: Ws,
    ident: String,
    mut trigger: mpsc::Receiver<()>,
    mut stop: watch::Receiver<bool>,
    c: Arc<Counters>,
) -> Joined {
    let mut out = Joined {
        confirm_ns: None,
        rejected: false,
        closed_early: false,
    };
    let marker = cable::escaped(&ident);
    let mut sent_at = None;
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            Some(()) = trigger.recv() => {
                sent_at = Some(crate::now_ns());
                let frame = json!({"command": "subscribe", "identifier": ident}).to_string();
                if ws.send(Message::Text(frame.into())).await.is_err() {
                    out.closed_early = true;
                    break;
                }
            }
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(t))) => {
                    if cable::is_ping(&t) {
                        continue;
                    }
                    let now = crate::now_ns();
                    c.frames.fetch_add(1, Ordering::Relaxed);
                    c.bytes.fetch_add(t.len() as u64, Ordering::Relaxed);
                    c.last_ns.fetch_max(now, Ordering::Relaxed);
                    if let Some(sent) = sent_at {
                        let kind = cable::frame_type(&t);
                        if out.confirm_ns.is_none() && kind.is_some() && t.contains(&marker) {
                            out.confirm_ns = Some(now - sent);
                            out.rejected = kind == Some("reject_subscription");
                        }
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    out.closed_early = true;
                    break;
                }
                Some(Ok(_)) => {}
            },
        }
    }
    let _ = ws.close(None).await;
    out
}
