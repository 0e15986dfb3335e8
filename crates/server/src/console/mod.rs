//! The web console, on an address of its own: its page and files (from `cloudlet-console`),
//! its API under `/console/api/` (setup, login, people, roles, the audit log), and the gate
//! through which a logged-in person calls the admin API with their session cookie.
//!
//! The console never shares an origin with what apps serve (sites, files, HTTP functions), so
//! no app's page can drive a person's session. On its address:
//! - a session is an `HttpOnly`, `SameSite=Strict` cookie holding a random token (only its hash
//!   is stored, shared by every node);
//! - every write carries the session's CSRF token in `x-cloudlet-csrf`, and a browser's
//!   `Origin` and `Sec-Fetch-Site` must say the console's own origin;
//! - bearer tokens are ignored: the admin token only makes the first owner;
//! - each route needs the role that [`policy`] says, checked before the body is read, and every
//!   write is written to the audit log with who made it and how it ended;
//! - every answer forbids framing and sniffing, and the page runs under a strict CSP.

mod live;
mod policy;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::header::{
    ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_SECURITY_POLICY, CONTENT_TYPE,
    COOKIE, ETAG, HOST, IF_NONE_MATCH, LOCATION, ORIGIN, REFERRER_POLICY, SET_COOKIE, VARY,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use cloudlet_core::apps::AppName;
use cloudlet_core::console::{AppRole, NewPerson, NewSession, Person, SESSION_TTL, SignedIn};
use futures_util::FutureExt;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::{ApiError, Code};
use crate::extract::{Json, Path, Query};
use crate::limits::{AccountOutcome, PeerIp};
use crate::state::AppState;

pub use policy::Need;

/// The session cookie's name.
/// The session cookie's name. With `secure_cookie` it takes the `__Host-` prefix, which a
/// browser accepts only from this very host, over HTTPS, without `Domain` and with `Path=/`:
/// a page of a sibling host name (`evil.example.com` beside `console.example.com`) can then
/// neither plant a session of its own under it nor shadow it with a second cookie of the name.
const COOKIE_NAME: &str = "cloudlet_console";
const SECURE_COOKIE_NAME: &str = "__Host-cloudlet_console";

fn cookie_name(state: &AppState) -> &'static str {
    if state.console_secure_cookie() {
        SECURE_COOKIE_NAME
    } else {
        COOKIE_NAME
    }
}
/// The header that carries a session's CSRF token.
const CSRF_HEADER: &str = "x-cloudlet-csrf";
/// The login throttle's bucket name: not an app name (those never hold `~`).
const THROTTLE: &str = "~console";
/// The page's policy: its own script and stylesheet, and calls to its own origin; nothing else.
const PAGE_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self' data: blob:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
    form-action 'self'; object-src 'none'";
/// Everything else on the console's address is data, never a document.
const DATA_CSP: &str = "default-src 'none'; frame-ancestors 'none'; sandbox";
/// Bodies of the console's own API: small JSON.
const MAX_BODY: usize = 16 * 1024;

/// A person calling the admin API through the console's gate. The gate has checked their role
/// for the route and its app; the handlers take them as an administrator of that app.
#[derive(Clone)]
pub struct ConsoleCaller {
    /// Whether the person owns the instance (and so may do what the admin token may beyond
    /// one app's administration: see [`crate::extract::Operator`]).
    pub instance_owner: bool,
}

