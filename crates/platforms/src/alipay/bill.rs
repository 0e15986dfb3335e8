//! Alipay's daily trade bill (`alipay.data.dataservice.bill.downloadurl.query`, bill type
//! `trade`): the signed gateway reply names a download link; the link answers a zip of CSV files
//! in GBK, of which the `业务明细` (business details) one lists each payment (`交易`) and refund
//! (`退款`) of the day between comment lines (`#…`) that end with the day's totals.
//!
//! The link itself is not signed (Alipay hands out plain links valid for 30 seconds): it is
//! followed only to Alipay's own hosts (`*.alipay.com`) or the configured gateway's host, and
//! what it answers is only compared, never acted on, so a bill changed on the way can only make
//! a report wrong, never an order.

use std::io::Read;

use serde_json::json;

use super::{AlipayClient, fen_of};
pub use crate::bill::{BillKind, BillRow};
use crate::{PlatformError, PlatformHttp};

/// The largest zip downloaded, and the largest the details file may unpack to.
const MAX_DOWNLOAD_BYTES: usize = 64 * 1024 * 1024;
const MAX_BILL_BYTES: u64 = 256 * 1024 * 1024;
use crate::bill::{DOWNLOAD_TIMEOUT, MAX_BILL_ROWS, columns};

const TRADE_NO: &str = "支付宝交易号";
const OUT_TRADE_NO: &str = "商户订单号";
const KIND: &str = "业务类型";
const FINISHED: &str = "完成时间";
const AMOUNT: &str = "订单金额（元）";
const REFUND_NO: &str = "退款批次号/请求号";
/// The details file's name ends so; its summary's ends `业务明细(汇总).csv`.
const DETAILS_SUFFIX: &str = "业务明细.csv";

fn bad(what: &str) -> PlatformError {
    PlatformError::BadAnswer(format!("an Alipay bill {what}"))
}

/// Fen of an amount as the bill writes it (`0.01`, `-0.50`): its size, the sign dropped.
fn fen(text: &str) -> Result<i64, PlatformError> {
    fen_of(text.strip_prefix('-').unwrap_or(text)).ok_or_else(|| bad(&format!("amount {text:?}")))
}

/// The count in a totals line (`#交易合计：3笔，…`).
fn total_count(line: &str, label: &str) -> Option<usize> {
    let rest = line.strip_prefix('#')?.strip_prefix(label)?;
    let rest = rest.strip_prefix('：').or_else(|| rest.strip_prefix(':'))?;
    rest.split('笔').next()?.trim().parse().ok()
}

/// Parses the details file's text. Its totals must match the lines read, so a file cut short is
/// refused rather than compared.
pub fn parse(text: &str) -> Result<Vec<BillRow>, PlatformError> {
    let mut lines = text
        .trim_start_matches('\u{feff}')
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.trim().is_empty());
    let header = loop {
        match lines.next() {
            Some(line) if line.starts_with('#') => continue,
            Some(line) => break line,
            None => return Err(bad("without a header")),
        }
    };
    let header: Vec<&str> = header.split(',').map(str::trim).collect();
    let at = columns(
        &header,
        [TRADE_NO, OUT_TRADE_NO, KIND, FINISHED, AMOUNT, REFUND_NO],
    )
    .map_err(|name| bad(&format!("without the column {name}")))?;
    let mut rows = Vec::new();
    let (mut payments, mut refunds) = (None, None);
    for line in lines {
        if line.starts_with('#') {
            payments = payments.or_else(|| total_count(line, "交易合计"));
            refunds = refunds.or_else(|| total_count(line, "退款合计"));
            continue;
        }
        if rows.len() == MAX_BILL_ROWS {
            return Err(bad(&format!("of more than {MAX_BILL_ROWS} lines")));
        }
        let values: Vec<&str> = line.split(',').map(str::trim).collect();
        if values.len() != header.len() {
            return Err(bad(&format!(
                "line with {} fields, not {}",
                values.len(),
                header.len()
            )));
        }
        let [trade_no, out_trade_no, kind, finished, amount, refund_no] = at.map(|i| values[i]);
        let row = |kind: BillKind, amount_fen: i64, refund_fen: i64| BillRow {
            time: finished.to_owned(),
            appid: String::new(),
            mchid: String::new(),
            transaction_id: trade_no.to_owned(),
            out_trade_no: out_trade_no.to_owned(),
            kind,
            amount_fen,
            refund_id: None,
            out_refund_no: (!refund_no.is_empty()).then(|| refund_no.to_owned()),
            refund_fen,
        };
        rows.push(match kind {
            "交易" => row(BillKind::Payment, fen(amount)?, 0),
            "退款" => row(BillKind::Refund, 0, fen(amount)?),
            other => row(
                BillKind::Other(other.to_owned()),
                fen(amount).unwrap_or(0),
                0,
            ),
        });
    }
    let count = |kind: &BillKind| rows.iter().filter(|r| r.kind == *kind).count();
    match (payments, refunds) {
        (Some(p), Some(r)) if p == count(&BillKind::Payment) && r == count(&BillKind::Refund) => {
            Ok(rows)
        }
        (Some(p), Some(r)) => Err(bad(&format!(
            "that counts {p} payments and {r} refunds and holds {} and {}",
            count(&BillKind::Payment),
            count(&BillKind::Refund)
        ))),
        _ => Err(bad("without its totals")),
    }
}

