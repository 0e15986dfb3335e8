//! HTTP functions: `ANY /v1/apps/{app}/http/{name}/{*path}` turns the request into the event,
//! runs the function, and turns its answer (checked by `cloudlet_core::functions::http`) into
//! the response.

use axum::extract::State;
use axum::http::header::{CONTENT_SECURITY_POLICY, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use cloudlet_core::apps::AppName;
use cloudlet_core::functions::http::HttpAnswer;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{raw, run_http};
use crate::error::ApiError;
use crate::extract::{BodyBytes, CallerOf, Path, TargetApp};
use crate::state::AppState;

/// Request headers an HTTP function does not get.
const PRIVATE_REQUEST_HEADERS: [&str; 3] = ["authorization", "cookie", "proxy-authorization"];

/// `…/http/{name}` and `…/http/{name}/{*path}`.
#[derive(Deserialize)]
pub(super) struct HttpPath {
    name: String,
    path: Option<String>,
}

/// An HTTP function: the request is its event, its answer the response (see docs/functions.md).
/// Both bodies are the app's own. (`OPTIONS` is CORS's: preflights are answered before any
/// function runs.)
#[utoipa::path(method(get, post, put, patch, delete, head),
    path = "/v1/apps/{app}/http/{name}", tag = "functions",
    params(("app" = AppName, Path), ("name" = String, Path)),
    request_body(content = inline(Object), content_type = "*/*", description = "any body"),
    responses((status = 200, description = "the function's answer, any status from 200 to 599",
        content_type = "*/*")))]
pub(super) async fn http_function(
    state: State<AppState>,
    app: TargetApp,
    caller: CallerOf,
    Path(route): Path<HttpPath>,
    request: Parts,
    body: BodyBytes,
) -> Result<Response, ApiError> {
    answer(state, app, caller, route, request, body).await
}

/// [`http_function`] with a path after the function's name, handed to it as `event.path`.
#[utoipa::path(method(get, post, put, patch, delete, head),
    path = "/v1/apps/{app}/http/{name}/{*path}", tag = "functions",
    params(("app" = AppName, Path), ("name" = String, Path), ("path" = String, Path)),
    request_body(content = inline(Object), content_type = "*/*", description = "any body"),
    responses((status = 200, description = "the function's answer, any status from 200 to 599",
        content_type = "*/*")))]
pub(super) async fn http_function_path(
    state: State<AppState>,
    app: TargetApp,
    caller: CallerOf,
    Path(route): Path<HttpPath>,
    request: Parts,
    body: BodyBytes,
) -> Result<Response, ApiError> {
    answer(state, app, caller, route, request, body).await
}

/// Runs the function with the request as its event and answers what it returns.
async fn answer(
    State(state): State<AppState>,
    TargetApp(app): TargetApp,
    CallerOf(caller): CallerOf,
    route: HttpPath,
    request: Parts,
    BodyBytes(body): BodyBytes,
) -> Result<Response, ApiError> {
    let Parts {
        method,
        uri,
        headers,
        ..
    } = request;
    let path = format!("/{}", route.path.as_deref().unwrap_or(""));
    let query: Map<String, Value> = form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
        .collect();
    // The caller's credentials are Cloudlet's (the admin token, a key, a user's token): they are
    // not the function's to see.
    let request_headers: Map<String, Value> = headers
        .iter()
        .filter(|(k, _)| !PRIVATE_REQUEST_HEADERS.contains(&k.as_str()))
        .filter_map(|(k, v)| {
            let value = v.to_str().ok()?.to_owned();
            Some((k.as_str().to_owned(), Value::String(value)))
        })
        .collect();
    // A body that is not UTF-8 comes base64-encoded, flagged, as API gateways pass it.
    let (body, base64) = match std::str::from_utf8(&body) {
        Ok(text) => (text.to_owned(), false),
        Err(_) => (BASE64.encode(&body), true),
    };
    let event = raw(&json!({
        "method": method.as_str(),
        "path": path,
        "query": query,
        "headers": request_headers,
        "body": body,
        "isBase64Encoded": base64,
    }))?;
    let request_id = crate::request_id::current();
    let answer = run_http(&state, &app, &route.name, caller, &request_id, event).await?;
    Ok(http_response(answer))
}

/// The response for a checked answer. Every app's functions answer on the API's origin: a page
/// one of them returns may not run scripts there (it could read other apps' sessions), nor be
/// sniffed into one.
fn http_response(answer: HttpAnswer) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut response = (status, answer.body).into_response();
    let out = response.headers_mut();
    out.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static("sandbox"));
    out.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if answer.json {
        out.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    } else {
        out.remove(CONTENT_TYPE);
    }
    for (name, value) in answer.headers {
        // Both were checked by the answer's rules, which are the same as these (a value's bytes
        // past ASCII, a UTF-8 file name say, go as they are).
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value.as_bytes()),
        ) {
            out.insert(name, value);
        }
    }
    response
}
