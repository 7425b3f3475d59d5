//! Phone numbers under `[numbers]` (docs/behaviour.md "Numbers", wire.md `POST /friends`): real
//! address books answer 201 with the rows saved and a `Hangin-Skipped` count; numbers are stored in
//! E.164 and shown in the default region's national form; another default region logs in its own
//! numbers, and `invalid_number` says which; CORS lets a browser read `Hangin-Skipped`; the
//! migration moves old 10-digit rows to E.164. The real binary over TCP.

mod common;

use reqwest::Response;
use serde_json::{json, Value};

use common::{fresh_number, friend_entry as entry, get_json, post_friends, run_cli, Server, User};

fn skipped(r: &Response) -> Option<&str> {
    r.headers()
        .get("hangin-skipped")
        .and_then(|v| v.to_str().ok())
}

/// A phone's address book as the iOS app sends it: US numbers in every format, foreign
/// numbers, entries without a last name or any name, junk. 201 with exactly the saved rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_address_book_answers_201_with_the_saved_rows() {
    let s = Server::start(&[]);
    let owner = s.sign_up("Olive", "Owner").await;
    let (us1, us2, nameless) = (fresh_number(), fresh_number(), fresh_number());
    let dotted = format!("+1 ({}) {}.{}", &us2[..3], &us2[3..6], &us2[6..]);
    let book = json!({"friends": [
        entry("Ann", "Us", &us1),
        entry("Ben", "Formatted", &dotted),
        {"first_name": "Cy", "number": nameless},
        entry("Dov", "Israel", "+972 50-234-5678"),
        entry("Eve", "London", "+44 20 7946 0958"),
        entry("Bad", "Short", "12345"),
        entry("Bad", "Letters", "1-800-FLOWERS"),
        entry("Bad", "Empty", ""),
        {"first_name": "No", "last_name": "Number"},
        "not an object",
        {"number": "+972 3-555-1234"},
        entry(&"x".repeat(101), "Long", "+1 555 000 0000"),
    ]});
    let r = post_friends(&s, &owner, book).await;
    assert_eq!(r.status(), 201);
    assert_eq!(skipped(&r), Some("5"));
    let rows: Vec<Value> = r.json().await.unwrap();
    let shown: Vec<(&str, &str, &str)> = rows
        .iter()
        .map(|r| {
            (
                r["first_name"].as_str().unwrap(),
                r["last_name"].as_str().unwrap(),
                r["number"].as_str().unwrap(),
            )
        })
        .collect();
    let long = "x".repeat(100);
    assert_eq!(
        shown,
        [
            ("Ann", "Us", us1.as_str()),
            ("Ben", "Formatted", us2.as_str()),
            ("Cy", "", nameless.as_str()),
            ("Dov", "Israel", "+972502345678"),
            ("Eve", "London", "+442079460958"),
            ("", "", "+97235551234"),
            (long.as_str(), "Long", "5550000000"),
        ]
    );
    let listed = get_json(&s, &owner, "/friends").await;
    assert_eq!(listed["friends"].as_array().unwrap().len(), 7, "{listed}");
    assert_eq!(listed["friends"][2], entry("Cy", "", &nameless));

    // Nothing parseable at all is still a 201 (an empty list), and a clean book has no skips.
    let r = post_friends(&s, &owner, json!({"friends": [entry("Z", "Z", "0")]})).await;
    assert_eq!((r.status().as_u16(), skipped(&r)), (201, Some("1")));
    assert_eq!(r.json::<Value>().await.unwrap(), json!([]));
    let r = post_friends(&s, &owner, json!({"friends": [entry("A", "Us", &us1)]})).await;
    assert_eq!((r.status().as_u16(), skipped(&r)), (201, Some("0")));
}

