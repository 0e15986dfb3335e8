//! HTTP routes for files: buckets (admin API), uploads in the form every mini-program platform's
//! `uploadFile` sends (`multipart/form-data`, one file) or as a plain body, downloads with
//! ranges, ETags and cache headers, signed URLs, listing and deleting.
//!
//! Everything a request names is parsed before any I/O: the bucket by the files service (a
//! name of the collection rule), a file id by [`FileId::parse`] (anything else is simply not
//! found), a range by [`ByteRange::parse`]. A download of anything that is not a raster image,
//! audio or video is an attachment with `nosniff` and a sandboxing CSP, so no uploaded HTML or
//! SVG ever renders on the API's origin.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cloudlet_core::apps::AppName;
use cloudlet_core::files::{
    BucketInput, BucketView, ByteRange, Download, FileError, FilePage, FileView, MAX_FILE_BYTES,
    MULTIPART_SLACK, Signature, SignedUrl, Upload,
};
use cloudlet_core::thumbs::ThumbError;
use cloudlet_store::ByteStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use futures_util::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::bounds::{BodyLimits, body_failure, with_body_limit};
use crate::error::{ApiError, Code};
use crate::extract::{AdminOf, CallerOf, Json as JsonBody, Path, Query, TargetApp};
use crate::openapi::Routes;
use crate::state::AppState;

/// A refused upload's body is read to its end when it is at most this long.
const SMALL_BODY_BYTES: u64 = 64 * 1024;

/// Text fields of a multipart upload: at most this many bytes in all.
const MAX_FIELDS_BYTES: usize = 4 * 1024;

pub fn router(limits: &BodyLimits) -> Routes {
    let uploads = OpenApiRouter::new().routes(routes!(upload));
    let rest = OpenApiRouter::new()
        .routes(routes!(put_bucket, get_bucket, delete_bucket))
        .routes(routes!(list_buckets))
        .routes(routes!(list_files))
        .routes(routes!(download, delete_file))
        .routes(routes!(file_info))
        .routes(routes!(sign));
    let upload_limit = usize::try_from(MAX_FILE_BYTES + MULTIPART_SLACK).unwrap_or(usize::MAX);
    with_body_limit(uploads, limits, upload_limit).merge(with_body_limit(rest, limits, limits.json))
}

impl From<FileError> for ApiError {
    fn from(e: FileError) -> Self {
        let code = match &e {
            FileError::BucketNotFound(_) => Code::BucketNotFound,
            FileError::InvalidBucket(_) => Code::InvalidBucket,
            FileError::NotFound => Code::FileNotFound,
            FileError::Forbidden(_) => Code::Forbidden,
            FileError::TooLarge(_) => Code::FileTooLarge,
            FileError::TypeNotAllowed(_) => Code::FileTypeNotAllowed,
            FileError::EmptyFile => Code::EmptyFile,
            FileError::InvalidName(_) => Code::InvalidFileName,
            FileError::InvalidMetadata(_) | FileError::InvalidRequest(_) => Code::InvalidUpload,
            FileError::QuotaExceeded(_) => Code::QuotaExceeded,
            FileError::Incomplete(_) => Code::IncompleteUpload,
            // Paused too long is 408, as on every route; a client gone, 400.
            FileError::Interrupted(cause) => {
                let inner = cause
                    .get_ref()
                    .map(|inner| inner as &(dyn std::error::Error + 'static));
                match body_failure(cause).or_else(|| inner.and_then(body_failure)) {
                    Some(failure) => return failure,
                    None => Code::IncompleteUpload,
                }
            }
            FileError::RangeNotSatisfiable { .. } => Code::RangeNotSatisfiable,
            FileError::InvalidSignature(_) => Code::InvalidSignature,
            FileError::Expired => Code::UrlExpired,
            FileError::TooManyUploads(_) | FileError::Busy => Code::TooManyRequests,
            FileError::ThumbNotDeclared(..) => Code::InvalidThumb,
            FileError::Thumb(ThumbError::TooManyPixels { .. }) | FileError::ImageTooLarge(_) => {
                Code::ImageTooLarge
            }
            FileError::Thumb(_) => Code::ThumbUnavailable,
            FileError::Store(cause) => return ApiError::store(cause, &e),
        };
        ApiError::new(code, e.to_string())
    }
}

#[derive(Deserialize)]
struct BucketPath {
    #[allow(dead_code)]
    app: String,
    bucket: String,
}

#[derive(Deserialize)]
struct FilePath {
    #[allow(dead_code)]
    app: String,
    bucket: String,
    file: String,
}

#[derive(Serialize, ToSchema)]
struct Buckets {
    buckets: Vec<BucketView>,
}

/// Declares or replaces a bucket: the types it takes, its largest file, its thumbnail sizes and
/// its rules.
#[utoipa::path(put, path = "/v1/admin/apps/{app}/buckets/{bucket}", tag = "files",
    params(("app" = AppName, Path), ("bucket" = String, Path)), request_body = BucketInput,
    responses((status = 200, body = BucketView)))]
