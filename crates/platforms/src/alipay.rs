//! Alipay open platform gateway (`openapi.alipay.com/gateway.do`), `shared/platforms.md` §2:
//! RSA2 (SHA256withRSA, PKCS#1 v1.5) request signing over the sorted raw parameters, and
//! verification of replies over the exact bytes of the `*_response` object as sent.
//!
//! The keys and signatures are [`crate::rsa2`]'s.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;
use time::OffsetDateTime;
use time::macros::{format_description, offset};

pub use crate::rsa2::{PrivateKey, PublicKey, private_key, public_key, sign, verify};

pub mod bill;
use crate::{PlatformError, PlatformHttp};

/// The real gateway.
pub const GATEWAY: &str = "https://openapi.alipay.com/gateway.do";

/// The string a request signature covers: every parameter but `sign` and the empty ones,
/// sorted by key, joined as `key=value` with raw (not URL-encoded) values.
pub fn signing_string<'a>(params: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let sorted: BTreeMap<&str, &str> = params
        .into_iter()
        .filter(|(key, value)| *key != "sign" && !value.is_empty())
        .collect();
    sorted
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// Which parameters an asynchronous notification's signature covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyRule {
    /// Every one but `sign` and `sign_type` ("rsaCheckV1"): trade notifications.
    WithoutSignType,
    /// Every one but `sign` ("rsaCheckV2"): open-platform messages.
    WithSignType,
}

/// Checks an asynchronous notification's form parameters (URL-decoded once, as they came)
/// against Alipay's public key, `shared/platforms.md` §4.2. A parameter sent twice, a name that
/// is not `[a-z0-9_]`, or a value holding `&` fails it: what is verified must be what is read.
/// A notification only says what to check: an order's state changes after a query confirms it.
pub fn verify_notify(key: &PublicKey, params: &[(String, String)], rule: NotifyRule) -> bool {
    let mut seen = std::collections::HashSet::new();
    if !params.iter().all(|(name, _)| seen.insert(name.as_str())) {
        return false;
    }
    // The signed text joins `name=value` with `&` and escapes nothing: a value holding `&`, or
    // a name that is not a plain one, could split the same text into other parameters.
    let plain = |name: &str| {
        !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    };
    if !params
        .iter()
        .all(|(name, value)| plain(name) && !value.contains('&'))
    {
        return false;
    }
    let Some((_, signature)) = params.iter().find(|(name, _)| name == "sign") else {
        return false;
    };
    let covered = params
        .iter()
        .filter(|(name, _)| rule == NotifyRule::WithSignType || name != "sign_type")
        .map(|(name, value)| (name.as_str(), value.as_str()));
    verify(key, &signing_string(covered), signature)
}

/// The exact text of the JSON object that is the value of `root` in `body`, from its `{` to the
/// matching `}` (strings and escapes respected): what Alipay's reply signature covers.
pub fn response_object<'a>(body: &'a str, root: &str) -> Option<&'a str> {
    let key = format!("\"{root}\"");
    let after_key = body.find(&key)? + key.len();
    let rest = &body[after_key..];
    let start = after_key + rest.find('{')?;
    if !body[after_key..start]
        .trim()
        .trim_start_matches(':')
        .trim()
        .is_empty()
    {
        return None;
    }
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for (offset, c) in body[start..].char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_string => escaped = true,
            '"' => in_string = !in_string,
            '{' if !in_string => depth += 1,
            '}' if !in_string => {
                depth -= 1;
                if depth == 0 {
                    return Some(&body[start..=start + offset]);
                }
            }
            _ => {}
        }
    }
    None
}

/// What `alipay.system.oauth.token` answers for an auth code.
#[derive(Clone, PartialEq, Eq)]
pub struct AlipayToken {
    /// `2088…`; empty for apps in OpenID mode.
    pub user_id: Option<String>,
    /// Set for apps in OpenID mode.
    pub open_id: Option<String>,
    pub union_id: Option<String>,
    pub access_token: String,
    pub expires_in_secs: u64,
}

impl std::fmt::Debug for AlipayToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlipayToken")
            .field("user_id", &self.user_id)
            .field("open_id", &self.open_id)
            .field("union_id", &self.union_id)
            .finish_non_exhaustive()
    }
}

