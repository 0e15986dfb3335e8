//! WeChat Pay's trade bill against a running emulator, over HTTP, signed as a merchant signs:
//! a day's payments and refunds in the bill once the payment calendar has moved to the next
//! day, its SHA-1 and gzip, the bill types, the refusals with WeChat Pay's codes, download tokens
//! that belong to one merchant, and the bill settings that make the differences a
//! reconciliation must find.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use cloudlet_emulator::EmulatorOptions;
use rsa::pkcs1v15::{Signature, SigningKey, VerifyingKey};
use rsa::pkcs8::{DecodePublicKey, EncodePublicKey, LineEnding};
use rsa::signature::{SignatureEncoding, Signer, Verifier};
use rsa::{RsaPrivateKey, RsaPublicKey};
use serde_json::{Value, json};
use sha1::{Digest, Sha1};
use sha2::Sha256;

const SHOP: &str = "1900000109";
const OTHER: &str = "1900000110";
const SERIAL: &str = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1";
const APPID: &str = "wx0000000000000000";
const HEADER: &str = "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注";
const SUMMARY_HEADER: &str =
    "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额";

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    bytes: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes).unwrap_or(Value::Null)
    }

    fn code(&self) -> String {
        self.json()["code"].as_str().unwrap_or_default().to_owned()
    }
}

/// An emulator with two merchants (`SHOP` and `OTHER`, one key between them, for speed).
struct Platform {
    base: String,
    http: reqwest::Client,
    key: RsaPrivateKey,
    platform_key: RsaPublicKey,
}

impl Platform {
    async fn start() -> Platform {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let options = EmulatorOptions {
            pay_notify_retries: Vec::new(),
            ..EmulatorOptions::default()
        };
        tokio::spawn(cloudlet_emulator::serve(
            listener,
            options,
            std::future::pending(),
        ));
        let key = RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
        let public_key = key
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        let http = reqwest::Client::new();
        let mut platform_pem = String::new();
        for mchid in [SHOP, OTHER] {
            let answer: Value = http
                .post(format!("{base}/emulator/wechatpay/merchants"))
                .json(&json!({
                    "mchid": mchid, "serial_no": SERIAL, "public_key": public_key,
                    "api_v3_key": "0123456789abcdef0123456789abcdef",
                }))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            platform_pem = answer["public_key"].as_str().unwrap().to_owned();
        }
        Platform {
            base,
            http,
            key,
            platform_key: RsaPublicKey::from_public_key_pem(&platform_pem).unwrap(),
        }
    }

    /// A control route (no signature).
    async fn control(&self, path: &str, body: Value) -> Answer {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        Answer {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            bytes: response.bytes().await.unwrap().to_vec(),
        }
    }

