//! Alipay open platform gateway (`openapi.alipay.com/gateway.do`), `shared/platforms.md` §2:
//! RSA2 (SHA256withRSA, PKCS#1 v1.5) request signing over the sorted raw parameters, and
//! verification of replies over the exact bytes of the `*_response` object as sent.
//!
//! The keys and signatures are [`crate::rsa2`]'s.

use std::collections::BTreeMap;

use rsa::{RsaPrivateKey, RsaPublicKey};
use serde::Deserialize;
use serde_json::Value;
use time::OffsetDateTime;
use time::macros::{format_description, offset};

pub use crate::rsa2::{private_key, public_key, sign, verify};
use crate::{PlatformError, PlatformHttp};

/// The real gateway.
pub const GATEWAY: &str = "https://openapi.alipay.com/gateway.do";

/// The string a request signature covers: every parameter but `sign` and the empty ones,
/// sorted by key, joined as `key=value` with raw (not URL-encoded) values.
pub fn signing_string<'a>(params: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let sorted: BTreeMap<&str, &str> = params
        .into_iter()
        .filter(|(key, value)| *key != "sign" && !value.is_empty())
        .collect();
    sorted
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// The exact text of the JSON object that is the value of `root` in `body`, from its `{` to the
/// matching `}` (strings and escapes respected): what Alipay's reply signature covers.
pub fn response_object<'a>(body: &'a str, root: &str) -> Option<&'a str> {
    let key = format!("\"{root}\"");
    let after_key = body.find(&key)? + key.len();
    let rest = &body[after_key..];
    let start = after_key + rest.find('{')?;
    if !body[after_key..start]
        .trim()
        .trim_start_matches(':')
        .trim()
        .is_empty()
    {
        return None;
    }
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for (offset, c) in body[start..].char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_string => escaped = true,
            '"' => in_string = !in_string,
            '{' if !in_string => depth += 1,
            '}' if !in_string => {
                depth -= 1;
                if depth == 0 {
                    return Some(&body[start..=start + offset]);
                }
            }
            _ => {}
        }
    }
    None
}

/// What `alipay.system.oauth.token` answers for an auth code.
#[derive(Clone, PartialEq, Eq)]
pub struct AlipayToken {
    /// `2088…`; empty for apps in OpenID mode.
    pub user_id: Option<String>,
    /// Set for apps in OpenID mode.
    pub open_id: Option<String>,
    pub union_id: Option<String>,
    pub access_token: String,
    pub expires_in_secs: u64,
}

impl std::fmt::Debug for AlipayToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlipayToken")
            .field("user_id", &self.user_id)
            .field("open_id", &self.open_id)
            .field("union_id", &self.union_id)
            .finish_non_exhaustive()
    }
}

/// A client for one Alipay app.
#[derive(Clone)]
pub struct AlipayClient {
    http: PlatformHttp,
    gateway: String,
    app_id: String,
    private_key: RsaPrivateKey,
    alipay_public_key: RsaPublicKey,
}

impl std::fmt::Debug for AlipayClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlipayClient")
            .field("gateway", &self.gateway)
            .field("app_id", &self.app_id)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct TokenBody {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    msg: Option<String>,
    #[serde(default)]
    sub_code: Option<String>,
    #[serde(default)]
    sub_msg: Option<String>,
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    open_id: Option<String>,
    #[serde(default)]
    union_id: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<Value>,
}

impl AlipayClient {
    /// `gateway` is [`GATEWAY`] in production, the emulator's `/alipay/gateway.do` locally.
    pub fn new(
        http: PlatformHttp,
        gateway: &str,
        app_id: &str,
        private_key_text: &str,
        alipay_public_key_text: &str,
    ) -> Result<Self, PlatformError> {
        Ok(AlipayClient {
            http,
            gateway: gateway.to_owned(),
            app_id: app_id.to_owned(),
            private_key: private_key(private_key_text)?,
            alipay_public_key: public_key(alipay_public_key_text)?,
        })
    }

