//! WeChat Pay's daily trade bill (交易账单), as a merchant downloads it to reconcile: the
//! `tradebill` request (answered, signed, with the file's SHA-1 and a download URL), the file
//! itself (not signed, gzipped when asked), and the bill's text, made from the merchant's orders
//! and refunds of one China-time day on the payment calendar. Also owns WeChat Pay's control of
//! that calendar (`/emulator/wechatpay/clock`, so that a test can reach the day after its
//! payments; the calendar is [`crate::calendar`]'s, shared with Alipay) and the
//! per-day bill settings (`/emulator/wechatpay/bill`: rows added, left out or with another
//! amount), which make the differences a reconciliation must find.
//!
//! The text, `\n` line ends: the header line, one line per row (27 fields, each prefixed with a
//! backtick, joined by commas), sorted by time, then the summary's header and its line. Amounts
//! are yuan with two decimals; the fee (手续费) is 0.6 % of a payment, in yuan with five.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use sha1::{Digest, Sha1};
use time::macros::{format_description, offset, time};
use time::{Date, OffsetDateTime};

use super::{Merchant, Pay, Signed, error, lock, platform_key, signed};
use crate::calendar::{self, bill_date};
use crate::state::{Emulator, new_token};

/// How long a download URL's token stays valid (WeChat Pay: 30 seconds).
const TOKEN_TTL: Duration = Duration::from_secs(30);
/// The most rows `extra_count` may generate.
const MAX_GENERATED: u32 = 1_000_000;
/// The fee of one fen of payment, in 1/100000 yuan (0.6 %).
const FEE_PER_FEN: i64 = 6;

const HEADER: &str = "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注";
const SUMMARY_HEADER: &str =
    "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额";

/// The bill settings tests asked for, and the bill files made and not yet expired.
#[derive(Default)]
pub(super) struct Bills {
    /// By merchant and bill date; a new setting replaces the old.
    settings: Mutex<HashMap<(String, Date), Setting>>,
    /// By download token.
    files: Mutex<HashMap<String, BillFile>>,
}

struct BillFile {
    mchid: String,
    bytes: Bytes,
    made: Instant,
}

impl Bills {
    /// Keeps a bill file for `mchid` under a new token, dropping the expired ones.
    fn keep(&self, mchid: &str, bytes: Bytes, at: Instant) -> String {
        let token = new_token();
        let mut files = lock(&self.files);
        files.retain(|_, file| at.saturating_duration_since(file.made) <= TOKEN_TTL);
        files.insert(
            token.clone(),
            BillFile {
                mchid: mchid.to_owned(),
                bytes,
                made: at,
            },
        );
        token
    }

    /// The file under `token`, if `mchid` asked for it no more than [`TOKEN_TTL`] before `at`.
    fn file(&self, token: &str, mchid: &str, at: Instant) -> Option<Bytes> {
        let files = lock(&self.files);
        let file = files.get(token)?;
        let fresh = at.saturating_duration_since(file.made) <= TOKEN_TTL;
        (fresh && file.mchid == mchid).then(|| file.bytes.clone())
    }
}

/// What a test asked to be made wrong in one merchant's bill of one day.
#[derive(Clone, Default)]
struct Setting {
    extra: Vec<ExtraRow>,
    omit: HashSet<String>,
    amounts: HashMap<String, i64>,
    extra_count: u32,
    extra_amount_fen: i64,
}

#[derive(Clone, Deserialize)]
struct ExtraRow {
    out_trade_no: String,
    transaction_id: String,
    amount_fen: i64,
    /// `SUCCESS` (the default) or `REFUND`.
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    out_refund_no: Option<String>,
    #[serde(default)]
    refund_id: Option<String>,
    #[serde(default)]
    refund_fen: Option<i64>,
    #[serde(default)]
    appid: String,
    #[serde(default)]
    openid: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    attach: String,
}

#[derive(Deserialize)]
pub(super) struct SettingBody {
    mchid: String,
    bill_date: String,
    #[serde(default)]
    extra: Vec<ExtraRow>,
    #[serde(default)]
    omit: Vec<String>,
    #[serde(default)]
    amounts: HashMap<String, i64>,
    #[serde(default)]
    extra_count: u32,
    #[serde(default = "one_fen")]
    extra_amount_fen: i64,
}

fn one_fen() -> i64 {
    1
}

