//! Alipay's daily trade bill against a running emulator, over HTTP, through the signed gateway
//! as an app calls it: a day's payments and refunds (made "yesterday" on the payment calendar,
//! which is WeChat Pay's too) in that day's bill, downloaded from a plain link as a zip of two
//! GBK files; the refusals with Alipay's sub codes; links that are the emulator's own and
//! single-use for 30 seconds at most; and the bill settings that make the differences a
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
use sha2::Sha256;

const APP: &str = "2021000000000001";
const OTHER: &str = "2021000000000002";
const METHOD: &str = "alipay.data.dataservice.bill.downloadurl.query";
const COLUMNS: &str = "支付宝交易号,商户订单号,业务类型,商品名称,创建时间,完成时间,门店编号,门店名称,操作员,终端号,对方账户,订单金额（元）,商家实收（元）,支付宝红包（元）,集分宝（元）,支付宝优惠（元）,商家优惠（元）,券核销金额（元）,券名称,商家红包消费金额（元）,卡消费金额（元）,退款批次号/请求号,服务费（元）,分润（元）,备注";
const BUYER: &str = "2088000000000001";

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    bytes: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes).unwrap_or(Value::Null)
    }
}

/// An emulator with two Alipay apps (`APP` and `OTHER`, one key between them, for speed).
struct Alipay {
    base: String,
    http: reqwest::Client,
    key: RsaPrivateKey,
    alipay_key: RsaPublicKey,
}

