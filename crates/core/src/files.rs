//! Files: each app's buckets, uploads into them under their rules and limits, downloads, signed
//! URLs, quotas, and the sweep that deletes the blobs of deleted files.
//!
//! A bucket is declared like a collection: which types it takes (sniffed from the bytes, never
//! the name), how large a file may be, and four rules (`list`, `view`, `create`, `delete`) in the
//! filter language, over a file's `owner`, `name`, `type`, `size`, `metadata`, `created_at`.
//! The default is owner-only, as on the mini-program platforms; a `view` rule of `""` makes the
//! bucket's files public.
//!
//! An upload streams: its row is inserted first (the create rule checked on what the client
//! declares), the bytes go to the blob store through [`Intake`], which counts, hashes and
//! sniffs them and stops at the bucket's limits, and completing the upload checks the rule again
//! on the real type and size and counts the bytes against the quotas, in one transaction. What
//! fails on the way leaves a row the sweep removes, and its blob in the trash.
//!
//! A mini program's `<image src>` cannot send a token, so a file is also reached by a signed
//! URL: an HMAC over the app, the file, the expiry and any transform, whose expiry is rounded up
//! to a fixed window so that one image keeps one URL (and stays in caches) between renders.

use std::collections::HashMap;
use std::io;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use cloudlet_query::{Bindings, FieldType, Limits, Predicate, Schema};
use cloudlet_store::blobs::FILE_ID_PREFIX;
use cloudlet_store::{
    AppName, BlobKey, BlobStore, BucketRow, ByteStream, Condition, FILE_DELETED, FILE_UPLOADED,
    FileId, FileQuery, FileQuota, FileRow, FileStore, NewFile, StoreError, StoredBytes,
};
use futures_util::StreamExt;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};
use sha2::{Digest, Sha256};

use crate::access::Caller;
use crate::clock::{Clock, Timestamp};
use crate::random::Random;
use crate::thumbs::ThumbSpec;

mod thumbnails;

use thumbnails::declared;

pub use thumbnails::MAX_THUMB_SOURCE_BYTES;

/// The largest file any bucket may take.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024 * 1024;
/// A bucket's `max_bytes` when it says none.
pub const DEFAULT_MAX_BYTES: u64 = 10 * 1024 * 1024;
/// The most buckets an app may have.
const MAX_BUCKETS: usize = 100;
/// A file name's most bytes.
const MAX_NAME_BYTES: usize = 255;
/// A file's metadata: most bytes of JSON.
const MAX_METADATA_BYTES: usize = 4 * 1024;
/// What a multipart body may hold beyond its file: the boundaries, part headers and form
/// fields.
pub const MULTIPART_SLACK: u64 = 64 * 1024;
/// How many leading bytes decide a file's type.
const SNIFF_BYTES: usize = 8 * 1024;
/// A page of files: most.
pub const MAX_PAGE: usize = 200;
/// Signed URLs: the default and the longest lifetime, and the window expiries round up to.
pub const DEFAULT_URL_SECS: u64 = 3_600;
pub const MAX_URL_SECS: u64 = 7 * 24 * 3_600;
const URL_WINDOW_SECS: u64 = 600;
/// The most files one call signs.
pub const MAX_SIGN: usize = 100;
/// An upload not completed after this long is abandoned by the sweep.
const STALE_UPLOAD_MS: i64 = 24 * 3_600 * 1_000;
/// Blobs deleted per sweep step, and steps per sweep.
const SWEEP_BATCH: usize = 200;
const SWEEP_STEPS: usize = 10;
/// Uploads running at once: per user (WeChat allows ten `uploadFile`s at once) and per app.
pub const UPLOADS_PER_USER: usize = 10;
pub const UPLOADS_PER_APP: usize = 128;

