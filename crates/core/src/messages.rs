//! Subscribe messages: the consent ledger and the sending.
//!
//! A WeChat mini program may send a user a message outside the app (a card in the user's
//! service notifications) only after the user allowed that template in
//! `wx.requestSubscribeMessage`; each "allow" permits one message. The ledger counts what each
//! user allowed, keyed as WeChat keys it (the user's openid in one mini program, and the
//! template), so that a send without a grant is refused here instead of costing a call that
//! WeChat would refuse with 43101. The client reports what the user answered; nothing proves it
//! (WeChat offers no check), so a forged "allow" buys only a send that WeChat refuses, and that
//! refusal clears the ledger.
//!
//! A send takes a grant and goes on [`MESSAGE_QUEUE`]; the dispatcher hands each message to
//! [`Messages::deliver`], which calls WeChat with the app's access token from the auth vault.
//! Only failures that can pass later are retried (WeChat busy or unreachable, a stale token); a
//! refused message goes to the dead letters at once with WeChat's code, and its grant is given
//! back unless WeChat said the user had none.

use std::collections::BTreeMap;
use std::sync::Arc;

use cloudlet_platforms::wechat::{Lang, MiniProgramState, SubscribeError, SubscribeMessage};
use cloudlet_store::{AppName, Failed, GrantKey, GrantRow, StoreError, UserStore};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::auth::{Auth, AuthError, Principal};
use crate::clock::{Clock, Timestamp};
use crate::queues::{Delivery, MESSAGE_QUEUE, Outgoing, QueueError, Queues};

/// The most grants one user holds for one template: "allow" answers beyond it are not counted.
pub const MAX_GRANTS: i64 = 50;
/// The most templates one user holds grants for, per mini program: what a client can make the
/// ledger keep is bounded (a mini program picks a handful of templates).
pub const MAX_TEMPLATES_PER_USER: usize = 100;
/// Templates in one `wx.requestSubscribeMessage` call, and so in one report of its answers.
pub const MAX_TEMPLATES_PER_REQUEST: usize = 3;
/// Keys in a message's `data`.
pub const MAX_DATA_KEYS: usize = 20;
/// Characters of one `data` value. WeChat's own limits per key type are stricter (`thing` 20,
/// `number` 32, …) and are WeChat's to enforce: a message over them is refused with 47003.
pub const MAX_VALUE_CHARS: usize = 200;
/// Bytes of `page`.
pub const MAX_PAGE_BYTES: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    /// The message breaks a rule checked before anything is sent.
    #[error("{0}")]
    Invalid(String),
    /// The recipient has no identity at the provider: they never logged in to that mini program.
    #[error("the user has no identity at {0}: they have not logged in with it")]
    NoIdentity(String),
    /// The recipient has no grant left for the template.
    #[error("the user has not allowed template {0} (or used up what they allowed)")]
    NoSubscription(String),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

impl From<StoreError> for MessageError {
    fn from(e: StoreError) -> Self {
        MessageError::Auth(AuthError::Store(e))
    }
}

/// A message to send, as `ctx.messages.send` and the admin API take it.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewMessage {
    /// The recipient's Cloudlet user id.
    pub to: String,
    pub template_id: String,
    /// The page the card opens, with a query if wanted (`pages/order?id=42`).
    #[serde(default)]
    pub page: Option<String>,
    /// The template's keys and values: `{"thing1": "Shipped"}` or, as WeChat writes it,
    /// `{"thing1": {"value": "Shipped"}}`. Numbers are sent as their text.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub data: BTreeMap<String, Value>,
    /// `developer`, `trial` or `formal` (WeChat's default).
    #[serde(default)]
    pub miniprogram_state: Option<String>,
    /// `zh_CN` (WeChat's default), `en_US`, `zh_HK` or `zh_TW`.
    #[serde(default)]
    pub lang: Option<String>,
    /// The WeChat login provider of the mini program to send from (default `wechat`).
    #[serde(default)]
    pub provider: Option<String>,
    /// An idempotency key: the same key within a day sends nothing more and answers the first
    /// message's id, so a retried trigger does not send twice.
    #[serde(default)]
    pub key: Option<String>,
}

