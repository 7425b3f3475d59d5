//! `lockhog`: one account creates chats as fast as the server lets it and subscribes
//! `ChatsChannel` over and over from ~20 sockets, while unrelated users (not its contacts)
//! subscribe `ChatsChannel`. The figure is the unrelated users' subscribe → `chats` latency: one
//! user's activity must not delay another's (issue 11, observation 9: 10.9 s on one lock).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::cable::{self, Ws, CHATS};
use crate::progress;
use crate::report::{Report, Target};
use crate::scenarios::{fleet, mb, new_report, Ctx};
use crate::stats::Samples;

#[derive(Debug, Clone)]
pub struct LockhogArgs {
    /// Chats the hog tries to create (a server with a per-user limit refuses beyond it).
    pub chats: usize,
    /// `createChat`s the hog keeps in flight.
    pub window: usize,
    /// The hog's extra sockets, each subscribing `ChatsChannel` again and again.
    pub hog_sockets: usize,
    /// `ChatsChannel` subscriptions each hog socket holds at once (older ones are unsubscribed;
    /// a server limits them per connection, 100 in issue 11).
    pub subs_per_socket: usize,
    /// Unrelated users, each subscribing, unsubscribing and pausing in a loop.
    pub users: usize,
    pub pause: Duration,
    /// The hog creates chats alone for this long first (issue 11's hog had 20,000 chats before
    /// its subscriptions hurt), then goes on creating during the measured window.
    pub precreate: Duration,
    /// The measured window.
    pub duration: Duration,
}

/// How long one wait may take before the scenario gives up on that connection.
const WAIT: Duration = Duration::from_secs(30);

