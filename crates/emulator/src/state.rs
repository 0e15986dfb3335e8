//! What the emulator remembers: registered platform apps, issued login codes, access tokens, and
//! which users it has seen. A user's ids are derived from the app and the user's name, so the
//! same user always gets the same openid, across restarts too; the emulator only remembers which
//! openids belong to users it has met, so that APIs addressed to an openid can refuse strangers.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::EmulatorOptions;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    Wechat,
    Qq,
    Douyin,
    Alipay,
}

impl Platform {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Platform::Wechat => "wechat",
            Platform::Qq => "qq",
            Platform::Douyin => "douyin",
            Platform::Alipay => "alipay",
        }
    }
}

pub(crate) struct App {
    /// WeChat, QQ, Douyin: the app secret.
    pub secret: String,
    /// Alipay: the app's public key, which its request signatures verify with.
    pub app_public_key: Option<rsa::RsaPublicKey>,
    /// Alipay: answer `open_id` instead of `user_id`, as apps in OpenID mode get.
    pub open_id_mode: bool,
    /// Apps of one developer share an open platform account, and so unionids.
    pub open_platform: Option<String>,
}

pub(crate) struct Code {
    pub platform: Platform,
    pub appid: String,
    pub user: String,
    pub anonymous: bool,
    /// A phone-number code (`getPhoneNumber`) carries the number it reveals.
    pub phone: Option<String>,
    pub issued: Instant,
    pub used: bool,
}

pub(crate) struct Token {
    pub value: String,
    pub issued: Instant,
}

#[derive(Default)]
pub(crate) struct State {
    pub apps: HashMap<(Platform, String), App>,
    pub codes: HashMap<String, Code>,
    pub tokens: HashMap<(Platform, String), Token>,
    /// `(platform, appid, openid)` → user name, for every user the emulator has met in that app:
    /// issued a login code, or subscribed to a message. (Alipay users have no openid here.)
    pub users: HashMap<(Platform, String, String), String>,
    /// How many access tokens `stable_token` has been asked for (whatever the answer).
    pub token_requests: u64,
}

pub(crate) struct Emulator {
    pub options: EmulatorOptions,
    state: Mutex<State>,
    /// "Alipay"'s own key pair, made when the first Alipay app registers.
    pub alipay_key: std::sync::OnceLock<rsa::RsaPrivateKey>,
    /// "WeChat Pay"'s own key pair, made when the first merchant registers.
    pub wechat_pay_key: std::sync::OnceLock<rsa::RsaPrivateKey>,
    /// The payment calendar both payment platforms date payments, refunds and bills by.
    pub calendar: crate::calendar::Calendar,
}

/// Why a code was refused.
pub(crate) enum CodeProblem {
    /// Unknown, expired, or issued for another app or platform.
    Invalid,
    /// Already traded once.
    Used,
}

impl Emulator {
    pub fn new(options: EmulatorOptions) -> Self {
        Emulator {
            options,
            state: Mutex::new(State::default()),
            alipay_key: std::sync::OnceLock::new(),
            wechat_pay_key: std::sync::OnceLock::new(),
            calendar: crate::calendar::Calendar::default(),
        }
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        // Sections never panic half-way; a poisoned lock still guards consistent data.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks `code` used if it is valid for this platform app, and returns its user.
    pub fn take_code(
        &self,
        platform: Platform,
        appid: &str,
        code: &str,
        anonymous: bool,
    ) -> Result<String, CodeProblem> {
        self.use_code(platform, appid, code, anonymous, true)
    }

    /// Whether `code` would be accepted, without using it up.
    pub fn check_code(
        &self,
        platform: Platform,
        appid: &str,
        code: &str,
        anonymous: bool,
    ) -> Result<String, CodeProblem> {
        self.use_code(platform, appid, code, anonymous, false)
    }

    fn use_code(
        &self,
        platform: Platform,
        appid: &str,
        code: &str,
        anonymous: bool,
        take: bool,
    ) -> Result<String, CodeProblem> {
        let mut state = self.state();
        let Some(issued) = state.codes.get_mut(code) else {
            return Err(CodeProblem::Invalid);
        };
        if issued.platform != platform
            || issued.appid != appid
            || issued.anonymous != anonymous
            || issued.phone.is_some()
            || issued.issued.elapsed() > self.options.code_ttl
        {
            return Err(CodeProblem::Invalid);
        }
        if issued.used {
            return Err(CodeProblem::Used);
        }
        issued.used = take;
        Ok(issued.user.clone())
    }
}

impl Emulator {
    /// Marks a phone-number `code` of this WeChat app used, and returns its user and number.
    pub fn take_phone_code(
        &self,
        appid: &str,
        code: &str,
    ) -> Result<(String, String), CodeProblem> {
        let mut state = self.state();
        let Some(issued) = state.codes.get_mut(code) else {
            return Err(CodeProblem::Invalid);
        };
        let Some(phone) = issued.phone.clone() else {
            return Err(CodeProblem::Invalid);
        };
        if issued.platform != Platform::Wechat
            || issued.appid != appid
            || issued.issued.elapsed() > self.options.code_ttl
        {
            return Err(CodeProblem::Invalid);
        }
        if issued.used {
            return Err(CodeProblem::Used);
        }
        issued.used = true;
        Ok((issued.user.clone(), phone))
    }
}

/// A stable id for `user`: the same inputs always give the same id.
pub(crate) fn derived_id(prefix: &str, parts: &[&str]) -> String {
    let digest = Sha256::digest(parts.join("\u{1f}").as_bytes());
    format!("{prefix}{}", &URL_SAFE_NO_PAD.encode(digest)[..27])
}

pub(crate) fn openid(platform: Platform, appid: &str, user: &str) -> String {
    derived_id("o", &[platform.as_str(), "openid", appid, user])
}

pub(crate) fn unionid(platform: Platform, open_platform: &str, user: &str) -> String {
    derived_id("u", &[platform.as_str(), "unionid", open_platform, user])
}

pub(crate) fn anonymous_openid(appid: &str, user: &str) -> String {
    derived_id("a", &["douyin", "anonymous", appid, user])
}

/// `n` random bytes from the OS.
#[allow(clippy::disallowed_methods)] // The emulator has no domain code to steer from tests.
pub(crate) fn random_bytes(n: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; n];
    if getrandom::fill(&mut bytes).is_err() {
        // Codes must not repeat; without randomness the emulator can not serve.
        panic!("the operating system's random source failed");
    }
    bytes
}

pub(crate) fn new_code() -> String {
    URL_SAFE_NO_PAD.encode(random_bytes(18))
}

/// A WeChat-style session key: base64 of 16 random bytes.
pub(crate) fn new_session_key() -> String {
    STANDARD.encode(random_bytes(16))
}

pub(crate) fn new_token() -> String {
    URL_SAFE_NO_PAD.encode(random_bytes(48))
}
