//! HTTP routes for end-user auth: login (`/v1/apps/{app}/auth/…`), the user's own account, and
//! the admin side (provider configuration, a user's sessions, revocation).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cloudlet_core::access::Caller;
use cloudlet_core::apps::AppName;
use cloudlet_core::auth::providers::{ProviderKind, ProviderView};
use cloudlet_core::auth::{
    AuthError, Login, LoginCode, Principal, SessionGrant, SessionView, User, UserDetail, policy,
};
use serde::Deserialize;
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::bounds::{BodyLimits, with_body_limit};
use crate::error::{ApiError, Code};
use crate::extract::{AdminOf, CallerOf, Json, Operator, Path, Query, TargetApp};
use crate::limits::{AccountOutcome, ClientIp};
use crate::openapi::Routes;
use crate::state::AppState;

pub fn router(limits: &BodyLimits) -> Routes {
    let routes = OpenApiRouter::new()
        .routes(routes!(configure_provider, show_provider))
        .routes(routes!(list_users))
        .routes(routes!(show_any_user, delete_any_user))
        .routes(routes!(user_sessions))
        .routes(routes!(revoke_session))
        .routes(routes!(create_session))
        .routes(routes!(log_out))
        .routes(routes!(sign_up))
        .routes(routes!(refresh))
        .routes(routes!(show_user, update_user, delete_user))
        .routes(routes!(bind_phone));
    with_body_limit(routes, limits, limits.json)
}

/// The end user a route of the user's own account is for: it takes a user's access token.
pub(crate) fn user(caller: Caller) -> Result<Principal, ApiError> {
    match caller {
        Caller::User(principal) => Ok(principal),
        Caller::Anonymous => Err(AuthError::MissingToken.into()),
        Caller::Admin | Caller::AppKey(_) => Err(ApiError::new(
            Code::Forbidden,
            "this route acts for one user: call it with that user's access token",
        )),
    }
}

#[derive(Deserialize)]
struct ProviderPath {
    provider: String,
}

/// Configures a login provider of the app (its settings and secrets, or `enabled`).
#[utoipa::path(put, path = "/v1/admin/apps/{app}/auth/providers/{provider}", tag = "auth",
    params(("app" = AppName, Path), ("provider" = String, Path)),
    request_body(content = Object, description = "the provider's settings; see docs/auth.md"),
    responses((status = 200, body = ProviderView)))]
async fn configure_provider(
    State(state): State<AppState>,
    AdminOf(app): AdminOf,
    Operator(addresses): Operator,
    Path(path): Path<ProviderPath>,
    Json(body): Json<Value>,
) -> Result<Response, ApiError> {
    Ok(axum::Json(
        state
            .auth()
            .configure_provider(&app, &path.provider, body, addresses)
            .await?,
    )
    .into_response())
}

/// A provider's configuration, secrets left out.
#[utoipa::path(get, path = "/v1/admin/apps/{app}/auth/providers/{provider}", tag = "auth",
    params(("app" = AppName, Path), ("provider" = String, Path)),
    responses((status = 200, body = ProviderView)))]
async fn show_provider(
    State(state): State<AppState>,
    AdminOf(app): AdminOf,
    Path(path): Path<ProviderPath>,
) -> Result<Response, ApiError> {
    Ok(axum::Json(state.auth().provider_view(&app, &path.provider).await?).into_response())
}

#[derive(Deserialize)]
struct UserPath {
    user: String,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct UserQuery {
    /// A user's id, email, phone, openid or unionid (exactly: each is looked up by an index).
    search: Option<String>,
    /// The `next_after` of the page before.
    after: Option<String>,
    /// 1 to 200; 50 by default.
    limit: Option<usize>,
}

/// A page of users.
#[derive(serde::Serialize, ToSchema)]
struct UserPage {
    items: Vec<User>,
    /// Pass as `after` for the next page; `null` on the last.
    next_after: Option<String>,
}

/// The app's users by id, or those a search names.
#[utoipa::path(get, path = "/v1/admin/apps/{app}/users", tag = "auth",
    params(("app" = AppName, Path), UserQuery),
    responses((status = 200, body = UserPage)))]
async fn list_users(
    State(state): State<AppState>,
    AdminOf(app): AdminOf,
    Query(query): Query<UserQuery>,
) -> Result<axum::Json<UserPage>, ApiError> {
    let limit = query.limit.unwrap_or(50);
    let too_long = |text: &Option<String>| text.as_ref().is_some_and(|t| t.len() > 256);
    if !(1..=cloudlet_core::auth::MAX_USER_PAGE).contains(&limit)
        || too_long(&query.search)
        || too_long(&query.after)
    {
        return Err(ApiError::new(
            Code::InvalidQuery,
            "limit is 1 to 200; search and after at most 256 bytes",
        ));
    }
    let search = query
        .search
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let (items, next_after) = state
        .auth()
        .users(&app, search, query.after.as_deref(), limit)
        .await?;
    Ok(axum::Json(UserPage { items, next_after }))
}