pub async fn lockhog(ctx: &Ctx, a: &LockhogArgs) -> anyhow::Result<Report> {
    let mut report = new_report(ctx, "lockhog");
    // The hog is user 0; its group mates (users 1..GROUP) stay offline, so the unrelated users
    // (from GROUP on, in their own groups of mutual contacts) never see the hog's chats.
    const GROUP: usize = 10;
    let (mut srv, minted) = ctx.provision(GROUP + a.users, GROUP, false, &[])?;
    let ws_url = srv.ws.clone();
    let hog = minted.users[0].clone();
    let mut creator = cable::connect(&ws_url, &hog.token, ctx.source(0)).await?;
    cable::subscribe(&mut creator, CHATS).await?;
    let hog_socks = fleet(
        "hog sockets",
        (0..a.hog_sockets).collect(),
        ctx.connect_concurrency,
        |i, _| {
            let (url, token, src) = (ws_url.clone(), hog.token.clone(), ctx.source(i + 1));
            async move { cable::connect(&url, &token, src).await }
        },
    )
    .await?;
    let others = fleet(
        "unrelated users connect",
        minted.users[GROUP..].to_vec(),
        ctx.connect_concurrency,
        |i, u| {
            let (url, src) = (ws_url.clone(), ctx.source(i + 1 + a.hog_sockets));
            async move { cable::connect(&url, &u.token, src).await }
        },
    )
    .await?;

    progress!(
        "lockhog: hog creates up to {} chats and cycles ChatsChannel on {} sockets; {} unrelated users subscribe, for {:?}",
        a.chats,
        a.hog_sockets,
        a.users,
        a.duration
    );
    let created = Arc::new(AtomicU64::new(0));
    let (creator, pre) = create_chats(
        creator,
        a.chats,
        a.window.max(1),
        tokio::time::Instant::now() + a.precreate,
        created.clone(),
    )
    .await?;
    progress!(
        "lockhog: the hog created {} chats alone in {:.1} s{}",
        pre.created,
        pre.secs,
        if pre.refused > 0 {
            " (then refused)"
        } else {
            ""
        }
    );
    let cpu0 = srv.cpu_seconds();
    let t0 = Instant::now();
    let deadline = tokio::time::Instant::now() + a.duration;
    let more = if pre.refused > 0 {
        0
    } else {
        a.chats - pre.created as usize
    };
    let window = a.window.max(1);
    let creating = tokio::spawn({
        let created = created.clone();
        async move {
            let (mut ws, c) = create_chats(creator, more, window, deadline, created).await?;
            // Keep the hog online (its chats live) until the window ends.
            tokio::time::sleep_until(deadline).await;
            let _ = ws.close(None).await;
            anyhow::Ok(c)
        }
    });
    let hogs: Vec<_> = hog_socks
        .into_iter()
        .enumerate()
        .map(|(i, ws)| tokio::spawn(hog_subscribe(ws, i, a.subs_per_socket.max(1), deadline)))
        .collect();
    let n_users = others.len().max(1);
    let users: Vec<_> = others
        .into_iter()
        .enumerate()
        .map(|(i, ws)| {
            // Spread the first subscribes over one pause so they do not all start at once.
            let offset = a.pause.mul_f64(i as f64 / n_users as f64);
            tokio::spawn(user_loop(ws, offset, a.pause, deadline))
        })
        .collect();
    let ticker = {
        let created = created.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(2));
            tick.tick().await;
            loop {
                tick.tick().await;
                progress!(
                    "lockhog {:.0} s: hog has {} chats",
                    t0.elapsed().as_secs_f64(),
                    created.load(Ordering::Relaxed)
                );
            }
        })
    };

    let mut latency = Samples::default();
    let mut timeouts = 0usize;
    let mut user_failures = 0usize;
    for h in users {
        match h.await? {
            Ok(u) => {
                latency.extend(u.latency);
                timeouts += u.timed_out as usize;
            }
            Err(e) => {
                user_failures += 1;
                progress!("an unrelated user failed: {e:#}");
            }
        }
    }
    let mut hog_confirmed = 0u64;
    let mut hog_rejected = 0u64;
    let mut hog_bytes = 0u64;
    let mut hog_failures = 0usize;
    for h in hogs {
        match h.await? {
            Ok(s) => {
                hog_confirmed += s.confirmed;
                hog_rejected += s.rejected;
                hog_bytes += s.bytes;
            }
            Err(e) => {
                hog_failures += 1;
                progress!("a hog socket failed: {e:#}");
            }
        }
    }
    let during = creating.await??;
    let chats_before = pre.created;
    let creation = Creation {
        created: pre.created + during.created,
        refused: pre.refused + during.refused,
        first_refusal: pre.first_refusal.or(during.first_refusal),
        secs: pre.secs + during.secs,
    };
    ticker.abort();
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = match (cpu0, srv.cpu_seconds()) {
        (Some(x), Some(y)) => (y - x) / elapsed * 100.0,
        _ => 0.0,
    };
    let hwm = srv.hwm_kib();
    let (warnings, slow) = srv.warnings();
    srv.stop()?;

    let s = latency.summary();
    report.figure(
        "lockhog_sub_p50_ms",
        "unrelated subscribe → chats p50",
        s.p50_ms,
        "ms",
        None,
    );
    report.figure(
        "lockhog_sub_p99_ms",
        "unrelated subscribe → chats p99",
        s.p99_ms,
        "ms",
        Some(Target::AtMost(100.0)),
    );
    report.figure(
        "lockhog_sub_max_ms",
        "unrelated subscribe → chats max",
        s.max_ms,
        "ms",
        None,
    );
    report.figure(
        "lockhog_subscribes",
        "unrelated subscribes measured",
        s.count as f64,
        "",
        None,
    );
    report.figure(
        "lockhog_timeouts",
        &format!("unrelated subscribes without chats in {WAIT:?}"),
        (timeouts + user_failures) as f64,
        "",
        Some(Target::AtMost(0.0)),
    );
    report.figure(
        "lockhog_hog_chats",
        "chats the hog created",
        creation.created as f64,
        "",
        None,
    );
    report.figure(
        "lockhog_hog_chats_before",
        "of them before the measured window",
        chats_before as f64,
        "",
        None,
    );
    report.figure(
        "lockhog_hog_refused",
        "createChat refused (error payload)",
        creation.refused as f64,
        "",
        None,
    );
    report.figure(
        "lockhog_hog_chats_per_s",
        "hog createChat rate",
        creation.created as f64 / creation.secs.max(1e-9),
        "/s",
        None,
    );
    report.figure(
        "lockhog_hog_subscribes",
        "hog ChatsChannel subscriptions confirmed",
        hog_confirmed as f64,
        "",
        None,
    );
    report.figure("lockhog_server_cpu_pct", "server CPU", cpu, "% core", None);
    report.detail("latency", s);
    report.detail(
        "hog",
        json!({"chats_created": creation.created, "refused": creation.refused,
               "first_refusal": creation.first_refusal, "creating_s": creation.secs,
               "subscriptions_confirmed": hog_confirmed, "subscriptions_rejected": hog_rejected,
               "chat_list_bytes_received": hog_bytes, "socket_failures": hog_failures}),
    );
    report.detail("peak_rss_mb", mb(hwm));
    report.detail(
        "server_warnings",
        json!({"total": warnings, "too_slow": slow}),
    );
    report.detail(
        "args",
        json!({"chats": a.chats, "window": a.window, "hog_sockets": a.hog_sockets,
               "subs_per_socket": a.subs_per_socket, "users": a.users,
               "precreate_s": a.precreate.as_secs_f64(),
               "pause_ms": a.pause.as_millis() as u64, "duration_s": a.duration.as_secs_f64()}),
    );
    Ok(report.finish())
}

struct Creation {
    created: u64,
    refused: u64,
    first_refusal: Option<String>,
    secs: f64,
}

