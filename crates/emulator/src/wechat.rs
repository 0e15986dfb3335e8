//! WeChat's and QQ's `jscode2session`, and WeChat's `stable_token` and phone number, answered as
//! the real servers answer (`shared/platforms.md` §1.1, §1.2, §1.5, §5.2): HTTP 200 with an
//! `errcode` envelope, and `jscode2session` sends its JSON as `text/plain`, as WeChat does.
//! Subscribe messages (§1.6) have their own module, `subscribe`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::state::{
    CodeProblem, Emulator, Platform, Token, new_session_key, new_token, openid, unionid,
};

pub(crate) fn refusal(errcode: i64, errmsg: &str) -> Value {
    json!({ "errcode": errcode, "errmsg": format!("{errmsg} rid: emulator") })
}

/// WeChat's JSON-as-text quirk.
fn text_json(value: Value) -> Response {
    ([(CONTENT_TYPE, "text/plain")], value.to_string()).into_response()
}

/// WeChat's login, access token and phone-number endpoints, and QQ's login, which is WeChat's
/// protocol under another host.
#[allow(clippy::disallowed_methods)] // The platform's routes, not Cloudlet's API: no contract.
pub(crate) fn routes() -> Router<Arc<Emulator>> {
    Router::new()
        .route("/wechat/sns/jscode2session", get(wechat_code_to_session))
        .route("/wechat/cgi-bin/stable_token", post(stable_token))
        .route(
            "/wechat/wxa/business/getuserphonenumber",
            post(phone_number),
        )
        .route("/qq/sns/jscode2session", get(qq_code_to_session))
}

pub(crate) async fn wechat_code_to_session(
    State(emulator): State<Arc<Emulator>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    text_json(code_to_session(&emulator, Platform::Wechat, &query))
}

pub(crate) async fn qq_code_to_session(
    State(emulator): State<Arc<Emulator>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    text_json(code_to_session(&emulator, Platform::Qq, &query))
}

fn code_to_session(
    emulator: &Emulator,
    platform: Platform,
    query: &HashMap<String, String>,
) -> Value {
    let param = |name: &str| {
        query
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    };
    let (Some(appid), Some(secret), Some(code)) =
        (param("appid"), param("secret"), param("js_code"))
    else {
        return match (param("appid"), param("secret")) {
            (None, _) => refusal(41002, "appid missing"),
            (_, None) => refusal(41004, "appsecret missing"),
            _ => refusal(41008, "missing code"),
        };
    };
    if param("grant_type") != Some("authorization_code") {
        return refusal(40002, "invalid grant_type");
    }
    let open_platform = {
        let state = emulator.state();
        let Some(app) = state.apps.get(&(platform, appid.to_owned())) else {
            return refusal(40013, "invalid appid");
        };
        if app.secret != secret {
            return refusal(40125, "invalid appsecret");
        }
        app.open_platform.clone()
    };
    let user = match emulator.take_code(platform, appid, code, false) {
        Ok(user) => user,
        Err(CodeProblem::Invalid) => return refusal(40029, "invalid code"),
        Err(CodeProblem::Used) => return refusal(40163, "code been used"),
    };
    let mut answer = json!({
        "openid": openid(platform, appid, &user),
        "session_key": new_session_key(),
    });
    if let Some(open_platform) = open_platform {
        answer["unionid"] = json!(unionid(platform, &open_platform, &user));
    }
    answer
}

/// The WeChat app whose `access_token` is in the query, as the business APIs check it: 41001
/// when it is missing, 42001 when it was the app's token but has expired, 40001 when the
/// emulator never issued it or has replaced it since (a forced refresh invalidates the old one).
pub(crate) fn token_app(
    emulator: &Emulator,
    query: &HashMap<String, String>,
) -> Result<String, Value> {
    let Some(token) = query.get("access_token").filter(|t| !t.is_empty()) else {
        return Err(refusal(41001, "access_token missing"));
    };
    let state = emulator.state();
    let Some(((_, appid), known)) = state
        .tokens
        .iter()
        .find(|((platform, _), t)| *platform == Platform::Wechat && t.value == *token)
    else {
        return Err(refusal(
            40001,
            "invalid credential, access_token is invalid or not latest",
        ));
    };
    if known.issued.elapsed() >= emulator.options.token_ttl {
        return Err(refusal(42001, "access_token expired"));
    }
    Ok(appid.clone())
}