/// One user, with their identities (openids, unionids).
#[utoipa::path(get, path = "/v1/admin/apps/{app}/users/{user}", tag = "auth",
    params(("app" = AppName, Path), ("user" = String, Path)),
    responses((status = 200, body = UserDetail)))]
async fn show_any_user(
    State(state): State<AppState>,
    AdminOf(app): AdminOf,
    Path(path): Path<UserPath>,
) -> Result<axum::Json<UserDetail>, ApiError> {
    Ok(axum::Json(
        state.auth().user_detail(&app, &path.user).await?,
    ))
}

/// Deletes a user as their own deletion does: identities, sessions (their tokens stop at
/// once) and files.
#[utoipa::path(delete, path = "/v1/admin/apps/{app}/users/{user}", tag = "auth",
    params(("app" = AppName, Path), ("user" = String, Path)),
    responses((status = 204, description = "deleted")))]
async fn delete_any_user(
    State(state): State<AppState>,
    AdminOf(app): AdminOf,
    Path(path): Path<UserPath>,
) -> Result<StatusCode, ApiError> {
    state.auth().delete_user_by_id(&app, &path.user).await?;
    if let Err(e) = state.files().sweep(&app).await {
        tracing::warn!(app = %app, error = %e, "could not sweep the files' trash");
    }
    Ok(StatusCode::NO_CONTENT)
}

/// A user's sessions.
#[utoipa::path(get, path = "/v1/admin/apps/{app}/users/{user}/sessions", tag = "auth",
    params(("app" = AppName, Path), ("user" = String, Path)),
    responses((status = 200, body = Vec<SessionView>)))]
async fn user_sessions(
    State(state): State<AppState>,
    AdminOf(app): AdminOf,
    Path(path): Path<UserPath>,
) -> Result<axum::Json<Vec<SessionView>>, ApiError> {
    Ok(axum::Json(
        state.auth().sessions_of(&app, &path.user).await?,
    ))
}

#[derive(Deserialize)]
struct SessionPath {
    session: String,
}

/// Revokes a session; its access tokens stop working at once.
#[utoipa::path(delete, path = "/v1/admin/apps/{app}/sessions/{session}", tag = "auth",
    params(("app" = AppName, Path), ("session" = String, Path)),
    responses((status = 204, description = "revoked")))]
