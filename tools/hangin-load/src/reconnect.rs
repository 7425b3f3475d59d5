//! `reconnect`: N users in groups of mutual contacts, in live chats; a graceful restart
//! (SIGTERM, then the server starts again on the same address and database); every client
//! reconnects at once. Measured: until every client has its `chats` frame, and until every
//! client's re-join of its chat is answered (confirmed, or rejected when the restart ended it).

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::watch;

use crate::cable::{self, Ws, CHATS};
use crate::progress;
use crate::report::{Report, Target};
use crate::scenarios::{drive, fleet, mb, new_report, Ctx, Driven};
use crate::server::{self, Server};
use crate::stats::Samples;

#[derive(Debug, Clone)]
pub struct ReconnectArgs {
    pub users: usize,
    /// Users per group of mutual contacts.
    pub group: usize,
    /// Live chats (users / chats members each, within one group).
    pub chats: usize,
    /// Give up on the reconnect after this long.
    pub timeout: Duration,
}

struct Back {
    /// ready → the `chats` frame.
    chats_ns: Option<u64>,
    /// The user's chat is in that list.
    listed: bool,
    /// ready → the re-join answered, and whether it was confirmed.
    rejoin_ns: Option<u64>,
    rejoined: bool,
    connect_attempts: u32,
    error: Option<String>,
}

