//! The TLS listener (edge.md "TLS"): rustls with the `ring` provider (it cross-compiles with only
//! a C cross compiler), serving the same router as the plain listener, so HTTPS and WSS share it.
//! The certificate comes from PEM files (`tls.cert`, `tls.key`) or, with `tls.self_signed`, from
//! a key and certificate generated on first start and kept in `<data_dir>/tls/`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;

/// A client that has not finished its handshake by then is dropped (and cannot pin a task).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Apple's clients refuse server certificates valid for more than 825 days.
const VALIDITY_DAYS: i64 = 825;
/// The self-signed certificate is renewed (same key, so key pins survive) this close to expiry.
const RENEW_BEFORE_DAYS: i64 = 30;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Pem { path: PathBuf, reason: String },
    #[error("the TLS certificate and key cannot be used: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("cannot generate the self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// What the TLS listener presents.
pub struct Identity {
    pub acceptor: TlsAcceptor,
    pub cert_path: PathBuf,
    /// SHA-256 of the leaf certificate, `AB:CD:…` like `openssl x509 -fingerprint -sha256`.
    pub fingerprint: String,
}

/// Load (or with `self_signed`, create or reuse) the certificate and build the acceptor.
pub fn load(tls: &TlsConfig, data_dir: &Path) -> Result<Identity, TlsError> {
    let (cert_path, key_path) = if tls.self_signed {
        ensure_self_signed(data_dir, OffsetDateTime::now_utc())?
    } else {
        // Config::validate makes both present for a TLS listener without `self_signed`; an
        // empty path fails below as a file that cannot be read.
        (
            tls.cert.clone().unwrap_or_default(),
            tls.key.clone().unwrap_or_default(),
        )
    };
    let chain = read_certs(&cert_path)?;
    let key = read_key(&key_path)?;
    let fingerprint = fingerprint(&chain[0]);
    Ok(Identity {
        acceptor: TlsAcceptor::from(server_config(chain, key)?),
        cert_path,
        fingerprint,
    })
}

/// rustls server settings: ring only, TLS 1.2 and 1.3, ALPN h2 and http/1.1.
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Handshake in its own task (a slow client never holds up `accept`), then hand the encrypted
/// stream to `serve`. Whatever `serve` captures (the connection's slot above all) is held from
/// accept on, through the handshake, and dropped if the handshake fails.
pub fn spawn_handshake<F>(acceptor: TlsAcceptor, stream: TcpStream, addr: SocketAddr, serve: F)
where
    F: FnOnce(TlsStream<TcpStream>) + Send + 'static,
{
    tokio::spawn(async move {
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => serve(tls),
            // Clients that do not trust a self-signed certificate end here on every try: debug.
            Ok(Err(e)) => log::debug!("TLS handshake with {addr} failed: {e}"),
            Err(_) => log::debug!("TLS handshake with {addr} timed out"),
        }
    });
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.into(),
        source,
    })?;
    let chain = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.into(),
            reason: format!("not a PEM certificate file: {e}"),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Pem {
            path: path.into(),
            reason: "no CERTIFICATE block found".into(),
        });
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.into(),
        source,
    })?;
    match rustls_pemfile::private_key(&mut pem.as_slice()) {
        Ok(Some(key)) => Ok(key),
        Ok(None) => Err(TlsError::Pem {
            path: path.into(),
            reason: "no PRIVATE KEY block found (PKCS#8, PKCS#1 or SEC1)".into(),
        }),
        Err(e) => Err(TlsError::Pem {
            path: path.into(),
            reason: format!("not a PEM key file: {e}"),
        }),
    }
}

pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    let hex = crate::secret::hex(&Sha256::digest(cert.as_ref())).to_ascii_uppercase();
    let pairs: Vec<_> = hex
        .as_bytes()
        .chunks(2)
        .map(String::from_utf8_lossy)
        .collect();
    pairs.join(":")
}

/// Paths of the generated pair inside the data directory.
pub fn self_signed_paths(data_dir: &Path) -> (PathBuf, PathBuf) {
    let dir = data_dir.join("tls");
    (
        dir.join("self-signed-cert.pem"),
        dir.join("self-signed-key.pem"),
    )
}

