//! The scenarios. Each starts (or attaches to) a server, provisions users, opens connections,
//! measures, and returns a [`Report`].

use std::future::Future;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_tungstenite::tungstenite::Message;

use crate::cable::{self, Ws, CHATS};
use crate::progress;
use crate::report::{Report, Target};
use crate::server::{self, Launch, Minted, Server};
use crate::stats::Samples;

/// Where and how to run.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub bin: PathBuf,
    /// Attach to this running server instead of starting one.
    pub url: Option<String>,
    /// Data directory: of the attached server (needed to mint users), or where a started server
    /// keeps its database (default: a temporary directory).
    pub data_dir: Option<PathBuf>,
    /// The attached server's pid, for /proc figures.
    pub pid: Option<u32>,
    /// The attached server's log file, for OTP codes (`login`).
    pub otp_log: Option<PathBuf>,
    /// Pin a started server to these CPUs.
    pub server_cpus: Vec<usize>,
    /// Source addresses for client connections (127.0.0.x), used round-robin.
    pub sources: Vec<IpAddr>,
    pub connect_concurrency: usize,
    pub first_number: u64,
    /// Delay every flush of a started server by this many ms (slow-disk mode, `slowfs`).
    pub fsync_delay_ms: f64,
    /// The Pi profile (`--pi`): its own targets.
    pub pi: bool,
    /// Environment a started server gets on top of the tool's own (`--server-env K=V`).
    pub server_env: Vec<(String, String)>,
}

impl Ctx {
    /// Defaults for a server binary: a fresh temporary database, no pinning, no delays.
    pub fn new(bin: PathBuf) -> Ctx {
        Ctx {
            bin,
            url: None,
            data_dir: None,
            pid: None,
            otp_log: None,
            server_cpus: Vec::new(),
            sources: Vec::new(),
            connect_concurrency: 200,
            first_number: 5_550_000_000,
            fsync_delay_ms: 0.0,
            pi: false,
            server_env: Vec::new(),
        }
    }

    pub(crate) fn launch(&self, env: &[(&str, &str)]) -> anyhow::Result<Launch> {
        let mut env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        env.extend(self.server_env.iter().cloned());
        env.extend(crate::slowfs::env(self.fsync_delay_ms)?);
        Ok(Launch {
            bin: self.bin.clone(),
            data_dir: self.data_dir.clone(),
            env,
            cpus: self.server_cpus.clone(),
        })
    }

    /// The profile's name for reports: `plain`, `pi`, or what was set by hand.
    pub fn profile(&self) -> String {
        if self.pi {
            return "pi".into();
        }
        let mut parts = Vec::new();
        if !self.server_cpus.is_empty() {
            let cpus: Vec<String> = self.server_cpus.iter().map(|c| c.to_string()).collect();
            parts.push(format!("server cpus {}", cpus.join(",")));
        }
        if self.fsync_delay_ms > 0.0 {
            parts.push(format!("fsync +{} ms", self.fsync_delay_ms));
        }
        if parts.is_empty() {
            "plain".into()
        } else {
            parts.join(", ")
        }
    }

    /// The target that applies: the plain one, or the Pi profile's.
    pub(crate) fn target(&self, plain: Option<Target>, pi: Option<Target>) -> Option<Target> {
        if self.pi {
            pi
        } else {
            plain
        }
    }

    /// Mint users, then start the server on that database (or attach to the running one).
    pub(crate) fn provision(
        &self,
        count: usize,
        group: usize,
        star: bool,
        env: &[(&str, &str)],
    ) -> anyhow::Result<(Server, Minted)> {
        if let Some(url) = &self.url {
            let dir = self
                .data_dir
                .clone()
                .context("--url needs --data-dir (the server's) to mint users")?;
            let minted = server::mint(&self.bin, &dir, count, group, star, self.first_number)?;
            let srv = Server::attach(url, self.bin.clone(), Some(dir), self.pid, None);
            return Ok((srv, minted));
        }
        let (dir, tmp) = server::data_dir(self.data_dir.clone())?;
        let started = Instant::now();
        let minted = server::mint(&self.bin, &dir, count, group, star, self.first_number)?;
        progress!(
            "minted {count} users (groups of {group}{}) in {:.1} s",
            if star { ", star" } else { "" },
            started.elapsed().as_secs_f64()
        );
        let srv = Server::start_in(&self.launch(env)?, dir, tmp)?;
        progress!(
            "server pid {} ready in {:.1} ms at {}",
            srv.pid.unwrap_or(0),
            srv.ready_after.unwrap_or_default().as_secs_f64() * 1e3,
            srv.http
        );
        Ok((srv, minted))
    }

    pub(crate) fn source(&self, i: usize) -> Option<IpAddr> {
        if self.sources.is_empty() {
            None
        } else {
            Some(self.sources[i % self.sources.len()])
        }
    }
}

/// A report labelled with the context's profile.
pub(crate) fn new_report(ctx: &Ctx, scenario: &str) -> Report {
    let mut r = Report::new(scenario);
    r.profile = ctx.profile();
    r.detail(
        "server_conditions",
        json!({
            "cpus": ctx.server_cpus,
            "fsync_delay_ms": ctx.fsync_delay_ms,
            "env": ctx.server_env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
        }),
    );
    r
}

