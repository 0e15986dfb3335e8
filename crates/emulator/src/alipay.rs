//! Alipay's gateway (`shared/platforms.md` §2), as the emulator answers it: parameters from the
//! query and the form body together; the request signature (RSA2 over the sorted raw
//! parameters) checked with the app's public key; replies signed with the emulator's own Alipay
//! key over the exact text of the response object, in which `/` is written `\/` as Alipay does,
//! so that a client that re-serializes before verifying fails here as it would there.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, RawQuery, State};
use axum::http::header::{CONTENT_TYPE, HOST};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rsa::pkcs1v15::{Signature, SigningKey, VerifyingKey};
use rsa::pkcs8::{DecodePublicKey, EncodePublicKey, LineEnding};
use rsa::signature::{SignatureEncoding, Signer, Verifier};
use rsa::{RsaPrivateKey, RsaPublicKey};
use serde_json::{Value, json};
use sha2::Sha256;
use time::macros::{format_description, offset};
use time::{OffsetDateTime, PrimitiveDateTime};

use crate::alipay_trade;
use crate::state::{CodeProblem, Emulator, Platform, derived_id, new_token};

/// How far a request's timestamp may be from the emulator's clock.
const MAX_SKEW_SECS: i64 = 15 * 60;

/// An app public key from PEM or bare base64 (SPKI).
pub(crate) fn public_key(text: &str) -> Option<RsaPublicKey> {
    let text = text.trim();
    if text.contains("-----BEGIN") {
        return RsaPublicKey::from_public_key_pem(text).ok();
    }
    let der = STANDARD
        .decode(
            text.chars()
                .filter(|c| !c.is_whitespace())
                .collect::<String>(),
        )
        .ok()?;
    RsaPublicKey::from_public_key_der(&der).ok()
}

/// The emulator's Alipay public key as PEM, making the key pair on first use.
pub(crate) async fn public_key_pem(emulator: &Arc<Emulator>) -> Option<String> {
    if emulator.alipay_key.get().is_none() {
        let key =
            tokio::task::spawn_blocking(|| RsaPrivateKey::new(&mut rand_core::OsRng, 2048).ok())
                .await
                .ok()
                .flatten()?;
        let _ = emulator.alipay_key.set(key);
    }
    emulator
        .alipay_key
        .get()?
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .ok()
}

/// `POST /alipay/gateway.do`.
/// Alipay's signed gateway (`alipay.system.oauth.token`, the trade methods, the bill's URL),
/// the bill's download link, and the trade controls.
#[allow(clippy::disallowed_methods)] // The platform's routes, not Cloudlet's API: no contract.
pub(crate) fn routes() -> Router<Arc<Emulator>> {
    Router::new()
        .route("/alipay/gateway.do", post(gateway))
        .route("/alipay/billdownload", get(alipay_trade::bill::download))
        .route("/emulator/alipay/pay", post(alipay_trade::pay))
        .route("/emulator/alipay/forge", post(alipay_trade::forge))
        .route(
            "/emulator/alipay/notifications",
            get(alipay_trade::notifications),
        )
        .route("/emulator/alipay/clock", post(crate::calendar::clock))
        .route("/emulator/alipay/bill", post(alipay_trade::bill::control))
        .route("/emulator/alipay/faults", post(alipay_trade::faults))
        .layer(Extension(Arc::new(alipay_trade::Trades::default())))
}

