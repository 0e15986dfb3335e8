//! An app's realtime settings: which channels exist, who may join, publish to and see the
//! presence of each (rules of the filter language over the channel's name), how much of each
//! channel's history is kept for clients that come back, who may send direct messages, and
//! whether sockets without a token are let in. Stored as one JSON document in the app's
//! database (`PUT /v1/apps/{app}/realtime`), compiled once, kept by the hub until replaced.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use cloudlet_query::{Bindings, FieldType, Limits, Predicate, QueryError, Record, Schema};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::access::Caller;

/// The most channel kinds an app may declare.
pub const MAX_KINDS: usize = 64;
/// The most messages a channel may keep.
pub const MAX_HISTORY_COUNT: u32 = 10_000;
/// The longest a channel may keep a message.
pub const MAX_HISTORY_SECS: u32 = 3_600;

/// A channel's name, `kind` or `kind:key`, checked: the kind is 1 to 32 lowercase letters,
/// digits and `_`, starting with a letter, and declared by the app; the key is 1 to 128
/// letters, digits and `_ - . : @`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelName {
    full: String,
    kind_len: usize,
}

/// The kind of the stream of direct messages to one user: not a name an app can declare.
const DIRECT: &str = "~user";

impl ChannelName {
    pub fn parse(text: &str) -> Result<ChannelName, String> {
        let (kind, key) = match text.split_once(':') {
            Some((kind, key)) => (kind, Some(key)),
            None => (text, None),
        };
        if !valid_kind(kind) {
            return Err(
                "a channel's kind is 1 to 32 lowercase letters, digits and _, \
                        starting with a letter"
                    .into(),
            );
        }
        if let Some(key) = key {
            let valid = (1..=128).contains(&key.len())
                && key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-.:@".contains(&b));
            if !valid {
                return Err(
                    "a channel's key (after the kind and `:`) is 1 to 128 letters, digits \
                     and _ - . : @"
                        .into(),
                );
            }
        }
        Ok(ChannelName {
            full: text.to_owned(),
            kind_len: kind.len(),
        })
    }

    /// A name as [`ChannelName::as_str`] gave it (a channel's, or a user's direct messages').
    pub fn from_stored(text: &str) -> Option<ChannelName> {
        match text
            .strip_prefix(DIRECT)
            .and_then(|rest| rest.strip_prefix(':'))
        {
            Some(user) => Some(ChannelName::direct(user)),
            None => ChannelName::parse(text).ok(),
        }
    }

    /// The stream of direct messages to `user`.
    pub fn direct(user: &str) -> ChannelName {
        ChannelName {
            full: format!("{DIRECT}:{user}"),
            kind_len: DIRECT.len(),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.full
    }

    pub fn kind(&self) -> &str {
        &self.full[..self.kind_len]
    }

    /// What follows `kind:` (empty when there is none).
    pub fn key(&self) -> &str {
        self.full.get(self.kind_len + 1..).unwrap_or_default()
    }

    pub fn is_direct(&self) -> bool {
        self.kind() == DIRECT
    }

    /// The channel as its rules see it: `name` and `key`.
    fn record(&self) -> Record {
        let mut record = Record::new();
        record.insert("name".into(), Json::from(self.as_str()));
        record.insert("key".into(), Json::from(self.key()));
        record
    }
}

impl fmt::Display for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

fn valid_kind(kind: &str) -> bool {
    (1..=32).contains(&kind.len())
        && kind.starts_with(|c: char| c.is_ascii_lowercase())
        && kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// How much of a stream is kept for clients that come back: at most `count` messages, none
/// older than `age_secs` (and at most 1 MiB of them per channel).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct History {
    pub count: u32,
    pub age_secs: u32,
}

impl Default for History {
    fn default() -> Self {
        History {
            count: 100,
            age_secs: 120,
        }
    }
}

/// The rules of one kind of channel. A rule left out or `null` lets only the server (the admin
/// token, the app's key, functions); `""` lets everyone on a socket.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChannelRules {
    #[serde(default)]
    pub join: Option<String>,
    #[serde(default)]
    pub publish: Option<String>,
    #[serde(default)]
    pub presence: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChannelBody {
    #[serde(default)]
    pub rules: ChannelRules,
    #[serde(default)]
    pub history: History,
}

/// The settings as they are sent and stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SettingsBody {
    /// Whether a socket may go on without a token (its caller is anonymous to every rule).
    #[serde(default)]
    pub anonymous: bool,
    /// Who may send a direct message from a socket (a rule over `to`, the recipient's id);
    /// left out or `null`: only the server.
    #[serde(default)]
    pub direct: Option<String>,
    /// How much of each user's direct messages is kept.
    #[serde(default)]
    pub direct_history: History,
    /// The kinds of channel, by kind (`room` for `room:42`).
    #[serde(default)]
    pub channels: BTreeMap<String, ChannelBody>,
}