pub async fn reconnect(ctx: &Ctx, a: &ReconnectArgs) -> anyhow::Result<Report> {
    if ctx.url.is_some() {
        anyhow::bail!("`reconnect` restarts the server itself; it cannot use --url");
    }
    let mut report = new_report(ctx, "reconnect");
    let chats = a.chats.clamp(1, a.users.max(1));
    let size = a.users / chats;
    if size == 0 || a.group % size != 0 {
        anyhow::bail!(
            "reconnect: {} users in {chats} chats makes chats of {size}; the group size ({}) must be a multiple of it so each chat's members are mutual contacts",
            a.users,
            a.group
        );
    }
    let (mut srv, minted) = ctx.provision(a.users, a.group, false, &[])?;
    let ws_url = srv.ws.clone();
    let users = minted.users.clone();
    let conns = fleet(
        "connect + ChatsChannel",
        users.clone(),
        ctx.connect_concurrency,
        |i, u| {
            let (url, src) = (ws_url.clone(), ctx.source(i));
            async move {
                let mut ws = cable::connect(&url, &u.token, src).await?;
                cable::subscribe(&mut ws, CHATS).await?;
                Ok(ws)
            }
        },
    )
    .await?;
    let mut conns: Vec<Option<Ws>> = conns.into_iter().map(Some).collect();
    let creators: Vec<(usize, Ws)> = (0..chats)
        .map(|c| (c, conns[c * size].take().expect("present")))
        .collect();
    let created = fleet(
        "createChat",
        creators,
        ctx.connect_concurrency,
        |_, (c, mut ws)| async move {
            let id = cable::create_chat(&mut ws, &format!("reconnect {c}")).await?;
            Ok((c, id, ws))
        },
    )
    .await?;
    let mut chat_of = vec![0i64; chats];
    for (c, id, ws) in created {
        chat_of[c] = id;
        conns[c * size] = Some(ws);
    }
    // Users beyond chats × size (a remainder) stay online without a chat.
    let member = |i: usize| (i / size < chats).then(|| chat_of[i / size]);
    let items: Vec<(Option<i64>, Ws)> = conns
        .iter_mut()
        .enumerate()
        .map(|(i, c)| (member(i), c.take().expect("present")))
        .collect();
    let joined = fleet(
        "join ChatChannel",
        items,
        ctx.connect_concurrency,
        |_, (chat, mut ws)| async move {
            if let Some(chat) = chat {
                cable::subscribe(&mut ws, &cable::chat_identifier(chat)).await?;
            }
            Ok(ws)
        },
    )
    .await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let driven: Vec<Driven> = joined
        .into_iter()
        .map(|ws| drive(ws, stop_rx.clone(), 0))
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before = srv.rss_kib();

    // Graceful restart on the same address and database.
    let addr = srv.addr().to_string();
    progress!(
        "reconnect: SIGTERM to the server with {} users online",
        a.users
    );
    let t_term = Instant::now();
    tokio::task::block_in_place(|| srv.stop())?;
    let stop_secs = t_term.elapsed().as_secs_f64();
    let dir = srv
        .data_dir
        .clone()
        .expect("a started server has a data dir");
    let tmp = srv.take_tempdir();
    let mut closed_by_server = 0usize;
    stop_tx.send(true).ok();
    for d in driven {
        closed_by_server += d.handle.await?.closed_early as usize;
    }
    let launch = ctx.launch(&[("HANGIN_LISTEN", &addr)])?;
    let t_start = Instant::now();
    let srv2 = tokio::task::block_in_place(|| Server::start_in(&launch, dir, tmp))?;
    let ready_ns = crate::now_ns();
    let start_secs = t_start.elapsed().as_secs_f64();
    progress!(
        "reconnect: server back (stopped in {:.0} ms, READY after {:.0} ms); {} clients reconnect at once",
        stop_secs * 1e3,
        srv2.ready_after.unwrap_or_default().as_secs_f64() * 1e3,
        a.users
    );
    let mut srv = srv2;
    let cpu0 = srv.cpu_seconds();
    let own0 = server::own_cpu_seconds();
    let deadline = tokio::time::Instant::now() + a.timeout;
    let handles: Vec<_> = users
        .iter()
        .enumerate()
        .map(|(i, u)| {
            let (url, token, src, chat) =
                (srv.ws.clone(), u.token.clone(), ctx.source(i), member(i));
            tokio::spawn(come_back(url, token, src, chat, ready_ns, deadline))
        })
        .collect();
    let ticker = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        loop {
            tick.tick().await;
            progress!(
                "reconnect: {:.0} s since READY",
                (crate::now_ns() - ready_ns) as f64 / 1e9
            );
        }
    });
    let mut backs = Vec::with_capacity(handles.len());
    let mut held = Vec::with_capacity(handles.len());
    for h in handles {
        let (back, ws) = h.await?;
        backs.push(back);
        held.push(ws);
    }
    ticker.abort();
    let cpu_secs = match (cpu0, srv.cpu_seconds()) {
        (Some(x), Some(y)) => y - x,
        _ => 0.0,
    };
    let own_secs = server::own_cpu_seconds() - own0;
    let rss_after = srv.rss_kib();
    drop(held);
    let (warnings, slow) = srv.warnings();
    srv.stop()?;

    let mut chats_lat = Samples::default();
    let mut rejoin_lat = Samples::default();
    let (mut failed, mut unlisted, mut rejected, mut attempts) = (0usize, 0usize, 0usize, 0u64);
    let mut first_error = None;
    for (i, b) in backs.iter().enumerate() {
        attempts += b.connect_attempts as u64;
        if let Some(e) = &b.error {
            failed += 1;
            first_error.get_or_insert_with(|| e.clone());
        }
        if let Some(ns) = b.chats_ns {
            chats_lat.push(ns);
        }
        if member(i).is_some() {
            if b.chats_ns.is_some() && !b.listed {
                unlisted += 1;
            }
            if let Some(ns) = b.rejoin_ns {
                rejoin_lat.push(ns);
                rejected += !b.rejoined as usize;
            }
        }
    }
    let members = (0..a.users).filter(|i| member(*i).is_some()).count();
    let all_chats = (chats_lat.len() == a.users).then(|| chats_lat.summary().max_ms / 1e3);
    let all_rejoined = (rejoin_lat.len() == members).then(|| rejoin_lat.summary().max_ms / 1e3);
    let timeout_s = a.timeout.as_secs_f64();
    let big = a.users >= 5000;
    report.figure(
        "reconnect_all_chats_s",
        &format!("READY → all {} clients have chats", a.users),
        all_chats.unwrap_or(timeout_s),
        "s",
        if big {
            ctx.target(Some(Target::AtMost(2.0)), Some(Target::AtMost(5.0)))
        } else {
            None
        },
    );
    report.figure(
        "reconnect_all_rejoined_s",
        "READY → every re-join answered",
        all_rejoined.unwrap_or(timeout_s),
        "s",
        None,
    );
    report.figure(
        "reconnect_chats_p50_ms",
        "READY → chats, p50 of clients",
        chats_lat.summary().p50_ms,
        "ms",
        None,
    );
    report.figure(
        "reconnect_chats_p99_ms",
        "READY → chats, p99 of clients",
        chats_lat.summary().p99_ms,
        "ms",
        None,
    );
    report.figure(
        "reconnect_rejoin_rejected",
        "re-joins rejected (chat ended by the restart)",
        rejected as f64,
        "",
        Some(Target::AtMost(0.0)),
    );
    report.figure(
        "reconnect_chat_unlisted",
        "members whose chat was missing from chats",
        unlisted as f64,
        "",
        Some(Target::AtMost(0.0)),
    );
    report.figure(
        "reconnect_failed",
        "clients that did not get back in time",
        failed as f64,
        "",
        Some(Target::AtMost(0.0)),
    );
    report.figure(
        "reconnect_shutdown_ms",
        "SIGTERM → server exited",
        stop_secs * 1e3,
        "ms",
        None,
    );
    report.figure(
        "reconnect_server_cpu_s",
        "server CPU for the reconnect",
        cpu_secs,
        "s",
        None,
    );
    report.detail("chats_latency", chats_lat.summary());
    report.detail("rejoin_latency", rejoin_lat.summary());
    report.detail("members", members);
    report.detail("live_chats", chats);
    report.detail("first_error", first_error);
    report.detail("connect_attempts", attempts);
    report.detail("closed_by_server_at_sigterm", closed_by_server);
    report.detail("start_to_ready_s", start_secs);
    report.detail("load_tool_cpu_s", own_secs);
    report.detail(
        "rss_mb",
        json!({"before_restart": mb(rss_before), "after_reconnect": mb(rss_after)}),
    );
    report.detail(
        "server_warnings",
        json!({"total": warnings, "too_slow": slow}),
    );
    report.detail(
        "args",
        json!({"users": a.users, "group": a.group, "chats": chats, "timeout_s": timeout_s}),
    );
    Ok(report.finish())
}