/// Run `f` over `items` with at most `concurrency` at once, keeping the order; a progress
/// line every second. The first failure aborts with its index.
pub(crate) async fn fleet<I, O, F, Fut>(
    label: &str,
    items: Vec<I>,
    concurrency: usize,
    f: F,
) -> anyhow::Result<Vec<O>>
where
    I: Send + 'static,
    O: Send + 'static,
    F: Fn(usize, I) -> Fut,
    Fut: Future<Output = anyhow::Result<O>> + Send + 'static,
{
    let total = items.len();
    let done = Arc::new(AtomicUsize::new(0));
    let slots = Arc::new(Semaphore::new(concurrency.max(1)));
    let started = Instant::now();
    let ticker = {
        let done = done.clone();
        let label = label.to_string();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tick.tick().await;
                progress!("{label}: {}/{total}", done.load(Ordering::Relaxed));
            }
        })
    };
    let mut handles = Vec::with_capacity(total);
    for (i, item) in items.into_iter().enumerate() {
        let permit = slots.clone().acquire_owned().await?;
        let done = done.clone();
        let fut = f(i, item);
        handles.push(tokio::spawn(async move {
            let r = fut.await;
            done.fetch_add(1, Ordering::Relaxed);
            drop(permit);
            r
        }));
    }
    let mut out = Vec::with_capacity(total);
    let mut failure = None;
    for (i, h) in handles.into_iter().enumerate() {
        match h.await? {
            Ok(o) => out.push(o),
            Err(e) if failure.is_none() => failure = Some(e.context(format!("{label} #{i}"))),
            Err(_) => {}
        }
    }
    ticker.abort();
    if let Some(e) = failure {
        return Err(e);
    }
    progress!(
        "{label}: {total} in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    Ok(out)
}

/// What one driven connection saw.
#[derive(Debug, Default)]
pub(crate) struct Seen {
    pub(crate) frames: u64,
    /// Latencies of stamped messages (send → receipt), optionally only those at `seq >= from`.
    pub(crate) latencies: Samples,
    /// The server closed the connection before we stopped.
    pub(crate) closed_early: bool,
}

/// A connection handed to a task that reads every frame (timing stamped messages) and sends
/// what it is given, until `stop`.
pub(crate) struct Driven {
    pub(crate) tx: mpsc::Sender<String>,
    pub(crate) handle: tokio::task::JoinHandle<Seen>,
}

pub(crate) fn drive(mut ws: Ws, mut stop: watch::Receiver<bool>, from_seq: u64) -> Driven {
    let (tx, mut rx) = mpsc::channel::<String>(16);
    let handle = tokio::spawn(async move {
        let mut seen = Seen::default();
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                // A dropped sender disables this branch instead of spinning on `None`.
                Some(text) = rx.recv() => {
                    if ws.send(Message::Text(text.into())).await.is_err() {
                        seen.closed_early = true;
                        break;
                    }
                }
                msg = ws.next() => match msg {
                    Some(Ok(Message::Text(t))) => {
                        seen.frames += 1;
                        if let Some((sent, seq)) = cable::stamp_of(&t) {
                            if seq >= from_seq {
                                seen.latencies.push(crate::now_ns().saturating_sub(sent));
                            }
                        }
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                        seen.closed_early = true;
                        break;
                    }
                    Some(Ok(_)) => {}
                },
            }
        }
        let _ = ws.close(None).await;
        seen
    });
    Driven { tx, handle }
}

pub(crate) fn mb(kib: Option<u64>) -> f64 {
    kib.unwrap_or(0) as f64 / 1024.0
}

// ---- idle -------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct IdleArgs {
    pub conns: usize,
    pub group: usize,
    /// Also create one chat per group and subscribe every member to it.
    pub chat: bool,
    pub hold: Duration,
}

