//! Files through the HTTP API: uploads in the form `wx.uploadFile` sends and as plain bodies,
//! the bucket's rules and limits, downloads with ranges and ETags, signed URLs, quotas, and
//! every refusal's code, with the blobs on disk checked after each (nothing half written, no
//! orphan). Multipart bodies are written by hand here, so that broken ones can be too.

use std::path::PathBuf;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{Expect, NoContent, TestApp, expect_error, expect_json};

const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0";
const BOUNDARY: &str = "----wxboundary7MA4YWxkTrZu0gW";

struct Scene {
    t: TestApp,
    alice: String,
    alice_id: String,
    bob: String,
}

async fn scene(bucket: Value) -> Scene {
    scene_with(bucket, |_| {}).await
}

async fn scene_with(
    bucket: Value,
    config: impl FnOnce(&mut cloudlet_server::config::Config),
) -> Scene {
    let t = TestApp::builder().config(config).start().await;
    t.create_app("notes").await;
    t.admin(Method::PUT, "/v1/admin/apps/notes/auth/providers/dev")
        .json(&json!({ "enabled": true }))
        .expect(StatusCode::OK)
        .await;
    let login = |user: &str| {
        t.request(Method::POST, "/v1/apps/notes/auth/sessions")
            .json(&json!({ "provider": "dev", "user": user }))
    };
    let alice = login("alice").expect(StatusCode::CREATED).await;
    let bob = login("bob").expect(StatusCode::CREATED).await;
    t.admin(Method::PUT, "/v1/admin/apps/notes/buckets/photos")
        .json(&bucket)
        .expect(StatusCode::OK)
        .await;
    Scene {
        alice: alice["access_token"].as_str().unwrap().to_owned(),
        alice_id: alice["user"]["id"].as_str().unwrap().to_owned(),
        bob: bob["access_token"].as_str().unwrap().to_owned(),
        t,
    }
}

/// A part of a form: a text field, or a file with its name and declared type.
enum Part<'a> {
    Text(&'a str, &'a str),
    File(&'a str, &'a str, &'a [u8]),
}

