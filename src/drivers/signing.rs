//! Standard Webhooks signing (<https://www.standardwebhooks.com>), shared by the OTP and push
//! webhook drivers: `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The HMAC key of one endpoint.
#[derive(Clone)]
pub struct Signer {
    key: Vec<u8>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(********)")
    }
}

impl Signer {
    /// `whsec_<base64>` is a Standard Webhooks secret (the key is the decoded base64); any other
    /// non-empty string is used as the raw key bytes.
    pub fn from_secret(secret: &str) -> Result<Signer, String> {
        let key = match secret.strip_prefix("whsec_") {
            Some(encoded) => BASE64
                .decode(encoded.trim())
                .map_err(|e| format!("the part after `whsec_` is not base64 ({e})"))?,
            None => secret.as_bytes().to_vec(),
        };
        if key.is_empty() {
            return Err(
                "is empty; every webhook is signed (e.g. `whsec_` + `openssl rand -base64 32`)"
                    .into(),
            );
        }
        Ok(Signer { key })
    }

    /// The `webhook-signature` header value for one delivery attempt.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
    }
}

/// A fresh `webhook-id`: the receiver's idempotency key, the same on every retry of one event.
pub fn new_message_id() -> String {
    format!("msg_{}", uuid::Uuid::new_v4().simple())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_standard_webhooks_reference_vector() {
        // The example of the Standard Webhooks reference libraries.
        let signer = Signer::from_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            signer.sign(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn plain_secrets_are_raw_key_bytes() {
        let a = Signer::from_secret("hunter2").unwrap();
        let b = Signer::from_secret(&format!("whsec_{}", BASE64.encode("hunter2"))).unwrap();
        assert_eq!(a.sign("m", 1, b"x"), b.sign("m", 1, b"x"));
    }

    #[test]
    fn bad_secrets_are_refused() {
        assert!(Signer::from_secret("").is_err());
        assert!(Signer::from_secret("whsec_").is_err());
        assert!(Signer::from_secret("whsec_not base64!").is_err());
    }
}
