//! WeChat Pay API v3 (`shared/platforms.md` §3), as the emulator answers it for merchants
//! registered with it: each request's `Authorization` checked (the merchant, its certificate
//! serial, a timestamp within 5 minutes, SHA256withRSA over method, path, time, nonce and body
//! with the merchant's public key); replies signed with the emulator's WeChat Pay key (public
//! key mode: `Wechatpay-Serial` is its `PUB_KEY_ID_…`); mini-program orders (`jsapi`), query
//! and close; and, when a test says the user paid, the `TRANSACTION.SUCCESS` notification,
//! signed and encrypted with the merchant's APIv3 key (AES-256-GCM), sent to the order's
//! `notify_url` until it answers 200 or 204, on the emulator's retry schedule; refunds (taken at
//! once, answered `PROCESSING`, then `REFUND.SUCCESS` notified) and their query.
//!
//! What the platform does badly on a bad day, on request: a payment's notification dropped or
//! sent several times (`/emulator/wechatpay/pay`), and notifications forged with the platform's
//! own key (`/emulator/wechatpay/forge`: any resource, a stale time, a signature probe, a
//! flipped GCM tag), so that a merchant's checks can be tested one by one.
//!
//! The daily trade bill (what a merchant reconciles against) is [`bill`]'s: it is made from the
//! orders and refunds kept here, on the emulator's payment calendar ([`crate::calendar`], shared
//! with Alipay), which a test may move a few days on (`/emulator/wechatpay/clock`) so that
//! today's payments are in a bill already.
//!
//! ```text
//! POST /emulator/wechatpay/merchants                        register a merchant
//! POST /emulator/wechatpay/pay                              the user pays an order
//! POST /emulator/wechatpay/forge                            a notification signed as asked
//! POST /emulator/wechatpay/faults                           {lose_refund_answers: n}
//! POST /emulator/wechatpay/clock                            {offset_secs}: move the calendar
//! POST /emulator/wechatpay/bill                             a day's bill made wrong on purpose
//! GET  /emulator/wechatpay/notifications                    what was sent, and the answers
//! POST /wechatpay/v3/pay/transactions/jsapi                 place a mini-program order
//! GET  /wechatpay/v3/pay/transactions/out-trade-no/{no}     query it (?mchid=)
//! POST /wechatpay/v3/pay/transactions/out-trade-no/{no}/close
//! POST /wechatpay/v3/refund/domestic/refunds                refund (part of) a paid order
//! GET  /wechatpay/v3/refund/domestic/refunds/{no}           query a refund
//! GET  /wechatpay/v3/bill/tradebill?bill_date=…            a day's trade bill: hash, URL
//! GET  /wechatpay/v3/billdownload/file?token=                its file (not signed)
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, FromRequest, Path, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rsa::pkcs1v15::{Signature, SigningKey, VerifyingKey};
use rsa::pkcs8::{EncodePublicKey, LineEnding};
use rsa::signature::{SignatureEncoding, Signer, Verifier};
use rsa::{RsaPrivateKey, RsaPublicKey};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Sha256;
use time::OffsetDateTime;
use time::macros::offset;

use crate::state::{Emulator, new_token};

mod bill;

/// How far a request's timestamp may be from the emulator's clock.
const MAX_SKEW_SECS: i64 = 300;
/// The emulator's WeChat Pay public key id, as `Wechatpay-Serial` names it.
pub(crate) const PUBLIC_KEY_ID: &str = "PUB_KEY_ID_0114000000000000000000000000EMU";

struct Merchant {
    serial_no: String,
    key: RsaPublicKey,
    api_v3_key: Vec<u8>,
    orders: HashMap<String, Order>,
    /// By `out_refund_no`.
    refunds: HashMap<String, Refund>,
}

#[derive(Clone)]
struct Refund {
    out_trade_no: String,
    refund_id: String,
    refund: i64,
    create_time: String,
    /// When it succeeded, on the payment calendar (China time): at once, here.
    success_time: OffsetDateTime,
}

#[derive(Clone)]
struct Order {
    appid: String,
    total: i64,
    openid: String,
    /// What the bill names the goods (商品名称).
    description: String,
    notify_url: String,
    attach: Option<String>,
    prepay_id: String,
    state: &'static str,
    transaction_id: Option<String>,
    /// When it was paid, on the payment calendar (China time).
    success_time: Option<OffsetDateTime>,
}