fn form(parts: &[Part<'_>]) -> Vec<u8> {
    let mut body = Vec::new();
    for part in parts {
        body.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        match part {
            Part::Text(name, value) => {
                body.extend_from_slice(
                    format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
                        .as_bytes(),
                );
            }
            Part::File(name, content_type, bytes) => {
                body.extend_from_slice(
                    format!(
                        "Content-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\
                         Content-Type: {content_type}\r\n\r\n"
                    )
                    .as_bytes(),
                );
                body.extend_from_slice(bytes);
                body.extend_from_slice(b"\r\n");
            }
        }
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

impl Scene {
    fn upload(&self, token: Option<&str>, body: Vec<u8>) -> reqwest::RequestBuilder {
        self.upload_to("photos", token, body)
    }

    /// A form of `body` posted into `bucket`, as `token`'s user.
    fn upload_to(
        &self,
        bucket: &str,
        token: Option<&str>,
        body: Vec<u8>,
    ) -> reqwest::RequestBuilder {
        let request = self
            .t
            .request(Method::POST, &format!("/v1/apps/notes/files/{bucket}"))
            .header(
                "content-type",
                format!("multipart/form-data; boundary={BOUNDARY}"),
            )
            .body(body);
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    fn file(&self, method: Method, token: Option<&str>, path: &str) -> reqwest::RequestBuilder {
        let request = self.t.request(method, path);
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// The blobs on disk for the app, temporary files included.
    fn blobs(&self) -> Vec<PathBuf> {
        let root = self.t.data_dir.join("files");
        let mut found = Vec::new();
        for dir in [root.join("notes"), root.join(".tmp")] {
            if let Ok(entries) = std::fs::read_dir(&dir) {
                found.extend(entries.map(|e| e.unwrap().path()));
            }
        }
        found.sort();
        found
    }
}

fn url(id: &str) -> String {
    format!("/v1/apps/notes/files/photos/{id}")
}

#[tokio::test]
async fn an_upload_in_the_mini_program_form_is_kept_for_its_owner_alone() {
    let s = scene(json!({ "types": ["image/*"], "max_bytes": 1000 })).await;
    // What wx.uploadFile sends: formData fields first, then the file under the chosen name, with
    // a temporary path for a name and a type that says nothing.
    let body = form(&[
        Part::Text("album", "trip"),
        Part::File("wxfile://tmp_4f2a.jpg", "application/octet-stream", PNG),
    ]);
    let file = s
        .upload(Some(&s.alice), body)
        .expect(StatusCode::CREATED)
        .await;
    let id = file["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("fil_"));
    assert_eq!(file["type"], "image/png", "sniffed from the bytes");
    assert_eq!(file["name"], "tmp_4f2a.jpg");
    assert_eq!(file["size"], PNG.len());
    assert_eq!(file["owner"], s.alice_id);
    assert_eq!(file["metadata"], json!({ "album": "trip" }));
    assert_eq!(file["public"], false);

    // Alice reads it back; Bob and nobody get what a missing file gets.
    let got = s
        .file(Method::GET, Some(&s.alice), &url(&id))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), StatusCode::OK);
    assert_eq!(got.headers()["content-type"], "image/png");
    assert_eq!(got.headers()["cache-control"], "private, no-cache");
    let etag = got.headers()["etag"].to_str().unwrap().to_owned();
    assert_eq!(got.bytes().await.unwrap().as_ref(), PNG);
    for token in [Some(s.bob.as_str()), None] {
        let hidden = s.file(Method::GET, token, &url(&id)).send().await.unwrap();
        let missing = s
            .file(Method::GET, token, &url("fil_AAAAAAAAAAAAAAAAAAAAAA"))
            .send()
            .await
            .unwrap();
        assert_eq!(hidden.status(), missing.status());
        let hidden = expect_error(hidden, StatusCode::NOT_FOUND, "file_not_found").await;
        let missing = expect_error(missing, StatusCode::NOT_FOUND, "file_not_found").await;
        assert_eq!(hidden["error"]["message"], missing["error"]["message"]);
    }
    // Under another bucket's name, or as no id at all: not found either.
    for path in [
        "/v1/apps/notes/files/other/".to_owned() + &id,
        url("..%2F..%2Fsystem.db"),
        url("fil_..%2F..%2F..%2Fsystem.db"),
    ] {
        let answer = s
            .file(Method::GET, Some(&s.alice), &path)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::NOT_FOUND, "{path}");
    }

    // Ranges, ETags.
    let tail = s
        .file(Method::GET, Some(&s.alice), &url(&id))
        .header("range", "bytes=-4")
        .send()
        .await
        .unwrap();
    assert_eq!(tail.status(), StatusCode::PARTIAL_CONTENT);
    let n = PNG.len();
    assert_eq!(
        tail.headers()["content-range"],
        format!("bytes {}-{}/{n}", n - 4, n - 1)
    );
    assert_eq!(tail.bytes().await.unwrap().as_ref(), &PNG[n - 4..]);
    let past = s
        .file(Method::GET, Some(&s.alice), &url(&id))
        .header("range", format!("bytes={n}-"))
        .send()
        .await
        .unwrap();
    assert_eq!(past.headers()["content-range"], format!("bytes */{n}"));
    expect_error(
        past,
        StatusCode::RANGE_NOT_SATISFIABLE,
        "range_not_satisfiable",
    )
    .await;
    let same = s
        .file(Method::GET, Some(&s.alice), &url(&id))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(same.status(), StatusCode::NOT_MODIFIED);

    // Listed for Alice, not for Bob; its record.
    let list = |token: &str| {
        s.file(
            Method::GET,
            Some(token),
            "/v1/apps/notes/buckets/photos/files",
        )
        .expect(StatusCode::OK)
    };
    assert_eq!(list(&s.alice).await["items"].as_array().unwrap().len(), 1);
    assert_eq!(list(&s.bob).await["items"], json!([]));
    let info = s
        .file(Method::GET, Some(&s.alice), &format!("{}/info", url(&id)))
        .expect(StatusCode::OK)
        .await;
    assert_eq!(
        info["sha256"].as_str().map(|h| format!("\"{h}\"")),
        Some(etag)
    );

    // Deleting: not Bob's to delete; Alice's; then the blob is gone from the disk.
    assert_eq!(s.blobs().len(), 1);
    s.file(Method::DELETE, Some(&s.bob), &url(&id))
        .expect_error(StatusCode::NOT_FOUND, "file_not_found")
        .await;
    s.file(Method::DELETE, Some(&s.alice), &url(&id))
        .no_content()
        .await;
    s.file(Method::GET, Some(&s.alice), &url(&id))
        .expect_error(StatusCode::NOT_FOUND, "file_not_found")
        .await;
    assert_eq!(s.blobs(), Vec::<PathBuf>::new());
}

#[tokio::test]
async fn bad_uploads_get_their_codes_and_leave_nothing_behind() {
    let s = scene(json!({ "types": ["image/*"], "max_bytes": 64 })).await;
    let png = |name: &'static str| Part::File(name, "image/png", PNG);
    /// What is wrong, who sends it, the body, and the answer.
    type Case<'a> = (&'a str, Option<&'a str>, Vec<u8>, StatusCode, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (
            "anonymous",
            None,
            form(&[png("a.png")]),
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
        (
            "a lying type",
            Some(&s.alice),
            form(&[Part::File(
                "a.png",
                "image/png",
                b"<html><script>alert(1)</script></html>",
            )]),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "file_type_not_allowed",
        ),
        (
            "too large",
            Some(&s.alice),
            form(&[Part::File(
                "a.png",
                "image/png",
                &[PNG, &[0u8; 100]].concat(),
            )]),
            StatusCode::PAYLOAD_TOO_LARGE,
            "file_too_large",
        ),
        (
            "empty",
            Some(&s.alice),
            form(&[Part::File("a.png", "image/png", b"")]),
            StatusCode::BAD_REQUEST,
            "empty_file",
        ),
        (
            "two files",
            Some(&s.alice),
            form(&[png("a.png"), png("b.png")]),
            StatusCode::BAD_REQUEST,
            "invalid_upload",
        ),
        (
            "no file",
            Some(&s.alice),
            form(&[Part::Text("album", "trip")]),
            StatusCode::BAD_REQUEST,
            "invalid_upload",
        ),
        (
            "metadata that is no object",
            Some(&s.alice),
            form(&[Part::Text("metadata", "[1,2]"), png("a.png")]),
            StatusCode::BAD_REQUEST,
            "invalid_upload",
        ),
        (
            "NUL in a field",
            Some(&s.alice),
            form(&[Part::Text("note", "a\u{0}b"), png("a.png")]),
            StatusCode::BAD_REQUEST,
            "invalid_upload",
        ),
        (
            "a control character in a part's header",
            Some(&s.alice),
            form(&[png("a\u{1}b.png")]),
            StatusCode::BAD_REQUEST,
            "invalid_upload",
        ),
    ];
    for (what, token, body, status, code) in cases {
        let answer = s.upload(token, body).send().await.unwrap();
        assert_eq!(answer.status(), status, "{what}");
        expect_error(answer, status, code).await;
    }
    // A truncated body: the file part never ends.
    let mut truncated = form(&[png("a.png")]);
    truncated.truncate(truncated.len() - BOUNDARY.len() - 10);
    s.upload(Some(&s.alice), truncated)
        .expect_error(StatusCode::BAD_REQUEST, "incomplete_upload")
        .await;
    // A boundary missing from the header, and one that lies.
    s.t.request(Method::POST, "/v1/apps/notes/files/photos")
        .bearer_auth(&s.alice)
        .header("content-type", "multipart/form-data")
        .body(form(&[png("a.png")]))
        .expect_error(StatusCode::BAD_REQUEST, "invalid_upload")
        .await;
    let lying =
        s.t.request(Method::POST, "/v1/apps/notes/files/photos")
            .bearer_auth(&s.alice)
            .header("content-type", "multipart/form-data; boundary=not-the-one")
            .body(form(&[png("a.png")]))
            .send()
            .await
            .unwrap();
    assert_eq!(lying.status(), StatusCode::BAD_REQUEST);
    // A form that never gets to a file: its preamble is refused once past what a form's
    // envelope may hold, not buffered to the end.
    s.t.admin(Method::PUT, "/v1/admin/apps/notes/buckets/big")
        .json(&json!({ "max_bytes": 10 * 1024 * 1024 }))
        .expect(StatusCode::OK)
        .await;
    let endless = [b"x".repeat(3 * 1024 * 1024), form(&[png("a.png")])].concat();
    s.upload_to("big", Some(&s.alice), endless)
        .expect_error(StatusCode::BAD_REQUEST, "invalid_upload")
        .await;
    // Which the same form without its preamble is not.
    let answer = s
        .upload_to("big", Some(&s.alice), form(&[png("a.png")]))
        .send()
        .await
        .unwrap();
    let kept = expect_json(answer, StatusCode::CREATED).await;
    s.file(
        Method::DELETE,
        Some(&s.alice),
        &format!("/v1/apps/notes/files/big/{}", kept["id"].as_str().unwrap()),
    )
    .no_content()
    .await;
    // Refused before the body, whatever it is: an unknown bucket, a caller the create rule
    // locks out, a form larger than the bucket's file and envelope.
    s.upload_to("nowhere", Some(&s.alice), form(&[png("a.png")]))
        .expect_error(StatusCode::NOT_FOUND, "bucket_not_found")
        .await;
    let huge = s
        .upload(Some(&s.alice), vec![b'x'; 70 * 1024])
        .send()
        .await
        .unwrap();
    expect_error(huge, StatusCode::PAYLOAD_TOO_LARGE, "file_too_large").await;
    // A plain body: over the limit by its content-length, refused before it is read; a name
    // with NUL; an unknown bucket.
    let plain = |path: &str, body: Vec<u8>| {
        s.t.request(Method::POST, path)
            .bearer_auth(&s.alice)
            .header("content-type", "image/png")
            .body(body)
    };
    let big = plain("/v1/apps/notes/files/photos", vec![0u8; 65])
        .send()
        .await
        .unwrap();
    expect_error(big, StatusCode::PAYLOAD_TOO_LARGE, "file_too_large").await;
    plain("/v1/apps/notes/files/photos?name=a%00b.png", PNG.to_vec())
        .expect_error(StatusCode::BAD_REQUEST, "invalid_file_name")
        .await;
    plain("/v1/apps/notes/files/nowhere", PNG.to_vec())
        .expect_error(StatusCode::NOT_FOUND, "bucket_not_found")
        .await;

    // Nothing of any of them was kept: no file listed, no blob, no temporary file.
    let listed =
        s.t.admin(Method::GET, "/v1/apps/notes/buckets/photos/files")
            .expect(StatusCode::OK)
            .await;
    assert_eq!(listed["items"], json!([]));
    assert_eq!(s.blobs(), Vec::<PathBuf>::new());

    // And the same file, well formed, is taken: the refusals were about the requests.
    let fine = plain(
        "/v1/apps/notes/files/photos?name=fine.png&metadata=%7B%22a%22%3A1%7D",
        PNG.to_vec(),
    )
    .expect(StatusCode::CREATED)
    .await;
    assert_eq!(fine["metadata"], json!({ "a": 1 }));
    assert_eq!(s.blobs().len(), 1);
}

#[tokio::test]
async fn signed_urls_open_a_file_as_signed_and_only_so() {
    let s = scene(json!({ "types": ["image/*"] })).await;
    let alices = s
        .upload(
            Some(&s.alice),
            form(&[Part::File("a.png", "image/png", PNG)]),
        )
        .expect(StatusCode::CREATED)
        .await;
    let bobs = s
        .upload(Some(&s.bob), form(&[Part::File("b.png", "image/png", PNG)]))
        .expect(StatusCode::CREATED)
        .await;
    let sign = |ids: Value| {
        s.file(Method::POST, Some(&s.alice), "/v1/apps/notes/file-urls")
            .json(&json!({ "ids": ids }))
            .expect(StatusCode::OK)
    };
    let ids = json!([
        alices["id"],
        bobs["id"],
        "fil_AAAAAAAAAAAAAAAAAAAAAA",
        "nonsense"
    ]);
    let signed = sign(ids.clone()).await;
    let urls = signed["urls"].as_array().unwrap();
    assert_eq!(urls[1], Value::Null, "Bob's file is not Alice's to sign");
    assert_eq!(urls[2], Value::Null);
    assert_eq!(urls[3], Value::Null);
    let link = urls[0]["url"].as_str().unwrap().to_owned();
    // Signed again within the window: the same URL, so the image stays cached.
    assert_eq!(sign(ids).await["urls"][0]["url"], link.as_str());

    let got = s
        .file(Method::GET, None, &format!("{link}&v=2"))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), StatusCode::OK);
    assert!(
        got.headers()["cache-control"]
            .to_str()
            .unwrap()
            .starts_with("private, max-age=")
    );
    assert_eq!(got.bytes().await.unwrap().as_ref(), PNG);

    // Any change to what was signed is refused.
    let expires: u64 = link
        .split("expires=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let tampered = [
        link.replace(
            &format!("expires={expires}"),
            &format!("expires={}", expires + 600),
        ),
        link.replace("&sig=", "&thumb=200x200&sig="),
        link.replace(alices["id"].as_str().unwrap(), bobs["id"].as_str().unwrap()),
        format!("{}x", link),
    ];
    for url in tampered {
        s.file(Method::GET, None, &url)
            .expect_error(StatusCode::FORBIDDEN, "invalid_signature")
            .await;
    }
    let half = link.split("&sig=").next().unwrap().to_owned();
    s.file(Method::GET, None, &half)
        .expect_error(StatusCode::FORBIDDEN, "invalid_signature")
        .await;
    // Bad requests to sign.
    for body in [
        json!({ "ids": [] }),
        json!({ "ids": ["a"], "ttl_secs": 0 }),
        json!({ "ids": ["a"], "thumb": "big" }),
    ] {
        s.file(Method::POST, Some(&s.alice), "/v1/apps/notes/file-urls")
            .json(&body)
            .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body")
            .await;
    }
}

