//! QQ mini program server API (`api.q.qq.com`), `shared/platforms.md` §5.2: a clone of
//! WeChat's `jscode2session`, with the same fields and error codes.

use crate::wechat::{CodeSession, jscode2session};
use crate::{PlatformError, PlatformHttp};

/// The real server.
pub const API_BASE: &str = "https://api.q.qq.com";

/// A client for one QQ mini program.
#[derive(Clone)]
pub struct QqClient {
    http: PlatformHttp,
    base_url: String,
    appid: String,
    secret: String,
}

impl std::fmt::Debug for QqClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QqClient")
            .field("base_url", &self.base_url)
            .field("appid", &self.appid)
            .finish_non_exhaustive()
    }
}

impl QqClient {
    pub fn new(http: PlatformHttp, base_url: &str, appid: &str, secret: &str) -> Self {
        QqClient {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
            appid: appid.to_owned(),
            secret: secret.to_owned(),
        }
    }

    /// Trades a `qq.login` code for the user's openid and session key.
    pub async fn code_to_session(&self, code: &str) -> Result<CodeSession, PlatformError> {
        jscode2session(&self.http, &self.base_url, &self.appid, &self.secret, code).await
    }
}
