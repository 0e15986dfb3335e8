//! Request extractors whose rejections speak the API's error codes: JSON bodies, query strings,
//! path parameters, the app a request names ([`TargetApp`]) and who is calling ([`CallerOf`]).
//! Handlers never read a raw app name or an `Authorization` header themselves.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, MatchedPath, Request};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use cloudlet_core::access::{AccessError, Caller, KeyToCheck};
use cloudlet_core::apps::AppName;
use cloudlet_core::auth::PlatformAddresses;
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
    if let Some(failure) = crate::bounds::body_failure(&rejection) {
        return failure;
    }
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
            "the body is larger than this route accepts",
        ),
        other => ApiError::new(Code::InvalidBody, other.body_text()),
    }
}

/// A body of any type, as bytes (a site file, an HTTP function's request). Its failures speak
/// the API's codes like the JSON ones.
pub struct BodyBytes(pub axum::body::Bytes);

impl<S: Send + Sync> FromRequest<S> for BodyBytes {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        axum::body::Bytes::from_request(request, state)
            .await
            .map(BodyBytes)
            .map_err(|rejection| {
                if let Some(failure) = crate::bounds::body_failure(&rejection) {
                    return failure;
                }
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    return ApiError::new(
                        Code::PayloadTooLarge,
                        "the body is larger than this route accepts",
                    );
                }
                ApiError::new(Code::InvalidBody, rejection.body_text())
            })
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

/// The app a request names in its path (`{app}`), parsed into an [`AppName`] before anything
/// else happens. A segment that can not be an app's name (an encoded slash, `..`, a NUL, too
/// long) answers `404 app_not_found`, exactly like an app that does not exist; nothing is opened
/// for it. An app that does not exist is found out by the store, which opens without creating.
pub struct TargetApp(pub AppName);

impl<S: Send + Sync> FromRequestParts<S> for TargetApp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match app_param(parts, state).await? {
            Some(app) => Ok(TargetApp(app)),
            None => Err(ApiError::internal(
                &"a route without {app} asked for its app",
            )),
        }
    }
}

/// The `{app}` path parameter, if the route has one. It is read from the path itself (the
/// segment where the route's template has `{app}`) and decoded here, so that a segment that does
/// not even decode (`%FF`) is not found like any other impossible name.
pub(crate) async fn app_param<S: Send + Sync>(
    parts: &mut Parts,
    _state: &S,
) -> Result<Option<AppName>, ApiError> {
    let Some(template) = parts.extensions.get::<MatchedPath>() else {
        return Ok(None);
    };
    let Some(index) = template.as_str().split('/').position(|s| s == "{app}") else {
        return Ok(None);
    };
    let raw = parts.uri.path().split('/').nth(index).unwrap_or_default();
    let decoded = percent_encoding::percent_decode_str(raw).decode_utf8_lossy();
    AppName::parse(&decoded).map(Some).map_err(|_| {
        let shown: String = decoded.chars().take(64).collect();
        ApiError::new(Code::AppNotFound, format!("no app named {shown:?}"))
    })
}

/// Who is calling, from `Authorization: Bearer …`: nobody without the header; an end user with
/// an access token (a JWT) of the app the path names; the admin token; or an app's secret key,
/// refused (`403 forbidden`) on another app's routes. Routes say what they need of the caller
/// (`require_admin`, `require_app_admin`, a user); this only establishes who it is.
pub struct CallerOf(pub Caller);

impl FromRequestParts<AppState> for CallerOf {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        // The app first: a name that can not be an app's is not found, whoever asks.
        let app = app_param(parts, state).await?;
        // A person through the console's gate, which has checked their role on this route.
        if parts
            .extensions
            .get::<crate::console::ConsoleCaller>()
            .is_some()
        {
            return Ok(CallerOf(Caller::Admin));
        }
        let token = bearer(&parts.headers).map_err(|()| AccessError::InvalidCredentials)?;
        let Some(token) = token else {
            return Ok(CallerOf(Caller::Anonymous));
        };
        caller_of(state, app.as_ref(), token).await.map(CallerOf)
    }
}