/// N connections, each subscribed to `ChatsChannel` (online) and its group's `ChatChannel`;
/// one message to every chat; held with pings. RSS before and after.
pub async fn idle(ctx: &Ctx, a: &IdleArgs) -> anyhow::Result<Report> {
    let mut report = new_report(ctx, "idle");
    let (mut srv, minted) = ctx.provision(a.conns, a.group, false, &[])?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_start = srv.rss_kib();
    let tcp_start = server::tcp_mem_kib();
    let ws_url = srv.ws.clone();

    let users = minted.users.clone();
    let started = Instant::now();
    let conns = fleet(
        "connect + ChatsChannel",
        users.clone(),
        ctx.connect_concurrency,
        |i, u| {
            let url = ws_url.clone();
            let src = ctx.source(i);
            async move {
                let mut ws = cable::connect(&url, &u.token, src).await?;
                cable::subscribe(&mut ws, CHATS).await?;
                Ok(ws)
            }
        },
    )
    .await?;
    let connect_secs = started.elapsed().as_secs_f64();
    let rss_online = srv.rss_kib();

    let mut conns: Vec<Option<Ws>> = conns.into_iter().map(Some).collect();
    let mut chat_of_group = std::collections::HashMap::new();
    if a.chat {
        // Group leaders start a chat; then every member joins their group's chat.
        let leaders: Vec<(usize, Ws)> = (0..conns.len())
            .filter(|i| i % a.group == 0)
            .map(|i| (i, conns[i].take().expect("present")))
            .collect();
        let created = fleet(
            "createChat",
            leaders,
            ctx.connect_concurrency,
            |_, (i, mut ws)| async move {
                let id = cable::create_chat(&mut ws, &format!("group {i}")).await?;
                Ok((i, id, ws))
            },
        )
        .await?;
        for (i, id, ws) in created {
            chat_of_group.insert(users[i].group, id);
            conns[i] = Some(ws);
        }
        let items: Vec<(i64, Ws)> = conns
            .iter_mut()
            .enumerate()
            .map(|(i, c)| (chat_of_group[&users[i].group], c.take().expect("present")))
            .collect();
        let joined = fleet(
            "join ChatChannel",
            items,
            ctx.connect_concurrency,
            |_, (chat, mut ws)| async move {
                cable::subscribe(&mut ws, &cable::chat_identifier(chat)).await?;
                Ok(ws)
            },
        )
        .await?;
        conns = joined.into_iter().map(Some).collect();
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let driven: Vec<Driven> = conns
        .into_iter()
        .map(|c| drive(c.expect("present"), stop_rx.clone(), 0))
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_subscribed = srv.rss_kib();

    if a.chat {
        for (i, d) in driven.iter().enumerate() {
            if i % a.group == 0 {
                let ident = cable::chat_identifier(chat_of_group[&users[i].group]);
                d.tx.send(cable::speak_frame(&ident, crate::now_ns(), 0, "hello"))
                    .await
                    .ok();
            }
        }
    }
    progress!("holding {} connections for {:?}", driven.len(), a.hold);
    let cpu0 = srv.cpu_seconds();
    let t0 = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tick.tick().await;
    while t0.elapsed() < a.hold {
        tick.tick().await;
        progress!(
            "hold {:.0}/{:.0} s, server RSS {:.1} MB",
            t0.elapsed().as_secs_f64(),
            a.hold.as_secs_f64(),
            mb(srv.rss_kib())
        );
    }
    let held = t0.elapsed().as_secs_f64();
    let cpu_hold = match (cpu0, srv.cpu_seconds()) {
        (Some(a), Some(b)) => (b - a) / held * 100.0,
        _ => 0.0,
    };
    let rss_end = srv.rss_kib();
    let hwm = srv.hwm_kib();
    let tcp_end = server::tcp_mem_kib();
    stop_tx.send(true).ok();
    let mut closed_early = 0;
    let mut frames = 0;
    let mut delivered = Samples::default();
    for d in driven {
        let seen = d.handle.await?;
        closed_early += seen.closed_early as usize;
        frames += seen.frames;
        delivered.extend(seen.latencies);
    }
    let (warnings, slow) = srv.warnings();
    srv.stop()?;

    let n = a.conns as f64;
    let per_conn = (rss_end.unwrap_or(0) as f64 - rss_start.unwrap_or(0) as f64) / n;
    report.figure(
        "idle_rss_start_mb",
        "RSS after start, no clients",
        mb(rss_start),
        "MB",
        ctx.target(Some(Target::AtMost(8.0)), None),
    );
    report.figure(
        "idle_rss_conns_mb",
        &format!("RSS with {} subscribed connections", a.conns),
        mb(rss_end),
        "MB",
        (a.conns == 10_000).then_some(Target::AtMost(120.0)),
    );
    report.figure(
        "idle_kib_per_conn",
        "marginal RSS per connection",
        per_conn,
        "KiB",
        None,
    );
    report.figure(
        "idle_connect_per_s",
        "connect + subscribe rate",
        n / connect_secs,
        "conn/s",
        None,
    );
    report.figure(
        "idle_cpu_pct",
        "server CPU while holding (pings)",
        cpu_hold,
        "% core",
        None,
    );
    report.figure(
        "idle_closed_early",
        "connections the server closed",
        closed_early as f64,
        "",
        Some(Target::AtMost(0.0)),
    );
    report.detail("conns", a.conns);
    report.detail("group", a.group);
    report.detail("chat_per_group", a.chat);
    report.detail("rss_kib_start", rss_start);
    report.detail("rss_kib_online", rss_online);
    report.detail("rss_kib_subscribed", rss_subscribed);
    report.detail("rss_kib_end", rss_end);
    report.detail("hwm_kib", hwm);
    report.detail(
        "kernel_tcp_mem_kib",
        json!({"start": tcp_start, "end": tcp_end}),
    );
    report.detail("frames_received", frames);
    report.detail("hello_delivery", delivered.summary());
    report.detail(
        "server_warnings",
        json!({"total": warnings, "too_slow": slow}),
    );
    Ok(report.finish())
}

// ---- fanout -----------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct FanoutArgs {
    pub subscribers: usize,
    pub rate: f64,
    pub messages: u64,
    pub warmup: u64,
    pub padding: usize,
}