async fn put_bucket(
    State(state): State<AppState>,
    AdminOf(app): AdminOf,
    CallerOf(caller): CallerOf,
    Path(path): Path<BucketPath>,
    JsonBody(input): JsonBody<BucketInput>,
) -> Result<axum::Json<BucketView>, ApiError> {
    let view = state
        .files()
        .put_bucket(&app, &caller, &path.bucket, input)
        .await?;
    Ok(axum::Json(view))
}

/// A bucket, its defaults filled in.
#[utoipa::path(get, path = "/v1/admin/apps/{app}/buckets/{bucket}", tag = "files",
    params(("app" = AppName, Path), ("bucket" = String, Path)),
    responses((status = 200, body = BucketView)))]
async fn get_bucket(
    State(state): State<AppState>,
    AdminOf(app): AdminOf,
    CallerOf(caller): CallerOf,
    Path(path): Path<BucketPath>,
) -> Result<axum::Json<BucketView>, ApiError> {
    Ok(axum::Json(
        state.files().bucket(&app, &caller, &path.bucket).await?,
    ))
}

/// Deletes a bucket and every file in it.
#[utoipa::path(delete, path = "/v1/admin/apps/{app}/buckets/{bucket}", tag = "files",
    params(("app" = AppName, Path), ("bucket" = String, Path)),
    responses((status = 204, description = "deleted")))]
async fn delete_bucket(
    State(state): State<AppState>,
    AdminOf(app): AdminOf,
    CallerOf(caller): CallerOf,
    Path(path): Path<BucketPath>,
) -> Result<StatusCode, ApiError> {
    state
        .files()
        .delete_bucket(&app, &caller, &path.bucket)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The app's buckets, by name.
#[utoipa::path(get, path = "/v1/admin/apps/{app}/buckets", tag = "files",
    params(("app" = AppName, Path)), responses((status = 200, body = Buckets)))]
async fn list_buckets(
    State(state): State<AppState>,
    AdminOf(app): AdminOf,
    CallerOf(caller): CallerOf,
) -> Result<axum::Json<Buckets>, ApiError> {
    let buckets = state.files().buckets(&app, &caller).await?;
    Ok(axum::Json(Buckets { buckets }))
}

/// A plain upload's query: the file's name and its metadata (a JSON object).
#[derive(Deserialize, Default, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct UploadQuery {
    /// The file's name (default `file`).
    name: Option<String>,
    /// A JSON object kept with the file, which rules can read.
    metadata: Option<String>,
}

/// Uploads one file into the bucket, under its create rule and limits: `multipart/form-data`
/// as `wx.uploadFile`, `qq.uploadFile`, `tt.uploadFile` and `my.uploadFile` send it (one file
/// part; text fields before it become the file's metadata, or the field `metadata` as a JSON
/// object; the field `filename` names the file, else the part's file name does; Alipay's
/// `fileName` and `fileType` are its own plumbing, ignored), or any other body as the file
/// itself.
#[utoipa::path(post, path = "/v1/apps/{app}/files/{bucket}", tag = "files",
    params(("app" = AppName, Path), ("bucket" = String, Path), UploadQuery),
    request_body(content = Vec<u8>, content_type = "multipart/form-data"),
    responses((status = 201, body = FileView)))]
