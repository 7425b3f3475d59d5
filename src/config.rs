//! Configuration: embedded defaults ← TOML file ← `HANGIN_SECTION__KEY` environment ← CLI flags
//! (edge.md "Configuration"). Unknown keys in the file are errors; unknown `HANGIN_*` variables only
//! warn, because test harnesses and wrappers put their own `HANGIN_*` variables into the environment.
//!
//! Values are parsed once, here, into the types the server uses (addresses, durations, CIDRs,
//! `Option`s where the file writes `""` or `0` for "off"); a bad value is an error naming its
//! key. The `Default` impls are the one source of the defaults: the commented example config
//! (`hangin config example`, and the shipped `systemd/hangin.toml`) is generated from them by
//! `example`, and tests hold the shipped file and docs/configuration.md to them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Format, Serialized, Toml};
use figment::value::Value;
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::net::Cidr;

mod delivery;
mod example;
pub use delivery::{
    ApnsConfig, ApnsCredentials, ApnsEnvironment, ApnsHost, ExecConfig, Headers, ModemConfig,
    SimPin, WebhookConfig, WebhookSecret,
};
pub use example::{example, Example};

/// The configuration of one server. Serde names are the TOML keys of the contract.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Plain HTTP + WS listener; `None` (written "") = off.
    #[serde(with = "addr_or_off")]
    pub listen: Option<SocketAddr>,
    pub data_dir: PathBuf,
    /// Base for absolute picture URLs, without a trailing `/`; `None` (written "") = derived.
    #[serde(with = "url_or_off")]
    pub public_url: Option<String>,
    pub log_level: String,
    /// Proxies whose `X-Forwarded-For` / `X-Forwarded-Proto` are believed.
    pub trusted_proxies: Vec<ProxyRange>,
    /// Allow the `log` OTP driver on a non-loopback listener (development on a LAN only).
    pub allow_insecure_log_driver: bool,
    pub auth: AuthConfig,
    pub limits: LimitsConfig,
    pub otp: OtpConfig,
    pub push: PushConfig,
    pub cable: CableConfig,
    pub tls: TlsConfig,
    pub mdns: MdnsConfig,
    pub numbers: NumbersConfig,
    pub metrics: MetricsConfig,
}

/// Phone numbers (docs/configuration.md "[numbers]").
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NumbersConfig {
    /// Region (ISO 3166 code) whose national forms are read and shown without a `+`.
    pub default_region: String,
    /// Regions whose numbers may log in; empty = only the default region.
    pub allowed_regions: Vec<String>,
}

