//! `POST /create` and `POST /oauth/token`.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use super::client_ip::Origin;
use super::error::{self, ApiError};
use super::params::Params;
use crate::auth::TokenRequest;
use crate::state::AppState;

pub async fn create_code(
    State(state): State<AppState>,
    origin: Origin,
    params: Params,
) -> Result<StatusCode, ApiError> {
    let number = params.text("number").unwrap_or_default();
    state.auth.request_code(&number, origin.ip).await?;
    Ok(StatusCode::NO_CONTENT)
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
    let (client_id, client_secret) = match basic_credentials(&headers) {
        Some((id, secret)) => (Some(id), Some(secret)),
        None => (params.text("client_id"), params.text("client_secret")),
    };
    let request = TokenRequest {
        grant_type: params.text("grant_type"),
        client_id,
        client_secret,
        number: params.text("number"),
        code: params.text("code"),
        refresh_token: params.text("refresh_token"),
        scope: params.text("scope"),
    };
    let issued = state.auth.token(request, origin.ip).await?;
    let mut res = error::json(StatusCode::OK, &issued).into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(res)
}
