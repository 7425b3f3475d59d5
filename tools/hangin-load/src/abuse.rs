//! Abuse and endurance scenarios (issue 12): what one logged-in user can make the server hold,
//! whether memory comes back once the sockets close, and a long churn of many clients.
//!
//! - `history-bomb`: a chat gets N maximum-size messages (4,096 × U+0001, escaped to 6 bytes
//!   each); then one socket joins it under K distinct identifier strings and never reads.
//! - `slow-consumers`: S never-reading sockets of one user, each joined to a chat under its own
//!   identifier string (so no two share a frame), while M large messages are spoken; R rounds.
//! - `soak`: C clients churning (connect, `ChatsChannel`, create and join a chat, speak,
//!   `go_to_background`, return, disconnect) for a duration; RSS, descriptors and threads over
//!   time; every acknowledged message must be in the history and in the database.
//!
//! Peaks are the server's VmHWM, reset before each phase through `/proc/PID/clear_refs`.

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::cable::{self, Ws, CHATS};
use crate::progress;
use crate::report::{Report, Target};
use crate::scenarios::Ctx;
use crate::server::{self, Launch, Minted, Server};

/// The memory bounds of issue 12.
pub const PEAK_MB: f64 = 200.0;
pub const AFTER_CLOSE_MB: f64 = 80.0;

/// Mint users and start the server on them (or attach to `--url`).
fn start(ctx: &Ctx, users: usize, group: usize) -> anyhow::Result<(Server, Minted)> {
    if let Some(url) = &ctx.url {
        let dir = ctx
            .data_dir
            .clone()
            .context("--url needs --data-dir (the server's) to mint users")?;
        let minted = server::mint(&ctx.bin, &dir, users, group, false, ctx.first_number)?;
        return Ok((
            Server::attach(url, ctx.bin.clone(), Some(dir), ctx.pid, None),
            minted,
        ));
    }
    let (dir, tmp) = server::data_dir(ctx.data_dir.clone())?;
    let minted = server::mint(&ctx.bin, &dir, users, group, false, ctx.first_number)?;
    let launch = Launch {
        bin: ctx.bin.clone(),
        data_dir: ctx.data_dir.clone(),
        env: Vec::new(),
        cpus: ctx.server_cpus.clone(),
    };
    let srv = Server::start_in(&launch, dir, tmp)?;
    progress!(
        "server pid {} ready, {users} users minted",
        srv.pid.unwrap_or(0)
    );
    Ok((srv, minted))
}

fn mb(kib: Option<u64>) -> f64 {
    kib.unwrap_or(0) as f64 / 1024.0
}

/// Reset the server's VmHWM to its current RSS (Linux ≥ 4.0; our own child, or root).
fn reset_peak(srv: &Server) {
    if let Some(pid) = srv.pid {
        let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
    }
}

fn proc_status(pid: u32, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Open descriptors of the server.
pub fn fd_count(pid: u32) -> Option<u64> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64)
}

/// What the server's descriptors point at (`socket:[…]`, files), for a diff at the end.
fn fd_targets(pid: u32) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let mut out: Vec<String> = dir
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|t| {
            let t = t.display().to_string();
            // Sockets and pipes differ by inode; keep the kind only.
            match t.split_once(":[") {
                Some((kind, _)) => kind.to_string(),
                None => t,
            }
        })
        .collect();
    out.sort();
    out
}

/// The names of the server's threads, sorted.
fn thread_names(pid: u32) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut out: Vec<String> = dir
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_string())
        .collect();
    out.sort();
    out
}

/// `after` without one occurrence of each of `before`.
fn added(before: &[String], mut after: Vec<String>) -> Vec<String> {
    for t in before {
        if let Some(i) = after.iter().position(|n| n == t) {
            after.remove(i);
        }
    }
    after
}