impl Default for NumbersConfig {
    fn default() -> Self {
        NumbersConfig {
            default_region: "US".into(),
            allowed_regions: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    #[serde(rename = "access_token_ttl_seconds", with = "secs")]
    pub access_token_ttl: Duration,
    #[serde(rename = "otp_ttl_seconds", with = "secs")]
    pub otp_ttl: Duration,
    pub otp_max_attempts: u32,
    pub otp_per_number: u32,
    #[serde(rename = "otp_window_seconds", with = "secs")]
    pub otp_window: Duration,
    #[serde(rename = "otp_resend_seconds", with = "secs")]
    pub otp_resend: Duration,
    pub create_per_address_per_hour: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub body_bytes: usize,
    pub picture_bytes: usize,
    pub message_body_bytes: usize,
    pub frame_bytes: usize,
    /// Bytes of frames queued for one websocket before it counts as too slow and is closed
    /// (1013); a frame shared by many connections counts in full in each (docs/limits.md).
    pub send_queue_bytes: usize,
    /// Replaced by `send_queue_bytes`; still accepted so old config files start, and ignored
    /// with a warning.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub send_queue_frames: Option<usize>,
    /// Open connections (HTTP and websocket) at most; 0 = as many as the open-file limit allows.
    pub max_connections: usize,
    /// Open connections from one client address at most (`trusted_proxies` exempt); 0 = no cap.
    pub max_connections_per_address: usize,
    /// A request head (and a new connection's first one) must arrive within this.
    #[serde(rename = "header_timeout_seconds", with = "secs")]
    pub header_timeout: Duration,
    /// An idle keep-alive connection, or a response the client does not read, is closed after this.
    #[serde(rename = "keepalive_timeout_seconds", with = "secs")]
    pub keepalive_timeout: Duration,
    /// A websocket handshake must be complete this long after its request began.
    #[serde(rename = "upgrade_timeout_seconds", with = "secs")]
    pub upgrade_timeout: Duration,
    /// Newest messages sent as a chat's history when a subscriber joins.
    pub history_messages: usize,
    /// Upper bound of that history's size in bytes (older messages are left out first).
    pub history_bytes: usize,
    /// Live chats one user may have started at once (`createChat` beyond answers an error).
    pub live_chats_per_user: usize,
    /// Subscriptions one websocket may hold; a subscribe beyond gets `reject_subscription`.
    pub subscriptions_per_connection: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtpConfig {
    pub driver: OtpDriverKind,
    /// Message template; `{code}` is replaced by the code.
    pub message: String,
    pub webhook: WebhookConfig,
    pub modem: ModemConfig,
    pub exec: ExecConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OtpDriverKind {
    Log,
    Modem,
    Webhook,
    Exec,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PushConfig {
    pub driver: PushDriverKind,
    /// Pushes waiting for the driver; more are dropped with a warning rather than blocking anyone.
    pub queue: usize,
    pub webhook: WebhookConfig,
    pub apns: ApnsConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PushDriverKind {
    Log,
    Apns,
    Webhook,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyStyle {
    Snake,
    Camel,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CableConfig {
    pub key_style: KeyStyle,
    #[serde(rename = "background_window_seconds", with = "secs")]
    pub background_window: Duration,
    #[serde(rename = "ping_seconds", with = "secs")]
    pub ping: Duration,
    /// A peer that acknowledges nothing we sent (the pings) for this long is dead: its TCP
    /// connection is aborted (TCP_USER_TIMEOUT) and the user goes offline. `None` (written 0) =
    /// the kernel's default (about 15 minutes).
    #[serde(rename = "dead_peer_seconds", with = "secs_or_off")]
    pub dead_peer: Option<Duration>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// e.g. "0.0.0.0:3443"; `None` (written "") = no TLS listener.
    #[serde(with = "addr_or_off")]
    pub listen: Option<SocketAddr>,
    /// PEM certificate chain; `None` (written "") = not given.
    #[serde(with = "or_off")]
    pub cert: Option<PathBuf>,
    /// Its private key; `None` (written "") = not given.
    #[serde(with = "or_off")]
    pub key: Option<PathBuf>,
    pub self_signed: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MdnsConfig {
    pub enabled: bool,
    /// `None` (written "") = the host name.
    #[serde(with = "or_off")]
    pub instance: Option<String>,
    /// Interface names to advertise on; empty = every interface the listeners cover.
    pub interfaces: Vec<String>,
}

/// `[metrics]`: Prometheus text at `/metrics` on a listener of its own.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// e.g. "127.0.0.1:9184"; `None` (written "") = no metrics listener.
    #[serde(with = "addr_or_off")]
    pub listen: Option<SocketAddr>,
    /// Allow a non-loopback `listen` (the figures are not secret, but nobody on the LAN needs them).
    pub allow_remote: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 3000))),
            data_dir: PathBuf::from("./data"),
            public_url: None,
            log_level: "info".into(),
            trusted_proxies: Vec::new(),
            allow_insecure_log_driver: false,
            auth: AuthConfig::default(),
            limits: LimitsConfig::default(),
            otp: OtpConfig::default(),
            push: PushConfig::default(),
            cable: CableConfig::default(),
            tls: TlsConfig::default(),
            mdns: MdnsConfig::default(),
            numbers: NumbersConfig::default(),
            metrics: MetricsConfig::default(),
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            access_token_ttl: Duration::from_secs(7200),
            otp_ttl: Duration::from_secs(600),
            otp_max_attempts: 5,
            otp_per_number: 5,
            otp_window: Duration::from_secs(900),
            otp_resend: Duration::from_secs(30),
            create_per_address_per_hour: 30,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            body_bytes: 1 << 20,
            picture_bytes: 5 << 20,
            message_body_bytes: 4096,
            frame_bytes: 64 << 10,
            send_queue_bytes: 1 << 20,
            send_queue_frames: None,
            max_connections: 10_000,
            max_connections_per_address: 128,
            header_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(60),
            upgrade_timeout: Duration::from_secs(10),
            history_messages: 200,
            history_bytes: 1 << 20,
            live_chats_per_user: 20,
            subscriptions_per_connection: 100,
        }
    }
}

impl Default for OtpConfig {
    fn default() -> Self {
        OtpConfig {
            driver: OtpDriverKind::Log,
            message: "Your Hangin code is {code}".into(),
            webhook: WebhookConfig::default(),
            modem: ModemConfig::default(),
            exec: ExecConfig::default(),
        }
    }
}

impl Default for PushConfig {
    fn default() -> Self {
        PushConfig {
            driver: PushDriverKind::Log,
            queue: 1024,
            webhook: WebhookConfig::default(),
            apns: ApnsConfig::default(),
        }
    }
}

impl Default for CableConfig {
    fn default() -> Self {
        CableConfig {
            key_style: KeyStyle::Snake,
            background_window: Duration::from_secs(300),
            ping: Duration::from_secs(3),
            dead_peer: Some(Duration::from_secs(30)),
        }
    }
}

impl Default for MdnsConfig {
    fn default() -> Self {
        MdnsConfig {
            enabled: true,
            instance: None,
            interfaces: Vec::new(),
        }
    }
}

/// An entry of `trusted_proxies`: an address or CIDR, parsed once, shown back as written.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyRange {
    pub cidr: Cidr,
    written: String,
}

impl std::str::FromStr for ProxyRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match Cidr::parse(s) {
            Some(cidr) => Ok(ProxyRange {
                cidr,
                written: s.to_string(),
            }),
            None => Err(format!("`{s}` is not an address or CIDR")),
        }
    }
}

