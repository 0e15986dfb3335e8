//! HTTP routes for end-user auth: login (`/v1/apps/{app}/auth/…`), the user's own account, and
//! the admin side (provider configuration, a user's sessions, revocation).

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use cloudlet_core::auth::{AuthError, Login, Principal, SessionView, User};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::extract::{CallerOf, Json, Path, bearer};
use crate::limits::ClientIp;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/admin/apps/{app}/auth/providers/{provider}",
            put(configure_provider).get(show_provider),
        )
        .route(
            "/v1/admin/apps/{app}/users/{user}/sessions",
            get(user_sessions),
        )
        .route(
            "/v1/admin/apps/{app}/sessions/{session}",
            delete(revoke_session),
        )
        .route("/v1/apps/{app}/auth/sessions", post(create_session))
        .route("/v1/apps/{app}/auth/sessions/current", delete(log_out))
        .route("/v1/apps/{app}/auth/users", post(sign_up))
        .route("/v1/apps/{app}/auth/refresh", post(refresh))
        .route(
            "/v1/apps/{app}/auth/user",
            get(show_user).patch(update_user).delete(delete_user),
        )
        .route("/v1/apps/{app}/auth/user/phone", post(bind_phone))
}

/// Checks the access token of a request to `app`.
async fn principal(
    state: &AppState,
    app: &str,
    headers: &HeaderMap,
) -> Result<Principal, ApiError> {
    let token = bearer(headers).map_err(|()| AuthError::InvalidToken)?;
    Ok(state.auth().authenticate(app, token).await?)
}

async fn configure_provider(
    State(state): State<AppState>,
    CallerOf(caller): CallerOf,
    Path((app, provider)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> Result<Response, ApiError> {
    state.admin_app(&caller, &app).await?;
    Ok(axum::Json(
        state
            .auth()
            .configure_provider(&app, &provider, body)
            .await?,
    )
    .into_response())
}

async fn show_provider(
    State(state): State<AppState>,
    CallerOf(caller): CallerOf,
    Path((app, provider)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    state.admin_app(&caller, &app).await?;
    Ok(axum::Json(state.auth().provider_view(&app, &provider).await?).into_response())
}

async fn user_sessions(
    State(state): State<AppState>,
    CallerOf(caller): CallerOf,
    Path((app, user)): Path<(String, String)>,
) -> Result<axum::Json<Vec<SessionView>>, ApiError> {
    state.admin_app(&caller, &app).await?;
    Ok(axum::Json(state.auth().sessions_of(&app, &user).await?))
}

async fn revoke_session(
    State(state): State<AppState>,
    CallerOf(caller): CallerOf,
    Path((app, session)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state.admin_app(&caller, &app).await?;
    state.auth().revoke(&app, &session).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST …/auth/sessions`: one body for every provider; which fields it needs depends on it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    provider: String,
    code: Option<String>,
    anonymous_code: Option<String>,
    email: Option<String>,
    password: Option<String>,
    user: Option<String>,
}

impl LoginBody {
    fn into_login(self) -> Result<Login, AuthError> {
        let missing = |field: &str| AuthError::InvalidLoginRequest(format!("{field} is required"));
        Ok(match self.provider.as_str() {
            "password" => Login::Password {
                email: self.email.ok_or_else(|| missing("email"))?,
                password: self.password.ok_or_else(|| missing("password"))?,
            },
            "anonymous" => Login::Anonymous,
            "dev" => Login::Dev {
                user: self.user.ok_or_else(|| missing("user"))?,
            },
            _ => Login::Platform {
                provider: self.provider,
                code: self.code,
                anonymous_code: self.anonymous_code,
            },
        })
    }
}

async fn create_session(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Path(app): Path<String>,
    Json(body): Json<LoginBody>,
) -> Result<Response, ApiError> {
    state.limits().check_login(&app, ip)?;
    state.apps().get(&app).await?;
    let grant = state.auth().login(&app, body.into_login()?).await?;
    Ok((StatusCode::CREATED, axum::Json(grant)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignUp {
    email: String,
    password: String,
}

async fn sign_up(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Path(app): Path<String>,
    Json(body): Json<SignUp>,
) -> Result<Response, ApiError> {
    state.limits().check_login(&app, ip)?;
    state.apps().get(&app).await?;
    let grant = state
        .auth()
        .sign_up(&app, &body.email, &body.password)
        .await?;
    Ok((StatusCode::CREATED, axum::Json(grant)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RefreshBody {
    session_id: String,
}

async fn refresh(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Path(app): Path<String>,
    Json(body): Json<RefreshBody>,
) -> Result<Response, ApiError> {
    state.limits().check_client(ip)?;
    state.apps().get(&app).await?;
    Ok(axum::Json(state.auth().refresh(&app, &body.session_id).await?).into_response())
}

async fn log_out(
    State(state): State<AppState>,
    Path(app): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let principal = principal(&state, &app, &headers).await?;
    state.auth().revoke(&app, &principal.session_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn show_user(
    State(state): State<AppState>,
    Path(app): Path<String>,
    headers: HeaderMap,
) -> Result<axum::Json<User>, ApiError> {
    let principal = principal(&state, &app, &headers).await?;
    Ok(axum::Json(state.auth().user(&principal).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileChange {
    profile: Map<String, Value>,
}

async fn update_user(
    State(state): State<AppState>,
    Path(app): Path<String>,
    headers: HeaderMap,
    Json(body): Json<ProfileChange>,
) -> Result<axum::Json<User>, ApiError> {
    let principal = principal(&state, &app, &headers).await?;
    Ok(axum::Json(
        state
            .auth()
            .update_profile(&principal, body.profile)
            .await?,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PhoneCode {
    #[serde(default = "wechat")]
    provider: String,
    code: String,
}

fn wechat() -> String {
    "wechat".into()
}

/// `POST …/auth/user/phone {"code"}`: the number behind a WeChat `getPhoneNumber` code.
async fn bind_phone(
    State(state): State<AppState>,
    Path(app): Path<String>,
    headers: HeaderMap,
    Json(body): Json<PhoneCode>,
) -> Result<axum::Json<User>, ApiError> {
    let principal = principal(&state, &app, &headers).await?;
    Ok(axum::Json(
        state
            .auth()
            .bind_phone(&principal, &body.provider, &body.code)
            .await?,
    ))
}

async fn delete_user(
    State(state): State<AppState>,
    Path(app): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let principal = principal(&state, &app, &headers).await?;
    state.auth().delete_user(&principal).await?;
    Ok(StatusCode::NO_CONTENT)
}