/// The console's routes on top of the API's `routes`, each API route behind the gate.
///
/// The console's own routes are not the API: they are served on the console's address only,
/// for its page, and described in `docs/console.md` rather than in the OpenAPI contract.
#[allow(clippy::disallowed_methods)]
pub fn routes(
    api: Router<AppState>,
    state: &AppState,
    body_rate_window: std::time::Duration,
) -> Router<AppState> {
    let own = Router::new()
        .route("/console/api/state", get(show_state))
        .route("/console/api/setup", post(set_up))
        .route("/console/api/login", post(log_in))
        .route("/console/api/logout", post(log_out))
        .route("/console/api/apps", get(list_apps))
        .route("/console/api/people", get(list_people).post(add_person))
        .route(
            "/console/api/people/{id}",
            axum::routing::delete(remove_person),
        )
        .route(
            "/console/api/people/{id}/apps/{app}",
            put(give_role).delete(take_role),
        )
        .route("/console/api/audit", get(audit_log))
        .route("/console/api/apps/{app}/live", get(live::live))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        // A body must arrive at the API's least rate, or a login sent a byte at a time would
        // hold its connection for days.
        .route_layer(axum::middleware::from_fn(move |request, next| {
            crate::bounds::limit_body(MAX_BODY, body_rate_window, request, next)
        }));
    api.route_layer(axum::middleware::from_fn_with_state(state.clone(), gate))
        .merge(own)
        .route("/", get(to_console))
        .route("/console", get(to_console))
        .route("/console/", get(page))
        .route("/console/assets/{name}", get(asset))
}

