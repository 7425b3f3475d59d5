//! `GET/PATCH/PUT /user`, `POST /user/addProfilePicture`, `POST /user/registerIOSDevice`,
//! `GET /blobs/<key>`.

use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};

use super::client_ip::Origin;
use super::error::{self, ApiError};
use super::params::{field, scalar_text, Authed, AuthedUser};
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

/// `PATCH/PUT /user`: names from `{"user":{...}}`, or top-level keys (Rails' JSON parameter
/// wrapping); a nested name wins over a top-level one.
#[derive(Deserialize)]
struct Update {
    /// `Some` whenever the key is there, whatever its shape (only an object holds names).
    #[serde(default, deserialize_with = "nested_names")]
    user: Option<Names>,
    #[serde(flatten)]
    top: Names,
}

#[derive(Default, Deserialize)]
struct Names {
    #[serde(default, deserialize_with = "name")]
    first_name: Name,
    #[serde(default, deserialize_with = "name")]
    last_name: Name,
}

/// One name parameter as sent.
#[derive(Default)]
enum Name {
    #[default]
    Absent,
    /// `null`: leave the name as it is, like an absent one, but a nested `null` still hides
    /// the top-level key.
    Null,
    Text(String),
    /// An array or object: the endpoint's 422.
    NotText,
}

fn name<'de, D: Deserializer<'de>>(d: D) -> Result<Name, D::Error> {
    let value = Value::deserialize(d)?;
    Ok(match (&value, scalar_text(&value)) {
        (Value::Null, _) => Name::Null,
        (_, Some(text)) => Name::Text(text),
        (_, None) => Name::NotText,
    })
}

fn nested_names<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Names>, D::Error> {
    Ok(Some(match Value::deserialize(d)? {
        Value::Object(map) => {
            serde_json::from_value(Value::Object(map)).map_err(serde::de::Error::custom)?
        }
        _ => Names::default(),
    }))
}

impl Update {
    /// Was any name parameter sent at all (else Rails' `params.require(:user)` 400)?
    fn names_sent(&self) -> bool {
        self.user.is_some()
            || !matches!(self.top.first_name, Name::Absent)
            || !matches!(self.top.last_name, Name::Absent)
    }

    /// The names to set (`None` = leave as it is), or the 422 of the first one not text.
    fn names(self) -> Result<(Option<String>, Option<String>), ApiError> {
        let nested = self.user.unwrap_or_default();
        let pick = |key: &str, nested: Name, top: Name| match nested {
            Name::Absent => resolve(key, top),
            given => resolve(key, given),
        };
        let first = pick("first_name", nested.first_name, self.top.first_name)?;
        let last = pick("last_name", nested.last_name, self.top.last_name)?;
        Ok((first, last))
    }
}

fn resolve(key: &str, name: Name) -> Result<Option<String>, ApiError> {
    match name {
        Name::Absent | Name::Null => Ok(None),
        Name::Text(s) => Ok(Some(s.trim().to_string())),
        Name::NotText => Err(ApiError::unprocessable(
            json!({"errors": {key: ["must be a string"]}}),
        )),
    }
}

pub async fn update(State(state): State<AppState>, req: Authed) -> Result<Response, ApiError> {
    let id = req.user;
    let update: Update = req.params.into_request()?;
    if !update.names_sent() {
        return Err(ApiError::bad_request(
            "param is missing or the value is empty: user",
        ));
    }
    let (first, last) = update.names()?;
    people::validate_names(first.as_deref(), last.as_deref())
        .map_err(|errors| ApiError::unprocessable(json!({ "errors": errors })))?;
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

/// `POST /user/registerIOSDevice`.
#[derive(Deserialize)]
struct RegisterDevice {
    #[serde(default, deserialize_with = "field::text")]
    device_token: Option<String>,
    /// The React client's spelling; `device_token` wins when both are sent.
    #[serde(default, rename = "deviceToken", deserialize_with = "field::text")]
    device_token_camel: Option<String>,
}

pub async fn register_device(
    State(state): State<AppState>,
    req: Authed,
) -> Result<Response, ApiError> {
    let id = req.user;
    let register: RegisterDevice = req.params.into_request()?;
    let token = register
        .device_token
        .or(register.device_token_camel)
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
