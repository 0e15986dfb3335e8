//! Payments: merchant configuration, orders priced on the server, verified callbacks, refunds
//! and reconciliation, for WeChat Pay API v3 (JSAPI, `wx.requestPayment`; [`wechat`]) and
//! Alipay (`alipay.trade.create`, `my.tradePay`; [`alipay`]). This module is the service and
//! what both share; each provider module speaks its platform and answers in the service's words
//! ([`Payment`], [`Found`], [`Notice`], [`RefundFound`]).
//!
//! - **Merchant configuration** lives beside the login providers in the control plane, as the
//!   provider `pay.wechat` or `pay.alipay`: what is not secret in the clear, the private keys
//!   (and WeChat Pay's APIv3 key) sealed under the master key. It is read on every use and parsed again only when
//!   it changed, so a change on one node holds on every node.
//! - **An order** is stored first (`created`, idempotent by the caller's key), then a check of
//!   it is put on [`PAYMENT_QUEUE`], then it is placed with the platform. Whatever happens after
//!   the store, the check finds the order: it queries the platform with backoff until the order
//!   is paid or closed, so a lost callback is recovered, and it closes the order (on the
//!   platform first) once it expired.
//! - **A callback** is verified over its raw bytes before anything of it is read, decrypted,
//!   then bound to the stored order (merchant, app id, order number, amount): only then may it
//!   move the order, through the store's conditional, durable step. Its answer waits for that
//!   step, so a platform that was told "success" never has to be believed again.
//! - **Refunds** are reserved on the order's row before the platform is asked, so their sum
//!   never passes the amount; their outcome is taken only from a verified notification or a
//!   query, never assumed.
//!
//! Every change that moved an order writes one event to the app's log (`pay.paid`,
//! `pay.refunded`, `pay.refund_failed`, `pay.closed`) in the same transaction, with a delivery
//! per function whose `{"pay": [...]}` trigger names it: at least once, with a stable event id.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use cloudlet_platforms::{PlatformError, PlatformHttp};
use cloudlet_store::{
    AppName, Applied, Cause, Change, Created, ORDER_CLOSED, ORDER_CREATED, OrderQuery, OrderRow,
    PaymentStore, ProviderRow, REFUND_PENDING, RefundRow, Reserved, StoreError, SystemStore,
    UserStore,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

use crate::auth::{Auth, AuthError, PlatformAddresses};
use crate::clock::{Clock, Timestamp};
use crate::data::Triggers;
use crate::queues::HintTicket;
use crate::queues::{Delivery, Outgoing, PAYMENT_QUEUE, QueueError, Queues};
use crate::random::Random;
use crate::sealing::Sealer;

mod alipay;
mod callbacks;
mod reconcile;
mod wechat;

pub use callbacks::{CALLBACK_RETENTION_DAYS, CallbackView, MAX_CALLBACKS_LISTED};
pub use reconcile::{BillDate, Difference, Report, ReportSummary, Totals};

/// A notification's signature headers (`Wechatpay-Timestamp`, `-Nonce`, `-Signature`,
/// `-Serial`), as the HTTP layer hands them in.
pub use cloudlet_platforms::wechat_pay::Signed as NotifySignature;

/// How long a deleted app's merchants are kept to answer their platforms' retries.
pub const BURIED_MERCHANT_DAYS: i64 = 3;
/// The start of the names of payment merchants' provider rows.
const PAY_ROW_PREFIX: &str = "pay.";

/// The largest order: 1,000,000 yuan.
pub const MAX_AMOUNT_FEN: i64 = 100_000_000;
/// Characters of a description (WeChat Pay's limit).
pub const MAX_DESCRIPTION_CHARS: usize = 127;
/// Bytes of an order's metadata, as JSON.
pub const MAX_METADATA_BYTES: usize = 2048;
/// Bytes of an idempotency key.
pub const MAX_KEY_BYTES: usize = 64;
/// Characters of a refund's reason (WeChat Pay's limit).
pub const MAX_REASON_CHARS: usize = 80;

#[derive(Debug, thiserror::Error)]
pub enum PayError {
    #[error("unknown payment provider {0:?}: wechat or alipay")]
    UnknownProvider(String),
    #[error("payments with {0} are not configured for this app")]
    NotConfigured(String),
    #[error("invalid merchant configuration: {0}")]
    InvalidConfig(String),
    #[error(
        "only the instance's operator may point an app at another address than the platform's own"
    )]
    AddressNotAllowed,
    #[error("{0}")]
    Invalid(String),
    #[error("no such order")]
    OrderNotFound,
    #[error("no such refund")]
    RefundNotFound,
    #[error("no such callback")]
    CallbackNotFound,
    #[error("no reconciliation report of that provider and day")]
    ReportNotFound,
    #[error("not a bill date (YYYY-MM-DD, within three months): {0}")]
    InvalidBillDate(String),
    #[error("the bill of {0} is not made yet (after 10:00 the next day, China time)")]
    BillNotReady(String),

    /// The idempotency key was used for an order that differs (amount, user, provider).
    #[error("the key was used for another order (amount, user or provider differ)")]
    KeyReused,
    #[error("out_trade_no is taken by another order")]
    TradeNoTaken,
    /// The order's state does not allow what was asked.
    #[error("the order is {0}")]
    OrderState(String),
    #[error("the refund would pass what is left of the payment")]
    RefundExceeds,
    #[error("out_refund_no was used for another refund")]
    RefundReused,
    #[error("the user has no identity at {0}: they have not logged in with it")]
    NoIdentity(String),
    /// A callback that does not verify (its signature, its time, its key, its encryption).
    #[error("the notification does not verify: {0}")]
    Unverified(String),
    /// A verified callback whose fields do not match the stored order.
    #[error("the notification does not match the order: {0}")]
    Mismatch(String),
    #[error("the payment platform refused: {0}")]
    PlatformRefused(String),
    #[error("the payment platform is unavailable: {0}")]
    PlatformUnavailable(String),
    #[error("the merchant's sealed secrets could not be opened")]
    Sealing,
    #[error("orders of this app are not settled: {0} may still be paid or refunded")]
    Unsettled(u64),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Auth(#[from] AuthError),
}

impl From<PlatformError> for PayError {
    fn from(e: PlatformError) -> Self {
        match e {
            PlatformError::PayRefused { code, message, .. } => {
                PayError::PlatformRefused(format!("{code} {message}"))
            }
            other => PayError::PlatformUnavailable(other.to_string()),
        }
    }
}

/// A payment provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Provider {
    Wechat,
    Alipay,
}

impl Provider {
    pub fn parse(text: &str) -> Result<Self, PayError> {
        match text {
            "wechat" => Ok(Provider::Wechat),
            "alipay" => Ok(Provider::Alipay),
            other => Err(PayError::UnknownProvider(other.chars().take(40).collect())),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Provider::Wechat => "wechat",
            Provider::Alipay => "alipay",
        }
    }

