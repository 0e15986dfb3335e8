//! Blobs in S3-compatible object storage (AWS S3, MinIO, Cloudflare R2, Tencent COS, Aliyun
//! OSS…), through the `object_store` crate: objects `{prefix}{app}/{file id}` in one bucket.
//!
//! An upload is streamed: a blob smaller than [`PART_BYTES`] is sent in one `PutObject`; a
//! larger one as a multipart upload of `PART_BYTES` parts, at most [`PARTS_IN_FLIGHT`] in flight,
//! completed only once the stream ends (an object is never visible half written). One upload
//! therefore holds at most `PART_BYTES × (PARTS_IN_FLIGHT + 1)` of memory (15 MiB), and at most
//! [`MAX_PUTS`] uploads stream at once, at most [`MAX_PUTS_PER_APP`] of one app's (the others
//! wait their turn, their bytes held back by TCP), so all of a server's part buffers stay under
//! 240 MiB however many upload, and one app's slow uploads leave the others places. A failed
//! upload is aborted; one cut short by a crash leaves an incomplete multipart upload that S3 does
//! not show, which the bucket's lifecycle rule `AbortIncompleteMultipartUpload` removes.
//!
//! Some S3-compatible servers (those built on gofakes3, `rclone serve s3` among them) answer a
//! ranged `GET` with `200 OK`, the `Content-Range` header and only the range's bytes, where S3
//! says `206`. [`RangeTolerant`] reads such an answer as the `206` it is, so ranged reads work
//! on them too; a `200` without `Content-Range` is left alone (and refused as not partial).

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::buffered::BufWriter;
use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpRequest, HttpResponse, HttpService, ReqwestConnector,
};
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, GetRange, ObjectStore};
use tokio::io::AsyncWriteExt;

use super::{Blob, BlobKey, BlobStore, ByteStream};
use crate::{AppName, StoreError};

/// The part size of a multipart upload, S3's smallest.
pub const PART_BYTES: usize = 5 * 1024 * 1024;
/// Parts of one upload sent at once.
pub const PARTS_IN_FLIGHT: usize = 2;
/// Uploads streaming to the bucket at once, across apps.
pub const MAX_PUTS: usize = 16;
/// Of those, one app's at once: an app's slow uploads (a body may trickle at the least pace
/// the server allows for hours) can not take every place from the other apps.
pub const MAX_PUTS_PER_APP: usize = 4;
/// Apps whose places are remembered with no upload running, before they are forgotten.
const IDLE_APPS_KEPT: usize = 64;

/// Where and how to reach the bucket.
#[derive(Clone, Default)]
pub struct S3Settings {
    pub bucket: String,
    /// Prepended to every object name; empty, or ending in `/`.
    pub prefix: String,
    /// `https://…` of an S3-compatible service; empty for AWS.
    pub endpoint: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// `https://endpoint/bucket/key` instead of `https://bucket.endpoint/key` (MinIO, most
    /// self-hosted servers).
    pub path_style: bool,
}

impl std::fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Settings")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("path_style", &self.path_style)
            .finish_non_exhaustive()
    }
}

pub struct S3Blobs {
    store: Arc<dyn ObjectStore>,
    settings: S3Settings,
    /// Places for uploads streaming now ([`MAX_PUTS`]).
    puts: tokio::sync::Semaphore,
    /// Each app's places among them ([`MAX_PUTS_PER_APP`]), while it has uploads.
    app_puts: std::sync::Mutex<std::collections::HashMap<AppName, Arc<tokio::sync::Semaphore>>>,
}