#[derive(Deserialize)]
struct PhoneRequest {
    code: Option<String>,
}

/// `POST /wxa/business/getuserphonenumber?access_token=…` with `{"code"}` in the JSON body.
pub(crate) async fn phone_number(
    State(emulator): State<Arc<Emulator>>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    axum::Json(phone_answer(&emulator, &query, &body)).into_response()
}

fn phone_answer(emulator: &Emulator, query: &HashMap<String, String>, body: &[u8]) -> Value {
    let appid = match token_app(emulator, query) {
        Ok(appid) => appid,
        Err(refused) => return refused,
    };
    let Ok(request) = serde_json::from_slice::<PhoneRequest>(body) else {
        return refusal(47001, "data format error");
    };
    let Some(code) = request.code.filter(|c| !c.is_empty()) else {
        return refusal(40029, "invalid code");
    };
    let phone = match emulator.take_phone_code(&appid, &code) {
        Ok((_, phone)) => phone,
        Err(CodeProblem::Invalid | CodeProblem::Used) => return refusal(40029, "invalid code"),
    };
    let (country_code, pure) = match phone.strip_prefix('+').and_then(|p| p.split_once(' ')) {
        Some((country, number)) => (country.to_owned(), number.to_owned()),
        None => ("86".to_owned(), phone.clone()),
    };
    json!({
        "errcode": 0,
        "errmsg": "ok",
        "phone_info": {
            "phoneNumber": format!("+{country_code}{pure}"),
            "purePhoneNumber": pure,
            "countryCode": country_code.parse::<u32>().map(Value::from).unwrap_or(Value::String(country_code)),
            "watermark": { "timestamp": 1_700_000_000, "appid": appid },
        }
    })
}

#[derive(Deserialize)]
struct StableTokenRequest {
    grant_type: Option<String>,
    appid: Option<String>,
    secret: Option<String>,
    #[serde(default)]
    force_refresh: bool,
}

/// `POST /cgi-bin/stable_token`: the same token while it is valid, a new one when forced.
pub(crate) async fn stable_token(State(emulator): State<Arc<Emulator>>, body: Bytes) -> Response {
    let Ok(request) = serde_json::from_slice::<StableTokenRequest>(&body) else {
        return axum::Json(refusal(47001, "data format error")).into_response();
    };
    axum::Json(issue_token(&emulator, request)).into_response()
}

fn issue_token(emulator: &Emulator, request: StableTokenRequest) -> Value {
    emulator.state().token_requests += 1;
    if request.grant_type.as_deref() != Some("client_credential") {
        return refusal(40002, "invalid grant_type");
    }
    let (Some(appid), Some(secret)) = (request.appid, request.secret) else {
        return refusal(41002, "appid missing");
    };
    let mut state = emulator.state();
    let key = (Platform::Wechat, appid);
    match state.apps.get(&key) {
        None => return refusal(40013, "invalid appid"),
        Some(app) if app.secret != secret => return refusal(40125, "invalid appsecret"),
        Some(_) => {}
    }
    let ttl = emulator.options.token_ttl;
    let reuse = !request.force_refresh
        && state
            .tokens
            .get(&key)
            .is_some_and(|token| token.issued.elapsed() < ttl);
    if !reuse {
        state.tokens.insert(
            key.clone(),
            Token {
                value: new_token(),
                issued: Instant::now(),
            },
        );
    }
    match state.tokens.get(&key) {
        Some(token) => json!({
            "access_token": token.value,
            "expires_in": ttl.saturating_sub(token.issued.elapsed()).as_secs(),
        }),
        None => refusal(-1, "system error"),
    }
}