impl Serialize for ProxyRange {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.written)
    }
}

impl<'de> Deserialize<'de> for ProxyRange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// `SocketAddr` written as text, `""` = off (`None`).
mod addr_or_off {
    use std::net::SocketAddr;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(addr: &Option<SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
        match addr {
            Some(a) => s.collect_str(a),
            None => s.serialize_str(""),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
        let text = String::deserialize(d)?;
        if text.is_empty() {
            return Ok(None);
        }
        text.parse().map(Some).map_err(|_| {
            serde::de::Error::custom(format!(
                "`{text}` is not an address like 127.0.0.1:3000 or [::]:3000 (\"\" = off)"
            ))
        })
    }
}

/// A base URL (`http://` or `https://`, kept without its trailing `/`), `""` = none.
mod url_or_off {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(url: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(url.as_deref().unwrap_or(""))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        let text = String::deserialize(d)?;
        if text.is_empty() {
            return Ok(None);
        }
        if !(text.starts_with("http://") || text.starts_with("https://")) {
            return Err(serde::de::Error::custom(
                "must start with http:// or https://",
            ));
        }
        Ok(Some(text.trim_end_matches('/').to_string()))
    }
}

/// A value parsed from text, `""` (or only spaces) = not set (`None`); shown back as text.
mod or_off {
    use std::fmt::Display;
    use std::str::FromStr;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer, T: Serialize>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => v.serialize(s),
            None => s.serialize_str(""),
        }
    }

    pub fn deserialize<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: FromStr,
        T::Err: Display,
    {
        let text = String::deserialize(d)?;
        if text.trim().is_empty() {
            return Ok(None);
        }
        text.parse().map(Some).map_err(serde::de::Error::custom)
    }
}

/// A `Duration` written as whole seconds.
mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
}

/// A `Duration` written as whole seconds, 0 = none (`None`).
mod secs_or_off {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.map_or(0, |d| d.as_secs()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let secs = u64::deserialize(d)?;
        Ok((secs > 0).then(|| Duration::from_secs(secs)))
    }
}

/// A configuration problem: always reported as one line naming the key or the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("config: {0}")]
    Invalid(String),
}

/// Where the configuration comes from, besides the environment.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    pub file: Option<PathBuf>,
    /// An explicitly named file must exist; the default path may be absent.
    pub file_required: bool,
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
}

impl Config {
    /// Layer defaults, file, environment and flags, then validate.
    pub fn load(sources: &Sources) -> Result<(Config, Vec<String>), ConfigError> {
        Self::load_with_env(sources, std::env::vars())
    }