async fn upload(
    State(state): State<AppState>,
    TargetApp(app): TargetApp,
    CallerOf(caller): CallerOf,
    Path(path): Path<BucketPath>,
    Query(query): Query<UploadQuery>,
    request: Request,
) -> Result<(StatusCode, axum::Json<FileView>), ApiError> {
    state.apps().get(&app).await?;
    let length = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    // What can be refused before the body is read, is. A small body is read (and dropped)
    // first all the same: a client still sending it would otherwise see the connection close
    // under it instead of the answer.
    let prepared = state
        .files()
        .prepare_upload(&app, &caller, &path.bucket, length)
        .await;
    let max_bytes = match prepared {
        Ok(max_bytes) => max_bytes,
        Err(e) => {
            if length.is_some_and(|n| n <= SMALL_BODY_BYTES) {
                let limit = usize::try_from(SMALL_BODY_BYTES).unwrap_or(usize::MAX);
                let _ = axum::body::to_bytes(request.into_body(), limit).await;
            }
            return Err(e.into());
        }
    };
    let body = request.into_body().into_data_stream();
    let view = if content_type
        .to_ascii_lowercase()
        .starts_with("multipart/form-data")
    {
        let boundary = multer::parse_boundary(&content_type).map_err(|e| {
            ApiError::new(
                Code::InvalidUpload,
                format!("multipart without a boundary: {e}"),
            )
        })?;
        let form = Form {
            length,
            max_bytes,
            boundary,
        };
        upload_multipart(&state, &app, &caller, &path.bucket, form, body).await?
    } else {
        let metadata = query.metadata.as_deref().map(parse_metadata).transpose()?;
        let upload = Upload {
            name: query.name.unwrap_or_default(),
            metadata,
            declared_type: Some(content_type).filter(|t| !t.is_empty()),
            declared_size: length,
            body_length: None,
        };
        let stream: ByteStream = Box::pin(body.map_err(body_error));
        state
            .files()
            .upload(&app, &caller, &path.bucket, upload, stream)
            .await?
    };
    Ok((StatusCode::CREATED, axum::Json(view)))
}

fn parse_metadata(text: &str) -> Result<Map<String, Json>, ApiError> {
    match serde_json::from_str::<Json>(text) {
        Ok(Json::Object(map)) => Ok(map),
        _ => Err(ApiError::new(
            Code::InvalidUpload,
            "metadata must be a JSON object",
        )),
    }
}

/// A body error, as the intake sees it.
fn body_error(e: axum::Error) -> std::io::Error {
    std::io::Error::other(e)
}

/// A form's envelope: its length, its bucket's largest file and its boundary.
struct Form {
    length: Option<u64>,
    max_bytes: u64,
    boundary: String,
}

/// Bytes of a form outside its file (boundaries, part headers, text fields, anything after the
/// file) that are read at most, with room for what the parser reads ahead of the file's start.
const OUTSIDE_FILE_BYTES: i64 = MULTIPART_SLACK as i64 + 1024 * 1024;