/// Why settings are refused: the field and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidSettings {
    pub field: String,
    pub message: String,
}

/// A compiled rule.
#[derive(Debug, Clone)]
pub enum Rule {
    /// Only the server.
    Server,
    /// Everyone.
    Everyone,
    Holds(Arc<Predicate>),
}

impl Rule {
    fn compile(
        source: Option<&str>,
        schema: &Arc<Schema>,
        field: &str,
    ) -> Result<Rule, InvalidSettings> {
        let Some(source) = source else {
            return Ok(Rule::Server);
        };
        if source.trim().is_empty() {
            return Ok(Rule::Everyone);
        }
        let invalid = |e: QueryError| InvalidSettings {
            field: field.to_owned(),
            message: e.to_string(),
        };
        let expr = cloudlet_query::parse(source, Limits::default()).map_err(invalid)?;
        Ok(Rule::Holds(Arc::new(
            Predicate::new(expr, Arc::clone(schema)).map_err(invalid)?,
        )))
    }

    /// Whether `caller` passes the rule for `record`. The admin token and app keys always do.
    pub fn allows(&self, caller: &Caller, record: &Record, now_ms: i64) -> bool {
        if matches!(caller, Caller::Admin | Caller::AppKey(_)) {
            return true;
        }
        match self {
            Rule::Server => false,
            Rule::Everyone => true,
            Rule::Holds(predicate) => {
                let (auth_id, auth_provider) = match caller {
                    Caller::User(user) => (Some(user.user_id.clone()), Some(user.provider.clone())),
                    _ => (None, None),
                };
                let bindings = Bindings {
                    auth_id,
                    auth_provider,
                    now_ms,
                    request_data: BTreeMap::new(),
                };
                predicate.matches(record, &bindings)
            }
        }
    }
}

/// One kind of channel, compiled.
#[derive(Debug, Clone)]
pub struct ChannelKind {
    pub join: Rule,
    pub publish: Rule,
    pub presence: Rule,
    pub history: History,
}

/// What a caller wants of a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    Join,
    Publish,
    Presence,
}

/// An app's settings, compiled.
#[derive(Debug, Clone)]
pub struct Settings {
    pub body: SettingsBody,
    direct: Rule,
    kinds: HashMap<String, ChannelKind>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            body: SettingsBody::default(),
            direct: Rule::Server,
            kinds: HashMap::new(),
        }
    }
}