    pub fn load_with_env(
        sources: &Sources,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(Config, Vec<String>), ConfigError> {
        let defaults = Figment::from(Serialized::defaults(Config::default()));
        let mut figment = defaults.clone();
        let mut warnings = Vec::new();
        if let Some(path) = &sources.file {
            match std::fs::read_to_string(path) {
                Ok(text) => {
                    // Parse here first so a syntax error names the file, not a key.
                    if let Err(e) = text.parse::<toml::Table>() {
                        return Err(ConfigError::File {
                            path: path.clone(),
                            reason: e.to_string().lines().next().unwrap_or("").to_string(),
                        });
                    }
                    figment = figment.merge(Toml::file_exact(path));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !sources.file_required => {}
                Err(e) => {
                    return Err(ConfigError::File {
                        path: path.clone(),
                        reason: e.to_string(),
                    })
                }
            }
        }
        let env: Vec<(String, String)> = env
            .into_iter()
            // HANGIN_CONFIG names the file itself; it is not a key.
            .filter(|(k, _)| k.starts_with("HANGIN_") && k != "HANGIN_CONFIG")
            .collect();
        for (name, value) in &env {
            let key = name["HANGIN_".len()..]
                .to_ascii_lowercase()
                .replace("__", ".");
            if key_is_known(&defaults, &key) {
                // Values parse as figment's Env provider parses them (numbers, bools, arrays),
                // except where a string belongs: a PIN `0042` or a team id of digits stays text.
                let parsed: Value = match defaults.find_value(&key) {
                    Ok(Value::String(..)) | Err(_) => Value::from(value.clone()),
                    Ok(_) => value.parse().expect("infallible"),
                };
                figment = figment.merge(Serialized::default(&key, parsed));
            } else {
                warnings.push(format!("ignoring unknown environment variable {name}"));
            }
        }
        // RUST_LOG is honoured as the log level when HANGIN_LOG_LEVEL is not set.
        if !env_has(&env, "HANGIN_LOG_LEVEL") {
            if let Ok(level) = std::env::var("RUST_LOG") {
                figment = figment.merge(Serialized::default("log_level", level));
            }
        }
        if let Some(listen) = &sources.listen {
            figment = figment.merge(Serialized::default("listen", listen));
        }
        if let Some(dir) = &sources.data_dir {
            figment = figment.merge(Serialized::default("data_dir", dir));
        }
        let config: Config = figment
            .extract()
            .map_err(|e| ConfigError::Invalid(describe_figment_error(e)))?;
        config.validate()?;
        if config.limits.send_queue_frames.is_some() {
            warnings.push(
                "ignoring `limits.send_queue_frames`: the send queue is bounded in bytes now \
                 (`limits.send_queue_bytes`)"
                    .into(),
            );
        }
        Ok((config, warnings))
    }

    /// Checks that do not need the outside world (drivers check their own resources at start).
    /// Checks across keys and of ranges (each value's own form was checked when it was parsed).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| Err(ConfigError::Invalid(format!("key `{key}`: {why}")));
        if self.listen.is_none() && self.tls.listen.is_none() {
            return bad("listen", "no listener: set `listen` or `tls.listen`");
        }
        if self.tls.listen.is_some()
            && !self.tls.self_signed
            && (self.tls.cert.is_none() || self.tls.key.is_none())
        {
            return bad(
                "tls.cert",
                "the TLS listener needs `tls.cert` and `tls.key`, or `tls.self_signed = true`",
            );
        }
        if let Some(a) = self.metrics.listen {
            if !a.ip().is_loopback() && !self.metrics.allow_remote {
                return bad(
                    "metrics.listen",
                    "not a loopback address; set `metrics.allow_remote = true` to serve metrics beyond this host",
                );
            }
        }
        if self.auth.access_token_ttl.is_zero() {
            return bad("auth.access_token_ttl_seconds", "must be positive");
        }
        if self.auth.otp_max_attempts == 0 {
            return bad("auth.otp_max_attempts", "must be positive");
        }
        if self.limits.frame_bytes < 1024 {
            return bad("limits.frame_bytes", "must be at least 1024");
        }
        if self.limits.send_queue_bytes < 4096 {
            return bad("limits.send_queue_bytes", "must be at least 4096");
        }
        for (key, value) in [
            ("limits.header_timeout_seconds", self.limits.header_timeout),
            (
                "limits.keepalive_timeout_seconds",
                self.limits.keepalive_timeout,
            ),
            (
                "limits.upgrade_timeout_seconds",
                self.limits.upgrade_timeout,
            ),
        ] {
            if value.is_zero() {
                return bad(key, "must be positive");
            }
        }
        if self.limits.subscriptions_per_connection == 0 {
            return bad("limits.subscriptions_per_connection", "must be positive");
        }
        if self.cable.ping.is_zero() {
            return bad("cable.ping_seconds", "must be positive");
        }
        if !self.otp.message.contains("{code}") {
            return bad("otp.message", "must contain {code}");
        }
        self.validate_drivers().map_err(ConfigError::Invalid)?;
        crate::people::numbers::Numbers::new(
            &self.numbers.default_region,
            &self.numbers.allowed_regions,
        )
        .map_err(ConfigError::Invalid)?;
        Ok(())
    }

    /// The delivery drivers' ranges, whichever driver is chosen, and what the chosen ones need
    /// (the drivers check the outside world when they start).
    fn validate_drivers(&self) -> Result<(), String> {
        self.otp.webhook.check_ranges("otp.webhook")?;
        self.push.webhook.check_ranges("push.webhook")?;
        self.otp.modem.check_ranges()?;
        self.otp.exec.check_ranges()?;
        match self.otp.driver {
            OtpDriverKind::Log => {}
            OtpDriverKind::Webhook => {
                self.otp.webhook.endpoint("otp.webhook")?;
            }
            OtpDriverKind::Modem => {
                self.otp.modem.device_path()?;
            }
            OtpDriverKind::Exec => {
                self.otp.exec.program()?;
            }
        }
        match self.push.driver {
            PushDriverKind::Log => {}
            PushDriverKind::Webhook => {
                self.push.webhook.endpoint("push.webhook")?;
            }
            PushDriverKind::Apns => {
                self.push.apns.credentials()?;
            }
        }
        Ok(())
    }

    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("hangin.sqlite3")
    }

    pub fn pictures_dir(&self) -> PathBuf {
        self.data_dir.join("pictures")
    }

    pub fn credentials_path(&self) -> PathBuf {
        self.data_dir.join("client-credentials.json")
    }