/// The details file of a bill's zip, decoded from GBK.
pub fn details_of_zip(zipped: &[u8]) -> Result<String, PlatformError> {
    let mut archive =
        zip::ZipArchive::new(std::io::Cursor::new(zipped)).map_err(|_| bad("that is not a zip"))?;
    for index in 0..archive.len() {
        let mut entry = archive
            .by_index(index)
            .map_err(|_| bad("with an entry that does not read"))?;
        // Names are GBK too in Alipay's zips; the zip crate reads them as CP437 then: match
        // the raw bytes against both encodings of the suffix.
        let raw = entry.name_raw().to_vec();
        let (gbk_suffix, _, _) = encoding_rs::GBK.encode(DETAILS_SUFFIX);
        if !(raw.ends_with(&gbk_suffix) || raw.ends_with(DETAILS_SUFFIX.as_bytes())) {
            continue;
        }
        let mut bytes = Vec::new();
        (&mut entry)
            .take(MAX_BILL_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|_| bad("whose details do not unpack"))?;
        if bytes.len() as u64 > MAX_BILL_BYTES {
            return Err(bad("too large"));
        }
        let (text, _, malformed) = encoding_rs::GBK.decode(&bytes);
        if malformed {
            return Err(bad("whose details are not GBK"));
        }
        return Ok(text.into_owned());
    }
    Err(bad("without its details file"))
}

