//! HTTP routes for static sites: uploading and listing files (admin API), and serving them at
//! `/sites/{app}/…` with content types, ETags and cache headers; and the client SDK at
//! `/sdk/cloudlet.js` for them to import.

use std::sync::{Arc, OnceLock};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use cloudlet_core::apps::AppName;
use cloudlet_core::sites::SiteError;
use cloudlet_store::SiteFile;
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::bounds::{BodyLimits, with_body_limit};
use crate::error::{ApiError, Code};
use crate::extract::{AdminOf, BodyBytes, Path, TargetApp};
use crate::openapi::Routes;
use crate::state::AppState;
use cloudlet_core::shares::{AppShares, Held};

pub fn router(limits: &BodyLimits) -> Routes {
    let files = OpenApiRouter::new().routes(routes!(put_file, delete_file));
    let rest = OpenApiRouter::new()
        .routes(routes!(list_files))
        .routes(routes!(sdk))
        .routes(routes!(to_folder))
        .routes(routes!(serve_index))
        .routes(routes!(serve));
    with_body_limit(files, limits, limits.site_file).merge(with_body_limit(
        rest,
        limits,
        limits.json,
    ))
}

impl From<SiteError> for ApiError {
    fn from(e: SiteError) -> Self {
        let code = match &e {
            SiteError::InvalidPath(_) => Code::InvalidSitePath,
            SiteError::TooLarge => Code::PayloadTooLarge,
            SiteError::TooManyFiles(_) | SiteError::TooManyBytes(_) => Code::SiteFull,
            SiteError::NotFound => Code::SiteFileNotFound,
            SiteError::Store(cause) => return ApiError::store(cause, &e),
        };
        ApiError::new(code, e.to_string())
    }
}

/// `…/site/{*path}` and `/sites/{app}/{*path}`: a file's path in the site.
#[derive(Deserialize)]
struct SitePath {
    path: String,
}

/// A site file as the admin API shows it.
#[derive(Serialize, ToSchema)]
struct SiteFileView {
    path: String,
    content_type: String,
    sha256: String,
    size: i64,
}

impl From<SiteFile> for SiteFileView {
    fn from(f: SiteFile) -> Self {
        SiteFileView {
            path: f.path,
            content_type: f.content_type,
            sha256: f.sha256,
            size: f.size,
        }
    }
}

#[derive(Serialize, ToSchema)]
struct SiteFiles {
    files: Vec<SiteFileView>,
}

/// The files of the app's site.
#[utoipa::path(get, path = "/v1/admin/apps/{app}/site", tag = "sites",
    params(("app" = AppName, Path)), responses((status = 200, body = SiteFiles)))]
async fn list_files(
    State(state): State<AppState>,
    AdminOf(app): AdminOf,
) -> Result<Response, ApiError> {
    let files = state.sites().files(&app).await?;
    let files = files.into_iter().map(SiteFileView::from).collect();
    Ok(axum::Json(SiteFiles { files }).into_response())
}

/// Uploads one file of the site (its content type follows its name).
#[utoipa::path(put, path = "/v1/admin/apps/{app}/site/{*path}", tag = "sites",
    params(("app" = AppName, Path), ("path" = String, Path)),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 200, body = SiteFileView)))]
async fn put_file(
    State(state): State<AppState>,
    AdminOf(app): AdminOf,
    Path(SitePath { path }): Path<SitePath>,
    BodyBytes(body): BodyBytes,
) -> Result<Response, ApiError> {
    let file = state.sites().put(&app, &path, body.to_vec()).await?;
    Ok(axum::Json(SiteFileView::from(file)).into_response())
}

#[utoipa::path(delete, path = "/v1/admin/apps/{app}/site/{*path}", tag = "sites",
    params(("app" = AppName, Path), ("path" = String, Path)),
    responses((status = 204, description = "deleted")))]
async fn delete_file(
    State(state): State<AppState>,
    AdminOf(app): AdminOf,
    Path(SitePath { path }): Path<SitePath>,
) -> Result<StatusCode, ApiError> {
    state.sites().delete(&app, &path).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The client SDK as an ES module, so that a site served here imports it from its own origin
/// (`import { createClient } from "/sdk/cloudlet.js"`).
const SDK: &str = include_str!("../../../sdk/js/src/index.js");

/// The client SDK, as an ES module.
#[utoipa::path(get, path = "/sdk/cloudlet.js", tag = "sites",
    responses((status = 200, description = "the SDK", content_type = "text/javascript")))]