    /// The control plane's provider row of its merchant configuration.
    fn row(self) -> &'static str {
        match self {
            Provider::Wechat => "pay.wechat",
            Provider::Alipay => "pay.alipay",
        }
    }

    /// Whether `no` is an order number the platform takes.
    fn valid_trade_no(self, no: &str) -> bool {
        match self {
            Provider::Wechat => valid_number(no, 6, 32) && !no.contains('@'),
            Provider::Alipay => {
                (6..=64).contains(&no.len())
                    && no.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            }
        }
    }
}

// ---- merchant configuration -----------------------------------------------------------------

pub use alipay::AlipayPayInput;
pub use wechat::{PlatformKeyInput, WechatPayInput};

/// A merchant configuration as the admin API shows it: never its secrets.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MerchantView {
    pub provider: &'static str,
    /// WeChat Pay's merchant id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mchid: Option<String>,
    /// Alipay's app id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
    /// WeChat Pay: the merchant certificate's serial.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serial_no: Option<String>,
    /// WeChat Pay: the serials of the keys it signs with.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub platform_serials: Vec<String>,
    pub login_provider: String,
    pub base_url: String,
    pub updated_at: Timestamp,
}

/// A provider's merchant, ready to use.
enum Merchant {
    Wechat(wechat::Wechat),
    Alipay(alipay::Alipay),
}

/// A loaded merchant and the version of its row it was made from.
struct Loaded {
    merchant: Merchant,
    login_provider: String,
    updated_at_ms: i64,
}

impl Merchant {
    /// Who the platform says the merchant is, in a payment: WeChat Pay's mchid, Alipay's app id.
    fn id(&self) -> &str {
        match self {
            Merchant::Wechat(m) => &m.mchid,
            Merchant::Alipay(m) => &m.app_id,
        }
    }

    async fn query(&self, order: &OrderRow, now_secs: i64) -> Result<Found, PayError> {
        match self {
            Merchant::Wechat(m) => m.query(order, now_secs).await,
            Merchant::Alipay(m) => m.query(order, now_secs).await,
        }
    }

    async fn close(&self, order: &OrderRow, now_secs: i64) -> Result<Found, PayError> {
        match self {
            Merchant::Wechat(m) => m.close(order, now_secs).await,
            Merchant::Alipay(m) => m.close(order, now_secs).await,
        }
    }

    fn payment(&self, prepay: &Json, now_secs: i64) -> Option<Json> {
        match self {
            Merchant::Wechat(m) => m.payment(prepay, now_secs),
            Merchant::Alipay(m) => m.payment(prepay),
        }
    }

    async fn refund(
        &self,
        order: &OrderRow,
        refund: &RefundRow,
        notify_url: &str,
        now_secs: i64,
    ) -> Result<RefundFound, PayError> {
        match self {
            Merchant::Wechat(m) => m.refund(order, refund, notify_url, now_secs).await,
            Merchant::Alipay(m) => m.refund(order, refund, now_secs).await,
        }
    }

    async fn query_refund(
        &self,
        order: &OrderRow,
        refund: &RefundRow,
        now_secs: i64,
    ) -> Result<RefundFound, PayError> {
        match self {
            Merchant::Wechat(m) => m.query_refund(order, refund, now_secs).await,
            Merchant::Alipay(m) => m.query_refund(order, refund, now_secs).await,
        }
    }

    /// The trade bill of a day, parsed; `None` when the platform has none for it.
    async fn bill(
        &self,
        bill_date: &str,
        now_secs: i64,
    ) -> Result<Option<Vec<cloudlet_platforms::bill::BillRow>>, PayError> {
        match self {
            Merchant::Wechat(m) => m.bill(bill_date, now_secs).await,
            Merchant::Alipay(m) => m.bill(bill_date, now_secs).await,
        }
    }
}

/// A payment as a platform reported it (a notification or a query), before it is bound to an
/// order.
pub(crate) struct Payment {
    out_trade_no: String,
    transaction_id: Option<String>,
    amount_fen: Option<i64>,
    /// Who the platform says the merchant is.
    merchant: String,
    /// The app the payment was made in.
    appid: String,
    /// Whether the platform calls it paid.
    paid: bool,
    paid_at_ms: Option<i64>,
    payload: Json,
}

/// What a query found of an order.
pub(crate) enum Found {
    Paid(Payment),
    /// Not paid yet.
    Waiting,
    /// Closed there (the platform's words).
    Closed(Json),
    /// The platform does not know it (never placed).
    Missing,
}

/// What a verified notification says.
pub(crate) enum Notice {
    Paid(Payment),
    /// About a refund: its outcome, or `None` when it must be asked of a query.
    Refund {
        out_refund_no: String,
        outcome: Option<RefundFound>,
    },
    /// An unpaid order closed there.
    Closed {
        out_trade_no: String,
        payload: Json,
    },
    /// Nothing an order needs.
    Ignore,
}

/// A refund as a platform reported it.
pub(crate) struct RefundFacts {
    out_trade_no: Option<String>,
    refund_id: Option<String>,
    amount_fen: Option<i64>,
    merchant_ok: bool,
    payload: Json,
}

/// What a platform says of a refund.
pub(crate) enum RefundFound {
    Succeeded(RefundFacts),
    Failed(RefundFacts),
    Pending(RefundFacts),
    /// Refused when asked for: it never happened.
    Refused(Json),
    /// The platform does not know it (never asked for, or lost on the way).
    Missing,
}

// ---- orders ---------------------------------------------------------------------------------

/// An order to create, as `ctx.pay.createOrder` and the admin API take it.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewOrder {
    /// `wechat` (the default).
    #[serde(default)]
    pub provider: Option<String>,
    /// Integer fen: 1 to 100,000,000.
    pub amount_fen: i64,
    /// What the user sees on the payment sheet and the bill (1 to 127 characters).
    pub description: String,
    /// The user who pays (their Cloudlet id): they must have logged in with the merchant's
    /// WeChat provider.
    pub user: String,
    /// The merchant's order number (6 to 32 of `A-Z a-z 0-9 _ - | *`); the order's id when
    /// left out.
    #[serde(default)]
    pub out_trade_no: Option<String>,
    /// Any JSON object, kept with the order and handed to `pay` triggers (2 KiB at most).
    #[serde(default)]
    pub metadata: Option<Json>,
    /// An idempotency key (per user): the same key again answers the same order, so a double
    /// tap does not make two.
    #[serde(default)]
    pub key: Option<String>,
    /// How long the order may be paid: 60 s to 24 h; `payments.order_ttl_secs` by default.
    #[serde(default)]
    pub expires_in_secs: Option<u64>,
}

/// An order as the API shows it.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OrderView {
    pub id: String,
    pub provider: String,
    pub out_trade_no: String,
    pub user_id: Option<String>,
    pub amount_fen: i64,
    pub description: String,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub metadata: Json,
    /// `created`, `paid`, `partly_refunded`, `refunded` or `closed`.
    pub state: String,
    pub refunded_fen: i64,
    pub transaction_id: Option<String>,
    pub expires_at: Timestamp,
    pub paid_at: Option<Timestamp>,
    pub created_at: Timestamp,
    /// What the client hands to `wx.requestPayment` (signed), while the order may be paid.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub payment: Option<Json>,
}

