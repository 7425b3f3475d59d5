//! Issue "REST resources": friends and contacts, the profile, pictures, iOS devices and invites,
//! against the real binary over TCP. Pushes are observed through the `log` push driver's lines.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG};
use reqwest::Response;
use serde_json::{json, Value};

use common::{
    fresh_number, friend_entry as entry, get_json, post_friends, quiet_window, tiny_png, Cable,
    Server, User, CHATS,
};

const JSON_TYPE: &str = "application/json; charset=utf-8";
const LONG_CACHE: &str = "public, max-age=31536000, immutable";
const NOT_AN_IMAGE: &str = "file is not a JPEG, PNG, GIF, WebP or HEIC image";

/// A 1×1 GIF, a different picture type from the PNG.
const TINY_GIF: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xFF, 0xFF, 0xFF, 0x21, 0xF9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2C, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3B,
];

fn header<'a>(r: &'a Response, name: &str) -> &'a str {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// Status and parsed JSON body, checking the JSON content type.
async fn json_of(r: Response) -> (u16, Value) {
    let status = r.status().as_u16();
    assert_eq!(
        header(&r, CONTENT_TYPE.as_str()),
        JSON_TYPE,
        "status {status}"
    );
    (status, r.json().await.unwrap())
}

/// Positions of `"key":` in a JSON text, to check the order the server wrote keys in.
fn in_order(text: &str, keys: &[&str]) -> bool {
    let pos: Vec<usize> = keys
        .iter()
        .map(|k| text.find(&format!("\"{k}\":")).unwrap_or(usize::MAX))
        .collect();
    pos.iter().all(|p| *p != usize::MAX) && pos.windows(2).all(|w| w[0] < w[1])
}

/// The uuids of `user`'s online mutual contacts, as `ChatsChannel` lists them on subscribe.
async fn online_mutuals(s: &Server, user: &User) -> (Cable, BTreeSet<String>) {
    let mut c = s.cable(user).await;
    c.subscribe(CHATS).await;
    let listed = c.payload(CHATS, "contacts_online").await;
    let uuids = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["uuid"].as_str().unwrap().to_string())
        .collect();
    (c, uuids)
}

fn uuids(users: &[&User]) -> BTreeSet<String> {
    users.iter().map(|u| u.uuid.clone()).collect()
}

fn formatted(number: &str) -> String {
    format!("+1 ({}) {}-{}", &number[..3], &number[3..6], &number[6..])
}

/// Two users who hold each other's numbers are mutual contacts, whichever uploads first and
/// whether the number was uploaded before or after its owner signed up; one-way is not mutual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_contacts_in_any_order() {
    let s = Server::start(&[]);
    // a uploads first, then b.
    let a = s.sign_up("Ann", "Able").await;
    let b = s.sign_up("Bob", "Baker").await;
    s.add_friends(&a, &[&b]).await;
    s.add_friends(&b, &[&a]).await;
    // d uploads first, then c.
    let c = s.sign_up("Cat", "Cole").await;
    let d = s.sign_up("Dan", "Dunn").await;
    s.add_friends(&d, &[&c]).await;
    s.add_friends(&c, &[&d]).await;
    // e uploads n's number (formatted) before n exists; n signs up, then uploads e.
    let e = s.sign_up("Eve", "Eden").await;
    let n_number = fresh_number();
    let r = post_friends(
        &s,
        &e,
        json!({"friends": [entry("Nia", "New", &formatted(&n_number))]}),
    )
    .await;
    assert_eq!(r.status(), 201);
    let n = s.sign_up_as(&n_number, "Nia", "New").await;
    s.add_friends(&n, &[&e]).await;
    // f holds g's number, g does not hold f's.
    let f = s.sign_up("Fay", "Ford").await;
    let g = s.sign_up("Gus", "Gray").await;
    s.add_friends(&f, &[&g]).await;

    // Both sides list each other as contacts.
    for (x, y) in [(&a, &b), (&b, &a), (&c, &d), (&d, &c), (&e, &n), (&n, &e)] {
        let listed = get_json(&s, x, "/friends").await;
        assert_eq!(
            listed["contacts"],
            json!([y.contact()]),
            "{} lists {}",
            x.first,
            y.first
        );
        assert_eq!(listed["friends"], json!([]));
    }
    assert_eq!(
        get_json(&s, &f, "/friends").await["contacts"],
        json!([g.contact()])
    );
    assert_eq!(get_json(&s, &g, "/friends").await["contacts"], json!([]));

    // Presence works between mutual contacts only.
    let mut held = Vec::new();
    for u in [&b, &d, &n, &g] {
        held.push(s.online(u).await);
    }
    for (u, want) in [
        (&a, uuids(&[&b])),
        (&c, uuids(&[&d])),
        (&e, uuids(&[&n])),
        (&f, BTreeSet::new()),
    ] {
        let (_conn, got) = online_mutuals(&s, u).await;
        assert_eq!(got, want, "online mutual contacts of {}", u.first);
    }
}