    /// Trades a `my.getAuthCode` code for the user's ids (`alipay.system.oauth.token`).
    /// `now_unix_secs` becomes the request's timestamp, in China time as Alipay expects.
    pub async fn oauth_token(
        &self,
        code: &str,
        now_unix_secs: i64,
    ) -> Result<AlipayToken, PlatformError> {
        let method = "alipay.system.oauth.token";
        let timestamp = china_time(now_unix_secs)?;
        let mut params = vec![
            ("app_id", self.app_id.as_str()),
            ("method", method),
            ("format", "JSON"),
            ("charset", "utf-8"),
            ("sign_type", "RSA2"),
            ("timestamp", timestamp.as_str()),
            ("version", "1.0"),
            ("grant_type", "authorization_code"),
            ("code", code),
        ];
        let signature = sign(&self.private_key, &signing_string(params.iter().copied()));
        params.push(("sign", signature.as_str()));
        let response = self
            .http
            .client()
            .post(&self.gateway)
            .form(&params)
            .send()
            .await?;
        let body = PlatformHttp::text(response).await?;
        let (object, body_text) = self.verified_response(&body, method)?;
        let token: TokenBody = serde_json::from_str(object)
            .map_err(|e| PlatformError::BadAnswer(format!("{body_text}: {e}")))?;
        if let Some(sub_code) = token.sub_code.filter(|s| !s.is_empty()) {
            return Err(PlatformError::Refused {
                code: token
                    .code
                    .as_deref()
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(-1),
                message: format!(
                    "{sub_code} {}",
                    token.sub_msg.or(token.msg).unwrap_or_default()
                ),
            });
        }
        let access_token = token
            .access_token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                PlatformError::BadAnswer("oauth.token answered without access_token".into())
            })?;
        let user_id = token.user_id.filter(|u| !u.is_empty());
        let open_id = token.open_id.filter(|u| !u.is_empty());
        if user_id.is_none() && open_id.is_none() {
            return Err(PlatformError::BadAnswer(
                "oauth.token answered without user_id or open_id".into(),
            ));
        }
        let expires_in_secs = match token.expires_in {
            Some(Value::Number(n)) => n.as_u64().unwrap_or(0),
            Some(Value::String(s)) => s.parse().unwrap_or(0),
            _ => 0,
        };
        Ok(AlipayToken {
            user_id,
            open_id,
            union_id: token.union_id.filter(|u| !u.is_empty()),
            access_token,
            expires_in_secs,
        })
    }

    /// Finds the reply object (`<method>_response`, or `error_response`) and checks its
    /// signature over the exact bytes sent; an error reply without a signature is accepted
    /// unverified, as Alipay's SDKs do.
    fn verified_response<'a>(
        &self,
        body: &'a str,
        method: &str,
    ) -> Result<(&'a str, &'static str), PlatformError> {
        let root = format!("{}_response", method.replace('.', "_"));
        // A second root key after the signed object could smuggle fields past the signature.
        if body.matches(&format!("\"{root}\"")).count() > 1 {
            return Err(PlatformError::BadAnswer(
                "the reply names its response object twice".into(),
            ));
        }
        let (object, is_error) = match response_object(body, &root) {
            Some(object) => (object, false),
            None => (
                response_object(body, "error_response").ok_or_else(|| {
                    PlatformError::BadAnswer("no response object in the reply".into())
                })?,
                true,
            ),
        };
        let envelope: Value = serde_json::from_str(body)
            .map_err(|_| PlatformError::BadAnswer("the reply is not JSON".into()))?;
        match envelope["sign"].as_str() {
            Some(signature) => {
                let verified = verify(&self.alipay_public_key, object, signature)
                    || (object.contains("\\/")
                        && verify(
                            &self.alipay_public_key,
                            &object.replace("\\/", "/"),
                            signature,
                        ));
                if !verified {
                    return Err(PlatformError::Crypto(
                        "the reply's signature does not verify with the Alipay public key",
                    ));
                }
            }
            None if is_error => {}
            None => return Err(PlatformError::Crypto("the reply is not signed")),
        }
        Ok((
            object,
            if is_error {
                "error_response"
            } else {
                "response"
            },
        ))
    }
}

/// `yyyy-MM-dd HH:mm:ss` in UTC+8.
pub fn china_time(unix_secs: i64) -> Result<String, PlatformError> {
    OffsetDateTime::from_unix_timestamp(unix_secs)
        .map_err(|_| PlatformError::Crypto("the clock is out of range"))?
        .to_offset(offset!(+8))
        .format(format_description!(
            "[year]-[month]-[day] [hour]:[minute]:[second]"
        ))
        .map_err(|_| PlatformError::Crypto("the clock is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signing_string_sorts_skips_empty_values_and_sign_and_keeps_raw_values() {
        let params = [
            ("timestamp", "2014-07-24 03:07:50"),
            ("app_id", "2014072300007148"),
            ("sign", "ignored"),
            ("method", "alipay.system.oauth.token"),
            ("notify_url", ""),
            ("charset", "utf-8"),
            ("code", "4b203fe6c11548bcabd8da5bb087a83b"),
            ("version", "1.0"),
            ("format", "JSON"),
            ("grant_type", "authorization_code"),
            ("sign_type", "RSA2"),
        ];
        assert_eq!(
            signing_string(params),
            "app_id=2014072300007148&charset=utf-8&code=4b203fe6c11548bcabd8da5bb087a83b&format=JSON&grant_type=authorization_code&method=alipay.system.oauth.token&sign_type=RSA2&timestamp=2014-07-24 03:07:50&version=1.0"
        );
    }

    #[test]
    fn the_response_object_is_the_exact_text_with_its_escapes() {
        let body = r#"{"alipay_x_response":{"msg":"a \"}\" b","url":"https:\/\/x","n":{"k":1}},"sign":"abc"}"#;
        assert_eq!(
            response_object(body, "alipay_x_response"),
            Some(r#"{"msg":"a \"}\" b","url":"https:\/\/x","n":{"k":1}}"#)
        );
        assert_eq!(response_object(body, "error_response"), None);
        assert_eq!(
            response_object(r#"{"alipay_x_response":"{}"}"#, "alipay_x_response"),
            None
        );
        assert_eq!(
            response_object(r#"{"alipay_x_response":{"a":1"#, "alipay_x_response"),
            None
        );
    }

    #[test]
    fn china_time_is_utc_plus_eight() {
        assert_eq!(china_time(1_406_142_470).unwrap(), "2014-07-24 03:07:50");
    }
}