#[tokio::test]
async fn a_public_bucket_serves_anyone_and_never_renders_what_is_not_an_image() {
    let s = scene(json!({ "types": ["*/*"], "rules": { "view": "", "list": "" } })).await;
    let page = b"<!doctype html><html><script>alert(document.cookie)</script></html>";
    let html = s
        .upload(
            Some(&s.alice),
            form(&[Part::File("cat.png", "image/png", page)]),
        )
        .expect(StatusCode::CREATED)
        .await;
    assert_eq!(html["type"], "text/html");
    assert_eq!(html["public"], true);
    let png = s
        .upload(
            Some(&s.alice),
            form(&[Part::File("照片.png", "image/png", PNG)]),
        )
        .expect(StatusCode::CREATED)
        .await;
    let got = s
        .file(Method::GET, None, &url(html["id"].as_str().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), StatusCode::OK);
    let headers = got.headers();
    assert_eq!(
        headers["content-disposition"],
        "attachment; filename*=UTF-8''cat%2Epng"
    );
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(
        headers["content-security-policy"],
        "default-src 'none'; sandbox"
    );
    assert_eq!(
        headers["cache-control"],
        "public, max-age=31536000, immutable"
    );
    let image = s
        .file(Method::GET, None, &url(png["id"].as_str().unwrap()))
        .send()
        .await
        .unwrap();
    assert!(
        image.headers().get("content-disposition").is_none(),
        "an image shows inline"
    );
    let listed = s
        .file(
            Method::GET,
            None,
            "/v1/apps/notes/buckets/photos/files?limit=1",
        )
        .expect(StatusCode::OK)
        .await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    let cursor = listed["next_cursor"].as_str().unwrap();
    let rest = s
        .file(
            Method::GET,
            None,
            &format!("/v1/apps/notes/buckets/photos/files?limit=1&cursor={cursor}"),
        )
        .expect(StatusCode::OK)
        .await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);
    assert_eq!(rest["next_cursor"], Value::Null);
    // Still, only the owner deletes.
    s.file(
        Method::DELETE,
        Some(&s.bob),
        &url(png["id"].as_str().unwrap()),
    )
    .expect_error(StatusCode::NOT_FOUND, "file_not_found")
    .await;
}

