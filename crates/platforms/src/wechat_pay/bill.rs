//! WeChat Pay's daily trade bill (`GET /v3/bill/tradebill`, `shared/platforms.md` §3): asked
//! for, downloaded from the address the signed reply names, checked against the reply's SHA-1
//! and parsed into rows.
//!
//! The bill is CSV of a particular kind: a header line of Chinese column names, then one line
//! per payment or refund whose every field starts with a backtick (so spreadsheets keep long
//! numbers as text), then a summary. Fields are found by their column names, and a line is cut
//! at `,` followed by a backtick, so a description holding a comma still parses.

use std::io::Read;

use sha1::{Digest, Sha1};

use super::WechatPayClient;
use crate::alipay::fen_of;
pub use crate::bill::{BillKind, BillRow};
use crate::bill::{DOWNLOAD_TIMEOUT, MAX_BILL_ROWS, columns};
use crate::{PlatformError, PlatformHttp};

/// The largest bill downloaded (compressed) and the largest it may unpack to: a day of
/// 100,000 payments is about 35 MB of text.
const MAX_DOWNLOAD_BYTES: usize = 64 * 1024 * 1024;
const MAX_BILL_BYTES: u64 = 256 * 1024 * 1024;

/// A bill as downloaded: gzipped, with the SHA-1 its signed reply gave for the text.
#[derive(Debug, Clone)]
pub struct Packed {
    pub gzipped: Vec<u8>,
    pub sha1: String,
}

impl Packed {
    /// The bill's text: unpacked (within the size limit) and checked against its SHA-1. Work
    /// for a blocking thread.
    pub fn unpack(&self) -> Result<String, PlatformError> {
        let mut text = Vec::new();
        flate2::read::GzDecoder::new(self.gzipped.as_slice())
            .take(MAX_BILL_BYTES + 1)
            .read_to_end(&mut text)
            .map_err(|_| PlatformError::BadAnswer("a trade bill that is not gzip".into()))?;
        if text.len() as u64 > MAX_BILL_BYTES {
            return Err(PlatformError::BadAnswer("a trade bill too large".into()));
        }
        if !hex::encode(Sha1::digest(&text)).eq_ignore_ascii_case(&self.sha1) {
            return Err(PlatformError::Crypto(
                "a trade bill whose SHA-1 is not the one its reply signed",
            ));
        }
        String::from_utf8(text)
            .map_err(|_| PlatformError::BadAnswer("a trade bill that is not UTF-8".into()))
    }
}

/// The columns read, by name.
const TIME: &str = "交易时间";
const APPID: &str = "公众账号ID";
const MCHID: &str = "商户号";
const TRANSACTION_ID: &str = "微信订单号";
const OUT_TRADE_NO: &str = "商户订单号";
const STATE: &str = "交易状态";
const AMOUNT: &str = "订单金额";
const REFUND_ID: &str = "微信退款单号";
const OUT_REFUND_NO: &str = "商户退款单号";
/// The refund asked for (`退款金额` is what was settled, less any coupon's share).
const REFUND: &str = "申请退款金额";
const SUMMARY: &str = "总交易单数";

