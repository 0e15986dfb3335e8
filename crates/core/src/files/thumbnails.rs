//! Thumbnails served: only in the sizes a bucket declares, each made once and kept beside its
//! file as a blob variant (counted in the app's usage, deleted with the file).
//!
//! The first request for a size starts its making; every request for it that comes meanwhile
//! waits for that one result (a single flight), so fifty people opening the same new photo
//! decode it once. The making runs as a task of its own, so a client that goes away does not
//! waste what others wait for; at most [`MAX_FLIGHTS`] run or wait (at most
//! [`MAX_FLIGHTS_PER_APP`] of one app, so one app's users cannot take every place), and at most
//! one decode per CPU (up to four) holds an image in memory. An image that does not decode is
//! remembered as such (a file's bytes never change), so asking again costs no decode; any
//! other failure is answered to those waiting and not kept: the next request tries again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use cloudlet_store::{AppName, BlobKey, ByteStream, FileId, FileRow, StoreError, Variant};
use futures_util::StreamExt;
use futures_util::future::{BoxFuture, FutureExt, Shared};

use super::{Bucket, Download, FileError, Files, Signature, admit, body_of, lock};
use crate::access::Caller;
use crate::thumbs::{self, ThumbError, ThumbSpec};

/// The largest image a thumbnail is made of.
pub const MAX_THUMB_SOURCE_BYTES: u64 = 64 * 1024 * 1024;
/// Thumbnails being made or waiting to be, across apps.
const MAX_FLIGHTS: usize = 256;
/// Flights of one app, at most.
const MAX_FLIGHTS_PER_APP: usize = 64;
/// Decodes at once, at most.
const MAX_DECODES: usize = 4;
/// Images remembered as not decoding, at most; forgotten all at once when full.
const MAX_FAILURES: usize = 4096;

/// A failure shared by everyone waiting on one flight.
#[derive(Debug, Clone)]
enum Failed {
    Thumb(ThumbError),
    TooLarge(u64),
    Gone,
    Store(String),
}

impl From<Failed> for FileError {
    fn from(failed: Failed) -> Self {
        match failed {
            Failed::Thumb(e) => FileError::Thumb(e),
            Failed::TooLarge(size) => FileError::ImageTooLarge(size),
            Failed::Gone => FileError::NotFound,
            Failed::Store(message) => FileError::Store(StoreError::Task(message)),
        }
    }
}

impl From<FileError> for Failed {
    fn from(e: FileError) -> Self {
        match e {
            FileError::Thumb(e) => Failed::Thumb(e),
            FileError::ImageTooLarge(size) => Failed::TooLarge(size),
            FileError::NotFound => Failed::Gone,
            other => Failed::Store(other.to_string()),
        }
    }
}

type Flight = Shared<BoxFuture<'static, Result<Bytes, Failed>>>;
/// A thumbnail's app, file id and size.
type ThumbName = (AppName, String, String);

/// Flights by app, file and size; the decodes' places; the images that do not decode.
pub(super) struct Thumbnails {
    flights: Mutex<HashMap<ThumbName, Flight>>,
    decodes: Arc<tokio::sync::Semaphore>,
    failures: Mutex<HashMap<ThumbName, ThumbError>>,
    /// Thumbnails made since the start (each decoded an image).
    made: AtomicU64,
    /// Decodes that failed since the start.
    failed: AtomicU64,
}

impl Thumbnails {
    pub(super) fn new() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Thumbnails {
            flights: Mutex::new(HashMap::new()),
            decodes: Arc::new(tokio::sync::Semaphore::new(cpus.clamp(1, MAX_DECODES))),
            failures: Mutex::new(HashMap::new()),
            made: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }
}

/// The size `text` if `bucket` declares it.
pub(super) fn declared(bucket: &Bucket, text: &str) -> Result<ThumbSpec, FileError> {
    let not_declared =
        || FileError::ThumbNotDeclared(bucket.view.thumbs.join(", "), text.to_owned());
    if !bucket.view.thumbs.iter().any(|t| t == text) {
        return Err(not_declared());
    }
    ThumbSpec::parse(text).ok_or_else(not_declared)
}

/// What a thumbnail of an image of `content_type` is.
fn thumb_type(content_type: &str) -> &'static str {
    if content_type == "image/jpeg" {
        "image/jpeg"
    } else {
        "image/png"
    }
}

