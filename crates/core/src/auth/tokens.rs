//! Access tokens: JWTs signed with HMAC-SHA256 under the app's own signing key, named by `kid`
//! so that keys can rotate without logging anyone out. Checked without any database read.
//!
//! Written here rather than with the `jsonwebtoken` crate: its pure-Rust backend pulls in RSA and
//! elliptic-curve crates, and Cloudlet needs exactly HS256 with a `kid`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cloudlet_store::AppName;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// What an access token says. Times are Unix seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Who issued it (`cloudlet`).
    pub iss: String,
    /// The app it is for.
    pub aud: String,
    /// The user.
    pub sub: String,
    /// The session it belongs to.
    pub sid: String,
    /// The provider the user logged in with.
    pub prv: String,
    /// Space-separated scopes (`user`).
    pub scope: String,
    pub iat: i64,
    pub exp: i64,
    /// The user's id at the provider (a WeChat openid, an Alipay user_id, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oid: Option<String>,
    /// The user's unionid at the provider's platform, when it gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uni: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    typ: String,
    kid: String,
}

/// Why a token was refused, in the order the checks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenProblem {
    /// Not a well-formed token of ours.
    Malformed,
    /// Made for another app.
    OtherApp,
    /// The signature does not verify (forged, or its key is gone).
    BadSignature,
    Expired,
}

/// Signs `claims` with `secret`, naming the key `kid`.
pub fn sign(claims: &Claims, kid: &str, secret: &[u8]) -> String {
    let header = Header {
        alg: "HS256".into(),
        typ: "JWT".into(),
        kid: kid.into(),
    };
    let signing_input = format!("{}.{}", encode_part(&header), encode_part(claims));
    let signature = URL_SAFE_NO_PAD.encode(
        mac(secret, signing_input.as_bytes())
            .finalize()
            .into_bytes(),
    );
    format!("{signing_input}.{signature}")
}

/// A token taken apart but not yet trusted.
pub struct Unverified<'a> {
    pub kid: String,
    pub claims: Claims,
    signing_input: &'a str,
    signature: Vec<u8>,
}

/// Splits a token and reads its header and claims. Nothing in it is trusted yet.
pub fn parse(token: &str) -> Result<Unverified<'_>, TokenProblem> {
    let (signing_input, signature) = token.rsplit_once('.').ok_or(TokenProblem::Malformed)?;
    let (header, claims) = signing_input
        .split_once('.')
        .ok_or(TokenProblem::Malformed)?;
    let decode = |part: &str| {
        URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|_| TokenProblem::Malformed)
    };
    let header: Header =
        serde_json::from_slice(&decode(header)?).map_err(|_| TokenProblem::Malformed)?;
    if header.alg != "HS256" {
        return Err(TokenProblem::Malformed);
    }
    let claims: Claims =
        serde_json::from_slice(&decode(claims)?).map_err(|_| TokenProblem::Malformed)?;
    Ok(Unverified {
        kid: header.kid,
        claims,
        signing_input,
        signature: decode(signature)?,
    })
}

impl Unverified<'_> {
    /// Checks audience, signature (in constant time) and expiry, in that order.
    pub fn verify(
        self,
        app: &AppName,
        secret: Option<&[u8]>,
        now_secs: i64,
    ) -> Result<Claims, TokenProblem> {
        if self.claims.aud != app.as_str() {
            return Err(TokenProblem::OtherApp);
        }
        let secret = secret.ok_or(TokenProblem::BadSignature)?;
        mac(secret, self.signing_input.as_bytes())
            .verify_slice(&self.signature)
            .map_err(|_| TokenProblem::BadSignature)?;
        if self.claims.exp <= now_secs {
            return Err(TokenProblem::Expired);
        }
        Ok(self.claims)
    }
}

fn mac(secret: &[u8], input: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(input);
    mac
}

/// Base64url of a part's JSON; serializing these plain structs can not fail.
fn encode_part(part: &impl Serialize) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(part).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> Claims {
        Claims {
            iss: "cloudlet".into(),
            aud: "shop".into(),
            sub: "usr_1".into(),
            sid: "ses_1".into(),
            prv: "wechat".into(),
            scope: "user".into(),
            iat: 100,
            exp,
            oid: None,
            uni: None,
        }
    }

    fn shop() -> AppName {
        AppName::parse("shop").unwrap()
    }

    #[test]
    fn a_signed_token_verifies_and_every_tampering_is_caught() {
        let token = sign(&claims(1_000), "k1", b"secret");
        assert_eq!(parse(&token).unwrap().kid, "k1");
        assert_eq!(
            parse(&token)
                .unwrap()
                .verify(&shop(), Some(b"secret"), 999)
                .unwrap(),
            claims(1_000)
        );

        let check = |token: &str, app: &str, secret: &[u8], now: i64| {
            let app = AppName::parse(app).unwrap();
            parse(token)
                .and_then(|t| t.verify(&app, Some(secret), now))
                .unwrap_err()
        };
        assert_eq!(
            check(&token, "shop", b"secret", 1_000),
            TokenProblem::Expired
        );
        assert_eq!(check(&token, "blog", b"secret", 1), TokenProblem::OtherApp);
        assert_eq!(
            check(&token, "shop", b"other", 1),
            TokenProblem::BadSignature
        );

        // A forged payload (a longer expiry) keeps the old signature: refused.
        let parts: Vec<&str> = token.split('.').collect();
        let forged_claims = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims(9_999)).unwrap());
        let forged = format!("{}.{forged_claims}.{}", parts[0], parts[2]);
        assert_eq!(
            check(&forged, "shop", b"secret", 1),
            TokenProblem::BadSignature
        );

        // alg "none" and garbage are malformed.
        let none = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT","kid":"k1"}"#);
        let unsigned = format!("{none}.{}.", parts[1]);
        assert!(matches!(parse(&unsigned), Err(TokenProblem::Malformed)));
        for garbage in ["", "a.b", "a.b.c", "....", &token[1..]] {
            assert!(parse(garbage).is_err(), "{garbage}");
        }
    }
}