/// A refund to make, as `ctx.pay.refund` and the admin API take it.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewRefund {
    pub amount_fen: i64,
    /// The refund's number (1 to 64 of `A-Z a-z 0-9 _ - | * @`): the same number again is the
    /// same refund. A new one when left out.
    #[serde(default)]
    pub out_refund_no: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
}

/// A refund as the API shows it.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RefundView {
    pub out_refund_no: String,
    pub order_id: String,
    pub amount_fen: i64,
    pub reason: String,
    /// `pending`, `succeeded` or `failed`.
    pub state: String,
    pub refund_id: Option<String>,
    pub created_at: Timestamp,
}

impl From<RefundRow> for RefundView {
    fn from(row: RefundRow) -> Self {
        RefundView {
            out_refund_no: row.out_refund_no,
            order_id: row.order_id,
            amount_fen: row.amount_fen,
            reason: row.reason,
            state: row.state,
            refund_id: row.refund_id,
            created_at: Timestamp::from_unix_ms(row.created_at_ms),
        }
    }
}

/// An event of an order, as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PayEventView {
    /// `paid`, `closed` or `refund:{out_refund_no}`.
    pub name: String,
    /// `notify`, `query`, `replay` or `admin`.
    pub source: String,
    /// What the verified callback or query said.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub payload: Json,
    pub at: Timestamp,
}

/// An order with its refunds and events.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OrderDetail {
    #[serde(flatten)]
    pub order: OrderView,
    pub refunds: Vec<RefundView>,
    pub events: Vec<PayEventView>,
}

/// The options of the payments service.
#[derive(Debug, Clone)]
pub struct PaymentOptions {
    /// How long after an order is placed it is first queried, if no callback came.
    pub check_delay: Duration,
    /// How long an order may be paid when its creator does not say.
    pub order_ttl: Duration,
    pub platform_timeout: Duration,
}

impl Default for PaymentOptions {
    fn default() -> Self {
        PaymentOptions {
            check_delay: Duration::from_secs(10),
            order_ttl: Duration::from_secs(30 * 60),
            platform_timeout: Duration::from_secs(10),
        }
    }
}

/// What a check on [`PAYMENT_QUEUE`] looks at.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Check {
    Order(String),
    Refund(String),
    /// The daily comparison of a provider's bill of a day.
    Bill {
        provider: String,
        date: String,
    },
}

/// The payments service. Cheap to clone.
#[derive(Clone)]
pub struct Payments(Arc<Inner>);

struct Inner {
    store: Arc<dyn PaymentStore>,
    system: Arc<dyn SystemStore>,
    users: Arc<dyn UserStore>,
    auth: Auth,
    queues: Queues,
    clock: Arc<dyn Clock>,
    random: Arc<dyn Random>,
    sealer: Sealer,
    http: PlatformHttp,
    options: PaymentOptions,
    /// The server's public URL, which notification URLs are built on (set once it listens).
    public_url: OnceLock<String>,
    triggers: OnceLock<Arc<dyn Triggers>>,
    merchants: Mutex<HashMap<(AppName, Provider), Arc<Loaded>>>,
    /// One bill compared at a time on the server.
    reconciling: tokio::sync::Semaphore,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

fn seal_place(app: &AppName, row: &str) -> String {
    format!("{app}/provider/{row}")
}

/// Whether `text` is 1 to `max` bytes of what the platform allows in an order or refund number.
fn valid_number(text: &str, min: usize, max: usize) -> bool {
    (min..=max).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-|*@".contains(&b))
}

fn printable(text: &str) -> bool {
    !text.chars().any(char::is_control)
}

/// WeChat Pay's time format: RFC 3339 in China's time zone.
fn china_time(ms: i64) -> Option<String> {
    let offset = UtcOffset::from_hms(8, 0, 0).ok()?;
    OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .ok()?
        .to_offset(offset)
        .format(&Rfc3339)
        .ok()
}

fn parse_time_ms(text: &str) -> Option<i64> {
    let time = OffsetDateTime::parse(text, &Rfc3339).ok()?;
    i64::try_from(time.unix_timestamp_nanos() / 1_000_000).ok()
}

impl Payments {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Arc<dyn PaymentStore>,
        system: Arc<dyn SystemStore>,
        users: Arc<dyn UserStore>,
        auth: Auth,
        queues: Queues,
        clock: Arc<dyn Clock>,
        random: Arc<dyn Random>,
        sealer: Sealer,
        options: PaymentOptions,
    ) -> Result<Self, PayError> {
        let http = PlatformHttp::new(options.platform_timeout)
            .map_err(|e| PayError::PlatformUnavailable(e.to_string()))?;
        Ok(Payments(Arc::new(Inner {
            store,
            system,
            users,
            auth,
            queues,
            clock,
            random,
            sealer,
            http,
            options,
            public_url: OnceLock::new(),
            triggers: OnceLock::new(),
            merchants: Mutex::new(HashMap::new()),
            reconciling: tokio::sync::Semaphore::new(1),
        })))
    }

    /// The URL the platforms' notifications are sent to is built on it. Set once.
    pub fn set_public_url(&self, url: &str) {
        let _ = self.0.public_url.set(url.trim_end_matches('/').to_owned());
    }

    /// Connects payment events to the functions they trigger. Set once.
    pub fn set_triggers(&self, triggers: Arc<dyn Triggers>) {
        let _ = self.0.triggers.set(triggers);
    }

    fn now_ms(&self) -> i64 {
        self.0.clock.now().unix_ms()
    }

    fn notify_url(&self, app: &AppName, provider: Provider) -> String {
        let base = self.0.public_url.get().map_or("", String::as_str);
        format!("{base}/v1/apps/{app}/pay/{}/notify", provider.name())
    }

    // ---- merchant configuration -------------------------------------------------------------

    /// Sets the app's merchant configuration for `provider` from the admin's JSON.
    pub async fn configure(
        &self,
        app: &AppName,
        provider: Provider,
        body: Json,
        addresses: PlatformAddresses,
    ) -> Result<MerchantView, PayError> {
        let invalid = |e: serde_json::Error| PayError::InvalidConfig(e.to_string());
        let now = self.now_ms();
        let (settings, secrets, view, login) = match provider {
            Provider::Wechat => {
                let input: WechatPayInput = serde_json::from_value(body).map_err(invalid)?;
                let (settings, secrets) = wechat::settings_of(input)?;
                // The payer's openid is the login provider's: it must be a WeChat one.
                self.0
                    .auth
                    .wechat_appid(app, &settings.login_provider)
                    .await?;
                let view = wechat::view_of(&settings, now);
                let login = settings.login_provider.clone();
                (
                    serde_json::to_string(&settings).map_err(invalid)?,
                    serde_json::to_vec(&secrets).map_err(invalid)?,
                    view,
                    login,
                )
            }
            Provider::Alipay => {
                let input: AlipayPayInput = serde_json::from_value(body).map_err(invalid)?;
                let (settings, secrets) = alipay::settings_of(input)?;
                let view = alipay::view_of(&settings, now);
                let login = settings.login_provider.clone();
                (
                    serde_json::to_string(&settings).map_err(invalid)?,
                    serde_json::to_vec(&secrets).map_err(invalid)?,
                    view,
                    login,
                )
            }
        };
        let current = match self.merchant_view(app, provider).await {
            Ok(current) => Some(current.base_url),
            Err(PayError::NotConfigured(_)) => None,
            Err(e) => return Err(e),
        };
        let default = match provider {
            Provider::Wechat => cloudlet_platforms::wechat_pay::API,
            Provider::Alipay => cloudlet_platforms::alipay::GATEWAY,
        };
        if !addresses.allow(&view.base_url, default, current.as_deref()) {
            return Err(PayError::AddressNotAllowed);
        }
        let row_name = provider.row();
        let row = ProviderRow {
            provider: row_name.to_owned(),
            settings,
            sealed_secrets: Some(self.0.sealer.seal(
                &secrets,
                &seal_place(app, row_name),
                &*self.0.random,
            )),
            updated_at_ms: now,
        };
        self.0.system.put_provider(app, row).await?;
        lock(&self.0.merchants).remove(&(app.clone(), provider));
        // Today's bill is compared tomorrow, then each day's the day after.
        self.reconcile_later(app, provider, BillDate::of_ms(now), 0)
            .await?;
        tracing::info!(app = %app, provider = provider.name(), login, "merchant configured");
        Ok(view)
    }