/// One speaker, M subscribers of its chat; per-delivery latency from send to receipt.
pub async fn fanout(ctx: &Ctx, a: &FanoutArgs) -> anyhow::Result<Report> {
    let mut report = new_report(ctx, "fanout");
    let m = a.subscribers;
    let (mut srv, minted) = ctx.provision(m + 1, m + 1, true, &[])?;
    let ws_url = srv.ws.clone();
    let speaker_user = minted.users[0].clone();
    let mut speaker = cable::connect(&ws_url, &speaker_user.token, ctx.source(0)).await?;
    cable::subscribe(&mut speaker, CHATS).await?;
    let chat = cable::create_chat(&mut speaker, "fanout").await?;
    let ident = cable::chat_identifier(chat);
    cable::subscribe(&mut speaker, &ident).await?;

    // Listeners join the chat only (they are mutual contacts of the online speaker, so they
    // see it); not being online themselves keeps setup linear instead of an update_chat to
    // every viewer per join.
    let listeners = minted.users[1..].to_vec();
    let conns = fleet(
        "listeners join",
        listeners,
        ctx.connect_concurrency,
        |i, u| {
            let url = ws_url.clone();
            let ident = ident.clone();
            let src = ctx.source(i + 1);
            async move {
                let mut ws = cable::connect(&url, &u.token, src).await?;
                cable::subscribe(&mut ws, &ident).await?;
                Ok(ws)
            }
        },
    )
    .await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let driven: Vec<Driven> = conns
        .into_iter()
        .map(|ws| drive(ws, stop_rx.clone(), a.warmup))
        .collect();
    let speaker = drive(speaker, stop_rx.clone(), a.warmup);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_setup = srv.rss_kib();

    let padding = "x".repeat(a.padding);
    let total = a.warmup + a.messages;
    progress!(
        "speaking {total} messages at {}/s to {m} subscribers",
        a.rate
    );
    let cpu0 = srv.cpu_seconds();
    let own0 = server::own_cpu_seconds();
    let t0 = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / a.rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for seq in 0..total {
        tick.tick().await;
        speaker
            .tx
            .send(cable::speak_frame(&ident, crate::now_ns(), seq, &padding))
            .await
            .ok();
        if seq > 0 && seq % (a.rate.max(1.0) as u64 * 5) == 0 {
            progress!("sent {seq}/{total}");
        }
    }
    let send_secs = t0.elapsed().as_secs_f64();
    // Let the last deliveries arrive.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu_secs = match (cpu0, srv.cpu_seconds()) {
        (Some(a), Some(b)) => b - a,
        _ => 0.0,
    };
    let cpu = cpu_secs / t0.elapsed().as_secs_f64() * 100.0;
    let own_cpu = (server::own_cpu_seconds() - own0) / t0.elapsed().as_secs_f64() * 100.0;
    let rss_end = srv.rss_kib();
    stop_tx.send(true).ok();
    let mut latencies = Samples::default();
    let mut closed_early = 0usize;
    for d in driven {
        let seen = d.handle.await?;
        closed_early += seen.closed_early as usize;
        latencies.extend(seen.latencies);
    }
    let echo = speaker.handle.await?.latencies;
    let (warnings, slow) = srv.warnings();
    srv.stop()?;

    let expected = a.messages as usize * m;
    let s = latencies.summary();
    report.figure(
        "fanout_p99_ms",
        &format!("fan-out delivery p99 (1→{m} at {}/s)", a.rate),
        s.p99_ms,
        "ms",
        if m >= 1000 && a.rate >= 10.0 {
            ctx.target(Some(Target::AtMost(10.0)), Some(Target::AtMost(40.0)))
        } else {
            None
        },
    );
    report.figure(
        "fanout_p50_ms",
        "fan-out delivery p50",
        s.p50_ms,
        "ms",
        None,
    );
    report.figure(
        "fanout_p90_ms",
        "fan-out delivery p90",
        s.p90_ms,
        "ms",
        None,
    );
    report.figure(
        "fanout_max_ms",
        "fan-out delivery max",
        s.max_ms,
        "ms",
        None,
    );
    report.figure(
        "fanout_missing",
        "deliveries missing",
        expected.saturating_sub(latencies.len()) as f64,
        "",
        Some(Target::AtMost(0.0)),
    );
    report.figure(
        "fanout_deliveries_per_s",
        "deliveries per second",
        latencies.len() as f64 / send_secs,
        "/s",
        None,
    );
    report.figure("fanout_server_cpu_pct", "server CPU", cpu, "% core", None);
    // CPU time per delivery: steadier than latency on a shared machine.
    let deliveries = (a.warmup + a.messages) as f64 * m as f64;
    report.figure(
        "fanout_server_us_per_delivery",
        "server CPU per delivery",
        cpu_secs / deliveries * 1e6,
        "µs",
        ctx.target(Some(Target::AtMost(5.0)), None),
    );
    report.detail("delivery", s);
    report.detail("speaker_echo", echo.summary());
    report.detail("expected_deliveries", expected);
    report.detail("closed_early", closed_early);
    report.detail("load_tool_cpu_pct", own_cpu);
    report.detail("rss_kib", json!({"after_setup": rss_setup, "end": rss_end}));
    report.detail(
        "server_warnings",
        json!({"total": warnings, "too_slow": slow}),
    );
    report.detail(
        "args",
        json!({"subscribers": m, "rate": a.rate, "messages": a.messages, "warmup": a.warmup, "padding": a.padding}),
    );
    Ok(report.finish())
}