const ACTIONS: [&str; 4] = ["list", "view", "create", "delete"];

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("no bucket named {0:?}")]
    BucketNotFound(String),
    #[error("invalid bucket: {0}")]
    InvalidBucket(String),
    #[error("no such file")]
    NotFound,
    #[error("the {0} rule does not allow this")]
    Forbidden(&'static str),
    #[error("a file in this bucket is at most {0} bytes")]
    TooLarge(u64),
    #[error("this bucket does not take {0} files")]
    TypeNotAllowed(String),
    #[error("the file is empty")]
    EmptyFile,
    #[error("invalid file name: {0}")]
    InvalidName(&'static str),
    #[error("invalid metadata: {0}")]
    InvalidMetadata(String),
    #[error("the upload would pass the {0} quota")]
    QuotaExceeded(&'static str),
    #[error("the upload ended before the file did: {0}")]
    Incomplete(String),
    /// Reading the upload's body failed (the client went, paused too long, sent too much): the
    /// cause is kept for the API to tell which.
    #[error("the upload ended before the file did: {0}")]
    Interrupted(#[source] std::io::Error),
    #[error("the range is outside the file")]
    RangeNotSatisfiable { size: u64 },
    #[error("invalid signed URL: {0}")]
    InvalidSignature(&'static str),
    #[error("the signed URL expired")]
    Expired,
    #[error("{0}")]
    InvalidRequest(String),
    #[error("too many uploads at once: at most {0} per user and {UPLOADS_PER_APP} per app")]
    TooManyUploads(usize),
    #[error("this bucket serves thumbnails of the sizes it declares ({0}), not {1:?}")]
    ThumbNotDeclared(String, String),
    #[error(transparent)]
    Thumb(#[from] crate::thumbs::ThumbError),
    #[error(
        "the file is {0} bytes: thumbnails are made of images of at most {MAX_THUMB_SOURCE_BYTES}"
    )]
    ImageTooLarge(u64),
    #[error("too many thumbnails are being made: try again shortly")]
    Busy,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What an admin declares: `PUT …/buckets/{name}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BucketInput {
    /// Types taken, sniffed from the bytes: `image/*`, `application/pdf`, `*/*`. Default
    /// `["*/*"]`.
    #[serde(default)]
    pub types: Option<Vec<String>>,
    /// A file's most bytes; default 10 MiB, at most 1 GiB.
    #[serde(default)]
    pub max_bytes: Option<u64>,
    /// The thumbnail sizes served, `WxH` (used by thumbnails).
    #[serde(default)]
    pub thumbs: Option<Vec<String>>,
    /// `list`, `view`, `create`, `delete`: an expression, `""` for everyone, `null` for the
    /// admin only; left out, the default (owner-only; any logged-in user creates).
    #[serde(default)]
    pub rules: HashMap<String, Option<String>>,
}

/// A bucket as the API shows it, its defaults filled in.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BucketView {
    pub name: String,
    pub types: Vec<String>,
    pub max_bytes: u64,
    pub thumbs: Vec<String>,
    pub rules: std::collections::BTreeMap<String, Option<String>>,
}

/// A file as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FileView {
    pub id: String,
    pub bucket: String,
    pub owner: Option<String>,
    pub name: String,
    #[serde(rename = "type")]
    pub content_type: String,
    pub size: i64,
    /// The hex SHA-256 of the bytes: the `ETag`.
    pub sha256: String,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub metadata: Json,
    pub created_at: String,
    /// Whether anyone may view it (the bucket's view rule is `""`): its plain URL needs no
    /// token or signature.
    pub public: bool,
}

#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FilePage {
    pub items: Vec<FileView>,
    pub next_cursor: Option<String>,
}

/// What a client says of a file it uploads; nothing of it is trusted for the type.
#[derive(Debug, Clone, Default)]
pub struct Upload {
    pub name: String,
    pub metadata: Option<Map<String, Json>>,
    /// The type the client declares (a part's `Content-Type`), for the create rule's first
    /// look only.
    pub declared_type: Option<String>,
    /// The file's exact length, when the client says it (a plain upload's `Content-Length`).
    pub declared_size: Option<u64>,
    /// The length of a multipart body that carries the file: the file is somewhat smaller.
    pub body_length: Option<u64>,
}

/// A signed URL's query: `expires` (Unix seconds), `thumb` (if any) and `sig`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Signature {
    pub expires: u64,
    #[serde(default)]
    pub thumb: Option<String>,
    pub sig: String,
}

/// One signed URL, or `None` for a file the caller may not view.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SignedUrl {
    pub id: String,
    /// The path and query to `GET` (relative to the server's public URL).
    pub url: String,
    pub expires_at: String,
}

/// A file, or one of its thumbnails, being read.
pub struct Download {
    pub file: FileView,
    /// What is sent: the file, or a thumbnail of it.
    pub content_type: String,
    pub size: u64,
    /// The quoted `ETag`: the file's SHA-256 (and the thumbnail size).
    pub etag: String,
    /// The bytes sent: the whole file, or the range asked for.
    pub range: Range<u64>,
    pub body: ByteStream,
    /// Opened with a signed URL: how long it is still valid, in seconds.
    pub signed_for_secs: Option<u64>,
}

impl std::fmt::Debug for Download {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Download")
            .field("file", &self.file.id)
            .field("range", &self.range)
            .finish()
    }
}

/// How much an app, and each user in it, may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quotas {
    pub app_bytes: Option<u64>,
    pub app_files: Option<u64>,
    pub user_bytes: Option<u64>,
    pub user_files: Option<u64>,
}

impl Default for Quotas {
    fn default() -> Self {
        Quotas {
            app_bytes: Some(10 * 1024 * 1024 * 1024),
            app_files: Some(1_000_000),
            user_bytes: Some(1024 * 1024 * 1024),
            user_files: Some(10_000),
        }
    }
}

enum Rule {
    Open,
    Locked,
    When(Arc<Predicate>),
}

struct Bucket {
    view: BucketView,
    rules: HashMap<&'static str, Rule>,
}

impl Bucket {
    fn compile(name: &str, input: BucketInput) -> Result<Bucket, FileError> {
        let invalid = |m: String| FileError::InvalidBucket(m);
        if !crate::data::valid_name(name) {
            return Err(invalid(
                "a bucket name is 1 to 40 of a-z, 0-9 and _, starting with a letter".into(),
            ));
        }
        let types = input.types.unwrap_or_else(|| vec!["*/*".into()]);
        if types.is_empty() || types.len() > 50 {
            return Err(invalid("types: 1 to 50 patterns".into()));
        }
        for pattern in &types {
            if !valid_type_pattern(pattern) {
                return Err(invalid(format!(
                    "type {pattern:?}: a type (image/png), a family (image/*) or */*"
                )));
            }
        }
        let max_bytes = input.max_bytes.unwrap_or(DEFAULT_MAX_BYTES);
        if !(1..=MAX_FILE_BYTES).contains(&max_bytes) {
            return Err(invalid(format!("max_bytes: 1 to {MAX_FILE_BYTES}")));
        }
        let thumbs = input.thumbs.unwrap_or_default();
        let canonical = |t: &String| ThumbSpec::parse(t).is_some_and(|s| s.to_string() == *t);
        if thumbs.len() > 16 || !thumbs.iter().all(canonical) {
            return Err(invalid(
                "thumbs: up to 16 sizes WxH (200x200, 200x200t, 200x200b, 200x200f, 0x200, \
                 200x0), each side at most 2000"
                    .into(),
            ));
        }
        for action in input.rules.keys() {
            if !ACTIONS.contains(&action.as_str()) {
                return Err(invalid(format!(
                    "unknown rule {action:?}; rules: {}",
                    ACTIONS.join(", ")
                )));
            }
        }
        let schema = Arc::new(file_schema());
        let mut shown = std::collections::BTreeMap::new();
        let mut rules = HashMap::new();
        for action in ACTIONS {
            let text = match input.rules.get(action) {
                Some(text) => text.clone(),
                None => Some(default_rule(action).to_owned()),
            };
            let rule = match &text {
                None => Rule::Locked,
                Some(text) if text.trim().is_empty() => Rule::Open,
                Some(text) => {
                    let expr = cloudlet_query::parse(text, Limits::default())
                        .map_err(|e| invalid(format!("{action} rule: {e}")))?;
                    let predicate = Predicate::new(expr, Arc::clone(&schema))
                        .map_err(|e| invalid(format!("{action} rule: {e}")))?;
                    Rule::When(Arc::new(predicate))
                }
            };
            shown.insert(action.to_owned(), text);
            rules.insert(action, rule);
        }
        Ok(Bucket {
            view: BucketView {
                name: name.to_owned(),
                types,
                max_bytes,
                thumbs,
                rules: shown,
            },
            rules,
        })
    }

    fn takes(&self, content_type: &str) -> bool {
        self.view.types.iter().any(|pattern| {
            pattern == "*/*"
                || pattern == content_type
                || pattern
                    .strip_suffix("/*")
                    .is_some_and(|family| content_type.split('/').next() == Some(family))
        })
    }

    fn is_public(&self) -> bool {
        matches!(self.rules.get("view"), Some(Rule::Open))
    }
}

fn default_rule(action: &str) -> &'static str {
    if action == "create" {
        "@auth.id != null"
    } else {
        "owner = @auth.id"
    }
}

/// What rules see of a file: the system fields and these.
fn file_schema() -> Schema {
    Schema::new()
        .with("bucket", FieldType::Text)
        .with("name", FieldType::Text)
        .with("type", FieldType::Text)
        .with("size", FieldType::Integer)
        .with("metadata", FieldType::Json)
}

fn valid_type_pattern(pattern: &str) -> bool {
    let token = |t: &str| {
        !t.is_empty()
            && t.len() <= 100
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
    };
    match pattern.split_once('/') {
        Some(("*", "*")) => true,
        Some((family, "*")) => token(family),
        Some((family, sub)) => token(family) && token(sub),
        None => false,
    }
}

/// The name a client gave, cleaned: its last path segment (mini programs send temporary paths),
/// without control characters, at most [`MAX_NAME_BYTES`].
pub fn clean_name(name: &str) -> Result<String, FileError> {
    let last = name.rsplit(['/', '\\']).next().unwrap_or("").trim();
    if last.chars().any(char::is_control) {
        return Err(FileError::InvalidName("control characters or NUL"));
    }
    // Bidirectional overrides make `gpj.exe` read as `exe.jpg`.
    let bidi = |c: char| matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}');
    if last.chars().any(bidi) {
        return Err(FileError::InvalidName("bidirectional control characters"));
    }
    if last.len() > MAX_NAME_BYTES {
        return Err(FileError::InvalidName("at most 255 bytes"));
    }
    if last.is_empty() || last == "." || last == ".." {
        return Ok("file".to_owned());
    }
    Ok(last.to_owned())
}

/// The type of a file, from its first bytes; `application/octet-stream` when unknown.
pub fn sniff(head: &[u8]) -> String {
    // WeChat's and QQ's voice messages, which `infer` does not know.
    if head.starts_with(b"#!SILK_V3") || head.starts_with(b"\x02#!SILK_V3") {
        return "audio/silk".to_owned();
    }
    if head.starts_with(b"#!AMR\n") {
        return "audio/amr".to_owned();
    }
    match infer::get(head) {
        Some(kind) => kind.mime_type().to_owned(),
        None => "application/octet-stream".to_owned(),
    }
}

/// What [`Intake`] learned of the bytes that went through it, and why it stopped them, if it
/// did.
#[derive(Default)]
struct Tally {
    size: u64,
    hash: Sha256,
    head: Vec<u8>,
    content_type: Option<String>,
    refusal: Option<FileError>,
}

/// Wraps an upload's body on its way to the blob store: counts, hashes and sniffs the bytes,
/// and fails the stream (so that the blob is never completed) past the bucket's size or on a
/// type it does not take.
fn intake(body: ByteStream, bucket: Arc<Bucket>, tally: Arc<Mutex<Tally>>) -> ByteStream {
    let max = bucket.view.max_bytes;
    let state = (body, bucket, tally, false);
    Box::pin(futures_util::stream::unfold(
        state,
        move |(mut body, bucket, tally, done)| async move {
            if done {
                return None;
            }
            let next = body.next().await;
            let mut t = lock(&tally);
            let refuse = |t: &mut Tally, e: FileError| {
                let message = e.to_string();
                t.refusal = Some(e);
                io::Error::other(message)
            };
            let item = match next {
                Some(Ok(chunk)) => {
                    t.size += chunk.len() as u64;
                    if t.size > max {
                        Err(refuse(&mut t, FileError::TooLarge(max)))
                    } else {
                        t.hash.update(&chunk);
                        if t.content_type.is_none() {
                            let room = SNIFF_BYTES - t.head.len();
                            t.head.extend_from_slice(&chunk[..room.min(chunk.len())]);
                        }
                        match decide_type(&mut t, &bucket, false) {
                            Ok(()) => Ok(chunk),
                            Err(e) => Err(refuse(&mut t, e)),
                        }
                    }
                }
                Some(Err(e)) => {
                    let kind = e.kind();
                    t.refusal = Some(FileError::Interrupted(e));
                    Err(std::io::Error::new(kind, "the upload's body failed"))
                }
                None => {
                    let checked = if t.size == 0 {
                        Err(FileError::EmptyFile)
                    } else {
                        decide_type(&mut t, &bucket, true)
                    };
                    match checked {
                        Ok(()) => return None,
                        Err(e) => Err(refuse(&mut t, e)),
                    }
                }
            };
            let failed = item.is_err();
            drop(t);
            Some((item, (body, bucket, tally, failed)))
        },
    ))
}

/// Sniffs the type once enough bytes are in (or the stream ended) and checks the bucket takes
/// it.
fn decide_type(t: &mut Tally, bucket: &Bucket, ended: bool) -> Result<(), FileError> {
    if t.content_type.is_some() || (t.head.len() < SNIFF_BYTES && !ended) {
        return Ok(());
    }
    let found = sniff(&t.head);
    t.head = Vec::new();
    if !bucket.takes(&found) {
        return Err(FileError::TypeNotAllowed(found));
    }
    t.content_type = Some(found);
    Ok(())
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One app's compiled buckets by name.
type AppBuckets = Arc<HashMap<String, Arc<Bucket>>>;

/// The files service. Cheap to clone.
#[derive(Clone)]
pub struct Files(Arc<Inner>);

struct Inner {
    store: Arc<dyn FileStore>,
    blobs: Arc<dyn BlobStore>,
    clock: Arc<dyn Clock>,
    random: Arc<dyn Random>,
    /// Signs URLs: derived from the master key by the composition root.
    url_key: [u8; 32],
    quotas: Quotas,
    /// Which functions a file's upload or deletion triggers, set once the functions exist.
    triggers: std::sync::OnceLock<Arc<dyn crate::data::Triggers>>,
    cache: Mutex<Cache>,
    /// Rings the other nodes when a bucket changes. Set once.
    bell: std::sync::OnceLock<Arc<dyn cloudlet_store::Bell>>,
    /// Uploads running, per app and per (app, user).
    running: Mutex<HashMap<(AppName, Option<String>), usize>>,
    thumbnails: thumbnails::Thumbnails,
}

/// Compiled buckets per app, and a count of changes: a load that began before a change must not
/// put what it read into the cache after it.
#[derive(Default)]
struct Cache {
    apps: HashMap<AppName, AppBuckets>,
    changes: u64,
}

/// One upload's place among those running; given back when dropped.
struct UploadSlot {
    files: Files,
    keys: [(AppName, Option<String>); 2],
}

impl Drop for UploadSlot {
    fn drop(&mut self) {
        let mut running = lock(&self.files.0.running);
        for key in &self.keys {
            if let Some(count) = running.get_mut(key) {
                *count -= 1;
                if *count == 0 {
                    running.remove(key);
                }
            }
        }
    }
}

impl Files {
    /// What the whole app holds: bytes and files, thumbnails counted.
    pub async fn usage(&self, app: &AppName) -> Result<cloudlet_store::FileUsage, FileError> {
        Ok(self.0.store.file_usage(app, None).await?)
    }

    pub fn new(
        store: Arc<dyn FileStore>,
        blobs: Arc<dyn BlobStore>,
        clock: Arc<dyn Clock>,
        random: Arc<dyn Random>,
        url_key: [u8; 32],
        quotas: Quotas,
    ) -> Self {
        Files(Arc::new(Inner {
            store,
            blobs,
            clock,
            random,
            url_key,
            quotas,
            triggers: std::sync::OnceLock::new(),
            cache: Mutex::new(Cache::default()),
            running: Mutex::new(HashMap::new()),
            thumbnails: thumbnails::Thumbnails::new(),
            bell: std::sync::OnceLock::new(),
        }))
    }

    /// Routes files' events to the functions they trigger (the composition root sets it once).
    pub fn set_triggers(&self, triggers: Arc<dyn crate::data::Triggers>) {
        let _ = self.0.triggers.set(triggers);
    }

    /// What an event of `bucket` (`files.upload`, `files.delete`) records beside its write, if
    /// it triggers anything; as deep as the run that causes it.
    async fn emit(
        &self,
        app: &AppName,
        bucket: &str,
        kind: &str,
    ) -> Result<Option<(cloudlet_store::Emit, crate::queues::HintTicket)>, FileError> {
        let Some(triggers) = self.0.triggers.get() else {
            return Ok(None);
        };
        let depth = crate::data::TRIGGER_DEPTH
            .try_with(|depth| *depth)
            .unwrap_or(0);
        Ok(triggers.emit_for_files(app, bucket, kind, depth).await?)
    }

    async fn emitted(&self, app: &AppName, ticket: Option<crate::queues::HintTicket>) {
        if let (Some(triggers), Some(ticket)) = (self.0.triggers.get(), ticket) {
            triggers.emitted(app, ticket).await;
        }
    }

    /// Where the bytes are kept, for logs.
    pub fn blobs_description(&self) -> String {
        self.0.blobs.describe()
    }

    // ---- buckets ----------------------------------------------------------------------------

    async fn buckets_of(&self, app: &AppName) -> Result<AppBuckets, FileError> {
        let changes = {
            let cache = lock(&self.0.cache);
            if let Some(found) = cache.apps.get(app) {
                return Ok(Arc::clone(found));
            }
            cache.changes
        };
        let mut loaded = HashMap::new();
        for row in self.0.store.buckets(app).await? {
            let input: BucketInput = serde_json::from_str(&row.settings)
                .map_err(|e| StoreError::Task(format!("stored bucket {}: {e}", row.name)))?;
            let bucket = Bucket::compile(&row.name, input)?;
            loaded.insert(row.name, Arc::new(bucket));
        }
        let loaded = Arc::new(loaded);
        let mut cache = lock(&self.0.cache);
        if cache.changes == changes {
            cache.apps.insert(app.clone(), Arc::clone(&loaded));
        }
        Ok(loaded)
    }

    async fn bucket_of(&self, app: &AppName, name: &str) -> Result<Arc<Bucket>, FileError> {
        self.buckets_of(app)
            .await?
            .get(name)
            .cloned()
            .ok_or_else(|| FileError::BucketNotFound(name.to_owned()))
    }

    /// Forgets what is cached of an app (it was deleted or idled out, or another node
    /// changed its buckets).
    pub fn forget(&self, app: &AppName) {
        let mut cache = lock(&self.0.cache);
        cache.apps.remove(app);
        cache.changes += 1;
    }

    /// Forgets what is cached of every app (the other nodes' rings may have been missed).
    pub fn forget_all(&self) {
        let mut cache = lock(&self.0.cache);
        cache.apps.clear();
        cache.changes += 1;
    }

    /// Rings the other nodes when a bucket changes. Set once.
    pub fn set_bell(&self, bell: Arc<dyn cloudlet_store::Bell>) {
        let _ = self.0.bell.set(bell);
    }

    /// A bucket of `app` changed here: forgotten here, and the other nodes told.
    fn changed(&self, app: &AppName) {
        self.forget(app);
        if let Some(bell) = self.0.bell.get() {
            bell.ring(app, cloudlet_store::Topic::Buckets);
        }
    }

    /// Declares or replaces a bucket. Admin and app key only.
    pub async fn put_bucket(
        &self,
        app: &AppName,
        caller: &Caller,
        name: &str,
        input: BucketInput,
    ) -> Result<BucketView, FileError> {
        admin_only(app, caller)?;
        let bucket = Bucket::compile(name, input.clone())?;
        let existing = self.buckets_of(app).await?;
        if !existing.contains_key(name) && existing.len() >= MAX_BUCKETS {
            return Err(FileError::InvalidBucket(format!(
                "an app has at most {MAX_BUCKETS} buckets"
            )));
        }
        let now = self.0.clock.now().unix_ms();
        let settings = serde_json::to_string(&input)
            .map_err(|e| StoreError::Task(format!("bucket settings: {e}")))?;
        let row = BucketRow {
            name: name.to_owned(),
            settings,
            created_at_ms: now,
            updated_at_ms: now,
        };
        self.0.store.put_bucket(app, row).await?;
        self.changed(app);
        Ok(bucket.view)
    }

    pub async fn bucket(
        &self,
        app: &AppName,
        caller: &Caller,
        name: &str,
    ) -> Result<BucketView, FileError> {
        admin_only(app, caller)?;
        Ok(self.bucket_of(app, name).await?.view.clone())
    }

    pub async fn buckets(
        &self,
        app: &AppName,
        caller: &Caller,
    ) -> Result<Vec<BucketView>, FileError> {
        admin_only(app, caller)?;
        let mut views: Vec<BucketView> = self
            .buckets_of(app)
            .await?
            .values()
            .map(|b| b.view.clone())
            .collect();
        views.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(views)
    }

    /// Deletes a bucket and every file in it (their blobs go with the next sweep).
    pub async fn delete_bucket(
        &self,
        app: &AppName,
        caller: &Caller,
        name: &str,
    ) -> Result<(), FileError> {
        admin_only(app, caller)?;
        let deleted = self.0.store.delete_bucket(app, name).await?;
        self.changed(app);
        if !deleted {
            return Err(FileError::BucketNotFound(name.to_owned()));
        }
        self.sweep_quietly(app).await;
        Ok(())
    }

    // ---- rules ------------------------------------------------------------------------------

    /// The condition `action`'s rule puts on what `caller` reaches; `None` if it reaches
    /// nothing at all (a locked rule for a user).
    fn condition(
        &self,
        bucket: &Bucket,
        action: &'static str,
        caller: &Caller,
    ) -> Option<Condition> {
        if is_admin(caller) {
            return Some(Condition::always());
        }
        match bucket.rules.get(action) {
            Some(Rule::Open) => Some(Condition::always()),
            Some(Rule::When(predicate)) => {
                Some(Condition::with_bindings(self.bindings(caller)).and(Arc::clone(predicate)))
            }
            Some(Rule::Locked) | None => None,
        }
    }

    fn bindings(&self, caller: &Caller) -> Bindings {
        let (auth_id, auth_provider) = match caller {
            Caller::User(user) => (Some(user.user_id.clone()), Some(user.provider.clone())),
            _ => (None, None),
        };
        Bindings {
            auth_id,
            auth_provider,
            now_ms: self.0.clock.now().unix_ms(),
            request_data: Default::default(),
        }
    }

    // ---- uploads ----------------------------------------------------------------------------

    /// What can be checked of an upload before its body is read: the bucket exists, the caller
    /// may upload at all (a locked create rule), the body's declared length fits. Answers the
    /// bucket's `max_bytes`, to bound the reading of a form.
    pub async fn prepare_upload(
        &self,
        app: &AppName,
        caller: &Caller,
        bucket_name: &str,
        body_length: Option<u64>,
    ) -> Result<u64, FileError> {
        admit(app, caller)?;
        let bucket = self.bucket_of(app, bucket_name).await?;
        self.condition(&bucket, "create", caller)
            .ok_or(FileError::Forbidden("create"))?;
        let max = bucket.view.max_bytes;
        if body_length.is_some_and(|size| size > max + MULTIPART_SLACK) {
            return Err(FileError::TooLarge(max));
        }
        Ok(max)
    }

    /// A place among the uploads running, or [`FileError::TooManyUploads`].
    fn take_slot(&self, app: &AppName, caller: &Caller) -> Result<UploadSlot, FileError> {
        let user = match caller {
            Caller::User(user) => Some(user.user_id.clone()),
            _ => None,
        };
        let keys = [(app.clone(), None), (app.clone(), user.clone())];
        let mut running = lock(&self.0.running);
        let in_app = running.get(&keys[0]).copied().unwrap_or(0);
        let by_user = running.get(&keys[1]).copied().unwrap_or(0);
        if in_app >= UPLOADS_PER_APP || (user.is_some() && by_user >= UPLOADS_PER_USER) {
            return Err(FileError::TooManyUploads(UPLOADS_PER_USER));
        }
        *running.entry(keys[0].clone()).or_insert(0) += 1;
        if user.is_some() {
            *running.entry(keys[1].clone()).or_insert(0) += 1;
        }
        drop(running);
        let keys = if user.is_some() {
            keys
        } else {
            // Counted once: the second key is the app's own line, not taken twice.
            [keys[0].clone(), (app.clone(), Some(String::new()))]
        };
        Ok(UploadSlot {
            files: self.clone(),
            keys,
        })
    }

    /// Stores an upload into `bucket` and answers the file, or why not.
    pub async fn upload(
        &self,
        app: &AppName,
        caller: &Caller,
        bucket_name: &str,
        upload: Upload,
        body: ByteStream,
    ) -> Result<FileView, FileError> {
        admit(app, caller)?;
        let _slot = self.take_slot(app, caller)?;
        let bucket = self.bucket_of(app, bucket_name).await?;
        let max = bucket.view.max_bytes;
        if upload.declared_size.is_some_and(|size| size > max)
            || upload
                .body_length
                .is_some_and(|size| size > max + MULTIPART_SLACK)
        {
            return Err(FileError::TooLarge(max));
        }
        if upload.declared_size == Some(0) {
            return Err(FileError::EmptyFile);
        }
        let check = self
            .condition(&bucket, "create", caller)
            .ok_or(FileError::Forbidden("create"))?;
        let name = clean_name(&upload.name)?;
        let metadata = Json::Object(upload.metadata.unwrap_or_default()).to_string();
        // PostgreSQL's jsonb refuses NUL; so do both backends.
        if metadata.contains("\\u0000") {
            return Err(FileError::InvalidMetadata("NUL in a key or a value".into()));
        }
        if metadata.len() > MAX_METADATA_BYTES {
            return Err(FileError::InvalidMetadata(format!(
                "at most {MAX_METADATA_BYTES} bytes of JSON"
            )));
        }
        let declared_type = upload
            .declared_type
            .filter(|t| t.len() <= 100)
            .unwrap_or_default();
        let id = self.new_id()?;
        let owner = match caller {
            Caller::User(user) => Some(user.user_id.clone()),
            _ => None,
        };
        let new = NewFile {
            id: id.as_str().to_owned(),
            bucket: bucket_name.to_owned(),
            owner,
            name,
            metadata,
            declared_type,
            declared_size: upload.declared_size.map_or(0, |s| s as i64),
            created_at_ms: self.0.clock.now().unix_ms(),
        };
        match self.0.store.begin_upload(app, new, check.clone()).await {
            Ok(()) => {}
            Err(StoreError::CheckFailed) => return Err(FileError::Forbidden("create")),
            Err(StoreError::NotFound) => {
                self.forget(app);
                return Err(FileError::BucketNotFound(bucket_name.to_owned()));
            }
            Err(e) => return Err(e.into()),
        }
        let key = BlobKey::new(app, &id);
        let tally = Arc::new(Mutex::new(Tally::default()));
        let stored = self
            .0
            .blobs
            .put(&key, intake(body, Arc::clone(&bucket), Arc::clone(&tally)))
            .await;
        let (refusal, bytes) = {
            let mut t = lock(&tally);
            let hash = std::mem::take(&mut t.hash);
            let bytes = StoredBytes {
                content_type: t.content_type.clone().unwrap_or_default(),
                size: t.size as i64,
                sha256: hex::encode(hash.finalize()),
            };
            (t.refusal.take(), bytes)
        };
        if let Err(e) = stored {
            self.abandon(app, &key).await;
            return Err(refusal.unwrap_or(FileError::Store(e)));
        }
        let (emit, ticket) = match self.emit(app, bucket_name, FILE_UPLOADED).await {
            Ok(Some((emit, ticket))) => (Some(emit), Some(ticket)),
            Ok(None) => (None, None),
            Err(e) => {
                self.abandon(app, &key).await;
                return Err(e);
            }
        };
        let completed = self
            .0
            .store
            .complete_upload(app, id.as_str(), bytes, self.quota(caller), check, emit)
            .await;
        // Rung whether or not the write committed: a hint may be early, never late.
        self.emitted(app, ticket).await;
        let file = match completed {
            Ok(file) => file,
            Err(e) => {
                self.abandon(app, &key).await;
                return Err(match e {
                    StoreError::CheckFailed => FileError::Forbidden("create"),
                    StoreError::NotFound => FileError::Incomplete(
                        "the upload was dropped meanwhile (its bucket or its owner deleted)".into(),
                    ),
                    StoreError::OverQuota => FileError::QuotaExceeded(if caller_is_user(caller) {
                        "user's or app's"
                    } else {
                        "app's"
                    }),
                    other => other.into(),
                });
            }
        };
        Ok(self.view(&bucket, file))
    }

    /// Drops a failed upload: its blob at once if it got that far (the row's trash entry covers
    /// a crash before this). An upload whose completion committed though its answer was lost
    /// is no longer pending: its row and blob stay.
    async fn abandon(&self, app: &AppName, key: &BlobKey) {
        let id = key.file().as_str().to_owned();
        let trashed = match self.0.store.abandon_upload(app, &id).await {
            Ok(true) => true,
            Ok(false) => return,
            // The app was deleted meanwhile with all its rows, and its blobs before this one
            // was written: nothing else will ever delete it.
            Err(StoreError::NoSuchTenant) => false,
            Err(e) => {
                tracing::warn!(app = %app, key = %key, error = %e, "could not drop a failed upload");
                return;
            }
        };
        // Its row is gone, its id in the trash: the blob can go, and then the trash entry.
        match self.0.blobs.delete(key).await {
            Ok(()) if trashed => {
                if let Err(e) = self.0.store.forget_trashed(app, vec![id]).await {
                    tracing::warn!(app = %app, key = %key, error = %e, "could not empty the trash");
                }
            }
            Ok(()) => {}
            Err(e) => {
                tracing::warn!(app = %app, key = %key, error = %e, "could not delete a failed upload's blob");
            }
        }
    }

    fn quota(&self, caller: &Caller) -> FileQuota {
        let q = self.0.quotas;
        let signed = |v: Option<u64>| v.map(|n| i64::try_from(n).unwrap_or(i64::MAX));
        let user = caller_is_user(caller);
        FileQuota {
            app_bytes: signed(q.app_bytes),
            app_files: signed(q.app_files),
            owner_bytes: if user { signed(q.user_bytes) } else { None },
            owner_files: if user { signed(q.user_files) } else { None },
        }
    }

    fn new_id(&self) -> Result<FileId, FileError> {
        let mut bytes = [0u8; 16];
        self.0.random.fill(&mut bytes);
        // 16 bytes are always 22 characters of URL-safe base64: a file id.
        let text = format!("{FILE_ID_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
        FileId::parse(&text).ok_or_else(|| StoreError::Task(format!("made id {text}")).into())
    }

    fn view(&self, bucket: &Bucket, row: FileRow) -> FileView {
        FileView {
            metadata: serde_json::from_str(&row.metadata).unwrap_or(Json::Null),
            created_at: Timestamp::from_unix_ms(row.created_at_ms).to_rfc3339(),
            public: bucket.is_public(),
            id: row.id,
            bucket: row.bucket,
            owner: row.owner,
            name: row.name,
            content_type: row.content_type,
            size: row.size,
            sha256: row.sha256,
        }
    }

    // ---- reading ----------------------------------------------------------------------------

    /// The file, if `caller` may view it; a file they may not see is as missing as a missing
    /// one.
    pub async fn file(
        &self,
        app: &AppName,
        caller: &Caller,
        bucket: &str,
        id: &str,
    ) -> Result<FileView, FileError> {
        admit(app, caller)?;
        let (bucket, row) = self.find(app, bucket, id).await?;
        let row = self.check(app, &bucket, "view", caller, row).await?;
        Ok(self.view(&bucket, row))
    }

    /// The row and bucket of a ready file of bucket `bucket` (`None`: any), rules aside.
    async fn find(
        &self,
        app: &AppName,
        bucket: impl Into<Option<&str>>,
        id: &str,
    ) -> Result<(Arc<Bucket>, FileRow), FileError> {
        if FileId::parse(id).is_none() {
            return Err(FileError::NotFound);
        }
        let row = self
            .0
            .store
            .file(app, id, Condition::always())
            .await?
            .ok_or(FileError::NotFound)?;
        if bucket.into().is_some_and(|b| b != row.bucket) {
            return Err(FileError::NotFound);
        }
        let bucket = self
            .bucket_of(app, &row.bucket)
            .await
            .map_err(|_| FileError::NotFound)?;
        Ok((bucket, row))
    }

    /// `row` if `action`'s rule lets `caller` reach it, or [`FileError::NotFound`].
    async fn check(
        &self,
        app: &AppName,
        bucket: &Bucket,
        action: &'static str,
        caller: &Caller,
        row: FileRow,
    ) -> Result<FileRow, FileError> {
        if is_admin(caller) || matches!(bucket.rules.get(action), Some(Rule::Open)) {
            return Ok(row);
        }
        let condition = self
            .condition(bucket, action, caller)
            .ok_or(FileError::NotFound)?;
        self.0
            .store
            .file(app, &row.id, condition)
            .await?
            .ok_or(FileError::NotFound)
    }

    /// A page of a bucket's files that the list rule lets `caller` see, newest first.
    pub async fn files(
        &self,
        app: &AppName,
        caller: &Caller,
        bucket_name: &str,
        mine: bool,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<FilePage, FileError> {
        admit(app, caller)?;
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(FileError::InvalidRequest(format!(
                "limit must be 1 to {MAX_PAGE}"
            )));
        }
        let bucket = self.bucket_of(app, bucket_name).await?;
        let condition = self
            .condition(&bucket, "list", caller)
            .ok_or(FileError::Forbidden("list"))?;
        let owner = match (mine, caller) {
            (false, _) => None,
            (true, Caller::User(user)) => Some(user.user_id.clone()),
            (true, _) => {
                return Err(FileError::InvalidRequest(
                    "mine=true needs a user's token".into(),
                ));
            }
        };
        let after = cursor.map(decode_cursor).transpose()?;
        let query = FileQuery {
            bucket: bucket_name.to_owned(),
            owner,
            after,
            limit: limit + 1,
        };
        let mut rows = self.0.store.files(app, query, condition).await?;
        let more = rows.len() > limit;
        rows.truncate(limit);
        let next_cursor = more
            .then(|| rows.last().map(|r| encode_cursor(r.created_at_ms, &r.id)))
            .flatten();
        Ok(FilePage {
            items: rows.into_iter().map(|r| self.view(&bucket, r)).collect(),
            next_cursor,
        })
    }

    /// Deletes a file the delete rule lets `caller` reach (its blob at once, or by the sweep).
    pub async fn delete(
        &self,
        app: &AppName,
        caller: &Caller,
        bucket: &str,
        id: &str,
    ) -> Result<(), FileError> {
        admit(app, caller)?;
        let (bucket, _) = self.find(app, bucket, id).await?;
        let condition = self
            .condition(&bucket, "delete", caller)
            .ok_or(FileError::NotFound)?;
        let (emit, ticket) = match self.emit(app, &bucket.view.name, FILE_DELETED).await? {
            Some((emit, ticket)) => (Some(emit), Some(ticket)),
            None => (None, None),
        };
        let gone = self.0.store.delete_file(app, id, condition, emit).await;
        self.emitted(app, ticket).await;
        if gone?.is_none() {
            return Err(FileError::NotFound);
        }
        // The file is deleted; its blob goes now or with a later sweep.
        self.sweep_quietly(app).await;
        Ok(())
    }

    /// Opens a file for reading: by a caller the view rule lets see it, or by a valid
    /// signature; `range` (a validated byte range) within it.
    pub async fn open(
        &self,
        app: &AppName,
        caller: &Caller,
        bucket: &str,
        id: &str,
        signature: Option<&Signature>,
        range: Option<ByteRange>,
    ) -> Result<Download, FileError> {
        admit(app, caller)?;
        // The signature first: a wrong one answers the same for a file that is and one that
        // is not, so no one learns which ids exist.
        let signed_for_secs = signature
            .map(|signature| self.verify(app, id, signature))
            .transpose()?;
        let (bucket, row) = self.find(app, bucket, id).await?;
        let row = match signed_for_secs {
            Some(_) => row,
            None => self.check(app, &bucket, "view", caller, row).await?,
        };
        let size = row.size.max(0) as u64;
        let range = match range {
            None => 0..size,
            Some(range) => range.within(size)?,
        };
        let key = BlobKey::new(app, &FileId::parse(&row.id).ok_or(FileError::NotFound)?);
        let blob = self
            .0
            .blobs
            .get(&key, (range != (0..size)).then(|| range.clone()))
            .await?
            .ok_or(FileError::NotFound)?;
        let file = self.view(&bucket, row);
        Ok(Download {
            content_type: file.content_type.clone(),
            etag: format!("\"{}\"", file.sha256),
            file,
            size,
            range,
            body: blob.body,
            signed_for_secs,
        })
    }

    // ---- signed URLs ------------------------------------------------------------------------

    fn signature_of(
        &self,
        app: &AppName,
        id: &str,
        expires: u64,
        thumb: &str,
    ) -> Result<String, FileError> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0.url_key)
            .map_err(|e| StoreError::Task(format!("url key: {e}")))?;
        mac.update(format!("{}\n{id}\n{expires}\n{thumb}", app.as_str()).as_bytes());
        Ok(URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
    }

    /// Checks a signed URL; answers how long it is still valid, in seconds.
    fn verify(&self, app: &AppName, id: &str, signature: &Signature) -> Result<u64, FileError> {
        let thumb = signature.thumb.as_deref().unwrap_or("");
        let expected = self.signature_of(app, id, signature.expires, thumb)?;
        let matches: bool =
            subtle::ConstantTimeEq::ct_eq(expected.as_bytes(), signature.sig.as_bytes()).into();
        if !matches {
            return Err(FileError::InvalidSignature("the signature does not match"));
        }
        let now = (self.0.clock.now().unix_ms() / 1000).max(0) as u64;
        if signature.expires < now {
            return Err(FileError::Expired);
        }
        Ok(signature.expires - now)
    }

    /// Signed URLs for the files of `ids` that `caller` may view (`None` for the others), valid
    /// at least `ttl_secs`; expiries are rounded up to a 10-minute window, so the same file
    /// signed twice in a window has the same URL.
    pub async fn sign(
        &self,
        app: &AppName,
        caller: &Caller,
        ids: &[String],
        ttl_secs: Option<u64>,
        thumb: Option<&str>,
    ) -> Result<Vec<Option<SignedUrl>>, FileError> {
        admit(app, caller)?;
        if ids.is_empty() || ids.len() > MAX_SIGN {
            return Err(FileError::InvalidRequest(format!(
                "sign 1 to {MAX_SIGN} files"
            )));
        }
        let ttl = ttl_secs.unwrap_or(DEFAULT_URL_SECS);
        if !(1..=MAX_URL_SECS).contains(&ttl) {
            return Err(FileError::InvalidRequest(format!(
                "ttl_secs must be 1 to {MAX_URL_SECS}"
            )));
        }
        if thumb.is_some_and(|t| ThumbSpec::parse(t).is_none()) {
            return Err(FileError::InvalidRequest(
                "thumb: a size such as 200x200, 200x200f or 0x200".into(),
            ));
        }
        let expires = self.expiry(ttl);
        let mut urls = Vec::with_capacity(ids.len());
        for id in ids {
            let visible = match self.find(app, None, id).await {
                Ok((bucket, row)) => {
                    let row = self.check(app, &bucket, "view", caller, row).await;
                    // Only to whom may view the file: what sizes its bucket serves.
                    if let (Ok(_), Some(thumb)) = (&row, thumb) {
                        declared(&bucket, thumb)?;
                    }
                    row
                }
                Err(e) => Err(e),
            };
            match visible {
                Ok(row) => urls.push(Some(self.signed_url(app, &row, expires, thumb)?)),
                Err(FileError::NotFound) => urls.push(None),
                Err(e) => return Err(e),
            }
        }
        Ok(urls)
    }

    /// The expiry of a URL signed now for at least `ttl` seconds: rounded up to a window.
    fn expiry(&self, ttl: u64) -> u64 {
        let now = (self.0.clock.now().unix_ms() / 1000).max(0) as u64;
        (now + ttl).div_ceil(URL_WINDOW_SECS) * URL_WINDOW_SECS
    }

    fn signed_url(
        &self,
        app: &AppName,
        row: &FileRow,
        expires: u64,
        thumb: Option<&str>,
    ) -> Result<SignedUrl, FileError> {
        let sig = self.signature_of(app, &row.id, expires, thumb.unwrap_or(""))?;
        let thumb_query = thumb.map(|t| format!("&thumb={t}")).unwrap_or_default();
        Ok(SignedUrl {
            url: format!(
                "/v1/apps/{}/files/{}/{}?expires={expires}{thumb_query}&sig={sig}",
                app.as_str(),
                row.bucket,
                row.id
            ),
            expires_at: Timestamp::from_unix_ms((expires * 1000) as i64).to_rfc3339(),
            id: row.id.clone(),
        })
    }

    /// Signed URLs (valid an hour at least) for files that records hold: the caller may see
    /// the records, and a record holds only ids its writer could view, so the record's rules
    /// are the files' here. A missing file, or one whose bucket does not serve `thumb`, is
    /// `None`: one photo of another bucket does not fail a whole page.
    pub async fn sign_for_records(
        &self,
        app: &AppName,
        ids: &[String],
        thumb: Option<&str>,
    ) -> Result<Vec<Option<SignedUrl>>, FileError> {
        let expires = self.expiry(DEFAULT_URL_SECS);
        let wanted: Vec<String> = ids
            .iter()
            .filter(|id| FileId::parse(id).is_some())
            .cloned()
            .collect();
        let mut rows: HashMap<String, FileRow> = HashMap::with_capacity(wanted.len());
        // A page of 500 records with several file fields: a few reads, each within what a
        // statement may bind.
        for chunk in wanted.chunks(FILES_PER_READ) {
            for row in self.0.store.files_by_id(app, chunk.to_vec()).await? {
                rows.insert(row.id.clone(), row);
            }
        }
        let mut urls = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(row) = rows.get(id) else {
                urls.push(None);
                continue;
            };
            // A file of a bucket gone, or one that does not serve this size, gets no URL.
            let served = match self.bucket_of(app, &row.bucket).await {
                Ok(bucket) => thumb.is_none_or(|size| declared(&bucket, size).is_ok()),
                Err(FileError::BucketNotFound(_)) => false,
                Err(e) => return Err(e),
            };
            urls.push(if served {
                Some(self.signed_url(app, row, expires, thumb)?)
            } else {
                None
            });
        }
        Ok(urls)
    }

    // ---- the sweep --------------------------------------------------------------------------

    /// Deletes the blobs of deleted files, and abandons uploads never completed. A blob that
    /// cannot be deleted now stays in the trash for the next sweep, without holding up the
    /// others; a sweep does at most [`SWEEP_STEPS`] batches.
    pub async fn sweep(&self, app: &AppName) -> Result<(), FileError> {
        let before = self.0.clock.now().unix_ms() - STALE_UPLOAD_MS;
        self.0.store.drop_stale_uploads(app, before).await?;
        for _ in 0..SWEEP_STEPS {
            let ids = self.0.store.trashed(app, SWEEP_BATCH).await?;
            let full = ids.len() == SWEEP_BATCH;
            let mut deleted = Vec::with_capacity(ids.len());
            let mut failed = 0;
            for id in ids {
                // An id that is no file id was never a blob: forgotten all the same.
                let outcome = match FileId::parse(&id) {
                    Some(file) => self.0.blobs.delete(&BlobKey::new(app, &file)).await,
                    None => Ok(()),
                };
                match outcome {
                    Ok(()) => deleted.push(id),
                    Err(e) => {
                        failed += 1;
                        tracing::warn!(app = %app, file = id, error = %e, "could not delete a trashed blob");
                    }
                }
            }
            let progress = !deleted.is_empty();
            if progress {
                self.0.store.forget_trashed(app, deleted).await?;
            }
            // Done, or stuck on what failed: the next sweep tries again.
            if !full || failed > 0 || !progress {
                return Ok(());
            }
        }
        Ok(())
    }

    /// [`Files::sweep`] for callers that have already done what they were asked: a failure is
    /// logged, and the next sweep tries again.
    pub async fn sweep_quietly(&self, app: &AppName) {
        if let Err(e) = self.sweep(app).await {
            tracing::warn!(app = %app, error = %e, "could not sweep the files' trash");
        }
    }

    /// Deletes every blob of an app (it was deleted).
    pub async fn delete_app(&self, app: &AppName) -> Result<(), FileError> {
        self.forget(app);
        self.0.blobs.delete_app(app).await?;
        Ok(())
    }
}

/// File ids read in one statement when a page of records is signed.
const FILES_PER_READ: usize = 500;

/// The key that signs file URLs, derived from the master key (so that it is the same on every
/// node and changes with the master key).
pub fn url_key(master_key: &[u8; 32]) -> [u8; 32] {
    // The master key is 32 uniformly random bytes: a hash of it with a label is a key of its
    // own, unrelated to any other derived from it.
    let mut hash = Sha256::new();
    hash.update(b"cloudlet/files/signed-urls/v1\0");
    hash.update(master_key);
    hash.finalize().into()
}

#[async_trait::async_trait]
impl crate::data::FileViews for Files {
    async fn may_view(&self, app: &AppName, caller: &Caller, id: &str) -> Result<bool, StoreError> {
        match self.find(app, None, id).await {
            Ok((bucket, row)) => match self.check(app, &bucket, "view", caller, row).await {
                Ok(_) => Ok(true),
                Err(FileError::NotFound) => Ok(false),
                Err(FileError::Store(e)) => Err(e),
                Err(e) => Err(StoreError::Task(e.to_string())),
            },
            Err(FileError::NotFound) => Ok(false),
            Err(FileError::Store(e)) => Err(e),
            Err(e) => Err(StoreError::Task(e.to_string())),
        }
    }

    async fn urls_for_records(
        &self,
        app: &AppName,
        ids: &[String],
        thumb: Option<&str>,
    ) -> Result<Map<String, Json>, crate::data::DataError> {
        use crate::data::DataError;
        let urls = self
            .sign_for_records(app, ids, thumb)
            .await
            .map_err(|e| match e {
                FileError::Store(e) => DataError::Store(e),
                other => DataError::InvalidFileUrls(other.to_string()),
            })?;
        Ok(ids
            .iter()
            .zip(urls)
            .map(|(id, url)| {
                let url = url.map_or(
                    Json::Null,
                    |u| serde_json::json!({ "url": u.url, "expires_at": u.expires_at }),
                );
                (id.clone(), url)
            })
            .collect())
    }
}

/// A byte range a request asks for, parsed from `Range: bytes=…`, not yet checked against the
/// file's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// `bytes=a-b` (b inclusive) or `bytes=a-`.
    From { start: u64, end: Option<u64> },
    /// `bytes=-n`: the last n bytes.
    Last(u64),
}

impl ByteRange {
    /// One range of a `Range` header; `None` for anything else (several ranges, other units),
    /// which is then answered with the whole file, as RFC 9110 allows.
    pub fn parse(header: &str) -> Option<ByteRange> {
        let spec = header.trim().strip_prefix("bytes=")?;
        if spec.contains(',') {
            return None;
        }
        let (start, end) = spec.split_once('-')?;
        let number = |s: &str| -> Option<u64> {
            (!s.is_empty() && s.len() <= 19 && s.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse().ok())
                .flatten()
        };
        if start.is_empty() {
            return Some(ByteRange::Last(number(end)?));
        }
        let start = number(start)?;
        let end = if end.is_empty() {
            None
        } else {
            Some(number(end)?)
        };
        if end.is_some_and(|end| end < start) {
            return None;
        }
        Some(ByteRange::From { start, end })
    }

    /// The half-open range within a file of `size` bytes, or why it is not satisfiable.
    pub fn within(self, size: u64) -> Result<Range<u64>, FileError> {
        let unsatisfiable = FileError::RangeNotSatisfiable { size };
        match self {
            ByteRange::From { start, end } => {
                if start >= size {
                    return Err(unsatisfiable);
                }
                let end = end.map_or(size, |end| (end + 1).min(size));
                Ok(start..end)
            }
            ByteRange::Last(0) => Err(unsatisfiable),
            ByteRange::Last(n) => Ok(size.saturating_sub(n)..size),
        }
    }
}

fn encode_cursor(at_ms: i64, id: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{at_ms}:{id}"))
}

fn decode_cursor(cursor: &str) -> Result<(i64, String), FileError> {
    let invalid = || FileError::InvalidRequest("invalid cursor".into());
    let text = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    let text = String::from_utf8(text).map_err(|_| invalid())?;
    let (at, id) = text.split_once(':').ok_or_else(invalid)?;
    let id = FileId::parse(id).ok_or_else(invalid)?;
    Ok((at.parse().map_err(|_| invalid())?, id.as_str().to_owned()))
}

fn is_admin(caller: &Caller) -> bool {
    matches!(caller, Caller::Admin | Caller::AppKey(_))
}

fn caller_is_user(caller: &Caller) -> bool {
    matches!(caller, Caller::User(_))
}

fn admin_only(app: &AppName, caller: &Caller) -> Result<(), FileError> {
    admit(app, caller)?;
    if is_admin(caller) {
        Ok(())
    } else {
        Err(FileError::Forbidden("admin"))
    }
}

/// A caller of another app never reaches its files.
fn admit(app: &AppName, caller: &Caller) -> Result<(), FileError> {
    let foreign = match caller {
        Caller::AppKey(own) => own != app,
        Caller::User(user) => user.app != *app,
        Caller::Admin | Caller::Anonymous => false,
    };
    if foreign {
        return Err(FileError::Forbidden("act for another app"));
    }
    Ok(())
}

/// Bytes, for tests and callers that hold a whole body.
pub fn body_of(bytes: Vec<u8>) -> ByteStream {
    Box::pin(futures_util::stream::iter([Ok::<_, io::Error>(
        Bytes::from(bytes),
    )]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_keep_their_last_segment_and_refuse_control_characters() {
        assert_eq!(clean_name("photo.jpg").unwrap(), "photo.jpg");
        assert_eq!(clean_name("wxfile://tmp_a1b2.jpg").unwrap(), "tmp_a1b2.jpg");
        assert_eq!(clean_name("../../etc/passwd").unwrap(), "passwd");
        assert_eq!(clean_name("C:\\fakepath\\cat.png").unwrap(), "cat.png");
        assert_eq!(clean_name("../").unwrap(), "file");
        assert_eq!(clean_name("").unwrap(), "file");
        assert_eq!(clean_name("照片.jpg").unwrap(), "照片.jpg");
        assert!(matches!(clean_name("a\0b"), Err(FileError::InvalidName(_))));
        assert!(matches!(
            clean_name("cat\u{202E}gpj.exe"),
            Err(FileError::InvalidName(_))
        ));
        assert!(matches!(clean_name("a\nb"), Err(FileError::InvalidName(_))));
        assert!(matches!(
            clean_name(&"a".repeat(1000)),
            Err(FileError::InvalidName(_))
        ));
        assert_eq!(clean_name(&"a".repeat(255)).unwrap().len(), 255);
    }

    #[test]
    fn types_are_sniffed_from_the_bytes() {
        assert_eq!(sniff(b"\xFF\xD8\xFF\xE0\0\x10JFIF\0"), "image/jpeg");
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"), "image/png");
        assert_eq!(sniff(b"GIF89a\x01\0\x01\0"), "image/gif");
        assert_eq!(sniff(b"RIFF\x24\0\0\0WEBPVP8 "), "image/webp");
        assert_eq!(sniff(b"%PDF-1.7\n"), "application/pdf");
        assert_eq!(sniff(b"\x02#!SILK_V3\x0c\0"), "audio/silk");
        assert_eq!(sniff(b"#!AMR\n\x3c"), "audio/amr");
        assert_eq!(
            sniff(b"<svg xmlns=\"http://www.w3.org/2000/svg\"/>"),
            "application/octet-stream"
        );
        assert_eq!(sniff(b"hello"), "application/octet-stream");
    }

    #[test]
    fn byte_ranges_parse_strictly_and_fit_the_file() {
        let r = |h: &str| ByteRange::parse(h);
        assert_eq!(r("bytes=0-9").unwrap().within(100).unwrap(), 0..10);
        assert_eq!(r("bytes=90-").unwrap().within(100).unwrap(), 90..100);
        assert_eq!(r("bytes=90-200").unwrap().within(100).unwrap(), 90..100);
        assert_eq!(r("bytes=-10").unwrap().within(100).unwrap(), 90..100);
        assert_eq!(r("bytes=-500").unwrap().within(100).unwrap(), 0..100);
        for past in ["bytes=100-", "bytes=100-200", "bytes=-0"] {
            assert!(
                matches!(
                    r(past).unwrap().within(100),
                    Err(FileError::RangeNotSatisfiable { size: 100 })
                ),
                "{past}"
            );
        }
        for ignored in [
            "bytes=5-1",
            "bytes=0-1,5-6",
            "items=0-1",
            "bytes=a-b",
            "bytes=-",
            "bytes=99999999999999999999-",
        ] {
            assert_eq!(r(ignored), None, "{ignored}");
        }
    }

    #[test]
    fn buckets_are_checked_when_declared() {
        let ok = Bucket::compile("photos", BucketInput::default()).unwrap();
        assert_eq!(ok.view.types, ["*/*"]);
        assert_eq!(ok.view.max_bytes, DEFAULT_MAX_BYTES);
        assert_eq!(ok.view.rules["view"].as_deref(), Some("owner = @auth.id"));
        assert!(!ok.is_public());
        let images = BucketInput {
            types: Some(vec!["image/*".into(), "application/pdf".into()]),
            rules: HashMap::from([("view".to_owned(), Some(String::new()))]),
            thumbs: Some(vec!["200x200".into()]),
            ..BucketInput::default()
        };
        let images = Bucket::compile("photos", images).unwrap();
        assert!(images.takes("image/png") && images.takes("application/pdf"));
        assert!(!images.takes("application/octet-stream") && !images.takes("imagex/png"));
        assert!(images.is_public());
        for bad in [
            BucketInput {
                types: Some(vec!["image".into()]),
                ..BucketInput::default()
            },
            BucketInput {
                types: Some(vec![]),
                ..BucketInput::default()
            },
            BucketInput {
                max_bytes: Some(0),
                ..BucketInput::default()
            },
            BucketInput {
                max_bytes: Some(MAX_FILE_BYTES + 1),
                ..BucketInput::default()
            },
            BucketInput {
                thumbs: Some(vec!["0x0".into()]),
                ..BucketInput::default()
            },
            BucketInput {
                thumbs: Some(vec!["5000x10".into()]),
                ..BucketInput::default()
            },
            BucketInput {
                rules: HashMap::from([("update".to_owned(), None)]),
                ..BucketInput::default()
            },
            BucketInput {
                rules: HashMap::from([("view".to_owned(), Some("nofield = 1".into()))]),
                ..BucketInput::default()
            },
        ] {
            assert!(
                matches!(
                    Bucket::compile("photos", bad.clone()),
                    Err(FileError::InvalidBucket(_))
                ),
                "{bad:?}"
            );
        }
        assert!(Bucket::compile("Photos", BucketInput::default()).is_err());
        assert!(Bucket::compile("../x", BucketInput::default()).is_err());
    }

    async fn run_intake(
        bucket: BucketInput,
        chunks: Vec<&'static [u8]>,
    ) -> (Vec<Result<usize, String>>, Tally) {
        let bucket = Arc::new(Bucket::compile("b", bucket).unwrap());
        let tally = Arc::new(Mutex::new(Tally::default()));
        let body: ByteStream = Box::pin(futures_util::stream::iter(
            chunks.into_iter().map(|c| Ok(Bytes::from_static(c))),
        ));
        let out = intake(body, bucket, Arc::clone(&tally))
            .map(|item| item.map(|b| b.len()).map_err(|e| e.to_string()))
            .collect::<Vec<_>>()
            .await;
        let t = std::mem::take(&mut *lock(&tally));
        (out, t)
    }

    #[tokio::test]
    async fn the_intake_counts_sniffs_and_stops_at_the_limits() {
        let png: &'static [u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
        let images = || BucketInput {
            types: Some(vec!["image/*".into()]),
            max_bytes: Some(20),
            ..BucketInput::default()
        };
        let (out, t) = run_intake(images(), vec![png]).await;
        assert_eq!(out, [Ok(png.len())]);
        assert_eq!((t.size, t.content_type.as_deref()), (16, Some("image/png")));
        assert!(t.refusal.is_none());

        let (out, t) = run_intake(images(), vec![png, b"0123456789"]).await;
        assert!(out.last().unwrap().is_err());
        assert!(matches!(t.refusal, Some(FileError::TooLarge(20))));

        let (out, t) = run_intake(images(), vec![b"<html>"]).await;
        assert!(out.last().unwrap().is_err());
        assert!(
            matches!(t.refusal, Some(FileError::TypeNotAllowed(ref found)) if found == "text/html")
        );

        let (out, t) = run_intake(images(), vec![]).await;
        assert_eq!(out.len(), 1);
        assert!(matches!(t.refusal, Some(FileError::EmptyFile)));
    }

    /// A files service on real stores (SQLite, a directory) with a clock the test moves.
    async fn service(dir: &std::path::Path) -> (Files, AppName, Arc<crate::clock::ManualClock>) {
        use cloudlet_store::sqlite::{SqliteTenants, TenantPoolOptions};
        use cloudlet_store::{Durability, LocalBlobs, TenantStore};
        let apps_dir = dir.join("apps");
        std::fs::create_dir_all(&apps_dir).unwrap();
        let options = TenantPoolOptions {
            max_open: 4,
            readers: 1,
            durability: Durability::Process,
        };
        let tenants = Arc::new(SqliteTenants::open(apps_dir, options).unwrap());
        let app = AppName::parse("shop").unwrap();
        tenants.provision(&app).await.unwrap();
        let blobs = Arc::new(LocalBlobs::open(&dir.join("files"), Durability::Process).unwrap());
        let clock = Arc::new(crate::clock::ManualClock::at(Timestamp::from_unix_ms(
            1_800_000_000_000,
        )));
        let files = Files::new(
            tenants,
            blobs,
            clock.clone(),
            Arc::new(crate::random::OsRandom),
            [7; 32],
            Quotas::default(),
        );
        (files, app, clock)
    }

    #[tokio::test]
    async fn a_signed_url_opens_its_file_until_its_expiry_and_not_after() {
        let dir = tempfile::tempdir().unwrap();
        let (files, app, clock) = service(dir.path()).await;
        files
            .put_bucket(&app, &Caller::Admin, "photos", BucketInput::default())
            .await
            .unwrap();
        let upload = Upload {
            name: "a.pdf".into(),
            ..Upload::default()
        };
        let file = files
            .upload(
                &app,
                &Caller::Admin,
                "photos",
                upload,
                body_of(b"%PDF-1.7\n".to_vec()),
            )
            .await
            .unwrap();
        let signed = files
            .sign(
                &app,
                &Caller::Admin,
                std::slice::from_ref(&file.id),
                Some(60),
                None,
            )
            .await
            .unwrap()
            .remove(0)
            .unwrap();
        let query = signed.url.split_once('?').unwrap().1;
        let param = |name: &str| {
            query
                .split('&')
                .find_map(|p| p.strip_prefix(&format!("{name}=")))
                .unwrap()
                .to_owned()
        };
        let signature = Signature {
            expires: param("expires").parse().unwrap(),
            thumb: None,
            sig: param("sig"),
        };
        // Rounded up to the window: valid at least the minute asked, at most the window more.
        let now = 1_800_000_000;
        assert!(signature.expires >= now + 60 && signature.expires <= now + 60 + URL_WINDOW_SECS);
        assert_eq!(signature.expires % URL_WINDOW_SECS, 0);

        let open = |signature: Option<Signature>| {
            let (files, app, id) = (files.clone(), app.clone(), file.id.clone());
            async move {
                files
                    .open(
                        &app,
                        &Caller::Anonymous,
                        "photos",
                        &id,
                        signature.as_ref(),
                        None,
                    )
                    .await
                    .map(|d| d.signed_for_secs)
            }
        };
        let left = open(Some(signature.clone())).await.unwrap();
        assert_eq!(left, Some(signature.expires - now));
        assert!(
            matches!(open(None).await, Err(FileError::NotFound)),
            "owner-only without it"
        );
        // The last second it is valid, then not.
        clock.advance_ms(((signature.expires - now) * 1000) as i64);
        assert_eq!(open(Some(signature.clone())).await.unwrap(), Some(0));
        clock.advance_ms(1000);
        assert!(matches!(
            open(Some(signature.clone())).await,
            Err(FileError::Expired)
        ));
        // A changed expiry is a bad signature, not an extension.
        let extended = Signature {
            expires: signature.expires + 3600,
            ..signature
        };
        assert!(matches!(
            open(Some(extended)).await,
            Err(FileError::InvalidSignature(_))
        ));
    }
}
