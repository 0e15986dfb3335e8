//! WeChat mini program server API (`api.weixin.qq.com`), `shared/platforms.md` §1.
//!
//! Every answer may carry `errcode`/`errmsg`; success is a missing or zero `errcode`, and
//! `errmsg` is never compared (it carries request ids).
//!
//! Subscribe messages (§1.6) are in their own module, re-exported here: [`SubscribeMessage`],
//! [`WeChatClient::send_subscribe_message`] and its [`SubscribeError`].

mod subscribe;

pub use subscribe::{Lang, MiniProgramState, SubscribeError, SubscribeMessage};

use aes::cipher::{BlockDecryptMut, KeyIvInit, block_padding::Pkcs7};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Sha256;

use crate::{PlatformError, PlatformHttp};

/// The real server.
pub const API_BASE: &str = "https://api.weixin.qq.com";

/// What `jscode2session` answers for a login code.
#[derive(Clone, PartialEq, Eq)]
pub struct CodeSession {
    pub openid: String,
    /// Base64 of 16 bytes; the key of the user's encrypted data. Secret.
    pub session_key: String,
    /// Present when the app is bound to an Open Platform account.
    pub unionid: Option<String>,
}

impl std::fmt::Debug for CodeSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CodeSession")
            .field("openid", &self.openid)
            .field("unionid", &self.unionid)
            .finish_non_exhaustive()
    }
}

/// An access token for the platform's business APIs.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken {
    pub token: String,
    pub expires_in_secs: u64,
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessToken")
            .field("expires_in_secs", &self.expires_in_secs)
            .finish_non_exhaustive()
    }
}

/// A client for one WeChat mini program (one `appid`).
#[derive(Clone)]
pub struct WeChatClient {
    http: PlatformHttp,
    base_url: String,
    appid: String,
    secret: String,
}

impl std::fmt::Debug for WeChatClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeChatClient")
            .field("base_url", &self.base_url)
            .field("appid", &self.appid)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Envelope<T> {
    #[serde(default)]
    errcode: i64,
    #[serde(default)]
    errmsg: String,
    #[serde(flatten)]
    body: T,
}

impl<T> Envelope<T> {
    fn into_result(self) -> Result<T, PlatformError> {
        if self.errcode != 0 {
            return Err(PlatformError::Refused {
                code: self.errcode,
                message: self.errmsg,
            });
        }
        Ok(self.body)
    }
}

#[derive(Deserialize)]
struct SessionBody {
    openid: Option<String>,
    session_key: Option<String>,
    unionid: Option<String>,
}

#[derive(Deserialize)]
struct TokenBody {
    access_token: Option<String>,
    expires_in: Option<u64>,
}

/// A user's phone number, from a `getPhoneNumber` code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhoneNumber {
    /// With the country code, e.g. `+8613800138000`.
    pub phone_number: String,
    pub pure_phone_number: String,
    pub country_code: String,
}

#[derive(Deserialize)]
struct PhoneBody {
    phone_info: Option<PhoneInfo>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PhoneInfo {
    phone_number: String,
    pure_phone_number: String,
    /// A string in the docs, a number in their example: both are accepted.
    country_code: Value,
}

#[derive(Serialize)]
struct StableTokenRequest<'a> {
    grant_type: &'a str,
    appid: &'a str,
    secret: &'a str,
    force_refresh: bool,
}

impl WeChatClient {
    /// `base_url` is [`API_BASE`] in production, the emulator's `/wechat` prefix locally.
    pub fn new(http: PlatformHttp, base_url: &str, appid: &str, secret: &str) -> Self {
        WeChatClient {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
            appid: appid.to_owned(),
            secret: secret.to_owned(),
        }
    }

    pub fn appid(&self) -> &str {
        &self.appid
    }

    /// Trades a `wx.login` code for the user's openid and session key (`code2Session`).
    pub async fn code_to_session(&self, code: &str) -> Result<CodeSession, PlatformError> {
        jscode2session(&self.http, &self.base_url, &self.appid, &self.secret, code).await
    }

    /// `POST /cgi-bin/stable_token`: the same token while it is valid, unless `force_refresh`.
    pub async fn stable_token(&self, force_refresh: bool) -> Result<AccessToken, PlatformError> {
        let response = self
            .http
            .client()
            .post(format!("{}/cgi-bin/stable_token", self.base_url))
            .json(&StableTokenRequest {
                grant_type: "client_credential",
                appid: &self.appid,
                secret: &self.secret,
                force_refresh,
            })
            .send()
            .await?;
        let body = PlatformHttp::json::<Envelope<TokenBody>>(response)
            .await?
            .into_result()?;
        match (body.access_token, body.expires_in) {
            (Some(token), Some(expires_in_secs)) if !token.is_empty() => Ok(AccessToken {
                token,
                expires_in_secs,
            }),
            _ => Err(PlatformError::BadAnswer(
                "stable_token answered without access_token or expires_in".into(),
            )),
        }
    }
}