async fn upload_multipart(
    state: &AppState,
    app: &AppName,
    caller: &cloudlet_core::access::Caller,
    bucket: &str,
    form: Form,
    body: axum::body::BodyDataStream,
) -> Result<FileView, ApiError> {
    // The parser buffers what it reads until it finds a boundary or a header's end: bounded
    // here, so that no form without a file (or with a header that never ends) is held whole.
    let in_file = Arc::new(AtomicBool::new(false));
    let budget = Arc::new(AtomicI64::new(OUTSIDE_FILE_BYTES));
    let (counting, left) = (Arc::clone(&in_file), Arc::clone(&budget));
    let body = body.map(move |chunk| {
        let chunk = chunk.map_err(std::io::Error::other)?;
        if !counting.load(Ordering::Relaxed) {
            let size = i64::try_from(chunk.len()).unwrap_or(i64::MAX);
            if left.fetch_sub(size, Ordering::Relaxed) < size {
                return Err(std::io::Error::other(OutsideTooLarge));
            }
        }
        Ok(chunk)
    });
    let limits = multer::Constraints::new()
        .size_limit(multer::SizeLimit::new().whole_stream(form.max_bytes + MULTIPART_SLACK));
    let mut multipart = multer::Multipart::with_constraints(body, form.boundary, limits);
    let length = form.length;
    let mut fields: Map<String, Json> = Map::new();
    let mut fields_bytes = 0usize;
    let mut name: Option<String> = None;
    loop {
        let field = multipart.next_field().await.map_err(multipart_error)?;
        let Some(mut field) = field else {
            return Err(ApiError::new(
                Code::InvalidUpload,
                "the form has no file part",
            ));
        };
        if field.file_name().is_none() {
            // A text field: metadata, the file's name, or Alipay's plumbing.
            let key = field.name().unwrap_or("").to_owned();
            let mut text = Vec::new();
            while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
                fields_bytes += chunk.len() + key.len();
                if fields_bytes > MAX_FIELDS_BYTES {
                    return Err(ApiError::new(
                        Code::InvalidUpload,
                        format!("the form's text fields are over {MAX_FIELDS_BYTES} bytes"),
                    ));
                }
                text.extend_from_slice(&chunk);
            }
            let text = String::from_utf8(text).map_err(|_| {
                ApiError::new(Code::InvalidUpload, format!("field {key:?} is not UTF-8"))
            })?;
            match key.as_str() {
                "metadata" => fields.extend(parse_metadata(&text)?),
                "filename" => name = Some(text),
                // Alipay's own: the file part's field name, and a media kind.
                "fileName" | "fileType" => {}
                _ => {
                    fields.insert(key, Json::String(text));
                }
            }
            continue;
        }
        let upload = Upload {
            name: name
                .take()
                .or_else(|| field.file_name().map(str::to_owned))
                .unwrap_or_default(),
            metadata: Some(std::mem::take(&mut fields)),
            declared_type: field.content_type().map(|m| m.essence_str().to_owned()),
            declared_size: None,
            body_length: length,
        };
        let stream: ByteStream = Box::pin(field.map_err(std::io::Error::other));
        in_file.store(true, Ordering::Relaxed);
        let stored = state
            .files()
            .upload(app, caller, bucket, upload, stream)
            .await;
        in_file.store(false, Ordering::Relaxed);
        let view = stored?;
        // One file per request: a second one undoes the first.
        match multipart.next_field().await {
            Ok(None) => return Ok(view),
            Ok(Some(_)) => {
                let _ = state
                    .files()
                    .delete(app, &admin_of(app), bucket, &view.id)
                    .await;
                return Err(ApiError::new(
                    Code::InvalidUpload,
                    "one file per request, and its text fields before it",
                ));
            }
            Err(e) => {
                let _ = state
                    .files()
                    .delete(app, &admin_of(app), bucket, &view.id)
                    .await;
                return Err(multipart_error(e));
            }
        }
    }
}

/// Acting as the app's own key: to undo what a request stored.
fn admin_of(app: &AppName) -> cloudlet_core::access::Caller {
    cloudlet_core::access::Caller::AppKey(app.clone())
}

/// A form whose parts outside its file passed [`OUTSIDE_FILE_BYTES`].
#[derive(Debug, thiserror::Error)]
#[error("the form holds more than its file and a few fields")]
struct OutsideTooLarge;

fn multipart_error(e: multer::Error) -> ApiError {
    if let Some(failure) = body_failure(&e) {
        return failure;
    }
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(error) = cause {
        // An `io::Error` names its inner error's source as its own, not the inner error.
        let outside = error.is::<OutsideTooLarge>()
            || error
                .downcast_ref::<std::io::Error>()
                .and_then(std::io::Error::get_ref)
                .is_some_and(|inner| inner.is::<OutsideTooLarge>());
        if outside {
            return ApiError::new(Code::InvalidUpload, OutsideTooLarge.to_string());
        }
        cause = error.source();
    }
    if matches!(
        e,
        multer::Error::StreamSizeExceeded { .. } | multer::Error::FieldSizeExceeded { .. }
    ) {
        return ApiError::new(Code::FileTooLarge, format!("the form: {e}"));
    }
    let code = match e {
        multer::Error::IncompleteStream
        | multer::Error::IncompleteFieldData { .. }
        | multer::Error::IncompleteHeaders
        | multer::Error::StreamReadFailed(_) => Code::IncompleteUpload,
        _ => Code::InvalidUpload,
    };
    ApiError::new(code, format!("the form: {e}"))
}

/// A page query: `limit` (default 50), `cursor`, and `mine=true` for the caller's own.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    #[serde(default = "default_limit")]
    limit: usize,
    cursor: Option<String>,
    #[serde(default)]
    mine: bool,
}

fn default_limit() -> usize {
    50
}

/// The bucket's files that the list rule lets the caller see, newest first.
#[utoipa::path(get, path = "/v1/apps/{app}/buckets/{bucket}/files", tag = "files",
    params(("app" = AppName, Path), ("bucket" = String, Path), ListQuery),
    responses((status = 200, body = FilePage)))]