    /// A WeChat Pay API call signed as `mchid` (`None`: not signed at all).
    async fn call(&self, mchid: Option<&str>, method: &str, path: &str, body: &str) -> Answer {
        let mut request = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.base));
        if let Some(mchid) = mchid {
            let (timestamp, nonce) = (unix_now().to_string(), "n0nce0123456789");
            let message = format!("{method}\n{path}\n{timestamp}\n{nonce}\n{body}\n");
            let signature = SigningKey::<Sha256>::new(self.key.clone()).sign(message.as_bytes());
            let signature = STANDARD.encode(signature.to_bytes());
            request = request.header(
                "authorization",
                format!(
                    "WECHATPAY2-SHA256-RSA2048 mchid=\"{mchid}\",nonce_str=\"{nonce}\",\
                     timestamp=\"{timestamp}\",serial_no=\"{SERIAL}\",signature=\"{signature}\""
                ),
            );
        }
        if !body.is_empty() {
            request = request
                .header("content-type", "application/json")
                .body(body.to_owned());
        }
        let response = request.send().await.unwrap();
        Answer {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            bytes: response.bytes().await.unwrap().to_vec(),
        }
    }

    /// Places and pays an order; its `success_time`.
    async fn paid_order(&self, no: &str, total: i64, description: &str, attach: &str) -> String {
        let order = json!({
            "appid": APPID, "mchid": SHOP, "description": description, "out_trade_no": no,
            "notify_url": "http://127.0.0.1:9/notify", "amount": { "total": total },
            "payer": { "openid": "oUser" }, "attach": attach,
        });
        let path = "/wechatpay/v3/pay/transactions/jsapi";
        let placed = self
            .call(Some(SHOP), "POST", path, &order.to_string())
            .await;
        assert_eq!(placed.status, 200, "{}", placed.json());
        let pay = json!({ "mchid": SHOP, "out_trade_no": no, "notify": "drop" });
        let paid = self.control("/emulator/wechatpay/pay", pay).await;
        assert_eq!(paid.status, 200, "{}", paid.json());
        let path = format!("/wechatpay/v3/pay/transactions/out-trade-no/{no}?mchid={SHOP}");
        let queried = self.call(Some(SHOP), "GET", &path, "").await;
        queried.json()["success_time"].as_str().unwrap().to_owned()
    }

    async fn refund(&self, no: &str, refund_no: &str, refund: i64, total: i64) -> String {
        let body = json!({
            "out_trade_no": no, "out_refund_no": refund_no,
            "amount": { "refund": refund, "total": total, "currency": "CNY" },
        });
        let path = "/wechatpay/v3/refund/domestic/refunds";
        let answer = self.call(Some(SHOP), "POST", path, &body.to_string()).await;
        assert_eq!(answer.status, 200, "{}", answer.json());
        answer.json()["refund_id"].as_str().unwrap().to_owned()
    }

    /// Asks for a bill (the query after `?`); the answer, its signature checked when 200.
    async fn trade_bill(&self, mchid: &str, query: &str) -> Answer {
        let path = format!("/wechatpay/v3/bill/tradebill?{query}");
        let answer = self.call(Some(mchid), "GET", &path, "").await;
        if answer.status == 200 {
            let header = |name: &str| answer.headers[name].to_str().unwrap().to_owned();
            let message = format!(
                "{}\n{}\n{}\n",
                header("wechatpay-timestamp"),
                header("wechatpay-nonce"),
                String::from_utf8_lossy(&answer.bytes)
            );
            let signature = Signature::try_from(
                STANDARD
                    .decode(header("wechatpay-signature"))
                    .unwrap()
                    .as_slice(),
            )
            .unwrap();
            VerifyingKey::<Sha256>::new(self.platform_key.clone())
                .verify(message.as_bytes(), &signature)
                .expect("the tradebill answer is signed by the platform");
        }
        answer
    }

    /// The path and query of a bill's download URL, which must be on this emulator.
    fn download_path(&self, answer: &Answer) -> String {
        let url = answer.json()["download_url"].as_str().unwrap().to_owned();
        url.strip_prefix(&self.base)
            .expect("the download URL is the emulator's own")
            .to_owned()
    }

    /// Asks for a bill and downloads it: its text, checked against the answered SHA-1.
    async fn bill(&self, query: &str) -> String {
        let answer = self.trade_bill(SHOP, query).await;
        assert_eq!(answer.status, 200, "{}", answer.json());
        assert_eq!(answer.json()["hash_type"], "SHA1");
        let file = self
            .call(Some(SHOP), "GET", &self.download_path(&answer), "")
            .await;
        assert_eq!(file.status, 200);
        assert_eq!(file.headers["content-type"], "application/octet-stream");
        assert!(file.headers.get("wechatpay-signature").is_none());
        let text = if query.contains("tar_type=GZIP") {
            let mut text = String::new();
            flate2::read::GzDecoder::new(file.bytes.as_slice())
                .read_to_string(&mut text)
                .unwrap();
            text
        } else {
            String::from_utf8(file.bytes).unwrap()
        };
        let hash: String = Sha1::digest(text.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(answer.json()["hash_value"], hash.as_str());
        text
    }

    /// Moves the payment calendar `days` on from the real clock.
    async fn move_calendar(&self, days: i64) {
        let body = json!({ "offset_secs": days * 86_400 });
        let answer = self.control("/emulator/wechatpay/clock", body).await;
        assert_eq!(answer.status, 200);
    }
}

#[allow(clippy::disallowed_methods)] // The Authorization timestamp is the real clock's.
fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// `days` from the `YYYY-MM-DD` date `day`.
fn shift(day: &str, days: i64) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let date = time::Date::parse(day, format).unwrap() + time::Duration::days(days);
    date.format(format).unwrap()
}

fn lines(text: &str) -> Vec<&str> {
    text.strip_suffix('\n').unwrap().split('\n').collect()
}

fn fields(line: &str) -> Vec<&str> {
    line.split(',')
        .map(|f| f.strip_prefix('`').unwrap())
        .collect()
}