#[tokio::test]
async fn quotas_hold_and_deleted_users_and_apps_leave_no_blob() {
    let s = scene_with(json!({ "types": ["image/*"] }), |config| {
        config.files.user_files = 2;
    })
    .await;
    let up = |token: &str| s.upload(Some(token), form(&[Part::File("a.png", "image/png", PNG)]));
    up(&s.alice).expect(StatusCode::CREATED).await;
    up(&s.alice).expect(StatusCode::CREATED).await;
    up(&s.alice)
        .expect_error(StatusCode::FORBIDDEN, "quota_exceeded")
        .await;
    up(&s.bob).expect(StatusCode::CREATED).await;
    assert_eq!(s.blobs().len(), 3, "the refused upload left no blob");

    // Alice deletes her account: her files go with it.
    s.file(Method::DELETE, Some(&s.alice), "/v1/apps/notes/auth/user")
        .no_content()
        .await;
    assert_eq!(s.blobs().len(), 1);
    // The app is deleted: every blob goes.
    s.t.admin(Method::DELETE, "/v1/admin/apps/notes")
        .no_content()
        .await;
    assert_eq!(s.blobs(), Vec::<PathBuf>::new());
    assert!(!s.t.data_dir.join("files").join("notes").exists());
}

#[tokio::test]
async fn buckets_are_admin_only_and_checked() {
    let s = scene(json!({})).await;
    let shown =
        s.t.admin(Method::GET, "/v1/admin/apps/notes/buckets/photos")
            .expect(StatusCode::OK)
            .await;
    assert_eq!(shown["types"], json!(["*/*"]));
    assert_eq!(shown["rules"]["view"], "owner = @auth.id");
    let as_user = s
        .file(
            Method::PUT,
            Some(&s.alice),
            "/v1/admin/apps/notes/buckets/mine",
        )
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(as_user.status(), StatusCode::FORBIDDEN);
    for (name, body) in [
        ("Photos", json!({})),
        ("ok", json!({ "types": ["image"] })),
        ("ok", json!({ "max_bytes": 0 })),
        ("ok", json!({ "rules": { "view": "size >" } })),
        ("ok", json!({ "rules": { "update": "" } })),
    ] {
        s.t.admin(Method::PUT, &format!("/v1/admin/apps/notes/buckets/{name}"))
            .json(&body)
            .expect_error(StatusCode::BAD_REQUEST, "invalid_bucket")
            .await;
    }
    let unknown =
        s.t.admin(Method::PUT, "/v1/admin/apps/notes/buckets/ok")
            .json(&json!({ "colour": "red" }))
            .send()
            .await
            .unwrap();
    assert_eq!(unknown.status(), StatusCode::UNPROCESSABLE_ENTITY);
    s.t.admin(Method::DELETE, "/v1/admin/apps/notes/buckets/photos")
        .no_content()
        .await;
    s.t.admin(Method::DELETE, "/v1/admin/apps/notes/buckets/photos")
        .expect_error(StatusCode::NOT_FOUND, "bucket_not_found")
        .await;
    let listed =
        s.t.admin(Method::GET, "/v1/admin/apps/notes/buckets")
            .expect(StatusCode::OK)
            .await;
    assert_eq!(listed["buckets"], json!([]));
}