// ---- storm ------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct StormArgs {
    pub chats: usize,
    pub speakers: usize,
    pub listeners: usize,
    pub duration: Duration,
    /// Messages each speaker keeps in flight (1 = send, wait for its own echo, send again).
    pub window: usize,
    pub padding: usize,
}

/// K chats speaking at once; every speaker waits for its own echo (the message is committed
/// with synchronous=FULL before anyone receives it), so echoes/s is durable messages/s.
pub async fn storm(ctx: &Ctx, a: &StormArgs) -> anyhow::Result<Report> {
    let mut report = new_report(ctx, "storm");
    let group = a.speakers + a.listeners;
    if a.speakers == 0 {
        bail!("storm needs at least one speaker per chat");
    }
    let (mut srv, minted) = ctx.provision(a.chats * group, group, false, &[])?;
    let ws_url = srv.ws.clone();
    let users = minted.users.clone();
    let conns = fleet(
        "connect + ChatsChannel",
        users.clone(),
        ctx.connect_concurrency,
        |i, u| {
            let url = ws_url.clone();
            let src = ctx.source(i);
            async move {
                let mut ws = cable::connect(&url, &u.token, src).await?;
                cable::subscribe(&mut ws, CHATS).await?;
                Ok(ws)
            }
        },
    )
    .await?;
    let mut conns: Vec<Option<Ws>> = conns.into_iter().map(Some).collect();
    let leaders: Vec<(usize, Ws)> = (0..conns.len())
        .filter(|i| i % group == 0)
        .map(|i| (i, conns[i].take().expect("present")))
        .collect();
    let created = fleet(
        "createChat",
        leaders,
        ctx.connect_concurrency,
        |_, (i, mut ws)| async move {
            let id = cable::create_chat(&mut ws, &format!("storm {i}")).await?;
            Ok((i, id, ws))
        },
    )
    .await?;
    let mut chat_of = vec![0i64; a.chats];
    for (i, id, ws) in created {
        chat_of[i / group] = id;
        conns[i] = Some(ws);
    }
    let items: Vec<(i64, Ws)> = conns
        .iter_mut()
        .enumerate()
        .map(|(i, c)| (chat_of[i / group], c.take().expect("present")))
        .collect();
    let joined = fleet(
        "join ChatChannel",
        items,
        ctx.connect_concurrency,
        |_, (chat, mut ws)| async move {
            cable::subscribe(&mut ws, &cable::chat_identifier(chat)).await?;
            Ok((chat, ws))
        },
    )
    .await?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let padding = Arc::new("x".repeat(a.padding));
    let deadline = tokio::time::Instant::now() + a.duration;
    let mut speakers = Vec::new();
    let mut listeners = Vec::new();
    for (i, (chat, ws)) in joined.into_iter().enumerate() {
        if i % group < a.speakers {
            speakers.push(tokio::spawn(speak_loop(
                ws,
                chat,
                i as u64,
                a.window.max(1),
                deadline,
                padding.clone(),
            )));
        } else {
            listeners.push(drive(ws, stop_rx.clone(), 0));
        }
    }
    progress!(
        "storm: {} speakers in {} chats for {:?}",
        speakers.len(),
        a.chats,
        a.duration
    );
    let cpu0 = srv.cpu_seconds();
    let own0 = server::own_cpu_seconds();
    let t0 = Instant::now();
    let mut durable = Samples::default();
    let mut heard = Samples::default();
    let mut failed = 0usize;
    let mut handles = speakers;
    let ticker = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        tick.tick().await;
        loop {
            tick.tick().await;
            progress!("storm running {:.0} s", t0.elapsed().as_secs_f64());
        }
    });
    for h in handles.drain(..) {
        match h.await? {
            Ok(s) => {
                durable.extend(s.own);
                heard.extend(s.others);
            }
            Err(e) => {
                failed += 1;
                progress!("a speaker failed: {e:#}");
            }
        }
    }
    ticker.abort();
    // Until the last echo: messages sent just before the deadline count, and so does their wait.
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu_secs = match (cpu0, srv.cpu_seconds()) {
        (Some(x), Some(y)) => y - x,
        _ => 0.0,
    };
    let cpu = cpu_secs / t0.elapsed().as_secs_f64() * 100.0;
    let own_cpu = (server::own_cpu_seconds() - own0) / t0.elapsed().as_secs_f64() * 100.0;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop_tx.send(true).ok();
    let mut closed_early = 0;
    for l in listeners {
        let seen = l.handle.await?;
        closed_early += seen.closed_early as usize;
        heard.extend(seen.latencies);
    }
    let (warnings, slow) = srv.warnings();
    report.detail("hwm_kib", srv.hwm_kib());
    report.detail("server_cpus_allowed", srv.cpus_allowed());
    let data_dir = srv.data_dir.clone();
    srv.stop()?;
    // With --fsync-delay-ms: proof the shim delayed the server's flushes, and how many.
    let (slowfs_active, slowfs_flushes) = srv.slowfs();
    report.detail(
        "slowfs",
        json!({"active": slowfs_active, "flushes_delayed": slowfs_flushes}),
    );
    let stored = match &data_dir {
        Some(d) => count_messages(&d.join("hangin.sqlite3")).ok(),
        None => None,
    };

    let s = durable.summary();
    report.figure(
        "storm_msgs_per_s",
        &format!("durable messages/s ({} chats)", a.chats),
        durable.len() as f64 / elapsed,
        "msg/s",
        if a.chats >= 100 {
            ctx.target(
                Some(Target::AtLeast(60_000.0)),
                Some(Target::AtLeast(5_000.0)),
            )
        } else {
            None
        },
    );
    report.figure(
        "storm_echo_p50_ms",
        "speak → own echo p50",
        s.p50_ms,
        "ms",
        None,
    );
    report.figure(
        "storm_echo_p99_ms",
        "speak → own echo p99",
        s.p99_ms,
        "ms",
        None,
    );
    report.figure(
        "storm_delivery_p99_ms",
        "delivery to other members p99",
        heard.summary().p99_ms,
        "ms",
        None,
    );
    report.figure("storm_server_cpu_pct", "server CPU", cpu, "% core", None);
    report.figure(
        "storm_server_us_per_msg",
        "server CPU per durable message",
        cpu_secs / durable.len().max(1) as f64 * 1e6,
        "µs",
        None,
    );
    report.figure(
        "storm_closed_early",
        "connections the server closed",
        (closed_early + failed) as f64,
        "",
        Some(Target::AtMost(0.0)),
    );
    report.detail("echo", s);
    report.detail("delivery", heard.summary());
    report.detail("messages_acknowledged", durable.len());
    report.detail("messages_in_database", stored);
    report.detail("load_tool_cpu_pct", own_cpu);
    report.detail(
        "server_warnings",
        json!({"total": warnings, "too_slow": slow}),
    );
    report.detail(
        "args",
        json!({"chats": a.chats, "speakers_per_chat": a.speakers, "listeners_per_chat": a.listeners,
               "duration_s": a.duration.as_secs_f64(), "window": a.window, "padding": a.padding}),
    );
    Ok(report.finish())
}