    pub async fn merchant_view(
        &self,
        app: &AppName,
        provider: Provider,
    ) -> Result<MerchantView, PayError> {
        let row = self
            .0
            .system
            .provider(app, provider.row())
            .await?
            .ok_or_else(|| PayError::NotConfigured(provider.name().into()))?;
        let bad = |_| PayError::Sealing;
        Ok(match provider {
            Provider::Wechat => wechat::view_of(
                &serde_json::from_str(&row.settings).map_err(bad)?,
                row.updated_at_ms,
            ),
            Provider::Alipay => alipay::view_of(
                &serde_json::from_str(&row.settings).map_err(bad)?,
                row.updated_at_ms,
            ),
        })
    }

    /// The app's merchant of `provider`, parsed again only when its row changed (so a change
    /// made on another node holds here at the next use).
    async fn merchant(&self, app: &AppName, provider: Provider) -> Result<Arc<Loaded>, PayError> {
        let row = self
            .0
            .system
            .provider(app, provider.row())
            .await?
            .ok_or_else(|| PayError::NotConfigured(provider.name().into()))?;
        self.open_merchant(app, provider, row)
    }

    /// A deleted app's merchant, kept while its platform may still retry notifications.
    async fn buried_merchant(
        &self,
        app: &AppName,
        provider: Provider,
    ) -> Result<Option<Arc<Loaded>>, PayError> {
        let now = self.now_ms();
        match self
            .0
            .system
            .buried_provider(app, provider.row(), now)
            .await?
        {
            Some(row) => Ok(Some(self.open_merchant(app, provider, row)?)),
            None => Ok(None),
        }
    }

    /// Before an app is deleted: refused while its money is not settled; then its merchants
    /// are kept for [`BURIED_MERCHANT_DAYS`], so that the platforms' retries of notifications
    /// answered before are still verified and answered (WeChat Pay retries for a day, Alipay
    /// for 25 hours).
    pub async fn before_app_deleted(&self, app: &AppName) -> Result<(), PayError> {
        self.check_settled(app).await?;
        let now = self.now_ms();
        let until = now + BURIED_MERCHANT_DAYS * 24 * 3600 * 1000;
        self.0
            .system
            .bury_providers(app, PAY_ROW_PREFIX, now, until)
            .await?;
        Ok(())
    }

    /// Opens a merchant row's secrets (once per version of the row).
    fn open_merchant(
        &self,
        app: &AppName,
        provider: Provider,
        row: ProviderRow,
    ) -> Result<Arc<Loaded>, PayError> {
        let key = (app.clone(), provider);
        if let Some(known) = lock(&self.0.merchants).get(&key)
            && known.updated_at_ms == row.updated_at_ms
        {
            return Ok(Arc::clone(known));
        }
        let sealed = row.sealed_secrets.as_deref().ok_or(PayError::Sealing)?;
        let plain = self
            .0
            .sealer
            .open(sealed, &seal_place(app, provider.row()))
            .map_err(|_| PayError::Sealing)?;
        let bad = |_| PayError::Sealing;
        let http = self.0.http.clone();
        let (merchant, login_provider) = match provider {
            Provider::Wechat => {
                let settings: wechat::Settings =
                    serde_json::from_str(&row.settings).map_err(bad)?;
                let secrets = serde_json::from_slice(&plain).map_err(bad)?;
                let login = settings.login_provider.clone();
                (
                    Merchant::Wechat(wechat::Wechat::open(http, &settings, secrets)?),
                    login,
                )
            }
            Provider::Alipay => {
                let settings: alipay::Settings =
                    serde_json::from_str(&row.settings).map_err(bad)?;
                let secrets = serde_json::from_slice(&plain).map_err(bad)?;
                let login = settings.login_provider.clone();
                (
                    Merchant::Alipay(alipay::Alipay::open(http, &settings, secrets)?),
                    login,
                )
            }
        };
        let loaded = Arc::new(Loaded {
            merchant,
            login_provider,
            updated_at_ms: row.updated_at_ms,
        });
        lock(&self.0.merchants).insert(key, Arc::clone(&loaded));
        Ok(loaded)
    }

    /// The merchant of an order's provider.
    async fn merchant_of(&self, app: &AppName, order: &OrderRow) -> Result<Arc<Loaded>, PayError> {
        self.merchant(app, Provider::parse(&order.provider)?).await
    }

    // ---- orders ----------------------------------------------------------------------------