#[tokio::test]
async fn a_record_points_only_at_files_its_writer_may_view() {
    let s = scene(json!({ "types": ["image/*"] })).await;
    s.t.admin(Method::PUT, "/v1/admin/apps/notes/collections/posts")
        .json(&json!({ "fields": [{ "name": "photo", "type": "file" }] }))
        .expect(StatusCode::CREATED)
        .await;
    let alices = s
        .upload(
            Some(&s.alice),
            form(&[Part::File("a.png", "image/png", PNG)]),
        )
        .expect(StatusCode::CREATED)
        .await;
    let id = alices["id"].as_str().unwrap();
    let post = |token: &str, photo: &str| {
        s.file(
            Method::POST,
            Some(token),
            "/v1/apps/notes/collections/posts/records",
        )
        .json(&json!({ "photo": photo }))
    };
    let mine = post(&s.alice, id).expect(StatusCode::CREATED).await;
    assert_eq!(mine["photo"], id);
    // Bob may not put Alice's file into a record of his (and read it through his own rules).
    for photo in [id, "fil_AAAAAAAAAAAAAAAAAAAAAA", "../../system.db"] {
        post(&s.bob, photo)
            .expect_error(StatusCode::BAD_REQUEST, "invalid_field_value")
            .await;
    }
    let record = mine["id"].as_str().unwrap();
    let update = s
        .file(
            Method::PATCH,
            Some(&s.bob),
            &format!("/v1/apps/notes/collections/posts/records/{record}"),
        )
        .json(&json!({ "photo": id }))
        .send()
        .await
        .unwrap();
    assert_ne!(update.status(), StatusCode::OK);
    let batch = s
        .file(Method::POST, Some(&s.bob), "/v1/apps/notes/batch")
        .json(&json!({ "operations": [{ "op": "create", "collection": "posts", "data": { "photo": id } }] }))
        .send()
        .await
        .unwrap();
    assert_eq!(batch.status(), StatusCode::BAD_REQUEST);
    // The admin may; and once the bucket is public, so may anyone.
    s.t.admin(Method::POST, "/v1/apps/notes/collections/posts/records")
        .json(&json!({ "photo": id }))
        .expect(StatusCode::CREATED)
        .await;
    s.t.admin(Method::PUT, "/v1/admin/apps/notes/buckets/photos")
        .json(&json!({ "types": ["image/*"], "rules": { "view": "" } }))
        .expect(StatusCode::OK)
        .await;
    post(&s.bob, id).expect(StatusCode::CREATED).await;
}