/// Sets what one merchant's bill of one day gets wrong: rows added (`extra`, `extra_count`),
/// orders left out (`omit`) and amounts changed (`amounts`). Replaces any earlier setting.
pub(super) async fn control(
    Extension(pay): Extension<Arc<Pay>>,
    axum::Json(body): axum::Json<SettingBody>,
) -> Response {
    let Some(date) = bill_date(&body.bill_date) else {
        return error(
            StatusCode::BAD_REQUEST,
            "PARAM_ERROR",
            "bill_date is not YYYY-MM-DD",
        );
    };
    let refunds_complete = body.extra.iter().all(|row| match row.state.as_deref() {
        None | Some("SUCCESS") => true,
        Some("REFUND") => {
            row.out_refund_no.is_some() && row.refund_id.is_some() && row.refund_fen.is_some()
        }
        Some(_) => false,
    });
    if !refunds_complete || body.extra_count > MAX_GENERATED {
        return error(
            StatusCode::BAD_REQUEST,
            "PARAM_ERROR",
            "an extra row's state is SUCCESS, or REFUND with out_refund_no, refund_id and refund_fen; extra_count is at most 1000000",
        );
    }
    if !lock(&pay.merchants).contains_key(&body.mchid) {
        return error(
            StatusCode::NOT_FOUND,
            "RESOURCE_NOT_EXISTS",
            "no such merchant",
        );
    }
    let setting = Setting {
        extra: body.extra,
        omit: body.omit.into_iter().collect(),
        amounts: body.amounts,
        extra_count: body.extra_count,
        extra_amount_fen: body.extra_amount_fen,
    };
    lock(&pay.bills.settings).insert((body.mchid, date), setting);
    axum::Json(json!({})).into_response()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum BillType {
    All,
    Success,
    Refund,
}

/// The query's pairs (the last one wins).
fn query_pairs(uri: &Uri) -> HashMap<String, String> {
    form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

/// `GET /wechatpay/v3/bill/tradebill`: makes the bill file of a day, keeps it for 30 seconds
/// under a token, and answers its SHA-1 and download URL.
pub(super) async fn trade_bill(
    State(emulator): State<Arc<Emulator>>,
    uri: Uri,
    headers: HeaderMap,
    Signed { pay, mchid, .. }: Signed,
) -> Response {
    let query = query_pairs(&uri);
    let date = query.get("bill_date").and_then(|d| bill_date(d));
    let bill_type = match query.get("bill_type").map(String::as_str) {
        None | Some("ALL") => Some(BillType::All),
        Some("SUCCESS") => Some(BillType::Success),
        Some("REFUND") => Some(BillType::Refund),
        Some(_) => None,
    };
    let gzip = match query.get("tar_type").map(String::as_str) {
        None => Some(false),
        Some("GZIP") => Some(true),
        Some(_) => None,
    };
    let (Some(date), Some(bill_type), Some(gzip)) = (date, bill_type, gzip) else {
        return error(
            StatusCode::BAD_REQUEST,
            "PARAM_ERROR",
            "bill_date is YYYY-MM-DD, bill_type ALL, SUCCESS or REFUND, tar_type GZIP",
        );
    };
    let today = emulator.calendar.now().date();
    if date >= today {
        return error(
            StatusCode::BAD_REQUEST,
            "NO_STATEMENT_EXIST",
            "the bill of a day is made after 10:00 the next day",
        );
    }
    if date < calendar::three_months_before(today) {
        return error(
            StatusCode::BAD_REQUEST,
            "NO_STATEMENT_EXIST",
            "only the bills of the last three months can be downloaded",
        );
    }
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return error(StatusCode::BAD_REQUEST, "PARAM_ERROR", "no Host header");
    };
    let download_url = format!("http://{host}/wechatpay/v3/billdownload/file?token=");
    let Some(key) = platform_key(&emulator).await else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "SYSTEM_ERROR", "no key");
    };
    let rows = {
        let merchants = lock(&pay.merchants);
        let Some(merchant) = merchants.get(&mchid) else {
            return error(StatusCode::UNAUTHORIZED, "SIGN_ERROR", "no such merchant");
        };
        merchant_rows(merchant, date)
    };
    let setting = lock(&pay.bills.settings)
        .get(&(mchid.clone(), date))
        .cloned()
        .unwrap_or_default();
    // A bill may have a hundred thousand rows: made, hashed and zipped off the async workers.
    let made = tokio::task::spawn_blocking({
        let mchid = mchid.clone();
        move || {
            let rows = adjusted(rows, &setting, date, bill_type);
            let text = render(&mchid, &rows);
            let hash = Sha1::digest(text.as_bytes()).iter().fold(
                String::with_capacity(40),
                |mut hex, byte| {
                    let _ = write!(hex, "{byte:02x}");
                    hex
                },
            );
            let bytes = if gzip {
                let mut encoder =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                encoder.write_all(text.as_bytes()).ok()?;
                encoder.finish().ok()?
            } else {
                text.into_bytes()
            };
            Some((hash, bytes))
        }
    })
    .await;
    let Ok(Some((hash, bytes))) = made else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "SYSTEM_ERROR",
            "could not make the bill",
        );
    };
    let token = pay.bills.keep(&mchid, Bytes::from(bytes), Instant::now());
    let value = json!({
        "hash_type": "SHA1",
        "hash_value": hash,
        "download_url": format!("{download_url}{token}"),
    });
    signed(key, StatusCode::OK, value.to_string())
}