/// Reuse the pair in the data directory; create the key if there is none, and a certificate if
/// there is none or it expires within `RENEW_BEFORE_DAYS`.
fn ensure_self_signed(
    data_dir: &Path,
    now: OffsetDateTime,
) -> Result<(PathBuf, PathBuf), TlsError> {
    let (cert_path, key_path) = self_signed_paths(data_dir);
    let dir = cert_path.parent().expect("inside the data dir");
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Write {
        path: dir.into(),
        source,
    })?;

    let key = match std::fs::read_to_string(&key_path) {
        Ok(pem) => rcgen::KeyPair::from_pem(&pem).map_err(|e| TlsError::Pem {
            path: key_path.clone(),
            reason: format!("{e}; remove it to generate a new key"),
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = rcgen::KeyPair::generate()?;
            write_private(&key_path, key.serialize_pem().as_bytes())?;
            // A certificate without its key is worthless: issue a new one below.
            let _ = std::fs::remove_file(&cert_path);
            key
        }
        Err(source) => {
            return Err(TlsError::Read {
                path: key_path,
                source,
            })
        }
    };

    let renew_by = now + time::Duration::days(RENEW_BEFORE_DAYS);
    match std::fs::read(&cert_path) {
        Ok(_) => {
            let chain = read_certs(&cert_path)?;
            match not_after(&chain[0]) {
                Some(expiry) if expiry > renew_by => return Ok((cert_path, key_path)),
                Some(expiry) => log::info!(
                    "self-signed certificate {} expires {expiry}; renewing it with the same key",
                    cert_path.display()
                ),
                None => {
                    return Err(TlsError::Pem {
                        path: cert_path,
                        reason: "cannot read its validity; remove it to generate a new one".into(),
                    })
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(TlsError::Read {
                path: cert_path,
                source,
            })
        }
    }

    let host = crate::host::host_name();
    let names = subject_names(&host);
    let mut params = rcgen::CertificateParams::new(names.clone())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("hangin on {host}"));
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(VALIDITY_DAYS);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.self_signed(&key)?;
    write_private(&cert_path, cert.pem().as_bytes())?;
    log::info!(
        "created a self-signed certificate for {} in {}",
        names.join(", "),
        cert_path.display()
    );
    Ok((cert_path, key_path))
}

/// The host name, `<host>.local`, `localhost` and every address of the machine.
fn subject_names(host: &str) -> Vec<String> {
    let mut names = vec![
        host.to_string(),
        format!("{host}.local"),
        "localhost".into(),
    ];
    for addr in crate::host::interface_addrs() {
        let ip = addr.ip.to_string();
        if !names.contains(&ip) {
            names.push(ip);
        }
    }
    names
}

/// Write a file readable only by the service user, atomically (temp file + rename).
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    crate::private_file::write(path, bytes, crate::private_file::Existing::Replace).map_err(
        |source| TlsError::Write {
            path: path.into(),
            source,
        },
    )
}

/// `notAfter` of an X.509 certificate, read by walking its DER just far enough.
pub fn not_after(cert: &CertificateDer<'_>) -> Option<OffsetDateTime> {
    const SEQUENCE: u8 = 0x30;
    let (tag, certificate, _) = der_tlv(cert.as_ref())?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, tbs, _) = der_tlv(certificate)?;
    if tag != SEQUENCE {
        return None;
    }
    let mut rest = tbs;
    // Optional [0] version, then serial number, signature algorithm, issuer.
    let (tag, _, after) = der_tlv(rest)?;
    if tag == 0xA0 {
        rest = after;
    }
    for _ in 0..3 {
        rest = der_tlv(rest)?.2;
    }
    let (tag, validity, _) = der_tlv(rest)?;
    if tag != SEQUENCE {
        return None;
    }
    let (_, _, after_not_before) = der_tlv(validity)?;
    let (tag, time, _) = der_tlv(after_not_before)?;
    parse_der_time(tag, std::str::from_utf8(time).ok()?)
}