/// Every merchant and what was notified.
#[derive(Default)]
struct Pay {
    merchants: Mutex<HashMap<String, Merchant>>,
    notifications: Mutex<Vec<Value>>,
    /// Refunds still to take and then answer `500 SYSTEM_ERROR` for, without notifying them: a
    /// platform that did the work and failed to say so.
    lost_refund_answers: Mutex<u32>,
    /// Bill settings asked for by tests, and the bill files waiting to be downloaded.
    bills: bill::Bills,
}

/// RFC 3339, as WeChat Pay writes its times (`2026-12-02T10:00:00+08:00`).
fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[derive(Deserialize)]
struct Faults {
    /// How many of the next refunds are taken, then answered `500 SYSTEM_ERROR`.
    #[serde(default)]
    lose_refund_answers: u32,
}

/// Sets faults for the next requests.
async fn faults(
    Extension(pay): Extension<Arc<Pay>>,
    axum::Json(faults): axum::Json<Faults>,
) -> Response {
    *lock(&pay.lost_refund_answers) = faults.lose_refund_answers;
    axum::Json(json!({})).into_response()
}

#[allow(clippy::disallowed_methods)] // The emulator has no domain code to steer from tests.
fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[allow(clippy::disallowed_methods)] // The platform's routes, not Cloudlet's API: no contract.
pub(crate) fn routes() -> Router<Arc<Emulator>> {
    Router::new()
        .route("/emulator/wechatpay/merchants", post(register))
        .route("/emulator/wechatpay/pay", post(pay))
        .route("/emulator/wechatpay/forge", post(forge))
        .route("/emulator/wechatpay/faults", post(faults))
        .route("/emulator/wechatpay/clock", post(crate::calendar::clock))
        .route("/emulator/wechatpay/bill", post(bill::control))
        .route("/emulator/wechatpay/notifications", get(notifications))
        .route("/wechatpay/v3/pay/transactions/jsapi", post(jsapi))
        .route(
            "/wechatpay/v3/pay/transactions/out-trade-no/{no}",
            get(query),
        )
        .route(
            "/wechatpay/v3/pay/transactions/out-trade-no/{no}/close",
            post(close),
        )
        .route("/wechatpay/v3/refund/domestic/refunds", post(refund))
        .route(
            "/wechatpay/v3/refund/domestic/refunds/{no}",
            get(query_refund),
        )
        .route("/wechatpay/v3/bill/tradebill", get(bill::trade_bill))
        .route("/wechatpay/v3/billdownload/file", get(bill::download))
        .layer(Extension(Arc::new(Pay::default())))
}

/// The emulator's WeChat Pay key, made on first use.
async fn platform_key(emulator: &Emulator) -> Option<&RsaPrivateKey> {
    if emulator.wechat_pay_key.get().is_none() {
        let key =
            tokio::task::spawn_blocking(|| RsaPrivateKey::new(&mut rand_core::OsRng, 2048).ok())
                .await
                .ok()
                .flatten()?;
        let _ = emulator.wechat_pay_key.set(key);
    }
    emulator.wechat_pay_key.get()
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({ "code": code, "message": message })),
    )
        .into_response()
}

/// A reply as WeChat Pay signs it: `Wechatpay-*` headers over time, nonce and body.
fn signed(key: &RsaPrivateKey, status: StatusCode, body: String) -> Response {
    let timestamp = now().unix_timestamp().to_string();
    let nonce = new_token();
    let signature = sign(key, &format!("{timestamp}\n{nonce}\n{body}\n"));
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    for (name, value) in [
        ("content-type", "application/json".to_owned()),
        ("wechatpay-timestamp", timestamp),
        ("wechatpay-nonce", nonce),
        ("wechatpay-signature", signature),
        ("wechatpay-serial", PUBLIC_KEY_ID.to_owned()),
        (
            "wechatpay-signature-type",
            "WECHATPAY2-SHA256-RSA2048".to_owned(),
        ),
    ] {
        if let Ok(value) = value.parse() {
            headers.insert(name, value);
        }
    }
    response
}

fn sign(key: &RsaPrivateKey, message: &str) -> String {
    let signature = SigningKey::<Sha256>::new(key.clone()).sign(message.as_bytes());
    STANDARD.encode(signature.to_bytes())
}

