//! Issue "Login": `/create`, the Doorkeeper-exact token endpoint and bearer authentication,
//! against the real binary over TCP. Codes are read from the `log` OTP driver's lines.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use reqwest::header::{HeaderMap, CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::Response;
use serde_json::{json, Value};

use common::{fresh_number, quiet_window, Server};

const INVALID_CLIENT: &str = "Client authentication failed due to unknown client, no client authentication included, or unsupported authentication method.";
const INVALID_GRANT: &str = "The provided authorization grant is invalid, expired, revoked, does not match the redirection URI used in the authorization request, or was issued to another client.";
const UNSUPPORTED_GRANT: &str =
    "The authorization grant type is not supported by the authorization server.";
const INVALID_SCOPE: &str = "The requested scope is invalid, unknown, or malformed.";
const JSON_TYPE: &str = "application/json; charset=utf-8";

fn header(h: &HeaderMap, name: impl reqwest::header::AsHeaderName) -> &str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Doorkeeper's error answer of the token endpoint, to the byte: status, JSON body, headers.
async fn assert_oauth_error(r: Response, status: u16, error: &str, description: &str) {
    assert_eq!(r.status().as_u16(), status, "status for {error}");
    let h = r.headers().clone();
    assert_eq!(header(&h, CONTENT_TYPE), JSON_TYPE);
    assert_eq!(header(&h, CACHE_CONTROL), "no-store");
    assert!(h.get("pragma").is_none(), "Doorkeeper 5.7 sends no Pragma");
    assert_eq!(
        header(&h, WWW_AUTHENTICATE),
        format!(r#"Bearer realm="Doorkeeper", error="{error}", error_description="{description}""#)
    );
    assert_eq!(
        r.text().await.unwrap(),
        format!(r#"{{"error":"{error}","error_description":"{description}"}}"#)
    );
}

async fn assert_invalid_grant(r: Response) {
    assert_oauth_error(r, 400, "invalid_grant", INVALID_GRANT).await;
}

/// `doorkeeper_authorize!`'s refusal: 401, empty body, the description in `WWW-Authenticate`.
async fn assert_unauthorized(r: Response, description: &str) {
    assert_eq!(r.status().as_u16(), 401);
    let h = r.headers().clone();
    assert_eq!(
        header(&h, WWW_AUTHENTICATE),
        format!(
            r#"Bearer realm="Doorkeeper", error="invalid_token", error_description="{description}""#
        )
    );
    assert_eq!(header(&h, CACHE_CONTROL), "no-store");
    assert_eq!(r.bytes().await.unwrap().len(), 0, "401 has an empty body");
}

/// Keys of a flat JSON object in the order the server wrote them.
fn key_order(text: &str, keys: &[&str]) -> Vec<usize> {
    keys.iter()
        .map(|k| {
            text.find(&format!("\"{k}\":"))
                .unwrap_or_else(|| panic!("{k} missing from {text}"))
        })
        .collect()
}

fn is_doorkeeper_token(t: &str) -> bool {
    t.len() == 43
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A 200 token answer: headers, key order, field shapes. Returns the body.
async fn assert_token_success(r: Response, expires_in: i64, with_uuid: bool) -> Value {
    assert_eq!(r.status().as_u16(), 200);
    let h = r.headers().clone();
    assert_eq!(header(&h, CONTENT_TYPE), JSON_TYPE);
    assert_eq!(header(&h, CACHE_CONTROL), "no-store");
    assert!(h.get("pragma").is_none());
    let text = r.text().await.unwrap();
    let mut keys = vec![
        "access_token",
        "token_type",
        "expires_in",
        "refresh_token",
        "created_at",
    ];
    if with_uuid {
        keys.push("uuid");
    }
    let order = key_order(&text, &keys);
    assert!(order.windows(2).all(|w| w[0] < w[1]), "key order: {text}");
    let t: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(t.as_object().unwrap().len(), keys.len(), "{text}");
    assert_eq!(t["token_type"], "Bearer");
    assert_eq!(t["expires_in"], expires_in);
    assert!((t["created_at"].as_i64().unwrap() - unix_now()).abs() < 10);
    let access = t["access_token"].as_str().unwrap();
    let refresh = t["refresh_token"].as_str().unwrap();
    assert!(is_doorkeeper_token(access) && is_doorkeeper_token(refresh));
    assert_ne!(access, refresh);
    if with_uuid {
        let uuid = t["uuid"].as_str().unwrap();
        assert_eq!(uuid.len(), 36);
        assert_eq!(&uuid[14..15], "4", "uuid v4: {uuid}");
    }
    t
}

async fn code_for(s: &Server, number: &str) -> String {
    let r = s.request_code(number).await;
    assert_eq!(r.status().as_u16(), 204);
    assert_eq!(r.bytes().await.unwrap().len(), 0);
    s.otp(number).await
}

fn wrong_code(code: &str) -> &'static str {
    if code == "000000" {
        "111111"
    } else {
        "000000"
    }
}

/// The seed README's flow with both grants in the query string and an empty body, as both real
/// clients send them; Doorkeeper's `previous_refresh_token` rule for the old pair.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_flow_create_token_refresh() {
    let s = Server::start(&[]);
    let number = fresh_number();
    let code = code_for(&s, &number).await;
    assert_eq!(code.len(), 6);

    let first = assert_token_success(s.password_grant(&number, &code).await, 7200, true).await;
    let access1 = first["access_token"].as_str().unwrap();
    let refresh1 = first["refresh_token"].as_str().unwrap();
    let me: Value = s.get_user(access1).await.json().await.unwrap();
    assert_eq!(me["uuid"], first["uuid"]);
    assert_eq!(me["number"], number.as_str());

    let second = assert_token_success(s.refresh_grant(refresh1).await, 7200, false).await;
    let access2 = second["access_token"].as_str().unwrap();
    assert_ne!(access2, access1);
    // The old refresh token is spent at once, before the new pair is ever used.
    assert_invalid_grant(s.refresh_grant(refresh1).await).await;
    // The old access token lives on until the new one is first presented...
    assert_eq!(s.get_user(access1).await.status(), 200);
    assert_eq!(s.get_user(access2).await.status(), 200);
    // ...which retires it.
    assert_unauthorized(s.get_user(access1).await, "The access token was revoked").await;
    assert_eq!(s.get_user(access2).await.status(), 200);

    // The new refresh token rotates again, once.
    let refresh2 = second["refresh_token"].as_str().unwrap();
    let third = assert_token_success(s.refresh_grant(refresh2).await, 7200, false).await;
    assert_eq!(
        s.get_user(third["access_token"].as_str().unwrap())
            .await
            .status(),
        200
    );
    assert_invalid_grant(s.refresh_grant(refresh2).await).await;
}

/// Every failure of `/oauth/token` with its exact status, body and headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_endpoint_errors_are_doorkeeper_exact() {
    let s = Server::start(&[]);
    let number = fresh_number();
    let code = code_for(&s, &number).await;
    let id = s.client_id.clone();
    let secret = s.client_secret.clone();
    let post = |params: Vec<(&'static str, String)>| {
        let req = s.http().post(s.url("/oauth/token")).query(&params);
        async move { req.send().await.unwrap() }
    };
    let password = |id: &str, secret: &str| {
        vec![
            ("client_id", id.to_string()),
            ("client_secret", secret.to_string()),
            ("grant_type", "password".into()),
            ("number", number.clone()),
            ("code", code.clone()),
        ]
    };

    // Client authentication comes first: the right code does not help a wrong client.
    assert_oauth_error(
        post(password("nope", &secret)).await,
        401,
        "invalid_client",
        INVALID_CLIENT,
    )
    .await;
    assert_oauth_error(
        post(password(&id, "wrong")).await,
        401,
        "invalid_client",
        INVALID_CLIENT,
    )
    .await;
    let mut anonymous = password(&id, &secret);
    anonymous.retain(|(k, _)| !k.starts_with("client_"));
    assert_oauth_error(post(anonymous).await, 401, "invalid_client", INVALID_CLIENT).await;

    assert_oauth_error(
        post(vec![
            ("client_id", id.clone()),
            ("client_secret", secret.clone()),
        ])
        .await,
        400,
        "invalid_request",
        "Missing required parameter: grant_type.",
    )
    .await;
    for grant in ["client_credentials", "authorization_code", "foo"] {
        let mut p = password(&id, &secret);
        p[2].1 = grant.into();
        assert_oauth_error(
            post(p).await,
            400,
            "unsupported_grant_type",
            UNSUPPORTED_GRANT,
        )
        .await;
    }
    let mut no_code = password(&id, &secret);
    no_code.pop();
    assert_oauth_error(
        post(no_code).await,
        400,
        "invalid_request",
        "Missing required parameter: code.",
    )
    .await;
    assert_oauth_error(
        post(vec![
            ("client_id", id.clone()),
            ("client_secret", secret.clone()),
            ("grant_type", "refresh_token".into()),
        ])
        .await,
        400,
        "invalid_request",
        "Missing required parameter: refresh_token.",
    )
    .await;
    let mut scoped = password(&id, &secret);
    scoped.push(("scope", "admin".into()));
    assert_oauth_error(post(scoped).await, 400, "invalid_scope", INVALID_SCOPE).await;

    // Wrong code, a number that never asked for one, a refresh token nobody issued.
    assert_invalid_grant(s.password_grant(&number, wrong_code(&code)).await).await;
    assert_invalid_grant(s.password_grant(&fresh_number(), "123456").await).await;
    assert_invalid_grant(s.refresh_grant("not-a-refresh-token").await).await;
    // Each failed verification is one warn line with number and address (fail2ban).
    let warned = s
        .wait_log_lines(&format!("failed OTP verification for number {number}"), 1)
        .await;
    assert!(warned[0].contains("127.0.0.1"), "{warned:?}");

    // None of the failures above spent the code beyond its attempts: it still logs in, once.
    let ok = assert_token_success(s.password_grant(&number, &code).await, 7200, true).await;
    assert_invalid_grant(s.password_grant(&number, &code).await).await;

    // A refresh token presented twice.
    let refresh = ok["refresh_token"].as_str().unwrap();
    assert_eq!(s.refresh_grant(refresh).await.status(), 200);
    assert_invalid_grant(s.refresh_grant(refresh).await).await;
}