    /// Creates an order priced by the server (a function, an admin, or a client's `before`
    /// function), places it with the platform, and answers it with what the client needs to
    /// pay. The same key again answers the same order, placed again if placing failed, with
    /// fresh payment parameters while it may be paid.
    pub async fn create_order(&self, app: &AppName, new: NewOrder) -> Result<OrderView, PayError> {
        let provider = Provider::parse(new.provider.as_deref().unwrap_or("wechat"))?;
        let invalid = |why: &str| PayError::Invalid(why.to_owned());
        if !(1..=MAX_AMOUNT_FEN).contains(&new.amount_fen) {
            return Err(invalid("amount_fen is an integer from 1 to 100000000"));
        }
        let chars = new.description.chars().count();
        if !(1..=MAX_DESCRIPTION_CHARS).contains(&chars) || !printable(&new.description) {
            return Err(invalid("description is 1 to 127 printable characters"));
        }
        if provider == Provider::Alipay && new.description.contains(['/', '=', '&']) {
            return Err(invalid("an Alipay description has no / = or &"));
        }
        if !valid_user_id(&new.user) {
            return Err(invalid("user is a user id"));
        }
        if let Some(no) = &new.out_trade_no
            && !provider.valid_trade_no(no)
        {
            return Err(invalid(match provider {
                Provider::Wechat => "out_trade_no is 6 to 32 of A-Z a-z 0-9 _ - | *",
                Provider::Alipay => "out_trade_no is 6 to 64 of A-Z a-z 0-9 _",
            }));
        }
        let metadata = new.metadata.clone().unwrap_or_else(|| json!({}));
        if !metadata.is_object() || metadata.to_string().len() > MAX_METADATA_BYTES {
            return Err(invalid("metadata is a JSON object of at most 2048 bytes"));
        }
        if let Some(key) = &new.key
            && (key.is_empty() || key.len() > MAX_KEY_BYTES || !printable(key))
        {
            return Err(invalid("key is 1 to 64 bytes of printable text"));
        }
        let ttl_ms = match new.expires_in_secs {
            Some(secs) if !(60..=86_400).contains(&secs) => {
                return Err(invalid("expires_in_secs is 60 to 86400"));
            }
            Some(secs) => secs as i64 * 1000,
            None => self.0.options.order_ttl.as_millis() as i64,
        };
        let loaded = self.merchant(app, provider).await?;
        let payer = self
            .payer(app, &new.user, provider, &loaded.login_provider)
            .await?;
        let now = self.now_ms();
        let id = self.new_id("ord_", now);
        let row = OrderRow {
            out_trade_no: new.out_trade_no.clone().unwrap_or_else(|| id.clone()),
            id,
            provider: provider.name().to_owned(),
            // Per user, whatever the provider: one key is one order.
            key: new.key.as_ref().map(|k| format!("{}:{k}", new.user)),
            user_id: Some(new.user.clone()),
            amount_fen: new.amount_fen,
            description: new.description.clone(),
            metadata: metadata.to_string(),
            state: ORDER_CREATED.to_owned(),
            refunded_fen: 0,
            reserved_fen: 0,
            transaction_id: None,
            prepay: None,
            expires_at_ms: now + ttl_ms,
            paid_at_ms: None,
            created_at_ms: now,
            updated_at_ms: now,
        };
        let order = match self.0.store.create_order(app, row).await {
            Ok(Created::New(order)) => {
                // The check first: whatever happens to the placing, the order is followed up.
                self.check_later(app, Check::Order(order.id.clone()), 0)
                    .await?;
                order
            }
            Ok(Created::Existing(order)) => {
                let same = order.amount_fen == new.amount_fen
                    && order.provider == provider.name()
                    && order.user_id.as_deref() == Some(new.user.as_str());
                if !same {
                    return Err(PayError::KeyReused);
                }
                if order.state == ORDER_CREATED {
                    // Its check again, in case sending it failed the first time (the same key
                    // within the day: sent once).
                    self.check_later(app, Check::Order(order.id.clone()), 0)
                        .await?;
                }
                order
            }
            Err(StoreError::Conflict) => return Err(PayError::TradeNoTaken),
            Err(e) => return Err(e.into()),
        };
        if order.state != ORDER_CREATED || order.expires_at_ms <= now {
            return Ok(view(order, None));
        }
        // A WeChat Pay prepay id lasts two hours: an older one is placed again.
        let fresh = |prepay: &Json| {
            prepay["placed_at_ms"]
                .as_i64()
                .is_some_and(|at| now - at < PREPAY_FRESH_MS)
        };
        let prepay = match prepay_of(&order).filter(fresh) {
            Some(prepay) => prepay,
            None => {
                let url = self.notify_url(app, provider);
                let prepay = match (&loaded.merchant, &payer) {
                    (Merchant::Wechat(m), Payer::Wechat { appid, openid }) => {
                        m.place(&order, appid, openid, &url, now / 1000).await?
                    }
                    (Merchant::Alipay(m), Payer::Alipay { buyer }) => {
                        m.place(&order, buyer, &url, now / 1000).await?
                    }
                    _ => return Err(PayError::Invalid("the payer is of another platform".into())),
                };
                let mut prepay = prepay;
                prepay["placed_at_ms"] = json!(now);
                self.0
                    .store
                    .set_prepay(app, &order.id, &prepay.to_string(), now)
                    .await?;
                prepay
            }
        };
        let payment = loaded.merchant.payment(&prepay, now / 1000);
        Ok(view(order, payment))
    }

    /// Who pays, as the platform knows them.
    async fn payer(
        &self,
        app: &AppName,
        user: &str,
        provider: Provider,
        login_provider: &str,
    ) -> Result<Payer, PayError> {
        let appid = match provider {
            Provider::Wechat => Some(self.0.auth.wechat_appid(app, login_provider).await?),
            Provider::Alipay => None,
        };
        match self.0.users.identity_of(app, user, login_provider).await? {
            Some((id, _)) => Ok(match appid {
                Some(appid) => Payer::Wechat { appid, openid: id },
                None => Payer::Alipay { buyer: id },
            }),
            None if self.0.users.user(app, user).await?.is_none() => {
                Err(AuthError::UserNotFound.into())
            }
            None => Err(PayError::NoIdentity(login_provider.to_owned())),
        }
    }

    /// A new id, `{prefix}{time}{random}`: ordered by creation, 32 characters for orders (so
    /// it can be the order number too, on either platform).
    fn new_id(&self, prefix: &str, now_ms: i64) -> String {
        let mut bytes = [0u8; 8];
        self.0.random.fill(&mut bytes);
        format!("{prefix}{now_ms:012x}{}", hex::encode(bytes))
    }

    async fn order_row(&self, app: &AppName, id: &str) -> Result<OrderRow, PayError> {
        if !valid_number(id, 1, 64) {
            return Err(PayError::OrderNotFound);
        }
        self.0
            .store
            .order(app, id)
            .await?
            .ok_or(PayError::OrderNotFound)
    }

    /// A user's own order; another user's is not found.
    pub async fn order_of_user(
        &self,
        app: &AppName,
        user: &str,
        id: &str,
    ) -> Result<OrderView, PayError> {
        let order = self.order_row(app, id).await?;
        if order.user_id.as_deref() != Some(user) {
            return Err(PayError::OrderNotFound);
        }
        Ok(view(order, None))
    }

    /// Asks the platform about a user's unpaid order at once (the client's "paid" is only a
    /// hint): answers the order as it is then.
    pub async fn confirm(
        &self,
        app: &AppName,
        user: &str,
        id: &str,
    ) -> Result<OrderView, PayError> {
        let order = self.order_row(app, id).await?;
        if order.user_id.as_deref() != Some(user) {
            return Err(PayError::OrderNotFound);
        }
        if order.state != ORDER_CREATED {
            return Ok(view(order, None));
        }
        let loaded = self.merchant_of(app, &order).await?;
        match loaded.merchant.query(&order, self.now_ms() / 1000).await? {
            Found::Paid(payment) => {
                let applied = self
                    .apply_paid(app, &loaded.merchant, &order, payment, "query")
                    .await?;
                Ok(view(applied, None))
            }
            Found::Waiting | Found::Closed(_) | Found::Missing => Ok(view(order, None)),
        }
    }

    pub async fn detail(&self, app: &AppName, id: &str) -> Result<OrderDetail, PayError> {
        let order = self.order_row(app, id).await?;
        let refunds = self.0.store.refunds(app, id).await?;
        let events = self.0.store.pay_events(app, id).await?;
        Ok(OrderDetail {
            order: view(order, None),
            refunds: refunds.into_iter().map(RefundView::from).collect(),
            events: events
                .into_iter()
                .map(|e| PayEventView {
                    name: e.name,
                    source: e.source,
                    payload: serde_json::from_str(&e.payload).unwrap_or(Json::Null),
                    at: Timestamp::from_unix_ms(e.at_ms),
                })
                .collect(),
        })
    }