/// Refuses a request for a host name the console does not serve, before anything else: a
/// name an attacker controls that resolves to the console (DNS rebinding) would otherwise make
/// a browser treat a page of that name as the console's own origin.
pub async fn check_host(hosts: std::sync::Arc<[String]>, request: Request, next: Next) -> Response {
    let host = request
        .headers()
        .get(HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if host_allowed(host, &hosts) {
        next.run(request).await
    } else {
        ApiError::new(
            Code::UnknownHost,
            "the console does not serve this host name: add it to [console] hosts",
        )
        .into_response()
    }
}

/// An IP address (any port), `localhost`, or one of `hosts`.
fn host_allowed(host: &str, hosts: &[String]) -> bool {
    let name = match host.strip_prefix('[') {
        // [::1]:8701
        Some(rest) => {
            return rest
                .split_once(']')
                .is_some_and(|(ip, _)| ip.parse::<std::net::Ipv6Addr>().is_ok());
        }
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.parse::<std::net::Ipv4Addr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || hosts
            .iter()
            .any(|allowed| allowed.eq_ignore_ascii_case(name))
}

/// Headers every answer of the console's address carries.
pub async fn headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers
        .entry(CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static(DATA_CSP));
    headers
        .entry(CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    response
}

// ---- the gate -------------------------------------------------------------------------------

/// Lets a person's request through to an API route if their role allows it, then notes a write
/// in the audit log.
async fn gate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    let template = parts
        .extensions
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_default();
    let method = parts.method.clone();
    let need = policy::need(&method, &template);
    if need == Need::Closed {
        return ApiError::new(
            Code::RouteNotFound,
            "this route is not served on the console's address",
        )
        .into_response();
    }
    // Sessions only: a bearer token on this address is not looked at.
    parts.headers.remove(axum::http::header::AUTHORIZATION);
    let who = match signed_in(&state, &parts).await {
        Ok(who) => who,
        Err(refused) => return refused.into_response(),
    };
    let write = !is_read(&parts.method);
    // A route that changes nothing is no change for the audit log, allowed or refused.
    let noted_change = write && !policy::changes_nothing(&method, &template);
    if write && let Err(refused) = check_write(&parts.headers, &who, state.console_secure_cookie())
    {
        return refused.into_response();
    }
    // Reads too come from the console's own pages alone: another site's `<img src>` must not
    // make a person's browser search an app's users (a read the audit log notes in their
    // name) or render thumbnails. The cookie is `SameSite=Strict`, but an app's site on a
    // sibling host name is the same site.
    if !write && let Err(refused) = same_origin(&parts.headers, state.console_secure_cookie()) {
        return refused.into_response();
    }
    // A read the audit log notes in the person's name must show where it comes from: a browser
    // that sends no `Sec-Fetch-Site` (and no `Origin` on a GET) could be carrying another
    // page's `<img>`. The session's CSRF token does (the console's page sends it on every
    // request), for browsers that send no `Sec-Fetch-Site` to a plain-HTTP address.
    let audited_read = !write && template.starts_with("/v1/admin/apps/{app}/users");
    let from_the_page = parts
        .headers
        .get("sec-fetch-site")
        .is_some_and(|site| site == "same-origin")
        || parts
            .headers
            .get(CSRF_HEADER)
            .and_then(|token| token.to_str().ok())
            .is_some_and(|token| who.csrf_matches(token));
    if audited_read && !from_the_page {
        return ApiError::new(
            Code::CsrfFailed,
            "reading an app's users on the console's address needs Sec-Fetch-Site: same-origin or the session's x-cloudlet-csrf token",
        )
        .into_response();
    }
    let app = match crate::extract::app_param(&mut parts, &state).await {
        Ok(app) => app,
        Err(refused) => return refused.into_response(),
    };
    let allowed = match (need, &app) {
        (Need::InstanceOwner, _) => who.is_instance_owner(),
        (Need::App(role), Some(app)) => who.may(app, role),
        _ => false,
    };
    let target = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path(), |p| p.as_str());
    let action = format!("{} {target}", parts.method);
    if !allowed {
        // A refused write is noted where the person has a say: on an app they hold a role on,
        // or the instance's routes. Elsewhere it would only fill other apps' logs.
        let noted = match &app {
            Some(app) => who.role_on(app).is_some(),
            None => true,
        };
        if noted_change && noted {
            state
                .console()
                .audit(&who.person.email, app.as_ref(), &action, 403)
                .await;
        }
        return ApiError::new(Code::Forbidden, "your console role does not allow this")
            .into_response();
    }
    parts.extensions.insert(ConsoleCaller {
        instance_owner: who.is_instance_owner(),
    });
    let request = Request::from_parts(parts, body);
    if write && !noted_change {
        // No change, but work all the same: as many at once as writes.
        let Some(_place) = state.console_write(&who.person.id) else {
            return ApiError::new(
                Code::TooManyRequests,
                "too many console writes at once; try again",
            )
            .retry_after(1)
            .into_response();
        };
        return next.run(request).await;
    }
    if !write {
        let response = next.run(request).await;
        // Who looked at whom: reading the app's users (a search, a user's page, their
        // sessions) is noted like a change.
        if audited_read {
            let status = response.status().as_u16();
            state
                .console()
                .audit(&who.person.email, app.as_ref(), &action, status)
                .await;
        }
        return response;
    }
    // A write and its entry in the log run to the end together, whether or not the person
    // waits for the answer: closing the connection must not leave a change out of the log.
    // Those places are few, so that leaving connections cannot pile up writes.
    let Some(place) = state.console_write(&who.person.id) else {
        return ApiError::new(
            Code::TooManyRequests,
            "too many console writes at once; try again",
        )
        .retry_after(1)
        .into_response();
    };
    let console = state.console().clone();
    let done = state.tasks().spawn(crate::request_id::carried(async move {
        let _place = place;
        // A write that panics is still noted, as the 500 it answers.
        let response = std::panic::AssertUnwindSafe(next.run(request))
            .catch_unwind()
            .await
            .unwrap_or_else(|_| ApiError::internal(&"a console write panicked").into_response());
        let status = response.status().as_u16();
        // An app made names itself on the answer: its name came in the body, not the path.
        let made = response.extensions().get::<crate::apps::Made>();
        let app = app.or_else(|| made.map(|made| made.0.clone()));
        console
            .audit(&who.person.email, app.as_ref(), &action, status)
            .await;
        response
    }));
    match done.await {
        Ok(response) => response,
        Err(e) => ApiError::internal(&format!("a console write failed: {e}")).into_response(),
    }
}

fn is_read(method: &Method) -> bool {
    *method == Method::GET || *method == Method::HEAD
}

/// The person whose session cookie the request carries.
async fn signed_in(state: &AppState, parts: &Parts) -> Result<SignedIn, ApiError> {
    let token = session_token(&parts.headers, cookie_name(state)).ok_or_else(login_required)?;
    session_of(state, token).await
}

/// The person whose session `token` is.
async fn session_of(state: &AppState, token: &str) -> Result<SignedIn, ApiError> {
    Ok(state.console().session(token).await?)
}

fn login_required() -> ApiError {
    ApiError::new(
        Code::ConsoleLoginRequired,
        "log in to the console first (no session, or it expired)",
    )
}

