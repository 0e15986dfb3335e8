//! WeChat Pay API v3 for mini programs (JSAPI): the merchant's configuration, and each step the
//! service asks of a provider (place, query, close, read a notification, refund, query a
//! refund) in WeChat Pay's words, answered in the service's ([`Payment`], [`Found`], …).

use cloudlet_platforms::wechat_pay::bill::{self, BillRow};
use cloudlet_platforms::wechat_pay::{
    self, JsapiOrder, Merchant, Notification, PlatformKeys, RefundRequest, Unverified,
    WechatPayClient,
};
use cloudlet_platforms::{PlatformError, PlatformHttp};
use cloudlet_store::{OrderRow, RefundRow};
use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};

use super::{
    Found, MerchantView, Notice, NotifySignature, PayError, Payment, RefundFound, china_time,
    parse_time_ms, valid_number,
};
use crate::clock::Timestamp;

/// A key WeChat Pay signs with: a platform certificate's or the WeChat Pay public key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PlatformKeyInput {
    /// `PUB_KEY_ID_…` or the certificate's serial number.
    pub serial: String,
    /// PEM (or base64 SPKI or PKCS#1).
    pub public_key: String,
}

/// WeChat Pay's merchant configuration, as an admin sets it.
#[derive(Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct WechatPayInput {
    pub mchid: String,
    /// The serial number of the merchant's API certificate.
    pub serial_no: String,
    /// The merchant's API private key (PKCS#8 PEM): sealed, never shown back.
    pub private_key: String,
    /// The APIv3 key (32 characters): sealed, never shown back.
    pub api_v3_key: String,
    /// The keys WeChat Pay signs with; two during a migration from certificates to the public
    /// key.
    pub platform_keys: Vec<PlatformKeyInput>,
    /// The WeChat login provider whose users pay (their openid, its appid); `wechat` by default.
    #[serde(default)]
    pub login_provider: Option<String>,
    /// WeChat Pay's API (the emulator's `http://…/wechatpay` in tests).
    #[serde(default)]
    pub base_url: Option<String>,
}

/// What is stored in the clear.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Settings {
    mchid: String,
    serial_no: String,
    platform_keys: Vec<PlatformKeyInput>,
    pub login_provider: String,
    base_url: String,
}

/// What is sealed.
#[derive(Serialize, Deserialize)]
pub(super) struct Secrets {
    private_key: String,
    api_v3_key: String,
}

/// Checks an admin's configuration: what to keep in the clear and what to seal.
pub(super) fn settings_of(input: WechatPayInput) -> Result<(Settings, Secrets), PayError> {
    let invalid = |why: &str| PayError::InvalidConfig(why.to_owned());
    if !(1..=32).contains(&input.mchid.len()) || !input.mchid.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid("mchid is 1 to 32 digits"));
    }
    if !valid_number(&input.serial_no, 1, 64) {
        return Err(invalid("serial_no is the certificate's serial number"));
    }
    if input.api_v3_key.len() != 32 {
        return Err(invalid("api_v3_key is 32 characters"));
    }
    if input.platform_keys.is_empty() || input.platform_keys.len() > 4 {
        return Err(invalid("platform_keys holds 1 to 4 keys"));
    }
    Merchant::new(&input.mchid, &input.serial_no, &input.private_key)
        .map_err(|_| invalid("private_key is not an RSA private key (PKCS#8 PEM)"))?;
    let mut keys = PlatformKeys::default();
    for key in &input.platform_keys {
        if !valid_number(&key.serial, 1, 64) {
            return Err(invalid(
                "a platform key's serial is 1 to 64 letters and digits",
            ));
        }
        keys = keys
            .with(&key.serial, &key.public_key)
            .map_err(|_| invalid("a platform key is not an RSA public key"))?;
    }
    let base_url = input.base_url.unwrap_or_else(|| wechat_pay::API.to_owned());
    if !crate::auth::providers::valid_base_url(&base_url) {
        return Err(invalid(
            "base_url is an https URL (http only on this machine, for the emulator)",
        ));
    }
    Ok((
        Settings {
            mchid: input.mchid,
            serial_no: input.serial_no,
            platform_keys: input.platform_keys,
            login_provider: input.login_provider.unwrap_or_else(|| "wechat".to_owned()),
            base_url,
        },
        Secrets {
            private_key: input.private_key,
            api_v3_key: input.api_v3_key,
        },
    ))
}

pub(super) fn view_of(settings: &Settings, updated_at_ms: i64) -> MerchantView {
    MerchantView {
        provider: "wechat",
        mchid: Some(settings.mchid.clone()),
        app_id: None,
        serial_no: Some(settings.serial_no.clone()),
        platform_serials: settings
            .platform_keys
            .iter()
            .map(|k| k.serial.clone())
            .collect(),
        login_provider: settings.login_provider.clone(),
        base_url: settings.base_url.clone(),
        updated_at: Timestamp::from_unix_ms(updated_at_ms),
    }
}