/// Who a token (sent some other way than the header: a realtime socket's first message) is,
/// for the routes of `app`, as [`CallerOf`] decides it.
pub async fn caller_of_token(
    state: &AppState,
    app: &AppName,
    token: &str,
) -> Result<Caller, ApiError> {
    caller_of(state, Some(app), token).await
}

async fn caller_of(
    state: &AppState,
    app: Option<&AppName>,
    token: &str,
) -> Result<Caller, ApiError> {
    if token.contains('.') {
        // Access tokens are JWTs; secret keys and the admin token have no dot.
        let Some(app) = app else {
            return Err(AccessError::InvalidCredentials.into());
        };
        let principal = state.auth().authenticate(app, Some(token)).await?;
        return Ok(Caller::User(principal));
    }
    let caller = state.access().authenticate(Some(token)).await?;
    if let (Caller::AppKey(own), Some(app)) = (&caller, app)
        && own != app
    {
        return Err(ApiError::new(
            Code::Forbidden,
            "this key belongs to another app",
        ));
    }
    Ok(caller)
}

/// Which platform addresses the caller may give an app
/// ([`cloudlet_core::auth::PlatformAddresses`]): any, for the instance's operator (the admin
/// token, or a console instance owner); the platform's own otherwise (an app's key, an app's
/// console owners).
pub struct Operator(pub PlatformAddresses);

impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let operator = match parts.extensions.get::<crate::console::ConsoleCaller>() {
            Some(person) => person.instance_owner,
            None => {
                let CallerOf(caller) = CallerOf::from_request_parts(parts, state).await?;
                matches!(caller, Caller::Admin)
            }
        };
        Ok(Operator(match operator {
            true => PlatformAddresses::Any,
            false => PlatformAddresses::Own,
        }))
    }
}

/// The app an admin route acts on, once its caller is known to administer it (the admin token,
/// or that app's key) and the app is known to exist. It runs before the body is read, so that
/// nobody without credentials can make the server read an upload or a deploy.
pub struct AdminOf(pub AppName);

impl FromRequestParts<AppState> for AdminOf {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let TargetApp(app) = TargetApp::from_request_parts(parts, state).await?;
        let CallerOf(caller) = CallerOf::from_request_parts(parts, state).await?;
        caller.require_app_admin(&app)?;
        // The app's own key was just found in the app's row; the admin token names any app,
        // which must exist.
        if !matches!(caller, Caller::AppKey(_)) {
            state.apps().get(&app).await?;
        }
        Ok(AdminOf(app))
    }
}

/// [`AdminOf`] for a write that can check an app key itself ([`KeyToCheck`], so far a queue's
/// send): the key of the app that last held on this node is taken without a lookup, and the
/// write checks it, answering nothing but its success before the key is known to hold. Such a
/// key may make the server read the request's body (within the route's limit) before it is
/// checked; any other caller is established as [`AdminOf`] does, before the body is read.
pub struct KeyedAdminOf(pub AppName, pub Option<KeyToCheck>);

impl FromRequestParts<AppState> for KeyedAdminOf {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let TargetApp(app) = TargetApp::from_request_parts(parts, state).await?;
        let console = parts
            .extensions
            .get::<crate::console::ConsoleCaller>()
            .is_some();
        if !console
            && let Ok(Some(token)) = bearer(&parts.headers)
            && let Some(key) = state.access().key_to_check(token, &app)
        {
            return Ok(KeyedAdminOf(app, Some(key)));
        }
        let AdminOf(app) = AdminOf::from_request_parts(parts, state).await?;
        Ok(KeyedAdminOf(app, None))
    }
}

/// The instance's administrator (the admin token), checked before the body is read.
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let CallerOf(caller) = CallerOf::from_request_parts(parts, state).await?;
        caller.require_admin()?;
        Ok(Admin)
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
