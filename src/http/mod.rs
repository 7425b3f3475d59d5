//! The REST surface (wire.md "REST"): routing, path normalisation, CORS, limits, logging.
//! Handlers are thin: they parse, call `auth`/`people`/`channels`, and serialize via `wire`.

pub mod client_ip;
pub mod conn;
pub mod error;
pub mod friends;
pub mod invites;
pub mod login;
pub mod params;
pub mod user;

use std::time::Instant;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderName, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::json;
use tower_http::cors::{AllowHeaders, AllowMethods, Any, CorsLayer};

use self::error::ApiError;
use crate::state::AppState;

pub fn router(state: AppState) -> Router {
    let picture_limit = state.config.limits.picture_bytes + 64 * 1024;
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_headers(AllowHeaders::mirror_request())
        .allow_methods(AllowMethods::list([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
            Method::HEAD,
        ]))
        // Browsers hide response headers outside the CORS safelist unless exposed: the web
        // client reads the skipped-entry count of `POST /friends` and a 429/503's wait.
        .expose_headers([
            HeaderName::from_static("hangin-skipped"),
            header::RETRY_AFTER,
        ])
        .max_age(std::time::Duration::from_secs(7200));
    Router::new()
        .route("/", get(root))
        .route("/up", get(up))
        .route("/create", post(login::create_code))
        .route("/oauth/token", post(login::token))
        .route("/friends", get(friends::list).post(friends::upload))
        .route(
            "/user",
            get(user::show).patch(user::update).put(user::update),
        )
        .route(
            "/user/addProfilePicture",
            post(user::add_picture).layer(DefaultBodyLimit::max(picture_limit)),
        )
        .route("/user/registerIOSDevice", post(user::register_device))
        .route("/notifications/invite", post(invites::invite))
        .route("/blobs/{key}", get(user::blob))
        .route("/cable", get(crate::cable::upgrade))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.config.limits.body_bytes))
        .layer(middleware::from_fn(json_errors))
        .layer(middleware::from_fn(log_request))
        .layer(middleware::from_fn(crate::metrics::track_http))
        .layer(cors)
        .with_state(state)
}

async fn root() -> Response {
    error::json(StatusCode::OK, &json!({"hello": "world"}))
}

/// Healthy when the writer thread commits a real write (cached ≤ 1 s) — a full disk or a
/// read-only mount shows here, not only in failed requests.
async fn up(State(state): State<AppState>) -> Response {
    match state.write_probe.check(&state.db).await {
        Ok(()) => error::json(StatusCode::OK, &json!({"status": "ok"})),
        Err(_) => ApiError::Unavailable {
            error: "unavailable",
            description: "The database cannot store data right now.".into(),
        }
        .into_response(),
    }
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(format!("No route matches {method} {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::coded(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}

async fn log_request(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string(); // never the query: it carries tokens
    let res = next.run(req).await;
    let status = res.status();
    let level = if status.is_server_error() {
        log::Level::Warn
    } else {
        log::Level::Debug
    };
    log::log!(
        level,
        "{method} {path} -> {} in {:.1} ms",
        status.as_u16(),
        started.elapsed().as_secs_f64() * 1e3
    );
    res
}

/// Every error body in wire.md's JSON shape: rejections of axum's extractors (a path that is not
/// UTF-8, …) come as plain text; they are rewrapped with their sentence kept.
async fn json_errors(req: Request, next: Next) -> Response {
    let res = next.run(req).await;
    let status = res.status();
    let plain = res
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain"));
    if !(status.is_client_error() || status.is_server_error()) || !plain {
        return res;
    }
    let (parts, body) = res.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .unwrap_or_default();
    let description = String::from_utf8_lossy(&text).trim().to_string();
    let code = match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "unprocessable_entity",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        s if s.is_server_error() => "internal_error",
        _ => "bad_request",
    };
    let mut fixed = error::json(
        status,
        &json!({"error": code, "error_description": description}),
    );
    for (name, value) in parts.headers.iter() {
        if name != axum::http::header::CONTENT_TYPE && name != axum::http::header::CONTENT_LENGTH {
            fixed.headers_mut().insert(name.clone(), value.clone());
        }
    }
    fixed
}

/// Rails route normalisation: collapse repeated slashes, drop a trailing slash and a `.json`
/// format suffix. Applied before routing.
pub fn normalize_uri(uri: &Uri) -> Option<Uri> {
    let path = uri.path();
    let needs =
        path.contains("//") || (path.len() > 1 && path.ends_with('/')) || path.ends_with(".json");
    if !needs {
        return None;
    }
    let mut clean = String::with_capacity(path.len());
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        clean.push('/');
        clean.push_str(seg);
    }
    if clean.is_empty() {
        clean.push('/');
    }
    if let Some(stripped) = clean.strip_suffix(".json") {
        if !stripped.is_empty() && !stripped.starts_with("/blobs/") {
            clean.truncate(stripped.len());
        }
    }
    let pq = match uri.query() {
        Some(q) => format!("{clean}?{q}"),
        None => clean,
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = pq.parse().ok();
    Uri::from_parts(parts).ok()
}

#[cfg(test)]
mod tests {
    use super::normalize_uri;

    #[test]
    fn collapses_slashes_like_rails() {
        let n = |s: &str| normalize_uri(&s.parse().unwrap()).map(|u| u.to_string());
        assert_eq!(
            n("//create?number=1").as_deref(),
            Some("//create?number=1").and(Some("/create?number=1"))
        );
        assert_eq!(n("/user/").as_deref(), Some("/user"));
        assert_eq!(n("/friends.json").as_deref(), Some("/friends"));
        assert_eq!(n("/user"), None);
        assert_eq!(n("/"), None);
    }
}