/// A merchant ready to use.
pub(super) struct Wechat {
    client: WechatPayClient,
    keys: PlatformKeys,
    api_v3_key: Vec<u8>,
    pub mchid: String,
}

impl Wechat {
    pub(super) fn open(
        http: PlatformHttp,
        settings: &Settings,
        secrets: Secrets,
    ) -> Result<Self, PayError> {
        let merchant = Merchant::new(&settings.mchid, &settings.serial_no, &secrets.private_key)
            .map_err(|_| PayError::Sealing)?;
        let mut keys = PlatformKeys::default();
        for key in &settings.platform_keys {
            keys = keys
                .with(&key.serial, &key.public_key)
                .map_err(|_| PayError::Sealing)?;
        }
        Ok(Wechat {
            client: WechatPayClient::new(http, &settings.base_url, merchant, keys.clone()),
            keys,
            api_v3_key: secrets.api_v3_key.into_bytes(),
            mchid: settings.mchid.clone(),
        })
    }

    /// Places `order` for the payer (`appid`, `openid`): what to keep (`prepay`).
    pub(super) async fn place(
        &self,
        order: &OrderRow,
        appid: &str,
        openid: &str,
        notify_url: &str,
        now_secs: i64,
    ) -> Result<Json, PayError> {
        let placed = JsapiOrder {
            appid: appid.to_owned(),
            description: order.description.clone(),
            out_trade_no: order.out_trade_no.clone(),
            time_expire: china_time(order.expires_at_ms),
            attach: None,
            notify_url: notify_url.to_owned(),
            total_fen: order.amount_fen,
            payer_openid: openid.to_owned(),
        };
        let prepay_id = self.client.jsapi(&placed, now_secs).await?;
        Ok(json!({ "appid": appid, "prepay_id": prepay_id }))
    }

    /// `wx.requestPayment`'s parameters for a placed order, signed afresh.
    pub(super) fn payment(&self, prepay: &Json, now_secs: i64) -> Option<Json> {
        let appid = prepay["appid"].as_str()?;
        let prepay_id = prepay["prepay_id"].as_str()?;
        serde_json::to_value(self.client.request_payment(appid, prepay_id, now_secs)).ok()
    }

    pub(super) async fn query(&self, order: &OrderRow, now_secs: i64) -> Result<Found, PayError> {
        let found = match self.client.query(&order.out_trade_no, now_secs).await {
            Ok(found) => found,
            Err(PlatformError::PayRefused { code, .. }) if code == "ORDER_NOT_EXIST" => {
                return Ok(Found::Missing);
            }
            Err(e) => return Err(e.into()),
        };
        Ok(match found["trade_state"].as_str().unwrap_or_default() {
            "SUCCESS" => Found::Paid(payment_of(found)),
            "CLOSED" | "REVOKED" => Found::Closed(found),
            // PAYERROR and the rest: not paid, but not closed there either; closed at expiry,
            // on the platform first.
            _ => Found::Waiting,
        })
    }