    /// The effective configuration as TOML with secrets masked (`hangin config check`).
    pub fn masked_toml(&self) -> String {
        let mut shown = self.clone();
        shown.otp.webhook.mask();
        shown.push.webhook.mask();
        shown.otp.modem.mask();
        toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

fn env_has(env: &[(String, String)], name: &str) -> bool {
    env.iter().any(|(k, _)| k == name)
}

/// A dotted key is known when the defaults hold it, or when it sits below a map-valued key
/// (`otp.webhook.headers.authorization`).
fn key_is_known(defaults: &Figment, key: &str) -> bool {
    if defaults.find_value(key).is_ok() {
        return true;
    }
    let mut prefix = key;
    while let Some((head, _)) = prefix.rsplit_once('.') {
        if head.ends_with(".headers") || head == "headers" {
            return matches!(defaults.find_value(head), Ok(Value::Dict(..)));
        }
        prefix = head;
    }
    false
}

fn describe_figment_error(e: figment::Error) -> String {
    let mut lines = Vec::new();
    for err in e {
        let key = err.path.join(".");
        let what = match &err.kind {
            figment::error::Kind::UnknownField(field, _) => {
                let full = if key.is_empty() {
                    field.clone()
                } else {
                    format!("{key}.{field}")
                };
                format!("unknown key `{full}`")
            }
            other => {
                if key.is_empty() {
                    other.to_string()
                } else {
                    format!("key `{key}`: {other}")
                }
            }
        };
        let source = err
            .metadata
            .as_ref()
            .and_then(|m| m.source.as_ref())
            .and_then(|s| s.file_path())
            .map(|p| format!(" in {}", p.display()))
            .unwrap_or_default();
        lines.push(format!("{what}{source}"));
    }
    lines.join("; ")
}

/// Default config file location: `HANGIN_CONFIG`, else `./hangin.toml` when present.
pub fn default_config_path() -> PathBuf {
    std::env::var_os("HANGIN_CONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new("hangin.toml").to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(file: Option<&str>, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hangin.toml");
        if let Some(text) = file {
            std::fs::write(&path, text).unwrap();
        }
        let sources = Sources {
            file: Some(path),
            ..Default::default()
        };
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Config::load_with_env(&sources, env).map(|(c, _)| c)
    }

    #[test]
    fn defaults_without_a_file() {
        let c = load(None, &[]).unwrap();
        assert_eq!(c.listen, Some("127.0.0.1:3000".parse().unwrap()));
        assert_eq!(c.data_dir, PathBuf::from("./data"));
        assert_eq!(c.otp.driver, OtpDriverKind::Log);
        assert!(c.mdns.enabled);
    }

    #[test]
    fn env_overrides_file_and_sections_split_on_double_underscore() {
        let c = load(
            Some("[cable]\nbackground_window_seconds = 10\n"),
            &[
                ("HANGIN_CABLE__KEY_STYLE", "camel"),
                ("HANGIN_AUTH__OTP_TTL_SECONDS", "60"),
                ("HANGIN_BIN", "/ignored/not/a/key"),
            ],
        )
        .unwrap();
        assert_eq!(c.cable.key_style, KeyStyle::Camel);
        assert_eq!(c.cable.background_window, Duration::from_secs(10));
        assert_eq!(c.auth.otp_ttl, Duration::from_secs(60));
    }

    #[test]
    fn the_send_queue_is_bounded_in_bytes_and_the_old_frame_count_still_starts() {
        assert_eq!(load(None, &[]).unwrap().limits.send_queue_bytes, 1 << 20);
        let c = load(None, &[("HANGIN_LIMITS__SEND_QUEUE_BYTES", "65536")]).unwrap();
        assert_eq!(c.limits.send_queue_bytes, 65536);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hangin.toml");
        std::fs::write(&path, "[limits]\nsend_queue_frames = 1024\n").unwrap();
        let sources = Sources {
            file: Some(path),
            ..Default::default()
        };
        let (c, warnings) = Config::load_with_env(&sources, std::iter::empty()).unwrap();
        assert_eq!(c.limits.send_queue_bytes, 1 << 20);
        assert!(
            warnings.iter().any(|w| w.contains("send_queue_frames")),
            "{warnings:?}"
        );
        let e = load(Some("[limits]\nsend_queue_bytes = 10\n"), &[]).unwrap_err();
        assert!(e.to_string().contains("limits.send_queue_bytes"), "{e}");
    }

    #[test]
    fn unknown_key_in_file_is_named() {
        let e = load(Some("[auth]\notp_tll_seconds = 5\n"), &[]).unwrap_err();
        assert!(e.to_string().contains("auth.otp_tll_seconds"), "{e}");
    }

    #[test]
    fn bad_value_names_the_key() {
        let e = load(None, &[("HANGIN_AUTH__OTP_TTL_SECONDS", "soon")]).unwrap_err();
        assert!(e.to_string().contains("auth.otp_ttl_seconds"), "{e}");
        let e = load(Some("listen = \"nowhere\"\n"), &[]).unwrap_err();
        assert!(e.to_string().contains("listen"), "{e}");
    }

    #[test]
    fn values_are_parsed_once_into_their_types() {
        let c = load(
            Some(
                "listen = \"\"\npublic_url = \"https://chat.example.org/\"\n\
                 trusted_proxies = [\"10.0.0.0/8\", \"::1\"]\n\
                 [tls]\nlisten = \"[::]:3443\"\nself_signed = true\n\
                 [cable]\ndead_peer_seconds = 0\n",
            ),
            &[("HANGIN_CABLE__PING_SECONDS", "7")],
        )
        .unwrap();
        assert_eq!(c.listen, None);
        assert_eq!(c.tls.listen, Some("[::]:3443".parse().unwrap()));
        assert_eq!(c.public_url.as_deref(), Some("https://chat.example.org"));
        assert!(c.trusted_proxies[0]
            .cidr
            .contains("10.9.8.7".parse().unwrap()));
        assert!(c.trusted_proxies[1].cidr.contains("::1".parse().unwrap()));
        assert_eq!(c.cable.dead_peer, None);
        assert_eq!(c.cable.ping, Duration::from_secs(7));
        assert_eq!(
            load(None, &[]).unwrap().cable.dead_peer,
            Some(Duration::from_secs(30))
        );
        // Shown back as written.
        let shown = c.masked_toml();
        assert!(shown.contains("listen = \"\""), "{shown}");
        assert!(shown.contains("\"10.0.0.0/8\""), "{shown}");
        assert!(shown.contains("dead_peer_seconds = 0"), "{shown}");
    }

    #[test]
    fn bad_typed_values_name_their_key() {
        for (file, env, key) in [
            ("[tls]\nlisten = \"3443\"\n", None, "tls.listen"),
            (
                "[metrics]\nlisten = \"localhost\"\n",
                None,
                "metrics.listen",
            ),
            ("public_url = \"chat.example.org\"\n", None, "public_url"),
            (
                "trusted_proxies = [\"10.0.0.0/33\"]\n",
                None,
                "trusted_proxies",
            ),
            ("", Some(("HANGIN_LISTEN", "everywhere")), "listen"),
            (
                "",
                Some(("HANGIN_CABLE__PING_SECONDS", "-1")),
                "cable.ping_seconds",
            ),
            (
                "",
                Some(("HANGIN_CABLE__PING_SECONDS", "0")),
                "cable.ping_seconds",
            ),
            ("listen = \"\"\n", None, "no listener"),
        ] {
            let env: Vec<(&str, &str)> = env.into_iter().collect();
            let e = load(Some(file), &env).unwrap_err().to_string();
            assert!(e.contains(key), "{file:?} {env:?}: {e}");
        }
        let e = load(Some("trusted_proxies = [\"nonsense\"]\n"), &[]).unwrap_err();
        assert!(
            e.to_string()
                .contains("`nonsense` is not an address or CIDR"),
            "{e}"
        );
    }

    #[test]
    fn syntax_error_names_the_file() {
        let e = load(Some("listen = \n"), &[]).unwrap_err();
        assert!(e.to_string().contains("hangin.toml"), "{e}");
    }

    #[test]
    fn secrets_are_masked() {
        let c = load(
            Some(
                "[otp.modem]\npin = \"4711\"\n\
                 [push.webhook]\nurl = \"https://user:pw@ntfy.lan/h\"\n",
            ),
            &[
                ("HANGIN_OTP__WEBHOOK__SECRET", "whsec_c2VjcmV0"),
                ("HANGIN_PUSH__WEBHOOK__HEADERS__AUTHORIZATION", "Bearer tok"),
            ],
        )
        .unwrap();
        let shown = c.masked_toml();
        for secret in ["whsec_c2VjcmV0", "4711", ":pw@", "Bearer tok"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("secret = \"********\""), "{shown}");
        assert!(shown.contains("pin = \"********\""), "{shown}");
        assert!(
            shown.contains("https://user:********@ntfy.lan/h"),
            "{shown}"
        );
        // Nor does Debug output show them.
        let debug = format!("{c:?}");
        for secret in ["c2VjcmV0", "4711", "Bearer tok"] {
            assert!(!debug.contains(secret), "{secret} in {debug}");
        }
    }

    #[test]
    fn string_keys_keep_digits_from_the_environment() {
        let c = load(
            None,
            &[
                ("HANGIN_OTP__MODEM__PIN", "0042"),
                ("HANGIN_PUSH__APNS__TEAM_ID", "1234567890"),
                ("HANGIN_OTP__MODEM__BAUD", "9600"),
            ],
        )
        .unwrap();
        assert_eq!(c.otp.modem.pin.as_ref().unwrap().as_str(), "0042");
        assert_eq!(c.push.apns.team_id.as_deref(), Some("1234567890"));
        assert_eq!(c.otp.modem.baud, 9600);
    }

    #[test]
    fn header_maps_accept_env_keys() {
        let c = load(
            None,
            &[("HANGIN_OTP__WEBHOOK__HEADERS__AUTHORIZATION", "Bearer x")],
        )
        .unwrap();
        assert_eq!(
            c.otp.webhook.headers.map().get("authorization").unwrap(),
            "Bearer x"
        );
    }

    /// Every driver key written `""`, as config files have written "not set" all along: it
    /// still loads, to `None`, and is shown back as `""`.
    #[test]
    fn empty_driver_settings_still_mean_not_set() {
        let c = load(
            Some(
                "[otp.webhook]\nurl = \"\"\nsecret = \"\"\n\
                 [otp.modem]\ndevice = \"\"\npin = \"\"\n\
                 [push.webhook]\nurl = \" \"\nsecret = \"\"\n\
                 [push.apns]\nkey_path = \"\"\nkey_id = \"\"\nteam_id = \"\"\ntopic = \"\"\n\
                 host = \"\"\nca_file = \"\"\n",
            ),
            &[],
        )
        .unwrap();
        assert!(c.otp.webhook.url.is_none() && c.otp.webhook.secret.is_none());
        assert!(c.push.webhook.url.is_none() && c.push.webhook.secret.is_none());
        assert!(c.otp.modem.device.is_none() && c.otp.modem.pin.is_none());
        let apns = &c.push.apns;
        assert!(apns.key_path.is_none() && apns.key_id.is_none() && apns.team_id.is_none());
        assert!(apns.topic.is_none() && apns.host.is_none() && apns.ca_file.is_none());
        let shown = c.masked_toml();
        for line in ["url = \"\"", "pin = \"\"", "host = \"\"", "ca_file = \"\""] {
            assert!(shown.contains(line), "{line} not in {shown}");
        }
        // The defaults: the modem's usual port, no PIN, Apple's hosts.
        let d = load(None, &[]).unwrap();
        assert_eq!(d.otp.modem.device, Some(PathBuf::from("/dev/ttyUSB2")));
        assert!(d.otp.modem.pin.is_none() && d.push.apns.host.is_none());
    }

    #[test]
    fn webhook_settings_are_typed() {
        let c = load(
            Some(
                "[otp]\ndriver = \"webhook\"\n\
                 [otp.webhook]\nurl = \"https://sms-gateway.lan/hangin\"\n\
                 secret = \"whsec_aHVudGVyMg==\"\ntimeout_seconds = 10\ntries = 2\n\
                 [otp.webhook.headers]\nAuthorization = \"Bearer x\"\n",
            ),
            &[
                ("HANGIN_PUSH__WEBHOOK__URL", "http://127.0.0.1:8080/push"),
                ("HANGIN_PUSH__WEBHOOK__SECRET", "hunter2"),
                ("HANGIN_PUSH__WEBHOOK__TIMEOUT_SECONDS", "7"),
            ],
        )
        .unwrap();
        let otp = &c.otp.webhook;
        assert_eq!(
            otp.url.as_ref().unwrap().as_str(),
            "https://sms-gateway.lan/hangin"
        );
        assert_eq!(otp.secret.as_ref().unwrap().key(), b"hunter2");
        assert_eq!(otp.timeout, Duration::from_secs(10));
        assert_eq!(otp.tries, 2);
        assert_eq!(otp.headers.map()["authorization"], "Bearer x");
        let push = &c.push.webhook;
        assert_eq!(push.url.as_ref().unwrap().port(), Some(8080));
        // Not `whsec_`: the raw bytes are the key.
        assert_eq!(push.secret.as_ref().unwrap().key(), b"hunter2");
        assert_eq!(push.timeout, Duration::from_secs(7));
        assert_eq!(
            load(None, &[]).unwrap().otp.webhook.timeout,
            Duration::from_secs(5)
        );
    }

    #[test]
    fn modem_exec_and_apns_settings_are_typed() {
        let c = load(
            Some(
                "[otp.modem]\ndevice = \"/dev/serial/by-id/usb-modem-if02\"\npin = \"0042\"\n\
                 timeout_seconds = 10\n\
                 [otp.exec]\nargv = [\"sms\", \"{e164}\"]\ntimeout_seconds = 3\n\
                 [push.apns]\nkey_path = \"/etc/hangin/AuthKey.p8\"\nkey_id = \"ABC123DEFG\"\n\
                 team_id = \"0123456789\"\ntopic = \"org.example.hangin\"\n\
                 host = \"localhost:8443\"\nca_file = \"/etc/hangin/ca.pem\"\n",
            ),
            &[("HANGIN_PUSH__DRIVER", "apns")],
        )
        .unwrap();
        let modem = &c.otp.modem;
        assert_eq!(
            modem.device_path().unwrap(),
            Path::new("/dev/serial/by-id/usb-modem-if02")
        );
        assert_eq!(modem.pin.as_ref().unwrap().as_str(), "0042");
        assert_eq!(modem.timeout, Duration::from_secs(10));
        assert_eq!(c.otp.exec.timeout, Duration::from_secs(3));
        assert_eq!(c.otp.exec.program().unwrap().0, "sms");
        let apns = &c.push.apns;
        assert_eq!(apns.host.as_ref().unwrap().as_str(), "localhost:8443");
        assert_eq!(apns.ca_file, Some(PathBuf::from("/etc/hangin/ca.pem")));
        let credentials = apns.credentials().unwrap();
        assert_eq!(credentials.key_path, Path::new("/etc/hangin/AuthKey.p8"));
        assert_eq!(credentials.team_id, "0123456789");
        assert_eq!(credentials.topic, "org.example.hangin");
        let d = load(None, &[]).unwrap();
        assert_eq!(d.otp.modem.timeout, Duration::from_secs(30));
        assert_eq!(d.otp.exec.timeout, Duration::from_secs(30));
    }

    /// A bad value fails the load with a line naming its key, whichever driver is chosen; what
    /// the chosen driver needs is required at load too.
    #[test]
    fn bad_driver_settings_name_their_key() {
        for (file, env, key, why) in [
            (
                "[otp.webhook]\nurl = \"sms-gateway.lan\"\n",
                None,
                "otp.webhook.url",
                "not a URL",
            ),
            (
                "[push.webhook]\nurl = \"ftp://example/\"\n",
                None,
                "push.webhook.url",
                "http://",
            ),
            (
                "",
                Some(("HANGIN_OTP__WEBHOOK__URL", "http://")),
                "otp.webhook.url",
                "URL",
            ),
            (
                "[otp.webhook]\nsecret = \"whsec_!!not base64!!\"\n",
                None,
                "otp.webhook.secret",
                "not base64",
            ),
            (
                "[push.webhook]\nsecret = \"whsec_\"\n",
                None,
                "push.webhook.secret",
                "empty",
            ),
            (
                "[otp.webhook.headers]\n\"Bad Name\" = \"x\"\n",
                None,
                "otp.webhook.headers",
                "invalid header name",
            ),
            (
                "[otp.webhook]\ntimeout_seconds = 0\n",
                None,
                "otp.webhook.timeout_seconds",
                "positive",
            ),
            (
                "",
                Some(("HANGIN_PUSH__WEBHOOK__TIMEOUT_SECONDS", "soon")),
                "push.webhook.timeout_seconds",
                "",
            ),
            (
                "[push.webhook]\ntries = 0\n",
                None,
                "push.webhook.tries",
                "at least 1",
            ),
            (
                "[otp.modem]\npin = \"12a4\"\n",
                None,
                "otp.modem.pin",
                "4 to 8 digits",
            ),
            (
                "",
                Some(("HANGIN_OTP__MODEM__PIN", "123")),
                "otp.modem.pin",
                "4 to 8 digits",
            ),
            (
                "[otp.modem]\nbaud = 0\n",
                None,
                "otp.modem.baud",
                "positive",
            ),
            (
                "[otp.modem]\ntimeout_seconds = 0\n",
                None,
                "otp.modem.timeout_seconds",
                "positive",
            ),
            (
                "[otp.exec]\ntimeout_seconds = -3\n",
                None,
                "otp.exec.timeout_seconds",
                "",
            ),
            (
                "[otp.exec]\ntimeout_seconds = 0\n",
                None,
                "otp.exec.timeout_seconds",
                "positive",
            ),
            (
                "[push.apns]\nhost = \"relay/path\"\n",
                None,
                "push.apns.host",
                "host[:port]",
            ),
            (
                "[push.apns]\nhost = \"relay:port\"\n",
                None,
                "push.apns.host",
                "host[:port]",
            ),
            // What the chosen driver needs.
            (
                "[otp]\ndriver = \"webhook\"\n",
                None,
                "otp.webhook.url",
                "set the receiver's URL",
            ),
            (
                "[otp]\ndriver = \"webhook\"\n[otp.webhook]\nurl = \"http://127.0.0.1:9/\"\n",
                None,
                "otp.webhook.secret",
                "every webhook is signed",
            ),
            (
                "[push]\ndriver = \"webhook\"\n[push.webhook]\nsecret = \"s3cret\"\n",
                None,
                "push.webhook.url",
                "is empty",
            ),
            (
                "[otp]\ndriver = \"modem\"\n[otp.modem]\ndevice = \"\"\n",
                None,
                "otp.modem.device",
                "serial port",
            ),
            (
                "[otp]\ndriver = \"exec\"\n",
                None,
                "otp.exec.argv",
                "give the program",
            ),
            (
                "[push]\ndriver = \"apns\"\n",
                None,
                "push.apns.key_path",
                "is empty",
            ),
            (
                "[push]\ndriver = \"apns\"\n\
                 [push.apns]\nkey_path = \"/k.p8\"\nkey_id = \"K\"\ntopic = \"t\"\n",
                None,
                "push.apns.team_id",
                "is empty",
            ),
        ] {
            let env: Vec<(&str, &str)> = env.into_iter().collect();
            let e = load(Some(file), &env).unwrap_err().to_string();
            assert!(e.contains(&format!("`{key}`")), "{file:?} {env:?}: {e}");
            assert!(e.contains(why), "{file:?} {env:?}: {e}");
        }
        // The same sections are fine while another driver is chosen and nothing is malformed.
        load(
            Some("[otp.modem]\ndevice = \"\"\n[otp.exec]\nargv = []\n"),
            &[],
        )
        .unwrap();
    }
}
