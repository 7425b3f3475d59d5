//! The request parameter merger (query + JSON / form / multipart text fields) on arbitrary
//! requests: it must answer parameters or a 4xx error in the JSON shape, never panic or 500.
//!
//! Input: one byte choosing the content type, then the query string and the body separated
//! by the first NUL byte.
#![no_main]

use axum::body::Body;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use hangin::http::params::Params;
use libfuzzer_sys::fuzz_target;

const BOUNDARY: &str = "XfuzzX";

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    let (query, body) = match rest.iter().position(|&b| b == 0) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let content_type = match kind % 6 {
        0 => String::new(),
        1 => "application/json".into(),
        2 => "application/x-www-form-urlencoded".into(),
        3 => format!("multipart/form-data; boundary={BOUNDARY}"),
        4 => "text/plain".into(),
        // The boundary parameter itself from the input.
        _ => format!(
            "multipart/form-data; boundary={}",
            String::from_utf8_lossy(query)
        ),
    };
    let Ok(query) = std::str::from_utf8(query) else {
        return;
    };
    let mut builder = Request::builder().method("POST");
    builder = builder.uri(format!("/x?{query}"));
    if !content_type.is_empty() {
        builder = builder.header("content-type", content_type);
    }
    // A URI or header hyper would have refused never reaches the merger.
    let Ok(req) = builder.body(Body::from(body.to_vec())) else {
        return;
    };
    match runtime().block_on(Params::from_request_limited(req, 64 << 10)) {
        Ok(params) => {
            let _ = serde_json::to_string(&params.0).expect("parameters serialize");
        }
        Err(e) => {
            let status = e.into_response().status();
            assert!(
                status == StatusCode::BAD_REQUEST || status == StatusCode::PAYLOAD_TOO_LARGE,
                "{status}"
            );
        }
    }
});
