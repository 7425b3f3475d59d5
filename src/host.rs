//! Facts about the machine that TLS and mDNS both need: its host name and its addresses.

use std::net::{IpAddr, SocketAddr};

use crate::config::Config;

/// The kernel's host name (`gethostname`), e.g. `raspberrypi`; "hangin" if it cannot be read.
pub fn host_name() -> String {
    // glibc's gethostname reads the same field of uname(2).
    let uname = rustix::system::uname();
    let name = uname.nodename().to_string_lossy();
    // A fully qualified name ("pi.example.org") is used by its first label on the LAN.
    let label = name.split('.').next().unwrap_or("").trim();
    if label.is_empty() {
        "hangin".into()
    } else {
        label.to_string()
    }
}

/// One address of one network interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceAddr {
    pub interface: String,
    pub ip: IpAddr,
}

/// Every address of every interface, loopback included (empty if they cannot be listed).
pub fn interface_addrs() -> Vec<InterfaceAddr> {
    match if_addrs::get_if_addrs() {
        Ok(list) => list
            .into_iter()
            .map(|i| InterfaceAddr {
                ip: i.ip(),
                interface: i.name,
            })
            .collect(),
        Err(e) => {
            log::warn!("cannot list network interfaces: {e}");
            Vec::new()
        }
    }
}

/// The one base of absolute URLs in everything the server sends to users other than the
/// requester (cable frames above all): `public_url` when set, else derived at start from the
/// bound listeners — never from any request's `Host`.
///
/// Derivation: the plain listener if there is one (`http`), else the TLS one (`https`); its
/// address when it is a specific one, `<host name>.local` (the name mDNS announces) when it is
/// the unspecified address `0.0.0.0` / `::`; the bound port. Pass the bound addresses (so port 0
/// becomes the real port); `None` falls back to the configured ones.
pub fn public_base(config: &Config, http: Option<SocketAddr>, tls: Option<SocketAddr>) -> String {
    if let Some(url) = &config.public_url {
        return url.clone();
    }
    let (scheme, addr) = match (http.or(config.listen), tls.or(config.tls.listen)) {
        (Some(a), _) => ("http", a),
        (None, Some(a)) => ("https", a),
        (None, None) => return "http://localhost".into(),
    };
    let host = if addr.ip().is_unspecified() {
        format!("{}.local", host_name())
    } else {
        match addr.ip() {
            IpAddr::V6(v6) => format!("[{v6}]"),
            v4 => v4.to_string(),
        }
    };
    format!("{scheme}://{host}:{}", addr.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_name_is_one_nonempty_label() {
        let name = host_name();
        assert!(!name.is_empty());
        assert!(!name.contains('.'), "{name}");
    }

    #[test]
    fn loopback_is_listed() {
        assert!(interface_addrs().iter().any(|a| a.ip.is_loopback()));
    }
}
