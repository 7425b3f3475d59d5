//! Assembling and running the server: state, listeners, background tasks, graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::Request;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::auth::{clients, Auth};
use crate::channels::Engine;
use crate::clock::Clock;
use crate::config::{Config, OtpDriverKind};
use crate::db::{self, Db};
use crate::discovery::{self, Listener};
use crate::drivers;
use crate::http::{self, conn};
use crate::hub::Hub;
use crate::net::Peer;
use crate::state::AppState;
use crate::tasks::Tasks;

/// A started server: its bound addresses and the handle to stop it.
pub struct Running {
    pub http_addr: Option<SocketAddr>,
    pub tls_addr: Option<SocketAddr>,
    pub state: AppState,
    done: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Begin a graceful shutdown and wait for it to finish.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.state.shutdown.cancel();
        self.done.await.context("server task")?
    }

    /// Wait until the server stops by itself (signal).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.done.await.context("server task")?
    }
}

/// Open everything, bind the listeners and start serving. Returns once the server is ready.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    start_with_clock(config, Clock::system()).await
}

/// [`start`] on the given clock: every expiry, window, ping and timer of the server follows it
/// (a test's [`Clock::manual`] runs a whole server on virtual time).
pub async fn start_with_clock(config: Config, clock: Clock) -> anyhow::Result<Running> {
    check_insecure_log_driver(&config)?;
    log_driver_hint(&config);
    let config = Arc::new(config);
    let store = open_store(&config, clock).await?;
    let policy = connection_policy(&config);
    // Bind first: the URL base derived from the listeners needs their real ports.
    let http_listener = bind(config.listen).await?;
    let tls_listener = bind(config.tls.listen).await?;
    let http_addr = http_listener.as_ref().map(|l| l.local_addr()).transpose()?;
    let tls_addr = tls_listener.as_ref().map(|l| l.local_addr()).transpose()?;

    // Every background task from here on runs under `tasks`, stopped and awaited before the
    // database closes.
    let mut tasks = Tasks::new(CancellationToken::new());
    let state = assemble(&config, &store.db, &mut tasks, http_addr, tls_addr).await?;
    let router = http::router(state.clone());
    crate::metrics::set_driver_names(&config);
    let admission = conn::Admission::new(policy, state.trusted_proxies.clone());
    let fatal: Arc<parking_lot::Mutex<Option<String>>> = Default::default();
    spawn_watchers(&mut tasks, &state, store, &fatal);

    let tls_identity = match config.tls.listen {
        Some(_) => Some(crate::tls::load(&config.tls, &config.data_dir)?),
        None => None,
    };
    let plain = http_listener.zip(http_addr);
    let tls = tls_listener.zip(tls_addr).zip(tls_identity);
    spawn_listeners(&mut tasks, plain, tls, &router, &admission, &config);
    if let Some(addr) = config.metrics.listen {
        spawn_metrics(&mut tasks, &state, addr).await?;
    }
    let advertisement = advertise(&config, &state.db, http_addr, tls_addr).await;
    spawn_timers(&mut tasks, &state);

    let serving: Vec<String> = [
        http_addr.map(|a| format!("http://{a}")),
        tls_addr.map(|a| format!("https://{a}")),
    ]
    .into_iter()
    .flatten()
    .collect();
    crate::service::notify_ready(&format!("serving {}", serving.join(" and ")));
    if let Some(every) = crate::service::watchdog_period() {
        tasks.spawn(
            "systemd watchdog",
            crate::service::watchdog(
                state.db.clone(),
                every,
                state.shutdown.clone(),
                crate::service::pet_when_healthy,
            ),
        );
    }

    let done = {
        let state = state.clone();
        tokio::spawn(async move {
            state.shutdown.cancelled().await;
            shut_down(state, tasks, advertisement, fatal).await
        })
    };
    Ok(Running {
        http_addr,
        tls_addr,
        state,
        done,
    })
}

/// The data directory's database, opened and ready, and the control socket beside it.
struct Store {
    control: tokio::net::UnixListener,
    db: Db,
    db_id: db::health::FileId,
}

async fn open_store(config: &Config, clock: Clock) -> anyhow::Result<Store> {
    prepare_data_dir(&config.data_dir)?;
    // Before the database, so a second server on this data dir stops without touching it.
    let control = crate::admin::control::bind(&config.data_dir)?;
    let db = Db::open_with_clock(&config.db_path(), clock)
        .with_context(|| format!("cannot open database {}", config.db_path().display()))?;
    let db_id = db::health::file_id(&config.db_path())
        .with_context(|| format!("cannot stat {}", config.db_path().display()))?;
    ensure_client(&db, config).await?;
    Ok(Store { control, db, db_id })
}

