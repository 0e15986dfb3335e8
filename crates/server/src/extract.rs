//! Request extractors whose rejections speak the API's error codes: JSON bodies, query strings
//! and the admin API's bearer credentials.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use cloudlet_core::access::{AccessError, Caller};
use serde::de::DeserializeOwned;

use crate::error::{ApiError, Code};
use crate::state::AppState;

/// A JSON object body. Wrong content type, broken JSON, a body of the wrong shape and a body
/// over the size limit each get their own code. Every request body of the API is an object, so
/// anything else (an array that serde would read as a struct's fields in order, say) is refused.
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let axum::Json(value) = axum::Json::<serde_json::Value>::from_request(request, state)
            .await
            .map_err(json_rejection)?;
        if !value.is_object() {
            return Err(ApiError::new(
                Code::InvalidBody,
                "the body must be a JSON object",
            ));
        }
        serde_json::from_value(value)
            .map(Json)
            .map_err(|e| ApiError::new(Code::InvalidBody, format!("the body does not fit: {e}")))
    }
}

/// A JSON object body kept as text, for what only passes it on (a function's event): checked
/// like [`Json`], never taken apart.
pub struct RawJson(pub Box<serde_json::value::RawValue>);

impl<S: Send + Sync> FromRequest<S> for RawJson {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let axum::Json(raw) =
            axum::Json::<Box<serde_json::value::RawValue>>::from_request(request, state)
                .await
                .map_err(json_rejection)?;
        if !raw.get().starts_with('{') {
            return Err(ApiError::new(
                Code::InvalidBody,
                "the body must be a JSON object",
            ));
        }
        Ok(RawJson(raw))
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            Code::UnsupportedMediaType,
            "the body must be JSON, sent with content-type: application/json",
        ),
        JsonRejection::JsonSyntaxError(e) => ApiError::new(
            Code::InvalidJson,
            format!("the body is not valid JSON: {}", e.body_text()),
        ),
        JsonRejection::JsonDataError(e) => ApiError::new(Code::InvalidBody, e.body_text()),
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            Code::PayloadTooLarge,
            "the body is larger than this server accepts (http.max_body_bytes)",
        ),
        other => ApiError::new(Code::InvalidBody, other.body_text()),
    }
}

/// A query string.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| Query(value))
            .map_err(|e: QueryRejection| ApiError::new(Code::InvalidQuery, e.body_text()))
    }
}

/// A path parameter. A segment that does not decode (`%FF`) gets `invalid_path`.
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| Path(value))
            .map_err(|e| ApiError::new(Code::InvalidPath, e.body_text()))
    }
}

/// The caller of the admin API, from `Authorization: Bearer <admin token or app secret key>`.
pub struct CallerOf(pub Caller);

impl FromRequestParts<AppState> for CallerOf {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let bearer = bearer(&parts.headers).map_err(|()| AccessError::InvalidCredentials)?;
        Ok(CallerOf(state.access().authenticate(bearer).await?))
    }
}

/// The bearer token of `Authorization`, if the header is there; `Err` if it is there but is not
/// a bearer token.
pub fn bearer(headers: &HeaderMap) -> Result<Option<&str>, ()> {
    match headers.get(AUTHORIZATION) {
        None => Ok(None),
        Some(value) => bearer_token(value.to_str().ok()).map(Some).ok_or(()),
    }
}

fn bearer_token(header: Option<&str>) -> Option<&str> {
    let (scheme, token) = header?.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::bearer_token;

    #[test]
    fn bearer_tokens_are_read_leniently_but_only_from_the_bearer_scheme() {
        assert_eq!(bearer_token(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer_token(Some("bearer  abc ")), Some("abc"));
        assert_eq!(bearer_token(Some("Basic abc")), None);
        assert_eq!(bearer_token(Some("Bearer")), None);
        assert_eq!(bearer_token(Some("Bearer ")), None);
        assert_eq!(bearer_token(None), None);
    }
}