#[derive(Deserialize)]
struct Registration {
    mchid: String,
    serial_no: String,
    /// The merchant's API certificate public key (PEM or base64 SPKI).
    public_key: String,
    api_v3_key: String,
}

async fn register(
    State(emulator): State<Arc<Emulator>>,
    Extension(pay): Extension<Arc<Pay>>,
    axum::Json(registration): axum::Json<Registration>,
) -> Response {
    let Some(key) = crate::alipay::public_key(&registration.public_key) else {
        return error(
            StatusCode::BAD_REQUEST,
            "PARAM_ERROR",
            "public_key is no RSA public key",
        );
    };
    if registration.api_v3_key.len() != 32 {
        return error(
            StatusCode::BAD_REQUEST,
            "PARAM_ERROR",
            "an APIv3 key is 32 bytes",
        );
    }
    let Some(platform) = platform_key(&emulator).await else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "SYSTEM_ERROR", "no key");
    };
    let Ok(pem) = platform.to_public_key().to_public_key_pem(LineEnding::LF) else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "SYSTEM_ERROR", "no key");
    };
    lock(&pay.merchants).insert(
        registration.mchid.clone(),
        Merchant {
            serial_no: registration.serial_no.to_ascii_uppercase(),
            key,
            api_v3_key: registration.api_v3_key.into_bytes(),
            orders: HashMap::new(),
            refunds: HashMap::new(),
        },
    );
    axum::Json(json!({ "public_key_id": PUBLIC_KEY_ID, "public_key": pem })).into_response()
}

/// The `key="value"` pairs of an `Authorization` header, in any order.
fn authorization(headers: &HeaderMap) -> Option<HashMap<String, String>> {
    let header = headers.get("authorization")?.to_str().ok()?;
    let pairs = header.strip_prefix("WECHATPAY2-SHA256-RSA2048 ")?;
    pairs
        .split(',')
        .map(|pair| {
            let (key, value) = pair.trim().split_once('=')?;
            let value = value.strip_prefix('"')?.strip_suffix('"')?;
            Some((key.to_owned(), value.to_owned()))
        })
        .collect()
}

/// A merchant's request whose `Authorization` checks out: the merchant, and the body it signed.
/// Every WeChat Pay API route takes it last, after its path and query; a request that does not
/// check out is answered `401 SIGN_ERROR` before the route runs.
struct Signed {
    pay: Arc<Pay>,
    mchid: String,
    body: Bytes,
}

impl FromRequest<Arc<Emulator>> for Signed {
    type Rejection = Response;

    async fn from_request(request: Request, _: &Arc<Emulator>) -> Result<Self, Response> {
        let (parts, body) = request.into_parts();
        let pay = parts.extensions.get::<Arc<Pay>>().cloned().ok_or_else(|| {
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "SYSTEM_ERROR",
                "no state",
            )
        })?;
        let body = axum::body::to_bytes(body, 1 << 20).await.map_err(|_| {
            error(
                StatusCode::BAD_REQUEST,
                "PARAM_ERROR",
                "the body is too large",
            )
        })?;
        let mchid = check(&pay, &parts.method, &parts.uri, &parts.headers, &body)
            .map_err(|message| error(StatusCode::UNAUTHORIZED, "SIGN_ERROR", message))?;
        Ok(Signed { pay, mchid, body })
    }
}

/// Checks a request's signature as WeChat Pay does: the merchant's id, or why not (a
/// `SIGN_ERROR`).
fn check(
    pay: &Pay,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<String, &'static str> {
    let refuse = |message: &'static str| message;
    let pairs = authorization(headers)
        .ok_or_else(|| refuse("no WECHATPAY2-SHA256-RSA2048 Authorization"))?;
    let field = |name: &str| {
        pairs
            .get(name)
            .ok_or_else(|| refuse("an Authorization field is missing"))
    };
    let (mchid, nonce, timestamp, serial, signature) = (
        field("mchid")?,
        field("nonce_str")?,
        field("timestamp")?,
        field("serial_no")?,
        field("signature")?,
    );
    let at: i64 = timestamp
        .parse()
        .map_err(|_| refuse("timestamp is not a number"))?;
    if now().unix_timestamp().abs_diff(at) > MAX_SKEW_SECS.unsigned_abs() {
        return Err(refuse("the timestamp is not within 5 minutes"));
    }
    let merchants = lock(&pay.merchants);
    let merchant = merchants
        .get(mchid)
        .ok_or_else(|| refuse("no such merchant"))?;
    if !merchant.serial_no.eq_ignore_ascii_case(serial) {
        return Err(refuse("serial_no is not the merchant's certificate"));
    }
    let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    let mut message = format!("{method}\n{path}\n{timestamp}\n{nonce}\n").into_bytes();
    message.extend_from_slice(body);
    message.push(b'\n');
    let verified = STANDARD
        .decode(signature)
        .ok()
        .and_then(|bytes| Signature::try_from(bytes.as_slice()).ok())
        .is_some_and(|signature| {
            VerifyingKey::<Sha256>::new(merchant.key.clone())
                .verify(&message, &signature)
                .is_ok()
        });
    if !verified {
        return Err(refuse("the signature does not verify"));
    }
    Ok(mchid.clone())
}