/// The drivers, the push queue's worker, the hub and the live engine (loaded from the
/// database), and the state every handler shares.
async fn assemble(
    config: &Arc<Config>,
    db: &Db,
    tasks: &mut Tasks,
    http_addr: Option<SocketAddr>,
    tls_addr: Option<SocketAddr>,
) -> anyhow::Result<AppState> {
    let public_base = url_base(config, http_addr, tls_addr);
    let otp_sender = drivers::otp::from_config(config)?;
    let pusher = drivers::push::from_config(config)?;
    let (push, push_worker) = drivers::push::PushQueue::new(
        pusher,
        db.clone(),
        config.push.queue,
        tasks.shutdown().clone(),
    );
    tasks.spawn("push delivery", push_worker);
    let hub = Arc::new(Hub::new());
    let engine = Engine::start(db.clone(), hub.clone(), push.clone(), config)
        .await
        .context("loading presence and live chats")?;
    // The engine renders frames for everyone with one base (docs/hardening.md "Absolute URLs").
    match (http_addr, tls_addr) {
        (Some(bound), _) => engine.set_base(config, bound, false),
        (None, Some(bound)) => engine.set_base(config, bound, true),
        (None, None) => {}
    }
    let auth = Arc::new(Auth::new(db.clone(), config.clone(), otp_sender));
    crate::people::numbers::set_display(&auth.numbers);
    Ok(AppState {
        auth,
        config: config.clone(),
        db: db.clone(),
        hub,
        engine,
        push,
        trusted_proxies: Arc::new(config.trusted_proxies.iter().map(|p| p.cidr).collect()),
        public_base,
        write_probe: Default::default(),
        shutdown: tasks.shutdown().clone(),
    })
}

/// The control socket, and the watch on the database file (a file deleted or replaced under
/// the running server stops it, the reason kept in `fatal`).
fn spawn_watchers(
    tasks: &mut Tasks,
    state: &AppState,
    store: Store,
    fatal: &Arc<parking_lot::Mutex<Option<String>>>,
) {
    tasks.spawn(
        "control socket",
        crate::admin::cli::control_server(store.control, state.clone(), std::time::Instant::now()),
    );
    let fatal = fatal.clone();
    let shutdown = state.shutdown.clone();
    tasks.spawn(
        "database file watch",
        db::health::watch_file(
            state.config.db_path(),
            store.db_id,
            state.shutdown.clone(),
            move |why| {
                log::error!("{why}");
                *fatal.lock() = Some(why);
                shutdown.cancel();
            },
        ),
    );
}

async fn spawn_metrics(
    tasks: &mut Tasks,
    state: &AppState,
    addr: SocketAddr,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for metrics"))?;
    log::info!("metrics at http://{}/metrics", listener.local_addr()?);
    let live = state.clone();
    let figures = move || live_figures(&live);
    tasks.spawn(
        "metrics listener",
        crate::metrics::serve(listener, state.shutdown.clone(), figures),
    );
    Ok(())
}

/// The loops that run on the clock: background windows ending, old login codes purged.
fn spawn_timers(tasks: &mut Tasks, state: &AppState) {
    tasks.adopt(
        "background sweeper",
        state.engine.spawn_sweeper(state.shutdown.clone()),
    );
    tasks.spawn(
        "OTP purge",
        purge_otp_codes(state.db.clone(), state.shutdown.clone()),
    );
}

/// The one base of absolute URLs in what users receive (logged with where it comes from).
fn url_base(config: &Config, http: Option<SocketAddr>, tls: Option<SocketAddr>) -> Arc<str> {
    let base: Arc<str> = crate::host::public_base(config, http, tls).into();
    log::info!(
        "absolute URLs (pictures) in what users receive start with {base}{}",
        if config.public_url.is_none() {
            " (derived from the listener; set public_url to choose)"
        } else {
            ""
        }
    );
    base
}