/// Stored in E.164, so an address-book entry links to its user whatever form either side typed:
/// a US user uploaded as `+1 (555) …`, and an Israeli user (logins allowed for IL too) uploaded
/// as `011 972 …` and as `+972-…`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contacts_link_across_number_formats() {
    let s = Server::start(&[("HANGIN_NUMBERS__ALLOWED_REGIONS", r#"["US", "IL"]"#)]);
    let us = s.sign_up("Uma", "States").await;
    let il = s.sign_up_as("+972502345678", "Ilan", "Levi").await;
    let owner = s.sign_up("Olive", "Owner").await;
    let us_plus = format!(
        "+1 ({}) {}-{}",
        &us.number[..3],
        &us.number[3..6],
        &us.number[6..]
    );
    let r = post_friends(
        &s,
        &owner,
        json!({"friends": [entry("U", "S", &us_plus), entry("I", "L", "011 972 50 234 5678")]}),
    )
    .await;
    assert_eq!((r.status().as_u16(), skipped(&r)), (201, Some("0")));
    let listed = get_json(&s, &owner, "/friends").await;
    let mut uuids: Vec<&str> = listed["contacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["uuid"].as_str().unwrap())
        .collect();
    uuids.sort();
    let mut want = vec![us.uuid.as_str(), il.uuid.as_str()];
    want.sort();
    assert_eq!(uuids, want, "{listed}");
    assert_eq!(listed["friends"], json!([]));
    // The US contact shows its 10 digits, the Israeli one its E.164 (US is the default region).
    let numbers: Vec<&str> = listed["contacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["number"].as_str().unwrap())
        .collect();
    assert!(numbers.contains(&us.number.as_str()), "{listed}");
    assert!(numbers.contains(&"+972502345678"), "{listed}");
    assert_eq!(get_json(&s, &il, "/user").await["number"], "+972502345678");
}

/// `default_region = "IL"`: Israeli numbers log in in any local or international form and show
/// as their national significant number; US numbers are foreign (E.164) and may not log in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_default_region_logs_in_its_numbers() {
    let s = Server::start(&[("HANGIN_NUMBERS__DEFAULT_REGION", "IL")]);
    let r = s.request_code("+972 50-234-5678").await;
    assert_eq!(r.status(), 204, "{}", s.log_text());
    // The code is logged (and handed to drivers) under the number as the wire shows it.
    let code = s.otp("502345678").await;
    let r = s.password_grant("050-234-5678", &code).await;
    assert_eq!(r.status(), 200);
    let t: Value = r.json().await.unwrap();
    let me = User {
        number: "502345678".into(),
        uuid: t["uuid"].as_str().unwrap().into(),
        token: t["access_token"].as_str().unwrap().into(),
        refresh: t["refresh_token"].as_str().unwrap().into(),
        first: String::new(),
        last: String::new(),
    };
    assert_eq!(get_json(&s, &me, "/user").await["number"], "502345678");

    let us = fresh_number();
    let r = s.request_code(&us).await;
    assert_eq!(r.status(), 422);
    let r = s.request_code(&format!("+1{us}")).await;
    assert_eq!(r.status(), 422);

    let r = post_friends(
        &s,
        &me,
        json!({"friends": [entry("Local", "Form", "03-555-1234"), entry("Us", "Friend", &format!("+1 {us}")),
                           entry("Bare", "Us", &us)]}),
    )
    .await;
    // A bare 10-digit US number means nothing under IL: skipped.
    assert_eq!((r.status().as_u16(), skipped(&r)), (201, Some("1")));
    let rows: Vec<Value> = r.json().await.unwrap();
    let numbers: Vec<&str> = rows.iter().map(|r| r["number"].as_str().unwrap()).collect();
    assert_eq!(numbers, ["35551234", format!("+1{us}").as_str()]);
}

/// The `invalid_number` sentence says what this server accepts: the original words under the
/// US defaults, the allowed regions with examples under another configuration (it said "10
/// digit US number" whatever the region before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_number_names_the_configured_regions() {
    async fn refused(s: &Server, number: &str) -> Value {
        let r = s.request_code(number).await;
        assert_eq!(r.status(), 422, "{number}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "invalid_number", "{body}");
        body["error_description"].clone()
    }
    let us = Server::start(&[]);
    assert_eq!(
        refused(&us, "12345").await,
        "Number must be a 10 digit US number."
    );
    let il = Server::start(&[
        ("HANGIN_NUMBERS__DEFAULT_REGION", "IL"),
        ("HANGIN_NUMBERS__ALLOWED_REGIONS", r#"["IL", "US"]"#),
    ]);
    let rule = "Number must be a phone number of IL or US: as dialled in IL (e.g. 050-234-5678) \
                or with its country code (e.g. +972502345678).";
    assert_eq!(refused(&il, "12345").await, rule);
    // A parseable number of a region that may not log in gets the same sentence.
    assert_eq!(refused(&il, "+44 20 7946 0958").await, rule);
    // And the example it gives logs in.
    assert_eq!(il.request_code("050-234-5678").await.status(), 204);
    assert_eq!(il.request_code("+972502345678").await.status(), 204);
}

/// A browser may read `Hangin-Skipped` (and a 429's `Retry-After`) only when the response
/// exposes it through CORS: the web client's address-book upload needs the count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_exposes_the_skipped_count() {
    let s = Server::start(&[]);
    let owner = s.sign_up("Olive", "Owner").await;
    let r = s
        .http()
        .post(s.url("/friends"))
        .header("Origin", "http://web.example.test:5173")
        .bearer_auth(&owner.token)
        .json(&json!({"friends": [entry("Ann", "Us", &fresh_number()), entry("Bad", "Short", "12345")]}))
        .send()
        .await
        .unwrap();
    assert_eq!((r.status().as_u16(), skipped(&r)), (201, Some("1")));
    let header = |name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_ascii_lowercase)
    };
    assert_eq!(header("access-control-allow-origin").as_deref(), Some("*"));
    let exposed = header("access-control-expose-headers").unwrap_or_default();
    let exposed: Vec<&str> = exposed.split(',').map(str::trim).collect();
    assert!(exposed.contains(&"hangin-skipped"), "{exposed:?}");
    assert!(exposed.contains(&"retry-after"), "{exposed:?}");
}

/// An unknown region stops the server with exit code 2 and names the key.
#[test]
fn unknown_region_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().display().to_string();
    let (code, _, err) = run_cli(
        &["config", "check", "--data-dir", &data],
        &[("HANGIN_NUMBERS__DEFAULT_REGION", "Narnia")],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("numbers.default_region"), "{err}");
}

