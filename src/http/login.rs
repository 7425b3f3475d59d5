//! `POST /create` and `POST /oauth/token`.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::Deserialize;

use super::client_ip::Origin;
use super::error::{self, ApiError};
use super::params::{field, Params};
use crate::auth::TokenRequest;
use crate::state::AppState;

/// `POST /create`. A missing number is the domain's `invalid_number`, like a malformed one.
#[derive(Deserialize)]
struct CreateCode {
    #[serde(default, deserialize_with = "field::text")]
    number: Option<String>,
}

pub async fn create_code(
    State(state): State<AppState>,
    origin: Origin,
    params: Params,
) -> Result<StatusCode, ApiError> {
    let req: CreateCode = params.into_request()?;
    let number = req.number.unwrap_or_default();
    state.auth.request_code(&number, origin.ip).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /oauth/token`: every field optional here; which ones a grant needs, and the OAuth
/// errors for those missing, are `auth::Auth::token`'s.
#[derive(Deserialize)]
struct Token {
    #[serde(default, deserialize_with = "field::text")]
    grant_type: Option<String>,
    #[serde(default, deserialize_with = "field::text")]
    client_id: Option<String>,
    #[serde(default, deserialize_with = "field::text")]
    client_secret: Option<String>,
    #[serde(default, deserialize_with = "field::text")]
    number: Option<String>,
    #[serde(default, deserialize_with = "field::text")]
    code: Option<String>,
    #[serde(default, deserialize_with = "field::text")]
    refresh_token: Option<String>,
    #[serde(default, deserialize_with = "field::text")]
    scope: Option<String>,
}

/// HTTP Basic client credentials, as Doorkeeper reads them (no URL-decoding).
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    (!id.is_empty()).then(|| (id.to_string(), secret.to_string()))
}

pub async fn token(
    State(state): State<AppState>,
    origin: Origin,
    headers: HeaderMap,
    params: Params,
) -> Result<Response, ApiError> {
    let req: Token = params.into_request()?;
    // HTTP Basic credentials win over those in the parameters, as in Doorkeeper.
    let (client_id, client_secret) = match basic_credentials(&headers) {
        Some((id, secret)) => (Some(id), Some(secret)),
        None => (req.client_id, req.client_secret),
    };
    let request = TokenRequest {
        grant_type: req.grant_type,
        client_id,
        client_secret,
        number: req.number,
        code: req.code,
        refresh_token: req.refresh_token,
        scope: req.scope,
    };
    let issued = state.auth.token(request, origin.ip).await?;
    let mut res = error::json(StatusCode::OK, &issued).into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(res)
}