/// A client for one Alipay app.
#[derive(Clone)]
pub struct AlipayClient {
    http: PlatformHttp,
    gateway: String,
    app_id: String,
    private_key: PrivateKey,
    alipay_public_key: PublicKey,
}

impl std::fmt::Debug for AlipayClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlipayClient")
            .field("gateway", &self.gateway)
            .field("app_id", &self.app_id)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct TokenBody {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    msg: Option<String>,
    #[serde(default)]
    sub_code: Option<String>,
    #[serde(default)]
    sub_msg: Option<String>,
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    open_id: Option<String>,
    #[serde(default)]
    union_id: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<Value>,
}

impl AlipayClient {
    /// `gateway` is [`GATEWAY`] in production, the emulator's `/alipay/gateway.do` locally.
    pub fn new(
        http: PlatformHttp,
        gateway: &str,
        app_id: &str,
        private_key_text: &str,
        alipay_public_key_text: &str,
    ) -> Result<Self, PlatformError> {
        Ok(AlipayClient {
            http,
            gateway: gateway.to_owned(),
            app_id: app_id.to_owned(),
            private_key: private_key(private_key_text)?,
            alipay_public_key: public_key(alipay_public_key_text)?,
        })
    }

    /// Trades a `my.getAuthCode` code for the user's ids (`alipay.system.oauth.token`).
    /// `now_unix_secs` becomes the request's timestamp, in China time as Alipay expects.
    pub async fn oauth_token(
        &self,
        code: &str,
        now_unix_secs: i64,
    ) -> Result<AlipayToken, PlatformError> {
        let method = "alipay.system.oauth.token";
        let timestamp = china_time(now_unix_secs)?;
        let mut params = vec![
            ("app_id", self.app_id.as_str()),
            ("method", method),
            ("format", "JSON"),
            ("charset", "utf-8"),
            ("sign_type", "RSA2"),
            ("timestamp", timestamp.as_str()),
            ("version", "1.0"),
            ("grant_type", "authorization_code"),
            ("code", code),
        ];
        let signature = sign(&self.private_key, &signing_string(params.iter().copied()));
        params.push(("sign", signature.as_str()));
        let response = self
            .http
            .client()
            .post(&self.gateway)
            .form(&params)
            .send()
            .await?;
        let body = PlatformHttp::text(response).await?;
        let (object, body_text) = self.verified_response(&body, method)?;
        let token: TokenBody = serde_json::from_str(object)
            .map_err(|e| PlatformError::BadAnswer(format!("{body_text}: {e}")))?;
        if let Some(sub_code) = token.sub_code.filter(|s| !s.is_empty()) {
            return Err(PlatformError::Refused {
                code: token
                    .code
                    .as_deref()
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(-1),
                message: format!(
                    "{sub_code} {}",
                    token.sub_msg.or(token.msg).unwrap_or_default()
                ),
            });
        }
        let access_token = token
            .access_token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                PlatformError::BadAnswer("oauth.token answered without access_token".into())
            })?;
        let user_id = token.user_id.filter(|u| !u.is_empty());
        let open_id = token.open_id.filter(|u| !u.is_empty());
        if user_id.is_none() && open_id.is_none() {
            return Err(PlatformError::BadAnswer(
                "oauth.token answered without user_id or open_id".into(),
            ));
        }
        let expires_in_secs = match token.expires_in {
            Some(Value::Number(n)) => n.as_u64().unwrap_or(0),
            Some(Value::String(s)) => s.parse().unwrap_or(0),
            _ => 0,
        };
        Ok(AlipayToken {
            user_id,
            open_id,
            union_id: token.union_id.filter(|u| !u.is_empty()),
            access_token,
            expires_in_secs,
        })
    }

    /// A trade notification's form (`application/x-www-form-urlencoded`, as it came): its
    /// parameters if it verifies with Alipay's key by the V1 rule, `None` otherwise.
    pub fn verified_notification(&self, body: &[u8]) -> Option<Vec<(String, String)>> {
        let params: Vec<(String, String)> = form_urlencoded::parse(body)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        verify_notify(
            &self.alipay_public_key,
            &params,
            NotifyRule::WithoutSignType,
        )
        .then_some(params)
    }

    /// Calls a gateway method with `biz_content` (and `extra` public parameters such as
    /// `notify_url`): its verified reply object. A reply whose `code` is not `10000` is
    /// [`PlatformError::PayRefused`] with its `sub_code` (`ACQ.TRADE_NOT_EXIST`, …).
    pub async fn call_biz(
        &self,
        method: &str,
        biz_content: &Value,
        extra: &[(&str, &str)],
        now_unix_secs: i64,
    ) -> Result<Value, PlatformError> {
        let timestamp = china_time(now_unix_secs)?;
        let biz = biz_content.to_string();
        let mut params = vec![
            ("app_id", self.app_id.as_str()),
            ("method", method),
            ("format", "JSON"),
            ("charset", "utf-8"),
            ("sign_type", "RSA2"),
            ("timestamp", timestamp.as_str()),
            ("version", "1.0"),
            ("biz_content", biz.as_str()),
        ];
        params.extend_from_slice(extra);
        let signature = sign(&self.private_key, &signing_string(params.iter().copied()));
        params.push(("sign", signature.as_str()));
        let response = self
            .http
            .client()
            .post(&self.gateway)
            .form(&params)
            .send()
            .await?;
        let body = PlatformHttp::text(response).await?;
        let (object, _) = self.verified_response(&body, method)?;
        let reply: Value = serde_json::from_str(object)
            .map_err(|e| PlatformError::BadAnswer(format!("{method}: {e}")))?;
        if reply["code"] != "10000" {
            return Err(PlatformError::PayRefused {
                status: reply["code"]
                    .as_str()
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0),
                code: reply["sub_code"]
                    .as_str()
                    .or_else(|| reply["code"].as_str())
                    .unwrap_or("UNKNOWN")
                    .to_owned(),
                message: reply["sub_msg"]
                    .as_str()
                    .or_else(|| reply["msg"].as_str())
                    .unwrap_or_default()
                    .to_owned(),
            });
        }
        Ok(reply)
    }

    /// [`AlipayClient::call_biz`] of a method about one trade: a genuine reply about another
    /// trade (replayed to this server) is no answer.
    async fn call_trade(
        &self,
        method: &str,
        biz_content: &Value,
        extra: &[(&str, &str)],
        out_trade_no: &str,
        now_unix_secs: i64,
    ) -> Result<Value, PlatformError> {
        let reply = self
            .call_biz(method, biz_content, extra, now_unix_secs)
            .await?;
        if reply["out_trade_no"] != out_trade_no {
            return Err(PlatformError::BadAnswer(format!(
                "a {method} reply about another order"
            )));
        }
        Ok(reply)
    }

    /// `alipay.trade.create` for a mini program (`JSAPI_PAY`): its `trade_no`, for
    /// `my.tradePay`. `buyer` is the user's id at Alipay: a `2088…` user id, or an open id.
    pub async fn trade_create(
        &self,
        trade: &TradeCreate,
        now_unix_secs: i64,
    ) -> Result<String, PlatformError> {
        let mut biz = serde_json::json!({
            "out_trade_no": trade.out_trade_no,
            "total_amount": yuan(trade.total_fen),
            "subject": trade.subject,
            "product_code": "JSAPI_PAY",
            "time_expire": trade.time_expire,
        });
        if is_user_id(&trade.buyer) {
            biz["buyer_id"] = Value::from(trade.buyer.as_str());
        } else {
            biz["buyer_open_id"] = Value::from(trade.buyer.as_str());
        }
        let reply = self
            .call_trade(
                "alipay.trade.create",
                &biz,
                &[("notify_url", trade.notify_url.as_str())],
                &trade.out_trade_no,
                now_unix_secs,
            )
            .await?;
        reply["trade_no"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| PlatformError::BadAnswer("trade.create without trade_no".into()))
    }

    /// `alipay.trade.query`: the trade as Alipay has it (`trade_status`, `total_amount`, …).
    pub async fn trade_query(
        &self,
        out_trade_no: &str,
        now_unix_secs: i64,
    ) -> Result<Value, PlatformError> {
        let biz = serde_json::json!({ "out_trade_no": out_trade_no });
        self.call_trade("alipay.trade.query", &biz, &[], out_trade_no, now_unix_secs)
            .await
    }

    /// `alipay.trade.close`: closes an unpaid trade.
    pub async fn trade_close(
        &self,
        out_trade_no: &str,
        now_unix_secs: i64,
    ) -> Result<(), PlatformError> {
        let biz = serde_json::json!({ "out_trade_no": out_trade_no });
        self.call_biz("alipay.trade.close", &biz, &[], now_unix_secs)
            .await?;
        Ok(())
    }

    /// `alipay.trade.refund` of `refund_fen` under `out_request_no` (the same number again is
    /// the same refund). `fund_change: "Y"` in the reply means money moved; anything else is
    /// to be confirmed with [`AlipayClient::refund_query`].
    pub async fn trade_refund(
        &self,
        out_trade_no: &str,
        out_request_no: &str,
        refund_fen: i64,
        reason: Option<&str>,
        now_unix_secs: i64,
    ) -> Result<Value, PlatformError> {
        let mut biz = serde_json::json!({
            "out_trade_no": out_trade_no,
            "out_request_no": out_request_no,
            "refund_amount": yuan(refund_fen),
        });
        if let Some(reason) = reason {
            biz["refund_reason"] = Value::from(reason);
        }
        self.call_trade(
            "alipay.trade.refund",
            &biz,
            &[],
            out_trade_no,
            now_unix_secs,
        )
        .await
    }

    /// `alipay.trade.fastpay.refund.query`: the refund as Alipay has it (`refund_status`
    /// `REFUND_SUCCESS` once done; no such refund answers without it).
    pub async fn refund_query(
        &self,
        out_trade_no: &str,
        out_request_no: &str,
        now_unix_secs: i64,
    ) -> Result<Value, PlatformError> {
        let biz = serde_json::json!({
            "out_trade_no": out_trade_no,
            "out_request_no": out_request_no,
        });
        let reply = self
            .call_biz(
                "alipay.trade.fastpay.refund.query",
                &biz,
                &[],
                now_unix_secs,
            )
            .await?;
        // A refund Alipay does not know answers without trade data; one it knows, with it.
        let about_another = |field: &str, ours: &str| {
            reply
                .get(field)
                .and_then(Value::as_str)
                .is_some_and(|theirs| !theirs.is_empty() && theirs != ours)
        };
        if about_another("out_trade_no", out_trade_no)
            || about_another("out_request_no", out_request_no)
        {
            return Err(PlatformError::BadAnswer(
                "a refund query reply about another refund".into(),
            ));
        }
        Ok(reply)
    }

    /// Finds the reply object (`<method>_response`, or `error_response`) and checks its
    /// signature over the exact bytes sent; an error reply without a signature is accepted
    /// unverified, as Alipay's SDKs do.
    fn verified_response<'a>(
        &self,
        body: &'a str,
        method: &str,
    ) -> Result<(&'a str, &'static str), PlatformError> {
        let root = format!("{}_response", method.replace('.', "_"));
        // A second root key after the signed object could smuggle fields past the signature.
        if body.matches(&format!("\"{root}\"")).count() > 1 {
            return Err(PlatformError::BadAnswer(
                "the reply names its response object twice".into(),
            ));
        }
        let (object, is_error) = match response_object(body, &root) {
            Some(object) => (object, false),
            None => (
                response_object(body, "error_response").ok_or_else(|| {
                    PlatformError::BadAnswer("no response object in the reply".into())
                })?,
                true,
            ),
        };
        let envelope: Value = serde_json::from_str(body)
            .map_err(|_| PlatformError::BadAnswer("the reply is not JSON".into()))?;
        match envelope["sign"].as_str() {
            Some(signature) => {
                let verified = verify(&self.alipay_public_key, object, signature)
                    || (object.contains("\\/")
                        && verify(
                            &self.alipay_public_key,
                            &object.replace("\\/", "/"),
                            signature,
                        ));
                if !verified {
                    return Err(PlatformError::Crypto(
                        "the reply's signature does not verify with the Alipay public key",
                    ));
                }
            }
            None if is_error => {}
            None => return Err(PlatformError::Crypto("the reply is not signed")),
        }
        Ok((
            object,
            if is_error {
                "error_response"
            } else {
                "response"
            },
        ))
    }
}