/// One accept loop under `tasks` for each bound listener: plain, and TLS with its identity.
fn spawn_listeners(
    tasks: &mut Tasks,
    plain: Option<(TcpListener, SocketAddr)>,
    tls: Option<((TcpListener, SocketAddr), crate::tls::Identity)>,
    router: &Router,
    admission: &Arc<conn::Admission>,
    config: &Config,
) {
    if let Some((listener, bound)) = plain {
        log::info!("listening on http://{bound} (websocket at ws://{bound}/cable)");
        let shutdown = tasks.shutdown().clone();
        tasks.spawn(
            "http listener",
            accept_loop(
                listener,
                router.clone(),
                None,
                admission.clone(),
                dead_peer_timeout(config),
                shutdown,
            ),
        );
    }
    if let Some(((listener, bound), identity)) = tls {
        log::info!(
            "listening on https://{bound} (websocket at wss://{bound}/cable); certificate {} SHA-256 {}",
            identity.cert_path.display(),
            identity.fingerprint
        );
        let shutdown = tasks.shutdown().clone();
        tasks.spawn(
            "tls listener",
            accept_loop(
                listener,
                router.clone(),
                Some(identity.acceptor),
                admission.clone(),
                dead_peer_timeout(config),
                shutdown,
            ),
        );
    }
}

/// Restrictive umask, the data directory created and the owner's alone.
fn prepare_data_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    db::health::private_umask();
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create data directory {}", dir.display()))?;
    db::health::secure_data_dir(dir).with_context(|| {
        format!(
            "cannot restrict the data directory {} to its owner",
            dir.display()
        )
    })
}

/// Raise the open-file limit and derive the connection caps from it (logged).
fn connection_policy(config: &Config) -> conn::Policy {
    let (nofile_before, nofile) = conn::raise_nofile();
    let policy = conn::Policy::resolve(&config.limits, nofile);
    log::info!(
        "open-file limit {nofile} (was {nofile_before}); at most {} connections, {} per address; \
         timeouts: request head {:?}, idle {:?}, websocket handshake {:?}",
        policy.max_connections,
        match policy.max_per_address {
            0 => "no cap".to_string(),
            n => n.to_string(),
        },
        policy.header_timeout,
        policy.keepalive_timeout,
        policy.upgrade_timeout,
    );
    policy
}

/// Connections the kernel may hold for us before we accept them (capped by
/// `net.core.somaxconn`, 4096 by default). tokio's default of 1,024 overflowed when every client
/// came back at once after a restart: 5,000 reconnecting clients then waited for TCP's
/// one-second retransmission (`hangin-load reconnect`: READY → all `chats` 2.7 → 0.7 s).
const LISTEN_BACKLOG: u32 = 4096;

async fn bind(addr: Option<std::net::SocketAddr>) -> anyhow::Result<Option<TcpListener>> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    let listen = || -> std::io::Result<TcpListener> {
        let socket = match addr {
            std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        // As `TcpListener::bind` does: a restart must not wait for old connections' TIME_WAIT.
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(LISTEN_BACKLOG)
    };
    Ok(Some(
        listen().with_context(|| format!("cannot listen on {addr}"))?,
    ))
}

/// What `/metrics` reads at each scrape.
fn live_figures(state: &AppState) -> crate::metrics::Figures {
    crate::metrics::Figures {
        connections: state.hub.connection_count(),
        online_users: state.engine.online_count(),
        live_chats: state.engine.live_chat_count(),
        deliveries: state
            .hub
            .deliveries
            .load(std::sync::atomic::Ordering::Relaxed),
    }
}

/// The graceful stop, in order: withdraw the mDNS record, store everyone's background window,
/// tell clients to reconnect, stop every background task, close the database.
async fn shut_down(
    state: AppState,
    tasks: Tasks,
    advertisement: Option<discovery::Advertisement>,
    fatal: Arc<parking_lot::Mutex<Option<String>>>,
) -> anyhow::Result<()> {
    crate::service::notify_stopping();
    if let Some(ad) = advertisement {
        tokio::task::spawn_blocking(move || ad.withdraw())
            .await
            .ok();
    }
    // Everyone online goes to the background first (committed), so the chats stay
    // live across the restart; only then are clients told to reconnect.
    if let Err(e) = state.engine.shutdown().await {
        log::error!("shutdown: background windows were not stored: {e}");
    }
    log::info!(
        "shutting down: telling {} cable client(s) to reconnect",
        state.hub.connection_count()
    );
    state.hub.disconnect_all("server_restart", true);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while state.hub.connection_count() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The listeners drain their connections for up to 5 s; every other task stops at
    // once. Only then may the database close.
    tasks.stop(Duration::from_secs(10)).await;
    let db = state.db.clone();
    tokio::task::spawn_blocking(move || db.close()).await.ok();
    if let Some(why) = fatal.lock().take() {
        // Non-zero exit: systemd's Restart=on-failure starts us again.
        anyhow::bail!("stopped: {why}");
    }
    log::info!("stopped");
    Ok(())
}

