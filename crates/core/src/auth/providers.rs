//! Login providers and their per-app configuration.
//!
//! Provider ids: `password`, `anonymous`, `dev`, and the platforms `wechat`, `qq`, `douyin`, each
//! optionally with a label (`wechat-shop`) so that one app can accept several mini programs of
//! one developer, whose users the platform links by unionid.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::clock::Timestamp;

/// The platforms whose login Cloudlet trades codes with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    WeChat,
    Qq,
    Douyin,
    Alipay,
}

impl Platform {
    /// The scope in which the platform's unionids are unique.
    pub fn family(self) -> &'static str {
        match self {
            Platform::WeChat => "wechat",
            Platform::Qq => "qq",
            Platform::Douyin => "douyin",
            Platform::Alipay => "alipay",
        }
    }

    pub(crate) fn default_base_url(self) -> &'static str {
        match self {
            Platform::WeChat => cloudlet_platforms::wechat::API_BASE,
            Platform::Qq => cloudlet_platforms::qq::API_BASE,
            Platform::Douyin => cloudlet_platforms::douyin::API_BASE,
            Platform::Alipay => cloudlet_platforms::alipay::GATEWAY,
        }
    }
}

/// What kind of login a provider id names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    Platform(Platform),
    Password,
    Anonymous,
    Dev,
}

impl ProviderKind {
    /// Parses a provider id; `None` for ids Cloudlet does not know.
    pub fn of(provider: &str) -> Option<Self> {
        let (base, label) = match provider.split_once('-') {
            Some((base, label)) => (base, Some(label)),
            None => (provider, None),
        };
        let label_ok = label.is_none_or(|l| {
            (1..=20).contains(&l.len())
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        });
        let kind = match base {
            "wechat" => ProviderKind::Platform(Platform::WeChat),
            "qq" => ProviderKind::Platform(Platform::Qq),
            "douyin" => ProviderKind::Platform(Platform::Douyin),
            "alipay" => ProviderKind::Platform(Platform::Alipay),
            "password" if label.is_none() => ProviderKind::Password,
            "anonymous" if label.is_none() => ProviderKind::Anonymous,
            "dev" if label.is_none() => ProviderKind::Dev,
            _ => return None,
        };
        label_ok.then_some(kind)
    }

    /// Whether a provider that was never configured is on: only password login is.
    pub fn enabled_by_default(self) -> bool {
        matches!(self, ProviderKind::Password)
    }
}

/// The settings of a platform provider that are not secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PlatformSettings {
    pub appid: String,
    pub base_url: String,
    pub enabled: bool,
}

/// The settings of an Alipay provider that are not secret (the app's private key is).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AlipaySettings {
    pub app_id: String,
    pub alipay_public_key: String,
    pub base_url: String,
    pub enabled: bool,
}

/// A provider's stored settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(untagged)]
pub enum Settings {
    Alipay(AlipaySettings),
    Platform(PlatformSettings),
    Toggle { enabled: bool },
}