#[derive(Deserialize)]
struct Amount {
    total: i64,
    #[serde(default)]
    currency: Option<String>,
}

#[derive(Deserialize)]
struct Payer {
    openid: String,
}

#[derive(Deserialize)]
struct JsapiOrder {
    appid: String,
    mchid: String,
    description: String,
    out_trade_no: String,
    notify_url: String,
    amount: Amount,
    payer: Payer,
    #[serde(default)]
    attach: Option<String>,
    #[serde(default)]
    time_expire: Option<String>,
}

async fn jsapi(
    State(emulator): State<Arc<Emulator>>,
    Signed { pay, mchid, body }: Signed,
) -> Response {
    let Ok(order) = serde_json::from_slice::<JsapiOrder>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "PARAM_ERROR",
            "the body is not a jsapi order",
        );
    };
    let valid_no = (6..=32).contains(&order.out_trade_no.len())
        && order
            .out_trade_no
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-|*".contains(&b));
    let valid = order.mchid == mchid
        && valid_no
        && order.amount.total > 0
        && order.amount.currency.as_deref().is_none_or(|c| c == "CNY")
        && !order.description.is_empty()
        && order.description.chars().count() <= 127
        && order.notify_url.starts_with("http")
        && !order.notify_url.contains('?')
        && order.time_expire.as_deref().is_none_or(|t| {
            OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).is_ok()
        });
    if !valid {
        return error(
            StatusCode::BAD_REQUEST,
            "PARAM_ERROR",
            "a field breaks its rule",
        );
    }
    let Some(key) = platform_key(&emulator).await else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "SYSTEM_ERROR", "no key");
    };
    let mut merchants = lock(&pay.merchants);
    let Some(merchant) = merchants.get_mut(&mchid) else {
        return error(StatusCode::UNAUTHORIZED, "SIGN_ERROR", "no such merchant");
    };
    let prepay_id = match merchant.orders.get(&order.out_trade_no) {
        // The same order again: its prepay id; another under the same number: refused.
        Some(known) if known.state == "SUCCESS" => {
            return error(StatusCode::FORBIDDEN, "ORDERPAID", "the order is paid");
        }
        Some(known) if known.state == "CLOSED" => {
            return error(
                StatusCode::BAD_REQUEST,
                "ORDER_CLOSED",
                "the order is closed",
            );
        }
        Some(known)
            if known.total == order.amount.total
                && known.openid == order.payer.openid
                && known.appid == order.appid =>
        {
            known.prepay_id.clone()
        }
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "INVALID_REQUEST",
                "out_trade_no is taken by another order",
            );
        }
        None => {
            let prepay_id = format!("wx{}", new_token().replace(['-', '_'], ""));
            merchant.orders.insert(
                order.out_trade_no.clone(),
                Order {
                    appid: order.appid,
                    total: order.amount.total,
                    openid: order.payer.openid,
                    description: order.description,
                    notify_url: order.notify_url,
                    attach: order.attach,
                    prepay_id: prepay_id.clone(),
                    state: "NOTPAY",
                    transaction_id: None,
                    success_time: None,
                },
            );
            prepay_id
        }
    };
    signed(
        key,
        StatusCode::OK,
        json!({ "prepay_id": prepay_id }).to_string(),
    )
}