impl Alipay {
    async fn start() -> Alipay {
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
        let public_pem = key
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        let http = reqwest::Client::new();
        let mut alipay_pem = String::new();
        for app in [APP, OTHER] {
            let answer: Value = http
                .post(format!("{base}/emulator/apps"))
                .json(&json!({ "platform": "alipay", "app_id": app, "app_public_key": public_pem }))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            alipay_pem = answer["alipay_public_key"].as_str().unwrap().to_owned();
        }
        Alipay {
            base,
            http,
            key,
            alipay_key: RsaPublicKey::from_public_key_pem(&alipay_pem).unwrap(),
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

    async fn get(&self, path_or_url: &str) -> Answer {
        let url = if path_or_url.starts_with("http") {
            path_or_url.to_owned()
        } else {
            format!("{}{path_or_url}", self.base)
        };
        let response = self.http.get(url).send().await.unwrap();
        Answer {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            bytes: response.bytes().await.unwrap().to_vec(),
        }
    }

    /// Calls the gateway as `app` signs; `tamper` changes `biz_content` after signing. Answers
    /// the response object's root and the object, its signature checked with the emulator's
    /// Alipay key over the exact text sent.
    async fn call_with(
        &self,
        app: &str,
        method: &str,
        biz: &Value,
        tamper: bool,
    ) -> (String, Value) {
        let mut params = std::collections::BTreeMap::from([
            ("app_id", app.to_owned()),
            ("method", method.to_owned()),
            ("charset", "utf-8".to_owned()),
            ("sign_type", "RSA2".to_owned()),
            ("timestamp", china_now()),
            ("version", "1.0".to_owned()),
            ("biz_content", biz.to_string()),
        ]);
        let content = params
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&");
        let signature = SigningKey::<Sha256>::new(self.key.clone()).sign(content.as_bytes());
        params.insert("sign", STANDARD.encode(signature.to_bytes()));
        if tamper {
            params.insert("biz_content", json!({ "bill_type": "trade" }).to_string());
        }
        let form = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params.iter())
            .finish();
        let body = self
            .http
            .post(format!("{}/alipay/gateway.do", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let (root, rest) = body.strip_prefix("{\"").unwrap().split_once("\":").unwrap();
        let (object, signature) = rest.rsplit_once(",\"sign\":\"").unwrap();
        let signature = STANDARD
            .decode(signature.strip_suffix("\"}").unwrap())
            .unwrap();
        VerifyingKey::<Sha256>::new(self.alipay_key.clone())
            .verify(
                object.as_bytes(),
                &Signature::try_from(signature.as_slice()).unwrap(),
            )
            .expect("the reply is signed with the emulator's Alipay key");
        (root.to_owned(), serde_json::from_str(object).unwrap())
    }

    async fn call(&self, method: &str, biz: Value) -> Value {
        let (root, object) = self.call_with(APP, method, &biz, false).await;
        assert_eq!(root, format!("{}_response", method.replace('.', "_")));
        object
    }

    /// Creates and pays a trade (no notification); its `send_pay_date`.
    async fn paid_trade(&self, no: &str, amount: &str, subject: &str) -> String {
        let created = self
            .call(
                "alipay.trade.create",
                json!({
                    "out_trade_no": no, "total_amount": amount, "subject": subject,
                    "product_code": "JSAPI_PAY", "buyer_id": BUYER,
                }),
            )
            .await;
        assert_eq!(created["code"], "10000", "{created}");
        let pay = json!({ "app_id": APP, "out_trade_no": no, "notify": "drop" });
        let paid = self.control("/emulator/alipay/pay", pay).await;
        assert_eq!(paid.status, 200, "{}", paid.json());
        let queried = self
            .call("alipay.trade.query", json!({ "out_trade_no": no }))
            .await;
        queried["send_pay_date"].as_str().unwrap().to_owned()
    }

    /// Refunds part of a trade; its `gmt_refund_pay`.
    async fn refund(&self, no: &str, request_no: &str, amount: &str) -> String {
        let refunded = self
            .call(
                "alipay.trade.refund",
                json!({ "out_trade_no": no, "refund_amount": amount, "out_request_no": request_no }),
            )
            .await;
        assert_eq!(refunded["fund_change"], "Y", "{refunded}");
        refunded["gmt_refund_pay"].as_str().unwrap().to_owned()
    }

    async fn move_calendar(&self, route: &str, offset_secs: i64) -> String {
        let answer = self
            .control(route, json!({ "offset_secs": offset_secs }))
            .await;
        assert_eq!(answer.status, 200);
        answer.json()["now"].as_str().unwrap().to_owned()
    }

    /// Asks for the bill of `day` as `app`: the response object.
    async fn bill_url(&self, app: &str, day: &str) -> Value {
        let biz = json!({ "bill_type": "trade", "bill_date": day });
        let (root, object) = self.call_with(app, METHOD, &biz, false).await;
        assert_eq!(
            root,
            "alipay_data_dataservice_bill_downloadurl_query_response"
        );
        object
    }

    /// Asks for the bill of `day` and downloads it: the zip's two files, GBK-decoded, by name.
    async fn bill(&self, app: &str, day: &str) -> (String, String) {
        let answer = self.bill_url(app, day).await;
        assert_eq!(
            (answer["code"].as_str(), answer["msg"].as_str()),
            (Some("10000"), Some("Success")),
            "{answer}"
        );
        let url = answer["bill_download_url"].as_str().unwrap();
        let path = url
            .strip_prefix(&self.base)
            .expect("the link is the emulator's own");
        assert!(path.starts_with("/alipay/billdownload?token="), "{path}");
        let file = self.get(url).await;
        assert_eq!(file.status, 200);
        assert_eq!(file.headers["content-type"], "application/octet-stream");
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(file.bytes)).unwrap();
        assert_eq!(archive.len(), 2);
        let compact = day.replace('-', "");
        let mut read = |name: String| {
            let mut entry = archive.by_name(&name).unwrap();
            assert_eq!(entry.compression(), zip::CompressionMethod::Deflated);
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).unwrap();
            let (text, had_errors) = encoding_rs::GBK.decode_without_bom_handling(&bytes);
            assert!(!had_errors);
            text.into_owned()
        };
        let detail = read(format!("{app}_{compact}_业务明细.csv"));
        let summary = read(format!("{app}_{compact}_业务明细(汇总).csv"));
        (detail, summary)
    }
}

/// The real clock in China time, as the gateway's `timestamp` is written.
#[allow(clippy::disallowed_methods)] // Request timestamps are the real clock's.
fn china_now() -> String {
    time::OffsetDateTime::now_utc()
        .to_offset(time::macros::offset!(+8))
        .format(time::macros::format_description!(
            "[year]-[month]-[day] [hour]:[minute]:[second]"
        ))
        .unwrap()
}

/// `days` from the `YYYY-MM-DD` date `day`.
fn shift(day: &str, days: i64) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let date = time::Date::parse(day, format).unwrap() + time::Duration::days(days);
    date.format(format).unwrap()
}

/// `2026-12-02` as the bill's header writes it: `2026年12月02日`.
fn chinese_day(day: &str) -> String {
    format!("{}年{}月{}日", &day[..4], &day[5..7], &day[8..10])
}

fn lines(text: &str) -> Vec<&str> {
    let lines: Vec<&str> = text.strip_suffix("\r\n").unwrap().split("\r\n").collect();
    assert!(lines.iter().all(|l| !l.contains('\n')), "{text:?}");
    lines
}