impl AlipayClient {
    /// The trade bill of `bill_date` (`YYYY-MM-DD`, a China-time day) as downloaded: a zip for
    /// [`details_of_zip`] and [`parse`]. `None` when Alipay has none for that day
    /// (`isp.bill_not_exist`: not made yet, or too old).
    pub async fn trade_bill(
        &self,
        bill_date: &str,
        now_unix_secs: i64,
    ) -> Result<Option<Vec<u8>>, PlatformError> {
        let biz = json!({ "bill_type": "trade", "bill_date": bill_date });
        let method = "alipay.data.dataservice.bill.downloadurl.query";
        let reply = match self.call_biz(method, &biz, &[], now_unix_secs).await {
            Ok(reply) => reply,
            Err(PlatformError::PayRefused { code, .. }) if code == "isp.bill_not_exist" => {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let url = reply["bill_download_url"]
            .as_str()
            .ok_or_else(|| bad("reply without bill_download_url"))?;
        let url = reqwest::Url::parse(url).map_err(|_| bad("link that is not a URL"))?;
        if !self.bill_host_allowed(&url) {
            return Err(bad("link off Alipay's hosts"));
        }
        let response = self
            .http
            .client()
            .get(url)
            .timeout(DOWNLOAD_TIMEOUT)
            .send()
            .await?;
        if response.status() != reqwest::StatusCode::OK {
            return Err(bad(&format!("download answered {}", response.status())));
        }
        Ok(Some(
            PlatformHttp::bounded_to(response, MAX_DOWNLOAD_BYTES).await?,
        ))
    }

    /// Whether a bill link may be followed: http(s), no credentials, to Alipay's own hosts or
    /// the gateway's.
    fn bill_host_allowed(&self, url: &reqwest::Url) -> bool {
        let gateway_host = reqwest::Url::parse(&self.gateway)
            .ok()
            .and_then(|g| g.host_str().map(str::to_owned));
        let Some(host) = url.host_str() else {
            return false;
        };
        matches!(url.scheme(), "http" | "https")
            && url.username().is_empty()
            && url.password().is_none()
            && (host == "alipay.com"
                || host.ends_with(".alipay.com")
                || gateway_host.is_some_and(|g| g == host))
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    const HEAD: &str = "支付宝交易号,商户订单号,业务类型,商品名称,创建时间,完成时间,门店编号,门店名称,操作员,终端号,对方账户,订单金额（元）,商家实收（元）,支付宝红包（元）,集分宝（元）,支付宝优惠（元）,商家优惠（元）,券核销金额（元）,券名称,商家红包消费金额（元）,卡消费金额（元）,退款批次号/请求号,服务费（元）,分润（元）,备注";
    const PAID: &str = "2026120222001400000000000001\t,T0001\t,交易\t,Tea\t,2026-12-02 10:00:00\t,2026-12-02 10:00:05\t,\t,\t,\t,\t,buyer\t,1.00\t,1.00\t,0.00\t,0.00\t,0.00\t,0.00\t,0.00\t,\t,0.00\t,0.00\t,\t,0.00\t,0.00\t,\t";
    const REFUNDED: &str = "2026120222001400000000000001\t,T0001\t,退款\t,Tea\t,2026-12-02 10:00:00\t,2026-12-02 11:00:00\t,\t,\t,\t,\t,buyer\t,-0.50\t,-0.50\t,0.00\t,0.00\t,0.00\t,0.00\t,0.00\t,\t,0.00\t,0.00\t,R1\t,0.00\t,0.00\t,\t";

    fn details(lines: &[&str], payments: usize, refunds: usize) -> String {
        format!(
            "#支付宝业务明细查询\r\n#账号：[2021000000000001]\r\n#起始日期：[2026年12月02日 00:00:00]   终止日期：[2026年12月03日 00:00:00]\r\n#-----业务明细列表-----\r\n{HEAD}\r\n{}\r\n#-----业务明细列表结束-----\r\n#交易合计：{payments}笔，商家实收共1.00元，商家优惠共0.00元\r\n#退款合计：{refunds}笔，商家实收退款共-0.50元，商家优惠退款共0.00元\r\n#导出时间：[2026年12月03日 10:13:49]\r\n",
            lines.join("\r\n")
        )
    }

    #[test]
    fn payments_and_refunds_parse_by_column_name() {
        let rows = parse(&details(&[PAID, REFUNDED], 1, 1)).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (
                &rows[0].kind,
                rows[0].out_trade_no.as_str(),
                rows[0].amount_fen
            ),
            (&BillKind::Payment, "T0001", 100)
        );
        assert_eq!(rows[0].transaction_id, "2026120222001400000000000001");
        assert_eq!(rows[0].out_refund_no, None);
        assert_eq!(
            (
                &rows[1].kind,
                rows[1].out_refund_no.as_deref(),
                rows[1].refund_fen
            ),
            (&BillKind::Refund, Some("R1"), 50)
        );
        assert_eq!(rows[1].time, "2026-12-02 11:00:00");
        assert_eq!(parse(&details(&[], 0, 0)).unwrap(), vec![]);
    }

    #[test]
    fn a_bill_cut_short_or_malformed_is_refused() {
        assert!(parse(&details(&[PAID], 2, 0)).is_err(), "counts more");
        assert!(
            parse(&details(&[PAID, REFUNDED], 1, 0)).is_err(),
            "a refund too many"
        );
        assert!(
            parse(&format!("{HEAD}\r\n{PAID}\r\n")).is_err(),
            "no totals"
        );
        assert!(
            parse(&details(
                &[&PAID.replace("1.00\t,1.00", "1.0x\t,1.00")],
                1,
                0
            ))
            .is_err()
        );
        assert!(parse(&details(&[&PAID[..PAID.len() - 3]], 1, 0)).is_err());
        assert!(parse(&details(&[PAID], 1, 0).replace("商户订单号", "订单号")).is_err());
        assert!(parse("#only comments\r\n").is_err());
    }

    fn zipped(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = std::io::Cursor::new(Vec::new());
        {
            let mut zip = zip::ZipWriter::new(&mut out);
            for (name, bytes) in entries {
                zip.start_file(*name, zip::write::SimpleFileOptions::default())
                    .unwrap();
                zip.write_all(bytes).unwrap();
            }
            zip.finish().unwrap();
        }
        out.into_inner()
    }

    #[test]
    fn the_details_file_is_found_in_the_zip_and_read_as_gbk() {
        let text = details(&[PAID], 1, 0);
        let (gbk, _, _) = encoding_rs::GBK.encode(&text);
        let zip = zipped(&[
            ("2021000000000001_20261202_业务明细(汇总).csv", b"summary"),
            ("2021000000000001_20261202_业务明细.csv", &gbk),
        ]);
        assert_eq!(details_of_zip(&zip).unwrap(), text);
        assert!(details_of_zip(b"not a zip").is_err());
        assert!(details_of_zip(&zipped(&[("other.csv", b"x")])).is_err());
        // Bytes that are not GBK.
        assert!(details_of_zip(&zipped(&[("x_业务明细.csv", b"\xff\xff\xff")])).is_err());
    }
}