/// What a send answers.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MessageReceipt {
    /// The id of the message on the `_messages` queue.
    pub id: String,
    /// True when the key was seen within the day: nothing new was sent.
    pub duplicate: bool,
}

/// One entry of the ledger, as a user sees their own.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Grant {
    /// The mini program's appid.
    pub appid: String,
    pub template_id: String,
    /// Messages of this template that may still be sent to the user.
    pub remaining: i64,
    pub updated_at: String,
}

impl From<GrantRow> for Grant {
    fn from(row: GrantRow) -> Self {
        Grant {
            appid: row.appid,
            template_id: row.template_id,
            remaining: row.remaining,
            updated_at: Timestamp::from_unix_ms(row.updated_at_ms).to_rfc3339(),
        }
    }
}

/// What the user answered for one template in `wx.requestSubscribeMessage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Answer {
    /// Allowed: one message of the template may be sent. (`acceptWithAudio` and
    /// `acceptWithAlert`, WeChat's answers for templates with a voice or an alert, count too.)
    #[serde(alias = "acceptWithAudio", alias = "acceptWithAlert")]
    Accept,
    /// Declined this time.
    Reject,
    /// Turned the template off (or WeChat banned it): nothing may be sent.
    Ban,
    /// Filtered by WeChat (the template's title repeats another): nothing may be sent.
    Filter,
    /// An answer WeChat may add later: counted as no grant, so that the report's other
    /// answers still count.
    #[serde(other)]
    Other,
}

/// The queued form of a message: who it goes to, and WeChat's body.
#[derive(Serialize, Deserialize)]
struct Queued {
    provider: String,
    appid: String,
    openid: String,
    template_id: String,
    page: Option<String>,
    data: BTreeMap<String, String>,
    miniprogram_state: Option<String>,
    lang: Option<String>,
}

/// The subscribe-messages service. Cheap to clone.
#[derive(Clone)]
pub struct Messages(Arc<Inner>);

struct Inner {
    auth: Auth,
    users: Arc<dyn UserStore>,
    queues: Queues,
    clock: Arc<dyn Clock>,
}

/// A template id: 1 to 128 of `A-Z a-z 0-9 _ -` (WeChat's are 43 such characters).
pub fn valid_template_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

const DEFAULT_PROVIDER: &str = "wechat";

impl Messages {
    pub fn new(
        auth: Auth,
        users: Arc<dyn UserStore>,
        queues: Queues,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Messages(Arc::new(Inner {
            auth,
            users,
            queues,
            clock,
        }))
    }

    fn now(&self) -> i64 {
        self.0.clock.now().unix_ms()
    }

    /// The user's openid in the mini program of `provider`, and its appid.
    async fn recipient(
        &self,
        app: &AppName,
        user_id: &str,
        provider: &str,
    ) -> Result<(String, String), MessageError> {
        let appid = match self.0.auth.wechat_appid(app, provider).await {
            Ok(appid) => appid,
            // Another kind of provider: the message names the wrong one.
            Err(AuthError::InvalidLoginRequest(why)) => return Err(MessageError::Invalid(why)),
            Err(e) => return Err(e.into()),
        };
        match self.0.users.identity_of(app, user_id, provider).await? {
            Some((openid, _)) => Ok((appid, openid)),
            None if self.0.users.user(app, user_id).await?.is_none() => {
                Err(AuthError::UserNotFound.into())
            }
            None => Err(MessageError::NoIdentity(provider.to_owned())),
        }
    }