/// The rows of a detail file (between the column names and the end of the list), each as its
/// 25 fields without their tabs.
fn detail_rows(text: &str) -> Vec<Vec<String>> {
    let lines = lines(text);
    let start = lines.iter().position(|l| *l == COLUMNS).unwrap() + 1;
    let end = lines
        .iter()
        .position(|l| l.contains("业务明细列表结束"))
        .unwrap();
    lines[start..end]
        .iter()
        .map(|line| {
            let fields: Vec<String> = line
                .split(',')
                .map(|f| f.strip_suffix('\t').unwrap().to_owned())
                .collect();
            assert_eq!(fields.len(), 25, "{line}");
            fields
        })
        .collect()
}

/// The detail's two totals lines.
fn totals(text: &str) -> [String; 2] {
    let lines = lines(text);
    let n = lines.len();
    assert!(lines[n - 1].starts_with("#导出时间：["), "{text}");
    [lines[n - 3].to_owned(), lines[n - 2].to_owned()]
}

fn sub_code(answer: &Value) -> (&str, &str) {
    (
        answer["code"].as_str().unwrap_or_default(),
        answer["sub_code"].as_str().unwrap_or_default(),
    )
}

#[tokio::test]
async fn a_days_trades_and_refunds_are_in_that_days_bill() {
    let alipay = Alipay::start().await;
    let real_today = china_now()[..10].to_owned();

    // Yesterday, on the payment calendar: a trade paid and part of it refunded, one left unpaid.
    let now = alipay
        .move_calendar("/emulator/alipay/clock", -86_400)
        .await;
    assert!(now.ends_with("+08:00"), "{now}");
    let paid_at = alipay.paid_trade("T0001", "12.34", "Tea, hot\tlarge").await;
    let day = paid_at[..10].to_owned();
    assert_eq!(day, shift(&real_today, -1));
    let refunded_at = alipay.refund("T0001", "R0001", "0.50").await;
    let unpaid = json!({
        "out_trade_no": "T0002", "total_amount": "1.00", "subject": "Cake",
        "product_code": "JSAPI_PAY", "buyer_id": BUYER,
    });
    alipay.call("alipay.trade.create", unpaid).await;

    // On the calendar, the day is today: no bill yet.
    let early = alipay.bill_url(APP, &day).await;
    assert_eq!(sub_code(&early), ("40004", "isp.bill_not_exist"));
    assert_eq!(early["sub_msg"], "账单不存在");

    // The calendar is one for both platforms: WeChat Pay's control puts Alipay's back.
    let now = alipay.move_calendar("/emulator/wechatpay/clock", 0).await;
    assert_eq!(&now[..10], real_today);
    let (detail, summary) = alipay.bill(APP, &day).await;
    let all = lines(&detail);
    assert_eq!(all[0], "#支付宝业务明细查询");
    assert_eq!(all[1], format!("#账号：[{APP}]"));
    assert_eq!(
        all[2],
        format!(
            "#起始日期：[{} 00:00:00]   终止日期：[{} 00:00:00]",
            chinese_day(&day),
            chinese_day(&real_today)
        )
    );
    assert_eq!(
        all[3],
        "#-----------------------------------------业务明细列表----------------------------------------"
    );
    assert_eq!(all[4], COLUMNS);
    assert!(
        all[5].starts_with(&format!("{}\t,T0001\t,交易\t,", detail_rows(&detail)[0][0])),
        "{detail}"
    );
    let rows = detail_rows(&detail);
    assert_eq!(rows.len(), 2, "{detail}");
    let trade_no = rows[0][0].clone();
    assert_eq!(trade_no.len(), 28);
    let created = rows[0][4].clone();
    assert_eq!(&created[..10], day);
    assert!(created <= paid_at);
    assert_eq!(
        rows[0],
        [
            trade_no.as_str(),
            "T0001",
            "交易",
            "Tea  hot large",
            &created,
            &paid_at,
            "",
            "",
            "",
            "",
            BUYER,
            "12.34",
            "12.34",
            "0.00",
            "0.00",
            "0.00",
            "0.00",
            "0.00",
            "",
            "0.00",
            "0.00",
            "",
            "0.00",
            "0.00",
            "",
        ]
    );
    assert_eq!(
        rows[1],
        [
            trade_no.as_str(),
            "T0001",
            "退款",
            "Tea  hot large",
            &created,
            &refunded_at,
            "",
            "",
            "",
            "",
            BUYER,
            "-0.50",
            "-0.50",
            "0.00",
            "0.00",
            "0.00",
            "0.00",
            "0.00",
            "",
            "0.00",
            "0.00",
            "R0001",
            "0.00",
            "0.00",
            "",
        ]
    );
    assert_eq!(
        totals(&detail),
        [
            "#交易合计：1笔，商家实收共12.34元，商家优惠共0.00元",
            "#退款合计：1笔，商家实收退款共-0.50元，商家优惠退款共0.00元",
        ]
    );
    assert_eq!(
        all[all.len() - 4],
        "#-----------------------------------------业务明细列表结束------------------------------------"
    );
    assert!(
        all[all.len() - 1].starts_with(&format!("#导出时间：[{}", chinese_day(&real_today))),
        "{detail}"
    );
    assert!(summary.starts_with("#支付宝业务汇总查询\r\n"), "{summary}");
    assert!(summary.contains("\r\n合计,,1,1,12.34,11.84,"), "{summary}");

    // A past day without trades has a bill all the same, and so has the other app.
    let (quiet, _) = alipay.bill(APP, &shift(&day, -1)).await;
    assert!(detail_rows(&quiet).is_empty());
    let empty = [
        "#交易合计：0笔，商家实收共0.00元，商家优惠共0.00元",
        "#退款合计：0笔，商家实收退款共0.00元，商家优惠退款共0.00元",
    ];
    assert_eq!(totals(&quiet), empty);
    let (other, _) = alipay.bill(OTHER, &day).await;
    assert_eq!(totals(&other), empty);
    assert!(other.contains(&format!("#账号：[{OTHER}]")));
}