/// Run until SIGTERM or SIGINT, then shut down gracefully.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let running = start(config).await?;
    let shutdown = running.state.shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        shutdown.cancel();
    });
    running.wait().await
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => log::info!("SIGTERM received"),
        _ = int.recv() => log::info!("SIGINT received"),
    }
}

/// The `log` OTP driver prints codes: only on loopback unless the admin opted in (the shipped
/// /etc/hangin/hangin.toml does, so a fresh Pi can let its first people log in). Either way the
/// start log says in one line how to get real delivery. `hangin config check` runs this too.
pub fn check_insecure_log_driver(config: &Config) -> anyhow::Result<()> {
    if config.otp.driver != OtpDriverKind::Log {
        return Ok(());
    }
    let exposed = [config.listen, config.tls.listen]
        .into_iter()
        .flatten()
        .any(|a| !a.ip().is_loopback());
    if exposed && !config.allow_insecure_log_driver {
        // A configuration problem like a bad key: exit code 2, so systemd does not loop on it.
        return Err(drivers::DriverError::config(
            "log",
            "it writes login codes to the log; refusing to serve it on a non-loopback address. \
             Configure [otp] driver = \"modem\"|\"webhook\"|\"exec\", or set allow_insecure_log_driver = true",
        )
        .into());
    }
    Ok(())
}

/// The one line the start log gives an admin still on the `log` OTP driver.
fn log_driver_hint(config: &Config) {
    if config.otp.driver == OtpDriverKind::Log {
        log::warn!(
            "login codes go to this log (read them: journalctl -u hangin -g 'OTP for'); for SMS set \
             [otp] driver = \"modem\", \"webhook\" or \"exec\" in the config file (docs/configuration.md)"
        );
    }
}

/// Advertise the bound listeners over mDNS. Discovery is a convenience: a failure is logged and
/// the server runs on.
async fn advertise(
    config: &Config,
    db: &Db,
    http_addr: Option<SocketAddr>,
    tls_addr: Option<SocketAddr>,
) -> Option<discovery::Advertisement> {
    if !config.mdns.enabled {
        return None;
    }
    let server_id = match db.write(db::server_uuid).await {
        Ok(id) => id,
        Err(e) => {
            log::warn!("mDNS: cannot read the server id: {e}");
            return None;
        }
    };
    let listeners: Vec<Listener> = [(http_addr, false), (tls_addr, true)]
        .into_iter()
        .filter_map(|(addr, tls)| addr.map(|addr| Listener { addr, tls }))
        .collect();
    let mdns = config.mdns.clone();
    let advertised =
        tokio::task::spawn_blocking(move || discovery::advertise(&mdns, &listeners, &server_id))
            .await;
    match advertised {
        Ok(Ok(ad)) => ad,
        Ok(Err(e)) => {
            log::warn!("{e}; not advertising");
            None
        }
        Err(e) => {
            log::warn!("mDNS: {e}");
            None
        }
    }
}

/// First start: make sure one OAuth client exists and tell the operator where its credentials are.
/// A credentials file next to a database without clients means the database is not the one the
/// apps were set up with (deleted, lost, replaced): refuse rather than overwrite what the apps use.
async fn ensure_client(db: &Db, config: &Config) -> anyhow::Result<()> {
    let existing = db.read(db::clients::list).await?;
    if !existing.is_empty() {
        return Ok(());
    }
    let path = config.credentials_path();
    if path.exists() {
        anyhow::bail!(
            "the database {} has no OAuth client, but {} exists: the database is not the one the \
             apps were configured for (was it deleted or replaced?). Restore the database from a \
             backup; or, if every client was deleted on purpose, move {} away to start afresh \
             with new credentials",
            config.db_path().display(),
            path.display(),
            path.display()
        );
    }
    let client = db.write(|c| clients::create(c, "default")).await?;
    clients::write_credentials(&path, &client)
        .with_context(|| format!("cannot write {}", path.display()))?;
    log::info!(
        "created OAuth client \"default\"; its client_id and client_secret are in {}",
        path.display()
    );
    Ok(())
}

