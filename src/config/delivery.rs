//! The delivery drivers' settings (`[otp.*]`, `[push.*]`), typed at the edge: a webhook URL is a
//! parsed URL, a secret its decoded key, a path a `PathBuf`, a timeout a `Duration`, and what may
//! be absent an `Option` (written `""`, as the file always wrote it). A value's form is checked
//! when it is parsed, whichever driver is chosen; what the chosen driver needs is checked by
//! `Config::validate` with the same messages the drivers use. The drivers themselves only check
//! the outside world (key files, the serial device, the program, the network).

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::Url;
use serde::{Deserialize, Serialize};

use super::{or_off, secs};

/// What masked values show (`hangin config check`).
pub(super) const MASK: &str = "********";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookConfig {
    /// The receiver, an `http://` or `https://` URL; `None` (written "") = not set.
    #[serde(with = "http_url_or_off")]
    pub url: Option<Url>,
    /// The signing key; `None` (written "") = not set.
    #[serde(with = "or_off")]
    pub secret: Option<WebhookSecret>,
    /// Extra static headers, e.g. a gateway's `Authorization`.
    pub headers: Headers,
    /// Per try.
    #[serde(rename = "timeout_seconds", with = "secs")]
    pub timeout: Duration,
    pub tries: u32,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            url: None,
            secret: None,
            headers: Headers::default(),
            timeout: Duration::from_secs(5),
            tries: 3,
        }
    }
}

impl WebhookConfig {
    /// The receiver and the key, which the webhook driver needs; else why not (`section` is the
    /// section's dotted name, for the message).
    pub fn endpoint(&self, section: &str) -> Result<(&Url, &WebhookSecret), String> {
        let url = self
            .url
            .as_ref()
            .ok_or_else(|| format!("key `{section}.url`: is empty; set the receiver's URL"))?;
        let secret = self.secret.as_ref().ok_or_else(|| {
            format!(
                "key `{section}.secret`: is empty; every webhook is signed \
                 (e.g. `whsec_` + `openssl rand -base64 32`)"
            )
        })?;
        Ok((url, secret))
    }

    /// Ranges, checked whichever driver is chosen.
    pub(super) fn check_ranges(&self, section: &str) -> Result<(), String> {
        if self.tries == 0 {
            return Err(format!("key `{section}.tries`: must be at least 1"));
        }
        if self.timeout.is_zero() {
            return Err(format!("key `{section}.timeout_seconds`: must be positive"));
        }
        Ok(())
    }

