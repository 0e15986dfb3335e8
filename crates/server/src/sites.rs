//! HTTP routes for static sites: uploading and listing files (admin API), and serving them at
//! `/sites/{app}/…` with content types, ETags and cache headers; and the client SDK at
//! `/sdk/cloudlet.js` for them to import.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use cloudlet_core::apps::AppName;
use cloudlet_core::sites::SiteError;
use serde::Deserialize;
use serde_json::json;

use crate::bounds::{BodyLimits, with_body_limit};
use crate::error::{ApiError, Code};
use crate::extract::{BodyBytes, CallerOf, Path, TargetApp};
use crate::state::AppState;

pub fn router(limits: &BodyLimits) -> Router<AppState> {
    let files = Router::new().route(
        "/v1/admin/apps/{app}/site/{*path}",
        axum::routing::put(put_file).delete(delete_file),
    );
    let rest = Router::new()
        .route("/v1/admin/apps/{app}/site", get(list_files))
        .route("/sdk/cloudlet.js", get(sdk))
        .route("/sites/{app}", get(to_folder))
        .route("/sites/{app}/", get(serve_index))
        .route("/sites/{app}/{*path}", get(serve));
    with_body_limit(files, limits.site_file).merge(with_body_limit(rest, limits.json))
}

impl From<SiteError> for ApiError {
    fn from(e: SiteError) -> Self {
        let code = match &e {
            SiteError::InvalidPath(_) => Code::InvalidSitePath,
            SiteError::TooLarge => Code::PayloadTooLarge,
            SiteError::TooManyFiles => Code::InvalidSitePath,
            SiteError::NotFound => Code::SiteFileNotFound,
            SiteError::Store(cloudlet_store::StoreError::NoSuchTenant) => {
                return ApiError::new(Code::AppNotFound, "no such app");
            }
            SiteError::Store(_) => return ApiError::internal(&e),
        };
        ApiError::new(code, e.to_string())
    }
}

/// `…/site/{*path}` and `/sites/{app}/{*path}`: a file's path in the site.
#[derive(Deserialize)]
struct SitePath {
    path: String,
}

async fn list_files(
    State(state): State<AppState>,
    TargetApp(app): TargetApp,
    CallerOf(caller): CallerOf,
) -> Result<Response, ApiError> {
    state.admin_app(&caller, &app).await?;
    let files: Vec<_> = state
        .sites()
        .files(&app)
        .await?
        .into_iter()
        .map(|f| json!({ "path": f.path, "content_type": f.content_type, "sha256": f.sha256, "size": f.size }))
        .collect();
    Ok(axum::Json(json!({ "files": files })).into_response())
}

async fn put_file(
    State(state): State<AppState>,
    TargetApp(app): TargetApp,
    CallerOf(caller): CallerOf,
    Path(SitePath { path }): Path<SitePath>,
    BodyBytes(body): BodyBytes,
) -> Result<Response, ApiError> {
    state.admin_app(&caller, &app).await?;
    let file = state.sites().put(&app, &path, body.to_vec()).await?;
    let answer = json!({ "path": file.path, "content_type": file.content_type, "sha256": file.sha256, "size": file.size });
    Ok(axum::Json(answer).into_response())
}

async fn delete_file(
    State(state): State<AppState>,
    TargetApp(app): TargetApp,
    CallerOf(caller): CallerOf,
    Path(SitePath { path }): Path<SitePath>,
) -> Result<StatusCode, ApiError> {
    state.admin_app(&caller, &app).await?;
    state.sites().delete(&app, &path).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The client SDK as an ES module, so that a site served here imports it from its own origin
/// (`import { createClient } from "/sdk/cloudlet.js"`).
const SDK: &str = include_str!("../../../sdk/js/src/index.js");

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
async fn to_folder(TargetApp(app): TargetApp) -> Redirect {
    Redirect::permanent(&format!("/sites/{app}/"))
}

async fn serve_index(
    state: State<AppState>,
    TargetApp(app): TargetApp,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    serve_path(&state, &app, "", &headers).await
}

async fn serve(
    state: State<AppState>,
    TargetApp(app): TargetApp,
    Path(SitePath { path }): Path<SitePath>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    serve_path(&state, &app, &path, &headers).await
}

async fn serve_path(
    state: &AppState,
    app: &AppName,
    path: &str,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let (file, content) = state.sites().serve(app, path).await?;
    let etag = format!("\"{}\"", file.sha256);
    // HTML is checked every time (so a deploy shows at once); the rest may be reused a while.
    let cache = if file.content_type.starts_with("text/html") {
        "no-cache"
    } else {
        "public, max-age=300"
    };
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|tag| tag.trim() == etag || tag.trim() == "*")
        });
    let mut response = if matches {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        content.into_response()
    };
    let out = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&etag) {
        out.insert(header::ETAG, value);
    }
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if let (false, Ok(value)) = (matches, HeaderValue::from_str(&file.content_type)) {
        out.insert(header::CONTENT_TYPE, value);
    }
    out.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    Ok(response)
}
