//! Douyin's v2 `jscode2session` (`shared/platforms.md` §5.1): a JSON POST answered with an
//! `err_no` envelope and the ids under `data`.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::state::{
    CodeProblem, Emulator, Platform, anonymous_openid, new_session_key, new_token, openid, unionid,
};

#[derive(Deserialize)]
struct SessionRequest {
    appid: Option<String>,
    secret: Option<String>,
    code: Option<String>,
    anonymous_code: Option<String>,
}

fn refusal(err_no: i64, err_tips: &str) -> Value {
    json!({ "err_no": err_no, "err_tips": err_tips, "log_id": new_token()[..20] })
}

/// Douyin's login (code2Session v2).
#[allow(clippy::disallowed_methods)] // The platform's routes, not Cloudlet's API: no contract.
pub(crate) fn routes() -> Router<Arc<Emulator>> {
    Router::new().route("/douyin/api/apps/v2/jscode2session", post(code_to_session))
}

pub(crate) async fn code_to_session(
    State(emulator): State<Arc<Emulator>>,
    body: Bytes,
) -> Json<Value> {
    let Ok(request) = serde_json::from_slice::<SessionRequest>(&body) else {
        return Json(refusal(40014, "bad params"));
    };
    Json(answer(&emulator, request))
}

fn answer(emulator: &Emulator, request: SessionRequest) -> Value {
    let non_empty = |v: Option<String>| v.filter(|v| !v.is_empty());
    let (Some(appid), Some(secret)) = (non_empty(request.appid), non_empty(request.secret)) else {
        return refusal(40014, "bad params");
    };
    let (code, anonymous_code) = (non_empty(request.code), non_empty(request.anonymous_code));
    if code.is_none() && anonymous_code.is_none() {
        return refusal(40014, "bad params");
    }
    let open_platform = {
        let state = emulator.state();
        let Some(app) = state.apps.get(&(Platform::Douyin, appid.clone())) else {
            return refusal(40015, "bad appid");
        };
        if app.secret != secret {
            return refusal(40017, "bad secret");
        }
        app.open_platform.clone()
    };
    // Both codes are checked before either is used up: a refused request uses nothing.
    if let Some(code) = &code
        && emulator
            .check_code(Platform::Douyin, &appid, code, false)
            .is_err()
    {
        return refusal(40018, "bad code");
    }
    if let Some(code) = &anonymous_code
        && emulator
            .check_code(Platform::Douyin, &appid, code, true)
            .is_err()
    {
        return refusal(40019, "bad anonymous code");
    }
    let mut data = json!({});
    if let Some(code) = code {
        let user = match emulator.take_code(Platform::Douyin, &appid, &code, false) {
            Ok(user) => user,
            Err(CodeProblem::Invalid | CodeProblem::Used) => return refusal(40018, "bad code"),
        };
        data["openid"] = json!(openid(Platform::Douyin, &appid, &user));
        data["session_key"] = json!(new_session_key());
        if let Some(open_platform) = &open_platform {
            data["unionid"] = json!(unionid(Platform::Douyin, open_platform, &user));
        }
    }
    if let Some(code) = anonymous_code {
        let user = match emulator.take_code(Platform::Douyin, &appid, &code, true) {
            Ok(user) => user,
            Err(CodeProblem::Invalid | CodeProblem::Used) => {
                return refusal(40019, "bad anonymous code");
            }
        };
        data["anonymous_openid"] = json!(anonymous_openid(&appid, &user));
    }
    json!({ "err_no": 0, "err_tips": "success", "log_id": new_token()[..20], "data": data })
}
