//! The platform emulator: a local server that acts as the WeChat, QQ, Douyin and Alipay servers for
//! login (and as WeChat for subscribe messages), so that Cloudlet can be developed and tested on
//! one machine, without a phone or a registered mini program. It is a product feature
//! (`cloudlet emulator`), not a test double.
//!
//! It implements the platforms' protocols on its own, from `shared/platforms.md`, and shares no
//! code with the clients in `cloudlet-platforms`: when both agree, it is because both follow the
//! protocol. It checks what the real servers check (method, parameters, appid and secret, codes
//! that are single-use and expire) and answers with their error codes.
//!
//! Layout of the routes, one prefix per platform so that one port serves them all:
//!
//! ```text
//! POST /emulator/apps                         register a platform app
//! POST /emulator/codes                        issue a login code for a user (what wx.login does)
//! GET  /wechat/sns/jscode2session             WeChat code2Session
//! POST /wechat/cgi-bin/stable_token           WeChat stable access token
//! POST /wechat/wxa/business/getuserphonenumber WeChat phone number from a getPhoneNumber code
//! POST /wechat/cgi-bin/message/subscribe/send WeChat subscribe message
//! POST /emulator/wechat/templates             register a WeChat subscribe-message template
//! POST /emulator/wechat/subscriptions         grant a user subscriptions (wx.requestSubscribeMessage)
//! GET  /emulator/wechat/subscriptions         the subscriptions users have left
//! GET  /emulator/wechat/messages              the subscribe messages users received
//! POST /emulator/wechat/busy                  make the next subscribe sends answer -1 (busy)
//! GET  /emulator/stats                        counters (access tokens asked for, …)
//! GET  /qq/sns/jscode2session                 QQ code2Session
//! POST /douyin/api/apps/v2/jscode2session     Douyin code2Session (v2)
//! POST /alipay/gateway.do                     Alipay gateway: alipay.system.oauth.token
//! GET  /alipay/billdownload?token=            Alipay: a day's trade bill, zipped (URL from the gateway)
//! POST /emulator/alipay/clock                 move the payment calendar (WeChat Pay's too)
//! POST /emulator/wechatpay/merchants          register a WeChat Pay merchant
//! POST /emulator/wechatpay/pay                the user pays an order (its notification goes out)
//! GET  /emulator/wechatpay/notifications      the payment notifications sent, and their answers
//! POST /wechatpay/v3/pay/transactions/jsapi   WeChat Pay: a mini-program order (query, close too)
//! GET  /wechatpay/v3/bill/tradebill           WeChat Pay: a day's trade bill (and its download)
//! ```

mod alipay;
mod alipay_trade;
mod calendar;
mod control;
mod douyin;
mod state;
mod subscribe;
mod wechat;
mod wechat_pay;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use tokio::net::TcpListener;

pub use state::Platform;

use crate::state::Emulator;

/// How the emulator behaves where the platforms leave room.
#[derive(Debug, Clone)]
pub struct EmulatorOptions {
    /// How long a login code stays valid (the platforms: about 5 minutes).
    pub code_ttl: Duration,
    /// How long an access token stays valid (WeChat: 7200 s).
    pub token_ttl: Duration,
    /// The waits between a payment notification's tries after the first (WeChat Pay's
    /// schedule, about 24 hours; tests shorten it).
    pub pay_notify_retries: Vec<Duration>,
}

impl Default for EmulatorOptions {
    fn default() -> Self {
        EmulatorOptions {
            code_ttl: Duration::from_secs(300),
            token_ttl: Duration::from_secs(7200),
            pay_notify_retries: [
                15, 15, 30, 180, 600, 1200, 1800, 1800, 1800, 3600, 10800, 10800, 10800, 21600,
                21600,
            ]
            .into_iter()
            .map(Duration::from_secs)
            .collect(),
        }
    }
}

/// Each platform protocol the emulator speaks: one module per platform, each with its own
/// routes under its own prefix. A new protocol (WeChat Pay, Alipay's trade API) is a module with
/// a `routes` function and one line here; the others do not change. A module that needs state
/// of its own (orders, say) keeps it in its routes (an `Extension` layer), not in [`Emulator`].
const PROTOCOLS: [fn() -> Router<Arc<Emulator>>; 5] = [
    wechat::routes,
    subscribe::routes,
    douyin::routes,
    alipay::routes,
    wechat_pay::routes,
];

/// The emulator's routes: its control API and every protocol's.
#[allow(clippy::disallowed_methods)] // The platforms' routes, not Cloudlet's API: no contract.
pub fn router(options: EmulatorOptions) -> Router {
    let emulator = Arc::new(Emulator::new(options));
    let control = Router::new()
        .route("/emulator/apps", post(control::register_app))
        .route("/emulator/codes", post(control::issue_code))
        .route("/emulator/health", get(control::health))
        .route("/emulator/stats", get(control::stats));
    PROTOCOLS
        .iter()
        .fold(control, |router, routes| router.merge(routes()))
        .with_state(emulator)
}

/// Serves the emulator on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    options: EmulatorOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(options))
        .with_graceful_shutdown(shutdown)
        .await
}