/// Uploading the same list twice (renamed, numbers formatted differently, a number twice in one
/// list) updates rows in place: no duplicate friends, no duplicate contacts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_upload_is_idempotent() {
    let s = Server::start(&[]);
    let owner = s.sign_up("Olive", "Owner").await;
    let member = s.sign_up("Mia", "Member").await;
    let (x, y) = (fresh_number(), fresh_number());
    let first = post_friends(
        &s,
        &owner,
        json!({"friends": [entry("X", "One", &x), entry("Y", "Two", &y), entry("M", "Three", &member.number)]}),
    )
    .await;
    assert_eq!(first.status(), 201);
    assert_eq!(header(&first, "content-type"), JSON_TYPE);
    let text = first.text().await.unwrap();
    let rows: Value = serde_json::from_str(&text).unwrap();
    let rows = rows.as_array().unwrap().clone();
    assert_eq!(rows.len(), 3);
    assert!(in_order(
        &text,
        &[
            "id",
            "first_name",
            "last_name",
            "number",
            "user_id",
            "created_at",
            "updated_at"
        ]
    ));
    for row in &rows {
        assert_eq!(row.as_object().unwrap().len(), 7);
        assert_eq!(
            row["user_id"], rows[0]["user_id"],
            "the owner's internal id"
        );
        for key in ["created_at", "updated_at"] {
            let t = row[key].as_str().unwrap();
            let shape = t.len() == 24 && t.ends_with('Z') && &t[10..11] == "T" && &t[19..20] == ".";
            assert!(shape, "ISO-8601 with milliseconds: {t}");
        }
    }

    tokio::time::sleep(Duration::from_millis(5)).await;
    let again = post_friends(
        &s,
        &owner,
        json!({"friends": [entry("Xavier", "One", &formatted(&x)), entry("Y", "Two", &y),
                           entry("Yann", "Two", &format!("1{y}")), entry("M", "Three", &member.number)]}),
    )
    .await;
    assert_eq!(again.status(), 201);
    let again: Value = again.json().await.unwrap();
    let again = again.as_array().unwrap();
    assert_eq!(again.len(), 4, "one row per entry sent");
    assert_eq!(again[0]["id"], rows[0]["id"]);
    assert_eq!(again[0]["first_name"], "Xavier");
    assert_eq!(again[0]["created_at"], rows[0]["created_at"]);
    assert_ne!(again[0]["updated_at"], rows[0]["updated_at"]);
    assert_eq!(again[1]["id"], rows[1]["id"]);
    assert_eq!(again[2]["id"], rows[1]["id"]);

    let listed = get_json(&s, &owner, "/friends").await;
    assert_eq!(
        listed,
        json!({"friends": [entry("Xavier", "One", &x), entry("Yann", "Two", &y)],
               "contacts": [member.contact()]})
    );
}

