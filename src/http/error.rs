//! The one place that turns failures into statuses and bodies (wire.md "Common rules", "Token
//! endpoint"). Handlers return `Result<_, ApiError>`; domain errors convert with `From`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::auth::{AuthError, TokenProblem};
use crate::db::DbError;
use crate::people::pictures::UploadError;
use crate::people::PeopleError;

const INVALID_CLIENT: &str = "Client authentication failed due to unknown client, no client authentication included, or unsupported authentication method.";
const INVALID_GRANT: &str = "The provided authorization grant is invalid, expired, revoked, does not match the redirection URI used in the authorization request, or was issued to another client.";
const UNSUPPORTED_GRANT: &str =
    "The authorization grant type is not supported by the authorization server.";
const INVALID_SCOPE: &str = "The requested scope is invalid, unknown, or malformed.";

#[derive(Debug)]
pub enum ApiError {
    /// `doorkeeper_authorize!` refusal: 401, empty body, `WWW-Authenticate`.
    Unauthorized(TokenProblem),
    /// Token endpoint errors with Doorkeeper's exact bodies.
    OAuth {
        status: StatusCode,
        error: &'static str,
        description: String,
    },
    /// `{"error":"snake_code","error_description":"Human sentence."}`
    Coded {
        status: StatusCode,
        error: &'static str,
        description: String,
    },
    RateLimited {
        retry_after: u64,
    },
    /// 503 with `Retry-After`: the server cannot serve this now (storage fault, overload).
    Unavailable {
        error: &'static str,
        description: String,
    },
    /// A 422 (or other) whose body shape the contract fixes, e.g. `{"errors":{...}}`.
    Body {
        status: StatusCode,
        body: Value,
    },
    Internal(String),
}

impl ApiError {
    pub fn coded(status: StatusCode, error: &'static str, description: impl Into<String>) -> Self {
        ApiError::Coded {
            status,
            error,
            description: description.into(),
        }
    }

    pub fn bad_request(description: impl Into<String>) -> Self {
        Self::coded(StatusCode::BAD_REQUEST, "bad_request", description)
    }

    pub fn not_found(description: impl Into<String>) -> Self {
        Self::coded(StatusCode::NOT_FOUND, "not_found", description)
    }

    pub fn too_large(description: impl Into<String>) -> Self {
        Self::coded(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            description,
        )
    }

    /// The storage under the database cannot take this write (or read) right now.
    pub fn storage_unavailable() -> Self {
        ApiError::Unavailable {
            error: "storage_unavailable",
            description: "The server cannot store data right now. Try again later.".into(),
        }
    }

    pub fn unprocessable(body: Value) -> Self {
        ApiError::Body {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            body,
        }
    }
}

fn json_response(status: StatusCode, body: &impl serde::Serialize) -> Response {
    let mut res = (status, crate::wire::to_json(body)).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    res
}

