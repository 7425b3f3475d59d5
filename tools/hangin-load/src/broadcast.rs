//! `broadcast`: Hashrocket's websocket-shootout method mapped to one chat and `speak`. Clients
//! are all in one chat; at each step a sample of `speak`s from random clients is sent with a few
//! in flight, and a message's round trip is send → the moment the last client received it (the
//! shootout times `broadcastResult`, which its servers send after writing to every client). The
//! client count steps up until the p95 round trip exceeds 500 ms; the figure is the largest count
//! still within it, to sit beside the published shootout, ActionCable and AnyCable figures.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

use crate::cable::{self, Ws, CHATS};
use crate::progress;
use crate::report::{Report, Target};
use crate::scenarios::{fleet, mb, new_report, Ctx};
use crate::server;
use crate::stats::Samples;

#[derive(Debug, Clone)]
pub struct BroadcastArgs {
    /// Clients added per step (the first step has this many).
    pub step: usize,
    pub max_clients: usize,
    /// Broadcasts measured per step.
    pub sample: usize,
    /// Broadcasts in flight.
    pub concurrent: usize,
    /// Bytes of padding in each body (the shootout's round 2: 200).
    pub padding: usize,
    /// The p95 round trip that ends the stepping.
    pub limit_ms: f64,
    /// No new step starts after this long.
    pub budget: Duration,
}

/// Published figures to print beside ours (../shared/notes/performance-anchors.md).
pub const ANCHORS: &[&str] = &[
    "published, clients at p95 ≤ 500 ms (websocket-shootout round 2, i7-4790K server, 4 client machines): Rails 5 ActionCable/MRI 500, JRuby 1,000, Go x/net 22,000, Rust ws-rs 20,000, uWebSockets 24,000",
    "published, broadcast RTT p95 at 1k / 10k clients (AnyCable benchmarks 2020-06-30, c3.2xlarge 8 vCPU): AnyCable 1.0 196 / 1,033 ms, ActionCable 8 workers 1,181 / 9,758 ms",
    "here: one 2-core VM runs server and clients; a round trip ends when the last client has the message",
];

#[derive(Debug, Clone, Serialize)]
struct Step {
    clients: usize,
    p95_ms: f64,
    median_ms: f64,
    min_ms: f64,
    max_ms: f64,
    echo_p95_ms: f64,
    completed: usize,
    join_s: f64,
    run_s: f64,
}

/// Shared between the orchestrator and every client task.
struct Track {
    step: AtomicU64,
    expected: AtomicU32,
    counts: Vec<AtomicU32>,
    last: Vec<AtomicU64>,
    sender: Vec<AtomicUsize>,
    events: mpsc::UnboundedSender<Ev>,
}

enum Ev {
    /// Every client has message `idx` of the step.
    Done(usize),
    /// The sender got its own message back after this many ns.
    Echo(u64),
}