#[tokio::test]
async fn a_page_of_records_comes_with_its_files_signed() {
    let s = scene(json!({ "types": ["image/*"], "thumbs": ["100x100"] })).await;
    s.t.admin(Method::PUT, "/v1/admin/apps/notes/collections/posts")
        .json(&json!({
            "fields": [{ "name": "photo", "type": "file" }, { "name": "title", "type": "text" }],
            "rules": { "list": "", "view": "" }
        }))
        .expect(StatusCode::CREATED)
        .await;
    let photo = jpeg(64, 48);
    let alices = s
        .upload(
            Some(&s.alice),
            form(&[Part::File("a.jpg", "image/jpeg", &photo)]),
        )
        .expect(StatusCode::CREATED)
        .await;
    let id = alices["id"].as_str().unwrap();
    let gone = "fil_AAAAAAAAAAAAAAAAAAAAAA";
    for (title, photo) in [("one", id), ("two", id), ("three", gone)] {
        s.t.admin(Method::POST, "/v1/apps/notes/collections/posts/records")
            .json(&json!({ "title": title, "photo": photo }))
            .expect(StatusCode::CREATED)
            .await;
    }
    let list = |query: &str| {
        s.file(
            Method::GET,
            Some(&s.bob),
            &format!("/v1/apps/notes/collections/posts/records?{query}"),
        )
    };
    // Bob may list the posts, so he gets their photos, each once; a file gone is null.
    let page = list("file_urls=true").expect(StatusCode::OK).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 3);
    let urls = page["file_urls"].as_object().unwrap();
    assert_eq!(urls.len(), 2);
    assert_eq!(urls[gone], Value::Null);
    let link = urls[id]["url"].as_str().unwrap();
    let got = s.file(Method::GET, None, link).send().await.unwrap();
    assert_eq!(got.status(), StatusCode::OK);
    assert_eq!(got.bytes().await.unwrap().as_ref(), photo.as_slice());
    // Thumbnails of a size the bucket declares.
    let page = list("file_urls=100x100").expect(StatusCode::OK).await;
    let link = page["file_urls"][id]["url"].as_str().unwrap();
    assert!(link.contains("thumb=100x100"), "{link}");
    let got = s.file(Method::GET, None, link).send().await.unwrap();
    assert_eq!(got.status(), StatusCode::OK);
    assert_eq!(
        jpeg_size(&got.bytes().await.unwrap()),
        (48, 48),
        "cropped to the square and never enlarged"
    );
    // Only what the page shows; nothing unasked; nothing malformed.
    let page = list("fields=title&file_urls=true")
        .expect(StatusCode::OK)
        .await;
    assert_eq!(page["file_urls"], json!({}));
    let page = list("").expect(StatusCode::OK).await;
    assert!(page.get("file_urls").is_none());
    // A size the bucket does not serve: no URL for its files, and the page all the same.
    let page = list("file_urls=300x300").expect(StatusCode::OK).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 3);
    assert_eq!(page["file_urls"], json!({ id: null, gone: null }));
    for bad in [
        "file_urls=yes",
        "file_urls=0x0",
        "file_urls=",
        "file_urls=2x2x2",
    ] {
        list(bad)
            .expect_error(StatusCode::BAD_REQUEST, "invalid_query")
            .await;
    }
}