/// The order as WeChat Pay's Transaction object.
fn transaction(mchid: &str, out_trade_no: &str, order: &Order) -> Value {
    let mut value = json!({
        "appid": order.appid, "mchid": mchid, "out_trade_no": out_trade_no,
        "trade_type": "JSAPI", "trade_state": order.state,
        "trade_state_desc": match order.state { "SUCCESS" => "支付成功", "CLOSED" => "已关闭", _ => "未支付" },
        "payer": { "openid": order.openid },
        "amount": { "total": order.total, "currency": "CNY" },
    });
    if let Some(attach) = &order.attach {
        value["attach"] = json!(attach);
    }
    if let (Some(id), Some(time)) = (&order.transaction_id, &order.success_time) {
        value["transaction_id"] = json!(id);
        value["success_time"] = json!(rfc3339(*time));
        value["bank_type"] = json!("OTHERS");
        value["amount"]["payer_total"] = json!(order.total);
        value["amount"]["payer_currency"] = json!("CNY");
    }
    value
}

#[derive(Deserialize)]
struct MchidQuery {
    mchid: String,
}

async fn query(
    State(emulator): State<Arc<Emulator>>,
    Path(no): Path<String>,
    Query(params): Query<MchidQuery>,
    Signed { pay, mchid, .. }: Signed,
) -> Response {
    if params.mchid != mchid {
        return error(
            StatusCode::BAD_REQUEST,
            "PARAM_ERROR",
            "mchid is not the signer's",
        );
    }
    let Some(key) = platform_key(&emulator).await else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "SYSTEM_ERROR", "no key");
    };
    let merchants = lock(&pay.merchants);
    let found = merchants.get(&mchid).and_then(|m| m.orders.get(&no));
    match found {
        Some(order) => signed(
            key,
            StatusCode::OK,
            transaction(&mchid, &no, order).to_string(),
        ),
        None => error(StatusCode::NOT_FOUND, "ORDER_NOT_EXIST", "no such order"),
    }
}

#[derive(Deserialize)]
struct CloseBody {
    mchid: String,
}

async fn close(
    State(emulator): State<Arc<Emulator>>,
    Path(no): Path<String>,
    Signed { pay, mchid, body }: Signed,
) -> Response {
    let same = serde_json::from_slice::<CloseBody>(&body).is_ok_and(|b| b.mchid == mchid);
    if !same {
        return error(
            StatusCode::BAD_REQUEST,
            "PARAM_ERROR",
            "the body names another mchid",
        );
    }
    let Some(key) = platform_key(&emulator).await else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "SYSTEM_ERROR", "no key");
    };
    let mut merchants = lock(&pay.merchants);
    let order = merchants
        .get_mut(&mchid)
        .and_then(|m| m.orders.get_mut(&no));
    match order {
        None => error(StatusCode::NOT_FOUND, "ORDER_NOT_EXIST", "no such order"),
        Some(order) if order.state == "SUCCESS" => {
            error(StatusCode::BAD_REQUEST, "ORDERPAID", "the order is paid")
        }
        Some(order) => {
            order.state = "CLOSED";
            signed(key, StatusCode::NO_CONTENT, String::new())
        }
    }
}

#[derive(Deserialize)]
struct PayBody {
    mchid: String,
    out_trade_no: String,
    /// `drop`: the notification is never sent (the merchant must query).
    #[serde(default)]
    notify: Option<String>,
    /// Sends the notification this many times more, at once, besides its retries.
    #[serde(default)]
    duplicates: u32,
}

/// The user pays: the order is paid, and its notification goes out.
async fn pay(
    State(emulator): State<Arc<Emulator>>,
    Extension(pay): Extension<Arc<Pay>>,
    axum::Json(body): axum::Json<PayBody>,
) -> Response {
    let Some(key) = platform_key(&emulator).await.cloned() else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "SYSTEM_ERROR", "no key");
    };
    let (order, api_v3_key) = {
        let mut merchants = lock(&pay.merchants);
        let Some(merchant) = merchants.get_mut(&body.mchid) else {
            return error(StatusCode::NOT_FOUND, "ORDER_NOT_EXIST", "no such merchant");
        };
        let Some(order) = merchant.orders.get_mut(&body.out_trade_no) else {
            return error(StatusCode::NOT_FOUND, "ORDER_NOT_EXIST", "no such order");
        };
        if order.state != "NOTPAY" {
            return error(
                StatusCode::BAD_REQUEST,
                "ORDER_CLOSED",
                "the order is not payable",
            );
        }
        order.state = "SUCCESS";
        order.transaction_id = Some(format!(
            "42000{}",
            now().unix_timestamp_nanos() % 10i128.pow(23)
        ));
        order.success_time = Some(emulator.calendar.now());
        (order.clone(), merchant.api_v3_key.clone())
    };
    let resource = transaction(&body.mchid, &body.out_trade_no, &order).to_string();
    let Some(notification) = notification(&api_v3_key, TRANSACTION_SUCCESS, &resource) else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "SYSTEM_ERROR",
            "could not encrypt",
        );
    };
    if body.notify.as_deref() != Some("drop") {
        let retries = emulator.options.pay_notify_retries.clone();
        for _ in 0..=body.duplicates.min(50) {
            tokio::spawn(deliver(
                Arc::clone(&pay),
                key.clone(),
                order.notify_url.clone(),
                notification.clone(),
                retries.clone(),
            ));
        }
    }
    axum::Json(json!({ "transaction_id": order.transaction_id })).into_response()
}