impl Settings {
    /// Checks and compiles `body`: every kind's name, history and rules.
    pub fn compile(body: SettingsBody) -> Result<Settings, InvalidSettings> {
        let invalid = |field: String, message: &str| InvalidSettings {
            field,
            message: message.to_owned(),
        };
        if body.channels.len() > MAX_KINDS {
            return Err(invalid(
                "channels".into(),
                &format!("at most {MAX_KINDS} kinds of channel"),
            ));
        }
        let channel = Arc::new(
            Schema::default()
                .with("name", FieldType::Text)
                .with("key", FieldType::Text),
        );
        let direct = Arc::new(Schema::default().with("to", FieldType::Text));
        check_history(&body.direct_history, "direct_history")?;
        let mut kinds = HashMap::new();
        for (kind, declared) in &body.channels {
            if !valid_kind(kind) {
                return Err(invalid(
                    format!("channels.{kind}"),
                    "a channel's kind is 1 to 32 lowercase letters, digits and _, starting \
                     with a letter",
                ));
            }
            let field = |rule: &str| format!("channels.{kind}.rules.{rule}");
            let rules = &declared.rules;
            check_history(&declared.history, &format!("channels.{kind}.history"))?;
            kinds.insert(
                kind.clone(),
                ChannelKind {
                    join: Rule::compile(rules.join.as_deref(), &channel, &field("join"))?,
                    publish: Rule::compile(rules.publish.as_deref(), &channel, &field("publish"))?,
                    presence: Rule::compile(
                        rules.presence.as_deref(),
                        &channel,
                        &field("presence"),
                    )?,
                    history: declared.history,
                },
            );
        }
        Ok(Settings {
            direct: Rule::compile(body.direct.as_deref(), &direct, "direct")?,
            body,
            kinds,
        })
    }

    /// The channel's kind, if the app declares it (direct streams are no declared kind).
    pub fn kind(&self, channel: &ChannelName) -> Option<&ChannelKind> {
        self.kinds.get(channel.kind())
    }

    /// How much of the channel is kept.
    pub fn history(&self, channel: &ChannelName) -> History {
        if channel.is_direct() {
            return self.body.direct_history;
        }
        self.kind(channel)
            .map(|kind| kind.history)
            .unwrap_or_default()
    }

    /// Whether `caller` may `act` on `channel`: the kind's rule, or for a user's stream of
    /// direct messages, only that user (and the server).
    pub fn allows(&self, caller: &Caller, channel: &ChannelName, act: Act, now_ms: i64) -> bool {
        if channel.is_direct() {
            return match caller {
                Caller::Admin | Caller::AppKey(_) => true,
                Caller::User(user) => act == Act::Join && user.user_id == channel.key(),
                Caller::Anonymous => false,
            };
        }
        let Some(kind) = self.kind(channel) else {
            return matches!(caller, Caller::Admin | Caller::AppKey(_));
        };
        let rule = match act {
            Act::Join => &kind.join,
            Act::Publish => &kind.publish,
            Act::Presence => &kind.presence,
        };
        rule.allows(caller, &channel.record(), now_ms)
    }

    /// Whether `caller` may send a direct message to `to` from a socket.
    pub fn allows_direct(&self, caller: &Caller, to: &str, now_ms: i64) -> bool {
        let mut record = Record::new();
        record.insert("to".into(), Json::from(to));
        self.direct.allows(caller, &record, now_ms)
    }
}