/// Five wrong guesses kill the code: the right one on the 6th attempt is refused too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixth_attempt_with_the_right_code_fails() {
    let s = Server::start(&[]);
    let number = fresh_number();
    let code = code_for(&s, &number).await;
    for _ in 0..5 {
        assert_invalid_grant(s.password_grant(&number, wrong_code(&code)).await).await;
    }
    assert_invalid_grant(s.password_grant(&number, &code).await).await;
    // A new code for the number works again: the refusal was the dead code, not the number.
    assert_eq!(s.request_code(&number).await.status(), 204);
    let fresh = s.nth_otp(&number, 2).await;
    assert_eq!(s.password_grant(&number, &fresh).await.status(), 200);
}

/// Parameters from the query string, JSON, form or multipart; client credentials as
/// parameters or HTTP Basic; body fields win over query fields.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameter_styles_and_basic_client_auth() {
    let s = Server::start(&[]);
    let http = s.http();
    let token_url = s.url("/oauth/token");

    // /create: number in the query (above), a JSON body, a form body, and the web client's
    // doubled slash.
    let (n_json, n_form, n_slash) = (fresh_number(), fresh_number(), fresh_number());
    let r = http
        .post(s.url("/create"))
        .json(&json!({ "number": n_json }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = http
        .post(s.url("/create"))
        .form(&[("number", &n_form)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = http
        .post(s.url("//create"))
        .query(&[("number", &n_slash)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);

    // Password grant as JSON with the client in the body.
    let code = s.otp(&n_json).await;
    let r = http
        .post(&token_url)
        .json(
            &json!({"grant_type": "password", "number": n_json, "code": code,
                      "client_id": s.client_id, "client_secret": s.client_secret}),
        )
        .send()
        .await
        .unwrap();
    let t = assert_token_success(r, 7200, true).await;

    // Refresh grant as a form with HTTP Basic client authentication.
    let r = http
        .post(&token_url)
        .basic_auth(&s.client_id, Some(&s.client_secret))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", t["refresh_token"].as_str().unwrap()),
        ])
        .send()
        .await
        .unwrap();
    assert_token_success(r, 7200, false).await;

    // HTTP Basic with a wrong secret is a wrong client, whatever the parameters say.
    let code = s.otp(&n_form).await;
    let r = http
        .post(&token_url)
        .basic_auth(&s.client_id, Some("wrong"))
        .query(&[
            ("grant_type", "password"),
            ("number", &n_form),
            ("code", &code),
        ])
        .send()
        .await
        .unwrap();
    assert_oauth_error(r, 401, "invalid_client", INVALID_CLIENT).await;

    // Password grant as multipart, Basic auth, a formatted number: body fields win over a
    // bogus grant_type in the query.
    let formatted = format!("({}) {}-{}", &n_form[..3], &n_form[3..6], &n_form[6..]);
    let form = reqwest::multipart::Form::new()
        .text("grant_type", "password")
        .text("number", formatted)
        .text("code", code);
    let r = http
        .post(&token_url)
        .basic_auth(&s.client_id, Some(&s.client_secret))
        .query(&[("grant_type", "client_credentials")])
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_token_success(r, 7200, true).await;

    // Query-only password grant with an empty body through the doubled slash.
    let code = s.otp(&n_slash).await;
    let r = http
        .post(s.url("//oauth/token"))
        .query(&[
            ("grant_type", "password"),
            ("number", n_slash.as_str()),
            ("code", code.as_str()),
            ("client_id", s.client_id.as_str()),
            ("client_secret", s.client_secret.as_str()),
        ])
        .send()
        .await
        .unwrap();
    let t = assert_token_success(r, 7200, true).await;
    let access = t["access_token"].as_str().unwrap();

    // Bearer token from the header (any case of the scheme), the query, a JSON or form body.
    for auth in [format!("Bearer {access}"), format!("bearer {access}")] {
        let r = http
            .get(s.url("/user"))
            .header("Authorization", auth)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let r = http
        .get(s.url("/user/"))
        .query(&[("access_token", access)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http
        .patch(s.url("/user"))
        .json(&json!({"access_token": access, "user": {"first_name": "Jay"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http
        .patch(s.url("/user"))
        .form(&[("access_token", access), ("user[last_name]", "Son")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let me: Value = s.get_user(access).await.json().await.unwrap();
    assert_eq!(
        (me["first_name"].clone(), me["last_name"].clone()),
        (json!("Jay"), json!("Son"))
    );

    // No token, an unknown one, an empty header.
    let r = http.get(s.url("/user")).send().await.unwrap();
    assert_unauthorized(r, "The access token is invalid").await;
    assert_unauthorized(
        s.get_user("no-such-token").await,
        "The access token is invalid",
    )
    .await;
    let r = http
        .get(s.url("/friends"))
        .header("Authorization", "Bearer ")
        .send()
        .await
        .unwrap();
    assert_unauthorized(r, "The access token is invalid").await;
}

fn retry_after(r: &Response) -> u64 {
    header(r.headers(), RETRY_AFTER)
        .parse()
        .expect("Retry-After in seconds")
}

async fn assert_rate_limited(r: Response, max_wait: u64) {
    assert_eq!(r.status().as_u16(), 429);
    let wait = retry_after(&r);
    assert!(wait > 0 && wait <= max_wait, "Retry-After {wait}");
    assert_eq!(header(r.headers(), CONTENT_TYPE), JSON_TYPE);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"error": "rate_limited",
               "error_description": format!("Too many requests. Try again in {wait} seconds.")})
    );
}

/// Per number: 5 codes per 15 minutes and 30 s between sends; per address: `/create` calls per
/// hour. Each over-limit answer is 429 with `Retry-After`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_is_rate_limited_per_number_and_per_address() {
    let s = Server::start(&[]);
    let number = fresh_number();
    for _ in 0..5 {
        assert_eq!(s.request_code(&number).await.status(), 204);
    }
    let sixth = s.request_code(&number).await;
    let wait = retry_after(&sixth);
    assert!(wait > 890, "the window is 900 s: {wait}");
    assert_rate_limited(sixth, 900).await;
    // The five codes were sent, the sixth was not; another number is not affected.
    s.nth_otp(&number, 5).await;
    quiet_window().await;
    assert_eq!(s.log_lines(&format!("OTP for {number}: ")).len(), 5);
    assert_eq!(s.request_code(&fresh_number()).await.status(), 204);

    let s = Server::start(&[
        ("HANGIN_AUTH__OTP_RESEND_SECONDS", "30"),
        ("HANGIN_AUTH__CREATE_PER_ADDRESS_PER_HOUR", "3"),
    ]);
    let number = fresh_number();
    assert_eq!(s.request_code(&number).await.status(), 204);
    assert_rate_limited(s.request_code(&number).await, 30).await;
    assert_eq!(s.request_code(&fresh_number()).await.status(), 204);
    // Third and last /create this address may make this hour (the refused one counted too).
    let over = s.request_code(&fresh_number()).await;
    let wait = retry_after(&over);
    assert!(wait > 3590, "the address window is an hour: {wait}");
    assert_rate_limited(over, 3600).await;
    // A malformed number is still a 422, not a 429.
    let r = s.request_code("12345").await;
    assert_eq!(r.status(), 422);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"error": "invalid_number", "error_description": "Number must be a 10 digit US number."})
    );
}

fn count(haystack: &[u8], needle: &str) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle.as_bytes())
        .count()
}

/// Bytes of the database and its WAL and shared-memory files, whichever exist.
fn database_bytes(s: &Server) -> Vec<(String, Vec<u8>)> {
    ["", "-wal", "-shm"]
        .iter()
        .filter_map(|suffix| {
            let path = format!("{}{suffix}", s.db_path().display());
            std::fs::read(&path).ok().map(|b| (path, b))
        })
        .collect()
}

/// Tokens, refresh tokens, codes and the client secret are stored only as hashes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_holds_no_plaintext_token_or_code() {
    let mut s = Server::start(&[]);
    let number = fresh_number();
    let code = code_for(&s, &number).await;
    let t = s
        .password_grant(&number, &code)
        .await
        .json::<Value>()
        .await
        .unwrap();
    let t2 = s
        .refresh_grant(t["refresh_token"].as_str().unwrap())
        .await
        .json::<Value>()
        .await
        .unwrap();
    // A second code that stays unused in the table.
    assert_eq!(s.request_code(&number).await.status(), 204);
    let pending = s.nth_otp(&number, 2).await;
    let mut secrets: Vec<String> = [&t, &t2]
        .iter()
        .flat_map(|t| [&t["access_token"], &t["refresh_token"]])
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    secrets.push(s.client_secret.clone());
    // A 6-digit code could collide with stored digits (the number, a uuid) by chance alone.
    let stored_plain = [number.as_str(), t["uuid"].as_str().unwrap()];
    for c in [&code, &pending] {
        if !stored_plain.iter().any(|p| p.contains(c.as_str())) {
            secrets.push(c.to_string());
        }
    }

    let check = |files: Vec<(String, Vec<u8>)>| {
        assert!(!files.is_empty());
        // The files do hold the data: the number is there in plain text.
        assert!(files.iter().any(|(_, b)| count(b, &number) > 0));
        for (path, bytes) in &files {
            for secret in &secrets {
                assert_eq!(count(bytes, secret), 0, "{secret} found in {path}");
            }
        }
    };
    check(database_bytes(&s));
    // After a clean shutdown the WAL is checkpointed into the main file: still nothing.
    assert!(s.terminate().success());
    check(database_bytes(&s));
}

/// First start with no OAuth client: the server creates one, writes it to a 0600 file and says
/// where; the written credentials log in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_start_writes_client_credentials_0600() {
    use std::os::unix::fs::PermissionsExt;
    let mut s = Server::start_first_time(&[]);
    let path = s.credentials_path();
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let text = std::fs::read_to_string(&path).unwrap();
    let creds: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(creds["name"], "default");
    assert!(is_doorkeeper_token(creds["client_id"].as_str().unwrap()));
    assert!(is_doorkeeper_token(
        creds["client_secret"].as_str().unwrap()
    ));
    let said = s.log_lines(&path.display().to_string());
    assert_eq!(said.len(), 1, "{said:?}");
    s.sign_up("First", "Start").await;

    // A restart finds the client and leaves the file alone.
    assert!(s.terminate().success());
    s.restart_same_port();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    assert!(s.log_lines("created OAuth client").is_empty());
    s.sign_up("Second", "Start").await;
}

