//! Who is asking, and under which URL they reached us: peer address (or `X-Forwarded-For` from a
//! trusted proxy), scheme and host, for rate limits, logs and absolute picture URLs.

use std::net::{IpAddr, SocketAddr};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};

use super::error::ApiError;
use crate::net::{Cidr, Peer};
use crate::state::AppState;

/// Facts about the request's origin.
#[derive(Debug, Clone)]
pub struct Origin {
    pub ip: IpAddr,
    /// Base for absolute URLs in this request's own response: `public_url`, else the scheme and
    /// `Host` this client used. Only ever used for the requester's own response; frames and
    /// anything other users receive use [`crate::host::public_base`].
    pub base_url: String,
}

/// The client's address: the peer, or — when the peer is a trusted proxy — the first address of
/// `X-Forwarded-For` that is not a trusted proxy, walking from the right. Proxies append the
/// address they saw, so everything left of the last untrusted hop was written by the client and
/// proves nothing.
pub fn client_ip(trusted_proxies: &[Cidr], headers: &HeaderMap, peer: IpAddr) -> IpAddr {
    let trusted = |ip: IpAddr| trusted_proxies.iter().any(|c| c.contains(ip));
    if !trusted(peer) {
        return peer;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut nearest = peer;
    for hop in hops.iter().rev() {
        match parse_hop(hop) {
            Some(ip) if trusted(ip) => nearest = ip,
            Some(ip) => return ip,
            // Garbage was passed along by a trusted proxy: the last address we can vouch for.
            None => return nearest,
        }
    }
    nearest
}

/// `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`, `[2001:db8::1]:5678`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip);
    }
    hop.parse::<SocketAddr>().ok().map(|a| a.ip())
}

pub fn origin(state: &AppState, headers: &HeaderMap, peer: Option<Peer>) -> Origin {
    let peer = peer.unwrap_or(Peer {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        tls: false,
    });
    let trusted = state
        .trusted_proxies
        .iter()
        .any(|c| c.contains(peer.addr.ip()));
    let ip = client_ip(&state.trusted_proxies, headers, peer.addr.ip());
    let base_url = if let Some(url) = &state.config.public_url {
        url.clone()
    } else {
        let forwarded_proto = headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .map(str::trim);
        let scheme = match (trusted, forwarded_proto) {
            (true, Some(p)) if p == "https" || p == "http" => p,
            _ if peer.tls => "https",
            _ => "http",
        };
        match headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .filter(|h| valid_host(h))
        {
            Some(host) => format!("{scheme}://{host}"),
            None => state.public_base.to_string(),
        }
    };
    Origin { ip, base_url }
}

/// `name[:port]`, `a.b.c.d[:port]` or `[v6][:port]`: nothing that could add a path, user info or
/// markup to a URL.
fn valid_host(host: &str) -> bool {
    let (name, port) = match host.rsplit_once(':') {
        Some((n, p)) if !n.contains(':') || n.ends_with(']') => (n, Some(p)),
        _ => (host, None),
    };
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    let name_ok = if let Some(v6) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        v6.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !name.is_empty()
            && name.len() <= 253
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
    };
    port_ok && name_ok
}

impl FromRequestParts<AppState> for Origin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(origin(
            state,
            &parts.headers,
            parts.extensions.get::<Peer>().copied(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::host::public_base;

    #[test]
    fn forwarded_for_walks_from_the_right() {
        let proxies = vec![Cidr::parse("10.0.0.0/8").unwrap()];
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert("x-forwarded-for", v.parse().unwrap());
            m
        };
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // nginx appends the real peer to what the client sent.
        assert_eq!(
            client_ip(&proxies, &h("6.6.6.6, 192.168.1.7"), proxy),
            ip("192.168.1.7")
        );
        assert_eq!(
            client_ip(&proxies, &h("6.6.6.6, 192.168.1.7, 10.0.0.2"), proxy),
            ip("192.168.1.7")
        );
        assert_eq!(client_ip(&proxies, &h("10.0.0.9"), proxy), ip("10.0.0.9"));
        assert_eq!(
            client_ip(&proxies, &h("junk, 10.0.0.9"), proxy),
            ip("10.0.0.9")
        );
        assert_eq!(
            client_ip(&proxies, &h("[2001:db8::1]:443"), proxy),
            ip("2001:db8::1")
        );
        // Not from a proxy: the header is the client's own words.
        assert_eq!(
            client_ip(&proxies, &h("6.6.6.6"), ip("192.168.1.7")),
            ip("192.168.1.7")
        );
    }

    #[test]
    fn hosts_that_could_smuggle_url_parts_are_refused() {
        assert!(valid_host("pi.local:3000"));
        assert!(valid_host("192.168.1.5"));
        assert!(valid_host("[::1]:3000"));
        assert!(!valid_host("evil.example/x?"));
        assert!(!valid_host("a@b"));
        assert!(!valid_host("a:99999x"));
        assert!(!valid_host(""));
    }

    #[test]
    fn public_base_never_needs_a_request() {
        let mut c = Config::default();
        let bound: SocketAddr = "127.0.0.1:4321".parse().unwrap();
        assert_eq!(public_base(&c, Some(bound), None), "http://127.0.0.1:4321");
        c.listen = Some("0.0.0.0:3000".parse().unwrap());
        assert_eq!(
            public_base(&c, None, None),
            format!("http://{}.local:3000", crate::host::host_name())
        );
        c.listen = None;
        c.tls.listen = Some("[::]:3443".parse().unwrap());
        assert!(public_base(&c, None, None).starts_with("https://"));
        c.public_url = Some("https://chat.example.org".into());
        assert_eq!(
            public_base(&c, Some(bound), None),
            "https://chat.example.org"
        );
    }

    #[test]
    fn cidr_matching() {
        let c = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(c.contains("10.1.200.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(Cidr::parse("127.0.0.1")
            .unwrap()
            .contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(Cidr::parse("::1/128")
            .unwrap()
            .contains("::1".parse().unwrap()));
        assert!(Cidr::parse("nonsense").is_none());
        assert!(Cidr::parse("10.0.0.0/33").is_none());
    }
}