/// The session token of the `Cookie` header, if it is one that could be. Two cookies of the
/// name are nobody: a page of another port of the same host can set cookies the browser sends
/// here too, and must not slip its own session under a person's.
fn session_token<'h>(headers: &'h HeaderMap, cookie: &str) -> Option<&'h str> {
    let mut tokens = headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(name, _)| *name == cookie)
        .map(|(_, token)| token);
    let token = tokens.next()?;
    if tokens.next().is_some() {
        return None;
    }
    Some(token).filter(|token| {
        token.starts_with("ccs_")
            && token.len() <= 64
            && token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    })
}

/// A write must come from the console's own page: its origin (when a browser says it), and
/// the session's CSRF token.
fn check_write(headers: &HeaderMap, who: &SignedIn, https: bool) -> Result<(), ApiError> {
    same_origin(headers, https)?;
    let given = headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if who.csrf_matches(given) {
        Ok(())
    } else {
        Err(ApiError::new(
            Code::CsrfFailed,
            "a console write needs its session's x-cloudlet-csrf token",
        ))
    }
}

/// Refuses a request a browser says came from another site: `Sec-Fetch-Site` other than
/// `same-origin` (or `none`, typed by the person), or an `Origin` whose host is not this one,
/// or whose scheme is not the console's: `https` when its cookie is `Secure` (so that a page
/// served over plain HTTP on the same host and port cannot pass for it), else `http` or
/// `https` (behind a proxy that ends TLS).
fn same_origin(headers: &HeaderMap, https: bool) -> Result<(), ApiError> {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let cross = |why: &str| {
        Err(ApiError::new(
            Code::CsrfFailed,
            format!("a console request from another origin ({why})"),
        ))
    };
    if let Some(site) = text("sec-fetch-site")
        && site != "same-origin"
        && site != "none"
    {
        return cross("sec-fetch-site");
    }
    if let Some(origin) = text(ORIGIN.as_str()) {
        let Some((scheme, host)) = origin.split_once("://") else {
            return cross("origin");
        };
        let scheme_ok = match scheme {
            "https" => true,
            "http" => !https,
            _ => false,
        };
        if !scheme_ok || Some(host) != text(HOST.as_str()) {
            return cross("origin");
        }
    }
    Ok(())
}

// ---- the page and its files ------------------------------------------------------------------

async fn to_console() -> Response {
    (
        StatusCode::FOUND,
        [(LOCATION, HeaderValue::from_static("/console/"))],
    )
        .into_response()
}

async fn page(headers: HeaderMap) -> Response {
    let index = cloudlet_console::index();
    // A return visit asks again (`no-cache`) and, the console unchanged, gets no body.
    let mut response = if unchanged(index, &headers) {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        let headers = response.headers_mut();
        headers.insert(ETAG, HeaderValue::from_static(index.etag));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        headers.insert(VARY, HeaderValue::from_static("accept-encoding"));
        response
    } else {
        serve(index, &headers, "no-cache")
    };
    response
        .headers_mut()
        .insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(PAGE_CSP));
    response
}

async fn asset(Path(name): Path<String>, headers: HeaderMap) -> Response {
    match cloudlet_console::asset(&name) {
        Some(asset) => serve(asset, &headers, "public, max-age=31536000, immutable"),
        None => ApiError::new(Code::RouteNotFound, "no such console file").into_response(),
    }
}

/// An embedded file, gzipped when the client takes gzip.
fn serve(
    asset: &'static cloudlet_console::Asset,
    headers: &HeaderMap,
    cache: &'static str,
) -> Response {
    let gzip = headers
        .get_all(ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';');
            let name = parts.next().unwrap_or_default().trim();
            let refused = parts.any(|p| matches!(p.trim(), "q=0" | "q=0.0" | "q=0.00" | "q=0.000"));
            name.eq_ignore_ascii_case("gzip") && !refused
        });
    let mut response = if gzip {
        let mut response = Response::new(Body::from(asset.gzip));
        response
            .headers_mut()
            .insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        response
    } else {
        Response::new(Body::from(asset.raw))
    };
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(VARY, HeaderValue::from_static("accept-encoding"));
    headers.insert(ETAG, HeaderValue::from_static(asset.etag));
    response
}