struct Spoken {
    own: Samples,
    others: Samples,
}

async fn speak_loop(
    mut ws: Ws,
    chat: i64,
    speaker: u64,
    window: usize,
    deadline: tokio::time::Instant,
    padding: Arc<String>,
) -> anyhow::Result<Spoken> {
    let ident = cable::chat_identifier(chat);
    // Sequence numbers carry the speaker, so each speaker recognises its own echoes.
    let base = speaker << 32;
    let mut next = 0u64;
    let mut in_flight = 0usize;
    let mut out = Spoken {
        own: Samples::default(),
        others: Samples::default(),
    };
    loop {
        let sending = tokio::time::Instant::now() < deadline;
        if !sending && in_flight == 0 {
            break;
        }
        while sending && in_flight < window {
            let frame = cable::speak_frame(&ident, crate::now_ns(), base | next, &padding);
            ws.send(Message::Text(frame.into())).await?;
            next += 1;
            in_flight += 1;
        }
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .map_err(|_| anyhow::anyhow!("no echo within 10 s"))?;
        match msg {
            Some(Ok(Message::Text(t))) => {
                if let Some((sent, seq)) = cable::stamp_of(&t) {
                    let latency = crate::now_ns().saturating_sub(sent);
                    if seq >> 32 == speaker {
                        in_flight -= 1;
                        // Count what was sent before the deadline only.
                        out.own.push(latency);
                    } else {
                        out.others.push(latency);
                    }
                }
            }
            Some(Ok(Message::Close(f))) => bail!("closed by the server: {f:?}"),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
            None => bail!("connection ended"),
        }
    }
    let _ = ws.close(None).await;
    Ok(out)
}

pub(crate) fn count_messages(db: &std::path::Path) -> anyhow::Result<i64> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    Ok(conn.query_row("SELECT count(*) FROM messages", [], |r| r.get(0))?)
}

// ---- login ------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct LoginArgs {
    pub logins: usize,
    pub concurrency: usize,
}

