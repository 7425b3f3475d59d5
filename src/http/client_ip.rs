//! Who is asking, and under which URL they reached us: peer address (or `X-Forwarded-For` from a
//! trusted proxy), scheme and host, for rate limits, logs and absolute picture URLs.

use std::net::{IpAddr, SocketAddr};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};

use super::error::ApiError;
use crate::state::AppState;

/// Set on every request by the listener that accepted its connection.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub addr: SocketAddr,
    pub tls: bool,
}

/// An address range of `trusted_proxies`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cidr {
    net: IpAddr,
    bits: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Cidr> {
        let (addr, bits) = match s.split_once('/') {
            Some((a, b)) => (a.parse::<IpAddr>().ok()?, Some(b.parse::<u8>().ok()?)),
            None => (s.parse::<IpAddr>().ok()?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let bits = bits.unwrap_or(max);
        (bits <= max).then_some(Cidr { net: addr, bits })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = if self.bits == 0 {
                    0
                } else {
                    u32::MAX << (32 - self.bits)
                };
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = if self.bits == 0 {
                    0
                } else {
                    u128::MAX << (128 - self.bits)
                };
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// Facts about the request's origin.
#[derive(Debug, Clone)]
pub struct Origin {
    pub ip: IpAddr,
    /// `scheme://host[:port]` the client used (or `public_url`).
    pub base_url: String,
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
    let header_str = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let ip = if trusted {
        header_str("x-forwarded-for")
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(peer.addr.ip())
    } else {
        peer.addr.ip()
    };
    let base_url = if !state.config.public_url.is_empty() {
        state.config.public_url.trim_end_matches('/').to_string()
    } else {
        let scheme = match (trusted, header_str("x-forwarded-proto")) {
            (true, Some(p)) if p == "https" || p == "http" => p.to_string(),
            _ if peer.tls => "https".into(),
            _ => "http".into(),
        };
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()))
            .map(str::to_string)
            .unwrap_or_else(|| peer_host(state));
        format!("{scheme}://{host}")
    };
    Origin { ip, base_url }
}

fn peer_host(state: &AppState) -> String {
    if state.config.listen.is_empty() {
        state.config.tls.listen.clone()
    } else {
        state.config.listen.clone()
    }
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
    use super::Cidr;

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
