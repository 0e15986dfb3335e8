//! Alipay's trade APIs for mini programs (`shared/platforms.md` §4), answered through the
//! gateway of `alipay`: `alipay.trade.create` (`JSAPI_PAY`), `.query`, `.close`, `.refund` and
//! `alipay.trade.fastpay.refund.query`, each behind the gateway's signature check; and, when a
//! test says the user paid, the asynchronous notification: a form signed with the emulator's
//! Alipay key by the V1 rule (without `sign_type`), posted to the trade's `notify_url` until it
//! answers exactly `success`, on the emulator's retry schedule. Refunds notify the payment's
//! `notify_url` too: `TRADE_SUCCESS` with `refund_fee` and `out_biz_no` for a part,
//! `TRADE_CLOSED` for the whole.
//!
//! Trades are created, paid and refunded on the emulator's payment calendar
//! ([`crate::calendar`]): `gmt_create`, `gmt_payment`, `gmt_refund` and the rest follow it, so
//! that a test can pay "yesterday"; `notify_time` keeps the real clock. The daily trade bill
//! made from them (`alipay.data.dataservice.bill.downloadurl.query`) is [`bill`]'s.
//!
//! ```text
//! POST /emulator/alipay/pay            {app_id, out_trade_no, notify?: "drop", duplicates?}
//! POST /emulator/alipay/forge          {params}: the form signed as Alipay signs notifications
//! GET  /emulator/alipay/notifications  what was sent, and the answers
//! POST /emulator/alipay/clock          {offset_secs}: move the payment calendar
//! POST /emulator/alipay/bill           a day's bill made wrong on purpose
//! POST /emulator/alipay/faults         {lose_refund_answers: n}
//! GET  /alipay/billdownload?token=     a bill's zip (not signed)
//! ```

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rsa::RsaPrivateKey;
use rsa::pkcs1v15::SigningKey;
use rsa::signature::{SignatureEncoding, Signer};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Sha256;
use time::OffsetDateTime;
use time::macros::{format_description, offset};

use crate::alipay::Reply;
use crate::state::{Emulator, new_token};

pub(crate) mod bill;