    pub(super) fn mask(&mut self) {
        if let Some(secret) = &mut self.secret {
            *secret = WebhookSecret::masked();
        }
        if let Some(url) = &mut self.url {
            if url.password().is_some() {
                let _ = url.set_password(Some(MASK));
            }
        }
        self.headers.mask();
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModemConfig {
    /// The AT port; `None` (written "") = not set (the modem driver needs it).
    #[serde(with = "or_off")]
    pub device: Option<PathBuf>,
    pub baud: u32,
    /// Sent only when the SIM asks; `None` (written "") = none.
    #[serde(with = "or_off")]
    pub pin: Option<SimPin>,
    /// How long to wait for each answer of the modem.
    #[serde(rename = "timeout_seconds", with = "secs")]
    pub timeout: Duration,
}

impl Default for ModemConfig {
    fn default() -> Self {
        ModemConfig {
            device: Some(PathBuf::from("/dev/ttyUSB2")),
            baud: 115200,
            pin: None,
            timeout: Duration::from_secs(30),
        }
    }
}

impl ModemConfig {
    /// The serial port, which the modem driver needs; else why not.
    pub fn device_path(&self) -> Result<&Path, String> {
        self.device.as_deref().ok_or_else(|| {
            "key `otp.modem.device`: is empty; name the modem's serial port, e.g. /dev/ttyUSB2"
                .to_string()
        })
    }

    pub(super) fn mask(&mut self) {
        if self.pin.is_some() {
            self.pin = Some(SimPin(MASK.into()));
        }
    }

    pub(super) fn check_ranges(&self) -> Result<(), String> {
        if self.baud == 0 {
            return Err("key `otp.modem.baud`: must be positive".into());
        }
        if self.timeout.is_zero() {
            return Err("key `otp.modem.timeout_seconds`: must be positive".into());
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExecConfig {
    /// Program and arguments; `{number}`, `{e164}`, `{code}`, `{message}` are replaced. No shell.
    pub argv: Vec<String>,
    /// Then the program's process group is killed.
    #[serde(rename = "timeout_seconds", with = "secs")]
    pub timeout: Duration,
}

impl Default for ExecConfig {
    fn default() -> Self {
        ExecConfig {
            argv: Vec::new(),
            timeout: Duration::from_secs(30),
        }
    }
}

impl ExecConfig {
    /// The program and its argument templates, which the exec driver needs; else why not.
    pub fn program(&self) -> Result<(&str, &[String]), String> {
        match self.argv.split_first() {
            Some((program, args)) if !program.trim().is_empty() => Ok((program, args)),
            _ => Err(
                "key `otp.exec.argv`: is empty; give the program and its arguments, e.g. \
                 [\"gammu-smsd-inject\", \"TEXT\", \"{e164}\", \"-text\", \"{message}\"]"
                    .into(),
            ),
        }
    }

    pub(super) fn check_ranges(&self) -> Result<(), String> {
        if self.timeout.is_zero() {
            return Err("key `otp.exec.timeout_seconds`: must be positive".into());
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApnsConfig {
    /// The `.p8` key; `None` (written "") = not set.
    #[serde(with = "or_off")]
    pub key_path: Option<PathBuf>,
    #[serde(with = "or_off")]
    pub key_id: Option<String>,
    #[serde(with = "or_off")]
    pub team_id: Option<String>,
    #[serde(with = "or_off")]
    pub topic: Option<String>,
    pub environment: ApnsEnvironment,
    /// Instead of Apple's host for `environment` (a local stand-in or relay); `None` (written
    /// "") = Apple's.
    #[serde(with = "or_off")]
    pub host: Option<ApnsHost>,
    /// Extra CA certificates (PEM) to trust for `host`, besides the public roots; `None`
    /// (written "") = none.
    #[serde(with = "or_off")]
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApnsEnvironment {
    Production,
    Sandbox,
}

impl Default for ApnsConfig {
    fn default() -> Self {
        ApnsConfig {
            key_path: None,
            key_id: None,
            team_id: None,
            topic: None,
            environment: ApnsEnvironment::Production,
            host: None,
            ca_file: None,
        }
    }
}

/// What the APNs driver needs from `[push.apns]`.
#[derive(Debug, Clone, Copy)]
pub struct ApnsCredentials<'a> {
    pub key_path: &'a Path,
    pub key_id: &'a str,
    pub team_id: &'a str,
    pub topic: &'a str,
}

impl ApnsConfig {
    /// The key and the names the APNs driver needs; else why not.
    pub fn credentials(&self) -> Result<ApnsCredentials<'_>, String> {
        fn empty(key: &str) -> String {
            format!("key `push.apns.{key}`: is empty; the apns driver needs it")
        }
        fn text<'a>(value: &'a Option<String>, key: &str) -> Result<&'a str, String> {
            value.as_deref().map(str::trim).ok_or_else(|| empty(key))
        }
        Ok(ApnsCredentials {
            key_path: self.key_path.as_deref().ok_or_else(|| empty("key_path"))?,
            key_id: text(&self.key_id, "key_id")?,
            team_id: text(&self.team_id, "team_id")?,
            topic: text(&self.topic, "topic")?,
        })
    }
}

/// A webhook signing key: `whsec_<base64>` is a Standard Webhooks secret (the key is the
/// decoded base64); any other string is the raw key bytes. Shown back as written.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret {
    written: String,
    key: Vec<u8>,
}

impl WebhookSecret {
    /// The HMAC key.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    fn masked() -> WebhookSecret {
        WebhookSecret {
            written: MASK.into(),
            key: MASK.as_bytes().to_vec(),
        }
    }
}

impl FromStr for WebhookSecret {
    type Err = String;

    fn from_str(secret: &str) -> Result<Self, Self::Err> {
        let key = match secret.strip_prefix("whsec_") {
            Some(encoded) => BASE64
                .decode(encoded.trim())
                .map_err(|e| format!("the part after `whsec_` is not base64 ({e})"))?,
            None => secret.as_bytes().to_vec(),
        };
        if key.is_empty() {
            return Err("is an empty key; every webhook is signed \
                 (e.g. `whsec_` + `openssl rand -base64 32`)"
                .into());
        }
        Ok(WebhookSecret {
            written: secret.to_string(),
            key,
        })
    }
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WebhookSecret({MASK})")
    }
}

impl Serialize for WebhookSecret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.written)
    }
}

