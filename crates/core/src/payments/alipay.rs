//! Alipay for mini programs (`alipay.trade.create` with `JSAPI_PAY`, for `my.tradePay`): the
//! merchant's configuration, and each step the service asks of a provider in Alipay's words.
//!
//! Alipay's notifications are forms signed by the V1 rule. Refunds have no notification of
//! their own: they come on the payment's URL as `TRADE_SUCCESS` with `refund_fee` (a part) or
//! `TRADE_CLOSED` (the whole), so a notification with `out_biz_no` names a refund whose outcome
//! is then asked of `alipay.trade.fastpay.refund.query`, never read off the form. A
//! `TRADE_CLOSED` without refund fields is an unpaid trade that timed out.

use cloudlet_platforms::alipay::{self, AlipayClient, TradeCreate, fen_of};
use cloudlet_platforms::{PlatformError, PlatformHttp};
use cloudlet_store::{OrderRow, RefundRow};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json, json};

use super::{Found, MerchantView, Notice, PayError, Payment, RefundFacts, RefundFound};
use crate::clock::Timestamp;

/// Alipay's merchant configuration, as an admin sets it.
#[derive(Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AlipayPayInput {
    /// The mini program's app id (`2021…`), which creates the trades.
    pub app_id: String,
    /// The app's private key (PKCS#8 or PKCS#1 PEM, or base64): sealed, never shown back.
    pub private_key: String,
    /// Alipay's public key, which its replies and notifications verify with.
    pub alipay_public_key: String,
    /// The Alipay login provider whose users pay (their user id or open id); `alipay` by default.
    #[serde(default)]
    pub login_provider: Option<String>,
    /// Alipay's gateway (the emulator's `http://…/alipay/gateway.do` in tests).
    #[serde(default)]
    pub base_url: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Settings {
    app_id: String,
    alipay_public_key: String,
    pub login_provider: String,
    base_url: String,
}

#[derive(Serialize, Deserialize)]
pub(super) struct Secrets {
    private_key: String,
}

pub(super) fn settings_of(input: AlipayPayInput) -> Result<(Settings, Secrets), PayError> {
    let invalid = |why: &str| PayError::InvalidConfig(why.to_owned());
    if !(1..=32).contains(&input.app_id.len()) || !input.app_id.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(invalid("app_id is the mini program's app id (digits)"));
    }
    let base_url = input.base_url.unwrap_or_else(|| alipay::GATEWAY.to_owned());
    if !crate::auth::providers::valid_base_url(&base_url) {
        return Err(invalid(
            "base_url is an https URL (http only on this machine, for the emulator)",
        ));
    }
    // Both keys must parse: a client made of them now fails here, not at the first order.
    AlipayClient::new(
        PlatformHttp::new(std::time::Duration::from_secs(1))
            .map_err(|e| invalid(&e.to_string()))?,
        &base_url,
        &input.app_id,
        &input.private_key,
        &input.alipay_public_key,
    )
    .map_err(|_| invalid("private_key or alipay_public_key is not an RSA key"))?;
    Ok((
        Settings {
            app_id: input.app_id,
            alipay_public_key: input.alipay_public_key,
            login_provider: input.login_provider.unwrap_or_else(|| "alipay".to_owned()),
            base_url,
        },
        Secrets {
            private_key: input.private_key,
        },
    ))
}

pub(super) fn view_of(settings: &Settings, updated_at_ms: i64) -> MerchantView {
    MerchantView {
        provider: "alipay",
        mchid: None,
        app_id: Some(settings.app_id.clone()),
        serial_no: None,
        platform_serials: Vec::new(),
        login_provider: settings.login_provider.clone(),
        base_url: settings.base_url.clone(),
        updated_at: Timestamp::from_unix_ms(updated_at_ms),
    }
}

/// A merchant ready to use.
pub(super) struct Alipay {
    client: AlipayClient,
    pub app_id: String,
}

impl Alipay {
    pub(super) fn open(
        http: PlatformHttp,
        settings: &Settings,
        secrets: Secrets,
    ) -> Result<Self, PayError> {
        Ok(Alipay {
            client: AlipayClient::new(
                http,
                &settings.base_url,
                &settings.app_id,
                &secrets.private_key,
                &settings.alipay_public_key,
            )
            .map_err(|_| PayError::Sealing)?,
            app_id: settings.app_id.clone(),
        })
    }