async fn sdk() -> Response {
    let mut response = SDK.into_response();
    let out = response.headers_mut();
    out.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/javascript; charset=utf-8"),
    );
    out.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    response
}

/// `/sites/{app}` → `/sites/{app}/`, so that the page's relative links resolve inside the site.
#[utoipa::path(get, path = "/sites/{app}", tag = "sites", params(("app" = AppName, Path)),
    responses((status = 308, description = "to `/sites/{app}/`")))]
async fn to_folder(
    State(state): State<AppState>,
    TargetApp(app): TargetApp,
) -> Result<Redirect, ApiError> {
    // Only an app's: a redirect is a success, which would count traffic of any name made up.
    state.apps().get(&app).await?;
    Ok(Redirect::permanent(&format!("/sites/{app}/")))
}

/// The site's `index.html`.
#[utoipa::path(get, path = "/sites/{app}/", tag = "sites", params(("app" = AppName, Path)),
    responses((status = 200, description = "the file", content_type = "*/*"),
        (status = 304, description = "not modified")))]
async fn serve_index(
    state: State<AppState>,
    TargetApp(app): TargetApp,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    serve_path(&state, &app, "", &headers).await
}

/// A file of the site, with its content type, ETag and cache headers.
#[utoipa::path(get, path = "/sites/{app}/{*path}", tag = "sites",
    params(("app" = AppName, Path), ("path" = String, Path)),
    responses((status = 200, description = "the file", content_type = "*/*"),
        (status = 304, description = "not modified")))]
async fn serve(
    state: State<AppState>,
    TargetApp(app): TargetApp,
    Path(SitePath { path }): Path<SitePath>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    serve_path(&state, &app, &path, &headers).await
}

/// Bytes of site files a node holds in answers at once. A file is read whole (up to 10 MiB) and
/// held until its client has read it: without a bound, slow readers of a large public file
/// could hold any amount of memory.
const SITE_BYTES_IN_ANSWERS: usize = 256 << 20;

/// Of those, one app's: slow readers of one app's large file must not make every other app's
/// site busy.
const SITE_BYTES_IN_ANSWERS_PER_APP: usize = SITE_BYTES_IN_ANSWERS / 4;

fn site_bytes() -> &'static Arc<Semaphore> {
    static BYTES: OnceLock<Arc<Semaphore>> = OnceLock::new();
    BYTES.get_or_init(|| Arc::new(Semaphore::new(SITE_BYTES_IN_ANSWERS)))
}

fn app_site_bytes() -> &'static Arc<AppShares> {
    static BYTES: OnceLock<Arc<AppShares>> = OnceLock::new();
    BYTES.get_or_init(|| AppShares::new(SITE_BYTES_IN_ANSWERS_PER_APP))
}

/// A site file's bytes in an answer, holding their place among [`SITE_BYTES_IN_ANSWERS`] until
/// the last of them is handed to the connection, or the answer is dropped. They go out in
/// copies of [`CHUNK`] bytes: the connection takes the next only when it has written enough of
/// the last (its buffer is bounded), so a slow reader holds the file here, counted, rather
/// than in the connection's buffer, uncounted; and no chunk it still holds keeps the whole
/// file alive once the place is given back.
struct HeldBody {
    content: Vec<u8>,
    sent: usize,
    place: Option<(OwnedSemaphorePermit, Held)>,
}

/// The bytes of a site file handed to the connection at a time.
const CHUNK: usize = 64 * 1024;

impl http_body::Body for HeldBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if this.sent >= this.content.len() {
            return std::task::Poll::Ready(None);
        }
        let end = (this.sent + CHUNK).min(this.content.len());
        let chunk = Bytes::copy_from_slice(&this.content[this.sent..end]);
        this.sent = end;
        if this.sent == this.content.len() {
            // All handed over: the file's bytes and their place go now.
            this.content = Vec::new();
            this.sent = 0;
            this.place = None;
        }
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.sent >= self.content.len()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact((self.content.len() - self.sent) as u64)
    }
}

/// A place for `bytes` of a site file in answers, if the node and `app`'s share of it have
/// room: taken before the file is read, so that answers waiting to be read hold no more than
/// it.
fn place_for(app: &AppName, bytes: usize) -> Result<(OwnedSemaphorePermit, Held), ApiError> {
    let busy = || {
        ApiError::new(
            Code::ServerBusy,
            "the server holds as many site files in answers as it may; try again",
        )
        .retry_after(1)
    };
    let permits = u32::try_from(bytes).map_err(|_| busy())?;
    let share = app_site_bytes().try_take(app, bytes).ok_or_else(busy)?;
    let place = Arc::clone(site_bytes())
        .try_acquire_many_owned(permits)
        .map_err(|_| busy())?;
    Ok((place, share))
}