    /// Records what the user answered in `wx.requestSubscribeMessage`: each "allow" is one
    /// grant. Answers the user's grants.
    pub async fn record_answers(
        &self,
        principal: &Principal,
        provider: Option<&str>,
        answers: &BTreeMap<String, Answer>,
    ) -> Result<Vec<Grant>, MessageError> {
        if answers.is_empty() || answers.len() > MAX_TEMPLATES_PER_REQUEST {
            return Err(MessageError::Invalid(format!(
                "answers for 1 to {MAX_TEMPLATES_PER_REQUEST} templates, as one \
                 wx.requestSubscribeMessage call gives"
            )));
        }
        if let Some(bad) = answers.keys().find(|id| !valid_template_id(id)) {
            return Err(MessageError::Invalid(format!(
                "template id {bad:?}: 1 to 128 of A-Z, a-z, 0-9, _ and -"
            )));
        }
        let provider = provider.unwrap_or_else(|| default_provider(principal));
        let app = &principal.app;
        let (appid, openid) = self.recipient(app, &principal.user_id, provider).await?;
        let held: Vec<GrantRow> = self
            .0
            .users
            .grants_of(app, &principal.user_id)
            .await?
            .into_iter()
            .filter(|g| g.appid == appid)
            .collect();
        let new = answers
            .iter()
            .filter(|(id, answer)| {
                **answer == Answer::Accept && !held.iter().any(|g| &g.template_id == *id)
            })
            .count();
        if held.len() + new > MAX_TEMPLATES_PER_USER {
            return Err(MessageError::Invalid(format!(
                "a user holds grants for at most {MAX_TEMPLATES_PER_USER} templates of a mini program"
            )));
        }
        let keys: Vec<GrantKey<'_>> = answers
            .iter()
            .filter(|(_, answer)| **answer == Answer::Accept)
            .map(|(template_id, _)| GrantKey {
                appid: &appid,
                openid: &openid,
                template_id,
            })
            .collect();
        if !keys.is_empty() {
            self.0
                .users
                .add_grants(app, &principal.user_id, &keys, self.now(), MAX_GRANTS)
                .await?;
        }
        self.grants(principal).await
    }

    /// The user's grants, every mini program's.
    pub async fn grants(&self, principal: &Principal) -> Result<Vec<Grant>, MessageError> {
        Ok(self
            .0
            .users
            .grants_of(&principal.app, &principal.user_id)
            .await?
            .into_iter()
            .map(Grant::from)
            .collect())
    }

    /// Checks a message, takes one of the recipient's grants and queues the message.
    pub async fn send(
        &self,
        app: &AppName,
        message: NewMessage,
    ) -> Result<MessageReceipt, MessageError> {
        let provider = message
            .provider
            .clone()
            .unwrap_or_else(|| DEFAULT_PROVIDER.to_owned());
        let data = check(&message)?;
        let (appid, openid) = self.recipient(app, &message.to, &provider).await?;
        // A send repeated with its key (a retried trigger) answers the first message, grant or
        // no grant left: the first one holds its own.
        if let Some(key) = &message.key
            && let Some(id) = self.0.queues.keyed(app, MESSAGE_QUEUE, key).await?
        {
            return Ok(MessageReceipt {
                id,
                duplicate: true,
            });
        }
        let key = GrantKey {
            appid: &appid,
            openid: &openid,
            template_id: &message.template_id,
        };
        let now = self.now();
        if !self.0.users.take_grant(app, key, now).await? {
            return Err(MessageError::NoSubscription(message.template_id));
        }
        let queued = Queued {
            provider,
            appid: appid.clone(),
            openid: openid.clone(),
            template_id: message.template_id.clone(),
            page: message.page,
            data,
            miniprogram_state: message.miniprogram_state,
            lang: message.lang,
        };
        let outgoing = Outgoing {
            payload: serde_json::to_value(&queued)
                .map_err(|e| MessageError::Invalid(e.to_string()))?,
            delay_secs: None,
            key: message.key,
        };
        let sent = self
            .0
            .queues
            .send_to(app, MESSAGE_QUEUE, vec![outgoing])
            .await;
        let receipt = match sent.map(|mut sent| sent.pop()) {
            Ok(Some(receipt)) => receipt,
            Ok(None) => {
                self.give_back(app, key).await;
                return Err(MessageError::Invalid("nothing was queued".into()));
            }
            Err(e) => {
                self.give_back(app, key).await;
                return Err(e.into());
            }
        };
        if receipt.duplicate {
            // The first message with this key holds its own grant.
            self.give_back(app, key).await;
        }
        Ok(MessageReceipt {
            id: receipt.id,
            duplicate: receipt.duplicate,
        })
    }