/// A `width`×`height` JPEG: red on the left half, blue on the right.
fn jpeg(width: u16, height: u16) -> Vec<u8> {
    let mut pixels = Vec::with_capacity(usize::from(width) * usize::from(height) * 3);
    for _ in 0..height {
        for x in 0..width {
            pixels.extend_from_slice(if x < width / 2 {
                &[250, 0, 0]
            } else {
                &[0, 0, 250]
            });
        }
    }
    let mut bytes = Vec::new();
    jpeg_encoder::Encoder::new(&mut bytes, 90)
        .encode(&pixels, width, height, jpeg_encoder::ColorType::Rgb)
        .unwrap();
    bytes
}

/// A JPEG's width and height.
fn jpeg_size(bytes: &[u8]) -> (u16, u16) {
    let mut decoder = jpeg_decoder::Decoder::new(bytes);
    decoder.read_info().unwrap();
    let info = decoder.info().unwrap();
    (info.width, info.height)
}

/// A PNG of 65 bytes whose header claims 100,000 × 100,000 pixels.
fn png_bomb() -> Vec<u8> {
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    png.extend_from_slice(&100_000u32.to_be_bytes());
    png.extend_from_slice(&100_000u32.to_be_bytes());
    png.extend_from_slice(&[8, 6, 0, 0, 0]);
    let crc = crc32(&png[12..]);
    png.extend_from_slice(&crc.to_be_bytes());
    // The first of the pixels: a few compressed bytes (a real bomb has many, all zeros).
    let idat = b"IDAT\x78\x9c\x03\x00\x00\x00\x00\x01";
    png.extend_from_slice(&8u32.to_be_bytes());
    png.extend_from_slice(idat);
    png.extend_from_slice(&crc32(idat).to_be_bytes());
    png.extend_from_slice(b"\0\0\0\0IEND\xaeB`\x82");
    png
}

