//! WeChat Pay API v3 (`api.mch.weixin.qq.com`), `shared/platforms.md` §3: the merchant's
//! request signature (the `Authorization` header), the signature of `wx.requestPayment`'s
//! parameters, verifying a reply or a notification over its raw body (the key chosen by
//! `Wechatpay-Serial`, the timestamp within 300 s, `WECHATPAY/SIGNTEST/` probes failing), and
//! decrypting a notification's resource with the merchant's APIv3 key (AES-256-GCM).

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;

use crate::rsa2::{PrivateKey, PublicKey, private_key, public_key, sign, verify_bytes};

pub mod bill;
use crate::{PlatformError, PlatformHttp};

/// The real API.
pub const API: &str = "https://api.mch.weixin.qq.com";
/// How far a reply's or a notification's timestamp may be from now.
pub const MAX_SKEW_SECS: i64 = 300;
/// The start of the signatures of the probes WeChat Pay sends to see that they fail.
const PROBE: &str = "WECHATPAY/SIGNTEST/";

/// What a request's signature covers: five lines, each ending in `\n`.
pub fn request_message(
    method: &str,
    canonical_url: &str,
    timestamp: i64,
    nonce: &str,
    body: &str,
) -> String {
    format!("{method}\n{canonical_url}\n{timestamp}\n{nonce}\n{body}\n")
}

/// A merchant: its number, its API certificate's serial and private key.
pub struct Merchant {
    pub mchid: String,
    /// The merchant API certificate's serial, uppercase hex.
    pub serial_no: String,
    key: PrivateKey,
}

impl std::fmt::Debug for Merchant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Merchant")
            .field("mchid", &self.mchid)
            .field("serial_no", &self.serial_no)
            .finish_non_exhaustive()
    }
}

impl Merchant {
    pub fn new(mchid: &str, serial_no: &str, private_key_pem: &str) -> Result<Self, PlatformError> {
        Ok(Merchant {
            mchid: mchid.to_owned(),
            serial_no: serial_no.to_ascii_uppercase(),
            key: private_key(private_key_pem)?,
        })
    }

    /// The `Authorization` header of a request: `body` exactly as sent (`""` without one).
    pub fn authorization(
        &self,
        method: &str,
        canonical_url: &str,
        timestamp: i64,
        nonce: &str,
        body: &str,
    ) -> String {
        let signature = sign(
            &self.key,
            &request_message(method, canonical_url, timestamp, nonce, body),
        );
        format!(
            "WECHATPAY2-SHA256-RSA2048 mchid=\"{}\",nonce_str=\"{nonce}\",timestamp=\"{timestamp}\",serial_no=\"{}\",signature=\"{signature}\"",
            self.mchid, self.serial_no
        )
    }

    /// `paySign` of `wx.requestPayment`: over the appid, the time, the nonce and
    /// `prepay_id=…` (its `signType`, `RSA`, is not signed).
    pub fn pay_sign(&self, appid: &str, timestamp: &str, nonce: &str, package: &str) -> String {
        sign(
            &self.key,
            &format!("{appid}\n{timestamp}\n{nonce}\n{package}\n"),
        )
    }
}

/// The keys WeChat Pay signs with, by serial: platform certificates' keys and the WeChat Pay
/// public key (`PUB_KEY_ID_…`), several at once while a merchant migrates.
#[derive(Debug, Default, Clone)]
pub struct PlatformKeys {
    keys: Vec<(String, PublicKey)>,
}

impl PlatformKeys {
    /// Adds the key (PEM or base64, SPKI or PKCS#1) that signs with `serial`.
    pub fn with(mut self, serial: &str, key: &str) -> Result<Self, PlatformError> {
        self.keys.push((serial.to_owned(), public_key(key)?));
        Ok(self)
    }

    fn get(&self, serial: &str) -> Option<&PublicKey> {
        self.keys
            .iter()
            .find(|(known, _)| known.eq_ignore_ascii_case(serial))
            .map(|(_, key)| key)
    }
}

/// The signature headers of a reply or a notification.
#[derive(Debug, Clone, Copy)]
pub struct Signed<'a> {
    /// `Wechatpay-Timestamp`.
    pub timestamp: &'a str,
    /// `Wechatpay-Nonce`.
    pub nonce: &'a str,
    /// `Wechatpay-Signature`.
    pub signature: &'a str,
    /// `Wechatpay-Serial`.
    pub serial: &'a str,
}

