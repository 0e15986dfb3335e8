//! Alipay's daily trade bill (业务明细), as a merchant downloads it to reconcile: the gateway
//! method `alipay.data.dataservice.bill.downloadurl.query` (behind the gateway's signature
//! check, answered signed with a download URL), the file itself (`/alipay/billdownload`, a plain
//! unsigned link valid for 30 seconds: a zip of two GBK CSV files), and the bill's text, made
//! from the app's trades paid and refunds done on one China-time day of the payment calendar.
//! Also Alipay's control of that calendar (`/emulator/alipay/clock`, the same setting as
//! `/emulator/wechatpay/clock`) and the per-day bill settings (`/emulator/alipay/bill`: rows
//! added, left out or with another amount), which make the differences a reconciliation must
//! find.
//!
//! The detail file (`{app_id}_{yyyymmdd}_业务明细.csv`), `\r\n` line ends: `#` lines naming the
//! account and the day, the column names, one line per row (25 fields, each followed by a tab,
//! joined by commas), sorted by completion time, then the totals and the export time. Payment
//! rows are 交易 with the trade's amount, refund rows 退款 with minus the refund. Amounts are
//! yuan with two decimals.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use time::macros::{offset, time};
use time::{Date, OffsetDateTime};

use super::{Trade, Trades, china_text, control_error, lock};
use crate::alipay::Reply;
use crate::calendar::{bill_date, bill_ready};
use crate::state::{Emulator, Platform, new_token};

/// The gateway method that answers a bill's download URL.
pub(crate) const METHOD: &str = "alipay.data.dataservice.bill.downloadurl.query";
/// How long a download URL stays valid (Alipay: 30 seconds).
const TOKEN_TTL: Duration = Duration::from_secs(30);
/// The most rows `extra_count` may generate.
const MAX_GENERATED: u32 = 1_000_000;

const COLUMNS: &str = "支付宝交易号,商户订单号,业务类型,商品名称,创建时间,完成时间,门店编号,门店名称,操作员,终端号,对方账户,订单金额（元）,商家实收（元）,支付宝红包（元）,集分宝（元）,支付宝优惠（元）,商家优惠（元）,券核销金额（元）,券名称,商家红包消费金额（元）,卡消费金额（元）,退款批次号/请求号,服务费（元）,分润（元）,备注";
const LIST_START: &str = "#-----------------------------------------业务明细列表----------------------------------------";
const LIST_END: &str = "#-----------------------------------------业务明细列表结束------------------------------------";
const SUMMARY_COLUMNS: &str = "门店编号,门店名称,交易订单总笔数,退款订单总笔数,订单金额（元）,商家实收（元）,支付宝优惠（元）,商家优惠（元）,卡消费金额（元）,服务费（元）,分润（元）,实收净额（元）";
const SUMMARY_START: &str = "#-----------------------------------------业务汇总列表----------------------------------------";
const SUMMARY_END: &str = "#-----------------------------------------业务汇总列表结束------------------------------------";

/// The bill settings tests asked for, and the bill files made and not yet expired.
#[derive(Default)]
pub(super) struct Bills {
    /// By app and bill date; a new setting replaces the old.
    settings: Mutex<HashMap<(String, Date), Setting>>,
    /// By download token.
    files: Mutex<HashMap<String, BillFile>>,
}

struct BillFile {
    bytes: Bytes,
    made: Instant,
}

impl Bills {
    /// Keeps a bill file under a new token, dropping the expired ones.
    fn keep(&self, bytes: Bytes, at: Instant) -> String {
        let token = new_token();
        let mut files = lock(&self.files);
        files.retain(|_, file| at.saturating_duration_since(file.made) <= TOKEN_TTL);
        files.insert(token.clone(), BillFile { bytes, made: at });
        token
    }

    /// The file under `token`, if it was made no more than [`TOKEN_TTL`] before `at`.
    fn file(&self, token: &str, at: Instant) -> Option<Bytes> {
        let files = lock(&self.files);
        let file = files.get(token)?;
        (at.saturating_duration_since(file.made) <= TOKEN_TTL).then(|| file.bytes.clone())
    }
}