    /// Returns a grant taken for a message that was not sent.
    async fn give_back(&self, app: &AppName, key: GrantKey<'_>) {
        if let Err(e) = self
            .0
            .users
            .return_grant(app, key, self.now(), MAX_GRANTS)
            .await
        {
            tracing::warn!(app = %app, error = %e, "could not give a subscription grant back");
        }
    }

    /// Sends one claimed message of [`MESSAGE_QUEUE`] to WeChat and settles it: acknowledged
    /// when sent, retried when the failure may pass, given up (to the dead letters, with
    /// WeChat's code) when it will not.
    pub async fn deliver(&self, app: &AppName, delivery: Delivery) {
        let queues = &self.0.queues;
        let queued: Queued = match serde_json::from_str(delivery.payload.get()) {
            Ok(queued) => queued,
            Err(e) => {
                let error = format!("not a subscribe message: {e}");
                settle(
                    app,
                    &delivery,
                    queues
                        .give_up(app, &delivery.id, &delivery.lease, &error)
                        .await,
                );
                return;
            }
        };
        let key = GrantKey {
            appid: &queued.appid,
            openid: &queued.openid,
            template_id: &queued.template_id,
        };
        let message = SubscribeMessage {
            touser: queued.openid.clone(),
            template_id: queued.template_id.clone(),
            page: queued.page.clone(),
            data: queued.data.clone(),
            miniprogram_state: queued.miniprogram_state.as_deref().and_then(state_of),
            lang: queued.lang.as_deref().and_then(lang_of),
        };
        let answer = self
            .0
            .auth
            .send_subscribe_message(app, &queued.provider, &message)
            .await;
        let outcome = match answer {
            Ok(Ok(())) => Outcome::Sent,
            // WeChat says the user has nothing left: the ledger was wrong, and now agrees.
            Ok(Err(e @ SubscribeError::NoSubscription { .. })) => {
                if let Err(store) = self.0.users.clear_grants(app, key, self.now()).await {
                    tracing::warn!(app = %app, error = %store, "could not clear subscription grants");
                }
                Outcome::GiveUp(wechat_error(&e), false)
            }
            Ok(Err(e)) if e.is_retryable() => Outcome::Retry(wechat_error(&e)),
            Ok(Err(e)) => Outcome::GiveUp(wechat_error(&e), true),
            Err(e @ (AuthError::PlatformUnavailable(_) | AuthError::PlatformRateLimited)) => {
                Outcome::Retry(e.to_string())
            }
            Err(AuthError::Store(e)) => Outcome::Retry(e.to_string()),
            // The provider is gone, off or misconfigured: the message can not be sent.
            Err(e) => Outcome::GiveUp(e.to_string(), true),
        };
        let (settled, give_back) = match outcome {
            Outcome::Sent => (
                queues
                    .ack(app, &delivery.id, &delivery.lease)
                    .await
                    .map(|()| Failed::Retrying),
                false,
            ),
            Outcome::Retry(error) => {
                let failed = queues
                    .fail(
                        app,
                        MESSAGE_QUEUE,
                        &delivery.id,
                        &delivery.lease,
                        delivery.attempt,
                        &error,
                    )
                    .await;
                // Retries spent: the message was never sent, and its grant is unused.
                let dead = matches!(failed, Ok(Failed::Dead));
                (failed, dead)
            }
            Outcome::GiveUp(error, give_back) => (
                queues
                    .give_up(app, &delivery.id, &delivery.lease, &error)
                    .await,
                give_back,
            ),
        };
        let settled_now = settled.is_ok();
        settle(app, &delivery, settled);
        if give_back && settled_now {
            self.give_back(app, key).await;
        }
    }
}