/// Parses a trade bill's text. The summary's count must match the lines read, so a bill cut
/// short is refused rather than compared.
pub fn parse(text: &str) -> Result<Vec<BillRow>, PlatformError> {
    let bad = |what: &str| PlatformError::BadAnswer(format!("a trade bill {what}"));
    let mut lines = text
        .trim_start_matches('\u{feff}')
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.is_empty());
    let header: Vec<&str> = lines
        .next()
        .ok_or_else(|| bad("that is empty"))?
        .split(',')
        .map(str::trim)
        .collect();
    let at = columns(
        &header,
        [
            TIME,
            APPID,
            MCHID,
            TRANSACTION_ID,
            OUT_TRADE_NO,
            STATE,
            AMOUNT,
            REFUND_ID,
            OUT_REFUND_NO,
            REFUND,
        ],
    )
    .map_err(|name| bad(&format!("without the column {name}")))?;
    let mut rows = Vec::new();
    let mut count = None;
    while let Some(line) = lines.next() {
        if line.starts_with(SUMMARY) {
            let totals = lines.next().ok_or_else(|| bad("without its totals"))?;
            let first = fields(totals).next().unwrap_or_default();
            count = Some(
                first
                    .parse::<usize>()
                    .map_err(|_| bad("with a bad count"))?,
            );
            break;
        }
        if rows.len() == MAX_BILL_ROWS {
            return Err(bad(&format!("of more than {MAX_BILL_ROWS} lines")));
        }
        let values: Vec<&str> = fields(line).collect();
        if values.len() != header.len() {
            return Err(bad(&format!(
                "line with {} fields, not {}",
                values.len(),
                header.len()
            )));
        }
        let [
            time,
            appid,
            mchid,
            transaction_id,
            out_trade_no,
            state,
            amount,
            refund_id,
            out_refund_no,
            refund,
        ] = at.map(|i| values[i]);
        let fen = |yuan: &str| fen_of(yuan).ok_or_else(|| bad(&format!("amount {yuan:?}")));
        let kind = match state {
            "SUCCESS" => BillKind::Payment,
            "REFUND" => BillKind::Refund,
            other => BillKind::Other(other.to_owned()),
        };
        let number = |n: &str| (!n.is_empty() && n != "0").then(|| n.to_owned());
        rows.push(BillRow {
            time: time.to_owned(),
            appid: appid.to_owned(),
            mchid: mchid.to_owned(),
            transaction_id: transaction_id.to_owned(),
            out_trade_no: out_trade_no.to_owned(),
            amount_fen: fen(amount)?,
            refund_id: number(refund_id),
            out_refund_no: number(out_refund_no),
            refund_fen: if kind == BillKind::Refund {
                fen(refund)?
            } else {
                0
            },
            kind,
        });
    }
    match count {
        Some(count) if count == rows.len() => Ok(rows),
        Some(count) => Err(bad(&format!(
            "that counts {count} lines and holds {}",
            rows.len()
        ))),
        None => Err(bad("without its summary")),
    }
}

/// A line's values: each field starts with a backtick and they are joined by commas.
fn fields(line: &str) -> impl Iterator<Item = &str> {
    line.strip_prefix('`')
        .unwrap_or(line)
        .split(",`")
        .map(str::trim)
}