/// `POST /create` for N numbers (codes read from the log driver), then the password grant for
/// each: OTP verification (argon2id) + token issue.
pub async fn login(ctx: &Ctx, a: &LoginArgs) -> anyhow::Result<Report> {
    let mut report = new_report(ctx, "login");
    let env = [
        ("HANGIN_AUTH__CREATE_PER_ADDRESS_PER_HOUR", "1000000000"),
        ("HANGIN_AUTH__OTP_RESEND_SECONDS", "0"),
    ];
    let (srv, client_id, client_secret) = if let Some(url) = &ctx.url {
        let dir = ctx
            .data_dir
            .clone()
            .context("--url needs --data-dir to create an OAuth client")?;
        let (id, secret) = server::create_client(&ctx.bin, &dir)?;
        let otp_log = ctx
            .otp_log
            .clone()
            .context("--url needs --otp-log (the server's log file) for the codes")?;
        let srv = Server::attach(url, ctx.bin.clone(), Some(dir), ctx.pid, Some(otp_log));
        (srv, id, secret)
    } else {
        let (dir, tmp) = server::data_dir(ctx.data_dir.clone())?;
        let (id, secret) = server::create_client(&ctx.bin, &dir)?;
        (Server::start_in(&ctx.launch(&env)?, dir, tmp)?, id, secret)
    };
    let srv = Arc::new(srv);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(a.concurrency)
        .build()?;
    let numbers: Vec<String> = (0..a.logins)
        .map(|i| (ctx.first_number + i as u64).to_string())
        .collect();

    let cpu0 = srv.cpu_seconds();
    let t0 = Instant::now();
    let created = fleet("POST /create", numbers.clone(), a.concurrency, |_, n| {
        let http = http.clone();
        let url = format!("{}/create", srv.http);
        async move {
            let t = crate::now_ns();
            let r = http.post(&url).query(&[("number", &n)]).send().await?;
            if r.status().as_u16() != 204 {
                bail!("/create answered {}: {}", r.status(), r.text().await?);
            }
            Ok(crate::now_ns() - t)
        }
    })
    .await?;
    let create_secs = t0.elapsed().as_secs_f64();
    let cpu_create = srv.cpu_seconds();

    let mut codes = Vec::with_capacity(numbers.len());
    for n in &numbers {
        let srv = srv.clone();
        let n2 = n.clone();
        let code = tokio::task::spawn_blocking(move || srv.otp(&n2, Duration::from_secs(10)))
            .await?
            .with_context(|| format!("no OTP code in the log for {n}"))?;
        codes.push((n.clone(), code));
    }

    let t1 = Instant::now();
    let granted = fleet("POST /oauth/token", codes, a.concurrency, |_, (n, code)| {
        let http = http.clone();
        let url = format!("{}/oauth/token", srv.http);
        let (id, secret) = (client_id.clone(), client_secret.clone());
        async move {
            let t = crate::now_ns();
            let r = http
                .post(&url)
                .query(&[
                    ("grant_type", "password"),
                    ("number", &n),
                    ("code", &code),
                    ("client_id", &id),
                    ("client_secret", &secret),
                ])
                .send()
                .await?;
            if r.status().as_u16() != 200 {
                bail!("/oauth/token answered {}: {}", r.status(), r.text().await?);
            }
            let body: serde_json::Value = r.json().await?;
            if !body["access_token"].is_string() {
                bail!("no access_token in {body}");
            }
            Ok(crate::now_ns() - t)
        }
    })
    .await?;
    let token_secs = t1.elapsed().as_secs_f64();
    let cpu_end = srv.cpu_seconds();
    let mut srv = Arc::try_unwrap(srv).map_err(|_| anyhow::anyhow!("server still shared"))?;
    let hwm = srv.hwm_kib();
    srv.stop()?;

    let n = a.logins as f64;
    let create_lat = Samples(created);
    let token_lat = Samples(granted);
    report.figure(
        "login_token_per_s",
        "OTP verify + token issue per second",
        n / token_secs,
        "/s",
        Some(Target::AtLeast(200.0)),
    );
    report.figure(
        "login_create_per_s",
        "POST /create (code hashed + sent) per second",
        n / create_secs,
        "/s",
        None,
    );
    report.figure(
        "login_full_per_s",
        "whole logins (create + token) per second",
        n / (create_secs + token_secs),
        "/s",
        None,
    );
    report.figure(
        "login_token_p99_ms",
        "token request p99",
        token_lat.summary().p99_ms,
        "ms",
        None,
    );
    report.figure(
        "login_peak_rss_mb",
        "server peak RSS during the logins",
        mb(hwm),
        "MB",
        None,
    );
    if let (Some(c0), Some(c1), Some(c2)) = (cpu0, cpu_create, cpu_end) {
        report.detail(
            "server_cpu_pct",
            json!({"create": (c1 - c0) / create_secs * 100.0, "token": (c2 - c1) / token_secs * 100.0}),
        );
    }
    report.detail("create_latency", create_lat.summary());
    report.detail("token_latency", token_lat.summary());
    report.detail("hwm_kib", hwm);
    report.detail(
        "args",
        json!({"logins": a.logins, "concurrency": a.concurrency}),
    );
    Ok(report.finish())
}

// ---- ready ------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct ReadyArgs {
    pub runs: usize,
    /// Users to mint first when the database is new.
    pub users: usize,
    pub settle: Duration,
}

