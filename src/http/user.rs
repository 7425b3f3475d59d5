//! `GET/PATCH/PUT /user`, `POST /user/addProfilePicture`, `POST /user/registerIOSDevice`,
//! `GET /blobs/<key>`.

use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::client_ip::Origin;
use super::error::{self, ApiError};
use super::params::{scalar_text, Authed, AuthedUser};
use crate::db::{self, users::UserId};
use crate::people::{self, pictures};
use crate::state::AppState;
use crate::wire;

async fn load_user(state: &AppState, id: UserId) -> Result<db::users::User, ApiError> {
    people::profile(&state.db, id)
        .await?
        .ok_or_else(|| ApiError::not_found("The user no longer exists."))
}

pub async fn show(
    State(state): State<AppState>,
    origin: Origin,
    req: Authed,
) -> Result<Response, ApiError> {
    let user = load_user(&state, req.user).await?;
    Ok(error::json(
        StatusCode::OK,
        &wire::profile(&user, &origin.base_url),
    ))
}

/// Names from `{"user":{...}}`, or top-level keys (Rails' JSON parameter wrapping).
fn name_param(
    params: &serde_json::Map<String, Value>,
    key: &str,
) -> Result<Option<String>, ApiError> {
    let nested = params.get("user").and_then(|u| u.get(key));
    match nested.or_else(|| params.get(key)) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => scalar_text(v)
            .map(|s| Some(s.trim().to_string()))
            .ok_or_else(|| ApiError::unprocessable(json!({"errors": {key: ["must be a string"]}}))),
    }
}

pub async fn update(State(state): State<AppState>, req: Authed) -> Result<Response, ApiError> {
    let p = &req.params.0;
    if !p.contains_key("user") && !p.contains_key("first_name") && !p.contains_key("last_name") {
        return Err(ApiError::bad_request(
            "param is missing or the value is empty: user",
        ));
    }
    let first = name_param(p, "first_name")?;
    let last = name_param(p, "last_name")?;
    people::validate_names(first.as_deref(), last.as_deref())
        .map_err(|errors| ApiError::unprocessable(json!({ "errors": errors })))?;
    let id = req.user;
    let user = people::rename(&state.db, id, first, last)
        .await?
        .ok_or_else(|| ApiError::not_found("The user no longer exists."))?;
    state.engine.people_changed(vec![id]).await?;
    let body = wire::Names {
        first_name: user.first_name,
        last_name: user.last_name,
        profile_pic: None,
    };
    Ok(error::json(StatusCode::OK, &body))
}

pub async fn register_device(
    State(state): State<AppState>,
    req: Authed,
) -> Result<Response, ApiError> {
    let token = ["device_token", "deviceToken"]
        .iter()
        .find_map(|k| req.params.text(k))
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty());
    let Some(token) = token else {
        return Err(ApiError::unprocessable(
            json!({"error": "missing deviceToken"}),
        ));
    };
    if token.len() > 512 || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::unprocessable(
            json!({"error": "invalid deviceToken"}),
        ));
    }
    let id = req.user;
    people::register_device(&state.db, id, token).await?;
    Ok(StatusCode::OK.into_response())
}

pub async fn add_picture(
    State(state): State<AppState>,
    origin: Origin,
    AuthedUser(id): AuthedUser,
    request: Request,
) -> Result<Response, ApiError> {
    let is_multipart = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("multipart/form-data"));
    if !is_multipart {
        return Err(ApiError::unprocessable(
            json!({"errors": ["profile_picture must be a multipart file upload"]}),
        ));
    }
    let mut multipart = Multipart::from_request(request, &state)
        .await
        .map_err(|e| ApiError::bad_request(format!("Malformed multipart body: {e}")))?;
    let limit = state.config.limits.picture_bytes;
    let dir = state.config.pictures_dir();
    let mut stored = None;
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                return Err(ApiError::too_large(format!(
                    "The picture is larger than {limit} bytes."
                )))
            }
            Err(e) => {
                return Err(ApiError::bad_request(format!(
                    "Malformed multipart body: {e}"
                )))
            }
        };
        let name = field.name().unwrap_or("");
        if name != "user[profile_picture]" && name != "profile_picture" {
            continue;
        }
        if field.file_name().is_none() {
            // The web client sends the string "null" when no file was chosen.
            return Err(ApiError::unprocessable(
                json!({"errors": ["profile_picture must be a file"]}),
            ));
        }
        let mut upload = pictures::Upload::begin(&dir, limit).await?;
        let mut field = field;
        loop {
            match field.chunk().await {
                Ok(Some(chunk)) => upload.push(&chunk).await?,
                Ok(None) => break,
                Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                    return Err(ApiError::too_large(format!(
                        "The picture is larger than {limit} bytes."
                    )))
                }
                Err(e) => return Err(ApiError::bad_request(format!("Upload interrupted: {e}"))),
            }
        }
        stored = Some(upload.finish().await?);
        break;
    }
    let blob = stored.ok_or_else(|| {
        ApiError::unprocessable(json!({"errors": ["profile_picture is missing"]}))
    })?;
    pictures::set_picture(&state.db, &dir, id, blob).await?;
    state.engine.people_changed(vec![id]).await?;
    let user = load_user(&state, id).await?;
    let body = wire::Names {
        profile_pic: user
            .picture_key
            .as_deref()
            .map(|k| wire::picture_url(&origin.base_url, k)),
        first_name: user.first_name,
        last_name: user.last_name,
    };
    Ok(error::json(StatusCode::OK, &body))
}

pub async fn blob(
    State(state): State<AppState>,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let not_found = || ApiError::not_found("No such picture.");
    let (blob, path) = pictures::open(&state.db, &state.config.pictures_dir(), key)
        .await?
        .ok_or_else(not_found)?;
    let etag = format!("\"{}\"", blob.sha256);
    let cache = HeaderValue::from_static("public, max-age=31536000, immutable");
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
    {
        let mut res = StatusCode::NOT_MODIFIED.into_response();
        res.headers_mut()
            .insert(header::ETAG, HeaderValue::from_str(&etag).expect("hex"));
        res.headers_mut().insert(header::CACHE_CONTROL, cache);
        return Ok(res);
    }
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|_| not_found())?;
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(file));
    let mut res = (StatusCode::OK, body).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&blob.content_type).expect("ASCII"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(blob.byte_size));
    h.insert(header::ETAG, HeaderValue::from_str(&etag).expect("hex"));
    h.insert(header::CACHE_CONTROL, cache);
    Ok(res)
}