impl WechatPayClient {
    /// The trade bill of `bill_date` (`YYYY-MM-DD`, a China-time day, available from 10:00 the
    /// next day for three months), downloaded gzipped, to [`Packed::unpack`] off the async
    /// threads.
    pub async fn trade_bill(
        &self,
        bill_date: &str,
        now_secs: i64,
    ) -> Result<Packed, PlatformError> {
        let valid = bill_date.len() == 10
            && bill_date.bytes().enumerate().all(|(i, b)| {
                if i == 4 || i == 7 {
                    b == b'-'
                } else {
                    b.is_ascii_digit()
                }
            });
        if !valid {
            return Err(PlatformError::BadAnswer(format!(
                "not a bill date: {bill_date:?}"
            )));
        }
        let path = format!("/v3/bill/tradebill?bill_date={bill_date}&bill_type=ALL&tar_type=GZIP");
        let (_, reply) = self
            .call(reqwest::Method::GET, &path, None, now_secs)
            .await?;
        let reply: serde_json::Value = serde_json::from_str(&reply)
            .map_err(|e| PlatformError::BadAnswer(format!("a trade bill reply: {e}")))?;
        let (Some("SHA1"), Some(hash), Some(url)) = (
            reply["hash_type"].as_str(),
            reply["hash_value"].as_str(),
            reply["download_url"].as_str(),
        ) else {
            return Err(PlatformError::BadAnswer(
                "a trade bill reply without a SHA1 hash and a download_url".into(),
            ));
        };
        // The address comes from a verified reply, and is still only followed to the
        // platform's own host: a signed request is never sent anywhere else.
        if !url.starts_with(&format!("{}/", self.base)) {
            return Err(PlatformError::BadAnswer(
                "a trade bill download_url off the platform's host".into(),
            ));
        }
        let url = reqwest::Url::parse(url)
            .map_err(|e| PlatformError::BadAnswer(format!("a bad download_url: {e}")))?;
        let response = self
            .authorized(reqwest::Method::GET, url, "", now_secs)
            .timeout(DOWNLOAD_TIMEOUT)
            .send()
            .await?;
        let status = response.status().as_u16();
        if status != 200 {
            let body = PlatformHttp::text(response).await.unwrap_or_default();
            let refusal: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            return Err(PlatformError::PayRefused {
                status,
                code: refusal["code"].as_str().unwrap_or("UNKNOWN").to_owned(),
                message: refusal["message"].as_str().unwrap_or_default().to_owned(),
            });
        }
        Ok(Packed {
            gzipped: PlatformHttp::bounded_to(response, MAX_DOWNLOAD_BYTES).await?,
            sha1: hash.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注";

    fn bill(lines: &[&str], count: usize) -> String {
        format!(
            "{HEAD}\n{}\n总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额\n`{count},`1.00,`0.50,`0.00,`0.00600,`1.00,`0.50\n",
            lines.join("\n")
        )
    }

    const PAID: &str = "`2026-12-02 10:00:00,`wx0000000000000000,`1900000000,`0,`,`4200000001,`T0001,`oUser,`JSAPI,`SUCCESS,`OTHERS,`CNY,`1.00,`0.00,`0,`0,`0.00,`0.00,`,`,`tea, green,`,`0.00600,`0.60%,`1.00,`0.00,`";
    const REFUNDED: &str = "`2026-12-02 11:00:00,`wx0000000000000000,`1900000000,`0,`,`4200000001,`T0001,`oUser,`JSAPI,`REFUND,`OTHERS,`CNY,`1.00,`0.00,`5000001,`R1,`0.50,`0.00,`ORIGINAL,`SUCCESS,`tea, green,`,`0.00000,`0.60%,`1.00,`0.50,`";

    #[test]
    fn payments_and_refunds_parse_by_column_name() {
        let rows = parse(&bill(&[PAID, REFUNDED], 2)).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].kind, BillKind::Payment);
        assert_eq!(rows[0].out_trade_no, "T0001");
        assert_eq!(rows[0].transaction_id, "4200000001");
        assert_eq!(rows[0].amount_fen, 100);
        assert_eq!(rows[0].refund_id, None);
        assert_eq!(rows[1].kind, BillKind::Refund);
        assert_eq!(rows[1].out_refund_no.as_deref(), Some("R1"));
        assert_eq!(rows[1].refund_id.as_deref(), Some("5000001"));
        assert_eq!(rows[1].refund_fen, 50);
        assert_eq!(rows[1].time, "2026-12-02 11:00:00");
        // An empty day is a bill too.
        assert_eq!(parse(&bill(&[], 0)).unwrap(), vec![]);
    }

    #[test]
    fn a_bill_cut_short_or_malformed_is_refused() {
        // The count says more than it holds: cut short.
        assert!(parse(&bill(&[PAID], 2)).is_err());
        // No summary at all.
        assert!(parse(&format!("{HEAD}\n{PAID}\n")).is_err());
        // A line with a field missing, an amount that is not one, a column gone.
        assert!(parse(&bill(&[&PAID[..PAID.len() - 2]], 1)).is_err());
        assert!(parse(&bill(&[&PAID.replace("`0.60%,`1.00,", "`0.60%,`1.0x,")], 1)).is_err());
        assert!(parse(&bill(&[PAID], 1).replacen("商户订单号", "订单", 1)).is_err());
        assert!(parse("").is_err());
    }
}
