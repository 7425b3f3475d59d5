//! Request parameters the Rails way (wire.md "Common rules"): query string, JSON, form and
//! multipart text fields merged into one JSON object, body fields winning; and the bearer-token
//! extractors built on it. Handlers read the merged object through a request struct of their
//! endpoint (`Params::into_request`), whose fields use the `field` readers below.

use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::error::ApiError;
use crate::auth::TokenProblem;
use crate::db::users::UserId;
use crate::state::AppState;

/// All parameters of a request as one object.
#[derive(Debug, Default)]
pub struct Params(pub Map<String, Value>);

impl Params {
    /// The parameters as an endpoint's request struct. Its fields read leniently (`field`), so
    /// a client's odd shapes become the endpoint's own errors, not a generic 400.
    pub fn into_request<T: DeserializeOwned>(self) -> Result<T, ApiError> {
        serde_json::from_value(Value::Object(self.0))
            .map_err(|e| ApiError::bad_request(format!("The parameters could not be read: {e}")))
    }
}

/// `deserialize_with` readers for request-struct fields: the wire's loose typing, read once.
pub mod field {
    use serde::{Deserialize, Deserializer};
    use serde_json::Value;

    /// A scalar as text (numbers and booleans too, as the iOS client sends some ids as
    /// numbers); an array, object or null counts as absent. Use with `#[serde(default)]`.
    pub fn text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        Ok(super::scalar_text(&Value::deserialize(d)?))
    }
}

pub fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Insert `key=value` with Rails bracket nesting: `user[first_name]`, `ids[]`.
fn insert_pair(map: &mut Map<String, Value>, key: &str, value: String) {
    match key.split_once('[') {
        Some((head, rest)) if !head.is_empty() && rest.ends_with(']') => {
            let inner = &rest[..rest.len() - 1];
            let slot = map.entry(head.to_string());
            if inner.is_empty() {
                let arr = slot.or_insert_with(|| Value::Array(Vec::new()));
                if let Value::Array(a) = arr {
                    a.push(Value::String(value));
                }
            } else {
                let obj = slot.or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(o) = obj {
                    o.insert(inner.to_string(), Value::String(value));
                }
            }
        }
        _ => {
            map.insert(key.to_string(), Value::String(value));
        }
    }
}

pub fn parse_query(query: Option<&str>, into: &mut Map<String, Value>) {
    if let Some(q) = query {
        for (k, v) in form_urlencoded::parse(q.as_bytes()) {
            insert_pair(into, &k, v.into_owned());
        }
    }
}

fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase()
}

async fn read_body(body: Body, limit: usize) -> Result<axum::body::Bytes, ApiError> {
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|e| body_error(&e, limit))
}

/// Over the limit: 413. Anything else (a malformed chunk, a body that stopped arriving) is the
/// client's broken request: 400.
pub fn body_error(e: &axum::Error, limit: usize) -> ApiError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return ApiError::too_large(format!("The request body is larger than {limit} bytes."));
        }
        source = err.source();
    }
    ApiError::bad_request(format!("The request body could not be read: {e}"))
}