    /// Creates the trade for the buyer (their id at Alipay): what to keep (`prepay`).
    pub(super) async fn place(
        &self,
        order: &OrderRow,
        buyer: &str,
        notify_url: &str,
        now_secs: i64,
    ) -> Result<Json, PayError> {
        let trade = TradeCreate {
            out_trade_no: order.out_trade_no.clone(),
            total_fen: order.amount_fen,
            subject: order.description.clone(),
            buyer: buyer.to_owned(),
            notify_url: notify_url.to_owned(),
            time_expire: alipay::china_time(order.expires_at_ms.div_euclid(1000)).ok(),
        };
        let trade_no = self.client.trade_create(&trade, now_secs).await?;
        Ok(json!({ "appid": self.app_id, "trade_no": trade_no }))
    }

    /// `my.tradePay`'s parameter.
    pub(super) fn payment(&self, prepay: &Json) -> Option<Json> {
        Some(json!({ "tradeNO": prepay["trade_no"].as_str()? }))
    }

    pub(super) async fn query(&self, order: &OrderRow, now_secs: i64) -> Result<Found, PayError> {
        let found = match self.client.trade_query(&order.out_trade_no, now_secs).await {
            Ok(found) => found,
            Err(PlatformError::PayRefused { code, .. }) if code == "ACQ.TRADE_NOT_EXIST" => {
                return Ok(Found::Missing);
            }
            Err(e) => return Err(e.into()),
        };
        Ok(match found["trade_status"].as_str().unwrap_or_default() {
            "TRADE_SUCCESS" | "TRADE_FINISHED" => {
                let mut fields = found.clone();
                fields["app_id"] = json!(self.app_id);
                Found::Paid(self.payment_of(&fields))
            }
            "TRADE_CLOSED" => Found::Closed(found),
            _ => Found::Waiting,
        })
    }