/// A database from before E.164 (10-digit US numbers) is migrated: the same person logs in to
/// the same account, and their address book still links.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_ten_digit_rows_are_migrated_to_e164() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    let (alice, bob) = (fresh_number(), fresh_number());
    {
        let conn = rusqlite::Connection::open(data_dir.join("hangin.sqlite3")).unwrap();
        let v1 = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/01-initial/up.sql"),
        )
        .unwrap();
        conn.execute_batch(&v1).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute(
            "INSERT INTO users (uuid, number, created_at, updated_at)
             VALUES ('7d3b3b1e-0000-4000-8000-000000000001', ?1, 0, 0)",
            [&alice],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO friends (owner_id, first_name, last_name, number, created_at, updated_at)
             VALUES (1, 'Bob', 'B', ?1, 0, 0)",
            [&bob],
        )
        .unwrap();
    }
    let s = Server::start_in(dir, data_dir, &[]);
    let a = s.sign_up_as(&alice, "Alice", "A").await;
    assert_eq!(a.uuid, "7d3b3b1e-0000-4000-8000-000000000001");
    let b = s.sign_up_as(&bob, "Bob", "B").await;
    let listed = get_json(&s, &a, "/friends").await;
    assert_eq!(listed["contacts"][0]["uuid"], b.uuid.as_str(), "{listed}");
    assert_eq!(listed["contacts"][0]["number"], bob.as_str());
    let conn = rusqlite::Connection::open(s.db_path()).unwrap();
    let stored: Vec<String> = conn
        .prepare("SELECT number FROM users ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(stored, [format!("+1{alice}"), format!("+1{bob}")]);
}
