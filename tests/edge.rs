//! Edge integration (edge.md "TLS", "Discovery", "Service integration") against the real binary:
//! HTTPS and WSS with the self-signed certificate and with given PEM files, mDNS inside a private
//! network namespace, systemd's notify protocol on a fake NOTIFY_SOCKET, and the unit file.

mod common;

use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Server, BIN, CHATS};
use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Wait until the server has logged a line containing `needle`.
fn wait_for_log(s: &Server, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !s.log_text().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in:\n{}",
            s.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The port of the `listening on https://…` line, waiting for it if needed.
fn tls_port(s: &Server) -> u16 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(port) = s.log_text().lines().find_map(|l| {
            let rest = l.split("listening on https://").nth(1)?;
            let addr = rest.split_whitespace().next()?;
            addr.rsplit(':').next()?.parse().ok()
        }) {
            return port;
        }
        assert!(
            Instant::now() < deadline,
            "no https line:\n{}",
            s.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn roots(pem: &[u8]) -> rustls::RootCertStore {
    let mut store = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &pem[..]) {
        store.add(cert.unwrap()).unwrap();
    }
    assert!(!store.is_empty());
    store
}

fn client_config(roots: rustls::RootCertStore) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

async fn tls_connect(
    config: Arc<rustls::ClientConfig>,
    port: u16,
    name: &str,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    let server_name = ServerName::try_from(name.to_string()).unwrap();
    tokio_rustls::TlsConnector::from(config)
        .connect(server_name, tcp)
        .await
}

type Wss = WebSocketStream<TlsStream<TcpStream>>;

/// A websocket over our own TLS connection, so the test decides what the client trusts.
async fn wss(config: Arc<rustls::ClientConfig>, port: u16, name: &str, token: &str) -> Wss {
    let tls = tls_connect(config, port, name)
        .await
        .expect("TLS handshake");
    let url = format!("wss://{name}:{port}/cable?access_token={token}");
    let (ws, _) = tokio_tungstenite::client_async(url, tls)
        .await
        .expect("websocket upgrade over TLS");
    ws
}

/// The next non-ping frame, or None when the socket closes.
async fn next_frame(ws: &mut Wss) -> Option<Value> {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("frame within 5 s")?;
        match msg {
            Ok(Message::Text(t)) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["type"] != "ping" {
                    return Some(v);
                }
            }
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

async fn welcome_and_subscribe(ws: &mut Wss) {
    assert_eq!(next_frame(ws).await, Some(json!({"type": "welcome"})));
    let cmd = json!({"command": "subscribe", "identifier": CHATS});
    ws.send(Message::Text(cmd.to_string().into()))
        .await
        .unwrap();
    loop {
        let f = next_frame(ws).await.expect("open");
        if f["type"] == "confirm_subscription" {
            assert_eq!(f["identifier"], CHATS);
            return;
        }
    }
}

fn https_client(ca_pem: &[u8], resolve: Option<(&str, SocketAddr)>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .timeout(Duration::from_secs(10));
    for cert in reqwest::Certificate::from_pem_bundle(ca_pem).unwrap() {
        b = b.add_root_certificate(cert);
    }
    if let Some((host, addr)) = resolve {
        b = b.resolve(host, addr);
    }
    b.build().unwrap()
}

fn host_name() -> String {
    hangin::host::host_name()
}

#[tokio::test]
async fn https_and_wss_with_the_self_signed_certificate() {
    let mut s = Server::start(&[
        ("HANGIN_TLS__LISTEN", "127.0.0.1:0"),
        ("HANGIN_TLS__SELF_SIGNED", "true"),
    ]);
    let port = tls_port(&s);
    let cert_path = s.data_dir.join("tls/self-signed-cert.pem");
    let cert_pem = std::fs::read(&cert_path).expect("certificate kept in the data dir");
    let key_pem = std::fs::read(s.data_dir.join("tls/self-signed-key.pem")).unwrap();
    assert!(s.log_text().contains("created a self-signed certificate"));

    // HTTPS by address and by <host>.local, trusting only the generated certificate.
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let local = format!("{}.local", host_name());
    let client = https_client(&cert_pem, Some((&local, addr)));
    for url in [
        format!("https://127.0.0.1:{port}/up"),
        format!("https://localhost:{port}/up"),
        format!("https://{local}:{port}/up"),
    ] {
        let r = client
            .get(&url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{url}: {e:?}"));
        assert_eq!(r.status(), 200, "{url}");
    }

    // A client that trusts something else refuses the connection: the trust above is real.
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let stranger = client_config(roots(other.cert.pem().as_bytes()));
    let err = tls_connect(stranger, port, "localhost").await.err();
    assert!(
        err.is_some(),
        "an untrusted certificate must fail the handshake"
    );

    // WSS: welcome and a subscription over TLS.
    let trusted = client_config(roots(&cert_pem));
    let user = s.sign_up("Tee", "Ls").await;
    let mut ws = wss(trusted.clone(), port, "localhost", &user.token).await;
    welcome_and_subscribe(&mut ws).await;
    drop(ws);

    // The next start reuses the pair: the old trust still holds.
    let status = s.terminate();
    assert!(status.success(), "{status:?}");
    s.restart_same_port();
    let port = tls_port(&s);
    assert!(!s.log_text().contains("created a self-signed certificate"));
    assert_eq!(std::fs::read(&cert_path).unwrap(), cert_pem);
    assert_eq!(
        std::fs::read(s.data_dir.join("tls/self-signed-key.pem")).unwrap(),
        key_pem
    );
    let r = https_client(&cert_pem, None)
        .get(format!("https://127.0.0.1:{port}/up"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // SIGTERM reaches WSS clients too: server_restart, then exit 0.
    let mut ws = wss(trusted, port, "localhost", &user.token).await;
    welcome_and_subscribe(&mut ws).await;
    let status = s.terminate();
    assert_eq!(
        next_frame(&mut ws).await,
        Some(json!({"type": "disconnect", "reason": "server_restart", "reconnect": true}))
    );
    assert!(status.success(), "{status:?}");
}

/// A CA and a leaf for localhost/127.0.0.1 signed by it: (ca pem, chain pem, key pem).
fn ca_and_leaf() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "hangin test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf_params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key).unwrap();
    (
        ca.pem(),
        format!("{}{}", leaf.pem(), ca.pem()),
        leaf_key.serialize_pem(),
    )
}

#[tokio::test]
async fn https_and_wss_with_given_pem_files() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, chain, key) = ca_and_leaf();
    let cert_path = dir.path().join("fullchain.pem");
    let key_path = dir.path().join("privkey.pem");
    std::fs::write(&cert_path, &chain).unwrap();
    std::fs::write(&key_path, &key).unwrap();
    let cert_arg = cert_path.display().to_string();
    let key_arg = key_path.display().to_string();

    // `config check` loads the files and prints the leaf's fingerprint.
    let (code, _, err) = common::run_cli(
        &["config", "check"],
        &[
            ("HANGIN_TLS__LISTEN", "127.0.0.1:0"),
            ("HANGIN_TLS__CERT", &cert_arg),
            ("HANGIN_TLS__KEY", &key_arg),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let leaf = rustls_pemfile::certs(&mut chain.as_bytes())
        .next()
        .unwrap()
        .unwrap();
    assert!(
        err.contains(&hangin::tls::fingerprint(&CertificateDer::from(
            leaf.to_vec()
        ))),
        "{err}"
    );

    let s = Server::start(&[
        ("HANGIN_TLS__LISTEN", "127.0.0.1:0"),
        ("HANGIN_TLS__CERT", &cert_arg),
        ("HANGIN_TLS__KEY", &key_arg),
    ]);
    let port = tls_port(&s);
    assert!(!s.data_dir.join("tls").exists(), "no self-signed pair");

    let r = https_client(ca.as_bytes(), None)
        .get(format!("https://localhost:{port}/up"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let user = s.sign_up("Pem", "Files").await;
    let mut ws = wss(
        client_config(roots(ca.as_bytes())),
        port,
        "localhost",
        &user.token,
    )
    .await;
    welcome_and_subscribe(&mut ws).await;
}

#[test]
fn unusable_tls_files_stop_the_server_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data").display().to_string();
    let missing = dir.path().join("nope.pem").display().to_string();
    let (_, chain, _) = ca_and_leaf();
    let cert = dir.path().join("cert.pem");
    std::fs::write(&cert, chain).unwrap();
    let cert = cert.display().to_string();
    let other_key = rcgen::KeyPair::generate().unwrap().serialize_pem();
    let wrong_key = dir.path().join("wrong-key.pem");
    std::fs::write(&wrong_key, other_key).unwrap();
    let wrong_key = wrong_key.display().to_string();

    for (cert, key, expect) in [
        (&missing, &missing, "nope.pem"),
        (&cert, &missing, "nope.pem"),
        (&cert, &wrong_key, "cannot be used"),
    ] {
        for args in [&["serve"][..], &["config", "check"][..]] {
            let (code, _, err) = common::run_cli(
                args,
                &[
                    ("HANGIN_LISTEN", "127.0.0.1:0"),
                    ("HANGIN_DATA_DIR", &data),
                    ("HANGIN_TLS__LISTEN", "127.0.0.1:0"),
                    ("HANGIN_TLS__CERT", cert),
                    ("HANGIN_TLS__KEY", key),
                ],
            );
            assert_ne!(code, 0, "{args:?} {err}");
            assert!(err.contains(expect), "{args:?}: {err}");
            assert!(!err.contains("panicked"), "{err}");
        }
    }
}

/// Datagrams on a fake NOTIFY_SOCKET, each split into its lines.
struct NotifySocket {
    sock: UnixDatagram,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl NotifySocket {
    fn bind() -> NotifySocket {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let sock = UnixDatagram::bind(&path).unwrap();
        NotifySocket {
            sock,
            path,
            _dir: dir,
        }
    }

    fn recv(&self, timeout: Duration) -> Option<Vec<String>> {
        self.sock.set_read_timeout(Some(timeout)).unwrap();
        let mut buf = [0u8; 4096];
        let n = self.sock.recv(&mut buf).ok()?;
        Some(
            String::from_utf8_lossy(&buf[..n])
                .lines()
                .map(str::to_string)
                .collect(),
        )
    }
}

#[test]
fn notify_socket_gets_ready_watchdog_and_stopping() {
    let notify = NotifySocket::bind();
    let started = Instant::now();
    let path = notify.path.display().to_string();
    let mut s = Server::start(&[("NOTIFY_SOCKET", &path), ("WATCHDOG_USEC", "400000")]);

    let ready = notify.recv(Duration::from_secs(10)).expect("READY=1");
    assert_eq!(ready[0], "READY=1", "{ready:?}");
    assert!(
        ready
            .iter()
            .any(|l| l.starts_with("STATUS=serving http://127.0.0.1:")),
        "{ready:?}"
    );

    // Pings every 200 ms (half of WATCHDOG_USEC), each after a commit through the writer.
    let mut pings = Vec::new();
    while pings.len() < 5 {
        let msg = notify.recv(Duration::from_secs(2)).expect("WATCHDOG=1");
        assert_eq!(msg, vec!["WATCHDOG=1"]);
        pings.push(Instant::now());
    }
    let span = *pings.last().unwrap() - pings[0];
    assert!(
        span >= Duration::from_millis(600) && span < Duration::from_millis(1600),
        "4 intervals took {span:?}"
    );
    assert!(started.elapsed() > Duration::from_millis(800));

    let status = s.terminate();
    let mut after = Vec::new();
    while let Some(msg) = notify.recv(Duration::from_millis(500)) {
        after.extend(msg);
    }
    assert!(after.contains(&"STOPPING=1".to_string()), "{after:?}");
    assert!(after.iter().all(|l| l == "STOPPING=1" || l == "WATCHDOG=1"));
    assert!(status.success(), "{status:?}");
}

#[test]
fn watchdog_for_another_pid_is_not_ours() {
    let notify = NotifySocket::bind();
    let path = notify.path.display().to_string();
    let s = Server::start(&[
        ("NOTIFY_SOCKET", &path),
        ("WATCHDOG_USEC", "200000"),
        ("WATCHDOG_PID", "1"),
    ]);
    assert_eq!(notify.recv(Duration::from_secs(10)).unwrap()[0], "READY=1");
    assert_eq!(notify.recv(Duration::from_millis(600)), None);
    drop(s);
}

#[test]
fn systemd_unit_verifies_clean() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/verify-unit.sh");
    let out = Command::new(&script).arg(BIN).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("verify: clean"), "{stdout}");
    assert!(stdout.contains("Overall exposure level"), "{stdout}");
}

/// Run a command inside the test's network namespace; panics with its output on failure.
fn sh(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ip_command() -> &'static str {
    ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("iproute2's `ip` is needed for the mDNS test")
}

/// Resolve `_hangin._tcp.local.` until `want` instances are resolved (or the time is up).
fn browse(
    daemon: &mdns_sd::ServiceDaemon,
    want: usize,
    within: Duration,
) -> std::collections::BTreeMap<String, mdns_sd::ServiceInfo> {
    let rx = daemon.browse(hangin::discovery::SERVICE_TYPE).unwrap();
    let mut found = std::collections::BTreeMap::new();
    let deadline = Instant::now() + within;
    while found.len() < want {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            break;
        };
        match rx.recv_timeout(left) {
            Ok(mdns_sd::ServiceEvent::ServiceResolved(info)) => {
                found.insert(info.get_fullname().to_string(), info);
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    daemon.stop_browse(hangin::discovery::SERVICE_TYPE).ok();
    found
}

fn server_uuid(data_dir: &Path) -> String {
    let db = rusqlite::Connection::open_with_flags(
        data_dir.join("hangin.sqlite3"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    db.query_row("SELECT uuid FROM server WHERE id = 1", [], |r| r.get(0))
        .unwrap()
}

/// mDNS never runs on the machine's real interfaces: this test re-runs itself inside a new user
/// and network namespace (`unshare -rn`) holding only `lo` and two veth pairs of its own.
#[test]
fn mdns_advertises_resolves_and_withdraws_inside_a_private_network_namespace() {
    const INSIDE: &str = "HANGIN_TEST_INSIDE_NETNS";
    if std::env::var_os(INSIDE).is_none() {
        let exe = std::env::current_exe().unwrap();
        let out = Command::new("unshare")
            .arg("-rn")
            .arg(exe)
            .args([
                "mdns_advertises_resolves_and_withdraws_inside_a_private_network_namespace",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(INSIDE, "1")
            .output()
            .expect("run unshare (util-linux)");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "inside the namespace (needs unprivileged user namespaces):\n{text}"
        );
        assert!(text.contains("1 passed"), "{text}");
        return;
    }

    let ip = ip_command();
    sh(ip, &["link", "set", "lo", "up"]);
    for (a, b, addr) in [
        ("hg0", "hg1", "10.77.0.1/24"),
        ("hh0", "hh1", "10.78.0.1/24"),
    ] {
        sh(ip, &["link", "add", a, "type", "veth", "peer", "name", b]);
        sh(ip, &["addr", "add", addr, "dev", a]);
        sh(ip, &["link", "set", a, "multicast", "on", "up"]);
        sh(ip, &["link", "set", b, "up"]);
    }
    let rt = tokio::runtime::Runtime::new().unwrap();

    // A LAN-facing server with both listeners, advertised on hg0 only.
    let mut s = Server::start(&[
        ("HANGIN_LISTEN", "0.0.0.0:0"),
        ("HANGIN_TLS__LISTEN", "0.0.0.0:0"),
        ("HANGIN_TLS__SELF_SIGNED", "true"),
        ("HANGIN_ALLOW_INSECURE_LOG_DRIVER", "true"),
        ("HANGIN_MDNS__ENABLED", "true"),
        ("HANGIN_MDNS__INSTANCE", "edge test"),
        ("HANGIN_MDNS__INTERFACES", "[\"hg0\"]"),
    ]);
    let tls_port = tls_port(&s);
    // The id is read (created on first use) just before the services are registered.
    wait_for_log(&s, "(TLS)\" (_hangin._tcp.local.) on port");
    let id = server_uuid(&s.data_dir);
    let browser = mdns_sd::ServiceDaemon::new().unwrap();
    let found = browse(&browser, 2, Duration::from_secs(15));
    let plain = found
        .get("edge test._hangin._tcp.local.")
        .unwrap_or_else(|| panic!("{found:#?}\n{}", s.log_text()));
    let tls = found
        .get("edge test (TLS)._hangin._tcp.local.")
        .unwrap_or_else(|| panic!("{found:#?}\n{}", s.log_text()));
    for (info, port, flag) in [(plain, s.port, "0"), (tls, tls_port, "1")] {
        assert_eq!(info.get_port(), port);
        assert_eq!(info.get_property_val_str("path"), Some("/cable"));
        assert_eq!(info.get_property_val_str("tls"), Some(flag));
        assert_eq!(
            info.get_property_val_str("version"),
            Some(env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(info.get_property_val_str("id"), Some(id.as_str()));
        assert_eq!(info.get_hostname(), format!("{}.local.", host_name()));
        let addrs: Vec<String> = info.get_addresses().iter().map(|a| a.to_string()).collect();
        // hg0's address; not hh0's (outside the allow-list) and never loopback.
        assert_eq!(addrs, vec!["10.77.0.1".to_string()], "{info:?}");
    }

    // What was advertised answers.
    let r = rt.block_on(async {
        reqwest::Client::new()
            .get(format!("http://10.77.0.1:{}/up", plain.get_port()))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .unwrap()
    });
    assert_eq!(r.status(), 200);

    // Shutdown withdraws both instances (goodbye packets), then exits 0.
    let rx = browser.browse(hangin::discovery::SERVICE_TYPE).unwrap();
    // The browse is registered by the daemon's own thread: wait until it reports the instances
    // again from its cache, so the goodbye packets cannot arrive before anyone listens (under
    // load they did, and the test saw no withdrawal).
    let mut seen = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.len() < 2 {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            break;
        };
        if let Ok(mdns_sd::ServiceEvent::ServiceResolved(info)) = rx.recv_timeout(left) {
            seen.insert(info.get_fullname().to_string());
        }
    }
    let status = s.terminate();
    assert!(status.success(), "{status:?}");
    assert!(s.log_text().contains("mDNS: advertisement withdrawn"));
    let mut removed = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while removed.len() < 2 {
        let left = deadline
            .checked_duration_since(Instant::now())
            .unwrap_or_else(|| panic!("withdrawn only {removed:?}"));
        if let Ok(mdns_sd::ServiceEvent::ServiceRemoved(_, name)) = rx.recv_timeout(left) {
            removed.insert(name);
        }
    }
    browser.shutdown().ok();

    // Loopback-only (the embedded default) advertises nothing, and neither does `enabled = false`.
    let local = Server::start(&[
        ("HANGIN_MDNS__ENABLED", "true"),
        ("HANGIN_MDNS__INSTANCE", "loopback"),
    ]);
    let off = Server::start(&[
        ("HANGIN_LISTEN", "0.0.0.0:0"),
        ("HANGIN_ALLOW_INSECURE_LOG_DRIVER", "true"),
        ("HANGIN_MDNS__INSTANCE", "off"),
    ]);
    wait_for_log(&local, "mDNS: nothing to advertise");
    let browser = mdns_sd::ServiceDaemon::new().unwrap();
    let found = browse(&browser, 1, Duration::from_secs(4));
    assert!(found.is_empty(), "{found:#?}");
    assert!(!off.log_text().contains("mDNS"), "{}", off.log_text());
    browser.shutdown().ok();
}