#[tokio::test]
async fn bills_are_refused_as_alipay_refuses_them() {
    let alipay = Alipay::start().await;
    let today = china_now()[..10].to_owned();
    let yesterday = shift(&today, -1);
    for biz in [
        json!({ "bill_type": "signcustomer", "bill_date": yesterday }),
        json!({ "bill_date": yesterday }),
        json!({ "bill_type": "trade", "bill_date": "20261202" }),
        json!({ "bill_type": "trade", "bill_date": "2026-13-01" }),
        json!({ "bill_type": "trade", "bill_date": yesterday.replace('-', "/") }),
        json!({ "bill_type": "trade" }),
    ] {
        let (root, answer) = alipay.call_with(APP, METHOD, &biz, false).await;
        assert_eq!(
            root,
            "alipay_data_dataservice_bill_downloadurl_query_response"
        );
        assert_eq!(
            sub_code(&answer),
            ("40004", "ACQ.INVALID_PARAMETER"),
            "{biz}"
        );
        assert_eq!(answer["msg"], "Business Failed");
    }
    for day in [
        today.clone(),
        shift(&today, 1),
        shift(&today, -100),
        "2020-01-01".to_owned(),
    ] {
        let answer = alipay.bill_url(APP, &day).await;
        assert_eq!(sub_code(&answer), ("40004", "isp.bill_not_exist"), "{day}");
        assert_eq!(answer["sub_msg"], "账单不存在");
    }
    // Two months back is still served; the calendar moved back, today's bill is not yet.
    let answer = alipay.bill_url(APP, &shift(&today, -60)).await;
    assert_eq!(answer["code"], "10000", "{answer}");
    alipay
        .move_calendar("/emulator/alipay/clock", -86_400)
        .await;
    let answer = alipay.bill_url(APP, &yesterday).await;
    assert_eq!(sub_code(&answer), ("40004", "isp.bill_not_exist"));
    alipay.move_calendar("/emulator/alipay/clock", 0).await;

    // The gateway's own checks come first: a request changed after signing.
    let biz = json!({ "bill_type": "trade", "bill_date": yesterday });
    let (root, answer) = alipay.call_with(APP, METHOD, &biz, true).await;
    assert_eq!(root, "error_response");
    assert_eq!(
        (answer["code"].as_str(), answer["sub_code"].as_str()),
        (Some("40002"), Some("isv.invalid-signature"))
    );

    // The link: plain, for anyone who has it; an unknown token is 404.
    let url = alipay.bill_url(APP, &yesterday).await["bill_download_url"]
        .as_str()
        .unwrap()
        .to_owned();
    for bad in [
        format!("{url}x"),
        "/alipay/billdownload?token=no-such-token".to_owned(),
        "/alipay/billdownload".to_owned(),
    ] {
        let answer = alipay.get(&bad).await;
        assert_eq!(answer.status, 404, "{bad}");
        assert!(
            String::from_utf8(answer.bytes)
                .unwrap()
                .contains("unknown or has expired")
        );
    }
    // Within its 30 seconds it serves as often as asked.
    for _ in 0..2 {
        assert_eq!(alipay.get(&url).await.status, 200);
    }

    // The calendar moves at most ten years either way.
    let far = json!({ "offset_secs": 11 * 366 * 86_400 });
    let refused = alipay.control("/emulator/alipay/clock", far).await;
    assert_eq!(refused.status, 400);
    assert!(refused.json()["error"].is_string());
}