/// Sign-up links the new user into every address book already holding the number, before the
/// token answer is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_up_links_contacts_from_existing_address_books() {
    let s = Server::start(&[]);
    let ann = s.sign_up("Ann", "Able").await;
    let bob = s.sign_up("Bob", "Baker").await;
    let cat = s.sign_up("Cat", "Cole").await;
    let newcomer = fresh_number();
    let formatted = format!(
        "+1 ({}) {}-{}",
        &newcomer[..3],
        &newcomer[3..6],
        &newcomer[6..]
    );
    for owner in [&ann, &bob] {
        let r = s
            .http()
            .post(s.url("/friends"))
            .bearer_auth(&owner.token)
            .json(&json!({"friends": [{"first_name": "New", "last_name": "Comer", "number": formatted}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let listing = |token: String| {
        let req = s.http().get(s.url("/friends")).bearer_auth(token);
        async move { req.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let before = listing(ann.token.clone()).await;
    assert_eq!(
        before,
        json!({"friends": [{"first_name": "New", "last_name": "Comer", "number": newcomer}], "contacts": []})
    );

    let code = code_for(&s, &newcomer).await;
    let t = s
        .password_grant(&newcomer, &code)
        .await
        .json::<Value>()
        .await
        .unwrap();
    let contact = json!({"uuid": t["uuid"], "first_name": "", "last_name": "",
                         "number": newcomer, "profile_pic": null});
    for owner in [&ann, &bob] {
        assert_eq!(
            listing(owner.token.clone()).await,
            json!({"friends": [], "contacts": [contact]})
        );
    }
    assert_eq!(
        listing(cat.token.clone()).await,
        json!({"friends": [], "contacts": []})
    );
    // The link is one-way until the newcomer uploads numbers too.
    assert_eq!(
        listing(t["access_token"].as_str().unwrap().to_string()).await,
        json!({"friends": [], "contacts": []})
    );
}
