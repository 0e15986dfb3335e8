//! WeChat's subscribe messages (`shared/platforms.md` §1.6): `POST /cgi-bin/message/subscribe/send`
//! with WeChat's checks and error codes, and the emulator's control endpoints around it: the
//! templates an app has picked, the subscriptions its users have granted (what tapping "allow" in
//! `wx.requestSubscribeMessage` gives), and an inbox of what each user has received.
//!
//! The send endpoint checks, in this order, and answers HTTP 200 with WeChat's envelope:
//!
//! | check | errcode |
//! |---|---|
//! | the method is POST | 43002 `require POST method` |
//! | `access_token` in the query: present, issued for a WeChat app, not replaced, not expired | 41001, 40001, 42001 |
//! | the app is not made "busy" by `POST /emulator/wechat/busy` | -1 `system error` |
//! | the body is a JSON object, its fields of the right JSON types | 47001 `data format error` |
//! | `touser` is the openid of a user this app has met | 40003 `invalid openid` |
//! | `template_id` is one of the app's templates | 40037 `invalid template_id` |
//! | `miniprogram_state` and `lang`, when given, are of WeChat's values | 40097 `invalid args` |
//! | `data` has every key of the template, each `{"value": …}` within its type's rules, and no other key | 47003 `argument invalid! data.<key>.value …` |
//! | the user has a long-term subscription, or a one-time one left (used up by the send) | 43101 `user refuse to accept the msg` |
//!
//! Chosen where WeChat's documentation is silent (the codes are its global ones):
//! - 40097 for a bad `miniprogram_state` or `lang`: the body is well-formed, so not 47001, and
//!   47003 is documented for the template's data only.
//! - The `Content-Type` is not checked, as the emulator's other WeChat endpoints do not check it
//!   (senders commonly post JSON under other content types; unverified for this endpoint): a
//!   body that is not JSON, a form say, is what gets 47001 (§6 of the notes).
//! - A `data` that is not an object (a JSON string of the object, say) counts as empty, so the
//!   first key is "is empty", as WeChat answers it. A value may be a string or a JSON number (the
//!   doc says `"value": any`, and numbers work); other JSON types are invalid.
//! - A key the template does not have is refused (47003 naming it), so that typos show up.
//! - `page` is not checked against the app's pages (41030): the emulator does not know them.
//! - A long-term subscription is used before one-time ones, and is not used up.
//!
//! The state of this module is kept in its routes (an `Extension` layer), not in [`Emulator`],
//! as the crate's layout asks of a protocol's own state. Which openids an app has met is the
//! emulator's (`State::users`): login codes add them, and so does a grant by user name.

mod rules;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Query, State};
use axum::http::{Method, StatusCode};
use axum::routing::{any, get, post};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::control::{Answer, body, error};
use crate::state::{Emulator, Platform, openid};
use crate::wechat::{refusal, token_app};
use rules::KeyType;

/// The most messages the inbox keeps; the oldest go first.
const INBOX_SIZE: usize = 10_000;

const MINIPROGRAM_STATES: [&str; 3] = ["developer", "trial", "formal"];
const LANGS: [&str; 4] = ["zh_CN", "en_US", "zh_HK", "zh_TW"];

#[derive(Default)]
struct Subscriptions {
    /// `(appid, template_id)` → the template's keys and their types.
    templates: HashMap<(String, String), BTreeMap<String, KeyType>>,
    /// `(appid, openid, template_id)` → what the user has granted.
    grants: HashMap<(String, String, String), Grant>,
    /// Every message sent, oldest first.
    inbox: VecDeque<Delivered>,
    next_msgid: u64,
    /// appid → how many more sends answer -1 (system busy).
    busy: HashMap<String, u32>,
}

#[derive(Clone, Copy, Default)]
struct Grant {
    /// One-time subscriptions left: each tap on "allow" adds one, each message uses one.
    one_time: u32,
    long_term: bool,
}

#[derive(Clone, Serialize)]
struct Delivered {
    msgid: u64,
    appid: String,
    touser: String,
    /// The name the user was given in the emulator.
    user: String,
    template_id: String,
    page: Option<String>,
    /// Key → value.
    data: BTreeMap<String, String>,
    /// As sent, or WeChat's default (`formal`).
    miniprogram_state: String,
    /// As sent, or WeChat's default (`zh_CN`).
    lang: String,
    /// The subscription the message used: `one_time` or `long_term`.
    subscription: &'static str,
}