pub(crate) async fn gateway(
    State(emulator): State<Arc<Emulator>>,
    Extension(trades): Extension<Arc<alipay_trade::Trades>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut params: BTreeMap<String, String> = BTreeMap::new();
    for source in [query.as_deref().unwrap_or("").as_bytes(), &body[..]] {
        for (key, value) in form_urlencoded::parse(source) {
            params.insert(key.into_owned(), value.into_owned());
        }
    }
    let method = params.get("method").cloned().unwrap_or_default();
    let host = headers.get(HOST).and_then(|h| h.to_str().ok());
    let answer = match check_request(&emulator, &params) {
        Err(refusal) => refusal,
        Ok(()) if method == alipay_trade::bill::METHOD => {
            alipay_trade::bill::download_url(&emulator, &trades, &params, host).await
        }
        Ok(()) => match method.as_str() {
            "alipay.system.oauth.token" => oauth_token(&emulator, &params),
            other => alipay_trade::answer(&trades, other, &params, emulator.calendar.now())
                .unwrap_or_else(|| {
                    Reply::error(
                        "40002",
                        "Invalid Arguments",
                        "isv.invalid-method",
                        "不存在的方法名 / unknown method",
                    )
                }),
        },
    };
    if method == "alipay.trade.refund"
        && let Reply::Ok(object) = &answer
        && object["fund_change"] == "Y"
    {
        if alipay_trade::refund_answer_lost(&trades) {
            return StatusCode::GATEWAY_TIMEOUT.into_response();
        }
        alipay_trade::refund_notification(&emulator, &trades, &params);
    }
    // Business failures (40004) come under the method's own key, as Alipay sends them (the
    // official SDK verifies the signature of that object); the gateway's refusals under
    // `error_response`.
    let root = match &answer {
        Reply::Error(object) if object["code"] != "40004" => "error_response".to_owned(),
        Reply::Ok(_) | Reply::Error(_) => format!("{}_response", method.replace('.', "_")),
    };
    let object = match answer {
        Reply::Ok(object) | Reply::Error(object) => object,
    };
    // Alipay writes `/` as `\/`; the signature covers the text exactly as sent.
    let text = object.to_string().replace('/', "\\/");
    let body = match emulator.alipay_key.get() {
        Some(key) => {
            let signature = SigningKey::<Sha256>::new(key.clone()).sign(text.as_bytes());
            format!(
                "{{\"{root}\":{text},\"sign\":\"{}\"}}",
                STANDARD.encode(signature.to_bytes())
            )
        }
        None => format!("{{\"{root}\":{text}}}"),
    };
    ([(CONTENT_TYPE, "text/html;charset=utf-8")], body).into_response()
}

pub(crate) enum Reply {
    Ok(Value),
    Error(Value),
}

impl Reply {
    pub(crate) fn error(code: &str, msg: &str, sub_code: &str, sub_msg: &str) -> Reply {
        Reply::Error(json!({ "code": code, "msg": msg, "sub_code": sub_code, "sub_msg": sub_msg }))
    }
}

fn missing(what: &str) -> Reply {
    Reply::error(
        "40001",
        "Missing Required Arguments",
        &format!("isv.missing-{what}"),
        &format!("缺少{what}参数"),
    )
}

fn invalid(what: &str, message: &str) -> Reply {
    Reply::error(
        "40002",
        "Invalid Arguments",
        &format!("isv.invalid-{what}"),
        message,
    )
}

/// The checks of the gateway's common parameters, in Alipay's order.
fn check_request(emulator: &Emulator, params: &BTreeMap<String, String>) -> Result<(), Reply> {
    let get = |key: &str| {
        params
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    };
    let app_id = get("app_id").ok_or_else(|| missing("app-id"))?;
    get("method").ok_or_else(|| missing("method"))?;
    let signature = get("sign").ok_or_else(|| missing("signature"))?;
    let timestamp = get("timestamp").ok_or_else(|| missing("timestamp"))?;
    let version = get("version").ok_or_else(|| missing("version"))?;
    if get("sign_type") != Some("RSA2") {
        return Err(invalid(
            "signature-type",
            "签名类型无效 / sign_type must be RSA2",
        ));
    }
    if !get("charset").is_some_and(|c| c.eq_ignore_ascii_case("utf-8")) {
        return Err(invalid("charset", "字符集错误 / charset must be utf-8"));
    }
    if version != "1.0" {
        return Err(invalid("version", "版本号错误 / version must be 1.0"));
    }
    let key = {
        let state = emulator.state();
        match state.apps.get(&(Platform::Alipay, app_id.to_owned())) {
            Some(app) => app.app_public_key.clone(),
            None => None,
        }
    }
    .ok_or_else(|| invalid("app-id", "无效的AppID参数 / unknown app_id"))?;
    if !fresh(timestamp) {
        return Err(invalid(
            "timestamp",
            "非法的时间戳参数 / timestamp malformed or too far from now",
        ));
    }
    let content = params
        .iter()
        .filter(|(k, v)| *k != "sign" && !v.is_empty())
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let verified = STANDARD
        .decode(signature)
        .ok()
        .and_then(|bytes| Signature::try_from(bytes.as_slice()).ok())
        .is_some_and(|sig| {
            VerifyingKey::<Sha256>::new(key)
                .verify(content.as_bytes(), &sig)
                .is_ok()
        });
    if !verified {
        return Err(invalid(
            "signature",
            "验签出错 / the signature does not verify with the app public key",
        ));
    }
    Ok(())
}