#[tokio::test]
async fn a_days_payments_and_refunds_are_in_the_next_days_bill() {
    let platform = Platform::start().await;
    let paid_at = platform.paid_order("T00001", 1, "a cup of tea", "").await;
    let day = paid_at[..10].to_owned();
    platform
        .paid_order("T00002", 12345, "tea, large\nhot", "table-3")
        .await;
    let refund_id = platform.refund("T00002", "R0002", 2345, 12345).await;

    // The day of the payments is today: no bill yet.
    let today = platform.trade_bill(SHOP, &format!("bill_date={day}")).await;
    assert_eq!(
        (today.status, today.code().as_str()),
        (400, "NO_STATEMENT_EXIST")
    );

    platform.move_calendar(1).await;
    let text = platform.bill(&format!("bill_date={day}")).await;
    let rows = lines(&text);
    assert_eq!(rows.len(), 6, "{text}");
    assert_eq!(rows[0], HEADER);
    let tea = fields(rows[1]);
    assert_eq!(tea.len(), 27);
    assert_eq!(tea[0], format!("{} {}", &paid_at[..10], &paid_at[11..19]));
    assert!(tea[5].starts_with("42"), "{}", rows[1]);
    assert_eq!(
        [&tea[1..5], &tea[6..]].concat(),
        [
            APPID,
            SHOP,
            "0",
            "",
            "T00001",
            "oUser",
            "JSAPI",
            "SUCCESS",
            "OTHERS",
            "CNY",
            "0.01",
            "0.00",
            "0",
            "0",
            "0.00",
            "0.00",
            "",
            "",
            "a cup of tea",
            "",
            "0.00006",
            "0.60%",
            "0.01",
            "0.00",
            "",
        ]
    );
    let large = fields(rows[2]);
    assert_eq!(
        (
            large[6], large[9], large[12], large[20], large[21], large[22]
        ),
        (
            "T00002",
            "SUCCESS",
            "123.45",
            "tea， large hot",
            "table-3",
            "0.74070"
        )
    );
    let refund = fields(rows[3]);
    assert_eq!(
        refund[6..],
        [
            "T00002",
            "oUser",
            "JSAPI",
            "REFUND",
            "OTHERS",
            "CNY",
            "123.45",
            "0.00",
            refund_id.as_str(),
            "R0002",
            "23.45",
            "0.00",
            "ORIGINAL",
            "SUCCESS",
            "tea， large hot",
            "table-3",
            "0.00000",
            "0.60%",
            "123.45",
            "23.45",
            "",
        ]
    );
    assert_eq!(refund[5], large[5]);
    assert_eq!(rows[4], SUMMARY_HEADER);
    assert_eq!(rows[5], "`3,`123.46,`23.45,`0.00,`0.74076,`123.46,`23.45");

    // The same bill gzipped, and one bill type at a time.
    let zipped = platform
        .bill(&format!("bill_date={day}&bill_type=ALL&tar_type=GZIP"))
        .await;
    assert_eq!(zipped, text);
    let success = platform
        .bill(&format!("bill_date={day}&bill_type=SUCCESS"))
        .await;
    assert_eq!(lines_of(&success), ["T00001 SUCCESS", "T00002 SUCCESS"]);
    assert!(success.ends_with("`2,`123.46,`0.00,`0.00,`0.74076,`123.46,`0.00\n"));
    let refunds = platform
        .bill(&format!("bill_date={day}&bill_type=REFUND&tar_type=GZIP"))
        .await;
    assert_eq!(lines_of(&refunds), ["T00002 REFUND"]);
    assert!(refunds.ends_with("`1,`0.00,`23.45,`0.00,`0.00000,`0.00,`23.45\n"));

    // A day without payments has a bill all the same.
    let quiet = platform
        .bill(&format!("bill_date={}", shift(&day, -1)))
        .await;
    assert_eq!(
        quiet,
        format!("{HEADER}\n{SUMMARY_HEADER}\n`0,`0.00,`0.00,`0.00,`0.00000,`0.00,`0.00\n")
    );
    // Another merchant's bill of the day has none of these rows.
    let other = platform
        .trade_bill(OTHER, &format!("bill_date={day}"))
        .await;
    let other_file = platform
        .call(Some(OTHER), "GET", &platform.download_path(&other), "")
        .await;
    assert_eq!(
        lines(std::str::from_utf8(&other_file.bytes).unwrap()).len(),
        3
    );
}