type Shared = Arc<Mutex<Subscriptions>>;

fn lock(shared: &Shared) -> MutexGuard<'_, Subscriptions> {
    // Sections never panic half-way; a poisoned lock still guards consistent data.
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

/// The send endpoint, and its control endpoints under `/emulator/wechat/`.
#[allow(clippy::disallowed_methods)] // The platform's routes, not Cloudlet's API: no contract.
pub(crate) fn routes() -> Router<Arc<Emulator>> {
    Router::new()
        .route("/wechat/cgi-bin/message/subscribe/send", any(send))
        .route("/emulator/wechat/templates", post(register_template))
        .route(
            "/emulator/wechat/subscriptions",
            post(grant).get(subscriptions),
        )
        .route("/emulator/wechat/messages", get(messages))
        .route("/emulator/wechat/busy", post(busy))
        .layer(Extension(Shared::default()))
}

/// `POST /cgi-bin/message/subscribe/send?access_token=…`; any other method is answered too, as
/// WeChat answers it (43002).
async fn send(
    State(emulator): State<Arc<Emulator>>,
    Extension(shared): Extension<Shared>,
    method: Method,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Json<Value> {
    Json(send_answer(&emulator, &shared, &method, &query, &body))
}

fn send_answer(
    emulator: &Emulator,
    shared: &Shared,
    method: &Method,
    query: &HashMap<String, String>,
    body: &[u8],
) -> Value {
    if method != Method::POST {
        return refusal(43002, "require POST method");
    }
    let appid = match token_app(emulator, query) {
        Ok(appid) => appid,
        Err(refused) => return refused,
    };
    {
        let mut subscriptions = lock(shared);
        if let Some(left) = subscriptions.busy.get_mut(&appid).filter(|left| **left > 0) {
            *left -= 1;
            return refusal(-1, "system error");
        }
    }
    let Some(request) = SendRequest::parse(body) else {
        return refusal(47001, "data format error");
    };
    let Some(touser) = request.touser.filter(|t| !t.is_empty()) else {
        return refusal(40003, "invalid openid");
    };
    let user = emulator
        .state()
        .users
        .get(&(Platform::Wechat, appid.clone(), touser.clone()))
        .cloned();
    let Some(user) = user else {
        return refusal(40003, "invalid openid");
    };
    let Some(template_id) = request.template_id.filter(|t| !t.is_empty()) else {
        return refusal(40037, "invalid template_id");
    };
    let mut subscriptions = lock(shared);
    let Some(keys) = subscriptions
        .templates
        .get(&(appid.clone(), template_id.clone()))
    else {
        return refusal(40037, "invalid template_id");
    };
    if let Some(state) = &request.miniprogram_state
        && !MINIPROGRAM_STATES.contains(&state.as_str())
    {
        return refusal(
            40097,
            "invalid args hint: miniprogram_state must be developer, trial or formal",
        );
    }
    if let Some(lang) = &request.lang
        && !LANGS.contains(&lang.as_str())
    {
        return refusal(
            40097,
            "invalid args hint: lang must be zh_CN, en_US, zh_HK or zh_TW",
        );
    }
    let data = match checked_data(keys, request.data.as_ref()) {
        Ok(data) => data,
        Err(problem) => return refusal(47003, &problem),
    };
    let key = (appid.clone(), touser.clone(), template_id.clone());
    let subscription = match subscriptions.grants.get_mut(&key) {
        Some(grant) if grant.long_term => "long_term",
        Some(grant) if grant.one_time > 0 => {
            grant.one_time -= 1;
            "one_time"
        }
        _ => return refusal(43101, "user refuse to accept the msg"),
    };
    subscriptions.next_msgid += 1;
    let msgid = subscriptions.next_msgid;
    if subscriptions.inbox.len() >= INBOX_SIZE {
        subscriptions.inbox.pop_front();
    }
    subscriptions.inbox.push_back(Delivered {
        msgid,
        appid,
        touser,
        user,
        template_id,
        page: request.page,
        data,
        miniprogram_state: request
            .miniprogram_state
            .unwrap_or_else(|| "formal".to_owned()),
        lang: request.lang.unwrap_or_else(|| "zh_CN".to_owned()),
        subscription,
    });
    json!({ "errcode": 0, "errmsg": "ok", "msgid": msgid })
}

/// The send request's fields. Unknown fields are ignored, as WeChat ignores them.
struct SendRequest {
    touser: Option<String>,
    template_id: Option<String>,
    page: Option<String>,
    data: Option<Value>,
    miniprogram_state: Option<String>,
    lang: Option<String>,
}

impl SendRequest {
    /// `None` when the body is not a JSON object, or a field that must be a string is not one.
    fn parse(body: &[u8]) -> Option<SendRequest> {
        let Ok(Value::Object(mut fields)) = serde_json::from_slice::<Value>(body) else {
            return None;
        };
        let mut text = |name: &str| -> Result<Option<String>, ()> {
            match fields.remove(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s)),
                Some(_) => Err(()),
            }
        };
        Some(SendRequest {
            touser: text("touser").ok()?,
            template_id: text("template_id").ok()?,
            page: text("page").ok()?,
            miniprogram_state: text("miniprogram_state").ok()?,
            lang: text("lang").ok()?,
            data: fields.remove("data"),
        })
    }
}