/// Whether the client holds this very file already (`If-None-Match` names its tag, or `*`).
fn unchanged(asset: &cloudlet_console::Asset, headers: &HeaderMap) -> bool {
    headers
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == asset.etag || tag == "*")
}

// ---- the console's own API -------------------------------------------------------------------

/// The logged-in person of a console API route; for a write, also its origin and CSRF token.
struct Session(SignedIn);

impl axum::extract::FromRequestParts<AppState> for Session {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let who = signed_in(state, parts).await?;
        if !is_read(&parts.method) {
            check_write(&parts.headers, &who, state.console_secure_cookie())?;
        }
        Ok(Session(who))
    }
}

#[derive(Serialize)]
struct StateView {
    setup_needed: bool,
    person: Option<Person>,
    csrf: Option<String>,
}

async fn show_state(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let console = state.console();
    let who = match session_token(&headers, cookie_name(&state)) {
        Some(token) => console.session(token).await.ok(),
        None => None,
    };
    Ok(axum::Json(StateView {
        setup_needed: console.setup_needed().await?,
        csrf: who.as_ref().map(|w| w.csrf().to_owned()),
        person: who.map(|w| w.person),
    })
    .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetupBody {
    admin_token: String,
    email: String,
    name: String,
    password: String,
}

async fn set_up(
    State(state): State<AppState>,
    PeerIp(ip): PeerIp,
    headers: HeaderMap,
    Json(body): Json<SetupBody>,
) -> Result<Response, ApiError> {
    same_origin(&headers, state.console_secure_cookie())?;
    // Guesses at the admin token are logins too.
    state.limits().check_client(ip).await?;
    let email = cloudlet_core::auth::policy::account_of(&body.email);
    let session = state
        .console()
        .set_up(
            &body.admin_token,
            NewPerson {
                email: body.email,
                name: body.name,
                password: body.password,
                instance_role: "owner".into(),
            },
        )
        .await?;
    // The owner's address is known to their account, as after a login.
    state.limits().logged_in(THROTTLE, &email, ip);
    Ok(opened(&state, session))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    email: String,
    password: String,
}

async fn log_in(
    State(state): State<AppState>,
    PeerIp(ip): PeerIp,
    headers: HeaderMap,
    Json(body): Json<LoginBody>,
) -> Result<Response, ApiError> {
    same_origin(&headers, state.console_secure_cookie())?;
    let limits = state.limits();
    limits.check_client(ip).await?;
    let account = cloudlet_core::auth::policy::account_of(&body.email);
    let took = limits.take_account(THROTTLE, &account, ip).await?;
    let result = state.console().log_in(&body.email, &body.password).await;
    let outcome = match &result {
        Ok(_) => AccountOutcome::LoggedIn,
        Err(cloudlet_core::console::ConsoleError::InvalidLogin) => AccountOutcome::WrongPassword,
        Err(_) => AccountOutcome::Other,
    };
    limits
        .settle_account(THROTTLE, &account, ip, took, outcome)
        .await;
    let session = result?;
    // Expired sessions and old audit entries go when somebody logs in: no loop needed for
    // them (the log grows only while people use the console).
    if let Err(e) = state.console().sweep(state.console_keep_audit()).await {
        tracing::warn!(error = %e, "could not forget expired console sessions and old audit entries");
    }
    Ok(opened(&state, session))
}

/// The answer that opens a session: its cookie, and who it is with their CSRF token.
fn opened(state: &AppState, session: NewSession) -> Response {
    let secure = if state.console_secure_cookie() {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        cookie_name(state),
        session.token,
        SESSION_TTL.as_secs()
    );
    let mut response = axum::Json(json!({
        "person": session.signed_in.person,
        "csrf": session.signed_in.csrf(),
    }))
    .into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(SET_COOKIE, value);
    }
    response
}

async fn log_out(
    State(state): State<AppState>,
    Session(who): Session,
) -> Result<Response, ApiError> {
    state.console().log_out(&who).await?;
    let secure = if state.console_secure_cookie() {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}",
        cookie_name(&state)
    );
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(SET_COOKIE, value);
    }
    Ok(response)
}

