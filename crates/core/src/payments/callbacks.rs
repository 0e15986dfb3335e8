//! The platforms' notifications: verified over their bytes as they came, bound to the stored
//! order and applied; every one that verifies is kept (its signature headers and body, once per
//! notification however often the platform retries it) with what handling it did, so an admin
//! can see it and replay it.
//!
//! A replay is not a way around verification: the kept bytes are verified again with the
//! merchant's keys as they are now (only the notification's age is not held against it, since
//! replaying a day-old callback is the point), so a row changed in the database replays
//! nothing. Each replay is noted on its order's timeline with who asked and what it did.

use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{
    Cause, Change, Merchant, Notice, NotifySignature, OrderRow, PayError, Payments, Provider,
};
use crate::apps::AppName;
use crate::clock::Timestamp;
use cloudlet_store::{CallbackRow, PayEventRow};

/// The most callbacks listed at once.
pub const MAX_CALLBACKS_LISTED: usize = 200;
/// How long a kept callback is kept after it was last handled: past any platform's retries and
/// any reconciliation of its day.
pub const CALLBACK_RETENTION_DAYS: i64 = 180;

/// A kept callback, as admins see it.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CallbackView {
    pub id: String,
    pub provider: String,
    /// The platform's id of the notification.
    pub notify_id: String,
    pub order_id: Option<String>,
    /// `applied` (the order moved), `unchanged`, `ignored` (nothing an order needs), or
    /// `refused: …` with the reason.
    pub outcome: String,
    /// How many times it was handled: the platform's retries and replays.
    pub handled: i64,
    /// The body as it came (UTF-8; WeChat Pay's resource stays encrypted).
    pub body: String,
    pub received_at: Timestamp,
    pub last_at: Timestamp,
}

impl From<CallbackRow> for CallbackView {
    fn from(row: CallbackRow) -> Self {
        CallbackView {
            id: row.id,
            provider: row.provider,
            notify_id: row.notify_id,
            order_id: row.order_id,
            outcome: row.outcome,
            handled: row.handled,
            body: String::from_utf8_lossy(&row.body).into_owned(),
            received_at: Timestamp::from_unix_ms(row.received_at_ms),
            last_at: Timestamp::from_unix_ms(row.last_at_ms),
        }
    }
}

/// WeChat Pay's signature headers, as kept.
#[derive(Serialize, Deserialize, Default)]
struct Headers {
    timestamp: String,
    nonce: String,
    signature: String,
    serial: String,
}

/// How a notification reached the service.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Arrival {
    /// From the platform: its timestamp must be within the platform's window of now.
    Fresh,
    /// Replayed by an admin: verified as of when it was signed.
    Replay,
}

/// What handling a verified notification did, and to which order.
struct Handled {
    order_id: Option<String>,
    outcome: Result<&'static str, PayError>,
}

/// The state of an order that a change would move.
fn mark(order: &OrderRow) -> (String, i64, i64) {
    (order.state.clone(), order.refunded_fen, order.reserved_fen)
}

impl Payments {
    /// Handles a platform's notification: verified over `body` as it came (WeChat Pay with its
    /// signature headers, Alipay's form by its own `sign`), bound to the stored order and
    /// applied. `Ok` means the change (if any) is durable and the platform may be told so.
    pub async fn notify(
        &self,
        app: &AppName,
        provider: Provider,
        signature: NotifySignature<'_>,
        body: &[u8],
    ) -> Result<(), PayError> {
        self.receive(app, provider, signature, body, Arrival::Fresh)
            .await
            .map(|_kept| ())
    }

    /// Replays a kept callback for `actor`: verified again, applied as if it came now. Answers
    /// the callback as it then is (its `outcome` says what the replay did); one that no longer
    /// verifies (the merchant's keys changed) is refused and changes nothing.
    pub async fn replay(
        &self,
        app: &AppName,
        id: &str,
        actor: &str,
    ) -> Result<CallbackView, PayError> {
        let row = self.callback_row(app, id).await?;
        let provider = Provider::parse(&row.provider)?;
        let headers: Headers = serde_json::from_str(&row.headers).unwrap_or_default();
        let signature = NotifySignature {
            timestamp: &headers.timestamp,
            nonce: &headers.nonce,
            signature: &headers.signature,
            serial: &headers.serial,
        };
        let replayed = self
            .receive(app, provider, signature, &row.body, Arrival::Replay)
            .await;
        let outcome = match &replayed {
            Ok(Some(kept)) => kept.outcome.clone(),
            Ok(None) => "handled".to_owned(),
            Err(e) => format!("refused: {e}"),
        };
        if let Some(order_id) = replayed
            .as_ref()
            .ok()
            .and_then(|kept| kept.as_ref()?.order_id.clone())
            .or(row.order_id.clone())
        {
            let now = self.now_ms();
            let note = PayEventRow {
                order_id,
                name: format!("replay:{}", self.new_id("", now)),
                source: "admin".to_owned(),
                payload: json!({ "action": "replay", "callback": id, "actor": actor, "outcome": outcome })
                    .to_string(),
                at_ms: now,
            };
            self.0.store.note(app, note).await?;
        }
        tracing::info!(app = %app, callback = %id, actor, outcome = %outcome, "a payment callback was replayed");
        replayed?
            .map(CallbackView::from)
            .ok_or(PayError::CallbackNotFound)
    }

