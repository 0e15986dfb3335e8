//! Douyin (ByteDance) mini app server API, `shared/platforms.md` §5.1: the v2 `jscode2session`,
//! which takes a login code, an anonymous code, or both.

use serde::{Deserialize, Serialize};

use crate::{PlatformError, PlatformHttp};

/// The real server.
pub const API_BASE: &str = "https://developer.toutiao.com";

/// What `jscode2session` answers. `openid`, `session_key` and `unionid` come with a login code;
/// `anonymous_openid` with an anonymous code.
#[derive(Clone, PartialEq, Eq, Default, Deserialize)]
pub struct DouyinSession {
    #[serde(default)]
    pub openid: Option<String>,
    #[serde(default)]
    pub session_key: Option<String>,
    #[serde(default)]
    pub unionid: Option<String>,
    #[serde(default)]
    pub anonymous_openid: Option<String>,
}

impl std::fmt::Debug for DouyinSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DouyinSession")
            .field("openid", &self.openid)
            .field("unionid", &self.unionid)
            .field("anonymous_openid", &self.anonymous_openid)
            .finish_non_exhaustive()
    }
}

/// A client for one Douyin mini app.
#[derive(Clone)]
pub struct DouyinClient {
    http: PlatformHttp,
    base_url: String,
    appid: String,
    secret: String,
}

impl std::fmt::Debug for DouyinClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DouyinClient")
            .field("base_url", &self.base_url)
            .field("appid", &self.appid)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct SessionRequest<'a> {
    appid: &'a str,
    secret: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    anonymous_code: Option<&'a str>,
}

#[derive(Deserialize)]
struct Envelope {
    err_no: i64,
    #[serde(default)]
    err_tips: String,
    #[serde(default)]
    data: Option<DouyinSession>,
}

impl DouyinClient {
    pub fn new(http: PlatformHttp, base_url: &str, appid: &str, secret: &str) -> Self {
        DouyinClient {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
            appid: appid.to_owned(),
            secret: secret.to_owned(),
        }
    }

    /// Trades a `tt.login` code and/or anonymous code for the user's ids.
    pub async fn code_to_session(
        &self,
        code: Option<&str>,
        anonymous_code: Option<&str>,
    ) -> Result<DouyinSession, PlatformError> {
        if code.is_none() && anonymous_code.is_none() {
            return Err(PlatformError::BadAnswer(
                "a code or an anonymous code is needed".into(),
            ));
        }
        let response = self
            .http
            .client()
            .post(format!("{}/api/apps/v2/jscode2session", self.base_url))
            .json(&SessionRequest {
                appid: &self.appid,
                secret: &self.secret,
                code,
                anonymous_code,
            })
            .send()
            .await?;
        let envelope: Envelope = PlatformHttp::json(response).await?;
        if envelope.err_no != 0 {
            return Err(PlatformError::Refused {
                code: envelope.err_no,
                message: envelope.err_tips,
            });
        }
        // Empty strings are absent ids: an empty unionid must never link accounts.
        let non_empty = |id: Option<String>| id.filter(|id| !id.is_empty());
        let data = envelope.data.unwrap_or_default();
        let session = DouyinSession {
            openid: non_empty(data.openid),
            session_key: non_empty(data.session_key),
            unionid: non_empty(data.unionid),
            anonymous_openid: non_empty(data.anonymous_openid),
        };
        let complete = match code {
            Some(_) => session.openid.as_deref().is_some_and(|o| !o.is_empty()),
            None => session
                .anonymous_openid
                .as_deref()
                .is_some_and(|o| !o.is_empty()),
        };
        if !complete {
            return Err(PlatformError::BadAnswer(
                "jscode2session answered without the openid asked for".into(),
            ));
        }
        Ok(session)
    }
}