/// A mini-program trade to create.
#[derive(Debug, Clone)]
pub struct TradeCreate {
    pub out_trade_no: String,
    pub total_fen: i64,
    pub subject: String,
    /// The payer's id at Alipay: a `2088…` user id or an open id.
    pub buyer: String,
    pub notify_url: String,
    /// `yyyy-MM-dd HH:mm:ss` in China time.
    pub time_expire: Option<String>,
}

/// Whether `id` is an Alipay user id (`2088` and 12 more digits) rather than an open id.
fn is_user_id(id: &str) -> bool {
    id.len() == 16 && id.starts_with("2088") && id.bytes().all(|b| b.is_ascii_digit())
}

/// Fen as Alipay writes amounts: yuan with two decimals (`1.50`).
pub fn yuan(fen: i64) -> String {
    format!("{}.{:02}", fen / 100, (fen % 100).abs())
}

/// An amount as Alipay writes it (`1.5`, `1.50`, `2`) in fen; `None` for anything else.
pub fn fen_of(yuan: &str) -> Option<i64> {
    let digits = |t: &str| !t.is_empty() && t.len() <= 12 && t.bytes().all(|b| b.is_ascii_digit());
    let (whole, cents) = match yuan.split_once('.') {
        Some((whole, cents)) if digits(cents) && cents.len() <= 2 => (whole, cents),
        Some(_) => return None,
        None => (yuan, ""),
    };
    if !digits(whole) {
        return None;
    }
    let cents: i64 = format!("{cents:0<2}").parse().ok()?;
    whole
        .parse::<i64>()
        .ok()?
        .checked_mul(100)?
        .checked_add(cents)
}

