//! The emulator's own API: registering platform apps and issuing login codes for named users.
//! (WeChat's subscribe messages have their own control endpoints, in `subscribe`.)

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::alipay;
use crate::state::{App, Code, Emulator, Platform, new_code, openid};

pub(crate) type Answer = (StatusCode, Json<Value>);

pub(crate) fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Answer {
    (
        status,
        Json(json!({ "error": { "code": code, "message": message.into() } })),
    )
}

pub(crate) fn body<T>(parsed: Result<Json<T>, JsonRejection>) -> Result<T, Answer> {
    parsed
        .map(|Json(value)| value)
        .map_err(|e| error(StatusCode::BAD_REQUEST, "invalid_body", e.body_text()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewApp {
    platform: Platform,
    #[serde(alias = "app_id")]
    appid: String,
    /// WeChat, QQ, Douyin.
    #[serde(default)]
    secret: Option<String>,
    /// Alipay: the app's public key (PEM or base64), which checks its request signatures.
    #[serde(default)]
    app_public_key: Option<String>,
    /// Alipay: answer `open_id` instead of `user_id`.
    #[serde(default)]
    open_id_mode: bool,
    /// Apps registered with the same value share unionids (an Open Platform account).
    #[serde(default)]
    open_platform: Option<String>,
}

/// `POST /emulator/apps`: registers (or replaces) a platform app. An Alipay app is answered
/// with the emulator's Alipay public key, which its replies verify with.
pub(crate) async fn register_app(
    State(emulator): State<Arc<Emulator>>,
    parsed: Result<Json<NewApp>, JsonRejection>,
) -> Answer {
    let new = match body(parsed) {
        Ok(new) => new,
        Err(answer) => return answer,
    };
    if new.appid.is_empty() {
        return error(StatusCode::BAD_REQUEST, "invalid_body", "appid is required");
    }
    let mut answer = json!({
        "platform": new.platform,
        "appid": new.appid,
        "open_platform": new.open_platform,
    });
    let app = if new.platform == Platform::Alipay {
        let Some(key) = new.app_public_key.as_deref().and_then(alipay::public_key) else {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                "app_public_key must be an RSA public key (PEM or base64)",
            );
        };
        match alipay::public_key_pem(&emulator).await {
            Some(pem) => answer["alipay_public_key"] = json!(pem),
            None => {
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "key_error",
                    "could not make a key",
                );
            }
        }
        App {
            secret: String::new(),
            app_public_key: Some(key),
            open_id_mode: new.open_id_mode,
            open_platform: new.open_platform,
        }
    } else {
        let Some(secret) = new.secret.filter(|s| !s.is_empty()) else {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                "secret is required",
            );
        };
        App {
            secret,
            app_public_key: None,
            open_id_mode: false,
            open_platform: new.open_platform,
        }
    };
    emulator.state().apps.insert((new.platform, new.appid), app);
    (StatusCode::CREATED, Json(answer))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewCode {
    platform: Platform,
    #[serde(alias = "app_id")]
    appid: String,
    user: String,
    /// Douyin: an anonymous code (`tt.login` for a user who is not logged in to Douyin).
    #[serde(default)]
    anonymous: bool,
    /// WeChat: a `getPhoneNumber` code that reveals this phone number (e.g. `+86 13800138000`).
    #[serde(default)]
    phone: Option<String>,
}

/// `POST /emulator/codes`: what `wx.login` (`qq.login`, `tt.login`) gives a mini program.
pub(crate) async fn issue_code(
    State(emulator): State<Arc<Emulator>>,
    parsed: Result<Json<NewCode>, JsonRejection>,
) -> Answer {
    let new = match body(parsed) {
        Ok(new) => new,
        Err(answer) => return answer,
    };
    if new.user.is_empty() {
        return error(StatusCode::BAD_REQUEST, "invalid_body", "user is required");
    }
    if new.anonymous && new.platform != Platform::Douyin {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "only Douyin has anonymous codes",
        );
    }
    if let Some(phone) = &new.phone {
        if new.platform != Platform::Wechat {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                "only WeChat has phone codes",
            );
        }
        if phone.trim().is_empty() || phone.len() > 32 {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                "phone must be 1 to 32 characters",
            );
        }
    }
    let mut state = emulator.state();
    if !state.apps.contains_key(&(new.platform, new.appid.clone())) {
        return error(
            StatusCode::NOT_FOUND,
            "app_not_registered",
            format!(
                "register {} app {} first (POST /emulator/apps)",
                new.platform.as_str(),
                new.appid
            ),
        );
    }
    // Forget codes that can no longer be used, so that a long-running emulator stays small.
    if state.codes.len() >= 10_000 {
        let ttl = emulator.options.code_ttl;
        state
            .codes
            .retain(|_, c| !c.used && c.issued.elapsed() <= ttl);
    }
    if new.platform != Platform::Alipay {
        let openid = openid(new.platform, &new.appid, &new.user);
        state
            .users
            .insert((new.platform, new.appid.clone(), openid), new.user.clone());
    }
    let code = new_code();
    state.codes.insert(
        code.clone(),
        Code {
            platform: new.platform,
            appid: new.appid,
            user: new.user,
            anonymous: new.anonymous,
            phone: new.phone,
            issued: Instant::now(),
            used: false,
        },
    );
    (
        StatusCode::CREATED,
        Json(json!({
            "code": code,
            "expires_in": emulator.options.code_ttl.as_secs(),
        })),
    )
}

/// `GET /emulator/stats`: counters that tests and developers can check.
pub(crate) async fn stats(State(emulator): State<Arc<Emulator>>) -> Json<Value> {
    let state = emulator.state();
    Json(json!({
        "apps": state.apps.len(),
        "codes": state.codes.len(),
        "token_requests": state.token_requests,
    }))
}

pub(crate) async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}