impl WeChatClient {
    /// `POST /wxa/business/getuserphonenumber`: the phone number behind a `getPhoneNumber`
    /// code. The code goes in the JSON body (in the query it is refused).
    pub async fn phone_number(
        &self,
        access_token: &str,
        code: &str,
    ) -> Result<PhoneNumber, PlatformError> {
        let response = self
            .http
            .client()
            .post(format!("{}/wxa/business/getuserphonenumber", self.base_url))
            .query(&[("access_token", access_token)])
            .json(&serde_json::json!({ "code": code }))
            .send()
            .await?;
        let body = PlatformHttp::json::<Envelope<PhoneBody>>(response)
            .await?
            .into_result()?;
        let info = body
            .phone_info
            .ok_or_else(|| PlatformError::BadAnswer("no phone_info in the answer".into()))?;
        let country_code = match info.country_code {
            Value::String(s) => s,
            Value::Number(n) => n.to_string(),
            _ => String::new(),
        };
        // WeChat leaves the country code off `phoneNumber` for domestic numbers: build the
        // full number from its parts.
        let phone_number = if country_code.is_empty() {
            info.phone_number
        } else {
            format!("+{country_code}{}", info.pure_phone_number)
        };
        Ok(PhoneNumber {
            phone_number,
            pure_phone_number: info.pure_phone_number,
            country_code,
        })
    }
}

/// Whether a WeChat error code means the access token is invalid or expired, so that a fresh
/// one should be fetched and the call tried again.
pub fn is_stale_token(code: i64) -> bool {
    matches!(code, 40001 | 40014 | 42001)
}

/// `GET {base}/sns/jscode2session`, shared by WeChat and QQ (whose API is a clone).
pub(crate) async fn jscode2session(
    http: &PlatformHttp,
    base_url: &str,
    appid: &str,
    secret: &str,
    code: &str,
) -> Result<CodeSession, PlatformError> {
    let response = http
        .client()
        .get(format!("{base_url}/sns/jscode2session"))
        .query(&[
            ("appid", appid),
            ("secret", secret),
            ("js_code", code),
            ("grant_type", "authorization_code"),
        ])
        .send()
        .await?;
    let body = PlatformHttp::json::<Envelope<SessionBody>>(response)
        .await?
        .into_result()?;
    match (body.openid, body.session_key) {
        (Some(openid), Some(session_key)) if !openid.is_empty() => Ok(CodeSession {
            openid,
            session_key,
            unionid: body.unionid.filter(|u| !u.is_empty()),
        }),
        _ => Err(PlatformError::BadAnswer(
            "jscode2session answered without openid or session_key".into(),
        )),
    }
}

/// Decrypts a mini program's `encryptedData` (user info, share info, legacy phone number) with
/// the user's session key: AES-128-CBC, PKCS#7, then checks that the watermark names `appid`.
pub fn decrypt_data(
    session_key: &str,
    iv: &str,
    encrypted_data: &str,
    appid: &str,
) -> Result<Value, PlatformError> {
    let key = decode_exact::<16>(session_key, "session_key must be base64 of 16 bytes")?;
    let iv = decode_exact::<16>(iv, "iv must be base64 of 16 bytes")?;
    let mut data = STANDARD
        .decode(encrypted_data)
        .map_err(|_| PlatformError::Crypto("encryptedData is not base64"))?;
    if data.is_empty() || data.len() % 16 != 0 {
        return Err(PlatformError::Crypto(
            "encryptedData is not whole AES blocks",
        ));
    }
    let plain = cbc::Decryptor::<aes::Aes128>::new(&key.into(), &iv.into())
        .decrypt_padded_mut::<Pkcs7>(&mut data)
        .map_err(|_| {
            PlatformError::Crypto("encryptedData does not decrypt with this session key")
        })?;
    let value: Value = serde_json::from_slice(plain)
        .map_err(|_| PlatformError::Crypto("encryptedData does not decrypt to JSON"))?;
    if value["watermark"]["appid"].as_str() != Some(appid) {
        return Err(PlatformError::Crypto(
            "encryptedData was made for another app",
        ));
    }
    Ok(value)
}