/// The values of `data` for a template's `keys`, or the `errmsg` of a 47003 naming the first
/// key at fault (in the template's key order, then the request's extra keys).
fn checked_data(
    keys: &BTreeMap<String, KeyType>,
    data: Option<&Value>,
) -> Result<BTreeMap<String, String>, String> {
    let no_data = Map::new();
    let data = match data {
        Some(Value::Object(data)) => data,
        _ => &no_data,
    };
    let mut values = BTreeMap::new();
    for (key, kind) in keys {
        let value = match data.get(key).and_then(|item| item.get("value")) {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(value)) => value.clone(),
            Some(Value::Number(value)) => value.to_string(),
            Some(_) => return Err(format!("argument invalid! data.{key}.value invalid")),
        };
        if value.trim().is_empty() {
            return Err(format!("argument invalid! data.{key}.value is empty"));
        }
        if !kind.accepts(&value) {
            return Err(format!("argument invalid! data.{key}.value invalid"));
        }
        values.insert(key.clone(), value);
    }
    if let Some(extra) = data.keys().find(|key| !keys.contains_key(*key)) {
        return Err(format!(
            "argument invalid! data.{extra} is not a key of the template"
        ));
    }
    Ok(values)
}

fn wechat_app_registered(emulator: &Emulator, appid: &str) -> Result<(), Answer> {
    if emulator
        .state()
        .apps
        .contains_key(&(Platform::Wechat, appid.to_owned()))
    {
        return Ok(());
    }
    Err(error(
        StatusCode::NOT_FOUND,
        "app_not_registered",
        format!("register wechat app {appid} first (POST /emulator/apps)"),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTemplate {
    appid: String,
    template_id: String,
    /// Key → key type, e.g. `{"thing1": "thing", "time2": "time"}`.
    keys: BTreeMap<String, String>,
}

/// `POST /emulator/wechat/templates`: adds (or replaces) a template the app has picked from
/// WeChat's library, with its keys and their types.
async fn register_template(
    State(emulator): State<Arc<Emulator>>,
    Extension(shared): Extension<Shared>,
    parsed: Result<Json<NewTemplate>, JsonRejection>,
) -> Answer {
    let new = match body(parsed) {
        Ok(new) => new,
        Err(answer) => return answer,
    };
    if let Err(answer) = wechat_app_registered(&emulator, &new.appid) {
        return answer;
    }
    if new.template_id.is_empty() || new.keys.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "template_id and at least one key are required",
        );
    }
    let mut keys = BTreeMap::new();
    for (key, kind) in &new.keys {
        let Some(kind) = KeyType::from_name(kind).filter(|_| !key.is_empty()) else {
            let known: Vec<&str> = KeyType::ALL.iter().map(|t| t.as_str()).collect();
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                format!(
                    "key {key:?} has type {kind:?}; a key needs a name and one of the types {}",
                    known.join(", ")
                ),
            );
        };
        keys.insert(key.clone(), kind);
    }
    let answer = json!({ "appid": new.appid, "template_id": new.template_id, "keys": keys });
    lock(&shared)
        .templates
        .insert((new.appid, new.template_id), keys);
    (StatusCode::CREATED, Json(answer))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewGrant {
    appid: String,
    /// The user by name (as in `POST /emulator/codes`); or by `openid`, of a user the app has met.
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    openid: Option<String>,
    template_id: String,
    /// How many one-time subscriptions to add: 1 unless `long_term`, then 0.
    #[serde(default)]
    times: Option<u32>,
    #[serde(default)]
    long_term: bool,
}

/// `POST /emulator/wechat/subscriptions`: what a user's "allow" in `wx.requestSubscribeMessage`
/// gives: `times` one-time subscriptions to a template (they add up), or a long-term one.
async fn grant(
    State(emulator): State<Arc<Emulator>>,
    Extension(shared): Extension<Shared>,
    parsed: Result<Json<NewGrant>, JsonRejection>,
) -> Answer {
    let new = match body(parsed) {
        Ok(new) => new,
        Err(answer) => return answer,
    };
    if let Err(answer) = wechat_app_registered(&emulator, &new.appid) {
        return answer;
    }
    let times = new.times.unwrap_or(if new.long_term { 0 } else { 1 });
    if times == 0 && !new.long_term {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "grant at least one one-time subscription, or a long-term one",
        );
    }
    if !lock(&shared)
        .templates
        .contains_key(&(new.appid.clone(), new.template_id.clone()))
    {
        return error(
            StatusCode::NOT_FOUND,
            "template_not_registered",
            format!(
                "register template {} of app {} first (POST /emulator/wechat/templates)",
                new.template_id, new.appid
            ),
        );
    }
    let (openid, user) = {
        let mut state = emulator.state();
        match (new.user.filter(|u| !u.is_empty()), new.openid) {
            (Some(user), None) => {
                let openid = openid(Platform::Wechat, &new.appid, &user);
                let key = (Platform::Wechat, new.appid.clone(), openid.clone());
                state.users.insert(key, user.clone());
                (openid, user)
            }
            (None, Some(openid)) => {
                let key = (Platform::Wechat, new.appid.clone(), openid.clone());
                let Some(user) = state.users.get(&key).cloned() else {
                    return error(
                        StatusCode::NOT_FOUND,
                        "unknown_user",
                        format!(
                            "no user of app {} has openid {openid}: issue them a login code, \
                             or grant by user name",
                            new.appid
                        ),
                    );
                };
                (openid, user)
            }
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid_body",
                    "name the user by either user or openid",
                );
            }
        }
    };
    let mut subscriptions = lock(&shared);
    let grant = subscriptions
        .grants
        .entry((new.appid.clone(), openid.clone(), new.template_id.clone()))
        .or_default();
    grant.one_time = grant.one_time.saturating_add(times);
    grant.long_term |= new.long_term;
    (
        StatusCode::CREATED,
        Json(json!({
            "appid": new.appid,
            "openid": openid,
            "user": user,
            "template_id": new.template_id,
            "one_time": grant.one_time,
            "long_term": grant.long_term,
        })),
    )
}