/// Why a reply or a notification does not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unverified {
    #[error("a probe of WeChat Pay's (its signature starts with WECHATPAY/SIGNTEST/)")]
    Probe,
    #[error("its timestamp is not within {MAX_SKEW_SECS} s of now")]
    Stale,
    #[error("no key of this merchant has its serial")]
    UnknownSerial,
    #[error("its signature does not verify")]
    BadSignature,
}

/// Checks `body`, as it came, against its signature headers at `now_secs`, before anything of
/// it is parsed.
pub fn verify(
    keys: &PlatformKeys,
    signed: Signed<'_>,
    body: &[u8],
    now_secs: i64,
) -> Result<(), Unverified> {
    if signed.signature.starts_with(PROBE) {
        return Err(Unverified::Probe);
    }
    let timestamp: i64 = signed.timestamp.parse().map_err(|_| Unverified::Stale)?;
    if now_secs.abs_diff(timestamp) >= MAX_SKEW_SECS.unsigned_abs() {
        return Err(Unverified::Stale);
    }
    let key = keys.get(signed.serial).ok_or(Unverified::UnknownSerial)?;
    let mut message = Vec::with_capacity(body.len() + 64);
    message.extend_from_slice(format!("{}\n{}\n", signed.timestamp, signed.nonce).as_bytes());
    message.extend_from_slice(body);
    message.push(b'\n');
    if verify_bytes(key, &message, signed.signature) {
        Ok(())
    } else {
        Err(Unverified::BadSignature)
    }
}

/// A notification's envelope.
#[derive(Debug, Clone, Deserialize)]
pub struct Notification {
    pub id: String,
    pub create_time: String,
    pub event_type: String,
    pub resource_type: String,
    #[serde(default)]
    pub summary: String,
    pub resource: Resource,
}

/// A notification's encrypted resource.
#[derive(Debug, Clone, Deserialize)]
pub struct Resource {
    #[serde(default)]
    pub original_type: String,
    pub algorithm: String,
    pub ciphertext: String,
    #[serde(default)]
    pub associated_data: String,
    pub nonce: String,
}

/// Decrypts a resource with the merchant's APIv3 key (its 32 characters as bytes).
pub fn decrypt(api_v3_key: &[u8], resource: &Resource) -> Result<Vec<u8>, PlatformError> {
    if resource.algorithm != "AEAD_AES_256_GCM" {
        return Err(PlatformError::Crypto("a resource not in AEAD_AES_256_GCM"));
    }
    let nonce = resource.nonce.as_bytes();
    if nonce.len() != 12 {
        return Err(PlatformError::Crypto("a resource's nonce is not 12 bytes"));
    }
    let ciphertext = STANDARD
        .decode(&resource.ciphertext)
        .map_err(|_| PlatformError::Crypto("a resource's ciphertext is not base64"))?;
    let payload = Payload {
        msg: &ciphertext,
        aad: resource.associated_data.as_bytes(),
    };
    let nonce = Nonce::from_slice(nonce);
    let plain = match api_v3_key.len() {
        32 => Aes256Gcm::new_from_slice(api_v3_key)
            .map_err(|_| PlatformError::Crypto("an APIv3 key is 32 bytes"))?
            .decrypt(nonce, payload),
        // Only wechatpay-go's test vector has a 16-byte key: never a merchant.
        #[cfg(test)]
        16 => aes_gcm::Aes128Gcm::new_from_slice(api_v3_key)
            .map_err(|_| PlatformError::Crypto("an APIv3 key is 32 bytes"))?
            .decrypt(nonce, payload),
        _ => return Err(PlatformError::Crypto("an APIv3 key is 32 bytes")),
    };
    plain.map_err(|_| PlatformError::Crypto("a resource does not decrypt with the APIv3 key"))
}

/// A mini-program order (`POST /v3/pay/transactions/jsapi`): the money in fen.
#[derive(Debug, Clone, serde::Serialize)]
pub struct JsapiOrder {
    pub appid: String,
    pub description: String,
    pub out_trade_no: String,
    /// RFC 3339, at least a minute ahead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_expire: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attach: Option<String>,
    pub notify_url: String,
    pub total_fen: i64,
    pub payer_openid: String,
}