/// Whether a `yyyy-MM-dd HH:mm:ss` China-time timestamp is within the allowed skew.
fn fresh(timestamp: &str) -> bool {
    let Ok(parsed) = PrimitiveDateTime::parse(
        timestamp,
        format_description!("[year]-[month]-[day] [hour]:[minute]:[second]"),
    ) else {
        return false;
    };
    let at = parsed.assume_offset(offset!(+8)).unix_timestamp();
    (at - now_unix()).abs() <= MAX_SKEW_SECS
}

#[allow(clippy::disallowed_methods)] // The emulator has no domain code to steer from tests.
fn now_unix() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

fn oauth_token(emulator: &Emulator, params: &BTreeMap<String, String>) -> Reply {
    let app_id = params.get("app_id").cloned().unwrap_or_default();
    if params.get("grant_type").map(String::as_str) != Some("authorization_code") {
        return invalid("grant-type", "grant_type must be authorization_code");
    }
    let Some(code) = params.get("code").filter(|c| !c.is_empty()) else {
        return missing("code");
    };
    let user = match emulator.take_code(Platform::Alipay, &app_id, code, false) {
        Ok(user) => user,
        Err(CodeProblem::Invalid | CodeProblem::Used) => {
            return Reply::error(
                "40002",
                "Invalid Arguments",
                "isv.code-invalid",
                "授权码code无效 / the auth code is invalid, expired or used",
            );
        }
    };
    let (open_id_mode, open_platform) = {
        let state = emulator.state();
        state
            .apps
            .get(&(Platform::Alipay, app_id.clone()))
            .map(|app| (app.open_id_mode, app.open_platform.clone()))
            .unwrap_or_default()
    };
    let mut answer = json!({
        "access_token": format!("authusrB{}", &new_token()[..32]),
        "expires_in": 1_296_000,
        "refresh_token": format!("authusrB{}", &new_token()[..32]),
        "re_expires_in": 2_592_000,
        "auth_start": OffsetDateTime::from_unix_timestamp(now_unix())
            .map(|t| t.to_offset(offset!(+8)))
            .ok()
            .and_then(|t| t.format(format_description!("[year]-[month]-[day] [hour]:[minute]:[second]")).ok()),
    });
    if open_id_mode {
        answer["open_id"] = json!(derived_id("", &["alipay", "open_id", &app_id, &user]));
    } else {
        answer["user_id"] = json!(user_id(&app_id, &user));
    }
    if let Some(open_platform) = open_platform {
        answer["union_id"] = json!(derived_id(
            "",
            &["alipay", "union_id", &open_platform, &user]
        ));
    }
    Reply::Ok(answer)
}

/// `2088` and twelve digits, stable for the user of the app.
fn user_id(app_id: &str, user: &str) -> String {
    let digits: String = derived_id("", &["alipay", "user_id", app_id, user])
        .bytes()
        .map(|b| char::from(b'0' + b % 10))
        .take(12)
        .collect();
    format!("2088{digits}")
}
