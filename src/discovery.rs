//! mDNS advertisement (edge.md "Discovery"): one `_hangin._tcp.local.` instance per bound
//! listener, with TXT `path=/cable`, `tls=0|1`, `version`, `id`, only on the interfaces the
//! listeners actually cover (a loopback listener advertises nothing), narrowed by
//! `[mdns] interfaces`, and withdrawn (goodbye packets) on shutdown. mdns-sd shares UDP 5353 with
//! avahi-daemon (SO_REUSEPORT), so both can run on a Raspberry Pi.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use mdns_sd::{IfKind, ServiceDaemon, ServiceInfo};

use crate::config::MdnsConfig;
use crate::host::{self, InterfaceAddr};

pub const SERVICE_TYPE: &str = "_hangin._tcp.local.";

#[derive(Debug, thiserror::Error)]
#[error("mDNS: {0}")]
pub struct DiscoveryError(#[from] mdns_sd::Error);

/// A bound listener, as clients would reach it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listener {
    pub addr: SocketAddr,
    pub tls: bool,
}

/// An interface selection for the mDNS daemon; later rules override earlier ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Select {
    All,
    Ipv6,
    Name(String),
    Addr(IpAddr),
    LoopbackV4,
    LoopbackV6,
}

/// Which interfaces the daemon uses and which listeners it advertises.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// `(selection, enabled)`, applied in order.
    pub rules: Vec<(Select, bool)>,
    pub listeners: Vec<Listener>,
}

/// Decide where to advertise. Wildcard listeners cover every non-loopback interface (IPv4 only
/// for `0.0.0.0`), a specific address covers the interface that holds it, loopback covers
/// nothing; a non-empty `allow` list keeps only the interfaces it names.
pub fn plan(listeners: &[Listener], allow: &[String], addrs: &[InterfaceAddr]) -> Plan {
    let allowed = |ip: &IpAddr| {
        addrs
            .iter()
            .any(|a| a.ip == *ip && (allow.is_empty() || allow.contains(&a.interface)))
    };
    let mut plan = Plan::default();
    let (mut wildcard, mut wildcard_v6) = (false, false);
    let mut specific = Vec::new();
    for l in listeners {
        let ip = l.addr.ip();
        if ip.is_loopback() {
            continue;
        }
        if ip.is_unspecified() {
            wildcard = true;
            // `[::]` also accepts IPv4 (Linux's default bindv6only = 0).
            wildcard_v6 |= ip.is_ipv6();
        } else if allowed(&ip) {
            specific.push(ip);
        } else {
            continue;
        }
        plan.listeners.push(*l);
    }
    if plan.listeners.is_empty() {
        return plan;
    }
    plan.rules.push((Select::All, false));
    if wildcard {
        if allow.is_empty() {
            plan.rules.push((Select::All, true));
        } else {
            for name in allow {
                plan.rules.push((Select::Name(name.clone()), true));
            }
        }
        if !wildcard_v6 {
            plan.rules.push((Select::Ipv6, false));
        }
    }
    for ip in specific {
        plan.rules.push((Select::Addr(ip), true));
    }
    plan.rules.push((Select::LoopbackV4, false));
    plan.rules.push((Select::LoopbackV6, false));
    plan
}

/// The running advertisement; `withdraw` it on shutdown.
pub struct Advertisement {
    daemon: ServiceDaemon,
    fullnames: Vec<String>,
}

/// Start advertising, or return `None` when disabled or there is nothing to advertise.
pub fn advertise(
    config: &MdnsConfig,
    listeners: &[Listener],
    server_id: &str,
) -> Result<Option<Advertisement>, DiscoveryError> {
    if !config.enabled {
        return Ok(None);
    }
    let addrs = host::interface_addrs();
    for name in &config.interfaces {
        if !addrs.iter().any(|a| &a.interface == name) {
            log::warn!("mDNS: interface {name:?} of [mdns] interfaces has no address (yet)");
        }
    }
    let plan = plan(listeners, &config.interfaces, &addrs);
    if plan.listeners.is_empty() {
        // Creating the daemon would already send on every interface: do not.
        log::info!(
            "mDNS: nothing to advertise (no listener on an interface{} other than loopback)",
            if config.interfaces.is_empty() {
                ""
            } else {
                " of [mdns] interfaces"
            }
        );
        return Ok(None);
    }
    let daemon = ServiceDaemon::new()?;
    for (select, enable) in plan.rules {
        let kind = match select {
            Select::All => IfKind::All,
            Select::Ipv6 => IfKind::IPv6,
            Select::Name(n) => IfKind::Name(n),
            Select::Addr(ip) => IfKind::Addr(ip),
            Select::LoopbackV4 => IfKind::LoopbackV4,
            Select::LoopbackV6 => IfKind::LoopbackV6,
        };
        if enable {
            daemon.enable_interface(kind)?;
        } else {
            daemon.disable_interface(kind)?;
        }
    }

    let host = host::host_name();
    let instance = config.instance.clone().unwrap_or_else(|| host.clone());
    let both = plan.listeners.iter().any(|l| l.tls) && plan.listeners.iter().any(|l| !l.tls);
    let mut fullnames = Vec::new();
    for l in &plan.listeners {
        let name = if both && l.tls {
            format!("{instance} (TLS)")
        } else {
            instance.clone()
        };
        let txt = [
            ("path", "/cable"),
            ("tls", if l.tls { "1" } else { "0" }),
            ("version", env!("CARGO_PKG_VERSION")),
            ("id", server_id),
        ];
        let host_name = format!("{host}.local.");
        let info = if l.addr.ip().is_unspecified() {
            // The daemon fills in (and keeps current) the addresses of the selected interfaces.
            ServiceInfo::new(SERVICE_TYPE, &name, &host_name, (), l.addr.port(), &txt[..])?
                .enable_addr_auto()
        } else {
            ServiceInfo::new(
                SERVICE_TYPE,
                &name,
                &host_name,
                l.addr.ip(),
                l.addr.port(),
                &txt[..],
            )?
        };
        fullnames.push(info.get_fullname().to_string());
        daemon.register(info)?;
        log::info!(
            "mDNS: advertising \"{name}\" ({SERVICE_TYPE}) on port {}{}",
            l.addr.port(),
            if config.interfaces.is_empty() {
                String::new()
            } else {
                format!(" on {}", config.interfaces.join(", "))
            }
        );
    }
    Ok(Some(Advertisement { daemon, fullnames }))
}

