//! HTTP functions: `ANY /v1/apps/{app}/http/{name}/{*path}` turns the request into the event,
//! runs the function, and turns its answer into the response.

use axum::extract::State;
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use cloudlet_core::functions::Trigger;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{raw, run};
use crate::error::ApiError;
use crate::extract::{BodyBytes, CallerOf, Path, TargetApp};
use crate::state::AppState;

/// Response headers a function may not set: the server owns the framing, and cookies on the
/// API's origin are not an app's to set.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "content-length",
    "transfer-encoding",
    "keep-alive",
    "upgrade",
    "x-request-id",
    "set-cookie",
    "content-security-policy",
];

/// Request headers an HTTP function does not get.
const PRIVATE_REQUEST_HEADERS: [&str; 3] = ["authorization", "cookie", "proxy-authorization"];

/// `…/http/{name}` and `…/http/{name}/{*path}`.
#[derive(Deserialize)]
pub(super) struct HttpPath {
    name: String,
    path: Option<String>,
}

/// `ANY /v1/apps/{app}/http/{name}/{*path}`: the request as the event, the function's answer
/// as the response. A function answers `{status, headers, body}` (a string body as is, any
/// other body as JSON); any other value is sent as JSON with status 200.
pub(super) async fn http_route(
    State(state): State<AppState>,
    TargetApp(app): TargetApp,
    CallerOf(caller): CallerOf,
    Path(route): Path<HttpPath>,
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
    let event = raw(&json!({
        "method": method.as_str(),
        "path": path,
        "query": query,
        "headers": request_headers,
        "body": String::from_utf8_lossy(&body),
    }))?;
    let request_id = crate::request_id::current();
    let result = run(
        &state,
        &app,
        &route.name,
        caller,
        Trigger::Http,
        &request_id,
        event,
    )
    .await?;
    let result = serde_json::from_str(result.get()).unwrap_or(Value::Null);
    Ok(http_response(result))
}

fn http_response(result: Value) -> Response {
    let Some(status) = result
        .get("status")
        .and_then(Value::as_u64)
        .and_then(|s| u16::try_from(s).ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
    else {
        return axum::Json(result).into_response();
    };
    let (body, json) = match result.get("body") {
        None | Some(Value::Null) => (String::new(), false),
        Some(Value::String(text)) => (text.clone(), false),
        Some(other) => (other.to_string(), true),
    };
    let mut response = (status, body).into_response();
    let out = response.headers_mut();
    // Every app's functions answer on the API's origin: a page one of them returns may not run
    // scripts there (it could read other apps' sessions), nor be sniffed into one.
    out.insert(
        axum::http::header::CONTENT_SECURITY_POLICY,
        axum::http::HeaderValue::from_static("sandbox"),
    );
    out.insert(
        axum::http::header::X_CONTENT_TYPE_OPTIONS,
        axum::http::HeaderValue::from_static("nosniff"),
    );
    if json {
        out.insert(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/json"),
        );
    }
    let headers = result.get("headers").and_then(Value::as_object);
    for (name, value) in headers.into_iter().flatten().take(64) {
        let value = match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let name = axum::http::HeaderName::from_bytes(name.as_bytes());
        let value = axum::http::HeaderValue::from_str(&value);
        if let (Ok(name), Ok(value)) = (name, value)
            && !HOP_BY_HOP.contains(&name.as_str())
        {
            out.insert(name, value);
        }
    }
    response
}