/// Start → `READY=1` on an existing database, and RSS once idle, over several starts.
pub async fn ready(ctx: &Ctx, a: &ReadyArgs) -> anyhow::Result<Report> {
    if ctx.url.is_some() {
        bail!("`ready` starts the server itself; it cannot use --url");
    }
    let mut report = new_report(ctx, "ready");
    let (dir, _tmp) = server::data_dir(ctx.data_dir.clone())?;
    let db = dir.join("hangin.sqlite3");
    if !db.exists() {
        server::mint(&ctx.bin, &dir, a.users, 10, false, ctx.first_number)?;
    }
    // One start first, so the measured ones find a migrated database with its client.
    let mut first = Server::start_in(&ctx.launch(&[])?, dir.clone(), None)?;
    first.stop()?;
    let mut ready = Samples::default();
    let mut rss = Vec::new();
    for run in 0..a.runs {
        let mut srv = Server::start_in(&ctx.launch(&[])?, dir.clone(), None)?;
        let r = srv.ready_after.unwrap_or_default();
        ready.push(r.as_nanos() as u64);
        tokio::time::sleep(a.settle).await;
        let kib = srv.rss_kib().unwrap_or(0);
        rss.push(kib);
        progress!(
            "start {}: READY after {:.1} ms, RSS {:.1} MB after {:?}",
            run + 1,
            r.as_secs_f64() * 1e3,
            kib as f64 / 1024.0,
            a.settle
        );
        srv.stop()?;
    }
    rss.sort_unstable();
    let median_rss = rss.get(rss.len() / 2).copied().unwrap_or(0);
    let s = ready.summary();
    let db_bytes = std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0);
    report.figure(
        "ready_ms",
        "start → READY=1 (median)",
        s.p50_ms,
        "ms",
        Some(Target::AtMost(150.0)),
    );
    report.figure(
        "ready_max_ms",
        "start → READY=1 (max)",
        s.max_ms,
        "ms",
        None,
    );
    report.figure(
        "ready_idle_rss_mb",
        "RSS after start, idle (median)",
        median_rss as f64 / 1024.0,
        "MB",
        ctx.target(Some(Target::AtMost(8.0)), None),
    );
    report.detail("ready", s);
    report.detail("rss_kib", rss);
    report.detail("database_bytes", db_bytes);
    report.detail("runs", a.runs);
    Ok(report.finish())
}

// ---- all --------------------------------------------------------------------------------------

/// Every target in one run: idle 10k, fan-out 1→1000 at 10/s, storm over 100 chats, login,
/// start→READY and idle RSS on the database the storm left behind, then lockhog, joinstorm of
/// 1,000 and the reconnect of 5,000 (≈ 4 min on 2 cores). `broadcast` is not in it: it steps up
/// to tens of thousands of clients and takes up to 5 minutes by itself.
pub async fn all(ctx: &Ctx) -> anyhow::Result<Vec<Report>> {
    if ctx.url.is_some() {
        bail!("`all` starts the server itself; it cannot use --url");
    }
    let keep = tempfile::Builder::new()
        .prefix("hangin-load-all-")
        .tempdir()?;
    let mut reports = Vec::new();
    // A failing scenario is reported and the run goes on: one fault (a full disk, a server
    // error) should not cost the figures of the others.
    let mut run = |r: anyhow::Result<Report>| match r {
        Ok(r) => {
            eprint!("{}", r.render());
            reports.push(r);
        }
        Err(e) => progress!("scenario failed, going on: {e:#}"),
    };
    // Each scenario gets its own database and number range.
    let sub = |name: &str, numbers: u64| Ctx {
        data_dir: Some(keep.path().join(name)),
        first_number: ctx.first_number + numbers,
        ..ctx.clone()
    };
    run(idle(
        &sub("idle", 0),
        &IdleArgs {
            conns: 10_000,
            group: 10,
            chat: true,
            hold: Duration::from_secs(10),
        },
    )
    .await);
    run(fanout(
        &sub("fanout", 0),
        &FanoutArgs {
            subscribers: 1000,
            rate: 10.0,
            messages: 100,
            warmup: 10,
            padding: 100,
        },
    )
    .await);
    let storm_ctx = sub("storm", 0);
    run(storm(
        &storm_ctx,
        &StormArgs {
            chats: 100,
            speakers: 2,
            listeners: 2,
            duration: Duration::from_secs(10),
            window: 8,
            padding: 50,
        },
    )
    .await);
    run(login(
        &sub("login", 0),
        &LoginArgs {
            logins: 2000,
            concurrency: 16,
        },
    )
    .await);
    run(ready(
        &storm_ctx,
        &ReadyArgs {
            runs: 5,
            users: 0,
            settle: Duration::from_secs(2),
        },
    )
    .await);
    run(crate::lockhog::lockhog(
        &sub("lockhog", 0),
        &crate::lockhog::LockhogArgs {
            chats: 5000,
            window: 16,
            hog_sockets: 20,
            subs_per_socket: 50,
            users: 100,
            pause: Duration::from_millis(200),
            precreate: Duration::from_secs(5),
            duration: Duration::from_secs(10),
        },
    )
    .await);
    run(crate::joinstorm::joinstorm(
        &sub("joinstorm", 0),
        &crate::joinstorm::JoinstormArgs {
            clients: 1000,
            spread: Duration::from_secs(1),
            quiet: Duration::from_secs(1),
            timeout: Duration::from_secs(120),
        },
    )
    .await);
    run(crate::reconnect::reconnect(
        &sub("reconnect", 0),
        &crate::reconnect::ReconnectArgs {
            users: 5000,
            group: 10,
            chats: 1000,
            timeout: Duration::from_secs(60),
        },
    )
    .await);
    Ok(reports)
}
