//! The outgoing HTTP client of the webhook and APNs drivers: reqwest over rustls with the `ring`
//! provider and the Mozilla roots (webpki-roots, so it works without a system CA store), plus an
//! optional extra trust anchor for a private CA or a local stand-in.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// How one driver wants its client.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Whole-request timeout (connect, send, answer).
    pub timeout: Duration,
    /// A PEM file with extra CA certificates to trust (besides the public roots).
    pub extra_ca_file: Option<PathBuf>,
    /// Speak HTTP/2 only (APNs requires it).
    pub http2_only: bool,
}

/// Build a client; the error names what is wrong (for a startup message).
pub fn build(options: &ClientOptions) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .timeout(options.timeout)
        .connect_timeout(options.timeout.min(Duration::from_secs(10)))
        // Standard Webhooks: a redirect is a failed delivery, not something to follow.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("hangin/", env!("CARGO_PKG_VERSION")));
    if options.http2_only {
        builder = builder.http2_prior_knowledge();
    }
    if let Some(path) = &options.extra_ca_file {
        for cert in read_ca_file(path)? {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

fn read_ca_file(path: &Path) -> Result<Vec<reqwest::Certificate>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| format!("{} holds no usable PEM certificate: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

/// A short, single-line excerpt of a response body for error messages and logs.
pub fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > 200 {
        format!("{}…", flat.chars().take(200).collect::<String>())
    } else {
        flat
    }
}
