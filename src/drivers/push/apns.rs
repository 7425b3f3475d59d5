//! Apple Push Notification service: HTTP/2 over rustls with token (JWT ES256) authentication.
//! One client, so pushes share one HTTP/2 connection (Apple treats a connection per push as
//! abuse); the JWT is cached and renewed after 50 minutes (Apple rejects tokens older than an
//! hour and throttles renewals more often than every 20 minutes).

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use parking_lot::Mutex;
use reqwest::StatusCode;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use tokio::time::Instant;

use super::{Notification, PushOutcome, Pusher};
use crate::config::{ApnsConfig, ApnsEnvironment};
use crate::drivers::http_client::{self, ClientOptions};
use crate::drivers::webhook::describe;
use crate::drivers::DriverError;

const DRIVER: &str = "push apns";
const PRODUCTION_HOST: &str = "api.push.apple.com";
const SANDBOX_HOST: &str = "api.sandbox.push.apple.com";
const JWT_LIFETIME: Duration = Duration::from_secs(50 * 60);
const TRIES: u32 = 3;

pub struct ApnsPush {
    client: reqwest::Client,
    /// `https://host[:port]`
    base: String,
    topic: String,
    signer: JwtSigner,
}

impl ApnsPush {
    pub fn from_config(config: &ApnsConfig) -> Result<ApnsPush, DriverError> {
        let bad = |why: String| DriverError::config(DRIVER, why);
        // Presence of the key and names and the form of `host` were checked at config load.
        let credentials = config.credentials().map_err(bad)?;
        let signer = JwtSigner::from_p8_file(
            credentials.key_path,
            credentials.key_id,
            credentials.team_id,
        )
        .map_err(bad)?;
        let host = match (&config.host, config.environment) {
            (Some(host), _) => host.as_str(),
            (None, ApnsEnvironment::Production) => PRODUCTION_HOST,
            (None, ApnsEnvironment::Sandbox) => SANDBOX_HOST,
        };
        let client = http_client::build(&ClientOptions {
            timeout: Duration::from_secs(10),
            extra_ca_file: config.ca_file.clone(),
            http2_only: true,
        })
        .map_err(|why| bad(format!("`push.apns.ca_file`: {why}")))?;
        Ok(ApnsPush {
            client,
            base: format!("https://{host}"),
            topic: credentials.topic.to_string(),
            signer,
        })
    }

    /// One POST; `Err((why, retry))` on failure.
    async fn try_once(&self, token: &str, payload: &[u8]) -> Result<PushOutcome, (String, bool)> {
        let jwt = self.signer.token();
        let response = self
            .client
            .post(format!("{}/3/device/{token}", self.base))
            .header("authorization", format!("bearer {jwt}"))
            .header("apns-topic", &self.topic)
            .header("apns-push-type", "alert")
            .header("apns-priority", "10")
            .header("content-type", "application/json")
            .body(payload.to_vec())
            .send()
            .await
            .map_err(|e| (describe(&e), true))?;
        let status = response.status();
        if status == StatusCode::OK {
            return Ok(PushOutcome::Delivered);
        }
        let body = response.bytes().await.unwrap_or_default();
        let reason = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["reason"].as_str().map(str::to_string))
            .unwrap_or_else(|| http_client::excerpt(&body));
        if status == StatusCode::GONE
            || matches!(reason.as_str(), "BadDeviceToken" | "Unregistered")
        {
            return Ok(PushOutcome::InvalidToken);
        }
        let why = format!("APNs answered {status} {reason}");
        match reason.as_str() {
            "ExpiredProviderToken" => {
                self.signer.renew();
                Err((why, true))
            }
            _ => Err((
                why,
                status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error(),
            )),
        }
    }
}

/// `{"aps":{"alert":{"title","subtitle","body"},"sound":"default"}, <data keys>}`.
pub fn payload(n: &Notification) -> serde_json::Value {
    let mut alert = serde_json::json!({"title": n.title, "body": n.body});
    if let Some(subtitle) = &n.subtitle {
        alert["subtitle"] = subtitle.clone().into();
    }
    let mut doc = serde_json::json!({"aps": {"alert": alert, "sound": "default"}});
    if let serde_json::Value::Object(data) = &n.data {
        for (k, v) in data {
            if k != "aps" {
                doc[k] = v.clone();
            }
        }
    }
    doc
}