/// What a test asked to be made wrong in one app's bill of one day.
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
    trade_no: String,
    /// The trade's amount; a payment row's 订单金额 and 商家实收.
    amount_fen: i64,
    /// `payment` (the default) or `refund`.
    #[serde(default)]
    kind: Option<String>,
    /// A refund row's 退款批次号/请求号.
    #[serde(default)]
    out_request_no: Option<String>,
    /// A refund row's refund (its amounts are minus this).
    #[serde(default)]
    refund_fen: Option<i64>,
    #[serde(default)]
    subject: String,
    #[serde(default)]
    buyer: String,
}

#[derive(Deserialize)]
pub(crate) struct SettingBody {
    app_id: String,
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

/// `POST /emulator/alipay/bill`: sets what one app's bill of one day gets wrong: rows added
/// (`extra`, `extra_count`), orders left out (`omit`) and amounts changed (`amounts`). Replaces
/// any earlier setting of that app and day.
pub(crate) async fn control(
    State(emulator): State<Arc<Emulator>>,
    Extension(trades): Extension<Arc<Trades>>,
    axum::Json(body): axum::Json<SettingBody>,
) -> Response {
    let Some(date) = bill_date(&body.bill_date) else {
        return control_error(StatusCode::BAD_REQUEST, "bill_date is not YYYY-MM-DD");
    };
    let rows_complete = body.extra.iter().all(|row| match row.kind.as_deref() {
        None | Some("payment") => true,
        Some("refund") => row.out_request_no.is_some() && row.refund_fen.is_some(),
        Some(_) => false,
    });
    if !rows_complete || body.extra_count > MAX_GENERATED {
        return control_error(
            StatusCode::BAD_REQUEST,
            "an extra row's kind is payment, or refund with out_request_no and refund_fen; extra_count is at most 1000000",
        );
    }
    let known = emulator
        .state()
        .apps
        .contains_key(&(Platform::Alipay, body.app_id.clone()));
    if !known {
        return control_error(StatusCode::NOT_FOUND, "no such Alipay app");
    }
    let setting = Setting {
        extra: body.extra,
        omit: body.omit.into_iter().collect(),
        amounts: body.amounts,
        extra_count: body.extra_count,
        extra_amount_fen: body.extra_amount_fen,
    };
    lock(&trades.bills.settings).insert((body.app_id, date), setting);
    axum::Json(json!({})).into_response()
}

/// A business failure in the method's own response object, as Alipay answers this method's.
fn failure(sub_code: &str, sub_msg: &str) -> Reply {
    Reply::Ok(json!({
        "code": "40004", "msg": "Business Failed", "sub_code": sub_code, "sub_msg": sub_msg,
    }))
}

/// `alipay.data.dataservice.bill.downloadurl.query` (the request's signature already checked):
/// makes the bill of a day, keeps it for 30 seconds under a token, and answers its URL on
/// `host`, the emulator's address as the request named it.
pub(crate) async fn download_url(
    emulator: &Emulator,
    trades: &Trades,
    params: &BTreeMap<String, String>,
    host: Option<&str>,
) -> Reply {
    let biz: Value = params
        .get("biz_content")
        .and_then(|b| serde_json::from_str(b).ok())
        .unwrap_or(Value::Null);
    let date = match (biz["bill_type"].as_str(), biz["bill_date"].as_str()) {
        (Some("trade"), Some(date)) => bill_date(date),
        _ => None,
    };
    let Some(date) = date else {
        return failure(
            "ACQ.INVALID_PARAMETER",
            "参数有误 / bill_type is trade, bill_date YYYY-MM-DD",
        );
    };
    let now = emulator.calendar.now();
    if !bill_ready(date, now.date()) {
        return failure("isp.bill_not_exist", "账单不存在");
    }
    let Some(host) = host else {
        return failure("ACQ.SYSTEM_ERROR", "系统错误 / no Host header");
    };
    let app_id = params.get("app_id").cloned().unwrap_or_default();
    let rows = app_rows(&lock(&trades.trades), &app_id, date);
    let setting = lock(&trades.bills.settings)
        .get(&(app_id.clone(), date))
        .cloned()
        .unwrap_or_default();
    // A bill may have a hundred thousand rows: made, encoded and zipped off the async workers.
    let made = tokio::task::spawn_blocking(move || {
        let rows = adjusted(rows, &setting, date);
        let (detail, summary) = render(&app_id, date, &rows, now);
        zipped(&app_id, date, &detail, &summary)
    })
    .await;
    let Ok(Some(bytes)) = made else {
        return failure("ACQ.SYSTEM_ERROR", "系统错误 / could not make the bill");
    };
    let token = trades.bills.keep(Bytes::from(bytes), Instant::now());
    Reply::Ok(json!({
        "code": "10000", "msg": "Success",
        "bill_download_url": format!("http://{host}/alipay/billdownload?token={token}"),
    }))
}

/// `GET /alipay/billdownload?token=`: the bill's zip, to whoever has the link, within 30
/// seconds. Not signed, as Alipay's bill links are not.
pub(crate) async fn download(Extension(trades): Extension<Arc<Trades>>, uri: Uri) -> Response {
    let token = form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
        .find(|(key, _)| key == "token")
        .map(|(_, value)| value.into_owned());
    match token.and_then(|token| trades.bills.file(&token, Instant::now())) {
        Some(bytes) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/octet-stream")],
            bytes,
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "the bill link is unknown or has expired",
        )
            .into_response(),
    }
}