impl Advertisement {
    /// Unregister every instance (the daemon sends goodbye packets) and stop the daemon.
    /// Blocks for at most about a second.
    pub fn withdraw(self) {
        let wait = Duration::from_millis(500);
        for name in &self.fullnames {
            match self.daemon.unregister(name) {
                Ok(status) => {
                    let _ = status.recv_timeout(wait);
                }
                Err(e) => log::warn!("mDNS: cannot withdraw {name}: {e}"),
            }
        }
        if let Ok(status) = self.daemon.shutdown() {
            let _ = status.recv_timeout(wait);
        }
        log::info!("mDNS: advertisement withdrawn");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(addr: &str, tls: bool) -> Listener {
        Listener {
            addr: addr.parse().unwrap(),
            tls,
        }
    }

    fn addrs() -> Vec<InterfaceAddr> {
        [
            ("lo", "127.0.0.1"),
            ("eth0", "192.168.1.5"),
            ("eth0", "fe80::1"),
            ("wlan0", "10.0.0.7"),
        ]
        .iter()
        .map(|(n, ip)| InterfaceAddr {
            interface: n.to_string(),
            ip: ip.parse().unwrap(),
        })
        .collect()
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn loopback_listeners_advertise_nothing() {
        let p = plan(
            &[l("127.0.0.1:3000", false), l("[::1]:3443", true)],
            &[],
            &addrs(),
        );
        assert_eq!(p, Plan::default());
    }

    #[test]
    fn ipv4_wildcard_covers_every_non_loopback_ipv4_interface() {
        let p = plan(&[l("0.0.0.0:3000", false)], &[], &addrs());
        assert_eq!(p.listeners, vec![l("0.0.0.0:3000", false)]);
        assert_eq!(
            p.rules,
            vec![
                (Select::All, false),
                (Select::All, true),
                (Select::Ipv6, false),
                (Select::LoopbackV4, false),
                (Select::LoopbackV6, false),
            ]
        );
    }

    #[test]
    fn ipv6_wildcard_keeps_ipv6() {
        let p = plan(&[l("[::]:3000", false)], &[], &addrs());
        assert!(!p.rules.contains(&(Select::Ipv6, false)));
    }

    #[test]
    fn allow_list_narrows_the_wildcard_to_named_interfaces() {
        let p = plan(&[l("0.0.0.0:3000", false)], &names(&["wlan0"]), &addrs());
        assert!(p.rules.contains(&(Select::Name("wlan0".into()), true)));
        assert!(!p.rules.contains(&(Select::All, true)));
    }

    #[test]
    fn specific_address_covers_its_interface_if_allowed() {
        let both = [l("192.168.1.5:3000", false), l("10.0.0.7:3443", true)];
        let p = plan(&both, &[], &addrs());
        assert_eq!(p.listeners.len(), 2);
        assert!(p
            .rules
            .contains(&(Select::Addr("192.168.1.5".parse().unwrap()), true)));

        let p = plan(&both, &names(&["eth0"]), &addrs());
        assert_eq!(p.listeners, vec![l("192.168.1.5:3000", false)]);
        assert!(!p
            .rules
            .contains(&(Select::Addr("10.0.0.7".parse().unwrap()), true)));

        let p = plan(&both, &names(&["usb0"]), &addrs());
        assert_eq!(p, Plan::default());
    }

    #[test]
    fn loopback_is_always_excluded_last() {
        let p = plan(&[l("0.0.0.0:1", false)], &names(&["lo"]), &addrs());
        assert_eq!(
            p.rules[p.rules.len() - 2..],
            [(Select::LoopbackV4, false), (Select::LoopbackV6, false)]
        );
    }
}