/// Pipelined `createChat` until `chats`, the deadline, or the first refusal (an `error` payload,
/// e.g. a per-user limit of live chats): a refusal ends the creating, not the scenario.
async fn create_chats(
    mut ws: Ws,
    chats: usize,
    window: usize,
    deadline: tokio::time::Instant,
    created: Arc<AtomicU64>,
) -> anyhow::Result<(Ws, Creation)> {
    let t0 = Instant::now();
    let mut sent = 0usize;
    let mut answered = 0usize;
    let mut out = Creation {
        created: 0,
        refused: 0,
        first_refusal: None,
        secs: 0.0,
    };
    let mut last_answer = t0;
    loop {
        let stop = out.refused > 0 || tokio::time::Instant::now() >= deadline;
        while !stop && sent < chats && sent - answered < window {
            let frame = cable::perform_frame(
                CHATS,
                json!({"action": "createChat", "name": format!("hog {sent}")}),
            );
            ws.send(Message::Text(frame.into())).await?;
            sent += 1;
        }
        if answered == sent {
            break;
        }
        let Some(t) = cable::next_text(&mut ws, WAIT).await? else {
            progress!("lockhog: no answer to createChat within {WAIT:?}");
            break;
        };
        if t.contains(r#""own_chat":"#) || t.contains(r#""ownChat":"#) {
            answered += 1;
            out.created += 1;
            created.fetch_add(1, Ordering::Relaxed);
            last_answer = Instant::now();
        } else if t.contains(r#""message":{"error":"#) {
            answered += 1;
            out.refused += 1;
            if out.first_refusal.is_none() {
                progress!(
                    "lockhog: createChat refused after {} chats: {t}",
                    out.created
                );
                out.first_refusal = Some(t);
            }
        }
    }
    out.secs = (last_answer - t0).as_secs_f64();
    Ok((ws, out))
}

struct HogSubs {
    confirmed: u64,
    rejected: u64,
    bytes: u64,
}

/// Subscribe `ChatsChannel` under ever new identifiers (the server treats each exact string as
/// its own subscription), keeping at most `keep` at once by unsubscribing the oldest.
async fn hog_subscribe(
    mut ws: Ws,
    socket: usize,
    keep: usize,
    deadline: tokio::time::Instant,
) -> anyhow::Result<HogSubs> {
    let mut out = HogSubs {
        confirmed: 0,
        rejected: 0,
        bytes: 0,
    };
    let mut live = std::collections::VecDeque::new();
    let mut k = 0u64;
    while tokio::time::Instant::now() < deadline {
        let ident = format!(r#"{{"channel":"ChatsChannel","hog":"s{socket}k{k}"}}"#);
        k += 1;
        cable::send(
            &mut ws,
            &json!({"command": "subscribe", "identifier": ident}),
        )
        .await?;
        let marker = cable::escaped(&ident);
        loop {
            let Some(t) = cable::next_text(&mut ws, WAIT).await? else {
                anyhow::bail!("hog subscription not answered within {WAIT:?}");
            };
            out.bytes += t.len() as u64;
            match cable::frame_type(&t) {
                Some("confirm_subscription") if t.contains(&marker) => {
                    out.confirmed += 1;
                    live.push_back(ident);
                    break;
                }
                Some("reject_subscription") if t.contains(&marker) => {
                    out.rejected += 1;
                    break;
                }
                _ => {}
            }
        }
        while live.len() > keep {
            let old = live.pop_front().expect("non-empty");
            cable::send(
                &mut ws,
                &json!({"command": "unsubscribe", "identifier": old}),
            )
            .await?;
        }
    }
    let _ = ws.close(None).await;
    Ok(out)
}

struct UserSubs {
    latency: Samples,
    timed_out: bool,
}

/// Subscribe `ChatsChannel` (timing the `chats` frame), wait for the confirmation,
/// unsubscribe, pause; until the deadline.
async fn user_loop(
    mut ws: Ws,
    offset: Duration,
    pause: Duration,
    deadline: tokio::time::Instant,
) -> anyhow::Result<UserSubs> {
    let mut out = UserSubs {
        latency: Samples::default(),
        timed_out: false,
    };
    tokio::time::sleep(offset).await;
    'outer: while tokio::time::Instant::now() < deadline {
        let sent = crate::now_ns();
        cable::send(
            &mut ws,
            &json!({"command": "subscribe", "identifier": CHATS}),
        )
        .await?;
        let mut got_chats = false;
        loop {
            let Some(t) = cable::next_text(&mut ws, WAIT).await? else {
                // Count the wait it took as a (lower bound) sample, then give up.
                out.latency.push(crate::now_ns() - sent);
                out.timed_out = true;
                break 'outer;
            };
            if !got_chats && t.contains(r#"{"chats":["#) {
                out.latency.push(crate::now_ns() - sent);
                got_chats = true;
            }
            match cable::frame_type(&t) {
                Some("confirm_subscription") => break,
                Some("reject_subscription") => anyhow::bail!("ChatsChannel rejected: {t}"),
                _ => {}
            }
        }
        cable::send(
            &mut ws,
            &json!({"command": "unsubscribe", "identifier": CHATS}),
        )
        .await?;
        tokio::time::sleep(pause).await;
    }
    let _ = ws.close(None).await;
    Ok(out)
}