    /// Closes an unpaid order; `Found::Paid` when it turns out paid.
    pub(super) async fn close(&self, order: &OrderRow, now_secs: i64) -> Result<Found, PayError> {
        match self.client.close(&order.out_trade_no, now_secs).await {
            Ok(()) => Ok(Found::Closed(json!({ "trade_state": "CLOSED" }))),
            // Never placed (placing failed): nothing to close there.
            Err(PlatformError::PayRefused { code, .. }) if code == "ORDER_NOT_EXIST" => {
                Ok(Found::Missing)
            }
            Err(PlatformError::PayRefused { code, .. }) if code == "ORDERPAID" => {
                self.query(order, now_secs).await
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A notification, verified over `body` as it came, then decrypted.
    pub(super) fn notice(
        &self,
        signature: NotifySignature<'_>,
        body: &[u8],
        now_secs: i64,
    ) -> Result<(String, Notice), PayError> {
        wechat_pay::verify(&self.keys, signature, body, now_secs).map_err(|e| {
            let why = match e {
                Unverified::Probe => "a signature probe",
                Unverified::Stale => "a stale timestamp",
                Unverified::UnknownSerial => "an unknown serial",
                Unverified::BadSignature => "a bad signature",
            };
            PayError::Unverified(why.into())
        })?;
        let notification: Notification = serde_json::from_slice(body)
            .map_err(|_| PayError::Unverified("not a notification".into()))?;
        let plain = wechat_pay::decrypt(&self.api_v3_key, &notification.resource)
            .map_err(|_| PayError::Unverified("its resource does not decrypt".into()))?;
        let resource: Json = serde_json::from_slice(&plain)
            .map_err(|_| PayError::Unverified("its resource is not JSON".into()))?;
        let notice = match notification.event_type.as_str() {
            "TRANSACTION.SUCCESS" => Notice::Paid(payment_of(resource)),
            "REFUND.SUCCESS" | "REFUND.ABNORMAL" | "REFUND.CLOSED" => Notice::Refund {
                out_refund_no: resource["out_refund_no"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                outcome: Some(self.refund_found(resource)),
            },
            _ => Notice::Ignore,
        };
        Ok((notification.id, notice))
    }

    /// The trade bill of `bill_date`, parsed; `None` when WeChat Pay has none for that day
    /// (`NO_STATEMENT_EXIST`: not made yet, or a day without trades).
    pub(super) async fn bill(
        &self,
        bill_date: &str,
        now_secs: i64,
    ) -> Result<Option<Vec<BillRow>>, PayError> {
        let packed = match self.client.trade_bill(bill_date, now_secs).await {
            Ok(packed) => packed,
            Err(PlatformError::PayRefused { code, .. }) if code == "NO_STATEMENT_EXIST" => {
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        };
        // A day of 100,000 payments is tens of megabytes to unpack, hash and cut up: off the
        // async threads.
        let rows = tokio::task::spawn_blocking(move || bill::parse(&packed.unpack()?))
            .await
            .map_err(|e| PayError::PlatformUnavailable(e.to_string()))??;
        Ok(Some(rows))
    }

    /// Asks for a reserved refund.
    pub(super) async fn refund(
        &self,
        order: &OrderRow,
        refund: &RefundRow,
        notify_url: &str,
        now_secs: i64,
    ) -> Result<RefundFound, PayError> {
        let request = RefundRequest {
            out_trade_no: order.out_trade_no.clone(),
            out_refund_no: refund.out_refund_no.clone(),
            reason: (!refund.reason.is_empty()).then(|| refund.reason.clone()),
            notify_url: Some(notify_url.to_owned()),
            refund_fen: refund.amount_fen,
            total_fen: order.amount_fen,
        };
        match self.client.refund(&request, now_secs).await {
            Ok(reply) => Ok(self.refund_found(reply)),
            // Only a definite refusal means no money moved. A 5xx (`SYSTEM_ERROR`: "retry the
            // same request"), 429 or anything unknown may have been taken: the refund stays
            // pending, and its check asks.
            Err(PlatformError::PayRefused {
                status,
                code,
                message,
            }) if REFUSALS.contains(&code.as_str()) && (400..500).contains(&status) => Ok(
                RefundFound::Refused(json!({ "code": code, "message": message })),
            ),
            Err(PlatformError::PayRefused { status, code, .. }) => {
                Err(PayError::PlatformUnavailable(format!("{status} {code}")))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub(super) async fn query_refund(
        &self,
        _order: &OrderRow,
        refund: &RefundRow,
        now_secs: i64,
    ) -> Result<RefundFound, PayError> {
        match self
            .client
            .query_refund(&refund.out_refund_no, now_secs)
            .await
        {
            Ok(found) => Ok(self.refund_found(found)),
            Err(PlatformError::PayRefused { code, .. }) if code == "RESOURCE_NOT_EXISTS" => {
                Ok(RefundFound::Missing)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A Refund object (a reply, a query's or a notification's resource) in the service's
    /// words. A notification says `refund_status`, a reply `status`.
    fn refund_found(&self, refund: Json) -> RefundFound {
        let status = refund["refund_status"]
            .as_str()
            .or_else(|| refund["status"].as_str())
            .unwrap_or_default()
            .to_owned();
        let merchant_ok = refund.get("mchid").is_none() || refund["mchid"] == self.mchid.as_str();
        let facts = super::RefundFacts {
            out_trade_no: refund["out_trade_no"].as_str().map(str::to_owned),
            refund_id: refund["refund_id"].as_str().map(str::to_owned),
            amount_fen: refund["amount"]["refund"].as_i64(),
            merchant_ok,
            payload: refund,
        };
        match status.as_str() {
            "SUCCESS" => RefundFound::Succeeded(facts),
            "CLOSED" => RefundFound::Failed(facts),
            // ABNORMAL: WeChat Pay holds the money for the merchant to send by hand; it is
            // not free to refund again, so the refund stays pending (and its reservation).
            _ => RefundFound::Pending(facts),
        }
    }
}

/// The refusals of a refund request after which no money moved.
const REFUSALS: &[&str] = &[
    "PARAM_ERROR",
    "INVALID_REQUEST",
    "NOT_ENOUGH",
    "USER_ACCOUNT_ABNORMAL",
    "SIGN_ERROR",
    "NO_AUTH",
    "MCH_NOT_EXISTS",
    "RESOURCE_NOT_EXISTS",
];

/// A Transaction object in the service's words.
fn payment_of(transaction: Json) -> Payment {
    Payment {
        out_trade_no: transaction["out_trade_no"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        transaction_id: transaction["transaction_id"].as_str().map(str::to_owned),
        amount_fen: transaction["amount"]["total"].as_i64(),
        merchant: transaction["mchid"].as_str().unwrap_or_default().to_owned(),
        appid: transaction["appid"].as_str().unwrap_or_default().to_owned(),
        paid: transaction["trade_state"] == "SUCCESS",
        paid_at_ms: transaction["success_time"].as_str().and_then(parse_time_ms),
        payload: transaction,
    }
}