const TRANSACTION_SUCCESS: (&str, &str, &str) = ("TRANSACTION.SUCCESS", "transaction", "支付成功");
const REFUND_SUCCESS: (&str, &str, &str) = ("REFUND.SUCCESS", "refund", "退款成功");

#[derive(Deserialize)]
struct RefundBody {
    out_trade_no: String,
    out_refund_no: String,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    notify_url: Option<String>,
    amount: RefundAmount,
}

#[derive(Deserialize)]
struct RefundAmount {
    refund: i64,
    total: i64,
    currency: String,
}

/// The refund as WeChat Pay's Refund object (and its notification's resource).
fn refund_value(
    mchid: &str,
    out_refund_no: &str,
    refund: &Refund,
    order: &Order,
    status: &str,
) -> Value {
    json!({
        "mchid": mchid,
        "refund_id": refund.refund_id, "out_refund_no": out_refund_no,
        "transaction_id": order.transaction_id, "out_trade_no": refund.out_trade_no,
        "channel": "ORIGINAL", "user_received_account": "支付用户零钱",
        "create_time": refund.create_time, "status": status, "refund_status": status,
        "success_time": refund.create_time,
        "amount": {
            "total": order.total, "refund": refund.refund,
            "payer_total": order.total, "payer_refund": refund.refund, "currency": "CNY",
        },
    })
}

/// A refund of a paid order: taken at once (the emulator's users are always reachable),
/// answered `PROCESSING` as WeChat Pay answers, then notified as `REFUND.SUCCESS`.
async fn refund(
    State(emulator): State<Arc<Emulator>>,
    Signed { pay, mchid, body }: Signed,
) -> Response {
    let Ok(asked) = serde_json::from_slice::<RefundBody>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "PARAM_ERROR",
            "the body is not a refund",
        );
    };
    let valid = asked.amount.refund > 0
        && asked.amount.currency == "CNY"
        && (1..=64).contains(&asked.out_refund_no.len())
        && asked
            .reason
            .as_deref()
            .is_none_or(|r| r.chars().count() <= 80);
    if !valid {
        return error(
            StatusCode::BAD_REQUEST,
            "PARAM_ERROR",
            "a field breaks its rule",
        );
    }
    let Some(key) = platform_key(&emulator).await.cloned() else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "SYSTEM_ERROR", "no key");
    };
    let (value, resource, api_v3_key) = {
        let mut merchants = lock(&pay.merchants);
        let Some(merchant) = merchants.get_mut(&mchid) else {
            return error(StatusCode::UNAUTHORIZED, "SIGN_ERROR", "no such merchant");
        };
        let Some(order) = merchant.orders.get(&asked.out_trade_no).cloned() else {
            return error(
                StatusCode::NOT_FOUND,
                "RESOURCE_NOT_EXISTS",
                "no such order",
            );
        };
        if let Some(known) = merchant.refunds.get(&asked.out_refund_no) {
            // The same refund number again: that refund, as it is.
            let value = refund_value(&mchid, &asked.out_refund_no, known, &order, "SUCCESS");
            return signed(&key, StatusCode::OK, value.to_string());
        }
        if order.state != "SUCCESS" {
            return error(
                StatusCode::BAD_REQUEST,
                "INVALID_REQUEST",
                "the order is not paid",
            );
        }
        if asked.amount.total != order.total {
            return error(
                StatusCode::BAD_REQUEST,
                "PARAM_ERROR",
                "amount.total is not the order's",
            );
        }
        let refunded: i64 = merchant
            .refunds
            .values()
            .filter(|r| r.out_trade_no == asked.out_trade_no)
            .map(|r| r.refund)
            .sum();
        if refunded + asked.amount.refund > order.total {
            return error(
                StatusCode::FORBIDDEN,
                "NOT_ENOUGH",
                "more than is left to refund",
            );
        }
        let success_time = emulator.calendar.now();
        let made = Refund {
            out_trade_no: asked.out_trade_no.clone(),
            refund_id: format!("50300{}", now().unix_timestamp_nanos() % 10i128.pow(23)),
            refund: asked.amount.refund,
            create_time: rfc3339(success_time),
            success_time,
        };
        let value = refund_value(&mchid, &asked.out_refund_no, &made, &order, "PROCESSING");
        let resource = refund_value(&mchid, &asked.out_refund_no, &made, &order, "SUCCESS");
        merchant.refunds.insert(asked.out_refund_no.clone(), made);
        (value, resource, merchant.api_v3_key.clone())
    };
    {
        let mut lost = lock(&pay.lost_refund_answers);
        if *lost > 0 {
            *lost -= 1;
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "SYSTEM_ERROR",
                "系统错误 / retry the same request",
            );
        }
    }
    if let Some(url) = asked.notify_url
        && let Some(notification) = notification(&api_v3_key, REFUND_SUCCESS, &resource.to_string())
    {
        let retries = emulator.options.pay_notify_retries.clone();
        tokio::spawn(deliver(
            Arc::clone(&pay),
            key.clone(),
            url,
            notification,
            retries,
        ));
    }
    signed(&key, StatusCode::OK, value.to_string())
}