#[async_trait]
impl Pusher for ApnsPush {
    async fn send(&self, n: &Notification) -> Result<PushOutcome, DriverError> {
        // Device tokens are hex; anything else would only draw BadDeviceToken (and must not
        // reach the request path).
        let token = n.device_token.trim();
        if token.is_empty() || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(PushOutcome::InvalidToken);
        }
        let body = serde_json::to_vec(&payload(n)).expect("JSON values serialize");
        crate::drivers::retry::with_backoff(TRIES, |_| self.try_once(token, &body))
            .await
            .map_err(|last| DriverError::delivery(DRIVER, last))
    }
}

/// Signs the provider token `{"alg":"ES256","kid"}.{"iss":team,"iat"}` with the `.p8` key.
struct JwtSigner {
    key: EcdsaKeyPair,
    key_id: String,
    team_id: String,
    rng: SystemRandom,
    cached: Mutex<Option<(String, Instant)>>,
}

impl JwtSigner {
    fn from_p8_file(path: &Path, key_id: &str, team_id: &str) -> Result<JwtSigner, String> {
        let pem = std::fs::read(path)
            .map_err(|e| format!("cannot read `push.apns.key_path` {}: {e}", path.display()))?;
        let path = path.display();
        let der = rustls_pemfile::pkcs8_private_keys(&mut pem.as_slice())
            .next()
            .and_then(Result::ok)
            .ok_or_else(|| format!("{path} holds no PEM \"PRIVATE KEY\" (an APNs .p8 key)"))?;
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            der.secret_pkcs8_der(),
            &rng,
        )
        .map_err(|e| format!("{path} is not a P-256 (ES256) key as APNs issues them: {e}"))?;
        Ok(JwtSigner {
            key,
            key_id: key_id.trim().to_string(),
            team_id: team_id.trim().to_string(),
            rng,
            cached: Mutex::new(None),
        })
    }

    /// The cached token, or a new one when the cached one is 50 minutes old.
    fn token(&self) -> String {
        let mut cached = self.cached.lock();
        if let Some((token, made)) = cached.as_ref() {
            if made.elapsed() < JWT_LIFETIME {
                return token.clone();
            }
        }
        let token = self.sign(crate::clock::system_now_ms() / 1000);
        *cached = Some((token.clone(), Instant::now()));
        token
    }

    fn renew(&self) {
        *self.cached.lock() = None;
    }

    fn sign(&self, issued_at: i64) -> String {
        let header = serde_json::json!({"alg": "ES256", "kid": self.key_id});
        let claims = serde_json::json!({"iss": self.team_id, "iat": issued_at});
        let input = format!(
            "{}.{}",
            B64URL.encode(header.to_string()),
            B64URL.encode(claims.to_string())
        );
        let signature = self
            .key
            .sign(&self.rng, input.as_bytes())
            .expect("ECDSA signing with a valid key");
        format!("{input}.{}", B64URL.encode(signature.as_ref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notification(data: serde_json::Value, subtitle: Option<&str>) -> Notification {
        Notification {
            device_token: "ab".into(),
            user_uuid: "u".into(),
            title: "Lunch?".into(),
            subtitle: subtitle.map(str::to_string),
            body: "now".into(),
            data,
        }
    }

    #[test]
    fn payload_has_the_alert_and_the_data_keys() {
        let p = payload(&notification(
            serde_json::json!({"chat": "6"}),
            Some("Ann Lee"),
        ));
        assert_eq!(
            p,
            serde_json::json!({"aps": {"alert": {"title": "Lunch?", "subtitle": "Ann Lee", "body": "now"}, "sound": "default"}, "chat": "6"})
        );
        let p = payload(&notification(serde_json::json!({"aps": 1}), None));
        assert_eq!(
            p,
            serde_json::json!({"aps": {"alert": {"title": "Lunch?", "body": "now"}, "sound": "default"}})
        );
    }
}
