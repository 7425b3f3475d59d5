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
use crate::config::{Config, OtpDriverKind};
use crate::db::{self, Db};
use crate::discovery::{self, Listener};
use crate::drivers;
use crate::http::{self, client_ip::Cidr, client_ip::Peer};
use crate::hub::Hub;
use crate::state::AppState;

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
    check_insecure_log_driver(&config)?;
    let config = Arc::new(config);
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
    // First, so a second server on this data dir stops before touching the database.
    let control = crate::admin::control::bind(&config.data_dir)?;
    let db = Db::open(&config.db_path())
        .with_context(|| format!("cannot open database {}", config.db_path().display()))?;
    ensure_client(&db, &config).await?;

    let otp_sender = drivers::otp::from_config(&config)?;
    let pusher = drivers::push::from_config(&config)?;
    let push = drivers::push::PushQueue::start(pusher, db.clone(), config.push.queue);
    let hub = Arc::new(Hub::new());
    let engine = Engine::start(db.clone(), hub.clone(), push.clone(), &config)
        .await
        .context("loading presence and live chats")?;
    let trusted_proxies = Arc::new(
        config
            .trusted_proxies
            .iter()
            .filter_map(|c| Cidr::parse(c))
            .collect(),
    );
    let state = AppState {
        auth: Arc::new(Auth::new(db.clone(), config.clone(), otp_sender)),
        config: config.clone(),
        db: db.clone(),
        hub,
        engine: engine.clone(),
        push,
        trusted_proxies,
        shutdown: CancellationToken::new(),
    };
    let router = http::router(state.clone());
    crate::metrics::set_driver_names(&config);
    crate::admin::cli::start_control(control, state.clone(), std::time::Instant::now());

    let tls_identity = match config.tls_addr() {
        Some(_) => Some(crate::tls::load(&config.tls, &config.data_dir)?),
        None => None,
    };

    let mut http_addr = None;
    let mut tls_addr = None;
    let mut accept_tasks = Vec::new();
    if let Some(addr) = config.listen_addr() {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let bound = listener.local_addr()?;
        log::info!("listening on http://{bound} (websocket at ws://{bound}/cable)");
        http_addr = Some(bound);
        engine.set_base(&config, bound, false);
        accept_tasks.push(tokio::spawn(accept_loop(
            listener,
            router.clone(),
            None,
            state.shutdown.clone(),
        )));
    }
    if let (Some(addr), Some(identity)) = (config.tls_addr(), tls_identity) {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let bound = listener.local_addr()?;
        log::info!(
            "listening on https://{bound} (websocket at wss://{bound}/cable); certificate {} SHA-256 {}",
            identity.cert_path.display(),
            identity.fingerprint
        );
        tls_addr = Some(bound);
        if http_addr.is_none() {
            engine.set_base(&config, bound, true);
        }
        accept_tasks.push(tokio::spawn(accept_loop(
            listener,
            router.clone(),
            Some(identity.acceptor),
            state.shutdown.clone(),
        )));
    }

    if let Some(addr) = config.metrics_addr() {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} for metrics"))?;
        log::info!("metrics at http://{}/metrics", listener.local_addr()?);
        tokio::spawn(crate::metrics::serve(listener, state.clone()));
    }

    let advertisement = advertise(&config, &db, http_addr, tls_addr).await;

    engine.spawn_sweeper(state.shutdown.clone());
    spawn_otp_purge(db.clone(), state.shutdown.clone());
    let serving: Vec<String> = [
        http_addr.map(|a| format!("http://{a}")),
        tls_addr.map(|a| format!("https://{a}")),
    ]
    .into_iter()
    .flatten()
    .collect();
    crate::service::notify_ready(&format!("serving {}", serving.join(" and ")));
    crate::service::spawn_watchdog(db.clone(), state.shutdown.clone());

    let done = {
        let state = state.clone();
        tokio::spawn(async move {
            state.shutdown.cancelled().await;
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
            for task in accept_tasks {
                let _ = task.await;
            }
            let db = state.db.clone();
            tokio::task::spawn_blocking(move || db.close()).await.ok();
            log::info!("stopped");
            Ok(())
        })
    };
    Ok(Running {
        http_addr,
        tls_addr,
        state,
        done,
    })
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

/// The `log` OTP driver prints codes: only on loopback unless explicitly allowed.
fn check_insecure_log_driver(config: &Config) -> anyhow::Result<()> {
    if config.otp.driver != OtpDriverKind::Log || config.allow_insecure_log_driver {
        return Ok(());
    }
    let exposed = [config.listen_addr(), config.tls_addr()]
        .into_iter()
        .flatten()
        .any(|a| !a.ip().is_loopback());
    if exposed {
        anyhow::bail!(
            "the `log` OTP driver writes login codes to the log; refusing to serve it on a non-loopback address. \
             Configure [otp] driver = \"modem\"|\"webhook\"|\"exec\", or set allow_insecure_log_driver = true"
        );
    }
    Ok(())
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
async fn ensure_client(db: &Db, config: &Config) -> anyhow::Result<()> {
    let existing = db.read(db::clients::list).await?;
    if !existing.is_empty() {
        return Ok(());
    }
    let client = db.write(|c| clients::create(c, "default")).await?;
    let path = config.credentials_path();
    clients::write_credentials(&path, &client)
        .with_context(|| format!("cannot write {}", path.display()))?;
    log::info!(
        "created OAuth client \"default\"; its client_id and client_secret are in {}",
        path.display()
    );
    Ok(())
}

fn spawn_otp_purge(db: Db, shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(3600));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {
                    // Keep a day of codes for the rate limits; older ones serve nothing.
                    let before = db::now_ms() - 24 * 3600 * 1000;
                    if let Err(e) = db.write(move |c| db::otp::purge_before(c, before)).await {
                        log::warn!("purging old OTP codes failed: {e}");
                    }
                }
            }
        }
    });
}

/// Accept connections and serve HTTP/1.1 and HTTP/2 (with websocket upgrades) on each, through
/// TLS when an acceptor is given.
pub async fn accept_loop(
    listener: TcpListener,
    router: Router,
    tls: Option<TlsAcceptor>,
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
        let _ = stream.set_nodelay(true);
        let watcher = graceful.watcher();
        match &tls {
            Some(acceptor) => crate::tls::spawn_handshake(
                acceptor.clone(),
                stream,
                peer_addr,
                router.clone(),
                watcher,
            ),
            None => {
                let peer = Peer {
                    addr: peer_addr,
                    tls: false,
                };
                serve_connection(TokioIo::new(stream), peer, router.clone(), watcher);
            }
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await;
}

/// Serve one accepted connection (plain or TLS) with the router.
pub fn serve_connection<I>(io: I, peer: Peer, router: Router, watcher: Watcher)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = router.map_request(move |mut req: Request<hyper::body::Incoming>| {
        if let Some(uri) = http::normalize_uri(req.uri()) {
            *req.uri_mut() = uri;
        }
        req.extensions_mut().insert(peer);
        req
    });
    let hyper_service = TowerToHyperService::new(service);
    let builder = Builder::new(TokioExecutor::new());
    let conn = builder
        .serve_connection_with_upgrades(io, hyper_service)
        .into_owned();
    let conn = watcher.watch(conn);
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            log::debug!("connection from {} ended: {e}", peer.addr);
        }
    });
}