/// One client coming back: connect (retrying while the server's backlog overflows), subscribe
/// `ChatsChannel` and time its `chats`, then re-join its chat. Returns the socket so the user
/// stays online until every client is measured.
async fn come_back(
    url: String,
    token: String,
    src: Option<std::net::IpAddr>,
    chat: Option<i64>,
    ready_ns: u64,
    deadline: tokio::time::Instant,
) -> (Back, Option<Ws>) {
    let mut b = Back {
        chats_ns: None,
        listed: false,
        rejoin_ns: None,
        rejoined: false,
        connect_attempts: 0,
        error: None,
    };
    let mut backoff = Duration::from_millis(50);
    let mut ws = loop {
        b.connect_attempts += 1;
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, cable::connect(&url, &token, src)).await {
            Ok(Ok(ws)) => break ws,
            Ok(Err(e)) if tokio::time::Instant::now() + backoff < deadline => {
                if b.connect_attempts == 1 {
                    b.error = Some(format!("{e:#}"));
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            Ok(Err(e)) => {
                b.error = Some(format!("connect: {e:#}"));
                return (b, None);
            }
            Err(_) => {
                b.error = Some("connect: timed out".into());
                return (b, None);
            }
        }
    };
    b.error = None;
    let result = async {
        cable::send(
            &mut ws,
            &json!({"command": "subscribe", "identifier": CHATS}),
        )
        .await?;
        let listed_marker = chat.map(|c| format!(r#""id":{c},"#));
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some(t) = cable::next_text(&mut ws, left).await? else {
                anyhow::bail!("no chats/confirmation before the timeout");
            };
            if b.chats_ns.is_none() && t.contains(r#"{"chats":["#) {
                b.chats_ns = Some(crate::now_ns() - ready_ns);
                b.listed = listed_marker
                    .as_ref()
                    .is_some_and(|m| t.contains(m.as_str()));
            }
            match cable::frame_type(&t) {
                Some("confirm_subscription") => break,
                Some("reject_subscription") => anyhow::bail!("ChatsChannel rejected"),
                _ => {}
            }
        }
        let Some(chat) = chat else { return Ok(()) };
        let ident = cable::chat_identifier(chat);
        let marker = cable::escaped(&ident);
        cable::send(
            &mut ws,
            &json!({"command": "subscribe", "identifier": ident}),
        )
        .await?;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some(t) = cable::next_text(&mut ws, left).await? else {
                anyhow::bail!("re-join not answered before the timeout");
            };
            match cable::frame_type(&t) {
                Some(kind @ ("confirm_subscription" | "reject_subscription"))
                    if t.contains(&marker) =>
                {
                    b.rejoin_ns = Some(crate::now_ns() - ready_ns);
                    b.rejoined = kind == "confirm_subscription";
                    break;
                }
                _ => {}
            }
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        b.error = Some(format!("{e:#}"));
    }
    (b, Some(ws))
}