impl S3Blobs {
    /// A client for the bucket; nothing is sent until the first call.
    pub fn new(settings: S3Settings) -> Result<S3Blobs, StoreError> {
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&settings.bucket)
            .with_region(if settings.region.is_empty() {
                "us-east-1"
            } else {
                &settings.region
            })
            .with_access_key_id(&settings.access_key_id)
            .with_secret_access_key(&settings.secret_access_key)
            .with_virtual_hosted_style_request(!settings.path_style)
            .with_http_connector(RangeTolerantConnector);
        if !settings.endpoint.is_empty() {
            builder = builder
                .with_endpoint(&settings.endpoint)
                .with_allow_http(settings.endpoint.starts_with("http://"));
        }
        let store = builder
            .build()
            .map_err(|e| StoreError::Blobs(e.to_string()))?;
        Ok(S3Blobs {
            store: Arc::new(store),
            settings,
            puts: tokio::sync::Semaphore::new(MAX_PUTS),
            app_puts: Default::default(),
        })
    }

    /// A place for one more upload of `app`, among its own and then among all: the app's is
    /// taken first, so an app waiting on its own slow uploads holds none of the others'.
    async fn place(
        &self,
        app: &AppName,
    ) -> Result<
        (
            tokio::sync::OwnedSemaphorePermit,
            tokio::sync::SemaphorePermit<'_>,
        ),
        StoreError,
    > {
        let own = {
            let mut apps = crate::sqlite::lock(&self.app_puts);
            // Apps with no upload (only this map holds their places) go once there are many.
            if apps.len() > IDLE_APPS_KEPT {
                apps.retain(|_, places| Arc::strong_count(places) > 1);
            }
            Arc::clone(
                apps.entry(app.clone())
                    .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(MAX_PUTS_PER_APP))),
            )
        };
        let closed = |e: tokio::sync::AcquireError| StoreError::Blobs(e.to_string());
        let own = own.acquire_owned().await.map_err(closed)?;
        let all = self.puts.acquire().await.map_err(closed)?;
        Ok((own, all))
    }

    fn path(&self, key: &BlobKey) -> ObjectPath {
        ObjectPath::from(format!("{}{key}", self.settings.prefix))
    }

    fn app_prefix(&self, app: &AppName) -> ObjectPath {
        ObjectPath::from(format!("{}{}", self.settings.prefix, app.as_str()))
    }
}

/// Connects as `object_store` does, through [`RangeTolerant`].
#[derive(Debug)]
struct RangeTolerantConnector;

impl HttpConnector for RangeTolerantConnector {
    fn connect(&self, options: &object_store::ClientOptions) -> object_store::Result<HttpClient> {
        let inner = ReqwestConnector::default().connect(options)?;
        Ok(HttpClient::new(RangeTolerant(inner)))
    }
}

/// Takes a `200 OK` carrying `Content-Range`, in answer to a ranged request, for the `206
/// Partial Content` it is.
#[derive(Debug)]
struct RangeTolerant(HttpClient);

#[async_trait]
impl HttpService for RangeTolerant {
    async fn call(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let ranged = request.headers().contains_key(http::header::RANGE);
        let mut response = self.0.execute(request).await?;
        if ranged
            && response.status() == http::StatusCode::OK
            && response.headers().contains_key(http::header::CONTENT_RANGE)
        {
            *response.status_mut() = http::StatusCode::PARTIAL_CONTENT;
        }
        Ok(response)
    }
}

fn blob_error(e: object_store::Error) -> StoreError {
    StoreError::Blobs(e.to_string())
}

