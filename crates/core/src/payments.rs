//! Payments: merchant configuration, orders priced on the server, verified callbacks, refunds
//! and reconciliation. WeChat Pay API v3 (JSAPI, for mini programs) is supported; Alipay's
//! trade APIs come next (the store and the routes already name the provider).
//!
//! - **Merchant configuration** lives beside the login providers in the control plane, as the
//!   provider `pay.wechat`: what is not secret in the clear, the merchant's private key and
//!   APIv3 key sealed under the master key. It is read on every use and parsed again only when
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

use cloudlet_platforms::PlatformError;
use cloudlet_platforms::PlatformHttp;
use cloudlet_platforms::wechat_pay::{
    self, JsapiOrder, Merchant, Notification, PlatformKeys, RefundRequest, Signed, Unverified,
    WechatPayClient,
};
use cloudlet_store::{
    AppName, Applied, Cause, Change, Created, ORDER_CREATED, ORDER_PAID, ORDER_PARTLY_REFUNDED,
    OrderQuery, OrderRow, PaymentStore, ProviderRow, REFUND_PENDING, RefundRow, Reserved,
    StoreError, SystemStore, UserStore,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

use crate::auth::{Auth, AuthError};
use crate::clock::{Clock, Timestamp};
use crate::data::Triggers;
use crate::queues::HintTicket;
use crate::queues::{Delivery, Outgoing, PAYMENT_QUEUE, QueueError, Queues};
use crate::random::Random;
use crate::sealing::Sealer;

/// A notification's signature headers (`Wechatpay-Timestamp`, `-Nonce`, `-Signature`,
/// `-Serial`), as the HTTP layer hands them in.
pub use cloudlet_platforms::wechat_pay::Signed as NotifySignature;

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

/// The control plane's provider row of WeChat Pay's merchant configuration.
const WECHAT_ROW: &str = "pay.wechat";

#[derive(Debug, thiserror::Error)]
pub enum PayError {
    #[error("unknown payment provider {0:?}: payments support wechat (Alipay comes later)")]
    UnknownProvider(String),
    #[error("payments with {0} are not configured for this app")]
    NotConfigured(String),
    #[error("invalid merchant configuration: {0}")]
    InvalidConfig(String),
    #[error("{0}")]
    Invalid(String),
    #[error("no such order")]
    OrderNotFound,
    #[error("no such refund")]
    RefundNotFound,
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    Wechat,
}

impl Provider {
    pub fn parse(text: &str) -> Result<Self, PayError> {
        match text {
            "wechat" => Ok(Provider::Wechat),
            other => Err(PayError::UnknownProvider(other.chars().take(40).collect())),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Provider::Wechat => "wechat",
        }
    }
}

// ---- merchant configuration -----------------------------------------------------------------

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
struct WechatSettings {
    mchid: String,
    serial_no: String,
    platform_keys: Vec<PlatformKeyInput>,
    login_provider: String,
    base_url: String,
}

/// What is sealed.
#[derive(Serialize, Deserialize)]
struct WechatSecrets {
    private_key: String,
    api_v3_key: String,
}

/// A merchant configuration as the admin API shows it: never its secrets.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MerchantView {
    pub provider: &'static str,
    pub mchid: String,
    pub serial_no: String,
    /// The serials of the keys WeChat Pay signs with.
    pub platform_serials: Vec<String>,
    pub login_provider: String,
    pub base_url: String,
    pub updated_at: Timestamp,
}