/// `out_trade_no state` of each row of a bill, checking on the way that they are sorted by time.
fn lines_of(text: &str) -> Vec<String> {
    let lines = lines(text);
    let rows: Vec<Vec<&str>> = lines[1..lines.len() - 2]
        .iter()
        .map(|l| fields(l))
        .collect();
    assert!(
        rows.windows(2).all(|pair| pair[0][0] <= pair[1][0]),
        "{text}"
    );
    rows.iter().map(|f| format!("{} {}", f[6], f[9])).collect()
}

/// The fields of the bill's row of `out_trade_no` in `state`.
fn row<'a>(text: &'a str, out_trade_no: &str, state: &str) -> Vec<&'a str> {
    lines(text)
        .into_iter()
        .map(fields_or_none)
        .find(|f| f.len() == 27 && f[6] == out_trade_no && f[9] == state)
        .unwrap_or_else(|| panic!("no {out_trade_no} {state} row in {text}"))
}

/// A line's fields; the header line (no backticks) gives none.
fn fields_or_none(line: &str) -> Vec<&str> {
    line.split(',')
        .map(|f| f.strip_prefix('`'))
        .collect::<Option<_>>()
        .unwrap_or_default()
}

#[tokio::test]
async fn bills_are_refused_as_wechat_pay_refuses_them() {
    let platform = Platform::start().await;
    let paid_at = platform.paid_order("T00001", 100, "tea", "").await;
    let day = paid_at[..10].to_owned();
    platform.move_calendar(1).await;
    let yesterday = format!("bill_date={day}");
    for (query, code) in [
        (String::new(), "PARAM_ERROR"),
        ("bill_date=20260101".to_owned(), "PARAM_ERROR"),
        ("bill_date=2026-13-01".to_owned(), "PARAM_ERROR"),
        (format!("{yesterday}&bill_type=PAID"), "PARAM_ERROR"),
        (format!("{yesterday}&tar_type=ZIP"), "PARAM_ERROR"),
        (
            format!("bill_date={}", shift(&day, 1)),
            "NO_STATEMENT_EXIST",
        ),
        (
            format!("bill_date={}", shift(&day, 30)),
            "NO_STATEMENT_EXIST",
        ),
        (
            format!("bill_date={}", shift(&day, -100)),
            "NO_STATEMENT_EXIST",
        ),
    ] {
        let answer = platform.trade_bill(SHOP, &query).await;
        assert_eq!(
            (answer.status, answer.code()),
            (400, code.to_owned()),
            "{query}"
        );
    }
    let unsigned = platform
        .call(
            None,
            "GET",
            &format!("/wechatpay/v3/bill/tradebill?{yesterday}"),
            "",
        )
        .await;
    assert_eq!(
        (unsigned.status, unsigned.code().as_str()),
        (401, "SIGN_ERROR")
    );

    // The download URL: the asking merchant's, signed, with a token the platform made.
    let answer = platform.trade_bill(SHOP, &yesterday).await;
    assert_eq!(answer.status, 200);
    let path = platform.download_path(&answer);
    assert!(
        path.starts_with("/wechatpay/v3/billdownload/file?token="),
        "{path}"
    );
    let unsigned = platform.call(None, "GET", &path, "").await;
    assert_eq!(
        (unsigned.status, unsigned.code().as_str()),
        (401, "SIGN_ERROR")
    );
    let stranger = platform.call(Some(OTHER), "GET", &path, "").await;
    assert_eq!(
        (stranger.status, stranger.code().as_str()),
        (404, "RESOURCE_NOT_EXISTS")
    );
    let forged = format!("{path}x");
    let forged = platform.call(Some(SHOP), "GET", &forged, "").await;
    assert_eq!(
        (forged.status, forged.code().as_str()),
        (404, "RESOURCE_NOT_EXISTS")
    );
    let no_token = "/wechatpay/v3/billdownload/file";
    let no_token = platform.call(Some(SHOP), "GET", no_token, "").await;
    assert_eq!(
        (no_token.status, no_token.code().as_str()),
        (400, "PARAM_ERROR")
    );
    let own = platform.call(Some(SHOP), "GET", &path, "").await;
    assert_eq!(own.status, 200);
    assert_eq!(lines(std::str::from_utf8(&own.bytes).unwrap()).len(), 4);
}