/// RSS a few seconds after the sockets closed: the lowest of several samples, so a reading
/// taken while the server is still tearing connections down does not count.
async fn settled_rss(srv: &Server, wait: Duration) -> f64 {
    let until = Instant::now() + wait;
    let mut low = f64::MAX;
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        low = low.min(mb(srv.rss_kib()));
        if Instant::now() >= until {
            return low;
        }
    }
}

/// The speaker: speaks `count` bodies into `identifier` keeping `window` in flight, reading
/// every frame, until each came back (the server broadcasts only after the commit).
async fn speak_all(
    ws: &mut Ws,
    identifier: &str,
    body: &str,
    count: usize,
    window: usize,
) -> anyhow::Result<()> {
    let frame = cable::perform_frame(identifier, json!({"action": "speak", "body": body}));
    let prefix = format!(
        r#"{{"identifier":{},"message":{{"message":"#,
        serde_json::to_string(identifier)?
    );
    let (mut sent, mut echoed) = (0usize, 0usize);
    while echoed < count {
        while sent < count && sent - echoed < window {
            ws.feed(Message::Text(frame.clone().into())).await?;
            sent += 1;
        }
        ws.flush().await?;
        let msg = tokio::time::timeout(Duration::from_secs(60), ws.next())
            .await
            .context("no echo within 60 s")?
            .context("speaker's connection closed")??;
        match msg {
            Message::Text(t) if t.starts_with(&prefix) => echoed += 1,
            Message::Text(t) if t.contains(r#""error":"#) => bail!("speak refused: {t}"),
            Message::Close(f) => bail!("speaker closed by the server: {f:?}"),
            _ => {}
        }
    }
    Ok(())
}

/// A user online with one chat of their own: (socket, chat id, its identifier).
async fn speaker(srv: &Server, token: &str) -> anyhow::Result<(Ws, i64, String)> {
    let mut ws = cable::connect(&srv.ws, token, None).await?;
    cable::subscribe(&mut ws, CHATS).await?;
    let chat = cable::create_chat(&mut ws, "abuse").await?;
    let ident = cable::chat_identifier(chat);
    cable::subscribe(&mut ws, &ident).await?;
    Ok((ws, chat, ident))
}

/// `n` distinct identifier strings for one chat (the server matches identifiers as strings).
pub fn identifier_variants(chat: i64, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let pad = " ".repeat(i / 2);
            if i % 2 == 0 {
                format!(r#"{{"channel":"ChatChannel",{pad}"id":"{chat}"}}"#)
            } else {
                format!(r#"{{"id":{chat},{pad}"channel":"ChatChannel"}}"#)
            }
        })
        .collect()
}

/// Subscribe under each identifier without reading anything back.
async fn subscribe_blind(ws: &mut Ws, identifiers: &[String]) -> anyhow::Result<()> {
    for ident in identifiers {
        ws.feed(Message::Text(
            json!({"command": "subscribe", "identifier": ident})
                .to_string()
                .into(),
        ))
        .await?;
    }
    ws.flush().await?;
    Ok(())
}

/// Sample the server's RSS until `done` is set; the highest sample.
fn sample_peak(
    srv: &Server,
    done: Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<f64> {
    let pid = srv.pid;
    std::thread::spawn(move || {
        let mut peak = 0.0f64;
        while !done.load(Ordering::Relaxed) {
            if let Some(pid) = pid {
                peak = peak.max(mb(proc_status(pid, "VmRSS:")));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        peak
    })
}

// ---- history bomb ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct HistoryBombArgs {
    pub messages: usize,
    /// Characters of U+0001 per message body (4,096 = the default body limit).
    pub body_chars: usize,
    pub identifiers: usize,
    /// How long the never-reading socket is held open.
    pub hold: Duration,
    /// Sockets that then join the chat, read the whole history and stay open: what a
    /// connection keeps after it was sent a large frame.
    pub readers: usize,
}

impl Default for HistoryBombArgs {
    fn default() -> Self {
        HistoryBombArgs {
            messages: 3000,
            body_chars: 4096,
            identifiers: 10,
            hold: Duration::from_secs(10),
            readers: 80,
        }
    }
}

pub async fn history_bomb(ctx: &Ctx, a: &HistoryBombArgs) -> anyhow::Result<Report> {
    let mut report = Report::new("history-bomb");
    let (mut srv, minted) = start(ctx, 1, 1)?;
    let token = minted.users[0].token.clone();
    let rss_start = mb(srv.rss_kib());
    let (mut speaker, chat, ident) = speaker(&srv, &token).await?;
    let body = "\u{1}".repeat(a.body_chars);
    let t = Instant::now();
    speak_all(&mut speaker, &ident, &body, a.messages, 16).await?;
    let store_s = t.elapsed().as_secs_f64();
    progress!("{} messages stored in {store_s:.2} s", a.messages);

    reset_peak(&srv);
    let before = mb(srv.rss_kib());
    let (_, slow_before) = srv.warnings();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = sample_peak(&srv, done.clone());
    let mut bomb = cable::connect(&srv.ws, &token, None).await?;
    subscribe_blind(&mut bomb, &identifier_variants(chat, a.identifiers)).await?;
    tokio::time::sleep(a.hold).await;
    let hwm = mb(srv.hwm_kib());
    let (_, slow_after) = srv.warnings();
    // What reached the socket (a short look; the attack itself never reads).
    let mut seen = Vec::new();
    let look = Instant::now() + Duration::from_secs(2);
    while let Ok(Some(Ok(m))) = tokio::time::timeout_at(look.into(), bomb.next()).await {
        seen.push(match m {
            Message::Text(t) => {
                t.chars().take(120).collect::<String>() + &format!("… {} bytes", t.len())
            }
            other => format!("{other:?}"),
        });
    }
    report.detail("bomb_socket_saw", &seen);
    drop(bomb);
    let after = settled_rss(&srv, Duration::from_secs(3)).await;
    // Readers take the whole history and stay open. Each was sent a 1 MiB frame; what the
    // server keeps for them afterwards must not scale with it (tungstenite kept its write
    // buffer at the largest frame ever written: vendor/README.md).
    let mut readers = Vec::with_capacity(a.readers);
    for _ in 0..a.readers {
        let mut ws = cable::connect(&srv.ws, &token, None).await?;
        cable::subscribe(&mut ws, &ident).await?;
        readers.push(ws);
    }
    let holding = settled_rss(&srv, Duration::from_secs(3)).await;
    drop(readers);
    // The speaker too: after close means every socket of the attack.
    drop(speaker);
    let after_all = settled_rss(&srv, Duration::from_secs(3)).await;
    done.store(true, Ordering::Relaxed);
    let sampled = sampler.join().unwrap_or(0.0);

    // The server still serves: a fresh join is confirmed.
    let mut probe = cable::connect(&srv.ws, &token, None).await?;
    cable::subscribe(&mut probe, CHATS).await?;
    drop(probe);

    report.figure(
        "bomb_store_s",
        "time to store the messages",
        store_s,
        "s",
        None,
    );
    report.figure(
        "bomb_rss_before_mb",
        "RSS before the joins",
        before,
        "MB",
        None,
    );
    report.figure(
        "bomb_rss_peak_mb",
        "RSS peak (VmHWM) during the joins",
        hwm.max(sampled),
        "MB",
        Some(Target::AtMost(PEAK_MB)),
    );
    report.figure(
        "bomb_rss_after_close_mb",
        "RSS after every socket closed",
        after_all,
        "MB",
        Some(Target::AtMost(AFTER_CLOSE_MB)),
    );
    report.figure(
        "bomb_rss_readers_mb",
        &format!(
            "RSS while {} sockets that read the history stay open",
            a.readers
        ),
        holding,
        "MB",
        Some(Target::AtMost(AFTER_CLOSE_MB)),
    );
    report.figure(
        "bomb_too_slow",
        "\"too slow\" disconnects",
        slow_after.saturating_sub(slow_before) as f64,
        "",
        None,
    );
    report.detail("rss_start_mb", rss_start);
    report.detail("rss_after_bomb_socket_closed_mb", after);
    report.detail("messages", a.messages);
    report.detail("identifiers", a.identifiers);
    report.detail(
        "history_json_bytes_unbounded",
        a.messages * (a.body_chars * 6 + 100),
    );
    srv.stop()?;
    Ok(report.finish())
}

// ---- slow consumers -------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct SlowArgs {
    pub sockets: usize,
    pub speaks: usize,
    pub body_chars: usize,
    pub rounds: usize,
}

impl Default for SlowArgs {
    fn default() -> Self {
        SlowArgs {
            sockets: 20,
            speaks: 1100,
            body_chars: 4096,
            rounds: 3,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Round {
    pub peak_mb: f64,
    pub after_close_mb: f64,
    pub too_slow: usize,
    pub speak_seconds: f64,
}

pub async fn slow_consumers(ctx: &Ctx, a: &SlowArgs) -> anyhow::Result<Report> {
    let mut report = Report::new("slow-consumers");
    let (mut srv, minted) = start(ctx, 1, 1)?;
    let token = minted.users[0].token.clone();
    let body = "\u{1}".repeat(a.body_chars);
    let mut rounds = Vec::new();
    for round in 1..=a.rounds {
        let (mut speaker, chat, ident) = speaker(&srv, &token).await?;
        // Each socket its own identifier string: frames are built once per identifier, so
        // this is the worst case, no sharing between the queues.
        let variants = identifier_variants(chat, a.sockets + 1);
        let mut slow = Vec::with_capacity(a.sockets);
        for v in variants.iter().skip(1) {
            let mut ws = cable::connect(&srv.ws, &token, None).await?;
            subscribe_blind(&mut ws, std::slice::from_ref(v)).await?;
            slow.push(ws);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        reset_peak(&srv);
        let (_, slow_before) = srv.warnings();
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sampler = sample_peak(&srv, done.clone());
        let t = Instant::now();
        speak_all(&mut speaker, &ident, &body, a.speaks, 16).await?;
        let speak_seconds = t.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let hwm = mb(srv.hwm_kib());
        let (_, slow_after) = srv.warnings();
        drop(slow);
        drop(speaker);
        let after_close_mb = settled_rss(&srv, Duration::from_secs(3)).await;
        done.store(true, Ordering::Relaxed);
        let sampled = sampler.join().unwrap_or(0.0);
        let r = Round {
            peak_mb: hwm.max(sampled),
            after_close_mb,
            too_slow: slow_after.saturating_sub(slow_before),
            speak_seconds,
        };
        progress!(
            "round {round}: peak {:.1} MB, after close {:.1} MB, {} too slow",
            r.peak_mb,
            r.after_close_mb,
            r.too_slow
        );
        rounds.push(r);
    }
    let peak = rounds.iter().map(|r| r.peak_mb).fold(0.0, f64::max);
    let after = rounds.iter().map(|r| r.after_close_mb).fold(0.0, f64::max);
    let too_slow_min = rounds.iter().map(|r| r.too_slow).min().unwrap_or(0);
    report.figure(
        "slow_rss_peak_mb",
        "RSS peak, highest round",
        peak,
        "MB",
        Some(Target::AtMost(PEAK_MB)),
    );
    report.figure(
        "slow_rss_after_close_mb",
        "RSS after the sockets closed, highest",
        after,
        "MB",
        Some(Target::AtMost(AFTER_CLOSE_MB)),
    );
    report.figure(
        "slow_too_slow_min",
        "\"too slow\" disconnects, fewest in a round",
        too_slow_min as f64,
        "",
        Some(Target::AtLeast(a.sockets as f64)),
    );
    report.detail("rounds", &rounds);
    report.detail("sockets", a.sockets);
    report.detail("speaks", a.speaks);
    srv.stop()?;
    Ok(report.finish())
}

// ---- soak -----------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct SoakArgs {
    pub clients: usize,
    pub duration: Duration,
    /// The reference point of "RSS flat after warm-up" (the issue: 2 minutes).
    pub mark: Duration,
    /// Pause of each client between two cycles (±50 % jitter).
    pub pause: Duration,
    /// Users per group of mutual contacts.
    pub group: usize,
    pub sample_every: Duration,
}

impl Default for SoakArgs {
    fn default() -> Self {
        SoakArgs {
            clients: 2000,
            duration: Duration::from_secs(600),
            mark: Duration::from_secs(120),
            pause: Duration::from_secs(3),
            group: 10,
            sample_every: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub t_s: f64,
    pub rss_mb: f64,
    pub fds: u64,
    pub threads: u64,
    pub cycles: u64,
    pub errors: u64,
}

#[derive(Default)]
struct SoakCounters {
    cycles: AtomicU64,
    errors: AtomicU64,
    lost: AtomicU64,
    connected: AtomicUsize,
    first_errors: Mutex<Vec<String>>,
    acked: Mutex<Vec<String>>,
    /// Durations of completed cycles.
    cycle_ns: Mutex<crate::stats::Samples>,
}

impl SoakCounters {
    fn error(&self, e: anyhow::Error) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_errors.lock().unwrap();
        if first.len() < 10 {
            first.push(format!("{e:#}"));
        }
    }
}

/// A step's answer must come within this, however many other frames (pings, presence) arrive
/// meanwhile: a lost answer is an error, not a stall.
const STEP_TIMEOUT: Duration = Duration::from_secs(120);

/// Read frames until one `pick`s, failing on a close (`next_json` does) or after
/// [`STEP_TIMEOUT`].
async fn until_frame<T>(ws: &mut Ws, pick: impl FnMut(&Value) -> Option<T>) -> anyhow::Result<T> {
    tokio::time::timeout(STEP_TIMEOUT, cable::until(ws, pick))
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {STEP_TIMEOUT:?}"))?
}

async fn step<T>(f: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::time::timeout(STEP_TIMEOUT, f)
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {STEP_TIMEOUT:?}"))?
}

/// Join a chat: the confirmation, then the history; the bodies in it.
async fn join(ws: &mut Ws, ident: &str) -> anyhow::Result<Vec<String>> {
    cable::send(ws, &json!({"command": "subscribe", "identifier": ident})).await?;
    until_frame(ws, |f| {
        if f["identifier"] != ident {
            return None;
        }
        if f["type"] == "reject_subscription" {
            return Some(Err(anyhow::anyhow!("join of {ident} rejected")));
        }
        let messages = f["message"]["messages"].as_array()?;
        Some(Ok(messages
            .iter()
            .filter_map(|m| m["body"].as_str().map(str::to_string))
            .collect()))
    })
    .await?
}

/// One churn cycle of one client.
async fn cycle(
    ws_url: &str,
    token: &str,
    source: Option<std::net::IpAddr>,
    body: &str,
    c: &SoakCounters,
) -> anyhow::Result<()> {
    let mut ws = cable::connect(ws_url, token, source).await?;
    c.connected.fetch_add(1, Ordering::Relaxed);
    let r = async {
        step(cable::subscribe(&mut ws, CHATS)).await?;
        let chat = step(cable::create_chat(&mut ws, "soak")).await?;
        let ident = cable::chat_identifier(chat);
        join(&mut ws, &ident).await?;
        ws.send(Message::Text(
            cable::perform_frame(&ident, json!({"action": "speak", "body": body})).into(),
        ))
        .await?;
        until_frame(&mut ws, |f| {
            (f["identifier"] == ident.as_str() && f["message"]["message"]["body"] == body)
                .then_some(())
        })
        .await?;
        c.acked.lock().unwrap().push(body.to_string());
        ws.send(Message::Text(
            cable::perform_frame(CHATS, json!({"action": "go_to_background"})).into(),
        ))
        .await?;
        until_frame(&mut ws, |f| {
            (f["type"] == "disconnect").then(|| f["reason"].as_str().map(str::to_string))
        })
        .await?;
        // The server closes after the disconnect frame; read to the end.
        while let Some(Ok(_)) = ws.next().await {}
        anyhow::Ok(ident)
    }
    .await;
    c.connected.fetch_sub(1, Ordering::Relaxed);
    let ident = r?;

    // Return within the background window: the chat is still live, with our message.
    let mut ws = cable::connect(ws_url, token, source).await?;
    c.connected.fetch_add(1, Ordering::Relaxed);
    let r = async {
        step(cable::subscribe(&mut ws, CHATS)).await?;
        let history = join(&mut ws, &ident).await?;
        if !history.iter().any(|b| b == body) {
            c.lost.fetch_add(1, Ordering::Relaxed);
            bail!("acknowledged message {body:?} missing from the history on return");
        }
        ws.close(None).await?;
        while let Some(Ok(_)) = ws.next().await {}
        anyhow::Ok(())
    }
    .await;
    c.connected.fetch_sub(1, Ordering::Relaxed);
    r
}

fn jitter(pause: Duration, seed: u64) -> Duration {
    // A cheap spread in [0.5, 1.5) × pause, different per client and cycle.
    let x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
        >> 33;
    pause.mul_f64(0.5 + (x % 1000) as f64 / 1000.0)
}

pub async fn soak(ctx: &Ctx, a: &SoakArgs) -> anyhow::Result<Report> {
    let mut report = Report::new("soak");
    let (mut srv, minted) = start(ctx, a.clients, a.group)?;
    let pid = srv
        .pid
        .context("soak needs the server's pid (--pid with --url)")?;
    // The baseline once start-up work is done (a descriptor or two open just after READY).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let fds_base = fd_count(pid).unwrap_or(0);
    let fd_kinds_base = fd_targets(pid);
    let thread_names_base = thread_names(pid);
    let threads_base = srv.threads().unwrap_or(0);
    progress!(
        "soak: {} clients for {:?}; baseline {fds_base} fds, {threads_base} threads, {:.1} MB",
        a.clients,
        a.duration,
        mb(srv.rss_kib())
    );
    let counters = Arc::new(SoakCounters::default());
    let started = Instant::now();
    let deadline = started + a.duration;
    let mut clients = Vec::with_capacity(a.clients);
    for (i, user) in minted.users.iter().enumerate() {
        let token = user.token.clone();
        let ws_url = srv.ws.clone();
        let source = if ctx.sources.is_empty() {
            None
        } else {
            Some(ctx.sources[i % ctx.sources.len()])
        };
        let c = counters.clone();
        let pause = a.pause;
        // Spread the first cycles over one pause.
        let first = pause.mul_f64(i as f64 / a.clients as f64);
        clients.push(tokio::spawn(async move {
            tokio::time::sleep(first).await;
            let mut n = 0u64;
            while Instant::now() < deadline {
                let body = format!("soak c{i} n{n}");
                let t = Instant::now();
                match cycle(&ws_url, &token, source, &body, &c).await {
                    Ok(()) => {
                        c.cycles.fetch_add(1, Ordering::Relaxed);
                        c.cycle_ns
                            .lock()
                            .unwrap()
                            .push(t.elapsed().as_nanos() as u64);
                    }
                    Err(e) => c.error(e.context(format!("client {i} cycle {n}"))),
                }
                n += 1;
                tokio::time::sleep(jitter(pause, (i as u64) << 20 | n)).await;
            }
        }));
    }

    let mut samples: Vec<Sample> = Vec::new();
    let mut at_mark: Option<Sample> = None;
    let mut next = started + a.sample_every;
    while Instant::now() < deadline {
        tokio::time::sleep_until(next.min(deadline).into()).await;
        next += a.sample_every;
        let s = Sample {
            t_s: started.elapsed().as_secs_f64(),
            rss_mb: mb(srv.rss_kib()),
            fds: fd_count(pid).unwrap_or(0),
            threads: srv.threads().unwrap_or(0),
            cycles: counters.cycles.load(Ordering::Relaxed),
            errors: counters.errors.load(Ordering::Relaxed),
        };
        progress!(
            "t={:>6.0} s  RSS {:>7.1} MB  fds {:>5}  threads {:>3}  connected {:>5}  cycles {:>7}  errors {}",
            s.t_s,
            s.rss_mb,
            s.fds,
            s.threads,
            counters.connected.load(Ordering::Relaxed),
            s.cycles,
            s.errors
        );
        if at_mark.is_none() && s.t_s >= a.mark.as_secs_f64() {
            at_mark = Some(s.clone());
        }
        samples.push(s);
    }
    let rss_end = mb(srv.rss_kib());
    for c in clients {
        c.await?;
    }
    // Back to baseline: every connection gone, idle blocking threads retired (tokio keeps
    // them 10 s).
    let settle_until = Instant::now() + Duration::from_secs(30);
    let (mut fds_end, mut threads_end);
    loop {
        fds_end = fd_count(pid).unwrap_or(0);
        threads_end = srv.threads().unwrap_or(0);
        if (fds_end <= fds_base && threads_end <= threads_base) || Instant::now() > settle_until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let rss_settled = mb(srv.rss_kib());
    let fds_new = added(&fd_kinds_base, fd_targets(pid));
    let threads_new = added(&thread_names_base, thread_names(pid));

    let acked: Vec<String> = std::mem::take(&mut *counters.acked.lock().unwrap());
    let stored = stored_bodies(&srv.data_dir()?.join("hangin.sqlite3"))?;
    let missing_in_db = acked.iter().filter(|b| !stored.contains(*b)).count();
    let lost = counters.lost.load(Ordering::Relaxed) + missing_in_db as u64;
    let mark = at_mark.as_ref().map(|s| s.rss_mb).unwrap_or(rss_end);
    let errors = counters.errors.load(Ordering::Relaxed);

    report.figure(
        "soak_cycles",
        "cycles completed",
        counters.cycles.load(Ordering::Relaxed) as f64,
        "",
        None,
    );
    report.figure(
        "soak_cycles_per_s",
        "cycles per second",
        counters.cycles.load(Ordering::Relaxed) as f64 / a.duration.as_secs_f64(),
        "/s",
        None,
    );
    report.figure(
        "soak_rss_mark_mb",
        "RSS at the mark (warm)",
        mark,
        "MB",
        None,
    );
    report.figure(
        "soak_rss_end_ratio",
        "RSS at the end / at the mark",
        rss_end / mark.max(0.001),
        "×",
        Some(Target::AtMost(1.1)),
    );
    report.figure(
        "soak_rss_end_mb",
        "RSS at the end (under load)",
        rss_end,
        "MB",
        None,
    );
    report.figure(
        "soak_rss_settled_mb",
        "RSS after every client left",
        rss_settled,
        "MB",
        None,
    );
    report.figure(
        "soak_fds_over_base",
        "open descriptors over baseline at the end",
        fds_end as f64 - fds_base as f64,
        "",
        Some(Target::AtMost(0.0)),
    );
    report.figure(
        "soak_threads_over_base",
        "threads over baseline at the end",
        threads_end as f64 - threads_base as f64,
        "",
        Some(Target::AtMost(0.0)),
    );
    report.figure(
        "soak_errors",
        "errors",
        errors as f64,
        "",
        Some(Target::AtMost(0.0)),
    );
    report.figure(
        "soak_lost",
        "acknowledged messages lost",
        lost as f64,
        "",
        Some(Target::AtMost(0.0)),
    );
    report.detail("acknowledged", acked.len());
    report.detail("cycle_time", counters.cycle_ns.lock().unwrap().summary());
    report.detail("fds_base", fds_base);
    report.detail("fds_end", fds_end);
    report.detail("fds_new_at_end", &fds_new);
    report.detail("threads_new_at_end", &threads_new);
    report.detail("threads_base", threads_base);
    report.detail("threads_end", threads_end);
    report.detail("first_errors", &*counters.first_errors.lock().unwrap());
    report.detail("samples", &samples);
    report.detail("clients", a.clients);
    report.detail("pause_s", a.pause.as_secs_f64());
    srv.stop()?;
    Ok(report.finish())
}

fn stored_bodies(db: &Path) -> anyhow::Result<HashSet<String>> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let mut stmt = conn.prepare("SELECT body FROM messages WHERE body LIKE 'soak %'")?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

// ---- command line -----------------------------------------------------------------------------

/// The subcommands, flattened into `hangin-load`'s own.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// N max-size messages in a chat, then one never-reading socket joins it K times.
    HistoryBomb {
        #[arg(long, default_value_t = 3000)]
        messages: usize,
        #[arg(long, default_value_t = 4096)]
        body_chars: usize,
        #[arg(long, default_value_t = 10)]
        identifiers: usize,
        /// Seconds the never-reading socket stays open.
        #[arg(long, default_value_t = 10.0)]
        hold: f64,
        /// Sockets that then read the whole history and stay open.
        #[arg(long, default_value_t = 80)]
        readers: usize,
    },
    /// S never-reading sockets of one user while M large messages are spoken; R rounds.
    SlowConsumers {
        #[arg(long, default_value_t = 20)]
        sockets: usize,
        #[arg(long, default_value_t = 1100)]
        speaks: usize,
        #[arg(long, default_value_t = 4096)]
        body_chars: usize,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// C clients churning for a duration; RSS, descriptors, threads, errors, lost messages.
    Soak {
        #[arg(long, default_value_t = 2000)]
        clients: usize,
        /// Seconds.
        #[arg(long, default_value_t = 600.0)]
        duration: f64,
        /// Seconds: the warm reference point of the RSS criterion.
        #[arg(long, default_value_t = 120.0)]
        mark: f64,
        /// Seconds each client rests between cycles (±50 %).
        #[arg(long, default_value_t = 3.0)]
        pause: f64,
        #[arg(long, default_value_t = 10)]
        group: usize,
        /// Seconds between samples.
        #[arg(long, default_value_t = 10.0)]
        sample: f64,
    },
}

impl Command {
    pub async fn run(self, ctx: &Ctx) -> anyhow::Result<Report> {
        match self {
            Command::HistoryBomb {
                messages,
                body_chars,
                identifiers,
                hold,
                readers,
            } => {
                history_bomb(
                    ctx,
                    &HistoryBombArgs {
                        messages,
                        body_chars,
                        identifiers,
                        hold: Duration::from_secs_f64(hold),
                        readers,
                    },
                )
                .await
            }
            Command::SlowConsumers {
                sockets,
                speaks,
                body_chars,
                rounds,
            } => {
                slow_consumers(
                    ctx,
                    &SlowArgs {
                        sockets,
                        speaks,
                        body_chars,
                        rounds,
                    },
                )
                .await
            }
            Command::Soak {
                clients,
                duration,
                mark,
                pause,
                group,
                sample,
            } => {
                soak(
                    ctx,
                    &SoakArgs {
                        clients,
                        duration: Duration::from_secs_f64(duration),
                        mark: Duration::from_secs_f64(mark),
                        pause: Duration::from_secs_f64(pause),
                        group,
                        sample_every: Duration::from_secs_f64(sample),
                    },
                )
                .await
            }
        }
    }
}