/// One line of the bill: a payment (交易) or a refund (退款).
struct Row {
    trade_no: String,
    out_trade_no: String,
    subject: String,
    created: OffsetDateTime,
    /// 完成时间: when it was paid, or refunded.
    done: OffsetDateTime,
    buyer: String,
    /// 订单金额 and 商家实收, in fen: the trade's amount, or minus the refund.
    amount: i64,
    /// A refund's `out_request_no`; `None` for a payment.
    out_request_no: Option<String>,
}

/// The app's trades paid and refunds done on `date` (China time).
fn app_rows(trades: &HashMap<(String, String), Trade>, app_id: &str, date: Date) -> Vec<Row> {
    let on_date = |at: OffsetDateTime| at.to_offset(offset!(+8)).date() == date;
    let mut rows = Vec::new();
    for ((app, out_trade_no), trade) in trades {
        if app != app_id {
            continue;
        }
        let row = |done, amount, out_request_no| Row {
            trade_no: trade.trade_no.clone(),
            out_trade_no: out_trade_no.clone(),
            subject: trade.subject.clone(),
            created: trade.created,
            done,
            buyer: trade.buyer.1.clone(),
            amount,
            out_request_no,
        };
        if let Some(paid) = trade.paid.filter(|at| on_date(*at)) {
            rows.push(row(paid, trade.total_fen, None));
        }
        for (request_no, refund) in &trade.refunds {
            if on_date(refund.at) {
                rows.push(row(refund.at, -refund.fen, Some(request_no.clone())));
            }
        }
    }
    rows
}