enum Outcome {
    Sent,
    Retry(String),
    /// The error, and whether the message's grant goes back to the user.
    GiveUp(String, bool),
}

fn settle(app: &AppName, delivery: &Delivery, settled: Result<Failed, QueueError>) {
    if let Err(e) = settled {
        // A stale lease: the claim expired while WeChat answered and the message went to
        // another delivery, which settles it.
        tracing::warn!(app = %app, id = delivery.id, error = %e, "a subscribe message could not be settled");
    }
}

/// WeChat's refusal as a dead letter's error: its code first, for people and scripts.
fn wechat_error(e: &SubscribeError) -> String {
    match e.code() {
        Some(code) => format!("wechat {code}: {e}"),
        None => e.to_string(),
    }
}

/// The provider a user's report is about: the one they logged in with, if it is WeChat's.
fn default_provider(principal: &Principal) -> &str {
    if principal.provider == DEFAULT_PROVIDER || principal.provider.starts_with("wechat-") {
        &principal.provider
    } else {
        DEFAULT_PROVIDER
    }
}

fn state_of(text: &str) -> Option<MiniProgramState> {
    match text {
        "developer" => Some(MiniProgramState::Developer),
        "trial" => Some(MiniProgramState::Trial),
        "formal" => Some(MiniProgramState::Formal),
        _ => None,
    }
}

fn lang_of(text: &str) -> Option<Lang> {
    match text {
        "zh_CN" => Some(Lang::ZhCn),
        "en_US" => Some(Lang::EnUs),
        "zh_HK" => Some(Lang::ZhHk),
        "zh_TW" => Some(Lang::ZhTw),
        _ => None,
    }
}