/// Hourly, and once at start: codes older than a day are deleted.
async fn purge_otp_codes(db: Db, shutdown: CancellationToken) {
    let mut tick = db.clock().ticker(Duration::from_secs(3600));
    loop {
        // Keep a day of codes for the rate limits; older ones serve nothing.
        let before = db.now_ms() - 24 * 3600 * 1000;
        if let Err(e) = db.write(move |c| db::otp::purge_before(c, before)).await {
            log::warn!("purging old OTP codes failed: {e}");
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
    }
}

/// `[cable] dead_peer_seconds` as a TCP_USER_TIMEOUT; `None` leaves the kernel's default.
fn dead_peer_timeout(config: &Config) -> Option<Duration> {
    config.cable.dead_peer
}

/// Data we sent that stays unacknowledged this long aborts the connection. The cable's pings
/// are such data every few seconds, so a peer whose network vanished (no FIN, no RST) is found
/// within `timeout` plus one ping, instead of after the kernel's ~15 minutes of retransmissions
/// (docs/websocket.md "Dead peers").
fn set_dead_peer_timeout(stream: &tokio::net::TcpStream, timeout: Option<Duration>) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Some(timeout) = timeout {
        if let Err(e) = socket2::SockRef::from(stream).set_tcp_user_timeout(Some(timeout)) {
            log::debug!("cannot set TCP_USER_TIMEOUT: {e}");
        }
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = (stream, timeout);
}

/// Accept connections and serve HTTP/1.1 and HTTP/2 (with websocket upgrades) on each, through
/// TLS when an acceptor is given. Connections over the caps of `admission` are refused: a 503 in
/// the JSON error shape on the plain listener, a plain close on the TLS one.
pub async fn accept_loop(
    listener: TcpListener,
    router: Router,
    tls: Option<TlsAcceptor>,
    admission: Arc<conn::Admission>,
    dead_peer: Option<Duration>,
    shutdown: CancellationToken,
) {
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer_addr) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    log::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let guard = match admission.admit(peer_addr.ip()) {
            Ok(g) => g,
            Err(why) => {
                log::debug!("refusing a connection from {peer_addr}: {why:?}");
                if tls.is_none() {
                    admission.refuse_plain(stream, why);
                }
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        set_dead_peer_timeout(&stream, dead_peer);
        let watcher = graceful.watcher();
        match &tls {
            Some(acceptor) => {
                let (router, admission) = (router.clone(), admission.clone());
                crate::tls::spawn_handshake(acceptor.clone(), stream, peer_addr, move |tls| {
                    let peer = Peer {
                        addr: peer_addr,
                        tls: true,
                    };
                    serve_connection(tls, peer, router, watcher, guard, &admission);
                })
            }
            None => {
                let peer = Peer {
                    addr: peer_addr,
                    tls: false,
                };
                serve_connection(stream, peer, router.clone(), watcher, guard, &admission);
            }
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await;
}

/// Serve one accepted connection (plain or TLS) with the router, under the timeouts of
/// `admission`'s policy (`http::conn`).
pub fn serve_connection<S>(
    io: S,
    peer: Peer,
    router: Router,
    watcher: Watcher,
    guard: conn::ConnGuard,
    admission: &conn::Admission,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let policy = admission.policy().clone();
    let state = conn::ConnState::new();
    let io = TokioIo::new(conn::Tracked::new(io, state.clone(), guard));
    let service = {
        let state = state.clone();
        let policy = policy.clone();
        tower::service_fn(move |req: Request<hyper::body::Incoming>| {
            let upgrade = req.headers().contains_key(axum::http::header::UPGRADE);
            let h2 = req.version() == axum::http::Version::HTTP_2;
            let busy = state.begin(upgrade, h2, &policy);
            let (mut parts, body) = req.into_parts();
            if let Some(uri) = http::normalize_uri(&parts.uri) {
                parts.uri = uri;
            }
            parts.extensions.insert(peer);
            let req = Request::from_parts(parts, conn::Paced::wrap(body, policy.header_timeout));
            let router = router.clone();
            async move {
                let res = router.oneshot(req).await?;
                Ok::<_, std::convert::Infallible>(res.map(|b| conn::Finishing::wrap(b, busy)))
            }
        })
    };
    let hyper_service = TowerToHyperService::new(service);
    let builder = Builder::new(TokioExecutor::new());
    let conn = builder
        .serve_connection_with_upgrades(io, hyper_service)
        .into_owned();
    let conn = watcher.watch(conn);
    tokio::spawn(async move {
        if let Some(Err(e)) = state.supervise(&policy, conn).await {
            log::debug!("connection from {} ended: {e}", peer.addr);
        }
    });
}