#[derive(Serialize)]
struct AppView {
    name: String,
    role: AppRole,
    created_at: cloudlet_core::clock::Timestamp,
}

async fn list_apps(
    State(state): State<AppState>,
    Session(who): Session,
) -> Result<Response, ApiError> {
    let items: Vec<AppView> = state
        .console()
        .apps_of(&who)
        .await?
        .into_iter()
        .map(|(row, role)| AppView {
            created_at: cloudlet_core::clock::Timestamp::from_unix_ms(row.created_at_ms),
            name: row.name,
            role,
        })
        .collect();
    Ok(axum::Json(json!({ "items": items })).into_response())
}

async fn list_people(
    State(state): State<AppState>,
    Session(who): Session,
) -> Result<Response, ApiError> {
    let items = state.console().people(&who).await?;
    Ok(axum::Json(json!({ "items": items })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PersonBody {
    email: String,
    name: String,
    password: String,
    instance_role: String,
}

async fn add_person(
    State(state): State<AppState>,
    Session(who): Session,
    Json(body): Json<PersonBody>,
) -> Result<Response, ApiError> {
    let person = state
        .console()
        .add_person(
            &who,
            NewPerson {
                email: body.email,
                name: body.name,
                password: body.password,
                instance_role: body.instance_role,
            },
        )
        .await?;
    Ok((StatusCode::CREATED, axum::Json(person)).into_response())
}

/// A person's id as a path gives it: checked before it reaches the store.
fn person_id(id: &str) -> Result<&str, ApiError> {
    let well_formed = id.starts_with("cp_")
        && id.len() <= 40
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if well_formed {
        Ok(id)
    } else {
        Err(ApiError::new(Code::PersonNotFound, "no such person"))
    }
}

async fn remove_person(
    State(state): State<AppState>,
    Session(who): Session,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.console().remove_person(&who, person_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct RolePath {
    id: String,
    app: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleBody {
    role: String,
}

fn role_target(path: &RolePath) -> Result<(&str, AppName), ApiError> {
    let app = AppName::parse(&path.app)
        .map_err(|_| ApiError::new(Code::AppNotFound, format!("no app named {:?}", path.app)))?;
    Ok((person_id(&path.id)?, app))
}

async fn give_role(
    State(state): State<AppState>,
    Session(who): Session,
    Path(path): Path<RolePath>,
    Json(body): Json<RoleBody>,
) -> Result<StatusCode, ApiError> {
    let (person, app) = role_target(&path)?;
    let role = AppRole::parse(&body.role)?;
    state
        .console()
        .set_role(&who, person, &app, Some(role))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn take_role(
    State(state): State<AppState>,
    Session(who): Session,
    Path(path): Path<RolePath>,
) -> Result<StatusCode, ApiError> {
    let (person, app) = role_target(&path)?;
    state.console().set_role(&who, person, &app, None).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditParams {
    app: Option<String>,
    before: Option<i64>,
    limit: Option<usize>,
}

async fn audit_log(
    State(state): State<AppState>,
    Session(who): Session,
    Query(params): Query<AuditParams>,
) -> Result<Response, ApiError> {
    let app = params
        .app
        .as_deref()
        .map(|name| {
            AppName::parse(name)
                .map_err(|_| ApiError::new(Code::AppNotFound, format!("no app named {name:?}")))
        })
        .transpose()?;
    let limit = params.limit.unwrap_or(50);
    let (rows, next_before) = state
        .console()
        .audit_log(&who, app.as_ref(), params.before, limit)
        .await?;
    let items: Vec<_> = rows
        .into_iter()
        .map(|r| {
            json!({
                "seq": r.seq,
                "at": cloudlet_core::clock::Timestamp::from_unix_ms(r.at_ms),
                "actor": r.actor,
                "app": r.app,
                "action": r.action,
                "status": r.status,
            })
        })
        .collect();
    Ok(axum::Json(json!({ "items": items, "next_before": next_before })).into_response())
}