#[tokio::test]
async fn a_bill_setting_makes_the_differences_reconciliation_must_find() {
    let platform = Platform::start().await;
    let day = platform.paid_order("T00001", 100, "tea", "").await[..10].to_owned();
    platform.paid_order("T00002", 200, "cake", "").await;
    platform.paid_order("T00003", 300, "pie", "").await;
    platform.refund("T00003", "R0003", 50, 300).await;
    platform.move_calendar(1).await;

    let setting = json!({
        "mchid": SHOP, "bill_date": day,
        "omit": ["T00003"],
        "amounts": { "T00002": 999 },
        "extra": [
            { "out_trade_no": "X0001", "transaction_id": "4200000000000000000000009001",
              "amount_fen": 100, "state": "SUCCESS" },
            { "out_trade_no": "X0002", "transaction_id": "4200000000000000000000009002",
              "amount_fen": 100, "state": "REFUND", "out_refund_no": "XR0002",
              "refund_id": "50300000000000000000000000002", "refund_fen": 50 },
        ],
        "extra_count": 2, "extra_amount_fen": 7,
    });
    let answer = platform.control("/emulator/wechatpay/bill", setting).await;
    assert_eq!((answer.status, answer.json()), (200, json!({})));
    let text = platform
        .bill(&format!("bill_date={day}&tar_type=GZIP"))
        .await;
    let mut rows = lines_of(&text);
    rows.sort();
    assert_eq!(
        rows,
        [
            "GEN1 SUCCESS",
            "GEN2 SUCCESS",
            "T00001 SUCCESS",
            "T00002 SUCCESS",
            "X0001 SUCCESS",
            "X0002 REFUND"
        ]
    );
    let changed = row(&text, "T00002", "SUCCESS");
    assert_eq!(
        (changed[12], changed[24], changed[22]),
        ("9.99", "9.99", "0.05994")
    );
    let generated = row(&text, "GEN1", "SUCCESS");
    assert_eq!(
        (generated[0], generated[5], generated[12]),
        (
            format!("{day} 12:00:00").as_str(),
            "4200000000000000000000000001",
            "0.07"
        )
    );
    assert_ne!(row(&text, "GEN2", "SUCCESS")[5], generated[5]);
    let refund = row(&text, "X0002", "REFUND");
    assert_eq!(
        (refund[0], refund[14], refund[15], refund[16], refund[12]),
        (
            format!("{day} 12:00:00").as_str(),
            "50300000000000000000000000002",
            "XR0002",
            "0.50",
            "1.00"
        )
    );
    // 1.00 + 9.99 + 0.07 × 2 + 1.00 paid; 0.50 refunded.
    let lines = lines(&text);
    assert_eq!(lines[8], "`6,`12.13,`0.50,`0.00,`0.07278,`12.13,`0.50");

    // A new setting replaces the old: here, none at all.
    let reset = json!({ "mchid": SHOP, "bill_date": day });
    assert_eq!(
        platform
            .control("/emulator/wechatpay/bill", reset)
            .await
            .status,
        200
    );
    let text = platform.bill(&format!("bill_date={day}")).await;
    assert_eq!(
        lines_of(&text),
        [
            "T00001 SUCCESS",
            "T00002 SUCCESS",
            "T00003 SUCCESS",
            "T00003 REFUND"
        ]
    );

    for (setting, status, code) in [
        (
            json!({ "mchid": "1900009999", "bill_date": day }),
            404,
            "RESOURCE_NOT_EXISTS",
        ),
        (
            json!({ "mchid": SHOP, "bill_date": "yesterday" }),
            400,
            "PARAM_ERROR",
        ),
        (
            json!({ "mchid": SHOP, "bill_date": day, "extra": [{ "out_trade_no": "X",
                    "transaction_id": "42", "amount_fen": 1, "state": "REFUND" }] }),
            400,
            "PARAM_ERROR",
        ),
    ] {
        let answer = platform.control("/emulator/wechatpay/bill", setting).await;
        assert_eq!((answer.status, answer.code()), (status, code.to_owned()));
    }
}

#[tokio::test]
async fn a_bill_of_a_hundred_thousand_rows() {
    let platform = Platform::start().await;
    let day = platform.paid_order("T00001", 100, "tea", "").await[..10].to_owned();
    platform.move_calendar(1).await;
    let setting = json!({
        "mchid": SHOP, "bill_date": day, "extra_count": 100_000, "extra_amount_fen": 100,
    });
    assert_eq!(
        platform
            .control("/emulator/wechatpay/bill", setting)
            .await
            .status,
        200
    );
    let text = platform
        .bill(&format!("bill_date={day}&tar_type=GZIP"))
        .await;
    let lines = lines(&text);
    assert_eq!(lines.len(), 100_004);
    assert_eq!(
        lines[100_003],
        "`100001,`100001.00,`0.00,`0.00,`600.00600,`100001.00,`0.00"
    );
}