/// A SIM PIN: 4 to 8 digits, kept as text (`0042`).
#[derive(Clone, PartialEq, Eq)]
pub struct SimPin(String);

impl SimPin {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for SimPin {
    type Err = String;

    fn from_str(pin: &str) -> Result<Self, Self::Err> {
        if (4..=8).contains(&pin.len()) && pin.bytes().all(|b| b.is_ascii_digit()) {
            Ok(SimPin(pin.to_string()))
        } else {
            Err("must be 4 to 8 digits".into())
        }
    }
}

impl std::fmt::Debug for SimPin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SimPin({MASK})")
    }
}

impl Serialize for SimPin {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// `host[:port]` of an APNs stand-in, checked to make an `https://host[:port]` base URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApnsHost(String);

impl ApnsHost {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ApnsHost {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let host = text.trim();
        let parsed = Url::parse(&format!("https://{host}"))
            .map_err(|e| format!("{host:?} is not a host[:port] ({e})"))?;
        if parsed.path() != "/" || parsed.host().is_none() || parsed.query().is_some() {
            return Err(format!("{host:?} is not a host[:port]"));
        }
        Ok(ApnsHost(host.to_string()))
    }
}

impl Serialize for ApnsHost {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// Extra static HTTP headers, checked to be valid names and values when parsed. Written as a
/// table of text; names are case-insensitive (kept lower-case).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Headers(HeaderMap);

impl Headers {
    pub fn map(&self) -> &HeaderMap {
        &self.0
    }

    fn mask(&mut self) {
        for value in self.0.values_mut() {
            *value = HeaderValue::from_static(MASK);
        }
    }
}

impl Serialize for Headers {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(
            self.0
                .iter()
                .map(|(name, value)| (name.as_str(), String::from_utf8_lossy(value.as_bytes()))),
        )
    }
}

impl<'de> Deserialize<'de> for Headers {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let written = std::collections::BTreeMap::<String, String>::deserialize(d)?;
        let mut map = HeaderMap::new();
        for (name, value) in written {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| D::Error::custom(format!("invalid header name {name:?}")))?;
            let mut value = HeaderValue::from_str(&value)
                .map_err(|_| D::Error::custom(format!("invalid value for the header {name}")))?;
            // Debug output (and with it any log of the configuration) leaves it out.
            value.set_sensitive(true);
            map.insert(name, value);
        }
        Ok(Headers(map))
    }
}

/// An `http://` or `https://` URL with a host, `""` = not set.
mod http_url_or_off {
    use reqwest::Url;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(url: &Option<Url>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(url.as_ref().map_or("", Url::as_str))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Url>, D::Error> {
        let text = String::deserialize(d)?;
        let text = text.trim();
        if text.is_empty() {
            return Ok(None);
        }
        let url = Url::parse(text).map_err(|e| {
            serde::de::Error::custom(format!("`{text}` is not a URL ({e}); \"\" = not set"))
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(serde::de::Error::custom(format!(
                "`{text}` must be an http:// or https:// URL"
            )));
        }
        Ok(Some(url))
    }
}