/// The bytes of `body`, if at most `max`.
async fn read_whole(mut body: ByteStream, max: u64, key: &BlobKey) -> Result<Vec<u8>, FileError> {
    let mut bytes = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| StoreError::Task(format!("reading {key}: {e}")))?;
        if (bytes.len() + chunk.len()) as u64 > max {
            return Err(FileError::ImageTooLarge(bytes.len() as u64));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

impl Files {
    /// How many thumbnails this process has made (each one image decoded), for metrics.
    pub fn thumbnails_made(&self) -> u64 {
        self.0.thumbnails.made.load(Ordering::Relaxed)
    }

    /// How many images this process failed to make a thumbnail of, for metrics.
    pub fn thumbnail_failures(&self) -> u64 {
        self.0.thumbnails.failed.load(Ordering::Relaxed)
    }

    /// The `thumb` thumbnail of a file, to a caller the view rule lets see it, or with a URL
    /// signed for that thumbnail; made on first request and kept.
    pub async fn thumbnail(
        &self,
        app: &AppName,
        caller: &Caller,
        bucket: &str,
        id: &str,
        thumb: &str,
        signature: Option<&Signature>,
    ) -> Result<Download, FileError> {
        admit(app, caller)?;
        // The signature before the file, as for the file itself.
        let signed_for_secs = match signature {
            Some(signature) if signature.thumb.as_deref() != Some(thumb) => {
                return Err(FileError::InvalidSignature("signed for another thumbnail"));
            }
            Some(signature) => Some(self.verify(app, id, signature)?),
            None => None,
        };
        let (bucket, row) = self.find(app, bucket, id).await?;
        let row = match signed_for_secs {
            Some(_) => row,
            None => self.check(app, &bucket, "view", caller, row).await?,
        };
        let spec = declared(&bucket, thumb)?;
        if !thumbs::supported(&row.content_type) {
            return Err(ThumbError::NotAnImage(row.content_type).into());
        }
        let file_id = FileId::parse(&row.id).ok_or(FileError::NotFound)?;
        let variant = Variant::parse(&spec.to_string())
            .ok_or_else(|| FileError::ThumbNotDeclared(String::new(), thumb.to_owned()))?;
        let key = BlobKey::variant(app, &file_id, &variant);
        let content_type = thumb_type(&row.content_type).to_owned();
        let etag = format!("\"{}-{}\"", row.sha256, variant.as_str());
        let (size, body) = match self.0.blobs.get(&key, None).await? {
            Some(kept) => (kept.size, kept.body),
            None => {
                let made = self.made(app, key, spec, row.clone()).await?;
                (made.len() as u64, body_of(made.to_vec()))
            }
        };
        Ok(Download {
            file: self.view(&bucket, row),
            content_type,
            size,
            etag,
            range: 0..size,
            body,
            signed_for_secs,
        })
    }

    /// The thumbnail at `key` of `row`, from the flight making it (started here if none is).
    async fn made(
        &self,
        app: &AppName,
        key: BlobKey,
        spec: ThumbSpec,
        row: FileRow,
    ) -> Result<Bytes, FileError> {
        let name = (app.clone(), row.id.clone(), spec.to_string());
        if let Some(failure) = lock(&self.0.thumbnails.failures).get(&name) {
            return Err(FileError::Thumb(failure.clone()));
        }
        let flight = {
            let mut flights = lock(&self.0.thumbnails.flights);
            match flights.get(&name) {
                Some(flight) => flight.clone(),
                None => {
                    let of_app = flights.keys().filter(|(a, ..)| a == app).count();
                    if flights.len() >= MAX_FLIGHTS || of_app >= MAX_FLIGHTS_PER_APP {
                        return Err(FileError::Busy);
                    }
                    let files = self.clone();
                    let (app, forget) = (app.clone(), name.clone());
                    let task = tokio::spawn(async move {
                        let made = files.make(&app, &key, spec, &row).await;
                        let thumbnails = &files.0.thumbnails;
                        if let Err(FileError::Thumb(e)) = &made {
                            // Remembered before the flight ends: no one decodes it again.
                            thumbnails.failed.fetch_add(1, Ordering::Relaxed);
                            let mut failures = lock(&thumbnails.failures);
                            if failures.len() >= MAX_FAILURES {
                                failures.clear();
                            }
                            failures.insert(forget.clone(), e.clone());
                        }
                        lock(&thumbnails.flights).remove(&forget);
                        made.map_err(Failed::from)
                    });
                    let flight = async move {
                        task.await
                            .unwrap_or_else(|e| Err(Failed::Store(format!("thumbnail: {e}"))))
                    }
                    .boxed()
                    .shared();
                    flights.insert(name, flight.clone());
                    flight
                }
            }
        };
        Ok(flight.await?)
    }

    /// Makes a thumbnail, keeps it and counts it.
    async fn make(
        &self,
        app: &AppName,
        key: &BlobKey,
        spec: ThumbSpec,
        row: &FileRow,
    ) -> Result<Bytes, FileError> {
        let size = row.size.max(0) as u64;
        if size > MAX_THUMB_SOURCE_BYTES {
            return Err(FileError::ImageTooLarge(size));
        }
        // The place is taken before the source is read: those waiting hold no image.
        let decode = self
            .0
            .thumbnails
            .decodes
            .acquire()
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?;
        // Kept by a flight that ended between this request's look and its start.
        if let Some(kept) = self.0.blobs.get(key, None).await? {
            return read_whole(kept.body, MAX_THUMB_SOURCE_BYTES, key)
                .await
                .map(Bytes::from);
        }
        let source_key = BlobKey::new(app, key.file());
        let body = self
            .0
            .blobs
            .get(&source_key, None)
            .await?
            .ok_or(FileError::NotFound)?
            .body;
        let source = read_whole(body, MAX_THUMB_SOURCE_BYTES, &source_key).await?;
        let content_type = row.content_type.clone();
        let thumbnail =
            tokio::task::spawn_blocking(move || thumbs::render(&source, &content_type, &spec))
                .await
                // A decoder's panic is a bad image's, not the server's.
                .map_err(|e| ThumbError::Invalid(format!("the decoder failed: {e}")))??;
        // Decoded: the place is another's while this one is stored.
        drop(decode);
        self.0.thumbnails.made.fetch_add(1, Ordering::Relaxed);
        let bytes = Bytes::from(thumbnail.bytes);
        self.0.blobs.put_whole(key, bytes.clone()).await?;
        let counted = self
            .0
            .store
            .count_thumb(app, &row.id, bytes.len() as i64)
            .await;
        if !matches!(counted, Ok(true)) {
            // The file went meanwhile (or the count failed): keep nothing uncounted. Its own
            // sweep may have run already.
            if let Err(e) = self.0.blobs.delete(key).await {
                tracing::warn!(app = %app, blob = %key, error = %e, "could not delete a thumbnail");
            }
            counted?;
        }
        Ok(bytes)
    }
}