/// `content` as an answer's body, holding `place` until it is sent.
fn held_in(place: (OwnedSemaphorePermit, Held), content: Vec<u8>) -> axum::body::Body {
    axum::body::Body::new(HeldBody {
        content,
        sent: 0,
        place: Some(place),
    })
}

/// `content` as an answer's body, if the node and `app`'s share of it have room for its bytes.
#[cfg(test)]
fn held(app: &AppName, content: Vec<u8>) -> Result<axum::body::Body, ApiError> {
    Ok(held_in(place_for(app, content.len())?, content))
}

async fn serve_path(
    state: &AppState,
    app: &AppName,
    path: &str,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    // What the file is first: a revalidation that matches reads none of its bytes, and the
    // rest take their place among the bytes in answers before they are read.
    let mut file = state.sites().find(app, path).await?;
    let etag = |file: &SiteFile| format!("\"{}\"", file.sha256);
    let known = etag(&file);
    let not_modified = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|tag| tag.trim() == known || tag.trim() == "*")
        });
    let mut response = if not_modified {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let place = place_for(app, usize::try_from(file.size).unwrap_or(usize::MAX))?;
        let (read, content) = state.sites().serve(app, path).await?;
        // Deployed again meanwhile: the new file is answered, in a place of its own size.
        let place = if content.len() as i64 == file.size {
            place
        } else {
            drop(place);
            place_for(app, content.len())?
        };
        file = read;
        held_in(place, content).into_response()
    };
    // HTML is checked every time (so a deploy shows at once); the rest may be reused a while.
    let cache = if file.content_type.starts_with("text/html") {
        "no-cache"
    } else {
        "public, max-age=300"
    };
    let out = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&etag(&file)) {
        out.insert(header::ETAG, value);
    }
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if let (false, Ok(value)) = (not_modified, HeaderValue::from_str(&file.content_type)) {
        out.insert(header::CONTENT_TYPE, value);
    }
    out.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn answers_hold_their_bytes_of_the_nodes_room_until_sent() {
        let app = AppName::parse("shop").unwrap();
        let held = |content: Vec<u8>| held(&app, content);
        let free = || site_bytes().available_permits();
        let before = free();
        let body = held(vec![7; 1000]).unwrap();
        assert_eq!(free(), before - 1000, "held while the answer is out");
        let sent = body.collect().await.unwrap().to_bytes();
        assert_eq!(sent.len(), 1000);
        assert_eq!(free(), before, "given back once sent");

        let hog = Arc::clone(site_bytes())
            .try_acquire_many_owned(u32::try_from(before - 10).unwrap())
            .unwrap();
        let refused = held(vec![7; 11]).err().unwrap();
        assert_eq!(
            (refused.code, refused.retry_after),
            (Code::ServerBusy, Some(1))
        );
        drop(hog);
        drop(held(vec![7; 11]).unwrap());
        assert_eq!(free(), before);

        // A larger file goes out a chunk at a time, its place held until the last is taken.
        let size = 2 * CHUNK + 10;
        let mut body = held((0..size).map(|i| (i % 251) as u8).collect()).unwrap();
        let mut sent = Vec::new();
        while let Some(frame) = body.frame().await {
            let chunk = frame.unwrap().into_data().unwrap();
            assert!(chunk.len() <= CHUNK);
            sent.extend_from_slice(&chunk);
            if sent.len() < size {
                assert_eq!(free(), before - size, "held while some is not taken");
            }
        }
        assert_eq!(
            free(),
            before,
            "given back with the last chunk, the body still alive"
        );
        assert_eq!(sent, (0..size).map(|i| (i % 251) as u8).collect::<Vec<_>>());
        drop(body);

        // One app's answers hold at most its share: another app's site is still served.
        let (slow, other) = (
            AppName::parse("slow-site").unwrap(),
            AppName::parse("other-site").unwrap(),
        );
        let share = app_site_bytes()
            .try_take(&slow, SITE_BYTES_IN_ANSWERS_PER_APP - 10)
            .unwrap();
        let refused = super::held(&slow, vec![7; 11]).err().unwrap();
        assert_eq!(refused.code, Code::ServerBusy);
        drop(super::held(&other, vec![7; 11]).unwrap());
        drop(share);
        drop(super::held(&slow, vec![7; 11]).unwrap());
        assert_eq!(free(), before);
    }
}