impl Params {
    /// The merge itself, without server state: bodies up to `limit` bytes (the fuzz target
    /// `params` drives this).
    pub async fn from_request_limited(req: Request, limit: usize) -> Result<Self, ApiError> {
        let (parts, body) = req.into_parts();
        let mut map = Map::new();
        parse_query(parts.uri.query(), &mut map);
        let ctype = content_type(&parts.headers);
        if ctype.starts_with("multipart/form-data") {
            let boundary = multer::parse_boundary(&ctype)
                .map_err(|_| ApiError::bad_request("The multipart body has no boundary."))?;
            let stream = http_body_util::BodyStream::new(http_body_util::Limited::new(body, limit));
            let stream = futures_util::StreamExt::filter_map(stream, |frame| async move {
                match frame {
                    Ok(f) => f.into_data().ok().map(Ok::<_, std::io::Error>),
                    Err(e) => Some(Err(std::io::Error::other(e.to_string()))),
                }
            });
            let mut multipart = multer::Multipart::new(stream, boundary);
            while let Some(field) = multipart
                .next_field()
                .await
                .map_err(|e| ApiError::bad_request(format!("Malformed multipart body: {e}")))?
            {
                let name = field.name().unwrap_or("").to_string();
                if field.file_name().is_some() {
                    continue; // files are read by the upload handler itself
                }
                let text = field
                    .text()
                    .await
                    .map_err(|e| ApiError::bad_request(format!("Malformed multipart body: {e}")))?;
                insert_pair(&mut map, &name, text);
            }
            return Ok(Params(map));
        }
        let bytes = read_body(body, limit).await?;
        if bytes.iter().all(|b| b.is_ascii_whitespace()) {
            return Ok(Params(map));
        }
        if ctype.starts_with("application/x-www-form-urlencoded") {
            for (k, v) in form_urlencoded::parse(&bytes) {
                insert_pair(&mut map, &k, v.into_owned());
            }
        } else {
            // JSON is the default, as Rails parses JSON for `application/json` and clients often
            // omit the header on query-string requests with a JSON-looking body.
            match serde_json::from_slice::<Value>(&bytes) {
                Ok(Value::Object(body)) => map.extend(body),
                Ok(other) => {
                    map.insert("_json".into(), other);
                }
                Err(e) if ctype.contains("json") || ctype.is_empty() => {
                    return Err(ApiError::bad_request(format!(
                        "The JSON body could not be parsed: {e}"
                    )))
                }
                Err(_) => {}
            }
        }
        Ok(Params(map))
    }
}

impl FromRequest<AppState> for Params {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        Params::from_request_limited(req, state.config.limits.body_bytes).await
    }
}

/// The bearer token of a request: `Authorization: Bearer`, else `access_token`/`bearer_token`.
pub fn bearer_token(headers: &HeaderMap, params: &Map<String, Value>) -> Option<String> {
    let from_header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.split_at_checked(7)?;
            scheme
                .eq_ignore_ascii_case("bearer ")
                .then(|| rest.trim().to_string())
        })
        .filter(|t| !t.is_empty());
    from_header.or_else(|| {
        ["access_token", "bearer_token"]
            .iter()
            .find_map(|k| params.get(*k).and_then(scalar_text))
            .filter(|t| !t.is_empty())
    })
}

/// The user behind the request's bearer token, or Doorkeeper's 401.
async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    params: &Map<String, Value>,
) -> Result<UserId, ApiError> {
    let token =
        bearer_token(headers, params).ok_or(ApiError::Unauthorized(TokenProblem::Invalid))?;
    state
        .auth
        .authenticate(&token)
        .await
        .map_err(ApiError::Unauthorized)
}

/// An authenticated request with its parameters (token may also sit in the body).
pub struct Authed {
    pub user: UserId,
    pub params: Params,
}

impl FromRequest<AppState> for Authed {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let headers = req.headers().clone();
        let params = Params::from_request(req, state).await?;
        let user = authenticate(state, &headers, &params.0).await?;
        Ok(Authed { user, params })
    }
}

/// An authenticated request whose body the handler reads itself (uploads): token from the
/// header or the query string only.
pub struct AuthedUser(pub UserId);

impl FromRequestParts<AppState> for AuthedUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let mut query = Map::new();
        parse_query(parts.uri.query(), &mut query);
        Ok(AuthedUser(
            authenticate(state, &parts.headers, &query).await?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rails_bracket_keys_nest() {
        let mut m = Map::new();
        parse_query(
            Some("user[first_name]=Ada&user[last_name]=L&ids[]=1&ids[]=2&plain=x"),
            &mut m,
        );
        assert_eq!(m["user"]["first_name"], "Ada");
        assert_eq!(m["ids"], serde_json::json!(["1", "2"]));
        assert_eq!(m["plain"], "x");
    }

    #[test]
    fn bearer_from_header_then_params() {
        let mut h = HeaderMap::new();
        let mut p = Map::new();
        p.insert("access_token".into(), "q".into());
        assert_eq!(bearer_token(&h, &p).as_deref(), Some("q"));
        h.insert(header::AUTHORIZATION, "bearer abc".parse().unwrap());
        assert_eq!(bearer_token(&h, &p).as_deref(), Some("abc"));
    }
}
