//! `ctx.files` and `ctx.admin.files`: the app's buckets from a function, through the files
//! service, under the caller's rules (a file written is the caller's) or as the admin. A file's
//! bytes travel as the host call's bytes, both ways, so a read is at most a host call's 16 MiB.

use async_trait::async_trait;
use cloudlet_core::access::Caller;
use cloudlet_core::files::{FileError, Files, Upload, body_of};
use cloudlet_core::functions::{CallScope, Capability, HostFailure, HostReply};
use futures_util::TryStreamExt;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::failure;

/// The most bytes a read hands back: what one host call carries, less room for the file's
/// record beside them.
const MAX_READ_BYTES: i64 = 16 * 1024 * 1024 - 64 * 1024;
/// The most bytes of reads held at once by every function of the instance: a read waits for
/// room, so that many calls reading large files cannot exhaust the server's memory.
pub const READS_IN_FLIGHT_BYTES: usize = 128 * 1024 * 1024;
/// The most of them one app's functions hold: two of the largest reads, so that one app's
/// large reads can not keep every other app's small ones waiting.
pub const READS_IN_FLIGHT_BYTES_PER_APP: usize = 32 * 1024 * 1024;

pub struct FileAccess {
    pub files: Files,
    /// Permits are bytes: a read holds as many as its file's size while it runs, first of its
    /// app's share, then of the instance's.
    pub reads: std::sync::Arc<tokio::sync::Semaphore>,
    pub app_reads: std::sync::Arc<cloudlet_core::shares::AppShares>,
}

/// One call: as the admin (`ctx.admin.files`) or as the caller, and what it asks.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesCall {
    admin: bool,
    request: FilesRequest,
}

#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
enum FilesRequest {
    Write {
        bucket: String,
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        metadata: Option<Map<String, Value>>,
    },
    Read {
        bucket: String,
        id: String,
    },
    Info {
        bucket: String,
        id: String,
    },
    List {
        bucket: String,
        #[serde(default)]
        mine: Option<bool>,
        #[serde(default)]
        limit: Option<usize>,
        #[serde(default)]
        cursor: Option<String>,
    },
    Remove {
        bucket: String,
        id: String,
    },
    Urls {
        ids: Vec<String>,
        #[serde(default)]
        ttl_secs: Option<u64>,
    },
}

#[async_trait]
impl Capability for FileAccess {
    type Request = FilesCall;

    fn name(&self) -> &'static str {
        "files"
    }

    fn shim(&self) -> &'static str {
        include_str!("files.js")
    }

    async fn call(
        &self,
        scope: &CallScope,
        call: FilesCall,
        bytes: Vec<u8>,
    ) -> Result<HostReply, HostFailure> {
        let caller = if call.admin {
            &Caller::Admin
        } else {
            &scope.caller
        };
        let (app, files) = (&scope.app, &self.files);
        let value = match call.request {
            FilesRequest::Write {
                bucket,
                name,
                metadata,
            } => {
                let upload = Upload {
                    name: name.unwrap_or_default(),
                    metadata,
                    declared_size: Some(bytes.len() as u64),
                    ..Upload::default()
                };
                let file = files
                    .upload(app, caller, &bucket, upload, body_of(bytes))
                    .await
                    .map_err(failure)?;
                json!(file)
            }
            FilesRequest::Read { bucket, id } => {
                let info = files
                    .file(app, caller, &bucket, &id)
                    .await
                    .map_err(failure)?;
                if info.size > MAX_READ_BYTES {
                    return Err(failure(FileError::InvalidRequest(format!(
                        "ctx.files.read reads files of at most {MAX_READ_BYTES} bytes; sign a URL \
                         and fetch it for larger ones"
                    ))));
                }
                let size = usize::try_from(info.size).unwrap_or(0);
                let _share = self.app_reads.take(app, size).await;
                let _room = self
                    .reads
                    .acquire_many(u32::try_from(size).unwrap_or(u32::MAX))
                    .await
                    .map_err(|e| HostFailure::new("internal_error", e.to_string()))?;
                let download = files
                    .open(app, caller, &bucket, &id, None, None)
                    .await
                    .map_err(failure)?;
                let bytes: Vec<u8> = download
                    .body
                    .try_fold(Vec::with_capacity(size), |mut all, chunk| async move {
                        // Never more than the file's recorded size.
                        if all.len() + chunk.len() > size {
                            return Err(std::io::Error::other(
                                "the file is larger than its record",
                            ));
                        }
                        all.extend_from_slice(&chunk);
                        Ok(all)
                    })
                    .await
                    .map_err(|e| HostFailure::new("internal_error", e.to_string()))?;
                return Ok(HostReply {
                    value: json!(download.file),
                    bytes,
                });
            }
            FilesRequest::Info { bucket, id } => json!(
                files
                    .file(app, caller, &bucket, &id)
                    .await
                    .map_err(failure)?
            ),
            FilesRequest::List {
                bucket,
                mine,
                limit,
                cursor,
            } => json!(
                files
                    .files(
                        app,
                        caller,
                        &bucket,
                        mine.unwrap_or(false),
                        cursor.as_deref(),
                        limit.unwrap_or(50),
                    )
                    .await
                    .map_err(failure)?
            ),
            FilesRequest::Remove { bucket, id } => {
                files
                    .delete(app, caller, &bucket, &id)
                    .await
                    .map_err(failure)?;
                Value::Null
            }
            FilesRequest::Urls { ids, ttl_secs } => {
                let urls = files
                    .sign(app, caller, &ids, ttl_secs, None)
                    .await
                    .map_err(failure)?;
                json!({ "urls": urls })
            }
        };
        Ok(HostReply::json(value))
    }
}