/// Checks what can be checked before WeChat sees the message; answers its data as text.
fn check(message: &NewMessage) -> Result<BTreeMap<String, String>, MessageError> {
    let invalid = |why: String| Err(MessageError::Invalid(why));
    if message.to.is_empty() || message.to.len() > 64 || message.to.contains('\0') {
        return invalid("to: a user id".into());
    }
    if !valid_template_id(&message.template_id) {
        return invalid("template_id: 1 to 128 of A-Z, a-z, 0-9, _ and -".into());
    }
    if let Some(page) = &message.page
        && (page.len() > MAX_PAGE_BYTES || page.chars().any(char::is_control))
    {
        return invalid(format!(
            "page: at most {MAX_PAGE_BYTES} bytes, no control characters"
        ));
    }
    if let Some(state) = &message.miniprogram_state
        && state_of(state).is_none()
    {
        return invalid("miniprogram_state: developer, trial or formal".into());
    }
    if let Some(lang) = &message.lang
        && lang_of(lang).is_none()
    {
        return invalid("lang: zh_CN, en_US, zh_HK or zh_TW".into());
    }
    if let Some(key) = &message.key
        && (key.is_empty() || key.len() > 256 || key.contains('\0'))
    {
        return invalid("key: 1 to 256 bytes, without NUL".into());
    }
    if message.data.is_empty() || message.data.len() > MAX_DATA_KEYS {
        return invalid(format!("data: 1 to {MAX_DATA_KEYS} keys"));
    }
    let mut data = BTreeMap::new();
    for (key, value) in &message.data {
        let key_ok = (1..=32).contains(&key.len())
            && key
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !key_ok {
            return invalid(format!(
                "data key {key:?}: 1 to 32 of a-z, 0-9 and _ (thing1, time2, …)"
            ));
        }
        let value = match value {
            Value::Object(map) if map.len() == 1 && map.contains_key("value") => &map["value"],
            other => other,
        };
        let text = match value {
            Value::String(text) => text.clone(),
            Value::Number(number) => number.to_string(),
            _ => {
                return invalid(format!(
                    "data.{key}: a string or number, or {{\"value\": …}} holding one"
                ));
            }
        };
        if text.chars().count() > MAX_VALUE_CHARS || text.contains('\0') {
            return invalid(format!(
                "data.{key}: at most {MAX_VALUE_CHARS} characters, without NUL"
            ));
        }
        data.insert(key.clone(), text);
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn message(data: Value) -> NewMessage {
        serde_json::from_value(json!({
            "to": "usr_1",
            "template_id": "T-1_a",
            "data": data,
        }))
        .unwrap()
    }

    #[test]
    fn data_is_taken_in_both_forms_and_as_text() {
        let data = check(&message(json!({
            "thing1": "Shipped",
            "number2": 42,
            "time3": { "value": "2026-12-02 15:01" },
        })))
        .unwrap();
        assert_eq!(
            data,
            BTreeMap::from([
                ("number2".to_owned(), "42".to_owned()),
                ("thing1".to_owned(), "Shipped".to_owned()),
                ("time3".to_owned(), "2026-12-02 15:01".to_owned()),
            ])
        );
    }

    #[test]
    fn bad_messages_are_refused_before_anything_is_taken() {
        let refused = |m: NewMessage| matches!(check(&m), Err(MessageError::Invalid(_)));
        assert!(refused(message(json!({}))));
        assert!(refused(message(json!({ "Thing1": "x" }))));
        assert!(refused(message(json!({ "thing1": true }))));
        assert!(refused(message(json!({ "thing1": { "value": [] } }))));
        assert!(refused(message(json!({ "thing1": "x".repeat(201) }))));
        assert!(refused(message(json!({ "thing1": "a\u{0}b" }))));
        let many: serde_json::Map<String, Value> =
            (0..21).map(|i| (format!("thing{i}"), json!("x"))).collect();
        assert!(refused(message(Value::Object(many))));
        let ok = || message(json!({ "thing1": "x" }));
        assert!(check(&ok()).is_ok());
        assert!(refused(NewMessage {
            template_id: "a b".into(),
            ..ok()
        }));
        assert!(refused(NewMessage {
            template_id: String::new(),
            ..ok()
        }));
        assert!(refused(NewMessage {
            to: String::new(),
            ..ok()
        }));
        assert!(refused(NewMessage {
            page: Some("index\n".into()),
            ..ok()
        }));
        assert!(refused(NewMessage {
            miniprogram_state: Some("beta".into()),
            ..ok()
        }));
        assert!(refused(NewMessage {
            lang: Some("en".into()),
            ..ok()
        }));
        assert!(refused(NewMessage {
            key: Some(String::new()),
            ..ok()
        }));
        assert!(
            check(&NewMessage {
                page: Some("pages/order?id=42".into()),
                miniprogram_state: Some("trial".into()),
                lang: Some("en_US".into()),
                key: Some("order-42-shipped".into()),
                ..ok()
            })
            .is_ok()
        );
        assert!(
            serde_json::from_value::<NewMessage>(json!({
                "to": "u", "template_id": "t", "data": {}, "templateId": "t"
            }))
            .is_err(),
            "unknown fields are refused"
        );
    }

    #[test]
    fn answers_are_wechats_words() {
        let answers: BTreeMap<String, Answer> = serde_json::from_value(json!({
            "a": "accept", "b": "reject", "c": "ban", "d": "filter"
        }))
        .unwrap();
        assert_eq!(answers["a"], Answer::Accept);
        assert_eq!(answers["d"], Answer::Filter);
        for accepted in ["acceptWithAudio", "acceptWithAlert"] {
            assert_eq!(
                serde_json::from_value::<Answer>(json!(accepted)).unwrap(),
                Answer::Accept
            );
        }
        assert_eq!(
            serde_json::from_value::<Answer>(json!("ACCEPT")).unwrap(),
            Answer::Other
        );
        assert_eq!(
            serde_json::from_value::<Answer>(json!("maybe")).unwrap(),
            Answer::Other
        );
    }
}
