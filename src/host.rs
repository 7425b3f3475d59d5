//! Facts about the machine that TLS and mDNS both need: its host name and its addresses.

use std::net::IpAddr;

/// The kernel's host name (`gethostname`), e.g. `raspberrypi`; "hangin" if it cannot be read.
pub fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its whole length; gethostname NUL-terminates within it
    // (or truncates, which the `position` below tolerates).
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "hangin".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]);
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