#[tokio::test]
async fn a_bill_setting_makes_the_differences_reconciliation_must_find() {
    let alipay = Alipay::start().await;
    alipay
        .move_calendar("/emulator/alipay/clock", -86_400)
        .await;
    let day = alipay.paid_trade("T0001", "1.00", "Tea").await[..10].to_owned();
    alipay.paid_trade("T0002", "2.00", "Cake").await;
    alipay.refund("T0002", "R0002", "0.20").await;
    alipay.move_calendar("/emulator/alipay/clock", 0).await;

    let setting = json!({
        "app_id": APP, "bill_date": day,
        "omit": ["T0001"],
        "amounts": { "T0002": 150 },
        "extra": [
            { "out_trade_no": "X0001", "trade_no": "2026000000000000000000000001", "amount_fen": 300 },
            { "out_trade_no": "X0002", "trade_no": "2026000000000000000000000002", "amount_fen": 500,
              "kind": "refund", "out_request_no": "XR0002", "refund_fen": 40 },
        ],
        "extra_count": 3, "extra_amount_fen": 5,
    });
    let set = alipay.control("/emulator/alipay/bill", setting).await;
    assert_eq!((set.status, set.json()), (200, json!({})));
    let (detail, _) = alipay.bill(APP, &day).await;
    let rows = detail_rows(&detail);
    assert!(
        rows.windows(2).all(|pair| pair[0][5] <= pair[1][5]),
        "sorted by 完成时间: {detail}"
    );
    let mut seen: Vec<String> = rows
        .iter()
        .map(|r| format!("{} {} {} {}", r[1], r[2], r[12], r[21]))
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            "GEN1 交易 0.05 ",
            "GEN2 交易 0.05 ",
            "GEN3 交易 0.05 ",
            "T0002 交易 1.50 ",
            "T0002 退款 -0.20 R0002",
            "X0001 交易 3.00 ",
            "X0002 退款 -0.40 XR0002",
        ]
    );
    assert_eq!(
        totals(&detail),
        [
            "#交易合计：5笔，商家实收共4.65元，商家优惠共0.00元",
            "#退款合计：2笔，商家实收退款共-0.60元，商家优惠退款共0.00元",
        ]
    );
    let generated = rows.iter().find(|r| r[1] == "GEN1").unwrap();
    assert_eq!(generated[5], format!("{day} 12:00:00"));
    assert_eq!(generated[0].len(), 28);

    // Another app's bill of the day is not touched; asking again replaces the setting.
    let (other, _) = alipay.bill(OTHER, &day).await;
    assert!(detail_rows(&other).is_empty());
    let clear = json!({ "app_id": APP, "bill_date": day });
    assert_eq!(
        alipay.control("/emulator/alipay/bill", clear).await.status,
        200
    );
    let (detail, _) = alipay.bill(APP, &day).await;
    assert_eq!(
        totals(&detail),
        [
            "#交易合计：2笔，商家实收共3.00元，商家优惠共0.00元",
            "#退款合计：1笔，商家实收退款共-0.20元，商家优惠退款共0.00元",
        ]
    );

    // Refusals: an unknown app, a bad date, an incomplete refund row, too many rows.
    for (body, status) in [
        (
            json!({ "app_id": "2021000000009999", "bill_date": day }),
            404,
        ),
        (json!({ "app_id": APP, "bill_date": "2026/12/02" }), 400),
        (
            json!({ "app_id": APP, "bill_date": day, "extra": [
                { "out_trade_no": "X", "trade_no": "1", "amount_fen": 1, "kind": "refund" }] }),
            400,
        ),
        (
            json!({ "app_id": APP, "bill_date": day, "extra": [
                { "out_trade_no": "X", "trade_no": "1", "amount_fen": 1, "kind": "other" }] }),
            400,
        ),
        (
            json!({ "app_id": APP, "bill_date": day, "extra_count": 1_000_001 }),
            400,
        ),
    ] {
        let answer = alipay.control("/emulator/alipay/bill", body.clone()).await;
        assert_eq!(answer.status, status, "{body}");
        assert!(answer.json()["error"].is_string(), "{body}");
    }
}
