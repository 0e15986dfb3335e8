//! WeChat subscribe messages (`shared/platforms.md` §1.6): `POST /cgi-bin/message/subscribe/send`
//! with a typed message, and an error that says what the caller should do about a failure: the
//! user has no subscription left, the message is wrong, the access token is stale, or WeChat is
//! unavailable for now.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize, Serializer};

use super::{Envelope, WeChatClient, is_stale_token};
use crate::{PlatformError, PlatformHttp};

/// A subscribe message to one user. It serialises as the send API's JSON body: `data` as
/// `{"<key>": {"value": "<value>"}}`, and `page`, `miniprogram_state` and `lang` left out when
/// they are `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeMessage {
    /// The user's openid in this mini program.
    pub touser: String,
    pub template_id: String,
    /// The page the card opens, in this mini program, with a query if wanted (`index?foo=bar`).
    /// Without one, the card opens nothing.
    pub page: Option<String>,
    /// The template's keys and their values (`thing1` → `Your order shipped`). Every key of the
    /// template, each within its type's rules (`thing` ≤ 20 characters, …), or WeChat answers
    /// 47003.
    pub data: BTreeMap<String, String>,
    /// Which version of the mini program the card opens (WeChat's default: formal).
    pub miniprogram_state: Option<MiniProgramState>,
    /// The language of the card's "open the mini program" (WeChat's default: zh_CN).
    pub lang: Option<Lang>,
}

/// The `miniprogram_state` of a subscribe message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MiniProgramState {
    Developer,
    Trial,
    Formal,
}

/// The `lang` of a subscribe message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Lang {
    #[serde(rename = "zh_CN")]
    ZhCn,
    #[serde(rename = "en_US")]
    EnUs,
    #[serde(rename = "zh_HK")]
    ZhHk,
    #[serde(rename = "zh_TW")]
    ZhTw,
}

/// The send API's body.
#[derive(Serialize)]
struct Body<'a> {
    touser: &'a str,
    template_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    page: Option<&'a str>,
    data: BTreeMap<&'a str, Item<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    miniprogram_state: Option<MiniProgramState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lang: Option<Lang>,
}

#[derive(Serialize)]
struct Item<'a> {
    value: &'a str,
}

impl Serialize for SubscribeMessage {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Body {
            touser: &self.touser,
            template_id: &self.template_id,
            page: self.page.as_deref(),
            data: self
                .data
                .iter()
                .map(|(key, value)| (key.as_str(), Item { value }))
                .collect(),
            miniprogram_state: self.miniprogram_state,
            lang: self.lang,
        }
        .serialize(serializer)
    }
}

/// Why a subscribe message was not sent, sorted by what the caller should do about it.
#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    /// 43101: the user has not subscribed to this template, has used up their one-time
    /// subscriptions (each "allow" in `wx.requestSubscribeMessage` allows one message), or has
    /// turned them off. Not retryable: the user has to subscribe again.
    #[error("the user has no subscription left for this template: {message}")]
    NoSubscription { message: String },
    /// The message is wrong, a caller error, not retryable as it is: 40003 `touser` empty or
    /// not a user of this app, 40037 `template_id` empty or not one of the app's, 47003 `data`
    /// breaks the template's rules (`message` names the key), 41030 `page` not in the released
    /// app, 40097 an invalid argument, 47001 a body WeChat could not read.
    #[error("WeChat refused the message: {code} {message}")]
    InvalidMessage { code: i64, message: String },
    /// 40001, 40014, 42001: the access token is invalid, not the latest, or expired. Fetch a
    /// fresh one and send again.
    #[error("WeChat refused the access token: {code} {message}")]
    StaleToken { code: i64, message: String },
    /// WeChat is busy (-1) or rate-limiting (45011), answered HTTP 5xx, or could not be reached
    /// in time. Retry later, with backoff.
    #[error("WeChat is unavailable for now: {0}")]
    Unavailable(PlatformError),
    /// Anything else: another refusal (the app's permissions or daily quota, say), or an answer
    /// that is not the protocol's. Not known to pass on a retry.
    #[error(transparent)]
    Other(PlatformError),
}

impl SubscribeError {
    /// Whether sending the same message again can succeed: with a fresh token after
    /// [`StaleToken`](Self::StaleToken), after a wait after [`Unavailable`](Self::Unavailable).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            SubscribeError::StaleToken { .. } | SubscribeError::Unavailable(_)
        )
    }

    /// WeChat's error code, when WeChat answered with one.
    pub fn code(&self) -> Option<i64> {
        match self {
            SubscribeError::NoSubscription { .. } => Some(43101),
            SubscribeError::InvalidMessage { code, .. }
            | SubscribeError::StaleToken { code, .. } => Some(*code),
            SubscribeError::Unavailable(PlatformError::Refused { code, .. })
            | SubscribeError::Other(PlatformError::Refused { code, .. }) => Some(*code),
            SubscribeError::Unavailable(_) | SubscribeError::Other(_) => None,
        }
    }
}