/// A merchant ready to use, parsed from its row.
struct Wechat {
    client: WechatPayClient,
    keys: PlatformKeys,
    api_v3_key: Vec<u8>,
    mchid: String,
    login_provider: String,
    updated_at_ms: i64,
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
    merchants: Mutex<HashMap<AppName, Arc<Wechat>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

fn seal_place(app: &AppName) -> String {
    format!("{app}/provider/{WECHAT_ROW}")
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

    fn notify_url(&self, app: &AppName, provider: Provider, what: &str) -> String {
        let base = self.0.public_url.get().map_or("", String::as_str);
        format!("{base}/v1/apps/{app}/pay/{}/{what}", provider.name())
    }

    // ---- merchant configuration -------------------------------------------------------------

    pub async fn configure(
        &self,
        app: &AppName,
        provider: Provider,
        input: WechatPayInput,
    ) -> Result<MerchantView, PayError> {
        let Provider::Wechat = provider;
        let invalid = |why: &str| PayError::InvalidConfig(why.to_owned());
        if !(1..=32).contains(&input.mchid.len())
            || !input.mchid.bytes().all(|b| b.is_ascii_digit())
        {
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
        let login_provider = input.login_provider.unwrap_or_else(|| "wechat".to_owned());
        self.0.auth.wechat_appid(app, &login_provider).await?;
        let base_url = input.base_url.unwrap_or_else(|| wechat_pay::API.to_owned());
        if !(base_url.starts_with("https://") || base_url.starts_with("http://")) {
            return Err(invalid("base_url is an http(s) URL"));
        }
        let settings = WechatSettings {
            mchid: input.mchid,
            serial_no: input.serial_no,
            platform_keys: input.platform_keys,
            login_provider,
            base_url,
        };
        let secrets = serde_json::to_vec(&WechatSecrets {
            private_key: input.private_key,
            api_v3_key: input.api_v3_key,
        })
        .map_err(|e| invalid(&e.to_string()))?;
        let now = self.now_ms();
        let row = ProviderRow {
            provider: WECHAT_ROW.to_owned(),
            settings: serde_json::to_string(&settings).map_err(|e| invalid(&e.to_string()))?,
            sealed_secrets: Some(
                self.0
                    .sealer
                    .seal(&secrets, &seal_place(app), &*self.0.random),
            ),
            updated_at_ms: now,
        };
        self.0.system.put_provider(app, row).await?;
        lock(&self.0.merchants).remove(app);
        tracing::info!(app = %app, "WeChat Pay merchant configured");
        Ok(view_of(&settings, now))
    }

    pub async fn merchant_view(
        &self,
        app: &AppName,
        provider: Provider,
    ) -> Result<MerchantView, PayError> {
        let Provider::Wechat = provider;
        let row = self
            .0
            .system
            .provider(app, WECHAT_ROW)
            .await?
            .ok_or_else(|| PayError::NotConfigured(provider.name().into()))?;
        let settings: WechatSettings =
            serde_json::from_str(&row.settings).map_err(|_| PayError::Sealing)?;
        Ok(view_of(&settings, row.updated_at_ms))
    }

    /// The app's WeChat Pay merchant, parsed again only when its row changed.
    async fn wechat(&self, app: &AppName) -> Result<Arc<Wechat>, PayError> {
        let row = self
            .0
            .system
            .provider(app, WECHAT_ROW)
            .await?
            .ok_or_else(|| PayError::NotConfigured("wechat".into()))?;
        if let Some(known) = lock(&self.0.merchants).get(app)
            && known.updated_at_ms == row.updated_at_ms
        {
            return Ok(Arc::clone(known));
        }
        let settings: WechatSettings =
            serde_json::from_str(&row.settings).map_err(|_| PayError::Sealing)?;
        let sealed = row.sealed_secrets.as_deref().ok_or(PayError::Sealing)?;
        let secrets: WechatSecrets = self
            .0
            .sealer
            .open(sealed, &seal_place(app))
            .ok()
            .and_then(|plain| serde_json::from_slice(&plain).ok())
            .ok_or(PayError::Sealing)?;
        let merchant = Merchant::new(&settings.mchid, &settings.serial_no, &secrets.private_key)
            .map_err(|_| PayError::Sealing)?;
        let mut keys = PlatformKeys::default();
        for key in &settings.platform_keys {
            keys = keys
                .with(&key.serial, &key.public_key)
                .map_err(|_| PayError::Sealing)?;
        }
        let wechat = Arc::new(Wechat {
            client: WechatPayClient::new(
                self.0.http.clone(),
                &settings.base_url,
                merchant,
                keys.clone(),
            ),
            keys,
            api_v3_key: secrets.api_v3_key.into_bytes(),
            mchid: settings.mchid,
            login_provider: settings.login_provider,
            updated_at_ms: row.updated_at_ms,
        });
        lock(&self.0.merchants).insert(app.clone(), Arc::clone(&wechat));
        Ok(wechat)
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
        if !valid_user_id(&new.user) {
            return Err(invalid("user is a user id"));
        }
        if let Some(no) = &new.out_trade_no
            && (!valid_number(no, 6, 32) || no.contains('@'))
        {
            return Err(invalid("out_trade_no is 6 to 32 of A-Z a-z 0-9 _ - | *"));
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
        let wechat = self.wechat(app).await?;
        let (appid, openid) = self.payer(app, &new.user, &wechat.login_provider).await?;
        let now = self.now_ms();
        let id = self.new_id("ord_", now);
        let row = OrderRow {
            out_trade_no: new.out_trade_no.clone().unwrap_or_else(|| id.clone()),
            id,
            provider: provider.name().to_owned(),
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
                self.check_later(
                    app,
                    Check::Order(order.id.clone()),
                    self.0.options.check_delay,
                )
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
                order
            }
            Err(StoreError::Conflict) => return Err(PayError::TradeNoTaken),
            Err(e) => return Err(e.into()),
        };
        if order.state != ORDER_CREATED || order.expires_at_ms <= now {
            return Ok(view(order, None));
        }
        let prepay_id =
            match prepay_of(&order).and_then(|p| p["prepay_id"].as_str().map(str::to_owned)) {
                Some(id) => id,
                None => {
                    let placed = JsapiOrder {
                        appid: appid.clone(),
                        description: order.description.clone(),
                        out_trade_no: order.out_trade_no.clone(),
                        time_expire: china_time(order.expires_at_ms),
                        attach: None,
                        notify_url: self.notify_url(app, provider, "notify"),
                        total_fen: order.amount_fen,
                        payer_openid: openid,
                    };
                    let prepay_id = wechat.client.jsapi(&placed, now / 1000).await?;
                    let prepay = json!({ "appid": appid, "prepay_id": prepay_id });
                    self.0
                        .store
                        .set_prepay(app, &order.id, &prepay.to_string(), now)
                        .await?;
                    prepay_id
                }
            };
        let payment = wechat
            .client
            .request_payment(&appid, &prepay_id, now / 1000);
        let payment = serde_json::to_value(payment).map_err(|e| invalid(&e.to_string()))?;
        Ok(view(order, Some(payment)))
    }

    /// The user's openid in the merchant's mini program, and its appid.
    async fn payer(
        &self,
        app: &AppName,
        user: &str,
        provider: &str,
    ) -> Result<(String, String), PayError> {
        let appid = self.0.auth.wechat_appid(app, provider).await?;
        match self.0.users.identity_of(app, user, provider).await? {
            Some((openid, _)) => Ok((appid, openid)),
            None if self.0.users.user(app, user).await?.is_none() => {
                Err(AuthError::UserNotFound.into())
            }
            None => Err(PayError::NoIdentity(provider.to_owned())),
        }
    }

    /// A new id, `{prefix}{time}{random}`: ordered by creation, 32 characters for orders (so
    /// it can be the order number too).
    fn new_id(&self, prefix: &str, now_ms: i64) -> String {
        let mut bytes = [0u8; 8];
        self.0.random.fill(&mut bytes);
        format!("{prefix}{now_ms:012x}{}", hex::encode(bytes))
    }

    pub async fn order(&self, app: &AppName, id: &str) -> Result<OrderView, PayError> {
        Ok(view(self.order_row(app, id).await?, None))
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
        let wechat = self.wechat(app).await?;
        let now = self.now_ms();
        match wechat.client.query(&order.out_trade_no, now / 1000).await {
            Ok(found) if found["trade_state"] == "SUCCESS" => {
                let applied = self
                    .apply_paid(app, &wechat, &order, &found, "query")
                    .await?;
                Ok(view(applied, None))
            }
            Ok(_) | Err(PlatformError::PayRefused { .. }) => Ok(view(order, None)),
            Err(e) => Err(e.into()),
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
        let wechat = self.wechat(app).await?;
        self.close_order(app, &wechat, &order, "admin").await
    }

    /// Closes `order` on the platform, or takes its payment if the platform says it was paid.
    async fn close_order(
        &self,
        app: &AppName,
        wechat: &Wechat,
        order: &OrderRow,
        source: &str,
    ) -> Result<OrderView, PayError> {
        let now = self.now_ms();
        match wechat.client.close(&order.out_trade_no, now / 1000).await {
            Ok(()) => {}
            // Never placed (placing failed): nothing to close there.
            Err(PlatformError::PayRefused { code, .. }) if code == "ORDER_NOT_EXIST" => {}
            Err(PlatformError::PayRefused { code, .. }) if code == "ORDERPAID" => {
                let found = wechat.client.query(&order.out_trade_no, now / 1000).await?;
                let paid = self.apply_paid(app, wechat, order, &found, "query").await?;
                return Err(PayError::OrderState(paid.state));
            }
            Err(e) => return Err(e.into()),
        }
        let cause = Cause {
            source: source.to_owned(),
            payload: json!({ "closed_at": Timestamp::from_unix_ms(now).to_rfc3339() }).to_string(),
            at_ms: now,
        };
        let applied = self.apply(app, &order.id, Change::Closed, cause).await?;
        Ok(view(applied, None))
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
            Some(triggers) => triggers.emit_for_pay(app, kind).await?,
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

    /// Takes a verified transaction (from a callback or a query) as the order's payment, if it
    /// is this order's: the merchant, the app id, the number and the amount must all match.
    async fn apply_paid(
        &self,
        app: &AppName,
        wechat: &Wechat,
        order: &OrderRow,
        transaction: &Json,
        source: &str,
    ) -> Result<OrderRow, PayError> {
        let appid = prepay_of(order).and_then(|p| p["appid"].as_str().map(str::to_owned));
        let mismatch = if transaction["mchid"] != wechat.mchid.as_str() {
            Some("mchid")
        } else if appid.is_none_or(|a| transaction["appid"] != a.as_str()) {
            Some("appid")
        } else if transaction["out_trade_no"] != order.out_trade_no.as_str() {
            Some("out_trade_no")
        } else if transaction["amount"]["total"] != order.amount_fen {
            Some("amount")
        } else if transaction["trade_state"] != "SUCCESS" {
            Some("trade_state")
        } else {
            None
        };
        if let Some(field) = mismatch {
            tracing::warn!(app = %app, order = %order.id, field, "a payment that does not match its order");
            return Err(PayError::Mismatch(field.to_owned()));
        }
        let transaction_id = transaction["transaction_id"]
            .as_str()
            .filter(|t| valid_number(t, 1, 64))
            .ok_or_else(|| PayError::Mismatch("transaction_id".into()))?;
        let now = self.now_ms();
        let paid_at_ms = transaction["success_time"]
            .as_str()
            .and_then(parse_time_ms)
            .unwrap_or(now);
        let change = Change::Paid {
            transaction_id: transaction_id.to_owned(),
            paid_at_ms,
        };
        let cause = Cause {
            source: source.to_owned(),
            payload: transaction.to_string(),
            at_ms: now,
        };
        let order = self.apply(app, &order.id, change, cause).await?;
        if order.state == cloudlet_store::ORDER_CLOSED {
            // Money was taken for an order closed here: the platform must have it closed too,
            // so this is a disagreement for a person to look at.
            tracing::error!(app = %app, order = %order.id, "a payment for a closed order");
        }
        Ok(order)
    }

    // ---- callbacks -------------------------------------------------------------------------

    /// Handles a platform's notification: verified over `body` as it came, decrypted, bound to
    /// the stored order and applied. `Ok` means the change (if any) is durable and the platform
    /// may be told so.
    pub async fn notify(
        &self,
        app: &AppName,
        provider: Provider,
        signed: Signed<'_>,
        body: &[u8],
    ) -> Result<(), PayError> {
        let Provider::Wechat = provider;
        let wechat = self.wechat(app).await?;
        let now = self.now_ms();
        wechat_pay::verify(&wechat.keys, signed, body, now / 1000).map_err(|e| {
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
        let plain = wechat_pay::decrypt(&wechat.api_v3_key, &notification.resource)
            .map_err(|_| PayError::Unverified("its resource does not decrypt".into()))?;
        let resource: Json = serde_json::from_slice(&plain)
            .map_err(|_| PayError::Unverified("its resource is not JSON".into()))?;
        match notification.event_type.as_str() {
            "TRANSACTION.SUCCESS" => {
                let no = resource["out_trade_no"].as_str().unwrap_or_default();
                let order = self
                    .0
                    .store
                    .order_by_trade_no(app, no)
                    .await?
                    .ok_or(PayError::OrderNotFound)?;
                self.apply_paid(app, &wechat, &order, &resource, "notify")
                    .await?;
                Ok(())
            }
            "REFUND.SUCCESS" | "REFUND.ABNORMAL" | "REFUND.CLOSED" => {
                self.apply_refund(app, &wechat, &resource, "notify").await
            }
            // Other events (a complaint, say) change no order.
            other => {
                tracing::info!(app = %app, event = other, "a WeChat Pay notification left alone");
                Ok(())
            }
        }
    }

    /// Takes a verified refund (from a notification or a query) as its refund's outcome, if it
    /// is that refund's.
    async fn apply_refund(
        &self,
        app: &AppName,
        wechat: &Wechat,
        refund: &Json,
        source: &str,
    ) -> Result<(), PayError> {
        let no = refund["out_refund_no"].as_str().unwrap_or_default();
        let stored = self
            .0
            .store
            .refund(app, no)
            .await?
            .ok_or(PayError::RefundNotFound)?;
        let order = self.order_row(app, &stored.order_id).await?;
        // A notification says `refund_status`, a query `status`.
        let status = refund["refund_status"]
            .as_str()
            .or_else(|| refund["status"].as_str())
            .unwrap_or_default();
        let mismatch = if refund.get("mchid").is_some() && refund["mchid"] != wechat.mchid.as_str()
        {
            Some("mchid")
        } else if refund["out_trade_no"] != order.out_trade_no.as_str() {
            Some("out_trade_no")
        } else if refund["amount"]["refund"] != stored.amount_fen {
            Some("amount")
        } else {
            None
        };
        if let Some(field) = mismatch {
            tracing::warn!(app = %app, refund = no, field, "a refund that does not match");
            return Err(PayError::Mismatch(field.to_owned()));
        }
        let succeeded = match status {
            "SUCCESS" => true,
            "ABNORMAL" | "CLOSED" => false,
            // Still processing: nothing to apply yet.
            _ => return Ok(()),
        };
        let change = Change::Refund {
            out_refund_no: no.to_owned(),
            refund_id: refund["refund_id"].as_str().map(str::to_owned),
            succeeded,
        };
        let cause = Cause {
            source: source.to_owned(),
            payload: refund.to_string(),
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
        let wechat = self.wechat(app).await?;
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
        let refund = match self.0.store.reserve_refund(app, row).await? {
            Reserved::New(refund) => refund,
            Reserved::Existing(refund) => {
                if refund.order_id != order.id || refund.amount_fen != new.amount_fen {
                    return Err(PayError::RefundReused);
                }
                if refund.state != REFUND_PENDING {
                    return Ok(refund.into());
                }
                refund
            }
            Reserved::Exceeds(_) => return Err(PayError::RefundExceeds),
            Reserved::NotRefundable(order) => return Err(PayError::OrderState(order.state)),
        };
        // The check first: whatever happens to the request, the refund is followed up.
        self.check_later(
            app,
            Check::Refund(refund.out_refund_no.clone()),
            self.0.options.check_delay,
        )
        .await?;
        match self.send_refund(app, &wechat, &order, &refund).await {
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

    /// Asks the platform for a reserved refund; a refusal fails it (its amount is free again).
    async fn send_refund(
        &self,
        app: &AppName,
        wechat: &Wechat,
        order: &OrderRow,
        refund: &RefundRow,
    ) -> Result<(), PayError> {
        let request = RefundRequest {
            out_trade_no: order.out_trade_no.clone(),
            out_refund_no: refund.out_refund_no.clone(),
            reason: (!refund.reason.is_empty()).then(|| refund.reason.clone()),
            notify_url: Some(self.notify_url(app, Provider::Wechat, "notify")),
            refund_fen: refund.amount_fen,
            total_fen: order.amount_fen,
        };
        let now = self.now_ms();
        match wechat.client.refund(&request, now / 1000).await {
            Ok(reply) => {
                if let Some(id) = reply["refund_id"].as_str() {
                    self.0
                        .store
                        .set_refund_id(app, &refund.out_refund_no, id, now)
                        .await?;
                }
                self.apply_refund(app, wechat, &reply, "query").await
            }
            Err(PlatformError::PayRefused { code, message, .. }) => {
                let change = Change::Refund {
                    out_refund_no: refund.out_refund_no.clone(),
                    refund_id: None,
                    succeeded: false,
                };
                let cause = Cause {
                    source: "query".to_owned(),
                    payload: json!({ "code": code, "message": message }).to_string(),
                    at_ms: now,
                };
                self.apply(app, &order.id, change, cause).await?;
                Err(PayError::PlatformRefused(format!("{code} {message}")))
            }
            Err(e) => Err(e.into()),
        }
    }

    // ---- reconciliation ---------------------------------------------------------------------

    async fn check_later(
        &self,
        app: &AppName,
        check: Check,
        delay: Duration,
    ) -> Result<(), PayError> {
        let key = match &check {
            Check::Order(id) => format!("order:{id}"),
            Check::Refund(no) => format!("refund:{no}"),
        };
        let payload = serde_json::to_value(&check).map_err(|e| PayError::Invalid(e.to_string()))?;
        self.0
            .queues
            .send_to(
                app,
                PAYMENT_QUEUE,
                vec![Outgoing {
                    payload,
                    delay_secs: Some(delay.as_secs_f64()),
                    key: Some(key),
                }],
            )
            .await?;
        Ok(())
    }

    /// Runs one check of [`PAYMENT_QUEUE`]: done (acknowledged) once the order is paid or
    /// closed, or the refund settled; otherwise retried with the queue's backoff.
    pub async fn deliver(&self, app: &AppName, delivery: Delivery) {
        let outcome = match serde_json::from_value::<Check>(delivery.payload.clone()) {
            Ok(Check::Order(id)) => self.check_order(app, &id).await,
            Ok(Check::Refund(no)) => self.check_refund(app, &no).await,
            Err(e) => Err(PayError::Invalid(format!("not a payment check: {e}"))),
        };
        let queues = &self.0.queues;
        let settled = match outcome {
            Ok(true) => queues.ack(app, &delivery.id, &delivery.lease).await,
            Ok(false) => queues
                .fail(
                    app,
                    PAYMENT_QUEUE,
                    &delivery.id,
                    &delivery.lease,
                    delivery.attempt,
                    "not settled yet",
                )
                .await
                .map(|_| ()),
            Err(
                e @ (PayError::Invalid(_) | PayError::OrderNotFound | PayError::RefundNotFound),
            ) => queues
                .give_up(app, &delivery.id, &delivery.lease, &e.to_string())
                .await
                .map(|_| ()),
            Err(e) => queues
                .fail(
                    app,
                    PAYMENT_QUEUE,
                    &delivery.id,
                    &delivery.lease,
                    delivery.attempt,
                    &e.to_string(),
                )
                .await
                .map(|_| ()),
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
        let wechat = self.wechat(app).await?;
        let now = self.now_ms();
        let found = match wechat.client.query(&order.out_trade_no, now / 1000).await {
            Ok(found) => Some(found),
            Err(PlatformError::PayRefused { code, .. }) if code == "ORDER_NOT_EXIST" => None,
            Err(e) => return Err(e.into()),
        };
        let state = found
            .as_ref()
            .and_then(|f| f["trade_state"].as_str())
            .unwrap_or("NOTPAY")
            .to_owned();
        match (state.as_str(), found) {
            ("SUCCESS", Some(found)) => {
                self.apply_paid(app, &wechat, &order, &found, "query")
                    .await?;
                Ok(true)
            }
            ("CLOSED" | "REVOKED" | "PAYERROR", _) => {
                let cause = Cause {
                    source: "query".to_owned(),
                    payload: json!({ "trade_state": state }).to_string(),
                    at_ms: now,
                };
                self.apply(app, &order.id, Change::Closed, cause).await?;
                Ok(true)
            }
            _ if order.expires_at_ms <= now => {
                match self.close_order(app, &wechat, &order, "query").await {
                    Ok(_) | Err(PayError::OrderState(_)) => Ok(true),
                    Err(e) => Err(e),
                }
            }
            _ => Ok(false),
        }
    }

    /// Whether the refund is settled after asking the platform; a refund the platform never
    /// received is asked for again.
    async fn check_refund(&self, app: &AppName, no: &str) -> Result<bool, PayError> {
        let refund = self
            .0
            .store
            .refund(app, no)
            .await?
            .ok_or(PayError::RefundNotFound)?;
        if refund.state != REFUND_PENDING {
            return Ok(true);
        }
        let order = self.order_row(app, &refund.order_id).await?;
        let wechat = self.wechat(app).await?;
        let now = self.now_ms();
        match wechat.client.query_refund(no, now / 1000).await {
            Ok(found) => self.apply_refund(app, &wechat, &found, "query").await?,
            Err(PlatformError::PayRefused { code, .. }) if code == "RESOURCE_NOT_EXISTS" => {
                match self.send_refund(app, &wechat, &order, &refund).await {
                    Ok(()) | Err(PayError::PlatformRefused(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e.into()),
        }
        let now = self.0.store.refund(app, no).await?;
        Ok(now.is_none_or(|r| r.state != REFUND_PENDING))
    }

    /// Refuses while the app has money not settled: orders that may still be paid, refunds
    /// pending.
    pub async fn check_settled(&self, app: &AppName) -> Result<(), PayError> {
        match self.0.store.unsettled(app).await? {
            0 => Ok(()),
            n => Err(PayError::Unsettled(n)),
        }
    }

    /// The orders that count as paid for a sale (`paid` or `partly_refunded`).
    pub fn is_paid(state: &str) -> bool {
        state == ORDER_PAID || state == ORDER_PARTLY_REFUNDED
    }
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

fn view_of(settings: &WechatSettings, updated_at_ms: i64) -> MerchantView {
    MerchantView {
        provider: "wechat",
        mchid: settings.mchid.clone(),
        serial_no: settings.serial_no.clone(),
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