impl Settings {
    pub fn enabled(&self) -> bool {
        match self {
            Settings::Alipay(a) => a.enabled,
            Settings::Platform(p) => p.enabled,
            Settings::Toggle { enabled } => *enabled,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlatformInput {
    appid: String,
    secret: String,
    base_url: Option<String>,
    #[serde(default = "yes")]
    enabled: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AlipayInput {
    app_id: String,
    private_key: String,
    alipay_public_key: String,
    base_url: Option<String>,
    #[serde(default = "yes")]
    enabled: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ToggleInput {
    enabled: bool,
}

fn yes() -> bool {
    true
}

/// A provider configuration as given to `PUT …/auth/providers/{provider}`, split into its
/// settings and its secret (sealed before it is stored).
pub struct ProviderInput {
    pub settings: Settings,
    pub secret: Option<String>,
}

impl ProviderInput {
    /// Checks a configuration for `kind`; the error says what is wrong.
    pub fn parse(kind: ProviderKind, body: Value) -> Result<Self, String> {
        match kind {
            ProviderKind::Platform(Platform::Alipay) => {
                let input: AlipayInput = serde_json::from_value(body).map_err(|e| e.to_string())?;
                if !(1..=32).contains(&input.app_id.len()) {
                    return Err("app_id must be 1 to 32 characters".into());
                }
                cloudlet_platforms::alipay::private_key(&input.private_key)
                    .map_err(|e| format!("private_key: {e}"))?;
                cloudlet_platforms::alipay::public_key(&input.alipay_public_key)
                    .map_err(|e| format!("alipay_public_key: {e}"))?;
                Ok(ProviderInput {
                    settings: Settings::Alipay(AlipaySettings {
                        app_id: input.app_id,
                        alipay_public_key: input.alipay_public_key.trim().to_owned(),
                        base_url: base_url_or_default(input.base_url, Platform::Alipay)?,
                        enabled: input.enabled,
                    }),
                    secret: Some(input.private_key),
                })
            }
            ProviderKind::Platform(platform) => {
                let input: PlatformInput =
                    serde_json::from_value(body).map_err(|e| e.to_string())?;
                if !(1..=64).contains(&input.appid.len()) {
                    return Err("appid must be 1 to 64 characters".into());
                }
                if !(1..=256).contains(&input.secret.len()) {
                    return Err("secret must be 1 to 256 characters".into());
                }
                Ok(ProviderInput {
                    settings: Settings::Platform(PlatformSettings {
                        appid: input.appid,
                        base_url: base_url_or_default(input.base_url, platform)?,
                        enabled: input.enabled,
                    }),
                    secret: Some(input.secret),
                })
            }
            ProviderKind::Password | ProviderKind::Anonymous | ProviderKind::Dev => {
                let input: ToggleInput = serde_json::from_value(body).map_err(|e| e.to_string())?;
                Ok(ProviderInput {
                    settings: Settings::Toggle {
                        enabled: input.enabled,
                    },
                    secret: None,
                })
            }
        }
    }
}

fn base_url_or_default(base_url: Option<String>, platform: Platform) -> Result<String, String> {
    let base_url = base_url.unwrap_or_else(|| platform.default_base_url().to_owned());
    if !valid_base_url(&base_url) || base_url.len() > 200 {
        return Err(
            "base_url must be an https URL (or http to 127.0.0.1, localhost or [::1])".into(),
        );
    }
    Ok(base_url.trim_end_matches('/').to_owned())
}

/// A platform's API address: https, or http on this machine (the emulator), with no user,
/// query or fragment (Cloudlet appends the platform's paths to it). Secrets and signed requests
/// go there (WeChat's login call carries the app secret in its query), and its answers say who
/// a user is, so a typo must not send them elsewhere in the clear. Who may set an address other
/// than the platform's own is [`PlatformAddresses`]'s to say.
pub(crate) fn valid_base_url(url: &str) -> bool {
    let odd = |c: char| c.is_control() || c.is_whitespace() || matches!(c, '?' | '#' | '@' | '\\');
    if url.chars().any(odd) {
        return false;
    }
    if url.starts_with("https://") {
        return url.len() > "https://".len();
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let host = rest.split('/').next().unwrap_or_default();
    let host = match host.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => host,
    };
    matches!(host, "127.0.0.1" | "localhost" | "[::1]")
}

/// Which platform addresses a caller may give an app. An address other than the platform's
/// own (the emulator, a proxy) makes the server send requests wherever it says: to this
/// machine's loopback services, to hosts inside the operator's network. So only the instance's
/// operator (the admin token, a console instance owner) may set one; an app's key and its
/// console owners may keep what is set and go back to the platform's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlatformAddresses {
    /// The platform's own address, or the one set now.
    Own,
    /// Any valid address.
    Any,
}

impl PlatformAddresses {
    /// Whether `wanted` may be set, the platform's own being `default` and the address set now
    /// `current`.
    pub(crate) fn allow(self, wanted: &str, default: &str, current: Option<&str>) -> bool {
        self == PlatformAddresses::Any
            || wanted.trim_end_matches('/') == default.trim_end_matches('/')
            || current == Some(wanted)
    }
}

/// A provider's configuration as the admin API shows it: secrets masked.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProviderView {
    pub provider: String,
    pub enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub appid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alipay_public_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub private_key: Option<&'static str>,
    pub updated_at: Option<Timestamp>,
}

impl ProviderView {
    pub fn of(provider: &str, settings: &Settings, updated_at: Option<Timestamp>) -> Self {
        let mut view = ProviderView {
            provider: provider.to_owned(),
            enabled: settings.enabled(),
            appid: None,
            app_id: None,
            alipay_public_key: None,
            base_url: None,
            secret: None,
            private_key: None,
            updated_at,
        };
        match settings {
            Settings::Alipay(a) => {
                view.app_id = Some(a.app_id.clone());
                view.alipay_public_key = Some(a.alipay_public_key.clone());
                view.base_url = Some(a.base_url.clone());
                view.private_key = Some("********");
            }
            Settings::Platform(p) => {
                view.appid = Some(p.appid.clone());
                view.base_url = Some(p.base_url.clone());
                view.secret = Some("********");
            }
            Settings::Toggle { .. } => {}
        }
        view
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn provider_ids_are_known_kinds_with_optional_labels() {
        assert_eq!(
            ProviderKind::of("wechat"),
            Some(ProviderKind::Platform(Platform::WeChat))
        );
        assert_eq!(
            ProviderKind::of("wechat-shop2"),
            Some(ProviderKind::Platform(Platform::WeChat))
        );
        assert_eq!(ProviderKind::of("dev"), Some(ProviderKind::Dev));
        for bad in [
            "",
            "facebook",
            "wechat-",
            "wechat-Shop",
            "dev-x",
            "wechat-a-b",
            "password-1",
        ] {
            assert_eq!(ProviderKind::of(bad), None, "{bad}");
        }
    }

    #[test]
    fn configurations_are_checked_and_split_from_their_secret() {
        let wechat = ProviderKind::Platform(Platform::WeChat);
        let input = ProviderInput::parse(wechat, json!({"appid":"wx1","secret":"s"})).unwrap();
        assert_eq!(input.secret.as_deref(), Some("s"));
        assert_eq!(
            input.settings,
            Settings::Platform(PlatformSettings {
                appid: "wx1".into(),
                base_url: "https://api.weixin.qq.com".into(),
                enabled: true
            })
        );
        let view = serde_json::to_value(ProviderView::of("wechat", &input.settings, None)).unwrap();
        assert_eq!(view["secret"], "********");
        for bad in [
            json!({"appid":"wx1"}),
            json!({"appid":"","secret":"s"}),
            json!({"appid":"wx1","secret":"s","base_url":"ftp://x"}),
            json!({"appid":"wx1","secret":"s","base_url":"http://api.weixin.qq.com"}),
            json!({"appid":"wx1","secret":"s","base_url":"http://10.0.0.1:8080"}),
            json!({"appid":"wx1","secret":"s","base_url":"http://127.0.0.1@evil.example"}),
            json!({"appid":"wx1","secret":"s","base_url":"https://user@api.example.com"}),
            json!({"appid":"wx1","secret":"s","base_url":"http://127.0.0.1:2379/v2/keys?q="}),
            json!({"appid":"wx1","secret":"s","base_url":"http://127.0.0.1:2379/x#"}),
            json!({"appid":"wx1","secret":"s","base_url":"https://api.example.com/a b"}),
            json!({"appid":"wx1","secret":"s","base_url":"https://"}),
            json!({"appid":"wx1","secret":"s","extra":1}),
        ] {
            assert!(ProviderInput::parse(wechat, bad).is_err());
        }
        for good in [
            "https://api.example.com",
            "http://127.0.0.1:9000",
            "http://localhost:9000/wx",
            "http://[::1]:9000",
        ] {
            let input = json!({"appid":"wx1","secret":"s","base_url":good});
            assert!(ProviderInput::parse(wechat, input).is_ok(), "{good}");
        }
        // Only the operator points an app elsewhere than the platform; others keep what is set.
        let own = PlatformAddresses::Own;
        let wechat_api = Platform::WeChat.default_base_url();
        assert!(own.allow(wechat_api, wechat_api, None));
        assert!(own.allow(&format!("{wechat_api}/"), wechat_api, None));
        assert!(!own.allow("http://127.0.0.1:9000", wechat_api, None));
        assert!(own.allow(
            "http://127.0.0.1:9000",
            wechat_api,
            Some("http://127.0.0.1:9000")
        ));
        assert!(!own.allow(
            "http://127.0.0.1:9001",
            wechat_api,
            Some("http://127.0.0.1:9000")
        ));
        assert!(PlatformAddresses::Any.allow("http://127.0.0.1:9001", wechat_api, None));
        assert!(ProviderInput::parse(ProviderKind::Dev, json!({"enabled":"yes"})).is_err());
        assert!(
            ProviderInput::parse(ProviderKind::Dev, json!({"enabled":true}))
                .unwrap()
                .settings
                .enabled()
        );
    }
}