fn check_history(history: &History, field: &str) -> Result<(), InvalidSettings> {
    if history.count > MAX_HISTORY_COUNT || history.age_secs > MAX_HISTORY_SECS {
        return Err(InvalidSettings {
            field: field.to_owned(),
            message: format!(
                "a history keeps at most {MAX_HISTORY_COUNT} messages for at most \
                 {MAX_HISTORY_SECS} seconds"
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::apps::AppName;
    use crate::auth::Principal;

    fn user(id: &str) -> Caller {
        Caller::User(Principal {
            app: AppName::parse("todo").unwrap(),
            user_id: id.into(),
            session_id: "ses_1".into(),
            provider: "dev".into(),
            openid: None,
            unionid: None,
            expires_at_ms: i64::MAX,
        })
    }

    #[test]
    fn stored_names_read_back_as_they_were() {
        for name in [
            ChannelName::parse("lobby").unwrap(),
            ChannelName::parse("room:42:a.b@c").unwrap(),
            ChannelName::direct("usr_7Yx-1"),
        ] {
            let back = ChannelName::from_stored(name.as_str()).unwrap();
            assert_eq!(back, name);
            assert_eq!(back.is_direct(), name.is_direct());
        }
        // No channel an app can name reads back as a user's direct messages.
        assert!(!ChannelName::from_stored("user:usr_1").unwrap().is_direct());
        for bad in ["", "~user", "Room:1", "room:", "~other:x"] {
            assert!(ChannelName::from_stored(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn names_are_kinds_and_keys() {
        let name = ChannelName::parse("room:42:b").unwrap();
        assert_eq!((name.kind(), name.key()), ("room", "42:b"));
        let bare = ChannelName::parse("lobby").unwrap();
        assert_eq!((bare.kind(), bare.key()), ("lobby", ""));
        for bad in [
            "",
            "Room:1",
            "1room",
            "room:",
            "room:a b",
            "~user:u",
            "room:é",
            &"a".repeat(33),
        ] {
            assert!(ChannelName::parse(bad).is_err(), "{bad}");
        }
        assert!(ChannelName::direct("usr_1").is_direct());
        assert!(!bare.is_direct());
    }

    #[test]
    fn rules_decide_per_caller_and_channel() {
        let body: SettingsBody = serde_json::from_value(serde_json::json!({
            "direct": "to != @auth.id && @auth.id != null",
            "channels": {
                "room": {"rules": {"join": "", "publish": "@auth.id != null", "presence": "key = 'open'"}},
                "user": {"rules": {"join": "key = @auth.id"}}
            }
        }))
        .unwrap();
        let settings = Settings::compile(body).unwrap();
        let room = ChannelName::parse("room:open").unwrap();
        let mine = ChannelName::parse("user:usr_a").unwrap();
        let (a, anonymous) = (user("usr_a"), Caller::Anonymous);
        assert!(settings.allows(&anonymous, &room, Act::Join, 0));
        assert!(!settings.allows(&anonymous, &room, Act::Publish, 0));
        assert!(settings.allows(&a, &room, Act::Publish, 0));
        assert!(settings.allows(&a, &room, Act::Presence, 0));
        let closed = ChannelName::parse("room:closed").unwrap();
        assert!(!settings.allows(&a, &closed, Act::Presence, 0));
        assert!(settings.allows(&a, &mine, Act::Join, 0));
        assert!(!settings.allows(&user("usr_b"), &mine, Act::Join, 0));
        // Left out: the server only.
        assert!(!settings.allows(&a, &mine, Act::Publish, 0));
        assert!(settings.allows(&Caller::Admin, &mine, Act::Publish, 0));
        // Undeclared kinds: the server only.
        let other = ChannelName::parse("other").unwrap();
        assert!(!settings.allows(&a, &other, Act::Join, 0));
        // Direct streams: their user joins them, nobody publishes to them from a socket.
        let direct = ChannelName::direct("usr_a");
        assert!(settings.allows(&a, &direct, Act::Join, 0));
        assert!(!settings.allows(&user("usr_b"), &direct, Act::Join, 0));
        assert!(!settings.allows(&a, &direct, Act::Publish, 0));
        assert!(settings.allows_direct(&a, "usr_b", 0));
        assert!(!settings.allows_direct(&a, "usr_a", 0));
        assert!(!settings.allows_direct(&anonymous, "usr_b", 0));
    }

    #[test]
    fn bad_settings_name_their_field() {
        let refused = |value: Json| {
            let body: SettingsBody = serde_json::from_value(value).unwrap();
            Settings::compile(body).unwrap_err().field
        };
        assert_eq!(
            refused(serde_json::json!({"channels": {"Room": {}}})),
            "channels.Room"
        );
        assert_eq!(
            refused(serde_json::json!({"channels": {"room": {"rules": {"join": "owner = 1"}}}})),
            "channels.room.rules.join"
        );
        assert_eq!(
            refused(serde_json::json!({"channels": {"room": {"history": {"count": 10001}}}})),
            "channels.room.history"
        );
        assert_eq!(refused(serde_json::json!({"direct": "to ="})), "direct");
    }
}