    pub async fn orders(
        &self,
        app: &AppName,
        query: OrderQuery,
    ) -> Result<Vec<OrderView>, PayError> {
        Ok(self
            .0
            .store
            .orders(app, query)
            .await?
            .into_iter()
            .map(|o| view(o, None))
            .collect())
    }

    /// Closes an unpaid order: on the platform first, then here.
    pub async fn close(&self, app: &AppName, id: &str) -> Result<OrderView, PayError> {
        let order = self.order_row(app, id).await?;
        if order.state != ORDER_CREATED {
            return Err(PayError::OrderState(order.state));
        }
        let loaded = self.merchant_of(app, &order).await?;
        let closed = self
            .close_order(app, &loaded.merchant, &order, "admin")
            .await?;
        if closed.state != ORDER_CLOSED {
            return Err(PayError::OrderState(closed.state));
        }
        Ok(view(closed, None))
    }

    /// Closes `order` on the platform, then here; or takes its payment if the platform says it
    /// was paid. Answers the order as it then is.
    async fn close_order(
        &self,
        app: &AppName,
        merchant: &Merchant,
        order: &OrderRow,
        source: &str,
    ) -> Result<OrderRow, PayError> {
        let now = self.now_ms();
        let payload = match merchant.close(order, now / 1000).await? {
            Found::Paid(payment) => {
                return self
                    .apply_paid(app, merchant, order, payment, "query")
                    .await;
            }
            Found::Closed(found) => found,
            Found::Missing => json!({ "closed": "never placed" }),
            // Not closable yet (a platform that says waiting): nothing to change.
            Found::Waiting => return Ok(order.clone()),
        };
        let cause = Cause {
            source: source.to_owned(),
            payload: payload.to_string(),
            at_ms: now,
        };
        self.apply(app, &order.id, Change::Closed, cause).await
    }

    /// Applies a change with the deliveries of the functions its event triggers.
    async fn apply(
        &self,
        app: &AppName,
        id: &str,
        change: Change,
        cause: Cause,
    ) -> Result<OrderRow, PayError> {
        let kind = change.log_kind();
        let emitted = match self.0.triggers.get() {
            // Callbacks and checks come from outside any trigger's run (depth 0); a change made
            // by a function (`ctx.pay.close`) counts one deeper than the function, or a `pay`
            // trigger that closes an order would trigger itself for ever.
            Some(triggers) => {
                let depth = crate::data::TRIGGER_DEPTH
                    .try_with(|depth| *depth)
                    .unwrap_or(0);
                triggers.emit_for_pay(app, kind, depth).await?
            }
            None => None,
        };
        let (emit, ticket): (_, Option<HintTicket>) = match emitted {
            Some((emit, ticket)) => (Some(emit), Some(ticket)),
            None => (None, None),
        };
        let applied = self.0.store.apply(app, id, change, cause, emit).await;
        if let (Some(triggers), Some(ticket)) = (self.0.triggers.get(), ticket) {
            triggers.emitted(app, ticket).await;
        }
        Ok(match applied? {
            Applied::Changed(order) => order,
            Applied::Unchanged(order) => order,
        })
    }

    /// Takes a verified payment (from a callback or a query) as the order's, if it is this
    /// order's: the merchant, the app, the number and the amount must all match.
    async fn apply_paid(
        &self,
        app: &AppName,
        merchant: &Merchant,
        order: &OrderRow,
        payment: Payment,
        source: &str,
    ) -> Result<OrderRow, PayError> {
        let appid = prepay_of(order).and_then(|p| p["appid"].as_str().map(str::to_owned));
        let mismatch = if payment.merchant != merchant.id() {
            Some("merchant")
        } else if appid.is_none_or(|a| a != payment.appid) {
            Some("appid")
        } else if payment.out_trade_no != order.out_trade_no {
            Some("out_trade_no")
        } else if payment.amount_fen != Some(order.amount_fen) {
            Some("amount")
        } else if !payment.paid {
            Some("trade_state")
        } else {
            None
        };
        if let Some(field) = mismatch {
            tracing::warn!(app = %app, order = %order.id, field, "a payment that does not match its order");
            return Err(PayError::Mismatch(field.to_owned()));
        }
        let transaction_id = payment
            .transaction_id
            .filter(|t| valid_number(t, 1, 64))
            .ok_or_else(|| PayError::Mismatch("transaction_id".into()))?;
        let now = self.now_ms();
        let change = Change::Paid {
            transaction_id,
            paid_at_ms: payment.paid_at_ms.unwrap_or(now),
        };
        let cause = Cause {
            source: source.to_owned(),
            payload: payment.payload.to_string(),
            at_ms: now,
        };
        let order = self.apply(app, &order.id, change, cause).await?;
        if order.state == ORDER_CLOSED {
            // Money was taken for an order closed here: the platform must have it closed too,
            // so this is a disagreement for a person to look at.
            tracing::error!(app = %app, order = %order.id, "a payment for a closed order");
        }
        Ok(order)
    }

    async fn refund_row(&self, app: &AppName, no: &str) -> Result<RefundRow, PayError> {
        if !valid_number(no, 1, 64) {
            return Err(PayError::RefundNotFound);
        }
        self.0
            .store
            .refund(app, no)
            .await?
            .ok_or(PayError::RefundNotFound)
    }

    /// Takes what a platform said of a refund as its outcome, if it is that refund's.
    async fn apply_refund(
        &self,
        app: &AppName,
        order: &OrderRow,
        refund: &RefundRow,
        found: RefundFound,
        source: &str,
    ) -> Result<(), PayError> {
        let (facts, succeeded) = match found {
            RefundFound::Succeeded(facts) => (facts, true),
            RefundFound::Failed(facts) => (facts, false),
            // Still processing, or not known there: nothing to apply yet.
            RefundFound::Pending(_) | RefundFound::Missing => return Ok(()),
            RefundFound::Refused(payload) => {
                let change = Change::Refund {
                    out_refund_no: refund.out_refund_no.clone(),
                    refund_id: None,
                    succeeded: false,
                };
                let cause = Cause {
                    source: source.to_owned(),
                    payload: payload.to_string(),
                    at_ms: self.now_ms(),
                };
                self.apply(app, &order.id, change, cause).await?;
                return Ok(());
            }
        };
        let mismatch = if !facts.merchant_ok {
            Some("merchant")
        } else if facts
            .out_trade_no
            .as_deref()
            .is_some_and(|no| no != order.out_trade_no)
        {
            Some("out_trade_no")
        } else if succeeded && facts.amount_fen != Some(refund.amount_fen) {
            Some("amount")
        } else {
            None
        };
        if let Some(field) = mismatch {
            tracing::warn!(app = %app, refund = %refund.out_refund_no, field, "a refund that does not match");
            return Err(PayError::Mismatch(field.to_owned()));
        }
        if succeeded && refund.state == cloudlet_store::REFUND_FAILED {
            // Failed here (a refusal), done there: money moved that the books do not show.
            tracing::error!(app = %app, refund = %refund.out_refund_no, "a refund failed here succeeded at the platform");
        }
        let change = Change::Refund {
            out_refund_no: refund.out_refund_no.clone(),
            refund_id: facts.refund_id,
            succeeded,
        };
        let cause = Cause {
            source: source.to_owned(),
            payload: facts.payload.to_string(),
            at_ms: self.now_ms(),
        };
        self.apply(app, &order.id, change, cause).await?;
        Ok(())
    }