/// The login-state signature: hex HMAC-SHA256 of the body, keyed with the session key's base64
/// *text* (not its decoded bytes), as WeChat computes it. The body of a GET is empty.
pub fn login_state_signature(session_key: &str, body: &[u8]) -> String {
    // HMAC takes keys of any length, so this can not fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(session_key.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

fn decode_exact<const N: usize>(
    text: &str,
    problem: &'static str,
) -> Result<[u8; N], PlatformError> {
    STANDARD
        .decode(text)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or(PlatformError::Crypto(problem))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// T1: WeChat's official decryption sample (platforms.md §1.4).
    #[test]
    fn decrypts_the_official_sample() {
        let data = "CiyLU1Aw2KjvrjMdj8YKliAjtP4gsMZMQmRzooG2xrDcvSnxIMXFufNstNGTyaGS9uT5geRa0W4oTOb1WT7fJlAC+oNPdbB+3hVbJSRgv+4lGOETKUQz6OYStslQ142dNCuabNPGBzlooOmB231qMM85d2/fV6ChevvXvQP8Hkue1poOFtnEtpyxVLW1zAo6/1Xx1COxFvrc2d7UL/lmHInNlxuacJXwu0fjpXfz/YqYzBIBzD6WUfTIF9GRHpOn/Hz7saL8xz+W//FRAUid1OksQaQx4CMs8LOddcQhULW4ucetDf96JcR3g0gfRK4PC7E/r7Z6xNrXd2UIeorGj5Ef7b1pJAYB6Y5anaHqZ9J6nKEBvB4DnNLIVWSgARns/8wR2SiRS7MNACwTyrGvt9ts8p12PKFdlqYTopNHR1Vf7XjfhQlVsAJdNiKdYmYVoKlaRv85IfVunYzO0IKXsyl7JCUjCpoG20f0a04COwfneQAGGwd5oa+T8yO5hzuyDb/XcxxmK01EpqOyuxINew==";
        let value = decrypt_data(
            "tiihtNczf5v6AKRyjwEUhQ==",
            "r7BXXKkLb8qrSNn05n0qiA==",
            data,
            "wx4f4bc4dec97d474b",
        )
        .unwrap();
        assert_eq!(value["openId"], "oGZUI0egBJY1zhBYw2KhdUfwVJJE");
        assert_eq!(value["nickName"], "Band");
        assert_eq!(value["unionId"], "ocMvos6NjeKLIBqg5Mr9QjxrP1FA");
        assert_eq!(value["watermark"]["timestamp"], 1477314187);

        let other_app = decrypt_data(
            "tiihtNczf5v6AKRyjwEUhQ==",
            "r7BXXKkLb8qrSNn05n0qiA==",
            data,
            "wx0000000000000000",
        );
        assert!(matches!(other_app, Err(PlatformError::Crypto(m)) if m.contains("another app")));
        let wrong_key = decrypt_data(
            "AAAAAAAAAAAAAAAAAAAAAA==",
            "r7BXXKkLb8qrSNn05n0qiA==",
            data,
            "wx4f4bc4dec97d474b",
        );
        assert!(matches!(wrong_key, Err(PlatformError::Crypto(_))));
        for (key, iv, data) in [
            ("short", "r7BXXKkLb8qrSNn05n0qiA==", data),
            ("tiihtNczf5v6AKRyjwEUhQ==", "AAAA", data),
            (
                "tiihtNczf5v6AKRyjwEUhQ==",
                "r7BXXKkLb8qrSNn05n0qiA==",
                "AAAA",
            ),
            (
                "tiihtNczf5v6AKRyjwEUhQ==",
                "r7BXXKkLb8qrSNn05n0qiA==",
                "not base64!",
            ),
        ] {
            assert!(decrypt_data(key, iv, data, "wx4f4bc4dec97d474b").is_err());
        }
    }

    /// T2 and the checkSessionKey example (platforms.md §1.3).
    #[test]
    fn signs_the_login_state_with_the_base64_text_as_key() {
        assert_eq!(
            login_state_signature("o0q0otL8aEzpcZL/FT9WsQ==", br#"{"foo":"bar"}"#),
            "654571f79995b2ce1e149e53c0a33dc39c0a74090db514261454e8dbe432aa0b"
        );
        assert_eq!(
            login_state_signature("tiihtNczf5v6AKRyjwEUhQ==", b""),
            "7154f9f8b4b76b92f541cbf0e37d48840fa06e5e42da92a6f80168a1516a4735"
        );
    }
}