pub async fn broadcast(ctx: &Ctx, a: &BroadcastArgs) -> anyhow::Result<Report> {
    let mut report = new_report(ctx, "broadcast");
    let step = a.step.max(1);
    let sample = a.sample.max(1);
    // Each client takes a descriptor on both sides; stay below the limit we have.
    let nofile = crate::raise_nofile() as usize;
    let max_clients = a.max_clients.min(nofile.saturating_sub(200)).max(step);
    if max_clients < a.max_clients {
        report.note(format!(
            "capped at {max_clients} clients by the open-file limit ({nofile})"
        ));
    }
    // Beyond ~28,000 connections one source address runs out of ports.
    let mut ctx = ctx.clone();
    if ctx.sources.is_empty() && max_clients > 20_000 {
        ctx.sources = (1..=4u8).map(|i| IpAddr::from([127, 0, 0, i])).collect();
    }
    let ctx = &ctx;
    let (mut srv, minted) = ctx.provision(max_clients, max_clients, true, &[])?;
    let ws_url = srv.ws.clone();
    let mut owner = cable::connect(&ws_url, &minted.users[0].token, ctx.source(0)).await?;
    cable::subscribe(&mut owner, CHATS).await?;
    let chat = cable::create_chat(&mut owner, "broadcast").await?;
    let ident = cable::chat_identifier(chat);
    cable::subscribe(&mut owner, &ident).await?;

    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
    let track = Arc::new(Track {
        step: AtomicU64::new(u64::MAX),
        expected: AtomicU32::new(0),
        counts: (0..sample).map(|_| AtomicU32::new(0)).collect(),
        last: (0..sample).map(|_| AtomicU64::new(0)).collect(),
        sender: (0..sample).map(|_| AtomicUsize::new(usize::MAX)).collect(),
        events: ev_tx,
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let closed = Arc::new(AtomicUsize::new(0));
    let (owner_tx, owner_h) =
        spawn_client(0, owner, stop_rx.clone(), track.clone(), closed.clone());
    let mut senders = vec![owner_tx];
    let mut handles = vec![owner_h];

    let padding = "x".repeat(a.padding);
    let started = Instant::now();
    let cpu0 = srv.cpu_seconds();
    let own0 = server::own_cpu_seconds();
    let mut steps: Vec<Step> = Vec::new();
    let mut best: Option<Step> = None;
    let mut rng = 0x9e3779b97f4a7c15u64;
    let stopped;
    let mut s = 0u64;
    loop {
        // The owner is user 0 and client 0; step k has k × step clients.
        let have = senders.len();
        let target = if s == 0 { step } else { have + step }.min(max_clients);
        let t_join = Instant::now();
        let added = fleet(
            &format!("step {}: join", s + 1),
            minted.users[have..target.max(have)].to_vec(),
            ctx.connect_concurrency,
            |i, u| {
                let (url, src, ident) = (ws_url.clone(), ctx.source(have + i), ident.clone());
                async move {
                    let mut ws = cable::connect(&url, &u.token, src).await?;
                    cable::subscribe(&mut ws, &ident).await?;
                    Ok(ws)
                }
            },
        )
        .await?;
        for ws in added {
            let id = senders.len();
            let (tx, h) = spawn_client(id, ws, stop_rx.clone(), track.clone(), closed.clone());
            senders.push(tx);
            handles.push(h);
        }
        let join_s = t_join.elapsed().as_secs_f64();
        let clients = senders.len();
        // Let the joins' updates drain before timing.
        tokio::time::sleep(Duration::from_millis(500)).await;

        // One sample, `concurrent` in flight.
        for i in 0..sample {
            track.counts[i].store(0, Ordering::Relaxed);
            track.last[i].store(0, Ordering::Relaxed);
            track.sender[i].store(usize::MAX, Ordering::Relaxed);
        }
        track.expected.store(clients as u32, Ordering::Relaxed);
        track.step.store(s, Ordering::Release);
        let t_run = Instant::now();
        let mut sent_at = vec![0u64; sample];
        let mut rtt = Samples::default();
        let mut echo = Samples::default();
        let (mut next, mut in_flight) = (0usize, 0usize);
        let wait = Duration::from_millis((a.limit_ms * 20.0) as u64).max(Duration::from_secs(10));
        while rtt.len() < sample {
            while in_flight < a.concurrent.max(1) && next < sample {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let who = (rng % clients as u64) as usize;
                track.sender[next].store(who, Ordering::Relaxed);
                let now = crate::now_ns();
                sent_at[next] = now;
                let frame = cable::speak_frame(&ident, now, (s << 32) | next as u64, &padding);
                senders[who].send(frame).await.ok();
                next += 1;
                in_flight += 1;
            }
            match tokio::time::timeout(wait, ev_rx.recv()).await {
                Ok(Some(Ev::Done(idx))) => {
                    let last = track.last[idx].load(Ordering::Relaxed);
                    rtt.push(last.saturating_sub(sent_at[idx]));
                    in_flight -= 1;
                }
                Ok(Some(Ev::Echo(ns))) => echo.push(ns),
                Ok(None) => anyhow::bail!("client tasks ended"),
                Err(_) => {
                    progress!(
                        "step {}: a broadcast did not reach all {clients} clients within {wait:?} ({} connections closed)",
                        s + 1,
                        closed.load(Ordering::Relaxed)
                    );
                    break;
                }
            }
        }
        // Late echoes of this step.
        while let Ok(ev) = ev_rx.try_recv() {
            if let Ev::Echo(ns) = ev {
                echo.push(ns);
            }
        }
        let sum = rtt.summary();
        let completed = rtt.len();
        let p95 = if completed < sample {
            f64::INFINITY
        } else {
            pct(&rtt, 95.0)
        };
        let st = Step {
            clients,
            p95_ms: p95,
            median_ms: sum.p50_ms,
            min_ms: rtt.0.iter().min().map(|x| *x as f64 / 1e6).unwrap_or(0.0),
            max_ms: sum.max_ms,
            echo_p95_ms: pct(&echo, 95.0),
            completed,
            join_s,
            run_s: t_run.elapsed().as_secs_f64(),
        };
        progress!(
            "clients: {clients:>6}  p95 {:>8.1} ms  median {:>7.1}  min {:>6.1}  max {:>7.1}  (sender echo p95 {:.1}; join {:.1} s, sample {:.1} s; RSS {:.0} MB)",
            st.p95_ms,
            st.median_ms,
            st.min_ms,
            st.max_ms,
            st.echo_p95_ms,
            st.join_s,
            st.run_s,
            mb(srv.rss_kib())
        );
        steps.push(st.clone());
        s += 1;
        if st.p95_ms > a.limit_ms {
            stopped = "p95 over the limit";
            break;
        }
        best = Some(st);
        if clients >= max_clients {
            stopped = "max clients reached (the limit was not found)";
            break;
        }
        if started.elapsed() > a.budget {
            stopped = "time budget spent (the limit was not found)";
            break;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = match (cpu0, srv.cpu_seconds()) {
        (Some(x), Some(y)) => (y - x) / elapsed * 100.0,
        _ => 0.0,
    };
    let own_cpu = (server::own_cpu_seconds() - own0) / elapsed * 100.0;
    let hwm = srv.hwm_kib();
    stop_tx.send(true).ok();
    for h in handles {
        let _ = h.await;
    }
    let (warnings, slow) = srv.warnings();
    srv.stop()?;

    let best_clients = best.as_ref().map(|b| b.clients).unwrap_or(0);
    report.figure(
        "broadcast_max_clients",
        &format!("clients with broadcast p95 ≤ {} ms", a.limit_ms),
        best_clients as f64,
        "clients",
        ctx.target(
            Some(Target::AtLeast(20_000.0)),
            Some(Target::AtLeast(5_000.0)),
        ),
    );
    report.figure(
        "broadcast_p95_at_max_ms",
        "p95 round trip at that count",
        best.as_ref().map(|b| b.p95_ms).unwrap_or(0.0),
        "ms",
        None,
    );
    report.figure(
        "broadcast_server_cpu_pct",
        "server CPU over the run",
        cpu,
        "% core",
        None,
    );
    report.figure(
        "broadcast_closed_early",
        "connections the server closed",
        closed.load(Ordering::Relaxed) as f64,
        "",
        Some(Target::AtMost(0.0)),
    );
    report.detail("steps", &steps);
    report.detail("stopped", stopped);
    report.detail("load_tool_cpu_pct", own_cpu);
    report.detail("peak_rss_mb", mb(hwm));
    report.detail(
        "server_warnings",
        json!({"total": warnings, "too_slow": slow}),
    );
    report.detail(
        "args",
        json!({"step": step, "max_clients": max_clients, "sample": sample, "concurrent": a.concurrent,
               "padding": a.padding, "limit_ms": a.limit_ms, "budget_s": a.budget.as_secs_f64()}),
    );
    report.note(format!("stopped: {stopped}"));
    for n in ANCHORS {
        report.note(*n);
    }
    Ok(report.finish())
}

/// Nearest-rank percentile in ms (the shootout's `--limit-percentile`).
fn pct(s: &Samples, p: f64) -> f64 {
    if s.is_empty() {
        return 0.0;
    }
    let mut v = s.0.clone();
    v.sort_unstable();
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1] as f64 / 1e6
}

/// A client: sends what it is given, and notes every stamped message of the current step.
fn spawn_client(
    id: usize,
    mut ws: Ws,
    mut stop: watch::Receiver<bool>,
    track: Arc<Track>,
    closed: Arc<AtomicUsize>,
) -> (mpsc::Sender<String>, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<String>(8);
    let h = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                Some(text) = rx.recv() => {
                    if ws.send(Message::Text(text.into())).await.is_err() {
                        closed.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                }
                msg = ws.next() => match msg {
                    Some(Ok(Message::Text(t))) => {
                        let Some((sent, seq)) = cable::stamp_of(&t) else { continue };
                        // History frames carry old stamps; only this step's messages count.
                        if seq >> 32 != track.step.load(Ordering::Acquire) || t.contains(r#"{"messages":["#) {
                            continue;
                        }
                        let idx = (seq & 0xffff_ffff) as usize;
                        if idx >= track.counts.len() {
                            continue;
                        }
                        let now = crate::now_ns();
                        track.last[idx].fetch_max(now, Ordering::Relaxed);
                        if track.sender[idx].load(Ordering::Relaxed) == id {
                            let _ = track.events.send(Ev::Echo(now.saturating_sub(sent)));
                        }
                        let n = track.counts[idx].fetch_add(1, Ordering::AcqRel) + 1;
                        if n == track.expected.load(Ordering::Relaxed) {
                            let _ = track.events.send(Ev::Done(idx));
                        }
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                        closed.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    Some(Ok(_)) => {}
                },
            }
        }
        let _ = ws.close(None).await;
    });
    (tx, h)
}