async fn list_files(
    State(state): State<AppState>,
    TargetApp(app): TargetApp,
    CallerOf(caller): CallerOf,
    Path(path): Path<BucketPath>,
    Query(query): Query<ListQuery>,
) -> Result<axum::Json<FilePage>, ApiError> {
    state.apps().get(&app).await?;
    let page = state
        .files()
        .files(
            &app,
            &caller,
            &path.bucket,
            query.mine,
            query.cursor.as_deref(),
            query.limit,
        )
        .await
        .map_err(|e| match e {
            FileError::InvalidRequest(m) if m.contains("cursor") => {
                ApiError::new(Code::InvalidCursor, m)
            }
            FileError::InvalidRequest(m) => ApiError::new(Code::InvalidQuery, m),
            other => other.into(),
        })?;
    Ok(axum::Json(page))
}

/// A thumbnail size, and a signed URL's query, or none. Other parameters (a cache-buster) are
/// ignored.
#[derive(Deserialize, Default, utoipa::IntoParams)]
struct DownloadQuery {
    /// Unix seconds after which the signed URL is refused.
    expires: Option<u64>,
    /// A thumbnail size the bucket declares (`200x200`); a signed URL is signed for it.
    thumb: Option<String>,
    sig: Option<String>,
}

/// The file's bytes, or a thumbnail of it (`?thumb=`), to a caller the view rule lets see it,
/// or with a signed URL's query; a `Range` of one span is answered `206`, an `If-None-Match` of
/// its ETag `304`.
#[utoipa::path(get, path = "/v1/apps/{app}/files/{bucket}/{file}", tag = "files",
    params(("app" = AppName, Path), ("bucket" = String, Path), ("file" = String, Path), DownloadQuery),
    responses((status = 200, description = "the file", content_type = "*/*"),
        (status = 206, description = "a range of it"), (status = 304, description = "not modified")))]
async fn download(
    State(state): State<AppState>,
    TargetApp(app): TargetApp,
    CallerOf(caller): CallerOf,
    Path(path): Path<FilePath>,
    Query(query): Query<DownloadQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    // No look at the app first: its database is opened only if it exists (`app_not_found`
    // otherwise), and this is the hottest route of files.
    let signature = match (query.expires, query.sig) {
        (Some(expires), Some(sig)) => Some(Signature {
            expires,
            thumb: query.thumb.clone(),
            sig,
        }),
        (None, None) => None,
        _ => {
            return Err(ApiError::new(
                Code::InvalidSignature,
                "a signed URL has both expires and sig",
            ));
        }
    };
    if let Some(thumb) = &query.thumb {
        // A thumbnail is sent whole: a `Range` may be ignored, and is.
        let download = state
            .files()
            .thumbnail(
                &app,
                &caller,
                &path.bucket,
                &path.file,
                thumb,
                signature.as_ref(),
            )
            .await?;
        return Ok(respond(download, &headers));
    }
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(ByteRange::parse);
    let opened = state
        .files()
        .open(
            &app,
            &caller,
            &path.bucket,
            &path.file,
            signature.as_ref(),
            range,
        )
        .await;
    let download = match opened {
        Ok(download) => download,
        Err(FileError::RangeNotSatisfiable { size }) => {
            let mut response =
                ApiError::from(FileError::RangeNotSatisfiable { size }).into_response();
            if let Ok(value) = HeaderValue::from_str(&format!("bytes */{size}")) {
                response.headers_mut().insert(header::CONTENT_RANGE, value);
            }
            return Ok(response);
        }
        Err(e) => return Err(e.into()),
    };
    Ok(respond(download, &headers))
}

/// Whether a type is shown inline: raster images, audio and video. Everything else (HTML, SVG,
/// PDF, scripts, unknown bytes) is an attachment.
fn inline(content_type: &str) -> bool {
    matches!(
        content_type,
        "image/jpeg" | "image/png" | "image/gif" | "image/webp" | "image/avif" | "image/bmp"
    ) || content_type.starts_with("audio/")
        || content_type.starts_with("video/")
}