/// `GET /wechatpay/v3/billdownload/file?token=`: the bill file, to the merchant that asked for
/// it, within 30 seconds. Not signed: the merchant checks the SHA-1 it was given.
pub(super) async fn download(uri: Uri, Signed { pay, mchid, .. }: Signed) -> Response {
    let query = query_pairs(&uri);
    let Some(token) = query.get("token") else {
        return error(StatusCode::BAD_REQUEST, "PARAM_ERROR", "no token");
    };
    match pay.bills.file(token, &mchid, Instant::now()) {
        Some(bytes) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/octet-stream")],
            bytes,
        )
            .into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "RESOURCE_NOT_EXISTS",
            "the token is unknown, expired, or another merchant's",
        ),
    }
}

/// One line of the bill: a payment, or (with `refund`) a refund of it.
struct Row {
    time: OffsetDateTime,
    appid: String,
    transaction_id: String,
    out_trade_no: String,
    openid: String,
    /// The order's amount, in fen.
    total: i64,
    refund: Option<RefundPart>,
    description: String,
    attach: String,
}

impl Row {
    fn out_refund_no(&self) -> Option<&str> {
        self.refund.as_ref().map(|r| r.out_refund_no.as_str())
    }
}

struct RefundPart {
    refund_id: String,
    out_refund_no: String,
    /// In fen.
    amount: i64,
}

/// The merchant's payments and refunds that succeeded on `date` (China time).
fn merchant_rows(merchant: &Merchant, date: Date) -> Vec<Row> {
    let on_date = |at: OffsetDateTime| at.to_offset(offset!(+8)).date() == date;
    let payments = merchant.orders.iter().filter_map(|(no, order)| {
        let time = order.success_time.filter(|t| on_date(*t))?;
        Some(Row {
            time,
            appid: order.appid.clone(),
            transaction_id: order.transaction_id.clone().unwrap_or_default(),
            out_trade_no: no.clone(),
            openid: order.openid.clone(),
            total: order.total,
            refund: None,
            description: order.description.clone(),
            attach: order.attach.clone().unwrap_or_default(),
        })
    });
    let refunds = merchant.refunds.iter().filter_map(|(no, refund)| {
        if !on_date(refund.success_time) {
            return None;
        }
        let order = merchant.orders.get(&refund.out_trade_no)?;
        Some(Row {
            time: refund.success_time,
            appid: order.appid.clone(),
            transaction_id: order.transaction_id.clone().unwrap_or_default(),
            out_trade_no: refund.out_trade_no.clone(),
            openid: order.openid.clone(),
            total: order.total,
            refund: Some(RefundPart {
                refund_id: refund.refund_id.clone(),
                out_refund_no: no.clone(),
                amount: refund.refund,
            }),
            description: order.description.clone(),
            attach: order.attach.clone().unwrap_or_default(),
        })
    });
    payments.chain(refunds).collect()
}

/// The rows with the day's setting applied, of the bill type asked, sorted by time.
fn adjusted(mut rows: Vec<Row>, setting: &Setting, date: Date, bill_type: BillType) -> Vec<Row> {
    let noon = date.with_time(time!(12:00)).assume_offset(offset!(+8));
    rows.extend(setting.extra.iter().map(|extra| Row {
        time: noon,
        appid: extra.appid.clone(),
        transaction_id: extra.transaction_id.clone(),
        out_trade_no: extra.out_trade_no.clone(),
        openid: extra.openid.clone(),
        total: extra.amount_fen,
        refund: (extra.state.as_deref() == Some("REFUND")).then(|| RefundPart {
            refund_id: extra.refund_id.clone().unwrap_or_default(),
            out_refund_no: extra.out_refund_no.clone().unwrap_or_default(),
            amount: extra.refund_fen.unwrap_or_default(),
        }),
        description: extra.description.clone(),
        attach: extra.attach.clone(),
    }));
    rows.extend((1..=setting.extra_count).map(|i| Row {
        time: noon,
        appid: String::new(),
        transaction_id: format!("4200000000{i:018}"),
        out_trade_no: format!("GEN{i}"),
        openid: String::new(),
        total: setting.extra_amount_fen,
        refund: None,
        description: String::new(),
        attach: String::new(),
    }));
    rows.retain(|row| {
        let wanted = match bill_type {
            BillType::All => true,
            BillType::Success => row.refund.is_none(),
            BillType::Refund => row.refund.is_some(),
        };
        wanted && !setting.omit.contains(&row.out_trade_no)
    });
    for row in &mut rows {
        if row.refund.is_none()
            && let Some(amount) = setting.amounts.get(&row.out_trade_no)
        {
            row.total = *amount;
        }
    }
    rows.sort_by(|a, b| {
        a.time
            .cmp(&b.time)
            .then(a.refund.is_some().cmp(&b.refund.is_some()))
            .then_with(|| a.out_trade_no.cmp(&b.out_trade_no))
            .then_with(|| a.out_refund_no().cmp(&b.out_refund_no()))
    });
    rows
}