    // ---- refunds ---------------------------------------------------------------------------

    /// Refunds (part of) a paid order. Only functions and admins may; the same number again is
    /// the same refund. Its outcome arrives by notification or query.
    pub async fn refund(
        &self,
        app: &AppName,
        order_id: &str,
        new: NewRefund,
    ) -> Result<RefundView, PayError> {
        let invalid = |why: &str| PayError::Invalid(why.to_owned());
        if !(1..=MAX_AMOUNT_FEN).contains(&new.amount_fen) {
            return Err(invalid("amount_fen is an integer from 1 to 100000000"));
        }
        if let Some(no) = &new.out_refund_no
            && !valid_number(no, 1, 64)
        {
            return Err(invalid("out_refund_no is 1 to 64 of A-Z a-z 0-9 _ - | * @"));
        }
        let reason = new.reason.clone().unwrap_or_default();
        if reason.chars().count() > MAX_REASON_CHARS || !printable(&reason) {
            return Err(invalid("reason is at most 80 printable characters"));
        }
        let order = self.order_row(app, order_id).await?;
        let loaded = self.merchant_of(app, &order).await?;
        let now = self.now_ms();
        let row = RefundRow {
            out_refund_no: new
                .out_refund_no
                .clone()
                .unwrap_or_else(|| self.new_id("ref_", now)),
            order_id: order.id.clone(),
            amount_fen: new.amount_fen,
            reason,
            state: REFUND_PENDING.to_owned(),
            refund_id: None,
            created_at_ms: now,
            updated_at_ms: now,
        };
        let reserved = self.0.store.reserve_refund(app, row).await?;
        // A refund sent before (its number again) is sent again as a check sends it: a
        // refusal then is weighed against the platform's own word on the refund.
        let first = matches!(reserved, Reserved::New(_));
        let refund = match reserved {
            Reserved::New(refund) => refund,
            Reserved::Existing(refund) => {
                if refund.order_id != order.id || refund.amount_fen != new.amount_fen {
                    return Err(PayError::RefundReused);
                }
                if refund.state != REFUND_PENDING {
                    return Ok(refund.into());
                }
                // Its check again, in case sending it failed the first time.
                self.check_later(app, Check::Refund(refund.out_refund_no.clone()), 0)
                    .await?;
                refund
            }
            Reserved::Exceeds(_) => return Err(PayError::RefundExceeds),
            Reserved::NotRefundable(order) => return Err(PayError::OrderState(order.state)),
        };
        // The check first: whatever happens to the request, the refund is followed up.
        self.check_later(app, Check::Refund(refund.out_refund_no.clone()), 0)
            .await?;
        match self
            .send_refund(app, &loaded.merchant, &order, &refund, first)
            .await
        {
            Ok(()) | Err(PayError::PlatformUnavailable(_)) => {}
            Err(e) => return Err(e),
        }
        Ok(self
            .0
            .store
            .refund(app, &refund.out_refund_no)
            .await?
            .unwrap_or(refund)
            .into())
    }

    /// Asks the platform for a reserved refund and takes what it answers; a refusal fails the
    /// refund (its amount is free again) and is answered as an error, unless the refund was
    /// sent before (not `first`) and the platform's query finds it. Alipay wants 3 s between
    /// refunds of one trade: a refund that comes sooner waits for its check to send it.
    async fn send_refund(
        &self,
        app: &AppName,
        merchant: &Merchant,
        order: &OrderRow,
        refund: &RefundRow,
        first: bool,
    ) -> Result<(), PayError> {
        let now = self.now_ms();
        if matches!(merchant, Merchant::Alipay(_)) {
            let others = self.0.store.refunds(app, &order.id).await?;
            let recent = others.iter().any(|r| {
                r.out_refund_no != refund.out_refund_no
                    && r.created_at_ms <= refund.created_at_ms
                    && refund.created_at_ms - r.created_at_ms < ALIPAY_REFUND_SPACING_MS
            });
            if recent && now - refund.created_at_ms < ALIPAY_REFUND_SPACING_MS {
                return Ok(());
            }
        }
        let url = self.notify_url(app, Provider::parse(&order.provider)?);
        let found = merchant.refund(order, refund, &url, now / 1000).await?;
        if let RefundFound::Succeeded(facts) | RefundFound::Pending(facts) = &found
            && let Some(id) = &facts.refund_id
        {
            self.0
                .store
                .set_refund_id(app, &refund.out_refund_no, id, now)
                .await?;
        }
        let refused = match &found {
            RefundFound::Refused(payload) => Some(payload.to_string()),
            _ => None,
        };
        // Sent again and refused: the refusal may be of the refund itself, done meanwhile (a
        // trade refunded whole is closed, and refuses any refund since, its own included). The
        // platform's word on the refund decides: one it has is taken as it is; one it does not
        // know never happened, and the refusal stands.
        let found = match (&refused, first) {
            (Some(why), false) => match merchant.query_refund(order, refund, now / 1000).await? {
                RefundFound::Missing => found,
                known => {
                    tracing::info!(app = %app, refund = %refund.out_refund_no, why, "a refund sent again was refused, and found done");
                    return self.apply_refund(app, order, refund, known, "query").await;
                }
            },
            _ => found,
        };
        self.apply_refund(app, order, refund, found, "query")
            .await?;
        match refused {
            Some(why) => Err(PayError::PlatformRefused(why)),
            None => Ok(()),
        }
    }

    // ---- reconciliation ---------------------------------------------------------------------

    /// Puts a check on [`PAYMENT_QUEUE`]; `generation` numbers the checks of one thing, so
    /// that a check that ran out of attempts can send the next.
    async fn check_later(
        &self,
        app: &AppName,
        check: Check,
        generation: u32,
    ) -> Result<(), PayError> {
        let delay = self.0.options.check_delay.as_secs_f64();
        self.queue_check(check, app, delay, generation).await
    }

    async fn queue_check(
        &self,
        check: Check,
        app: &AppName,
        delay_secs: f64,
        generation: u32,
    ) -> Result<(), PayError> {
        let key = match &check {
            Check::Order(id) => format!("order:{id}:{generation}"),
            Check::Refund(no) => format!("refund:{no}:{generation}"),
            Check::Bill { provider, date } => format!("bill:{provider}:{date}:{generation}"),
        };
        let payload = json!({ "check": check, "generation": generation });
        self.0
            .queues
            .send_to(
                app,
                PAYMENT_QUEUE,
                vec![Outgoing {
                    payload,
                    delay_secs: Some(delay_secs),
                    key: Some(key),
                }],
            )
            .await?;
        Ok(())
    }