/// The rows with the day's setting applied, sorted by completion time (then payments before
/// refunds, then by number).
fn adjusted(mut rows: Vec<Row>, setting: &Setting, date: Date) -> Vec<Row> {
    let noon = date.with_time(time!(12:00)).assume_offset(offset!(+8));
    rows.extend(setting.extra.iter().map(|extra| {
        let refund = extra.kind.as_deref() == Some("refund");
        Row {
            trade_no: extra.trade_no.clone(),
            out_trade_no: extra.out_trade_no.clone(),
            subject: extra.subject.clone(),
            created: noon,
            done: noon,
            buyer: extra.buyer.clone(),
            amount: if refund {
                -extra.refund_fen.unwrap_or_default()
            } else {
                extra.amount_fen
            },
            out_request_no: refund.then(|| extra.out_request_no.clone().unwrap_or_default()),
        }
    }));
    let day = date.year() * 10_000 + i32::from(u8::from(date.month())) * 100;
    let day = day + i32::from(date.day());
    rows.extend((1..=setting.extra_count).map(|i| Row {
        trade_no: format!("{day}2200{i:016}"),
        out_trade_no: format!("GEN{i}"),
        subject: String::new(),
        created: noon,
        done: noon,
        buyer: String::new(),
        amount: setting.extra_amount_fen,
        out_request_no: None,
    }));
    rows.retain(|row| !setting.omit.contains(&row.out_trade_no));
    for row in &mut rows {
        if row.out_request_no.is_none()
            && let Some(amount) = setting.amounts.get(&row.out_trade_no)
        {
            row.amount = *amount;
        }
    }
    rows.sort_by(|a, b| {
        a.done
            .cmp(&b.done)
            .then(a.out_request_no.is_some().cmp(&b.out_request_no.is_some()))
            .then_with(|| a.out_trade_no.cmp(&b.out_trade_no))
            .then_with(|| a.out_request_no.cmp(&b.out_request_no))
    });
    rows
}

/// Fen as yuan with two decimals: 12345 → `123.45`, -50 → `-0.50`.
fn yuan(fen: i64) -> String {
    let sign = if fen < 0 { "-" } else { "" };
    let fen = fen.unsigned_abs();
    format!("{sign}{}.{:02}", fen / 100, fen % 100)
}

/// A merchant's text made safe for a field: commas, tabs and line breaks become spaces.
fn text_field(text: &str) -> String {
    text.replace([',', '\t', '\r', '\n'], " ")
}