pub fn json<T: serde::Serialize>(status: StatusCode, body: &T) -> Response {
    json_response(status, body)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Unauthorized(TokenProblem::Unavailable) => ApiError::Unavailable {
                error: "unavailable",
                description: "The database is not available.".into(),
            }
            .into_response(),
            ApiError::Unauthorized(problem) => {
                let description = match problem {
                    TokenProblem::Expired => "The access token expired",
                    TokenProblem::Revoked => "The access token was revoked",
                    _ => "The access token is invalid",
                };
                let value = format!(
                    "Bearer realm=\"Doorkeeper\", error=\"invalid_token\", error_description=\"{description}\""
                );
                let mut res = StatusCode::UNAUTHORIZED.into_response();
                let h = res.headers_mut();
                h.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_str(&value).expect("ASCII"),
                );
                h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                res
            }
            ApiError::OAuth {
                status,
                error,
                description,
            } => {
                let body = serde_json::json!({"error": error, "error_description": description});
                let mut res = json_response(status, &body);
                let value = format!(
                    "Bearer realm=\"Doorkeeper\", error=\"{error}\", error_description=\"{description}\""
                );
                let h = res.headers_mut();
                if let Ok(v) = HeaderValue::from_str(&value) {
                    h.insert(header::WWW_AUTHENTICATE, v);
                }
                h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                res
            }
            ApiError::Coded {
                status,
                error,
                description,
            } => json_response(
                status,
                &serde_json::json!({"error": error, "error_description": description}),
            ),
            ApiError::RateLimited { retry_after } => {
                let mut res = json_response(
                    StatusCode::TOO_MANY_REQUESTS,
                    &serde_json::json!({
                        "error": "rate_limited",
                        "error_description": format!("Too many requests. Try again in {retry_after} seconds.")
                    }),
                );
                res.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
                res
            }
            ApiError::Unavailable { error, description } => {
                let mut res = json_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &serde_json::json!({"error": error, "error_description": description}),
                );
                res.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
                res
            }
            ApiError::Body { status, body } => json_response(status, &body),
            ApiError::Internal(detail) => {
                log::error!("internal error: {detail}");
                json_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &serde_json::json!({"error": "internal_error", "error_description": "Something went wrong on the server."}),
                )
            }
        }
    }
}

/// What a 503 tells clients to wait before trying again.
pub const RETRY_AFTER_SECONDS: u64 = 30;

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        if e.is_storage_fault() {
            log::error!("storage fault: {e}");
            ApiError::storage_unavailable()
        } else {
            ApiError::Internal(e.to_string())
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        let oauth = |status, error, description: &str| ApiError::OAuth {
            status,
            error,
            description: description.into(),
        };
        match e {
            AuthError::InvalidNumber(rule) => {
                ApiError::coded(StatusCode::UNPROCESSABLE_ENTITY, "invalid_number", rule)
            }
            AuthError::RateLimited { retry_after } => ApiError::RateLimited { retry_after },
            AuthError::OtpDelivery(_) => ApiError::coded(
                StatusCode::BAD_GATEWAY,
                "otp_delivery_failed",
                "The code could not be delivered. Try again later.",
            ),
            AuthError::InvalidClient => {
                oauth(StatusCode::UNAUTHORIZED, "invalid_client", INVALID_CLIENT)
            }
            AuthError::InvalidGrant => {
                oauth(StatusCode::BAD_REQUEST, "invalid_grant", INVALID_GRANT)
            }
            AuthError::UnsupportedGrantType => oauth(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                UNSUPPORTED_GRANT,
            ),
            AuthError::InvalidScope => {
                oauth(StatusCode::BAD_REQUEST, "invalid_scope", INVALID_SCOPE)
            }
            AuthError::MissingParameter(name) => oauth(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                &format!("Missing required parameter: {name}."),
            ),
            AuthError::Banned => ApiError::coded(
                StatusCode::FORBIDDEN,
                "banned",
                "This number may not log in to this server.",
            ),
            AuthError::Db(e) => e.into(),
        }
    }
}

impl From<PeopleError> for ApiError {
    fn from(e: PeopleError) -> Self {
        match e {
            PeopleError::BadRequest(d) => ApiError::bad_request(d),
            PeopleError::Db(e) => e.into(),
        }
    }
}

impl From<UploadError> for ApiError {
    fn from(e: UploadError) -> Self {
        match e {
            UploadError::TooLarge(limit) => {
                ApiError::too_large(format!("The picture is larger than {limit} bytes."))
            }
            UploadError::NotAnImage(why) => {
                ApiError::unprocessable(serde_json::json!({"errors": [why]}))
            }
            UploadError::Io(e) if crate::db::health::io_is_storage_fault(&e) => {
                log::error!("picture storage: {e}");
                ApiError::storage_unavailable()
            }
            UploadError::Io(e) => ApiError::Internal(format!("picture storage: {e}")),
        }
    }
}