async fn query_refund(
    State(emulator): State<Arc<Emulator>>,
    Path(no): Path<String>,
    Signed { pay, mchid, .. }: Signed,
) -> Response {
    let Some(key) = platform_key(&emulator).await else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "SYSTEM_ERROR", "no key");
    };
    let merchants = lock(&pay.merchants);
    let Some(merchant) = merchants.get(&mchid) else {
        return error(StatusCode::UNAUTHORIZED, "SIGN_ERROR", "no such merchant");
    };
    let found = merchant
        .refunds
        .get(&no)
        .and_then(|r| Some((r, merchant.orders.get(&r.out_trade_no)?)));
    match found {
        Some((refund, order)) => {
            let value = refund_value(&mchid, &no, refund, order, "SUCCESS");
            signed(key, StatusCode::OK, value.to_string())
        }
        None => error(
            StatusCode::NOT_FOUND,
            "RESOURCE_NOT_EXISTS",
            "no such refund",
        ),
    }
}

#[derive(Deserialize)]
struct ForgeBody {
    /// The merchant whose APIv3 key encrypts the resource.
    mchid: String,
    /// `TRANSACTION.SUCCESS` (the default) or `REFUND.SUCCESS`.
    #[serde(default)]
    event_type: Option<String>,
    /// The resource, before encryption: anything at all.
    resource: Value,
    /// Signs as if at now plus this many seconds.
    #[serde(default)]
    time_offset_secs: i64,
    /// A signature probe (`WECHATPAY/SIGNTEST/…`).
    #[serde(default)]
    probe: bool,
    /// Flips a bit of the ciphertext's tag after encrypting (the signature is over the result).
    #[serde(default)]
    flip_tag: bool,
}