/// The `appid` query parameter of an inspection endpoint, of a registered WeChat app.
fn queried_app(emulator: &Emulator, query: &HashMap<String, String>) -> Result<String, Answer> {
    let Some(appid) = query.get("appid").filter(|a| !a.is_empty()) else {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            "appid is required",
        ));
    };
    wechat_app_registered(emulator, appid)?;
    Ok(appid.clone())
}

/// `GET /emulator/wechat/subscriptions?appid=…[&openid=…]`: what each user has left.
async fn subscriptions(
    State(emulator): State<Arc<Emulator>>,
    Extension(shared): Extension<Shared>,
    Query(query): Query<HashMap<String, String>>,
) -> Answer {
    let appid = match queried_app(&emulator, &query) {
        Ok(appid) => appid,
        Err(answer) => return answer,
    };
    let openid = query.get("openid");
    let subscriptions = lock(&shared);
    let mut list: Vec<Value> = subscriptions
        .grants
        .iter()
        .filter(|((app, user, _), _)| *app == appid && openid.is_none_or(|o| o == user))
        .map(|((_, openid, template_id), grant)| {
            json!({
                "openid": openid,
                "template_id": template_id,
                "one_time": grant.one_time,
                "long_term": grant.long_term,
            })
        })
        .collect();
    list.sort_by_key(|s| (s["openid"].to_string(), s["template_id"].to_string()));
    (StatusCode::OK, Json(json!({ "subscriptions": list })))
}