/// Fen as yuan with two decimals: 12345 → `123.45`.
fn yuan(fen: i64) -> String {
    let sign = if fen < 0 { "-" } else { "" };
    let fen = fen.unsigned_abs();
    format!("{sign}{}.{:02}", fen / 100, fen % 100)
}

/// 1/100000 yuan as yuan with five decimals: 6 → `0.00006`.
fn yuan5(units: i64) -> String {
    let sign = if units < 0 { "-" } else { "" };
    let units = units.unsigned_abs();
    format!("{sign}{}.{:05}", units / 100_000, units % 100_000)
}

/// A merchant's text made safe for a comma-separated line: commas become `，`, line breaks
/// spaces.
fn text_field(text: &str) -> String {
    text.replace(',', "，").replace(['\r', '\n'], " ")
}

/// Appends `fields` as one bill line: each prefixed with a backtick, joined by commas.
fn push_line(out: &mut String, fields: &[&str]) {
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('`');
        out.push_str(field);
    }
    out.push('\n');
}

/// The bill's text: header, rows, summary.
fn render(mchid: &str, rows: &[Row]) -> String {
    let mut out = String::with_capacity(300 * (rows.len() + 4));
    out.push_str(HEADER);
    out.push('\n');
    let (mut paid, mut refunded, mut fees) = (0i64, 0i64, 0i64);
    for row in rows {
        let time = row
            .time
            .to_offset(offset!(+8))
            .format(format_description!(
                "[year]-[month]-[day] [hour]:[minute]:[second]"
            ))
            .unwrap_or_default();
        let (state, refund_id, out_refund_no, refund, kind, status, fee) = match &row.refund {
            None => {
                let fee = row.total * FEE_PER_FEN;
                paid += row.total;
                fees += fee;
                ("SUCCESS", "0", "0", 0, "", "", fee)
            }
            Some(r) => {
                refunded += r.amount;
                let (id, no) = (r.refund_id.as_str(), r.out_refund_no.as_str());
                ("REFUND", id, no, r.amount, "ORIGINAL", "SUCCESS", 0)
            }
        };
        let (total, refund, fee) = (yuan(row.total), yuan(refund), yuan5(fee));
        let (description, attach) = (text_field(&row.description), text_field(&row.attach));
        push_line(
            &mut out,
            &[
                &time,
                &row.appid,
                mchid,
                "0",
                "",
                &row.transaction_id,
                &row.out_trade_no,
                &row.openid,
                "JSAPI",
                state,
                "OTHERS",
                "CNY",
                &total,
                "0.00",
                refund_id,
                out_refund_no,
                &refund,
                "0.00",
                kind,
                status,
                &description,
                &attach,
                &fee,
                "0.60%",
                &total,
                &refund,
                "",
            ],
        );
    }
    out.push_str(SUMMARY_HEADER);
    out.push('\n');
    let (count, paid, refunded, fees) = (
        rows.len().to_string(),
        yuan(paid),
        yuan(refunded),
        yuan5(fees),
    );
    push_line(
        &mut out,
        &[&count, &paid, &refunded, "0.00", &fees, &paid, &refunded],
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_yuan() {
        assert_eq!(yuan(1), "0.01");
        assert_eq!(yuan(12345), "123.45");
        assert_eq!(yuan(-250), "-2.50");
        assert_eq!(yuan5(6), "0.00006");
        assert_eq!(yuan5(74_076), "0.74076");
    }

    #[test]
    fn a_token_is_one_merchants_for_thirty_seconds() {
        let bills = Bills::default();
        let made = Instant::now();
        let token = bills.keep("1900000109", Bytes::from_static(b"bill"), made);
        let later = |secs| made + Duration::from_secs(secs);
        assert_eq!(
            bills.file(&token, "1900000109", later(29)).as_deref(),
            Some(&b"bill"[..])
        );
        assert!(bills.file(&token, "1900000110", later(1)).is_none());
        assert!(bills.file(&token, "1900000109", later(31)).is_none());
        assert!(bills.file("no-such-token", "1900000109", made).is_none());
        // An expired file goes when the next is kept.
        bills.keep("1900000109", Bytes::new(), later(31));
        assert_eq!(lock(&bills.files).len(), 1);
    }

    #[test]
    fn text_fields_keep_the_line_whole() {
        assert_eq!(text_field("tea, hot\nlarge"), "tea， hot large");
    }
}