    pub(super) async fn close(&self, order: &OrderRow, now_secs: i64) -> Result<Found, PayError> {
        match self.client.trade_close(&order.out_trade_no, now_secs).await {
            Ok(()) => Ok(Found::Closed(json!({ "trade_status": "TRADE_CLOSED" }))),
            Err(PlatformError::PayRefused { code, .. }) if code == "ACQ.TRADE_NOT_EXIST" => {
                Ok(Found::Missing)
            }
            // Paid (or already closed) meanwhile: ask what it is.
            Err(PlatformError::PayRefused { code, .. }) if code == "ACQ.TRADE_STATUS_ERROR" => {
                self.query(order, now_secs).await
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A notification: a form, verified by the V1 rule before any of it is read.
    pub(super) fn notice(&self, body: &[u8]) -> Result<(String, Notice), PayError> {
        let params = self
            .client
            .verified_notification(body)
            .ok_or_else(|| PayError::Unverified("a bad signature".into()))?;
        let mut fields = Map::new();
        for (k, v) in params {
            fields.insert(k, Json::String(v));
        }
        let fields = Json::Object(fields);
        let text = |name: &str| fields[name].as_str().unwrap_or_default().to_owned();
        let notify_id = text("notify_id");
        // Every notice is of this merchant's app: a form signed for another app of the same
        // Alipay key says nothing of this one's orders.
        if text("app_id") != self.app_id {
            return Err(PayError::Mismatch("app_id".into()));
        }
        // Empty values are not signed: only a value says anything.
        if !text("out_biz_no").is_empty() || !text("gmt_refund").is_empty() {
            // A refund: its outcome is asked of the refund query, not read off the form.
            let notice = Notice::Refund {
                out_refund_no: text("out_biz_no"),
                outcome: None,
            };
            return Ok((notify_id, notice));
        }
        let notice = match text("trade_status").as_str() {
            "TRADE_SUCCESS" | "TRADE_FINISHED" => Notice::Paid(self.payment_of(&fields)),
            "TRADE_CLOSED" => Notice::Closed {
                out_trade_no: text("out_trade_no"),
                payload: fields,
            },
            _ => Notice::Ignore,
        };
        Ok((notify_id, notice))
    }

    /// A trade (a query's reply or a notification's form) in the service's words.
    fn payment_of(&self, trade: &Json) -> Payment {
        Payment {
            out_trade_no: trade["out_trade_no"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            transaction_id: trade["trade_no"].as_str().map(str::to_owned),
            amount_fen: trade["total_amount"].as_str().and_then(fen_of),
            // Alipay's merchant is the app that created the trade.
            merchant: trade["app_id"].as_str().unwrap_or_default().to_owned(),
            appid: trade["app_id"].as_str().unwrap_or_default().to_owned(),
            paid: matches!(
                trade["trade_status"].as_str(),
                Some("TRADE_SUCCESS" | "TRADE_FINISHED")
            ),
            paid_at_ms: trade["gmt_payment"]
                .as_str()
                .or_else(|| trade["send_pay_date"].as_str())
                .and_then(china_ms),
            payload: trade.clone(),
        }
    }

    pub(super) async fn refund(
        &self,
        order: &OrderRow,
        refund: &RefundRow,
        now_secs: i64,
    ) -> Result<RefundFound, PayError> {
        let reason = (!refund.reason.is_empty()).then_some(refund.reason.as_str());
        match self
            .client
            .trade_refund(
                &order.out_trade_no,
                &refund.out_refund_no,
                refund.amount_fen,
                reason,
                now_secs,
            )
            .await
        {
            // `fund_change: Y` is money moved; anything else is confirmed by a query.
            Ok(reply) if reply["fund_change"] == "Y" => Ok(RefundFound::Succeeded(RefundFacts {
                out_trade_no: reply["out_trade_no"].as_str().map(str::to_owned),
                refund_id: reply["trade_no"].as_str().map(str::to_owned),
                amount_fen: Some(refund.amount_fen),
                merchant_ok: true,
                payload: reply,
            })),
            Ok(_) => self.query_refund(order, refund, now_secs).await,
            Err(PlatformError::PayRefused { code, message, .. })
                if code.starts_with("ACQ.") && code != "ACQ.SYSTEM_ERROR" =>
            {
                Ok(RefundFound::Refused(
                    json!({ "code": code, "message": message }),
                ))
            }
            // Busy or unknown: it may have been taken; the refund stays pending for its check.
            Err(PlatformError::PayRefused { code, .. }) => Err(PayError::PlatformUnavailable(code)),
            Err(e) => Err(e.into()),
        }
    }

    /// The trade bill of `bill_date`, parsed; `None` when Alipay has none for that day.
    pub(super) async fn bill(
        &self,
        bill_date: &str,
        now_secs: i64,
    ) -> Result<Option<Vec<alipay::bill::BillRow>>, PayError> {
        let Some(zipped) = self.client.trade_bill(bill_date, now_secs).await? else {
            return Ok(None);
        };
        // Unzipping, decoding and cutting up tens of megabytes: off the async threads.
        let rows = tokio::task::spawn_blocking(move || {
            alipay::bill::parse(&alipay::bill::details_of_zip(&zipped)?)
        })
        .await
        .map_err(|e| PayError::PlatformUnavailable(e.to_string()))??;
        Ok(Some(rows))
    }

    pub(super) async fn query_refund(
        &self,
        order: &OrderRow,
        refund: &RefundRow,
        now_secs: i64,
    ) -> Result<RefundFound, PayError> {
        let found = match self
            .client
            .refund_query(&order.out_trade_no, &refund.out_refund_no, now_secs)
            .await
        {
            Ok(found) => found,
            Err(PlatformError::PayRefused { code, .. }) if code == "ACQ.TRADE_NOT_EXIST" => {
                return Ok(RefundFound::Missing);
            }
            Err(e) => return Err(e.into()),
        };
        let amount = found["refund_amount"].as_str().and_then(fen_of);
        // No such refund: a success without a status or an amount. (Older answers carry no
        // status for a refund that is done: its amount is the sign.)
        let done = found["refund_status"] == "REFUND_SUCCESS"
            || (found.get("refund_status").is_none() && amount.is_some());
        if !done {
            return Ok(if found.get("refund_status").is_none() {
                RefundFound::Missing
            } else {
                RefundFound::Pending(RefundFacts {
                    out_trade_no: found["out_trade_no"].as_str().map(str::to_owned),
                    refund_id: None,
                    amount_fen: None,
                    merchant_ok: true,
                    payload: found,
                })
            });
        }
        Ok(RefundFound::Succeeded(RefundFacts {
            out_trade_no: found["out_trade_no"].as_str().map(str::to_owned),
            refund_id: found["trade_no"].as_str().map(str::to_owned),
            amount_fen: amount,
            merchant_ok: true,
            payload: found,
        }))
    }
}

/// `yyyy-MM-dd HH:mm:ss` in China time as Unix milliseconds.
fn china_ms(text: &str) -> Option<i64> {
    use time::macros::{format_description, offset};
    let parsed = time::PrimitiveDateTime::parse(
        text,
        format_description!("[year]-[month]-[day] [hour]:[minute]:[second]"),
    )
    .ok()?;
    Some(parsed.assume_offset(offset!(+8)).unix_timestamp() * 1000)
}