/// `GET /emulator/wechat/messages?appid=…[&openid=…][&template_id=…]`: the messages the app has
/// sent, oldest first.
async fn messages(
    State(emulator): State<Arc<Emulator>>,
    Extension(shared): Extension<Shared>,
    Query(query): Query<HashMap<String, String>>,
) -> Answer {
    let appid = match queried_app(&emulator, &query) {
        Ok(appid) => appid,
        Err(answer) => return answer,
    };
    let matches = |name: &str, value: &str| query.get(name).is_none_or(|q| q == value);
    let subscriptions = lock(&shared);
    let list: Vec<&Delivered> = subscriptions
        .inbox
        .iter()
        .filter(|m| {
            m.appid == appid
                && matches("openid", &m.touser)
                && matches("template_id", &m.template_id)
        })
        .collect();
    (StatusCode::OK, Json(json!({ "messages": list })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Busy {
    appid: String,
    times: u32,
}

/// `POST /emulator/wechat/busy`: the app's next `times` sends answer -1 (system busy), without
/// using any subscription, so that a sender's retries can be tested. `times: 0` ends it.
async fn busy(
    State(emulator): State<Arc<Emulator>>,
    Extension(shared): Extension<Shared>,
    parsed: Result<Json<Busy>, JsonRejection>,
) -> Answer {
    let busy = match body(parsed) {
        Ok(busy) => busy,
        Err(answer) => return answer,
    };
    if let Err(answer) = wechat_app_registered(&emulator, &busy.appid) {
        return answer;
    }
    lock(&shared).busy.insert(busy.appid.clone(), busy.times);
    (
        StatusCode::OK,
        Json(json!({ "appid": busy.appid, "times": busy.times })),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> BTreeMap<String, KeyType> {
        BTreeMap::from([
            ("thing1".to_owned(), KeyType::Thing),
            ("time2".to_owned(), KeyType::Time),
            ("number3".to_owned(), KeyType::Number),
        ])
    }

    #[test]
    fn data_needs_every_key_and_no_other() {
        let good = json!({
            "thing1": {"value": "Order shipped"},
            "time2": {"value": "2026-12-02 15:01"},
            "number3": {"value": 42, "color": "#000"},
        });
        let values = checked_data(&keys(), Some(&good)).unwrap();
        assert_eq!(values["number3"], "42");
        assert_eq!(values["thing1"], "Order shipped");

        let cases = [
            (json!({}), "data.number3.value is empty"),
            (
                json!({"number3": {"value": "1"}, "thing1": {"value": " "}}),
                "data.thing1.value is empty",
            ),
            (
                json!({"number3": {"value": "1"}, "thing1": {"value": "x"}, "time2": {"value": "soon"}}),
                "data.time2.value invalid",
            ),
            (
                json!({"number3": {"value": true}}),
                "data.number3.value invalid",
            ),
            (json!({"number3": "1"}), "data.number3.value is empty"),
            (
                json!({"number3": {"value": "1"}, "thing1": {"value": "x"}, "time2": {"value": "15:01"}, "thing4": {"value": "x"}}),
                "data.thing4 is not a key",
            ),
            // WeChat's answer to data sent as a JSON string of the object.
            (
                json!("{\"thing1\":{\"value\":\"x\"}}"),
                "data.number3.value is empty",
            ),
        ];
        for (data, problem) in cases {
            let refused = checked_data(&keys(), Some(&data)).unwrap_err();
            assert!(refused.starts_with("argument invalid! "), "{refused}");
            assert!(refused.contains(problem), "{data}: {refused}");
        }
        assert!(checked_data(&keys(), None).is_err());
    }

    #[test]
    fn fields_must_be_strings() {
        assert!(SendRequest::parse(br#"{"touser": "o1", "data": {}}"#).is_some());
        assert!(SendRequest::parse(br#"{"touser": 1}"#).is_none());
        assert!(SendRequest::parse(br#"{"lang": ["zh_CN"]}"#).is_none());
        assert!(SendRequest::parse(br#"["touser"]"#).is_none());
        assert!(SendRequest::parse(b"touser=o1&template_id=t").is_none());
        let parsed = SendRequest::parse(br#"{"touser": null, "extra": 1}"#).unwrap();
        assert!(parsed.touser.is_none());
    }
}