async fn revoke_session(
    State(state): State<AppState>,
    AdminOf(app): AdminOf,
    Path(path): Path<SessionPath>,
) -> Result<StatusCode, ApiError> {
    state.auth().revoke(&app, &path.session).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST …/auth/sessions`: one body for every provider; which fields it needs depends on it.
#[derive(Deserialize, ToSchema)]
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
                code: self
                    .code
                    .map(|code| LoginCode::parse("code", code))
                    .transpose()?,
                anonymous_code: self
                    .anonymous_code
                    .map(|code| LoginCode::parse("anonymous_code", code))
                    .transpose()?,
            },
        })
    }
}

/// Logs a user in: a platform's login code, an email and password, anonymous, or dev.
#[utoipa::path(post, path = "/v1/apps/{app}/auth/sessions", tag = "auth",
    params(("app" = AppName, Path)), request_body = LoginBody,
    responses((status = 201, body = SessionGrant)))]
async fn create_session(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    TargetApp(app): TargetApp,
    Json(body): Json<LoginBody>,
) -> Result<Response, ApiError> {
    let limits = state.limits();
    if matches!(
        ProviderKind::of(&body.provider),
        Some(ProviderKind::Platform(_))
    ) {
        limits.check_platform_call(&app, ip).await?;
    } else {
        limits.check_client(ip).await?;
    }
    // Password guesses are counted per account as well as per address.
    let account = (body.provider == "password")
        .then(|| body.email.as_deref().map(policy::account_of))
        .flatten();
    let request = body.into_login()?;
    let took = match &account {
        Some(account) => limits.take_account(&app, account, ip).await?,
        None => false,
    };
    let login = match state.apps().get(&app).await {
        Ok(_) => state
            .auth()
            .login(&app, request)
            .await
            .map_err(ApiError::from),
        Err(e) => Err(ApiError::from(e)),
    };
    if let Some(account) = &account {
        let outcome = match &login {
            Ok(_) => AccountOutcome::LoggedIn,
            Err(e) if e.code == Code::InvalidLogin => AccountOutcome::WrongPassword,
            Err(_) => AccountOutcome::Other,
        };
        limits
            .settle_account(&app, account, ip, took, outcome)
            .await;
    }
    Ok((StatusCode::CREATED, axum::Json(login?)).into_response())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SignUp {
    email: String,
    password: String,
}

/// Creates a password account and logs it in.
#[utoipa::path(post, path = "/v1/apps/{app}/auth/users", tag = "auth",
    params(("app" = AppName, Path)), request_body = SignUp,
    responses((status = 201, body = SessionGrant)))]
async fn sign_up(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    TargetApp(app): TargetApp,
    Json(body): Json<SignUp>,
) -> Result<Response, ApiError> {
    state.limits().check_client(ip).await?;
    state.apps().get(&app).await?;
    let grant = state
        .auth()
        .sign_up(&app, &body.email, &body.password)
        .await?;
    // Whoever made the account is its owner: their address is known to it from now on.
    state
        .limits()
        .logged_in(&app, &policy::account_of(&body.email), ip);
    Ok((StatusCode::CREATED, axum::Json(grant)).into_response())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RefreshBody {
    session_id: String,
}

/// Trades a session id for a new access token and a new session id.
#[utoipa::path(post, path = "/v1/apps/{app}/auth/refresh", tag = "auth",
    params(("app" = AppName, Path)), request_body = RefreshBody,
    responses((status = 200, body = SessionGrant)))]
async fn refresh(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    TargetApp(app): TargetApp,
    Json(body): Json<RefreshBody>,
) -> Result<Response, ApiError> {
    state.limits().check_client(ip).await?;
    state.apps().get(&app).await?;
    Ok(axum::Json(state.auth().refresh(&app, &body.session_id).await?).into_response())
}

/// Ends the caller's session.
#[utoipa::path(delete, path = "/v1/apps/{app}/auth/sessions/current", tag = "auth",
    params(("app" = AppName, Path)), responses((status = 204, description = "logged out")))]
async fn log_out(
    State(state): State<AppState>,
    TargetApp(app): TargetApp,
    CallerOf(caller): CallerOf,
) -> Result<StatusCode, ApiError> {
    let principal = user(caller)?;
    state.auth().revoke(&app, &principal.session_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The caller's account.
#[utoipa::path(get, path = "/v1/apps/{app}/auth/user", tag = "auth",
    params(("app" = AppName, Path)), responses((status = 200, body = User)))]
async fn show_user(
    State(state): State<AppState>,
    TargetApp(_): TargetApp,
    CallerOf(caller): CallerOf,
) -> Result<axum::Json<User>, ApiError> {
    let principal = user(caller)?;
    Ok(axum::Json(state.auth().user(&principal).await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ProfileChange {
    profile: Map<String, Value>,
}

/// Merges changes into the caller's profile (`null` removes a field).
#[utoipa::path(patch, path = "/v1/apps/{app}/auth/user", tag = "auth",
    params(("app" = AppName, Path)), request_body = ProfileChange,
    responses((status = 200, body = User)))]
async fn update_user(
    State(state): State<AppState>,
    TargetApp(_): TargetApp,
    CallerOf(caller): CallerOf,
    Json(body): Json<ProfileChange>,
) -> Result<axum::Json<User>, ApiError> {
    let principal = user(caller)?;
    Ok(axum::Json(
        state
            .auth()
            .update_profile(&principal, body.profile)
            .await?,
    ))
}

#[derive(Deserialize, ToSchema)]
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
#[utoipa::path(post, path = "/v1/apps/{app}/auth/user/phone", tag = "auth",
    params(("app" = AppName, Path)), request_body = PhoneCode,
    responses((status = 200, body = User)))]
async fn bind_phone(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    TargetApp(app): TargetApp,
    CallerOf(caller): CallerOf,
    Json(body): Json<PhoneCode>,
) -> Result<axum::Json<User>, ApiError> {
    let principal = user(caller)?;
    let code = LoginCode::parse("code", body.code).map_err(|_| AuthError::InvalidPhoneCode)?;
    // Each bind calls WeChat, as a platform login does: counted as one.
    state.limits().check_platform_call(&app, ip).await?;
    Ok(axum::Json(
        state
            .auth()
            .bind_phone(&principal, &body.provider, &code)
            .await?,
    ))
}

/// Deletes the caller's account, its identities and sessions, and their files.
#[utoipa::path(delete, path = "/v1/apps/{app}/auth/user", tag = "auth",
    params(("app" = AppName, Path)), responses((status = 204, description = "deleted")))]
async fn delete_user(
    State(state): State<AppState>,
    TargetApp(_): TargetApp,
    CallerOf(caller): CallerOf,
) -> Result<StatusCode, ApiError> {
    let principal = user(caller)?;
    state.auth().delete_user(&principal).await?;
    // Their files' rows went with the account (a cascade), their blobs into the trash.
    if let Err(e) = state.files().sweep(&principal.app).await {
        tracing::warn!(app = %principal.app, error = %e, "could not sweep the files' trash");
    }
    Ok(StatusCode::NO_CONTENT)
}