    /// Kept callbacks, newest first: an order's, or the app's.
    pub async fn callbacks(
        &self,
        app: &AppName,
        order_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<CallbackView>, PayError> {
        Ok(self
            .0
            .store
            .callbacks(app, order_id, limit.clamp(1, MAX_CALLBACKS_LISTED))
            .await?
            .into_iter()
            .map(CallbackView::from)
            .collect())
    }

    /// Forgets what payments no longer keep: the app's callbacks past their retention, and
    /// (on the whole instance) deleted apps' merchants past their days.
    pub async fn sweep(&self, app: &AppName) -> Result<u64, PayError> {
        let now = self.now_ms();
        let before = now - CALLBACK_RETENTION_DAYS * 24 * 3600 * 1000;
        let swept = self.0.store.sweep_callbacks(app, before).await?;
        let buried = self.0.system.forget_buried(now).await?;
        Ok(swept + buried)
    }

    pub async fn callback(&self, app: &AppName, id: &str) -> Result<CallbackView, PayError> {
        Ok(self.callback_row(app, id).await?.into())
    }

    async fn callback_row(&self, app: &AppName, id: &str) -> Result<CallbackRow, PayError> {
        if !super::valid_number(id, 1, 64) {
            return Err(PayError::CallbackNotFound);
        }
        self.0
            .store
            .callback(app, id)
            .await?
            .ok_or(PayError::CallbackNotFound)
    }

    /// Verifies, handles and keeps a notification: the kept row (`None` if keeping it failed,
    /// which is logged: keeping is for people, and a platform told to retry a change already
    /// durable gains nothing), or why it was refused.
    async fn receive(
        &self,
        app: &AppName,
        provider: Provider,
        signature: NotifySignature<'_>,
        body: &[u8],
        arrival: Arrival,
    ) -> Result<Option<CallbackRow>, PayError> {
        let (loaded, buried) = match self.merchant(app, provider).await {
            Ok(loaded) => (loaded, false),
            Err(PayError::NotConfigured(name)) if arrival == Arrival::Fresh => {
                match self.buried_merchant(app, provider).await? {
                    Some(loaded) => (loaded, true),
                    None => return Err(PayError::NotConfigured(name)),
                }
            }
            Err(e) => return Err(e),
        };
        let now = self.now_ms();
        let (notify_id, notice) = match &loaded.merchant {
            Merchant::Wechat(m) => {
                let clock = match arrival {
                    Arrival::Fresh => now / 1000,
                    // As of when it was signed: its signature is checked, its age is not.
                    Arrival::Replay => signature.timestamp.parse().unwrap_or(0),
                };
                m.notice(signature, body, clock)?
            }
            Merchant::Alipay(m) => m.notice(body)?,
        };
        if buried {
            // The app is gone, deleted only with its money settled: a refund's or a close's
            // news changes nothing owed, and is answered so the platform stops. A payment is
            // not: an order made while the app was being deleted may have been paid, and a
            // platform that keeps retrying (and shows it in the merchant's console) is how a
            // person learns of it.
            let about = match &notice {
                Notice::Paid(p) => {
                    tracing::error!(app = %app, provider = provider.name(), notify_id = %notify_id, out_trade_no = %p.out_trade_no, "a payment for a deleted app: not answered, the platform will retry");
                    return Err(PayError::OrderNotFound);
                }
                Notice::Refund { out_refund_no, .. } => format!("refund {out_refund_no}"),
                Notice::Closed { out_trade_no, .. } => format!("closed {out_trade_no}"),
                Notice::Ignore => "nothing".to_owned(),
            };
            tracing::warn!(app = %app, provider = provider.name(), notify_id = %notify_id, about, "a payment notification for a deleted app was answered");
            return Ok(None);
        }
        let source = match arrival {
            Arrival::Fresh => "notify",
            Arrival::Replay => "replay",
        };
        let handled = self
            .handle(app, provider, &loaded.merchant, notice, source)
            .await;
        let outcome = match &handled.outcome {
            Ok(outcome) => (*outcome).to_owned(),
            Err(e) => format!("refused: {e}"),
        };
        let headers = match provider {
            Provider::Wechat => json!(Headers {
                timestamp: signature.timestamp.to_owned(),
                nonce: signature.nonce.to_owned(),
                signature: signature.signature.to_owned(),
                serial: signature.serial.to_owned(),
            }),
            Provider::Alipay => json!({}),
        };
        // A notification without an id is kept by its bytes' hash: its retries are the same
        // bytes.
        let notify_id = if super::valid_number(&notify_id, 1, 64) {
            notify_id
        } else {
            format!("sha256-{}", &hex::encode(Sha256::digest(body))[..40])
        };
        let row = CallbackRow {
            id: self.new_id("cb", now),
            provider: provider.name().to_owned(),
            notify_id,
            order_id: handled.order_id,
            headers: headers.to_string(),
            body: body.to_vec(),
            outcome,
            handled: 1,
            received_at_ms: now,
            last_at_ms: now,
        };
        let kept = self.0.store.record_callback(app, row).await;
        handled.outcome?;
        match kept {
            Ok(kept) => Ok(Some(kept)),
            // An admin's replay says so; the platform is answered all the same.
            Err(e) if arrival == Arrival::Replay => Err(e.into()),
            Err(e) => {
                tracing::warn!(app = %app, error = %e, "a verified payment callback could not be kept");
                Ok(None)
            }
        }
    }

    /// Applies what a verified notification says.
    async fn handle(
        &self,
        app: &AppName,
        provider: Provider,
        merchant: &Merchant,
        notice: Notice,
        source: &str,
    ) -> Handled {
        let now = self.now_ms();
        let moved = |before: &OrderRow, after: Result<OrderRow, PayError>| match after {
            Ok(after) if mark(&after) != mark(before) => Ok("applied"),
            Ok(_) => Ok("unchanged"),
            Err(e) => Err(e),
        };
        match notice {
            Notice::Paid(payment) => {
                let order = match self
                    .0
                    .store
                    .order_by_trade_no(app, &payment.out_trade_no)
                    .await
                {
                    Ok(Some(order)) => order,
                    Ok(None) => return refused(None, PayError::OrderNotFound),
                    Err(e) => return refused(None, e.into()),
                };
                // As for refunds and closes: one provider's notice never moves another's order
                // (the appid compared in `apply_paid` would refuse it too).
                if order.provider != provider.name() {
                    let order_id = Some(order.id.clone());
                    return refused(order_id, PayError::Mismatch("provider".into()));
                }
                let after = self
                    .apply_paid(app, merchant, &order, payment, source)
                    .await;
                Handled {
                    order_id: Some(order.id.clone()),
                    outcome: moved(&order, after),
                }
            }
            Notice::Refund {
                out_refund_no,
                outcome,
            } => {
                let refund = match self.refund_row(app, &out_refund_no).await {
                    Ok(refund) => refund,
                    Err(e) => return refused(None, e),
                };
                let order = match self.order_row(app, &refund.order_id).await {
                    Ok(order) => order,
                    Err(e) => return refused(None, e),
                };
                let order_id = Some(order.id.clone());
                if order.provider != provider.name() {
                    return refused(order_id, PayError::Mismatch("provider".into()));
                }
                let outcome = match outcome {
                    Some(outcome) => outcome,
                    None => match merchant.query_refund(&order, &refund, now / 1000).await {
                        Ok(outcome) => outcome,
                        Err(e) => return refused(order_id, e),
                    },
                };
                let applied = self
                    .apply_refund(app, &order, &refund, outcome, source)
                    .await;
                let after = match applied {
                    Ok(()) => self.order_row(app, &order.id).await,
                    Err(e) => Err(e),
                };
                Handled {
                    order_id,
                    outcome: moved(&order, after),
                }
            }
            Notice::Closed {
                out_trade_no,
                payload,
            } => {
                let order = match self.0.store.order_by_trade_no(app, &out_trade_no).await {
                    Ok(Some(order)) => order,
                    Ok(None) => return refused(None, PayError::OrderNotFound),
                    Err(e) => return refused(None, e.into()),
                };
                let order_id = Some(order.id.clone());
                if order.provider != provider.name() {
                    return refused(order_id, PayError::Mismatch("provider".into()));
                }
                let cause = Cause {
                    source: source.to_owned(),
                    payload: payload.to_string(),
                    at_ms: now,
                };
                let after = self.apply(app, &order.id, Change::Closed, cause).await;
                Handled {
                    order_id,
                    outcome: moved(&order, after),
                }
            }
            Notice::Ignore => {
                tracing::info!(app = %app, "a payment notification left alone");
                Handled {
                    order_id: None,
                    outcome: Ok("ignored"),
                }
            }
        }
    }
}

fn refused(order_id: Option<String>, e: PayError) -> Handled {
    Handled {
        order_id,
        outcome: Err(e),
    }
}
