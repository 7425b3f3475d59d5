//! One signed webhook endpoint (edge.md "OTP drivers" / "Push drivers" `webhook`): JSON `POST`,
//! Standard Webhooks headers, extra static headers, a per-try timeout and a few tries with
//! exponential backoff. 2xx is success; a 3xx or a 4xx other than 408/429 will not get better by
//! retrying and fails at once.

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use reqwest::StatusCode;

use super::http_client::{self, ClientOptions};
use super::signing::{self, Signer};
use super::DriverError;
use crate::config::WebhookConfig;

pub struct WebhookEndpoint {
    driver: &'static str,
    url: reqwest::Url,
    /// The URL as logs and errors show it: no password, no query (either may hold a secret).
    shown: String,
    signer: Signer,
    headers: HeaderMap,
    client: reqwest::Client,
    tries: u32,
}

/// `url` fit for the journal: a password masked, a query elided.
fn shown_url(url: &reqwest::Url) -> String {
    let mut shown = url.clone();
    if shown.password().is_some() {
        let _ = shown.set_password(Some("***"));
    }
    let elided = shown.query().is_some();
    shown.set_query(None);
    if elided {
        format!("{shown}?…")
    } else {
        shown.to_string()
    }
}

impl WebhookEndpoint {
    /// Check and build from one `[*.webhook]` section (`section` names it in errors).
    pub fn from_config(
        driver: &'static str,
        section: &str,
        config: &WebhookConfig,
    ) -> Result<WebhookEndpoint, DriverError> {
        let misconfigured = |why: String| DriverError::config(driver, why);
        // The URL's and the headers' form, the secret and the ranges were checked at config load.
        let (url, secret) = config.endpoint(section).map_err(misconfigured)?;
        let client = http_client::build(&ClientOptions {
            timeout: config.timeout,
            extra_ca_file: None,
            http2_only: false,
        })
        .map_err(misconfigured)?;
        Ok(WebhookEndpoint {
            driver,
            url: url.clone(),
            shown: shown_url(url),
            signer: Signer::new(secret),
            headers: config.headers.map().clone(),
            client,
            tries: config.tries,
        })
    }

    /// POST `body` until a 2xx answer or the tries run out. One `webhook-id` for all tries;
    /// each try is signed with its own timestamp so a slow retry is not rejected as stale.
    pub async fn deliver(&self, body: &serde_json::Value) -> Result<(), DriverError> {
        let body = serde_json::to_vec(body).expect("JSON values serialize");
        let id = signing::new_message_id();
        let (id, body) = (&id, &body);
        super::retry::with_backoff(self.tries, |attempt| async move {
            let tried = self.try_once(id, body).await;
            if let Err((failure, _)) = &tried {
                log::debug!(
                    "{} webhook try {attempt}/{} to {} failed: {failure}",
                    self.driver,
                    self.tries,
                    self.shown
                );
            }
            tried
        })
        .await
        .map_err(|last| {
            DriverError::delivery(self.driver, format!("webhook {}: {last}", self.shown))
        })
    }

    /// One POST; on failure the reason and whether another try may help.
    async fn try_once(&self, id: &str, body: &[u8]) -> Result<(), (String, bool)> {
        let timestamp = crate::clock::system_now_ms() / 1000;
        let mut headers = self.headers.clone();
        let signed = [
            ("webhook-id", id.to_string()),
            ("webhook-timestamp", timestamp.to_string()),
            ("webhook-signature", self.signer.sign(id, timestamp, body)),
        ];
        for (name, value) in signed {
            headers.insert(
                HeaderName::from_static(name),
                HeaderValue::from_str(&value).expect("ASCII header value"),
            );
        }
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let response = self
            .client
            .post(self.url.clone())
            .headers(headers)
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| (describe(&e), true))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let text = response.bytes().await.unwrap_or_default();
        let retry = status.is_server_error()
            || status == StatusCode::TOO_MANY_REQUESTS
            || status == StatusCode::REQUEST_TIMEOUT;
        Err((
            format!("answered {status} {}", http_client::excerpt(&text))
                .trim_end()
                .to_string(),
            retry,
        ))
    }
}

/// reqwest's Display hides the cause ("error sending request"); name the kind and the cause.
pub fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let mut cause = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    if cause.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {cause}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_show_the_url_without_its_secrets() {
        let url = |u: &str| reqwest::Url::parse(u).unwrap();
        assert_eq!(
            shown_url(&url("https://hook:s3cret@sms.example/send?token=abc")),
            "https://hook:***@sms.example/send?…"
        );
        assert_eq!(
            shown_url(&url("http://127.0.0.1:8080/otp")),
            "http://127.0.0.1:8080/otp"
        );
    }
}