/// `GET /friends`: entries without an account under `friends` (address-book names), users under
/// `contacts` as contact objects (their own names and picture URL), in upload order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_friends_splits_friends_and_contacts() {
    let s = Server::start(&[]);
    let owner = s.sign_up("Olive", "Owner").await;
    let pictured = s.sign_up("Pia", "Picture").await;
    let url = upload(&s, &pictured, "user[profile_picture]", "p.png", tiny_png())
        .await
        .1["profile_pic"]
        .as_str()
        .unwrap()
        .to_string();
    // A user who never set names shows with "" names.
    let nameless_number = fresh_number();
    let code = {
        assert_eq!(s.request_code(&nameless_number).await.status(), 204);
        s.otp(&nameless_number).await
    };
    let t: Value = s
        .password_grant(&nameless_number, &code)
        .await
        .json()
        .await
        .unwrap();
    let stranger = fresh_number();
    let r = post_friends(
        &s,
        &owner,
        json!({"friends": [
            entry("Stranger", "Danger", &stranger),
            entry("Nick", "Name", &pictured.number),
            entry("No", "Names", &nameless_number),
        ]}),
    )
    .await;
    assert_eq!(r.status(), 201);

    let r = s
        .http()
        .get(s.url("/friends"))
        .bearer_auth(&owner.token)
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "content-type"), JSON_TYPE);
    let text = r.text().await.unwrap();
    assert!(in_order(&text, &["friends", "contacts"]), "{text}");
    let contacts = &text[text.find("\"contacts\":").unwrap()..];
    assert!(in_order(
        contacts,
        &["uuid", "first_name", "last_name", "number", "profile_pic"]
    ));
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap(),
        json!({
            "friends": [entry("Stranger", "Danger", &stranger)],
            "contacts": [
                {"uuid": pictured.uuid, "first_name": "Pia", "last_name": "Picture",
                 "number": pictured.number, "profile_pic": url},
                {"uuid": t["uuid"], "first_name": "", "last_name": "",
                 "number": nameless_number, "profile_pic": null},
            ]
        })
    );
}

/// A missing or non-list `friends` is 400 (entries themselves never fail an upload: see
/// tests/numbers.rs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn friend_list_without_friends_is_400() {
    let s = Server::start(&[]);
    let owner = s.sign_up("Olive", "Owner").await;
    let missing = json!({"error": "bad_request",
                         "error_description": "param is missing or the value is empty: friends"});
    for body in [json!({}), json!({"friends": "Bob"}), json!({"friend": []})] {
        let (status, got) = json_of(post_friends(&s, &owner, body).await).await;
        assert_eq!((status, got), (400, missing.clone()));
    }
}

async fn send_user(s: &Server, u: &User, method: reqwest::Method, body: Value) -> (u16, Value) {
    let r = s
        .http()
        .request(method, s.url("/user"))
        .bearer_auth(&u.token)
        .json(&body)
        .send()
        .await
        .unwrap();
    json_of(r).await
}

/// `GET /user`, `PATCH`/`PUT /user` with the 100-character limit and wire.md's 422 shape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_profile_read_update_validate() {
    let s = Server::start(&[]);
    let number = fresh_number();
    assert_eq!(s.request_code(&number).await.status(), 204);
    let code = s.otp(&number).await;
    let t: Value = s.password_grant(&number, &code).await.json().await.unwrap();
    let u = User {
        number: number.clone(),
        uuid: t["uuid"].as_str().unwrap().into(),
        token: t["access_token"].as_str().unwrap().into(),
        refresh: t["refresh_token"].as_str().unwrap().into(),
        first: String::new(),
        last: String::new(),
    };
    let r = s
        .http()
        .get(s.url("/user"))
        .bearer_auth(&u.token)
        .send()
        .await
        .unwrap();
    let text = r.text().await.unwrap();
    assert_eq!(
        text,
        format!(
            r#"{{"first_name":null,"last_name":null,"profile_pic":null,"uuid":"{}","number":"{number}"}}"#,
            u.uuid
        )
    );

    let patch = reqwest::Method::PATCH;
    let put = reqwest::Method::PUT;
    assert_eq!(
        send_user(
            &s,
            &u,
            patch.clone(),
            json!({"user": {"first_name": "Ada", "last_name": "Lovelace"}})
        )
        .await,
        (200, json!({"first_name": "Ada", "last_name": "Lovelace"}))
    );
    // Only the given field changes; top-level keys work as Rails' parameter wrapping does.
    assert_eq!(
        send_user(&s, &u, put.clone(), json!({"last_name": "Byron"})).await,
        (200, json!({"first_name": "Ada", "last_name": "Byron"}))
    );
    let hundred = "é".repeat(100);
    assert_eq!(
        send_user(
            &s,
            &u,
            put.clone(),
            json!({"user": {"first_name": hundred}})
        )
        .await,
        (200, json!({"first_name": hundred, "last_name": "Byron"}))
    );

    // Over the limit: 422, nothing saved.
    let long = "x".repeat(101);
    assert_eq!(
        send_user(
            &s,
            &u,
            patch.clone(),
            json!({"user": {"first_name": long, "last_name": "Ok"}})
        )
        .await,
        (422, json!({"errors": {"first_name": ["is too long"]}}))
    );
    assert_eq!(
        send_user(
            &s,
            &u,
            put.clone(),
            json!({"user": {"first_name": long, "last_name": long}})
        )
        .await,
        (
            422,
            json!({"errors": {"first_name": ["is too long"], "last_name": ["is too long"]}})
        )
    );
    assert_eq!(
        send_user(
            &s,
            &u,
            patch.clone(),
            json!({"user": {"first_name": {"no": 1}}})
        )
        .await,
        (422, json!({"errors": {"first_name": ["must be a string"]}}))
    );
    assert_eq!(
        send_user(&s, &u, patch.clone(), json!({"other": 1})).await,
        (
            400,
            json!({"error": "bad_request", "error_description": "param is missing or the value is empty: user"})
        )
    );
    let me = get_json(&s, &u, "/user").await;
    assert_eq!(
        (me["first_name"].clone(), me["last_name"].clone()),
        (json!(hundred), json!("Byron"))
    );

    // A form body with Rails brackets, the web client's way.
    let r = s
        .http()
        .patch(s.url("/user/"))
        .bearer_auth(&u.token)
        .form(&[("user[first_name]", "Grace"), ("user[last_name]", "Hopper")])
        .send()
        .await
        .unwrap();
    assert_eq!(
        json_of(r).await,
        (200, json!({"first_name": "Grace", "last_name": "Hopper"}))
    );
}