    /// Runs one check of [`PAYMENT_QUEUE`]: done (acknowledged) once the order is paid or
    /// closed, or the refund settled; otherwise retried with the queue's backoff, and past its
    /// last attempt followed by the next check, so that nothing is left unwatched.
    pub async fn deliver(&self, app: &AppName, delivery: Delivery) {
        // Cloudlet's own payload, small: `{"check", "generation"}`.
        let payload: Json = serde_json::from_str(delivery.payload.get()).unwrap_or_default();
        let check = serde_json::from_value::<Check>(payload["check"].clone());
        let generation = payload["generation"].as_u64().unwrap_or(0) as u32;
        let outcome = match &check {
            Ok(Check::Order(id)) => self.check_order(app, id).await,
            Ok(Check::Refund(no)) => self.check_refund(app, no).await,
            Ok(Check::Bill { provider, date }) => {
                self.reconcile_daily(app, provider, date, generation).await
            }
            Err(e) => Err(PayError::Invalid(format!("not a payment check: {e}"))),
        };
        let queues = &self.0.queues;
        let last = delivery.attempt >= delivery.max_attempts;
        let settled = match outcome {
            Ok(true) => queues.ack(app, &delivery.id, &delivery.lease).await,
            // Nothing to check any more: a merchant removed stops its daily comparison too.
            Err(
                e @ (PayError::Invalid(_)
                | PayError::OrderNotFound
                | PayError::RefundNotFound
                | PayError::NotConfigured(_)
                | PayError::InvalidBillDate(_)),
            ) => queues
                .give_up(app, &delivery.id, &delivery.lease, &e.to_string())
                .await
                .map(|_| ()),
            unsettled => {
                let error = match unsettled {
                    Err(e) => e.to_string(),
                    _ => "not settled yet".to_owned(),
                };
                // A day's comparison that keeps failing is left in the dead letters: the next
                // day's was queued before it ran.
                if last
                    && let Ok(check) = check
                    && !matches!(check, Check::Bill { .. })
                    && let Err(e) = self.check_later(app, check, generation + 1).await
                {
                    tracing::warn!(app = %app, error = %e, "could not send the next payment check");
                }
                queues
                    .fail(
                        app,
                        PAYMENT_QUEUE,
                        &delivery.id,
                        &delivery.lease,
                        delivery.attempt,
                        &error,
                    )
                    .await
                    .map(|_| ())
            }
        };
        if let Err(e) = settled {
            tracing::warn!(app = %app, error = %e, "a payment check could not be settled");
        }
    }

    /// Whether the order is settled (paid or closed) after asking the platform.
    async fn check_order(&self, app: &AppName, id: &str) -> Result<bool, PayError> {
        let order = self.order_row(app, id).await?;
        if order.state != ORDER_CREATED {
            return Ok(true);
        }
        let loaded = self.merchant_of(app, &order).await?;
        let now = self.now_ms();
        match loaded.merchant.query(&order, now / 1000).await? {
            Found::Paid(payment) => {
                self.apply_paid(app, &loaded.merchant, &order, payment, "query")
                    .await?;
                Ok(true)
            }
            Found::Closed(found) => {
                let cause = Cause {
                    source: "query".to_owned(),
                    payload: found.to_string(),
                    at_ms: now,
                };
                self.apply(app, &order.id, Change::Closed, cause).await?;
                Ok(true)
            }
            Found::Waiting | Found::Missing if order.expires_at_ms <= now => {
                let closed = self
                    .close_order(app, &loaded.merchant, &order, "query")
                    .await?;
                Ok(closed.state != ORDER_CREATED)
            }
            Found::Waiting | Found::Missing => Ok(false),
        }
    }

    /// Whether the refund is settled after asking the platform; a refund the platform never
    /// received is asked for again.
    async fn check_refund(&self, app: &AppName, no: &str) -> Result<bool, PayError> {
        let refund = self.refund_row(app, no).await?;
        if refund.state != REFUND_PENDING {
            return Ok(true);
        }
        let order = self.order_row(app, &refund.order_id).await?;
        let loaded = self.merchant_of(app, &order).await?;
        let now = self.now_ms();
        match loaded
            .merchant
            .query_refund(&order, &refund, now / 1000)
            .await?
        {
            RefundFound::Missing => {
                // Sent again: a refusal is weighed against the platform's word on the refund
                // (`send_refund`); one that stands fails it, which settles this check.
                match self
                    .send_refund(app, &loaded.merchant, &order, &refund, false)
                    .await
                {
                    Ok(()) | Err(PayError::PlatformRefused(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            found => {
                self.apply_refund(app, &order, &refund, found, "query")
                    .await?
            }
        }
        let now = self.0.store.refund(app, no).await?;
        Ok(now.is_none_or(|r| r.state != REFUND_PENDING))
    }

    /// Refuses while the app has money not settled: orders that may still be paid, refunds
    /// pending.
    async fn check_settled(&self, app: &AppName) -> Result<(), PayError> {
        match self.0.store.unsettled(app).await? {
            0 => Ok(()),
            n => Err(PayError::Unsettled(n)),
        }
    }
}

/// How long a placing's answer is used before the order is placed again (WeChat Pay's prepay
/// id lasts two hours).
const PREPAY_FRESH_MS: i64 = 100 * 60 * 1000;

/// Alipay asks for at least 3 s between refunds of one trade.
const ALIPAY_REFUND_SPACING_MS: i64 = 3_000;

/// Who pays, in the platform's ids.
enum Payer {
    Wechat { appid: String, openid: String },
    Alipay { buyer: String },
}

fn valid_user_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn prepay_of(order: &OrderRow) -> Option<Json> {
    order
        .prepay
        .as_deref()
        .and_then(|p| serde_json::from_str(p).ok())
}

fn view(order: OrderRow, payment: Option<Json>) -> OrderView {
    OrderView {
        metadata: serde_json::from_str(&order.metadata).unwrap_or_else(|_| json!({})),
        id: order.id,
        provider: order.provider,
        out_trade_no: order.out_trade_no,
        user_id: order.user_id,
        amount_fen: order.amount_fen,
        description: order.description,
        state: order.state,
        refunded_fen: order.refunded_fen,
        transaction_id: order.transaction_id,
        expires_at: Timestamp::from_unix_ms(order.expires_at_ms),
        paid_at: order.paid_at_ms.map(Timestamp::from_unix_ms),
        created_at: Timestamp::from_unix_ms(order.created_at_ms),
        payment,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_times_are_what_wechat_pay_takes() {
        assert!(valid_number("T-0001|a*b", 6, 32));
        assert!(!valid_number("short", 6, 32));
        assert!(!valid_number("has space", 1, 32));
        assert!(!valid_number(&"x".repeat(33), 6, 32));
        assert_eq!(
            china_time(1_700_000_000_000).as_deref(),
            Some("2023-11-15T06:13:20+08:00")
        );
        assert_eq!(
            parse_time_ms("2023-11-15T06:13:20+08:00"),
            Some(1_700_000_000_000)
        );
        assert_eq!(parse_time_ms("yesterday"), None);
    }
}