/// One DER element: (tag, contents, remaining input).
fn der_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let count = (first & 0x7F) as usize;
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let len = rest[..count]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | b as usize);
        (len, &rest[count..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`), as RFC 5280 restricts them.
fn parse_der_time(tag: u8, text: &str) -> Option<OffsetDateTime> {
    let digits = text.strip_suffix('Z')?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (year, rest) = match (tag, digits.len()) {
        (0x17, 12) => {
            let yy: i32 = digits[..2].parse().ok()?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, &digits[2..])
        }
        (0x18, 14) => (digits[..4].parse().ok()?, &digits[4..]),
        _ => return None,
    };
    let field = |i: usize| rest[i..i + 2].parse::<u8>().ok();
    let month = time::Month::try_from(field(0)?).ok()?;
    let date = time::Date::from_calendar_date(year, month, field(2)?).ok()?;
    let clock = time::Time::from_hms(field(4)?, field(6)?, field(8)?).ok()?;
    Some(time::PrimitiveDateTime::new(date, clock).assume_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_valid_until(not_after: OffsetDateTime) -> CertificateDer<'static> {
        let mut params = rcgen::CertificateParams::new(vec!["x.local".into()]).unwrap();
        params.not_after = not_after;
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn reads_not_after_in_both_time_encodings() {
        // rcgen writes UTCTime before 2050 and GeneralizedTime from 2050 on, as RFC 5280 says.
        for (y, m, d) in [(2031, 7, 9), (2064, 2, 29)] {
            let when = time::Date::from_calendar_date(y, time::Month::try_from(m).unwrap(), d)
                .unwrap()
                .with_hms(13, 14, 15)
                .unwrap()
                .assume_utc();
            assert_eq!(not_after(&cert_valid_until(when)), Some(when));
        }
    }

    #[test]
    fn garbage_has_no_validity() {
        assert_eq!(
            not_after(&CertificateDer::from(vec![0x30, 0x03, 1, 2])),
            None
        );
        assert_eq!(not_after(&CertificateDer::from(Vec::new())), None);
    }

    #[test]
    fn self_signed_pair_is_reused_and_renewed_with_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc();
        let (cert, key) = ensure_self_signed(dir.path(), now).unwrap();
        let first_cert = std::fs::read(&cert).unwrap();
        let first_key = std::fs::read(&key).unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }

        ensure_self_signed(dir.path(), now + time::Duration::days(30)).unwrap();
        assert_eq!(std::fs::read(&cert).unwrap(), first_cert, "reused");

        // Close to expiry: a new certificate, the same key.
        let later = now + time::Duration::days(VALIDITY_DAYS - RENEW_BEFORE_DAYS + 1);
        ensure_self_signed(dir.path(), later).unwrap();
        assert_ne!(std::fs::read(&cert).unwrap(), first_cert, "renewed");
        assert_eq!(std::fs::read(&key).unwrap(), first_key);
        let renewed = read_certs(&cert).unwrap();
        assert!(not_after(&renewed[0]).unwrap() > later + time::Duration::days(800));
    }

    #[test]
    fn certificate_names_the_host_and_its_addresses() {
        let host = crate::host::host_name();
        let names = subject_names(&host);
        assert!(names.contains(&format!("{host}.local")));
        assert!(names.contains(&"127.0.0.1".to_string()));
    }

    #[test]
    fn mismatched_key_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let a = rcgen::generate_simple_self_signed(vec!["a".to_string()]).unwrap();
        let b = rcgen::KeyPair::generate().unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, a.cert.pem()).unwrap();
        std::fs::write(&key, b.serialize_pem()).unwrap();
        let config = TlsConfig {
            listen: Some("127.0.0.1:0".parse().unwrap()),
            cert: Some(cert.clone()),
            key: Some(key.clone()),
            self_signed: false,
        };
        let err = load(&config, dir.path()).err().expect("must fail");
        assert!(err.to_string().contains("cannot be used"), "{err}");

        std::fs::write(&key, "not pem").unwrap();
        let err = load(&config, dir.path()).err().expect("must fail");
        assert!(err.to_string().contains("key.pem"), "{err}");
    }
}