/// What `wx.requestPayment` takes, signed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestPayment {
    pub time_stamp: String,
    pub nonce_str: String,
    pub package: String,
    pub sign_type: &'static str,
    pub pay_sign: String,
}

/// A client of WeChat Pay API v3 for one merchant: every request signed, every successful
/// reply verified before it is read.
#[derive(Debug)]
pub struct WechatPayClient {
    http: PlatformHttp,
    base: String,
    merchant: Merchant,
    keys: PlatformKeys,
}

/// 32 characters of `[0-9a-zA-Z]`.
fn nonce() -> String {
    use rsa::rand_core::RngCore;
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut bytes = [0u8; 32];
    rsa::rand_core::OsRng.fill_bytes(&mut bytes);
    bytes
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect()
}

impl WechatPayClient {
    /// `base_url` is [`API`] (or the emulator's `http://…/wechatpay`).
    pub fn new(http: PlatformHttp, base_url: &str, merchant: Merchant, keys: PlatformKeys) -> Self {
        WechatPayClient {
            http,
            base: base_url.trim_end_matches('/').to_owned(),
            merchant,
            keys,
        }
    }

    /// A request with the merchant's `Authorization` over its path, query and `body`.
    fn authorized(
        &self,
        method: reqwest::Method,
        url: reqwest::Url,
        body: &str,
        now_secs: i64,
    ) -> reqwest::RequestBuilder {
        let canonical = match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        };
        let authorization =
            self.merchant
                .authorization(method.as_str(), &canonical, now_secs, &nonce(), body);
        self.http
            .client()
            .request(method, url)
            .header("authorization", authorization)
            .header("accept", "application/json")
    }

    /// Sends a signed request; the verified reply's status and body.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<String>,
        now_secs: i64,
    ) -> Result<(u16, String), PlatformError> {
        let url = reqwest::Url::parse(&format!("{}{path}", self.base))
            .map_err(|e| PlatformError::BadAnswer(format!("a bad URL: {e}")))?;
        let text = body.unwrap_or_default();
        let mut request = self.authorized(method, url, &text, now_secs);
        if !text.is_empty() {
            request = request
                .header("content-type", "application/json")
                .body(text);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let (ts, nonce, signature, serial) = (
            header("wechatpay-timestamp"),
            header("wechatpay-nonce"),
            header("wechatpay-signature"),
            header("wechatpay-serial"),
        );
        let body = PlatformHttp::text(response).await?;
        if !(200..300).contains(&status) {
            // Refusals are not signed: read, never trusted for more than their code.
            let refusal: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            return Err(PlatformError::PayRefused {
                status,
                code: refusal["code"].as_str().unwrap_or("UNKNOWN").to_owned(),
                message: refusal["message"].as_str().unwrap_or_default().to_owned(),
            });
        }
        let signed = Signed {
            timestamp: &ts,
            nonce: &nonce,
            signature: &signature,
            serial: &serial,
        };
        verify(&self.keys, signed, body.as_bytes(), now_secs).map_err(|_| {
            PlatformError::Crypto("a WeChat Pay reply whose signature does not verify")
        })?;
        Ok((status, body))
    }

    /// Places a mini-program order at `now_secs` (Unix seconds: requests are signed with the
    /// time, and replies checked against it); its `prepay_id`. The same order again answers the
    /// same id.
    pub async fn jsapi(&self, order: &JsapiOrder, now_secs: i64) -> Result<String, PlatformError> {
        let body = serde_json::json!({
            "appid": order.appid,
            "mchid": self.merchant.mchid,
            "description": order.description,
            "out_trade_no": order.out_trade_no,
            "time_expire": order.time_expire,
            "attach": order.attach,
            "notify_url": order.notify_url,
            "amount": { "total": order.total_fen, "currency": "CNY" },
            "payer": { "openid": order.payer_openid },
        });
        let mut body = body;
        if let Some(fields) = body.as_object_mut() {
            fields.retain(|_, v| !v.is_null());
        }
        let (_, reply) = self
            .call(
                reqwest::Method::POST,
                "/v3/pay/transactions/jsapi",
                Some(body.to_string()),
                now_secs,
            )
            .await?;
        let reply: serde_json::Value = serde_json::from_str(&reply)
            .map_err(|e| PlatformError::BadAnswer(format!("a jsapi reply: {e}")))?;
        reply["prepay_id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| PlatformError::BadAnswer("a jsapi reply without prepay_id".into()))
    }

    /// The order as WeChat Pay has it (its `trade_state`, amount, payer, …).
    pub async fn query(
        &self,
        out_trade_no: &str,
        now_secs: i64,
    ) -> Result<serde_json::Value, PlatformError> {
        let path = format!(
            "/v3/pay/transactions/out-trade-no/{}?mchid={}",
            path_segment(out_trade_no),
            self.merchant.mchid
        );
        let (_, reply) = self
            .call(reqwest::Method::GET, &path, None, now_secs)
            .await?;
        let reply: serde_json::Value = serde_json::from_str(&reply)
            .map_err(|e| PlatformError::BadAnswer(format!("a query reply: {e}")))?;
        // A genuine reply about another order (replayed within its 300 s) is no answer.
        if reply["out_trade_no"] != out_trade_no || reply["mchid"] != self.merchant.mchid.as_str() {
            return Err(PlatformError::BadAnswer(
                "a query reply about another order".into(),
            ));
        }
        Ok(reply)
    }

    /// Closes an unpaid order.
    pub async fn close(&self, out_trade_no: &str, now_secs: i64) -> Result<(), PlatformError> {
        let path = format!(
            "/v3/pay/transactions/out-trade-no/{}/close",
            path_segment(out_trade_no)
        );
        let body = serde_json::json!({ "mchid": self.merchant.mchid }).to_string();
        self.call(reqwest::Method::POST, &path, Some(body), now_secs)
            .await?;
        Ok(())
    }

    /// Refunds (part of) a paid order; WeChat Pay's Refund object (`status` is `PROCESSING`
    /// at first, then `SUCCESS`, `ABNORMAL` or `CLOSED`). The same `out_refund_no` again is the
    /// same refund.
    pub async fn refund(
        &self,
        refund: &RefundRequest,
        now_secs: i64,
    ) -> Result<serde_json::Value, PlatformError> {
        let mut body = serde_json::json!({
            "out_trade_no": refund.out_trade_no,
            "out_refund_no": refund.out_refund_no,
            "reason": refund.reason,
            "notify_url": refund.notify_url,
            "amount": { "refund": refund.refund_fen, "total": refund.total_fen, "currency": "CNY" },
        });
        if let Some(fields) = body.as_object_mut() {
            fields.retain(|_, v| !v.is_null());
        }
        let (_, reply) = self
            .call(
                reqwest::Method::POST,
                "/v3/refund/domestic/refunds",
                Some(body.to_string()),
                now_secs,
            )
            .await?;
        refund_reply(&reply, &refund.out_refund_no)
    }

    /// A refund as WeChat Pay has it.
    pub async fn query_refund(
        &self,
        out_refund_no: &str,
        now_secs: i64,
    ) -> Result<serde_json::Value, PlatformError> {
        let path = format!(
            "/v3/refund/domestic/refunds/{}",
            path_segment(out_refund_no)
        );
        let (_, reply) = self
            .call(reqwest::Method::GET, &path, None, now_secs)
            .await?;
        refund_reply(&reply, out_refund_no)
    }

    /// `wx.requestPayment`'s parameters for a placed order, signed.
    pub fn request_payment(&self, appid: &str, prepay_id: &str, now_secs: i64) -> RequestPayment {
        let time_stamp = now_secs.to_string();
        let nonce_str = nonce();
        let package = format!("prepay_id={prepay_id}");
        let pay_sign = self
            .merchant
            .pay_sign(appid, &time_stamp, &nonce_str, &package);
        RequestPayment {
            time_stamp,
            nonce_str,
            package,
            sign_type: "RSA",
            pay_sign,
        }
    }
}

/// A refund to ask of WeChat Pay.
#[derive(Debug, Clone)]
pub struct RefundRequest {
    pub out_trade_no: String,
    pub out_refund_no: String,
    pub reason: Option<String>,
    pub notify_url: Option<String>,
    pub refund_fen: i64,
    /// The order's amount, which WeChat Pay checks.
    pub total_fen: i64,
}

/// A verified refund reply, if it is about `out_refund_no` (a genuine reply about another
/// refund, replayed within its 300 s, is no answer).
fn refund_reply(reply: &str, out_refund_no: &str) -> Result<serde_json::Value, PlatformError> {
    let reply: serde_json::Value = serde_json::from_str(reply)
        .map_err(|e| PlatformError::BadAnswer(format!("a refund reply: {e}")))?;
    if reply["out_refund_no"] != out_refund_no {
        return Err(PlatformError::BadAnswer(
            "a refund reply about another refund".into(),
        ));
    }
    Ok(reply)
}

/// A path segment percent-encoded (an order number may hold `|` and `*`).
fn path_segment(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use rsa::RsaPrivateKey;
    use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};

    use super::*;

    /// T3 of platforms.md: wechatpay-go's notification test, its certificate's public key
    /// (taken out with `openssl x509 -pubkey`), headers and body.
    const T3_KEY: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA2VCTd91fnUn73Xy9DLvt
/V62TVxRTEEstVdeRaZ3B3leO0pldE806mXO4RwdHXagHQ4vGeZN0yqm++rDsGK+
U3AH7kejyD2pXshNP9Cq5YwbptiLGtjcquw4HNxJQUOmDeJf2vg6byms9RUipiq4
SzbJKqJFlUpbuIPDpSpWz10PYmyCNeDGUUK65E5h2B834uxl1zNLYQCrkdBzb8oU
xwYeP5a2DNxmjL5lsJML7DGr5znsevnoqGRwTm9fxCGfy8wus7hwKz6clt3Whmmd
a7UAdb1c08hEQFVRbF14AR73xbnd8N0obCWJPCbzMCtkaSef4FdEEgEXJiw0VAJT
8wIDAQAB
-----END PUBLIC KEY-----";
    const T3_SIGNATURE: &str = "tJHIiIS9eB2hAYstmAmbbD3ZE5LiIm/Ug5tuL4fC0YOFRWIHV39UFIZXC0e9Wl6lBu6sKvkqDkzpqzBsVHyXFlbYZTOQrVdG4b6LfTnK4mikv9++ixJMd3vTf2yCqvBkh98zs3Ds5zsYQakzbcwhmw4fMJs4nPLws28H0UW9FjDR//rxELLwXvV1VEA1IBLX70xptjL8hrfUjEE8kkry6yNJTHZRU8CAc7qHli2Ng1V1qb9ARbK8A3ThmFmPQvRGrapI/jS2laKKgYUmfdEdkNO6B2Cke5e8VTxY406ArAmQ90GAihDwIcb16TQMnzCMBoutnwZKNiKRACrFmtxw2Q==";
    const T3_BODY: &str = "{\"id\":\"3119dfba-e649-5eec-ab1e-3412bc4d2e17\",\"create_time\":\"2021-06-24T16:37:26+08:00\",\"resource_type\":\"encrypt-resource\",\"event_type\":\"PAYSCORE.USER_OPEN_SERVICE\",\"summary\":\"签约成功\",\"resource\":{\"original_type\":\"payscore\",\"algorithm\":\"AEAD_AES_256_GCM\",\"ciphertext\":\"YDS3lKPaC4Y52Gf3uhft5qUBlIa8b428AWTtTauHQfQrRw+X1WpiuHIDy0vo1Vd6VEq67aVyqPdDYMkRVSDaZL3iZttevRMOoPKMifozg6XPWjIZumks/GpT48lI4NizyeaqLBokNebthah3o1H76qSlO9NkDjp9bzmKLEYYH9TEklFUpsvPqOTOcgSLgh21YJXYR7dEBXFgRLiNIKRgO5JdXh1hccRUAlyVWxE54PXpnQ==\",\"associated_data\":\"payscore\",\"nonce\":\"Kj7QIyUiYx1q\"}}";
    const T3_NOW: i64 = 1_624_523_846;

    fn t3_signed(signature: &str) -> Signed<'_> {
        Signed {
            timestamp: "1624523846",
            nonce: "EcZ9Cmy4Xyx1i6RlJQzLcCyEqDa26NBz",
            signature,
            serial: "D7CE59D1F522D701",
        }
    }

    #[test]
    fn t3_a_real_notification_verifies_and_decrypts() {
        let keys = PlatformKeys::default()
            .with("D7CE59D1F522D701", T3_KEY)
            .unwrap();
        verify(&keys, t3_signed(T3_SIGNATURE), T3_BODY.as_bytes(), T3_NOW).unwrap();
        let notification: Notification = serde_json::from_str(T3_BODY).unwrap();
        assert_eq!(notification.event_type, "PAYSCORE.USER_OPEN_SERVICE");
        let plain = decrypt(b"testMchAPIv3Key0", &notification.resource).unwrap();
        assert_eq!(
            String::from_utf8(plain).unwrap(),
            "{\"mchid\":\"1234567890\",\"appid\":\"054aa7d7a2a54ab5898df65bd96f001c\",\"create_time\":\"2020-06-30T12:12:00+08:00\",\"out_contract_code\":\"21640bdbd08e473e828f3206a2741c6e\"}"
        );
    }

    #[test]
    fn t3_refuses_changed_bodies_probes_old_timestamps_and_unknown_serials() {
        let keys = PlatformKeys::default()
            .with("d7ce59d1f522d701", T3_KEY)
            .unwrap();
        let changed = T3_BODY.replace("签约成功", "签约失败");
        assert_eq!(
            verify(&keys, t3_signed(T3_SIGNATURE), changed.as_bytes(), T3_NOW),
            Err(Unverified::BadSignature)
        );
        let probe = format!("{PROBE}{T3_SIGNATURE}");
        assert_eq!(
            verify(&keys, t3_signed(&probe), T3_BODY.as_bytes(), T3_NOW),
            Err(Unverified::Probe)
        );
        for now in [T3_NOW + MAX_SKEW_SECS, T3_NOW - MAX_SKEW_SECS] {
            assert_eq!(
                verify(&keys, t3_signed(T3_SIGNATURE), T3_BODY.as_bytes(), now),
                Err(Unverified::Stale)
            );
        }
        verify(
            &keys,
            t3_signed(T3_SIGNATURE),
            T3_BODY.as_bytes(),
            T3_NOW + 299,
        )
        .unwrap();
        let other = Signed {
            serial: "PUB_KEY_ID_0000",
            ..t3_signed(T3_SIGNATURE)
        };
        assert_eq!(
            verify(&keys, other, T3_BODY.as_bytes(), T3_NOW),
            Err(Unverified::UnknownSerial)
        );
        // The wrong key under the right serial: the signature does not verify.
        let wrong = RsaPrivateKey::new(&mut rand_core(), 2048).unwrap();
        let wrong = wrong
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        let keys = PlatformKeys::default()
            .with("D7CE59D1F522D701", &wrong)
            .unwrap();
        assert_eq!(
            verify(&keys, t3_signed(T3_SIGNATURE), T3_BODY.as_bytes(), T3_NOW),
            Err(Unverified::BadSignature)
        );
    }

    #[test]
    fn t5_a_payment_resource_decrypts_with_a_32_byte_key() {
        let resource = Resource {
            original_type: "transaction".into(),
            algorithm: "AEAD_AES_256_GCM".into(),
            ciphertext: "vqRwKLlM3JC1QfMn0EZB6a4a4j96IWLTM1NaeFCtzWMcDVI1J5ydahajGL2QuEUarB/koJOKk8r6he+Md+oGbP2S/g4+4otbhbGMLG4rsN5RvxRDo7KE2k19t1ZP0ARjztjD44m6IkTuHdXmQ/DqOVg56S70ppTRcbcWkCqTnbdjaK3j9VwEXcxTCpS2t1VvVVgOZEFxfVT7SfGfkhWFoxumIXkUvZSjckBrsxxWaIYcbzsWHNaqYqTf5vADfI5b9fNlCwWEdZGlJztpb0tm8XuB3X3RHguXof3aEzhFY/ZHXbl91LYvmc6wcELPgpi3ktqPsSnZMgc+bTL8te1tXJN9dwiLk0EvNy/Om9BOMEKYRVBYFgKpzzHJiN9qEPvX154u1EEHeaV4cPtHyD/kxiXDbVxJ6dooksZ8aZRSgfqEzOHHJ8B0TK6oVHX3SXhVjdfmo/J2RjdZ4JlAtzBKyIwFF6oc50K1b13sHyuHDNqPQjMOIjI3".into(),
            associated_data: "transaction".into(),
            nonce: "ABCDEFGHIJKL".into(),
        };
        let plain = decrypt(b"0123456789abcdef0123456789abcdef", &resource).unwrap();
        assert_eq!(
            String::from_utf8(plain).unwrap(),
            "{\"appid\":\"wx0000000000000000\",\"mchid\":\"1900000000\",\"out_trade_no\":\"T0001\",\"transaction_id\":\"4200000000000000000000000001\",\"trade_type\":\"JSAPI\",\"trade_state\":\"SUCCESS\",\"trade_state_desc\":\"ok\",\"bank_type\":\"OTHERS\",\"success_time\":\"2024-01-01T12:00:00+08:00\",\"payer\":{\"openid\":\"oTEST\"},\"amount\":{\"total\":1,\"payer_total\":1,\"currency\":\"CNY\",\"payer_currency\":\"CNY\"}}"
        );
        // Another associated data, a wrong key, a short nonce, another algorithm: refused.
        let refused = |change: &dyn Fn(&mut Resource), key: &[u8]| {
            let mut bad = resource.clone();
            change(&mut bad);
            decrypt(key, &bad).is_err()
        };
        let key = b"0123456789abcdef0123456789abcdef";
        assert!(refused(&|r| r.associated_data = "refund".into(), key));
        assert!(refused(&|_| {}, b"0123456789abcdef0123456789abcdeX"));
        assert!(refused(&|r| r.nonce = "ABC".into(), key));
        assert!(refused(&|r| r.algorithm = "AES_128_CBC".into(), key));
        assert!(refused(&|_| {}, b"short"));
    }

    #[test]
    fn t4_the_request_message_is_five_lines() {
        assert_eq!(
            request_message(
                "POST",
                "/v3/certificates",
                1_624_523_846,
                "A1B2C3D4E5F6G7",
                "Hello World!\n"
            ),
            "POST\n/v3/certificates\n1624523846\nA1B2C3D4E5F6G7\nHello World!\n\n"
        );
        assert_eq!(
            request_message("GET", "/v3/pay/transactions/id/42?mchid=1", 1, "n", ""),
            "GET\n/v3/pay/transactions/id/42?mchid=1\n1\nn\n\n"
        );
    }

    #[test]
    fn a_merchants_signatures_verify_with_its_public_key() {
        let key = RsaPrivateKey::new(&mut rand_core(), 2048).unwrap();
        let pem = key.to_pkcs8_pem(LineEnding::LF).unwrap();
        let merchant =
            Merchant::new("1900000000", "5157f09efdc096de15ebe81a47057a72", &pem).unwrap();
        let header = merchant.authorization(
            "POST",
            "/v3/pay/transactions/jsapi",
            1_700_000_000,
            "n0nce",
            "{}",
        );
        assert!(header.starts_with("WECHATPAY2-SHA256-RSA2048 mchid=\"1900000000\",nonce_str=\"n0nce\",timestamp=\"1700000000\",serial_no=\"5157F09EFDC096DE15EBE81A47057A72\",signature=\""));
        let signature = header
            .rsplit("signature=\"")
            .next()
            .unwrap()
            .trim_end_matches('"');
        let public = PublicKey::from(&key.to_public_key());
        let message = request_message(
            "POST",
            "/v3/pay/transactions/jsapi",
            1_700_000_000,
            "n0nce",
            "{}",
        );
        assert!(verify_bytes(&public, message.as_bytes(), signature));
        let pay_sign =
            merchant.pay_sign("wx0000000000000000", "1700000000", "n0nce", "prepay_id=wx1");
        assert!(verify_bytes(
            &public,
            b"wx0000000000000000\n1700000000\nn0nce\nprepay_id=wx1\n",
            &pay_sign
        ));
        // PKCS#1 v1.5 is deterministic: the same key and message sign alike.
        assert_eq!(
            pay_sign,
            merchant.pay_sign("wx0000000000000000", "1700000000", "n0nce", "prepay_id=wx1")
        );
        assert!(!format!("{merchant:?}").contains("PRIVATE"));
    }

    fn rand_core() -> impl rsa::rand_core::CryptoRngCore {
        rsa::rand_core::OsRng
    }
}