#[tokio::test]
async fn thumbnails_are_made_once_in_declared_sizes_and_go_with_their_file() {
    let s =
        scene(json!({ "types": ["image/*", "application/pdf"], "thumbs": ["100x100", "80x0"] }))
            .await;
    let photo = jpeg(640, 480);
    let up = s
        .upload(
            Some(&s.alice),
            form(&[Part::File("p.jpg", "image/jpeg", &photo)]),
        )
        .expect(StatusCode::CREATED)
        .await;
    let id = up["id"].as_str().unwrap().to_owned();
    let thumb = format!("{}?thumb=100x100", url(&id));

    // Twenty at once: one decode, twenty equal answers.
    let requests = (0..20).map(|_| s.file(Method::GET, Some(&s.alice), &thumb).send());
    let answers = futures_util::future::join_all(requests).await;
    let mut bodies = Vec::new();
    for answer in answers {
        let answer = answer.unwrap();
        assert_eq!(answer.status(), StatusCode::OK);
        assert_eq!(answer.headers()["content-type"], "image/jpeg");
        let etag = format!("\"{}-100x100\"", up["sha256"].as_str().unwrap());
        assert_eq!(answer.headers()["etag"].to_str().unwrap(), etag);
        assert!(answer.headers().get("content-disposition").is_none());
        bodies.push(answer.bytes().await.unwrap());
    }
    assert!(bodies.iter().all(|b| *b == bodies[0]));
    assert_eq!(jpeg_size(&bodies[0]), (100, 100));
    assert!(
        s.t.metrics()
            .await
            .contains("cloudlet_thumbnails_made_total 1\n")
    );
    let kept =
        s.t.data_dir
            .join("files/notes/thumbs")
            .join(&id)
            .join("100x100");
    assert_eq!(std::fs::read(&kept).unwrap(), bodies[0].as_ref());

    // Asked again: the kept one, and a 304 for its ETag.
    let etag = format!("\"{}-100x100\"", up["sha256"].as_str().unwrap());
    let again = s
        .file(Method::GET, Some(&s.alice), &thumb)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert!(
        s.t.metrics()
            .await
            .contains("cloudlet_thumbnails_made_total 1\n")
    );

    // Only the declared sizes, and only for those who may view the file.
    for size in ["200x200", "100x100f", "big", "0x0", "../100x100"] {
        s.file(
            Method::GET,
            Some(&s.alice),
            &format!("{}?thumb={size}", url(&id)),
        )
        .expect_error(StatusCode::BAD_REQUEST, "invalid_thumb")
        .await;
    }
    s.file(Method::GET, Some(&s.bob), &thumb)
        .expect_error(StatusCode::NOT_FOUND, "file_not_found")
        .await;
    s.file(Method::GET, None, &thumb)
        .expect_error(StatusCode::NOT_FOUND, "file_not_found")
        .await;
    for path in [
        thumb.replace("/notes/", "/ghost/"),
        url(&id).replace("/notes/", "/ghost/"),
    ] {
        s.file(Method::GET, None, &path)
            .expect_error(StatusCode::NOT_FOUND, "app_not_found")
            .await;
    }
    assert!(!s.t.data_dir.join("apps").join("ghost").exists());
    assert!(!s.t.data_dir.join("files").join("ghost").exists());

    // A URL signed for a thumbnail opens that thumbnail, and no other.
    let signed = s
        .file(Method::POST, Some(&s.alice), "/v1/apps/notes/file-urls")
        .json(&json!({ "ids": [id], "thumb": "80x0" }))
        .expect(StatusCode::OK)
        .await;
    let link = signed["urls"][0]["url"].as_str().unwrap().to_owned();
    assert!(link.contains("thumb=80x0"), "{link}");
    let got = s.file(Method::GET, None, &link).send().await.unwrap();
    assert_eq!(got.status(), StatusCode::OK);
    assert_eq!(jpeg_size(&got.bytes().await.unwrap()), (80, 60));
    for tampered in [
        link.replace("thumb=80x0", "thumb=100x100"),
        link.replace("&thumb=80x0", ""),
    ] {
        s.file(Method::GET, None, &tampered)
            .expect_error(StatusCode::FORBIDDEN, "invalid_signature")
            .await;
    }
    s.file(Method::POST, Some(&s.alice), "/v1/apps/notes/file-urls")
        .json(&json!({ "ids": [id], "thumb": "300x300" }))
        .expect_error(StatusCode::BAD_REQUEST, "invalid_thumb")
        .await;
    // Whoever may not view the file learns nothing of its bucket's sizes.
    let none = s
        .file(Method::POST, Some(&s.bob), "/v1/apps/notes/file-urls")
        .json(&json!({ "ids": [id], "thumb": "300x300" }))
        .expect(StatusCode::OK)
        .await;
    assert_eq!(none["urls"], json!([null]));
    // A wrong signature answers the same for a file that is and one that is not.
    for file in [id.as_str(), "fil_AAAAAAAAAAAAAAAAAAAAAA"] {
        for query in ["expires=1&sig=x", "expires=1&thumb=80x0&sig=x"] {
            s.file(Method::GET, None, &format!("{}?{query}", url(file)))
                .expect_error(StatusCode::FORBIDDEN, "invalid_signature")
                .await;
        }
    }

    // What is not an image, a decompression bomb, and bytes that do not decode, each with its
    // code; asking again fails again the same way.
    let pdf = s
        .upload(
            Some(&s.alice),
            form(&[Part::File("a.pdf", "application/pdf", b"%PDF-1.7\n")]),
        )
        .expect(StatusCode::CREATED)
        .await;
    let bomb = s
        .upload(
            Some(&s.alice),
            form(&[Part::File("b.png", "image/png", &png_bomb())]),
        )
        .expect(StatusCode::CREATED)
        .await;
    let mut broken = photo[..photo.len() / 4].to_vec();
    broken.extend_from_slice(&[0xff; 64]);
    let broken = s
        .upload(
            Some(&s.alice),
            form(&[Part::File("c.jpg", "image/jpeg", &broken)]),
        )
        .expect(StatusCode::CREATED)
        .await;
    for (file, status, code) in [
        (&pdf, StatusCode::UNPROCESSABLE_ENTITY, "thumb_unavailable"),
        (&bomb, StatusCode::UNPROCESSABLE_ENTITY, "image_too_large"),
        (
            &broken,
            StatusCode::UNPROCESSABLE_ENTITY,
            "thumb_unavailable",
        ),
        (
            &broken,
            StatusCode::UNPROCESSABLE_ENTITY,
            "thumb_unavailable",
        ),
    ] {
        let path = format!("{}?thumb=100x100", url(file["id"].as_str().unwrap()));
        s.file(Method::GET, Some(&s.alice), &path)
            .expect_error(status, code)
            .await;
    }
    assert!(
        !s.t.data_dir
            .join("files/notes/thumbs")
            .join(broken["id"].as_str().unwrap())
            .exists()
    );
    // The bomb and the broken JPEG each failed one decode: the second ask of the broken one
    // was answered from memory.
    assert!(
        s.t.metrics()
            .await
            .contains("cloudlet_thumbnail_failures_total 2\n")
    );

    // The file deleted: its thumbnails go with it.
    s.file(Method::DELETE, Some(&s.alice), &url(&id))
        .no_content()
        .await;
    assert!(!s.t.data_dir.join("files/notes/thumbs").join(&id).exists());
    s.file(Method::GET, Some(&s.alice), &thumb)
        .expect_error(StatusCode::NOT_FOUND, "file_not_found")
        .await;
}