fn respond(download: Download, headers: &HeaderMap) -> Response {
    let Download {
        file,
        content_type,
        size,
        etag,
        range,
        body,
        signed_for_secs,
    } = download;
    let not_modified = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|tag| tag.trim() == etag || tag.trim() == "*")
        });
    let partial = range != (0..size);
    let mut response = if not_modified {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut response = Response::new(Body::from_stream(body));
        if partial {
            *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        }
        response
    };
    let out = response.headers_mut();
    let mut set = |name: header::HeaderName, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            out.insert(name, value);
        }
    };
    set(header::ETAG, etag);
    // A file's bytes never change (a new upload is a new id): what may be kept is only a
    // matter of who may see it.
    let cache = match signed_for_secs {
        _ if file.public => "public, max-age=31536000, immutable".to_owned(),
        Some(left) => format!("private, max-age={left}"),
        // Asked again each time (the ETag makes it a 304), and never kept by a shared cache
        // or for the next user of a browser.
        None => "private, no-cache".to_owned(),
    };
    set(header::CACHE_CONTROL, cache);
    set(header::ACCEPT_RANGES, "bytes".to_owned());
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned());
    if !not_modified {
        set(
            header::CONTENT_LENGTH,
            (range.end - range.start).to_string(),
        );
        if partial {
            set(
                header::CONTENT_RANGE,
                format!(
                    "bytes {}-{}/{size}",
                    range.start,
                    range.end.saturating_sub(1)
                ),
            );
        }
        if !inline(&content_type) {
            let name: String = percent_encoding::utf8_percent_encode(
                &file.name,
                percent_encoding::NON_ALPHANUMERIC,
            )
            .to_string();
            set(
                header::CONTENT_DISPOSITION,
                format!("attachment; filename*=UTF-8''{name}"),
            );
            set(
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; sandbox".to_owned(),
            );
        }
        set(header::CONTENT_TYPE, content_type);
    }
    response
}

/// The file's record: name, type, size, owner, metadata.
#[utoipa::path(get, path = "/v1/apps/{app}/files/{bucket}/{file}/info", tag = "files",
    params(("app" = AppName, Path), ("bucket" = String, Path), ("file" = String, Path)),
    responses((status = 200, body = FileView)))]
async fn file_info(
    State(state): State<AppState>,
    TargetApp(app): TargetApp,
    CallerOf(caller): CallerOf,
    Path(path): Path<FilePath>,
) -> Result<axum::Json<FileView>, ApiError> {
    state.apps().get(&app).await?;
    Ok(axum::Json(
        state
            .files()
            .file(&app, &caller, &path.bucket, &path.file)
            .await?,
    ))
}

/// Deletes a file the bucket's delete rule lets the caller reach.
#[utoipa::path(delete, path = "/v1/apps/{app}/files/{bucket}/{file}", tag = "files",
    params(("app" = AppName, Path), ("bucket" = String, Path), ("file" = String, Path)),
    responses((status = 204, description = "deleted")))]
async fn delete_file(
    State(state): State<AppState>,
    TargetApp(app): TargetApp,
    CallerOf(caller): CallerOf,
    Path(path): Path<FilePath>,
) -> Result<StatusCode, ApiError> {
    state.apps().get(&app).await?;
    state
        .files()
        .delete(&app, &caller, &path.bucket, &path.file)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SignBody {
    /// 1 to 100 file ids.
    ids: Vec<String>,
    /// How long the URLs stay valid at least, in seconds (default 3,600; at most 7 days).
    ttl_secs: Option<u64>,
    /// A thumbnail size every file's bucket declares (`200x200`): the URLs open that
    /// thumbnail.
    thumb: Option<String>,
}

#[derive(Serialize, ToSchema)]
struct SignedUrls {
    /// In the order asked: a URL, or `null` for a file the caller may not view.
    urls: Vec<Option<SignedUrl>>,
}

/// Signed URLs for a list of files, for `<image src>` and other clients that cannot send a
/// token (`wx.cloud.getTempFileURL`). Expiries are rounded up to a 10-minute window: the same
/// file signed again within it gets the same URL, so it stays cached.
#[utoipa::path(post, path = "/v1/apps/{app}/file-urls", tag = "files",
    params(("app" = AppName, Path)), request_body = SignBody,
    responses((status = 200, body = SignedUrls)))]
async fn sign(
    State(state): State<AppState>,
    TargetApp(app): TargetApp,
    CallerOf(caller): CallerOf,
    JsonBody(body): JsonBody<SignBody>,
) -> Result<axum::Json<SignedUrls>, ApiError> {
    state.apps().get(&app).await?;
    let urls = state
        .files()
        .sign(
            &app,
            &caller,
            &body.ids,
            body.ttl_secs,
            body.thumb.as_deref(),
        )
        .await
        .map_err(|e| match e {
            FileError::InvalidRequest(m) => ApiError::new(Code::InvalidBody, m),
            other => other.into(),
        })?;
    Ok(axum::Json(SignedUrls { urls }))
}