#[async_trait]
impl BlobStore for S3Blobs {
    async fn put(&self, key: &BlobKey, mut body: ByteStream) -> Result<(), StoreError> {
        let _places = self.place(key.app()).await?;
        let mut writer =
            BufWriter::with_capacity(Arc::clone(&self.store), self.path(key), PART_BYTES)
                .with_max_concurrency(PARTS_IN_FLIGHT);
        let sent: Result<(), StoreError> = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| StoreError::Blobs(format!("upload: {e}")))?;
                writer.put(chunk).await.map_err(blob_error)?;
            }
            Ok(())
        }
        .await;
        if let Err(e) = sent {
            // Nothing was completed: drop the parts sent so far.
            let _ = writer.abort().await;
            return Err(e);
        }
        // Puts a small blob, or completes the multipart upload. If that fails, the parts
        // already sent are an incomplete upload, which the lifecycle rule removes.
        writer
            .shutdown()
            .await
            .map_err(|e| StoreError::Blobs(e.to_string()))
    }

    async fn put_whole(&self, key: &BlobKey, bytes: bytes::Bytes) -> Result<(), StoreError> {
        // One `PutObject`, visible whole or not at all; its bytes are the caller's already.
        self.store
            .put(&self.path(key), bytes.into())
            .await
            .map_err(blob_error)?;
        Ok(())
    }

    async fn get(
        &self,
        key: &BlobKey,
        range: Option<Range<u64>>,
    ) -> Result<Option<Blob>, StoreError> {
        let options = GetOptions {
            range: range.map(GetRange::Bounded),
            ..GetOptions::default()
        };
        let found = match self.store.get_opts(&self.path(key), options).await {
            Ok(found) => found,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(blob_error(e)),
        };
        let size = found.meta.size;
        let body = found
            .into_stream()
            .map_err(|e| std::io::Error::other(e.to_string()));
        Ok(Some(Blob {
            size,
            body: Box::pin(body),
        }))
    }

    async fn delete(&self, key: &BlobKey) -> Result<(), StoreError> {
        match self.store.delete(&self.path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(blob_error(e)),
        }
        if key.variant_of().is_some() {
            return Ok(());
        }
        // A file's thumbnails: a listing, which finds none for most files.
        let variants =
            ObjectPath::from(format!("{}{}", self.settings.prefix, key.variants_prefix()));
        self.delete_under(&variants).await
    }

    async fn delete_app(&self, app: &AppName) -> Result<(), StoreError> {
        self.delete_under(&self.app_prefix(app)).await
    }

    fn describe(&self) -> String {
        format!("s3://{}/{}", self.settings.bucket, self.settings.prefix)
    }
}

impl S3Blobs {
    /// Deletes every object under `prefix` (whole path segments).
    async fn delete_under(&self, prefix: &ObjectPath) -> Result<(), StoreError> {
        let locations = self
            .store
            .list(Some(prefix))
            .map_ok(|meta| meta.location)
            .boxed();
        self.store
            .delete_stream(locations)
            .try_for_each(|_| futures_util::future::ready(Ok(())))
            .await
            .map_err(blob_error)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::blobs::FileId;

    /// One app's uploads hold at most [`MAX_PUTS_PER_APP`] places: its next one waits holding
    /// none of all, while another app's goes ahead; the places come back when they end.
    #[tokio::test]
    async fn one_apps_slow_uploads_leave_places_to_the_other_apps() {
        let blobs = Arc::new(
            S3Blobs::new(S3Settings {
                bucket: "photos".into(),
                endpoint: "http://127.0.0.1:9".into(),
                path_style: true,
                ..S3Settings::default()
            })
            .unwrap(),
        );
        // A body that never comes: nothing is sent, the upload just holds its places.
        let put = |app: &str, n: usize| {
            let blobs = Arc::clone(&blobs);
            let key = BlobKey::new(
                &AppName::parse(app).unwrap(),
                &FileId::parse(&format!("fil_{n:022}")).unwrap(),
            );
            tokio::spawn(async move {
                let body: ByteStream = Box::pin(futures_util::stream::pending());
                blobs.put(&key, body).await
            })
        };
        let settle = || tokio::time::sleep(std::time::Duration::from_millis(100));
        let slow: Vec<_> = (0..=MAX_PUTS_PER_APP).map(|n| put("slow", n)).collect();
        settle().await;
        assert_eq!(
            blobs.puts.available_permits(),
            MAX_PUTS - MAX_PUTS_PER_APP,
            "the app's next upload waits for one of its own places"
        );
        let other = put("other", 0);
        settle().await;
        assert_eq!(
            blobs.puts.available_permits(),
            MAX_PUTS - MAX_PUTS_PER_APP - 1,
            "another app's goes ahead"
        );
        for upload in slow.iter().chain([&other]) {
            upload.abort();
        }
        settle().await;
        assert_eq!(blobs.puts.available_permits(), MAX_PUTS);
        assert!(
            crate::sqlite::lock(&blobs.app_puts)
                .values()
                .all(|places| places.available_permits() == MAX_PUTS_PER_APP)
        );
    }
}