#[derive(Clone)]
struct Trade {
    trade_no: String,
    total_fen: i64,
    subject: String,
    buyer: (&'static str, String),
    notify_url: String,
    /// `WAIT_BUYER_PAY`, `TRADE_SUCCESS` or `TRADE_CLOSED`.
    status: &'static str,
    /// When it was created (`gmt_create`), on the payment calendar.
    created: OffsetDateTime,
    /// When it was paid (`gmt_payment`), on the payment calendar.
    paid: Option<OffsetDateTime>,
    /// By `out_request_no`.
    refunds: BTreeMap<String, TradeRefund>,
}

#[derive(Clone, Copy)]
struct TradeRefund {
    fen: i64,
    /// When it was refunded (`gmt_refund_pay`), on the payment calendar.
    at: OffsetDateTime,
}

impl Trade {
    fn refunded(&self) -> i64 {
        self.refunds.values().map(|r| r.fen).sum()
    }
}

/// Every app's trades, by (app id, out_trade_no), what was notified, and the bills.
#[derive(Default)]
pub(crate) struct Trades {
    trades: Mutex<HashMap<(String, String), Trade>>,
    /// How many of the next refunds are made, then neither answered (the gateway times out)
    /// nor notified: only a query finds them.
    lost_refund_answers: Mutex<u32>,
    notifications: Mutex<Vec<Value>>,
    bills: bill::Bills,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Now on the real clock, as Alipay writes times: what `notify_time` says (a notification is
/// sent now, whatever day the payment calendar is on).
#[allow(clippy::disallowed_methods)] // The emulator has no domain code to steer from tests.
fn now_text() -> String {
    china_text(OffsetDateTime::now_utc())
}

/// `yyyy-MM-dd HH:mm:ss` in China time, as Alipay writes times.
fn china_text(at: OffsetDateTime) -> String {
    at.to_offset(offset!(+8))
        .format(format_description!(
            "[year]-[month]-[day] [hour]:[minute]:[second]"
        ))
        .unwrap_or_default()
}

fn yuan(fen: i64) -> String {
    format!("{}.{:02}", fen / 100, fen % 100)
}

/// `1.5`, `1.50` or `2` in fen.
fn fen_of(text: &str) -> Option<i64> {
    let (whole, cents) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty() || cents.len() > 2 {
        return None;
    }
    let whole: i64 = whole.parse().ok()?;
    let cents: i64 = if cents.is_empty() {
        0
    } else {
        format!("{cents:0<2}").parse().ok()?
    };
    Some(whole * 100 + cents)
}

fn business(sub_code: &str, sub_msg: &str) -> Reply {
    Reply::error("40004", "Business Failed", sub_code, sub_msg)
}

/// The gateway's trade methods; `None` for a method that is not one. `now` is the payment
/// calendar's, which dates trades and refunds.
pub(crate) fn answer(
    trades: &Trades,
    method: &str,
    params: &BTreeMap<String, String>,
    now: OffsetDateTime,
) -> Option<Reply> {
    let app_id = params.get("app_id").cloned().unwrap_or_default();
    let biz: Value = params
        .get("biz_content")
        .and_then(|b| serde_json::from_str(b).ok())
        .unwrap_or(Value::Null);
    let out_trade_no = biz["out_trade_no"].as_str().unwrap_or_default().to_owned();
    let key = (app_id.clone(), out_trade_no.clone());
    let mut all = lock(&trades.trades);
    let reply = match method {
        "alipay.trade.create" => {
            let total = biz["total_amount"].as_str().and_then(fen_of);
            let subject = biz["subject"].as_str().unwrap_or_default();
            let buyer = match (biz["buyer_id"].as_str(), biz["buyer_open_id"].as_str()) {
                (Some(id), None) => Some(("buyer_id", id.to_owned())),
                (None, Some(id)) => Some(("buyer_open_id", id.to_owned())),
                _ => None,
            };
            let notify_url = params.get("notify_url").cloned().unwrap_or_default();
            let valid_no = (1..=64).contains(&out_trade_no.len())
                && out_trade_no
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_');
            let (Some(total), Some(buyer)) = (total, buyer) else {
                return Some(business(
                    "ACQ.INVALID_PARAMETER",
                    "total_amount and one buyer id are required",
                ));
            };
            if !valid_no
                || !(1..=10_000_000_000).contains(&total)
                || subject.is_empty()
                || biz["product_code"] != "JSAPI_PAY"
            {
                return Some(business("ACQ.INVALID_PARAMETER", "a field breaks its rule"));
            }
            match all.get(&key) {
                Some(known) if known.status == "TRADE_SUCCESS" => {
                    business("ACQ.TRADE_HAS_SUCCESS", "the trade is paid")
                }
                Some(known) if known.status == "TRADE_CLOSED" => {
                    business("ACQ.TRADE_HAS_CLOSE", "the trade is closed")
                }
                Some(known) if known.total_fen == total && known.buyer == buyer => Reply::Ok(
                    json!({ "code": "10000", "msg": "Success", "out_trade_no": out_trade_no, "trade_no": known.trade_no }),
                ),
                Some(_) => business(
                    "ACQ.CONTEXT_INCONSISTENT",
                    "the same out_trade_no with other parameters",
                ),
                None => {
                    let trade_no = format!("2026{}", &digits(&new_token())[..24]);
                    all.insert(
                        key,
                        Trade {
                            trade_no: trade_no.clone(),
                            total_fen: total,
                            subject: subject.to_owned(),
                            buyer,
                            notify_url,
                            status: "WAIT_BUYER_PAY",
                            created: now,
                            paid: None,
                            refunds: BTreeMap::new(),
                        },
                    );
                    Reply::Ok(
                        json!({ "code": "10000", "msg": "Success", "out_trade_no": out_trade_no, "trade_no": trade_no }),
                    )
                }
            }
        }
        "alipay.trade.query" => match all.get(&key) {
            None => business("ACQ.TRADE_NOT_EXIST", "no such trade"),
            Some(trade) => Reply::Ok(json!({
                "code": "10000", "msg": "Success", "out_trade_no": out_trade_no,
                "trade_no": trade.trade_no, "trade_status": trade.status,
                "total_amount": yuan(trade.total_fen), trade.buyer.0: trade.buyer.1,
                "send_pay_date": trade.paid.map(china_text),
            })),
        },
        "alipay.trade.close" => match all.get_mut(&key) {
            None => business("ACQ.TRADE_NOT_EXIST", "no such trade"),
            Some(trade) if trade.status != "WAIT_BUYER_PAY" => {
                business("ACQ.TRADE_STATUS_ERROR", "the trade can not be closed")
            }
            Some(trade) => {
                trade.status = "TRADE_CLOSED";
                Reply::Ok(
                    json!({ "code": "10000", "msg": "Success", "out_trade_no": out_trade_no, "trade_no": trade.trade_no }),
                )
            }
        },
        "alipay.trade.refund" => {
            let request_no = biz["out_request_no"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let amount = biz["refund_amount"].as_str().and_then(fen_of);
            match (all.get_mut(&key), amount) {
                (None, _) => business("ACQ.TRADE_NOT_EXIST", "no such trade"),
                (_, None) => business("ACQ.INVALID_PARAMETER", "refund_amount"),
                (Some(trade), _) if trade.status != "TRADE_SUCCESS" => {
                    business("ACQ.TRADE_STATUS_ERROR", "the trade is not paid")
                }
                (Some(trade), Some(amount)) => {
                    let known = trade.refunds.get(&request_no).copied();
                    let fresh = known.is_none();
                    if request_no.is_empty()
                        || (fresh && trade.refunded() + amount > trade.total_fen)
                    {
                        return Some(business(
                            "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL",
                            "more than is left to refund",
                        ));
                    }
                    let refund = known.unwrap_or(TradeRefund {
                        fen: amount,
                        at: now,
                    });
                    trade.refunds.insert(request_no.clone(), refund);
                    // Refunded whole, the trade is over, as Alipay closes it (and refuses any
                    // refund of it since, its own again included).
                    if trade.refunded() >= trade.total_fen {
                        trade.status = "TRADE_CLOSED";
                    }
                    Reply::Ok(json!({
                        "code": "10000", "msg": "Success", "out_trade_no": out_trade_no,
                        "trade_no": trade.trade_no, "refund_fee": yuan(trade.refunded()),
                        "gmt_refund_pay": china_text(refund.at),
                        "fund_change": if fresh { "Y" } else { "N" },
                    }))
                }
            }
        }
        "alipay.trade.fastpay.refund.query" => {
            let request_no = biz["out_request_no"].as_str().unwrap_or_default();
            match all.get(&key) {
                None => business("ACQ.TRADE_NOT_EXIST", "no such trade"),
                Some(trade) => {
                    let mut reply = json!({
                        "code": "10000", "msg": "Success", "out_trade_no": out_trade_no,
                        "trade_no": trade.trade_no, "out_request_no": request_no,
                    });
                    // No such refund: a success without a status, as Alipay answers.
                    if let Some(refund) = trade.refunds.get(request_no) {
                        reply["refund_amount"] = json!(yuan(refund.fen));
                        reply["total_amount"] = json!(yuan(trade.total_fen));
                        reply["refund_status"] = json!("REFUND_SUCCESS");
                        reply["gmt_refund_pay"] = json!(china_text(refund.at));
                    }
                    Reply::Ok(reply)
                }
            }
        }
        _ => return None,
    };
    Some(reply)
}

/// Digits of `text`'s bytes.
fn digits(text: &str) -> String {
    text.bytes().map(|b| char::from(b'0' + b % 10)).collect()
}

/// After a refund the gateway answered: the notification of it, if the trade has a URL.
pub(crate) fn refund_notification(
    emulator: &Arc<Emulator>,
    trades: &Arc<Trades>,
    params: &BTreeMap<String, String>,
) {
    let biz: Value = params
        .get("biz_content")
        .and_then(|b| serde_json::from_str(b).ok())
        .unwrap_or(Value::Null);
    let app_id = params.get("app_id").cloned().unwrap_or_default();
    let key = (
        app_id.clone(),
        biz["out_trade_no"].as_str().unwrap_or_default().to_owned(),
    );
    let Some(trade) = lock(&trades.trades).get(&key).cloned() else {
        return;
    };
    let request_no = biz["out_request_no"].as_str().unwrap_or_default();
    let Some(refund) = trade.refunds.get(request_no) else {
        return;
    };
    let refunded = trade.refunded();
    let at = china_text(refund.at);
    let mut form = base_form(&app_id, &key.1, &trade);
    let full = refunded >= trade.total_fen;
    form.insert(
        "trade_status".into(),
        if full {
            "TRADE_CLOSED"
        } else {
            "TRADE_SUCCESS"
        }
        .into(),
    );
    form.insert("refund_fee".into(), yuan(refunded));
    form.insert("gmt_refund".into(), at.clone());
    form.insert("out_biz_no".into(), request_no.to_owned());
    if full {
        form.insert("gmt_close".into(), at);
    }
    send(emulator, trades, &trade.notify_url, form, 0);
}

/// The parameters every notification of `trade` carries.
fn base_form(app_id: &str, out_trade_no: &str, trade: &Trade) -> BTreeMap<String, String> {
    let mut form = BTreeMap::new();
    for (k, v) in [
        ("notify_time", now_text()),
        ("notify_type", "trade_status_sync".to_owned()),
        ("notify_id", new_token()),
        ("app_id", app_id.to_owned()),
        ("auth_app_id", app_id.to_owned()),
        ("charset", "utf-8".to_owned()),
        ("version", "1.0".to_owned()),
        ("sign_type", "RSA2".to_owned()),
        ("trade_no", trade.trade_no.clone()),
        ("out_trade_no", out_trade_no.to_owned()),
        (trade.buyer.0, trade.buyer.1.clone()),
        ("total_amount", yuan(trade.total_fen)),
        ("receipt_amount", yuan(trade.total_fen)),
        ("buyer_pay_amount", yuan(trade.total_fen)),
        ("subject", trade.subject.clone()),
        ("gmt_create", china_text(trade.created)),
        (
            "gmt_payment",
            trade.paid.map(china_text).unwrap_or_default(),
        ),
        (
            "fund_bill_list",
            format!(
                r#"[{{"amount":"{}","fundChannel":"ALIPAYACCOUNT"}}]"#,
                yuan(trade.total_fen)
            ),
        ),
    ] {
        if !v.is_empty() {
            form.insert(k.to_owned(), v);
        }
    }
    form
}

/// Signs a notification form by the V1 rule: every parameter but `sign` and `sign_type`,
/// sorted, `k=v` joined with `&`, SHA256withRSA with the emulator's Alipay key.
fn signed_form(key: &RsaPrivateKey, mut form: BTreeMap<String, String>) -> String {
    let content = form
        .iter()
        .filter(|(k, v)| *k != "sign" && *k != "sign_type" && !v.is_empty())
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let signature = SigningKey::<Sha256>::new(key.clone()).sign(content.as_bytes());
    form.insert("sign".into(), STANDARD.encode(signature.to_bytes()));
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form.iter())
        .finish()
}

/// Posts the notification in the background until it is answered exactly `success`.
fn send(
    emulator: &Arc<Emulator>,
    trades: &Arc<Trades>,
    url: &str,
    form: BTreeMap<String, String>,
    duplicates: u32,
) {
    let Some(key) = emulator.alipay_key.get().cloned() else {
        return;
    };
    let body = signed_form(&key, form);
    for _ in 0..=duplicates.min(50) {
        let (trades, url, body) = (Arc::clone(trades), url.to_owned(), body.clone());
        let retries = emulator.options.pay_notify_retries.clone();
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            for wait in std::iter::once(Duration::ZERO).chain(retries) {
                tokio::time::sleep(wait).await;
                let answer = client
                    .post(&url)
                    .header(
                        "content-type",
                        "application/x-www-form-urlencoded; charset=utf-8",
                    )
                    .body(body.clone())
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await;
                let (status, text) = match answer {
                    Ok(answer) => {
                        let status = answer.status().as_u16();
                        (status, answer.text().await.unwrap_or_default())
                    }
                    Err(_) => (0, String::new()),
                };
                lock(&trades.notifications)
                    .push(json!({ "url": url, "status": status, "answer": text, "body": body }));
                if text == "success" {
                    return;
                }
            }
        });
    }
}

#[derive(Deserialize)]
pub(crate) struct PayBody {
    app_id: String,
    out_trade_no: String,
    #[serde(default)]
    notify: Option<String>,
    #[serde(default)]
    duplicates: u32,
}

fn control_error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

/// The user pays a trade: it becomes `TRADE_SUCCESS`, and its notification goes out.
pub(crate) async fn pay(
    State(emulator): State<Arc<Emulator>>,
    Extension(trades): Extension<Arc<Trades>>,
    axum::Json(body): axum::Json<PayBody>,
) -> Response {
    if crate::alipay::public_key_pem(&emulator).await.is_none() {
        return control_error(StatusCode::INTERNAL_SERVER_ERROR, "no key");
    }
    let key = (body.app_id.clone(), body.out_trade_no.clone());
    let trade = {
        let mut all = lock(&trades.trades);
        let Some(trade) = all.get_mut(&key) else {
            return control_error(StatusCode::NOT_FOUND, "no such trade");
        };
        if trade.status != "WAIT_BUYER_PAY" {
            return control_error(StatusCode::BAD_REQUEST, "the trade is not payable");
        }
        trade.status = "TRADE_SUCCESS";
        trade.paid = Some(emulator.calendar.now());
        trade.clone()
    };
    if body.notify.as_deref() != Some("drop") {
        let mut form = base_form(&body.app_id, &body.out_trade_no, &trade);
        form.insert("trade_status".into(), "TRADE_SUCCESS".into());
        send(&emulator, &trades, &trade.notify_url, form, body.duplicates);
    }
    axum::Json(json!({ "trade_no": trade.trade_no })).into_response()
}

#[derive(Deserialize)]
pub(crate) struct ForgeBody {
    params: BTreeMap<String, String>,
}

/// Any form, signed as Alipay signs its notifications: a merchant's checks beyond the
/// signature (app id, amount, order) can be tested one by one.
pub(crate) async fn forge(
    State(emulator): State<Arc<Emulator>>,
    axum::Json(body): axum::Json<ForgeBody>,
) -> Response {
    if crate::alipay::public_key_pem(&emulator).await.is_none() {
        return control_error(StatusCode::INTERNAL_SERVER_ERROR, "no key");
    }
    let Some(key) = emulator.alipay_key.get() else {
        return control_error(StatusCode::INTERNAL_SERVER_ERROR, "no key");
    };
    axum::Json(json!({ "body": signed_form(key, body.params) })).into_response()
}

pub(crate) async fn notifications(Extension(trades): Extension<Arc<Trades>>) -> Response {
    axum::Json(json!({ "items": *lock(&trades.notifications) })).into_response()
}

#[derive(Deserialize)]
pub(crate) struct Faults {
    #[serde(default)]
    lose_refund_answers: u32,
}

/// Sets faults for the next requests.
pub(crate) async fn faults(
    Extension(trades): Extension<Arc<Trades>>,
    axum::Json(faults): axum::Json<Faults>,
) -> Response {
    *lock(&trades.lost_refund_answers) = faults.lose_refund_answers;
    axum::Json(json!({})).into_response()
}

/// Whether the answer (and the notification) of a refund just made is lost, by
/// [`faults`].
pub(crate) fn refund_answer_lost(trades: &Trades) -> bool {
    let mut lost = lock(&trades.lost_refund_answers);
    let lose = *lost > 0;
    *lost = lost.saturating_sub(1);
    lose
}
