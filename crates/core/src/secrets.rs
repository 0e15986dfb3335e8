//! Bearer secrets (the admin token, app secret keys): made from 32 random bytes, shown once,
//! stored only as a SHA-256 hash and compared in constant time.
//!
//! SHA-256 without a salt is enough here because the secrets are random and long: there is no
//! dictionary to try. (User passwords are another matter and use argon2id.)

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::random::Random;

/// How many leading characters of a secret are kept to tell secrets apart.
const HINT_LEN: usize = 8;

/// A freshly made secret, the only time its plain text exists on the server.
pub struct NewSecret {
    pub plain: String,
    pub hash: SecretHash,
    /// The first characters, safe to show again later (`cls_AbCd`).
    pub hint: String,
}

impl NewSecret {
    /// `prefix` names the kind of secret (`cla_` admin, `cls_` app secret key) so that people and
    /// secret scanners can recognise it.
    pub fn generate(prefix: &str, random: &dyn Random) -> Self {
        let mut bytes = [0u8; 32];
        random.fill(&mut bytes);
        let plain = format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes));
        NewSecret {
            hash: SecretHash::of(&plain),
            hint: plain.chars().take(HINT_LEN).collect(),
            plain,
        }
    }
}

/// The SHA-256 of a secret.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretHash([u8; 32]);

impl std::fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretHash(..)")
    }
}

impl SecretHash {
    pub fn of(secret: &str) -> Self {
        SecretHash(Sha256::digest(secret.as_bytes()).into())
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(SecretHash)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Constant-time equality.
    pub fn matches(&self, other: &SecretHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::SeededRandom;

    #[test]
    fn secrets_are_prefixed_distinct_and_hashed() {
        let random = SeededRandom::new(1);
        let a = NewSecret::generate("cls_", &random);
        let b = NewSecret::generate("cls_", &random);
        assert!(a.plain.starts_with("cls_"));
        assert_eq!(a.plain.len(), 4 + 43);
        assert_eq!(a.hint, a.plain[..8]);
        assert_ne!(a.plain, b.plain);
        assert!(a.hash.matches(&SecretHash::of(&a.plain)));
        assert!(!a.hash.matches(&b.hash));
        assert!(SecretHash::from_bytes(&[0; 31]).is_none());
    }
}