/// A notification as asked, signed with the platform's own key: the merchant gets to prove
/// that it checks what a genuine signature does not.
async fn forge(
    State(emulator): State<Arc<Emulator>>,
    Extension(pay): Extension<Arc<Pay>>,
    axum::Json(asked): axum::Json<ForgeBody>,
) -> Response {
    let Some(key) = platform_key(&emulator).await.cloned() else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "SYSTEM_ERROR", "no key");
    };
    let Some(api_v3_key) = lock(&pay.merchants)
        .get(&asked.mchid)
        .map(|m| m.api_v3_key.clone())
    else {
        return error(
            StatusCode::NOT_FOUND,
            "RESOURCE_NOT_EXISTS",
            "no such merchant",
        );
    };
    let kind = match asked.event_type.as_deref() {
        Some("REFUND.SUCCESS") => REFUND_SUCCESS,
        _ => TRANSACTION_SUCCESS,
    };
    let Some(mut body) = notification(&api_v3_key, kind, &asked.resource.to_string()) else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "SYSTEM_ERROR",
            "could not encrypt",
        );
    };
    if asked.flip_tag
        && let Ok(mut envelope) = serde_json::from_str::<Value>(&body)
        && let Some(sealed) = envelope["resource"]["ciphertext"]
            .as_str()
            .and_then(|c| STANDARD.decode(c).ok())
    {
        let mut sealed = sealed;
        if let Some(last) = sealed.last_mut() {
            *last ^= 1;
        }
        envelope["resource"]["ciphertext"] = json!(STANDARD.encode(sealed));
        body = envelope.to_string();
    }
    let timestamp = (now().unix_timestamp() + asked.time_offset_secs).to_string();
    let nonce = new_token();
    let mut signature = sign(&key, &format!("{timestamp}\n{nonce}\n{body}\n"));
    if asked.probe {
        signature = format!("WECHATPAY/SIGNTEST/{signature}");
    }
    axum::Json(json!({
        "body": body,
        "headers": {
            "wechatpay-timestamp": timestamp,
            "wechatpay-nonce": nonce,
            "wechatpay-signature": signature,
            "wechatpay-serial": PUBLIC_KEY_ID,
            "wechatpay-signature-type": "WECHATPAY2-SHA256-RSA2048",
        },
    }))
    .into_response()
}

/// A notification's body (`kind`: its event type, resource type and summary), its resource
/// encrypted with the APIv3 key.
fn notification(api_v3_key: &[u8], kind: (&str, &str, &str), resource: &str) -> Option<String> {
    let (event_type, original_type, summary) = kind;
    let nonce = &new_token().replace(['-', '_'], "x")[..12];
    let cipher = Aes256Gcm::new_from_slice(api_v3_key).ok()?;
    let sealed = cipher
        .encrypt(
            Nonce::from_slice(nonce.as_bytes()),
            Payload {
                msg: resource.as_bytes(),
                aad: original_type.as_bytes(),
            },
        )
        .ok()?;
    let now = now().to_offset(offset!(+8)).replace_nanosecond(0).ok()?;
    Some(
        json!({
            "id": new_token(),
            "create_time": now.format(&time::format_description::well_known::Rfc3339).ok()?,
            "resource_type": "encrypt-resource",
            "event_type": event_type,
            "summary": summary,
            "resource": {
                "original_type": original_type,
                "algorithm": "AEAD_AES_256_GCM",
                "ciphertext": STANDARD.encode(sealed),
                "associated_data": original_type,
                "nonce": nonce,
            },
        })
        .to_string(),
    )
}

/// Posts a notification until it is answered 200 or 204, waiting `retries` between tries;
/// each try is signed afresh (a new time and nonce), as WeChat Pay does.
async fn deliver(
    pay: Arc<Pay>,
    key: RsaPrivateKey,
    url: String,
    body: String,
    retries: Vec<Duration>,
) {
    let client = reqwest::Client::new();
    let waits = std::iter::once(Duration::ZERO).chain(retries);
    for wait in waits {
        tokio::time::sleep(wait).await;
        let timestamp = now().unix_timestamp().to_string();
        let nonce = new_token();
        let signature = sign(&key, &format!("{timestamp}\n{nonce}\n{body}\n"));
        let answer = client
            .post(&url)
            .header("content-type", "application/json")
            .header("wechatpay-timestamp", &timestamp)
            .header("wechatpay-nonce", &nonce)
            .header("wechatpay-signature", &signature)
            .header("wechatpay-serial", PUBLIC_KEY_ID)
            .header("wechatpay-signature-type", "WECHATPAY2-SHA256-RSA2048")
            .body(body.clone())
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        let status = answer.as_ref().map_or(0, |a| a.status().as_u16());
        lock(&pay.notifications).push(json!({
            "url": url, "status": status, "body": body,
            "headers": {
                "wechatpay-timestamp": timestamp, "wechatpay-nonce": nonce,
                "wechatpay-signature": signature, "wechatpay-serial": PUBLIC_KEY_ID,
            },
        }));
        if status == 200 || status == 204 {
            return;
        }
    }
}

async fn notifications(Extension(pay): Extension<Arc<Pay>>) -> Response {
    axum::Json(json!({ "items": *lock(&pay.notifications) })).into_response()
}