/// Upload a picture as a multipart file field; (status, JSON body).
async fn upload(
    s: &Server,
    u: &User,
    field: &str,
    file_name: &str,
    bytes: Vec<u8>,
) -> (u16, Value) {
    let part = reqwest::multipart::Part::bytes(bytes)
        .file_name(file_name.to_string())
        .mime_str("image/png")
        .unwrap();
    let form = reqwest::multipart::Form::new().part(field.to_string(), part);
    let r = s
        .http()
        .post(s.url("/user/addProfilePicture"))
        .bearer_auth(&u.token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    json_of(r).await
}

/// Files under `<data_dir>/pictures`.
fn picture_files(s: &Server) -> BTreeSet<String> {
    match std::fs::read_dir(s.pictures_dir()) {
        Ok(dir) => dir
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => BTreeSet::new(),
    }
}

fn key_of(url: &str) -> String {
    url.rsplit('/').next().unwrap().to_string()
}

/// PNG upload → absolute URL → the same bytes with `image/png`, `ETag`, a year's immutable
/// cache; `If-None-Match` → 304.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn picture_round_trip_with_etag_and_cache() {
    let s = Server::start(&[]);
    let u = s.sign_up("Pic", "Ture").await;
    let png = tiny_png();
    let (status, body) = upload(&s, &u, "user[profile_picture]", "me.png", png.clone()).await;
    assert_eq!(status, 200, "{body}");
    let url = body["profile_pic"].as_str().unwrap().to_string();
    assert_eq!(
        body,
        json!({"first_name": "Pic", "last_name": "Ture", "profile_pic": url})
    );
    assert!(url.starts_with(&format!("{}/blobs/", s.base)), "{url}");
    let key = key_of(&url);
    assert_eq!(key.len(), 43, "32 random bytes, base64url: {key}");
    assert_eq!(picture_files(&s), BTreeSet::from([key.clone()]));
    assert_eq!(std::fs::read(s.pictures_dir().join(&key)).unwrap(), png);

    let http = s.http();
    let r = http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-type"), "image/png");
    assert_eq!(header(&r, "content-length"), png.len().to_string());
    assert_eq!(header(&r, CACHE_CONTROL.as_str()), LONG_CACHE);
    let etag = header(&r, ETAG.as_str()).to_string();
    assert!(
        etag.starts_with('"') && etag.ends_with('"') && etag.len() > 2,
        "{etag}"
    );
    assert_eq!(r.bytes().await.unwrap().as_ref(), png.as_slice());

    let r = http
        .get(&url)
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    assert_eq!(header(&r, ETAG.as_str()), etag);
    assert_eq!(header(&r, CACHE_CONTROL.as_str()), LONG_CACHE);
    assert!(r.bytes().await.unwrap().is_empty());
    let r = http
        .get(&url)
        .header("If-None-Match", "\"something-else\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    assert_eq!(get_json(&s, &u, "/user").await["profile_pic"], url.as_str());
    let (status, _) = json_of(http.get(s.url("/blobs/nope")).send().await.unwrap()).await;
    assert_eq!(status, 404);

    // The web client's way: `profile_picture` field and the token in the query string.
    let part = reqwest::multipart::Part::bytes(TINY_GIF.to_vec()).file_name("x.gif");
    let r = http
        .post(s.url("/user/addProfilePicture"))
        .query(&[("access_token", &u.token)])
        .multipart(reqwest::multipart::Form::new().part("profile_picture", part))
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(r).await;
    assert_eq!(status, 200);
    let gif = http
        .get(body["profile_pic"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(header(&gif, "content-type"), "image/gif");

    // public_url, when set, is the base of picture URLs.
    let s = Server::start(&[("HANGIN_PUBLIC_URL", "https://chat.example.org")]);
    let u = s.sign_up("Pub", "Lic").await;
    let (_, body) = upload(&s, &u, "user[profile_picture]", "me.png", tiny_png()).await;
    assert!(body["profile_pic"]
        .as_str()
        .unwrap()
        .starts_with("https://chat.example.org/blobs/"));
}

/// Content decides: a text file named `.png` is 422, and nothing is stored; other malformed
/// uploads are 422 too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_an_image_is_422() {
    let s = Server::start(&[]);
    let u = s.sign_up("Text", "File").await;
    let text = b"this is a plain text file, not an image at all\n".repeat(10);
    assert_eq!(
        upload(&s, &u, "user[profile_picture]", "me.png", text).await,
        (422, json!({"errors": [NOT_AN_IMAGE]}))
    );
    assert_eq!(
        upload(&s, &u, "user[profile_picture]", "tiny.png", b"hi".to_vec()).await,
        (422, json!({"errors": [NOT_AN_IMAGE]}))
    );
    assert_eq!(
        upload(&s, &u, "something_else", "me.png", tiny_png()).await,
        (422, json!({"errors": ["profile_picture is missing"]}))
    );
    // The web client sends the string "null" when no file was chosen.
    let r = s
        .http()
        .post(s.url("/user/addProfilePicture"))
        .bearer_auth(&u.token)
        .multipart(reqwest::multipart::Form::new().text("user[profile_picture]", "null"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        json_of(r).await,
        (422, json!({"errors": ["profile_picture must be a file"]}))
    );
    let r = s
        .http()
        .post(s.url("/user/addProfilePicture"))
        .bearer_auth(&u.token)
        .json(&json!({"profile_picture": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        json_of(r).await,
        (
            422,
            json!({"errors": ["profile_picture must be a multipart file upload"]})
        )
    );
    assert!(picture_files(&s).is_empty(), "{:?}", picture_files(&s));
    assert_eq!(get_json(&s, &u, "/user").await["profile_pic"], Value::Null);
}

/// 6 MiB against the 5 MiB limit: 413, the upload streamed to disk and dropped, the server's
/// memory not grown by the upload's size, the old picture untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_picture_is_413_without_memory_growth() {
    let s = Server::start(&[]);
    let u = s.sign_up("Big", "Upload").await;
    let (status, body) = upload(&s, &u, "user[profile_picture]", "ok.png", tiny_png()).await;
    assert_eq!(status, 200);
    let url = body["profile_pic"].as_str().unwrap().to_string();
    let files = picture_files(&s);

    let rss_before = s.proc_status_kib("VmRSS");
    let peak_before = s.proc_status_kib("VmHWM");
    let mut big = tiny_png();
    big.resize(6 * 1024 * 1024, 0);
    use rand::RngCore;
    rand::thread_rng().fill_bytes(&mut big[64..]);
    let (status, body) = upload(&s, &u, "user[profile_picture]", "big.png", big).await;
    assert_eq!(status, 413);
    assert_eq!(body["error"], "payload_too_large");
    let rss_after = s.proc_status_kib("VmRSS");
    let peak_after = s.proc_status_kib("VmHWM");
    eprintln!(
        "6 MiB upload: VmRSS {rss_before} -> {rss_after} KiB, VmHWM {peak_before} -> {peak_after} KiB"
    );
    const SIX_MIB_KIB: u64 = 6 * 1024;
    assert!(rss_after < rss_before + SIX_MIB_KIB);
    assert!(peak_after < peak_before + SIX_MIB_KIB);

    assert_eq!(picture_files(&s), files, "no partial upload left behind");
    assert_eq!(get_json(&s, &u, "/user").await["profile_pic"], url.as_str());
    assert_eq!(s.http().get(&url).send().await.unwrap().status(), 200);
}

/// A new picture replaces the old one, whose file and URL are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_the_picture_deletes_the_old_file() {
    let s = Server::start(&[]);
    let u = s.sign_up("Re", "Place").await;
    let (_, first) = upload(&s, &u, "user[profile_picture]", "a.png", tiny_png()).await;
    let old_url = first["profile_pic"].as_str().unwrap().to_string();
    assert_eq!(picture_files(&s), BTreeSet::from([key_of(&old_url)]));

    let (status, second) =
        upload(&s, &u, "user[profile_picture]", "b.gif", TINY_GIF.to_vec()).await;
    assert_eq!(status, 200);
    let new_url = second["profile_pic"].as_str().unwrap().to_string();
    assert_ne!(new_url, old_url);
    assert_eq!(picture_files(&s), BTreeSet::from([key_of(&new_url)]));
    let http = s.http();
    let gone = http.get(&old_url).send().await.unwrap();
    assert_eq!(
        json_of(gone).await,
        (
            404,
            json!({"error": "not_found", "error_description": "No such picture."})
        )
    );
    let r = http.get(&new_url).send().await.unwrap();
    assert_eq!(header(&r, "content-type"), "image/gif");
    assert_eq!(r.bytes().await.unwrap().as_ref(), TINY_GIF);
}

async fn register_device_json(s: &Server, body: Value) -> Response {
    s.http()
        .post(s.url("/user/registerIOSDevice"))
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn assert_empty_200(r: Response) {
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.unwrap().is_empty());
}

async fn invite(s: &Server, host: &User, body: Value) -> Response {
    s.http()
        .post(s.url("/notifications/invite"))
        .bearer_auth(&host.token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

fn push_lines(s: &Server, u: &User) -> Vec<String> {
    s.log_lines(&format!("push to {} (", u.uuid))
}

/// The push driver's line for an invite to `chat` from Ann Able to `u` on `device`.
fn invite_line_end(u: &User, device: &str, chat: i64) -> String {
    format!(
        r#"push to {} ({device}): title="Live chat invite! 🎉" subtitle=None body="Ann Able wants to chat with you!\nTap to chat" data={{"chat":"{chat}"}}"#,
        u.uuid
    )
}

/// `registerIOSDevice` (token in a JSON body as iOS sends it, or in the query) and invites: one
/// push per invited mutual contact with a device token, none for anyone else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invites_push_once_per_mutual_contact_with_a_device() {
    let s = Server::start(&[]);
    let host = s.sign_up("Ann", "Able").await;
    let bob = s.sign_up("Bob", "Baker").await; // mutual, device
    let cat = s.sign_up("Cat", "Cole").await; // mutual, device
    let dan = s.sign_up("Dan", "Dunn").await; // mutual, no device
    let eve = s.sign_up("Eve", "Eden").await; // stranger, device
    let fay = s.sign_up("Fay", "Ford").await; // host holds her number only, device
    let gus = s.sign_up("Gus", "Gray").await; // holds the host's number only, device
    for u in [&bob, &cat, &dan] {
        s.befriend(&host, u).await;
    }
    s.add_friends(&host, &[&fay]).await;
    s.add_friends(&gus, &[&host]).await;

    // Device tokens: JSON body with the access token inside (iOS), query string, both spellings.
    let devices = [
        (&bob, "b0".repeat(32)),
        (&cat, "c0".repeat(32)),
        (&eve, "e0".repeat(32)),
        (&fay, "f0".repeat(32)),
        (&gus, "90".repeat(32)),
    ];
    let r = register_device_json(
        &s,
        json!({"access_token": bob.token, "device_token": "old-token"}),
    )
    .await;
    assert_empty_200(r).await;
    for (i, (u, device)) in devices.iter().enumerate() {
        let r = if i % 2 == 0 {
            register_device_json(&s, json!({"access_token": u.token, "device_token": device})).await
        } else {
            s.http()
                .post(s.url("/user/registerIOSDevice"))
                .query(&[
                    ("access_token", u.token.as_str()),
                    ("deviceToken", device.as_str()),
                ])
                .send()
                .await
                .unwrap()
        };
        assert_empty_200(r).await;
    }
    for body in [
        json!({"access_token": dan.token}),
        json!({"access_token": dan.token, "device_token": "  "}),
    ] {
        let r = register_device_json(&s, body).await;
        assert_eq!(
            json_of(r).await,
            (422, json!({"error": "missing deviceToken"}))
        );
    }
    let r = register_device_json(&s, json!({"device_token": "ab"})).await;
    assert_eq!(r.status(), 401);

    let mut host_cable = s.online(&host).await;
    host_cable
        .perform(CHATS, "createChat", json!({"name": "Movie night"}))
        .await;
    let chat = host_cable.event("own_chat").await["id"].as_i64().unwrap();
    let everyone = json!([
        bob.uuid,
        cat.uuid,
        dan.uuid,
        eve.uuid,
        fay.uuid,
        gus.uuid,
        "00000000-0000-4000-8000-000000000000",
        host.uuid,
        "not-a-uuid"
    ]);
    let r = invite(
        &s,
        &host,
        json!({"chat_id": chat, "users_to_invite": everyone}),
    )
    .await;
    assert_eq!(r.status(), 204);
    assert!(r.bytes().await.unwrap().is_empty());
    s.wait_log_lines("push to ", 2).await;
    quiet_window().await;
    let all = s.log_lines("push to ");
    assert_eq!(all.len(), 2, "{all:?}");
    for (u, device) in [(&bob, &devices[0].1), (&cat, &devices[1].1)] {
        let lines = push_lines(&s, u);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].ends_with(&invite_line_end(u, device, chat)),
            "{}",
            lines[0]
        );
    }

    // `chatId` as the iOS client sends it, and every number/string combination, token in the
    // JSON body.
    let variants = [
        json!({"chatId": chat}),
        json!({"chatId": chat.to_string()}),
        json!({"chat_id": chat.to_string()}),
        json!({"chat_id": chat}),
    ];
    for (i, mut body) in variants.into_iter().enumerate() {
        body["users_to_invite"] = json!([bob.uuid, eve.uuid]);
        body["access_token"] = json!(host.token);
        let r = s
            .http()
            .post(s.url("/notifications/invite"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204, "{body}");
        s.wait_log_lines(&format!("push to {} (", bob.uuid), 2 + i)
            .await;
    }

    // Malformed: 422; unknown or invisible chat: 404; no push from any of them.
    let malformed = |what: &str| {
        (
            422,
            json!({"error": "malformed_invite", "error_description": what}),
        )
    };
    for body in [
        json!({"chat_id": "abc", "users_to_invite": [bob.uuid]}),
        json!({"chat_id": 0, "users_to_invite": [bob.uuid]}),
        json!({"chat_id": [chat], "users_to_invite": [bob.uuid]}),
        json!({"users_to_invite": [bob.uuid]}),
    ] {
        let got = json_of(invite(&s, &host, body.clone()).await).await;
        assert_eq!(got, malformed("chat_id must be a chat id"), "{body}");
    }
    let got = json_of(
        invite(
            &s,
            &host,
            json!({"chat_id": chat, "users_to_invite": {"a": 1}}),
        )
        .await,
    )
    .await;
    assert_eq!(
        got,
        malformed("users_to_invite must be a list of user uuids")
    );
    let not_found = (
        404,
        json!({"error": "not_found", "error_description": "No such chat, or you do not see it."}),
    );
    let got = json_of(
        invite(
            &s,
            &host,
            json!({"chat_id": 999_999, "users_to_invite": [bob.uuid]}),
        )
        .await,
    )
    .await;
    assert_eq!(got, not_found);
    // A stranger's live chat exists but the host does not see it.
    let mut eve_cable = s.online(&eve).await;
    eve_cable
        .perform(CHATS, "createChat", json!({"name": "Private"}))
        .await;
    let hidden = eve_cable.event("own_chat").await["id"].as_i64().unwrap();
    let got = json_of(
        invite(
            &s,
            &host,
            json!({"chatId": hidden, "users_to_invite": [bob.uuid]}),
        )
        .await,
    )
    .await;
    assert_eq!(got, not_found);

    quiet_window().await;
    assert_eq!(push_lines(&s, &bob).len(), 5);
    assert_eq!(s.log_lines("push to ").len(), 6);
    for u in [&dan, &eve, &fay, &gus, &host] {
        assert!(push_lines(&s, u).is_empty(), "{} got a push", u.first);
    }
    drop(host_cable);
}