/// `2026年12月02日 00:00:00`, China time.
fn chinese_time(at: OffsetDateTime) -> String {
    let at = at.to_offset(offset!(+8));
    format!(
        "{}年{:02}月{:02}日 {:02}:{:02}:{:02}",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

/// Appends `fields` as one bill line: each followed by a tab, joined by commas.
fn push_line(out: &mut String, fields: &[&str]) {
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(field);
        out.push('\t');
    }
    out.push_str("\r\n");
}

/// The `#` lines that open both files.
fn push_head(out: &mut String, title: &str, app_id: &str, date: Date) {
    let start = date.midnight().assume_offset(offset!(+8));
    let end = start + time::Duration::days(1);
    out.push_str(&format!(
        "#{title}\r\n#账号：[{app_id}]\r\n#起始日期：[{}]   终止日期：[{}]\r\n",
        chinese_time(start),
        chinese_time(end)
    ));
}

/// The two files' text: the detail (业务明细) and its summary (汇总), exported at `now`.
fn render(app_id: &str, date: Date, rows: &[Row], now: OffsetDateTime) -> (String, String) {
    let mut out = String::with_capacity(200 * (rows.len() + 10));
    push_head(&mut out, "支付宝业务明细查询", app_id, date);
    out.push_str(LIST_START);
    out.push_str("\r\n");
    out.push_str(COLUMNS);
    out.push_str("\r\n");
    let (mut payments, mut paid, mut refunds, mut refunded) = (0u64, 0i64, 0u64, 0i64);
    for row in rows {
        match row.out_request_no {
            None => (payments, paid) = (payments + 1, paid + row.amount),
            Some(_) => (refunds, refunded) = (refunds + 1, refunded + row.amount),
        }
        let kind = if row.out_request_no.is_some() {
            "退款"
        } else {
            "交易"
        };
        let (subject, amount) = (text_field(&row.subject), yuan(row.amount));
        let (created, done) = (china_text(row.created), china_text(row.done));
        let buyer = text_field(&row.buyer);
        push_line(
            &mut out,
            &[
                &row.trade_no,
                &row.out_trade_no,
                kind,
                &subject,
                &created,
                &done,
                "",
                "",
                "",
                "",
                &buyer,
                &amount,
                &amount,
                "0.00",
                "0.00",
                "0.00",
                "0.00",
                "0.00",
                "",
                "0.00",
                "0.00",
                row.out_request_no.as_deref().unwrap_or_default(),
                "0.00",
                "0.00",
                "",
            ],
        );
    }
    let exported = chinese_time(now);
    let tail = format!(
        "{LIST_END}\r\n#交易合计：{payments}笔，商家实收共{}元，商家优惠共0.00元\r\n#退款合计：{refunds}笔，商家实收退款共{}元，商家优惠退款共0.00元\r\n#导出时间：[{exported}]\r\n",
        yuan(paid),
        yuan(refunded)
    );
    out.push_str(&tail);

    let mut summary = String::new();
    push_head(&mut summary, "支付宝业务汇总查询", app_id, date);
    let (total, net) = (yuan(paid), yuan(paid + refunded));
    summary.push_str(&format!(
        "{SUMMARY_START}\r\n{SUMMARY_COLUMNS}\r\n合计,,{payments},{refunds},{total},{net},0.00,0.00,0.00,0.00,0.00,{net}\r\n{SUMMARY_END}\r\n#导出时间：[{exported}]\r\n"
    ));
    (out, summary)
}

/// The zip Alipay serves: the detail and the summary, GBK, deflated.
fn zipped(app_id: &str, date: Date, detail: &str, summary: &str) -> Option<Vec<u8>> {
    let day = format!(
        "{:04}{:02}{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    );
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, text) in [("业务明细", detail), ("业务明细(汇总)", summary)] {
        zip.start_file(format!("{app_id}_{day}_{name}.csv"), options)
            .ok()?;
        let (bytes, _, _) = encoding_rs::GBK.encode(text);
        zip.write_all(&bytes).ok()?;
    }
    Some(zip.finish().ok()?.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;
    use time::macros::{date, datetime};

    fn row(out_trade_no: &str, done: OffsetDateTime, amount: i64, refund: Option<&str>) -> Row {
        Row {
            trade_no: format!("2026{out_trade_no}"),
            out_trade_no: out_trade_no.to_owned(),
            subject: "tea, hot\tlarge".to_owned(),
            created: datetime!(2026-12-02 10:00:00 +8),
            done,
            buyer: "2088000000000001".to_owned(),
            amount,
            out_request_no: refund.map(str::to_owned),
        }
    }

    #[test]
    fn amounts_are_yuan() {
        assert_eq!(yuan(1), "0.01");
        assert_eq!(yuan(12345), "123.45");
        assert_eq!(yuan(-50), "-0.50");
        assert_eq!(yuan(0), "0.00");
    }

    #[test]
    fn a_token_lasts_thirty_seconds() {
        let bills = Bills::default();
        let made = Instant::now();
        let token = bills.keep(Bytes::from_static(b"zip"), made);
        let later = |secs| made + Duration::from_secs(secs);
        assert_eq!(bills.file(&token, later(29)).as_deref(), Some(&b"zip"[..]));
        assert!(bills.file(&token, later(31)).is_none());
        assert!(bills.file("no-such-token", made).is_none());
        // An expired file goes when the next is kept.
        bills.keep(Bytes::new(), later(31));
        assert_eq!(lock(&bills.files).len(), 1);
    }

    #[test]
    fn the_detail_has_alipays_shape() {
        let rows = vec![
            row("T1", datetime!(2026-12-02 10:00:05 +8), 1234, None),
            row("T1", datetime!(2026-12-02 11:00:00 +8), -50, Some("R1")),
        ];
        let now = datetime!(2026-12-03 09:30:00 +8);
        let (detail, summary) = render("2021000000000001", date!(2026 - 12 - 02), &rows, now);
        let lines: Vec<&str> = detail.split("\r\n").collect();
        assert_eq!(lines.len(), 12, "{detail}");
        assert_eq!(lines[0], "#支付宝业务明细查询");
        assert_eq!(lines[1], "#账号：[2021000000000001]");
        assert_eq!(
            lines[2],
            "#起始日期：[2026年12月02日 00:00:00]   终止日期：[2026年12月03日 00:00:00]"
        );
        assert_eq!((lines[3], lines[4]), (LIST_START, COLUMNS));
        assert_eq!(COLUMNS.split(',').count(), 25);
        assert_eq!(
            lines[5],
            "2026T1\t,T1\t,交易\t,tea  hot large\t,2026-12-02 10:00:00\t,2026-12-02 10:00:05\t,\t,\t,\t,\t,2088000000000001\t,12.34\t,12.34\t,0.00\t,0.00\t,0.00\t,0.00\t,0.00\t,\t,0.00\t,0.00\t,\t,0.00\t,0.00\t,\t"
        );
        let refund: Vec<&str> = lines[6].split(',').collect();
        assert_eq!(refund.len(), 25);
        assert_eq!(
            (refund[2], refund[5], refund[11], refund[12], refund[21]),
            (
                "退款\t",
                "2026-12-02 11:00:00\t",
                "-0.50\t",
                "-0.50\t",
                "R1\t"
            )
        );
        assert_eq!(lines[7], LIST_END);
        assert_eq!(
            lines[8],
            "#交易合计：1笔，商家实收共12.34元，商家优惠共0.00元"
        );
        assert_eq!(
            lines[9],
            "#退款合计：1笔，商家实收退款共-0.50元，商家优惠退款共0.00元"
        );
        assert_eq!(lines[10], "#导出时间：[2026年12月03日 09:30:00]");
        assert_eq!(lines[11], "");
        assert!(summary.contains("\r\n合计,,1,1,12.34,11.84,"), "{summary}");
    }

    #[test]
    fn settings_add_drop_and_change_rows() {
        let day = date!(2026 - 12 - 02);
        let rows = vec![
            row("T2", datetime!(2026-12-02 10:00:00 +8), 100, None),
            row("T1", datetime!(2026-12-02 09:00:00 +8), 200, None),
            row("T1", datetime!(2026-12-02 09:30:00 +8), -20, Some("R1")),
        ];
        let setting = Setting {
            extra: vec![ExtraRow {
                out_trade_no: "X1".into(),
                trade_no: "2026X1".into(),
                amount_fen: 500,
                kind: Some("refund".into()),
                out_request_no: Some("XR1".into()),
                refund_fen: Some(30),
                subject: String::new(),
                buyer: String::new(),
            }],
            omit: HashSet::from(["T2".to_owned()]),
            amounts: HashMap::from([("T1".to_owned(), 199)]),
            extra_count: 2,
            extra_amount_fen: 7,
        };
        let rows = adjusted(rows, &setting, day);
        let seen: Vec<(&str, i64, Option<&str>)> = rows
            .iter()
            .map(|r| {
                (
                    r.out_trade_no.as_str(),
                    r.amount,
                    r.out_request_no.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("T1", 199, None),
                ("T1", -20, Some("R1")),
                ("GEN1", 7, None),
                ("GEN2", 7, None),
                ("X1", -30, Some("XR1")),
            ]
        );
        assert_eq!(rows[2].trade_no, "2026120222000000000000000001");
        assert_eq!(rows[2].trade_no.len(), 28);
    }

    #[test]
    fn the_zip_holds_two_gbk_files() {
        let bytes = zipped(
            "2021000000000001",
            date!(2026 - 12 - 02),
            "明细\r\n",
            "汇总\r\n",
        );
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes.unwrap())).unwrap();
        assert_eq!(archive.len(), 2);
        let mut file = archive
            .by_name("2021000000000001_20261202_业务明细(汇总).csv")
            .unwrap();
        let mut raw = Vec::new();
        file.read_to_end(&mut raw).unwrap();
        assert_eq!(raw, [0xbb, 0xe3, 0xd7, 0xdc, b'\r', b'\n']);
    }
}
