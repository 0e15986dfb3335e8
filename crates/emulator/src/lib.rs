//! The platform emulator: a local server that acts as the WeChat, QQ, Douyin and Alipay servers for
//! login, so that Cloudlet can be developed and tested on one machine, without a phone or a
//! registered mini program. It is a product feature (`cloudlet emulator`), not a test double.
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
//! GET  /emulator/stats                        counters (access tokens asked for, …)
//! GET  /qq/sns/jscode2session                 QQ code2Session
//! POST /douyin/api/apps/v2/jscode2session     Douyin code2Session (v2)
//! POST /alipay/gateway.do                     Alipay gateway: alipay.system.oauth.token
//! ```

mod alipay;
mod control;
mod douyin;
mod state;
mod wechat;

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
}

impl Default for EmulatorOptions {
    fn default() -> Self {
        EmulatorOptions {
            code_ttl: Duration::from_secs(300),
            token_ttl: Duration::from_secs(7200),
        }
    }
}

/// The emulator's routes.
pub fn router(options: EmulatorOptions) -> Router {
    let emulator = Arc::new(Emulator::new(options));
    Router::new()
        .route("/emulator/apps", post(control::register_app))
        .route("/emulator/codes", post(control::issue_code))
        .route("/emulator/health", get(control::health))
        .route("/emulator/stats", get(control::stats))
        .route(
            "/wechat/wxa/business/getuserphonenumber",
            post(wechat::phone_number),
        )
        .route(
            "/wechat/sns/jscode2session",
            get(wechat::wechat_code_to_session),
        )
        .route("/wechat/cgi-bin/stable_token", post(wechat::stable_token))
        .route("/qq/sns/jscode2session", get(wechat::qq_code_to_session))
        .route(
            "/douyin/api/apps/v2/jscode2session",
            post(douyin::code_to_session),
        )
        .route("/alipay/gateway.do", post(alipay::gateway))
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