/// `yyyy-MM-dd HH:mm:ss` in UTC+8.
pub fn china_time(unix_secs: i64) -> Result<String, PlatformError> {
    OffsetDateTime::from_unix_timestamp(unix_secs)
        .map_err(|_| PlatformError::Crypto("the clock is out of range"))?
        .to_offset(offset!(+8))
        .format(format_description!(
            "[year]-[month]-[day] [hour]:[minute]:[second]"
        ))
        .map_err(|_| PlatformError::Crypto("the clock is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_yuan_with_two_decimals_and_read_back_exactly() {
        assert_eq!(yuan(1), "0.01");
        assert_eq!(yuan(150), "1.50");
        assert_eq!(yuan(10_000_000_000), "100000000.00");
        for (text, fen) in [
            ("1.5", Some(150)),
            ("1.50", Some(150)),
            ("2", Some(200)),
            ("0.01", Some(1)),
        ] {
            assert_eq!(fen_of(text), fen, "{text}");
        }
        for bad in ["", "1.", ".5", "1.505", "-1", "1e2", "1,00", " 1"] {
            assert_eq!(fen_of(bad), None, "{bad:?}");
        }
        assert!(is_user_id("2088102146225135"));
        assert!(!is_user_id(
            "074a1CcTG1LelxKe4xQC0zgNdId0nxi95b5lsNpazWYoCo5"
        ));
    }

    #[test]
    fn the_signing_string_sorts_skips_empty_values_and_sign_and_keeps_raw_values() {
        let params = [
            ("timestamp", "2014-07-24 03:07:50"),
            ("app_id", "2014072300007148"),
            ("sign", "ignored"),
            ("method", "alipay.system.oauth.token"),
            ("notify_url", ""),
            ("charset", "utf-8"),
            ("code", "4b203fe6c11548bcabd8da5bb087a83b"),
            ("version", "1.0"),
            ("format", "JSON"),
            ("grant_type", "authorization_code"),
            ("sign_type", "RSA2"),
        ];
        assert_eq!(
            signing_string(params),
            "app_id=2014072300007148&charset=utf-8&code=4b203fe6c11548bcabd8da5bb087a83b&format=JSON&grant_type=authorization_code&method=alipay.system.oauth.token&sign_type=RSA2&timestamp=2014-07-24 03:07:50&version=1.0"
        );
    }

    #[test]
    fn the_response_object_is_the_exact_text_with_its_escapes() {
        let body = r#"{"alipay_x_response":{"msg":"a \"}\" b","url":"https:\/\/x","n":{"k":1}},"sign":"abc"}"#;
        assert_eq!(
            response_object(body, "alipay_x_response"),
            Some(r#"{"msg":"a \"}\" b","url":"https:\/\/x","n":{"k":1}}"#)
        );
        assert_eq!(response_object(body, "error_response"), None);
        assert_eq!(
            response_object(r#"{"alipay_x_response":"{}"}"#, "alipay_x_response"),
            None
        );
        assert_eq!(
            response_object(r#"{"alipay_x_response":{"a":1"#, "alipay_x_response"),
            None
        );
    }

    #[test]
    fn china_time_is_utc_plus_eight() {
        assert_eq!(china_time(1_406_142_470).unwrap(), "2014-07-24 03:07:50");
    }
}

#[cfg(test)]
mod notify_tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// T9 of platforms.md: alipay-sdk-nodejs' trade notification, verified without `sign_type`.
    const T9_KEY: &str = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAqObrdC7hrgAVM98tK0nv3hSQRGGKT4lBsQjHiGjeYZjOPIPHR5knm2jnnz/YGIXIofVHkA/tAlBAd5DrY7YpvI4tP5EONLtZKC2ghBMx7McI2wRD0xiqzxOQr1FuhZGJ8/AUokBzJrzY+aGX2xcOrxFYRlFilvVLTXg4LWjR1tdPkO6+i7wQZAIVMClPkwVRZEbaERRHlKqTzv2gGv5rDU8gRoe1LeaN+6BlbTqHWkQcNCUNrA8C6l17XAXGKDsm/9TFWwO8EPHHHCaQdjtV5/FdcWIt+L8SR1ss7EXTjYDFtxcKVv9rEoY1lX8T4mX+GbXfZHraG5NCF1+XioL5JwIDAQAB";

    fn t9() -> Vec<(String, String)> {
        [
            ("gmt_create", "2019-08-15 15:56:22"),
            ("charset", "utf-8"),
            ("seller_email", "z97-yuquerevenue@service.aliyun.com"),
            ("subject", "语雀空间 500人规模"),
            ("sign", "QfTb8tqE1BMhS5qAnXtvsF3/jBkEvu9q9en0pdbBUDDjvKycZhQb7h8GDs4FKfi049PynaNuatxSgLb/nLWZpXyyh0LEWdK2S6Ri7nPwrVgOs08zugLO20vOQz44y3ti2Ncm8/wZts1Fr2gZ7pShnVX3d1B50hbsXnObT1r/U8ONNQjWXd0HIul4TG+Q3fm3svmSvFEy0WnzuhcyHPX5Gm4ELNctL6Qd5YniGJFNcc7kopHYtI/XD9YCKCH6Ct02rzUs9i11C9CsadtZn+WhxF26Dqt9sGEFajkJ8cxUTLi8+VCpLHsgPE8P0y095uQcDdK0YjCh4x7wVSov+lrmOQ=="),
            ("buyer_id", "2088102534368455"),
            ("invoice_amount", "0.10"),
            ("notify_id", "2019081500222155624068450559358070"),
            ("fund_bill_list", "[{\"amount\":\"0.10\",\"fundChannel\":\"ALIPAYACCOUNT\"}]"),
            ("notify_type", "trade_status_sync"),
            ("trade_status", "TRADE_SUCCESS"),
            ("receipt_amount", "0.10"),
            ("buyer_pay_amount", "0.10"),
            ("app_id", "2019073166072302"),
            ("sign_type", "RSA2"),
            ("seller_id", "2088531891668739"),
            ("gmt_payment", "2019-08-15 15:56:24"),
            ("notify_time", "2019-08-15 15:56:25"),
            ("version", "1.0"),
            ("out_trade_no", "20190815155618536-564-57"),
            ("total_amount", "0.10"),
            ("trade_no", "2019081522001468450512505578"),
            ("auth_app_id", "2019073166072302"),
            ("buyer_logon_id", "xud***@126.com"),
            ("point_amount", "0.00"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    #[test]
    fn t9_a_trade_notification_verifies_without_its_sign_type() {
        let key = public_key(T9_KEY).unwrap();
        assert!(verify_notify(&key, &t9(), NotifyRule::WithoutSignType));
        assert!(!verify_notify(&key, &t9(), NotifyRule::WithSignType));
        // A changed amount, a parameter sent twice, no signature: refused.
        let mut changed = t9();
        changed
            .iter_mut()
            .find(|(k, _)| k == "total_amount")
            .unwrap()
            .1 = "100.00".into();
        assert!(!verify_notify(&key, &changed, NotifyRule::WithoutSignType));
        let mut twice = t9();
        twice.push(("total_amount".into(), "100.00".into()));
        assert!(!verify_notify(&key, &twice, NotifyRule::WithoutSignType));
        let unsigned: Vec<_> = t9().into_iter().filter(|(k, _)| k != "sign").collect();
        assert!(!verify_notify(&key, &unsigned, NotifyRule::WithoutSignType));
        // The same signed text split into other parameters: `subject` swallowing what follows.
        let mut split: Vec<(String, String)> = t9()
            .into_iter()
            .filter(|(k, _)| k != "subject" && k != "total_amount")
            .collect();
        split.push((
            "subject".into(),
            "语雀空间 500人规模&total_amount=0.10".into(),
        ));
        assert!(!verify_notify(&key, &split, NotifyRule::WithoutSignType));
    }

    #[test]
    fn t10_an_open_platform_message_keeps_its_sign_type() {
        let key = public_key(
            "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAk6DCsBIUhWriFohzRV8F
ic6oQWNnLKKILNk97VU5qcHEuxYzCujKoyva5gy1170mFJw4IcgJF8AyS7iDUwzA
wF4Pp9CpWxDhUhe7mdQJhjBmvTcPLGFFrzlj6unO5lAcbdwaxPUtSxOaNxPJGrTK
/wnKQSbjTMMltp1J68q2Tfgrsn/NdZ6lrxO9rvmky8kowqaH5NjntyHO59jCGabM
j5sI14z8N61wB/QuIJrDuzIPMPrSNbq0cOWcSCDG09oUHTp9fk7suDB8UiFcmVTX
OvK3d4HbeX8V9YsEMxrwxEoYgRRj6K2qrC6oxw480cqf2ueumCmHg6xrcgkyXK81
hwIDAQAB
-----END PUBLIC KEY-----",
        )
        .unwrap();
        let params: Vec<(String, String)> = [
            ("app_id", "2017122801303261"),
            ("charset", "UTF-8"),
            ("commodity_order_id", "2019030800000018079639"),
            ("contactor", "技术支持测试的公司"),
            ("merchant_pid", "2088721996721370"),
            ("method", "alipay.open.servicemarket.order.notify"),
            ("name", "技术支持测试的公司"),
            ("notify_id", "2019030800222102023008121054923345"),
            ("notify_time", "2019-03-08 10:20:23"),
            ("notify_type", "servicemarket_order_notify"),
            ("order_item_num", "1"),
            ("order_ticket", "29b1c37d99ab48c5bd5bdaeaeaefbB37"),
            ("order_time", "2019-03-08 10:20:08"),
            ("phone", "17826894615"),
            ("service_code", "58621634"),
            ("sign", "MsK5SCw8oqLw4f0hiNSd5OVGXxBY3wnQeT8vn5PklJSZFWSZbK4hQbNvkp4ZezeXQH514cEv0ul6Qow8yh6e6yM06LfEL+EZjcpZ0nxzFGRNQ5qq2AUc1OaXQdk92AGvxh+Iq4NGpPQFBd4D8EBJa3NJd8+czMfQskceosOQFqUtLQMYa5DPs+VpN7VM5BdXjaVIuKn5d9Wm2B9dI9ObIM+YRySDkZZPv14DVmUvcrcqJfOR8aHvtSd7B4l92wUQPQgQKNcOQho7xOHS/Bk+Y74AZL2y7TkNmdDoq9OGsThuF5tDW9rI9nVwXxOtsuB+bstra+W7aw9x9DvkKgdSRw=="),
            ("sign_type", "RSA2"),
            ("timestamp", "2019-03-08 10:20:23"),
            ("title", "麦禾商城模版"),
            ("total_price", "0.00"),
            ("version", "1.0"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert!(verify_notify(&key, &params, NotifyRule::WithSignType));
        assert!(!verify_notify(&key, &params, NotifyRule::WithoutSignType));
    }
}