impl From<PlatformError> for SubscribeError {
    fn from(e: PlatformError) -> Self {
        match e {
            PlatformError::Refused {
                code: 43101,
                message,
            } => SubscribeError::NoSubscription { message },
            PlatformError::Refused { code, message } if is_stale_token(code) => {
                SubscribeError::StaleToken { code, message }
            }
            PlatformError::Refused {
                code: code @ (40003 | 40037 | 47003 | 41030 | 40097 | 47001),
                message,
            } => SubscribeError::InvalidMessage { code, message },
            PlatformError::Refused {
                code: -1 | 45011, ..
            }
            | PlatformError::Unreachable(_) => SubscribeError::Unavailable(e),
            other => SubscribeError::Other(other),
        }
    }
}

impl From<SubscribeError> for PlatformError {
    fn from(e: SubscribeError) -> Self {
        match e {
            SubscribeError::NoSubscription { message } => PlatformError::Refused {
                code: 43101,
                message,
            },
            SubscribeError::InvalidMessage { code, message }
            | SubscribeError::StaleToken { code, message } => {
                PlatformError::Refused { code, message }
            }
            SubscribeError::Unavailable(e) | SubscribeError::Other(e) => e,
        }
    }
}

/// A successful send's answer: `errcode` 0 and a `msgid`, which is not needed.
#[derive(Deserialize)]
struct Sent {}

impl WeChatClient {
    /// `POST /cgi-bin/message/subscribe/send`: sends a subscribe message, using up one of the
    /// user's one-time subscriptions to the template (a long-term one is not used up).
    pub async fn send_subscribe_message(
        &self,
        access_token: &str,
        message: &SubscribeMessage,
    ) -> Result<(), SubscribeError> {
        let response = self
            .http
            .client()
            .post(format!("{}/cgi-bin/message/subscribe/send", self.base_url))
            .query(&[("access_token", access_token)])
            .json(message)
            .send()
            .await
            .map_err(PlatformError::from)?;
        let status = response.status();
        if status.is_server_error() {
            return Err(SubscribeError::Unavailable(PlatformError::Unreachable(
                format!("the platform answered HTTP {status}"),
            )));
        }
        PlatformHttp::json::<Envelope<Sent>>(response)
            .await?
            .into_result()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn message() -> SubscribeMessage {
        SubscribeMessage {
            touser: "o-alice".into(),
            template_id: "tmpl".into(),
            page: None,
            data: BTreeMap::from([
                ("time2".to_owned(), "2026-12-02 15:01".to_owned()),
                ("thing1".to_owned(), "Shipped".to_owned()),
            ]),
            miniprogram_state: None,
            lang: None,
        }
    }

    #[test]
    fn serialises_as_the_send_apis_body() {
        assert_eq!(
            serde_json::to_value(message()).unwrap(),
            json!({
                "touser": "o-alice",
                "template_id": "tmpl",
                "data": {
                    "thing1": { "value": "Shipped" },
                    "time2": { "value": "2026-12-02 15:01" },
                },
            })
        );
        let full = SubscribeMessage {
            page: Some("index?foo=bar".into()),
            miniprogram_state: Some(MiniProgramState::Developer),
            lang: Some(Lang::EnUs),
            ..message()
        };
        let value = serde_json::to_value(full).unwrap();
        assert_eq!(value["page"], "index?foo=bar");
        assert_eq!(value["miniprogram_state"], "developer");
        assert_eq!(value["lang"], "en_US");
        for (lang, text) in [
            (Lang::ZhCn, "zh_CN"),
            (Lang::EnUs, "en_US"),
            (Lang::ZhHk, "zh_HK"),
            (Lang::ZhTw, "zh_TW"),
        ] {
            assert_eq!(serde_json::to_value(lang).unwrap(), text);
        }
        for (state, text) in [
            (MiniProgramState::Developer, "developer"),
            (MiniProgramState::Trial, "trial"),
            (MiniProgramState::Formal, "formal"),
        ] {
            assert_eq!(serde_json::to_value(state).unwrap(), text);
        }
    }

    #[test]
    fn sorts_failures_by_what_to_do() {
        let refused = |code: i64| {
            SubscribeError::from(PlatformError::Refused {
                code,
                message: "m".into(),
            })
        };
        assert!(matches!(
            refused(43101),
            SubscribeError::NoSubscription { .. }
        ));
        for code in [40003, 40037, 47003, 41030, 40097, 47001] {
            assert!(
                matches!(refused(code), SubscribeError::InvalidMessage { code: c, .. } if c == code)
            );
            assert!(!refused(code).is_retryable());
        }
        for code in [40001, 40014, 42001] {
            assert!(matches!(refused(code), SubscribeError::StaleToken { .. }));
            assert!(refused(code).is_retryable());
        }
        for code in [-1, 45011] {
            assert!(matches!(refused(code), SubscribeError::Unavailable(_)));
            assert_eq!(refused(code).code(), Some(code));
        }
        assert!(matches!(
            SubscribeError::from(PlatformError::Unreachable("timed out".into())),
            SubscribeError::Unavailable(_)
        ));
        assert!(matches!(refused(48001), SubscribeError::Other(_)));
        assert!(!refused(43101).is_retryable());
        assert!(!refused(48001).is_retryable());
        assert!(matches!(
            SubscribeError::from(PlatformError::BadAnswer("html".into())),
            SubscribeError::Other(_)
        ));
        assert!(matches!(
            PlatformError::from(refused(43101)),
            PlatformError::Refused { code: 43101, .. }
        ));
        assert_eq!(refused(47003).code(), Some(47003));
    }
}
