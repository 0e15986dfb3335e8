//! SHA256withRSA (PKCS#1 v1.5), as Alipay (RSA2) and WeChat Pay (API v3) sign: keys from the
//! forms the platforms' consoles hand out, signatures in base64.
//!
//! The `rsa` crate only parses the keys' many text forms; signing and verifying are `ring`'s
//! (constant-time private-key operations, unlike `rsa`'s, RUSTSEC-2023-0071, and about eight
//! times faster to verify, which is most of the cost of a payment callback). Keys shorter than
//! 2048 bits are refused, as both platforms issue 2048-bit keys.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::rand::SystemRandom;
use ring::signature::RsaPublicKeyComponents;
use ring::signature::{RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256, RsaKeyPair};
use rsa::pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey, EncodeRsaPrivateKey};
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey};
use rsa::traits::PublicKeyParts;
use rsa::{RsaPrivateKey, RsaPublicKey};

use crate::PlatformError;

/// A private key that signs (shared: a key pair is not cheap to rebuild).
#[derive(Clone)]
pub struct PrivateKey(Arc<RsaKeyPair>);

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PrivateKey(..)")
    }
}

impl TryFrom<&RsaPrivateKey> for PrivateKey {
    type Error = PlatformError;

    fn try_from(key: &RsaPrivateKey) -> Result<Self, PlatformError> {
        let der = key
            .to_pkcs1_der()
            .map_err(|_| PlatformError::Crypto("an RSA private key that does not encode"))?;
        RsaKeyPair::from_der(der.as_bytes())
            .map(|pair| PrivateKey(Arc::new(pair)))
            .map_err(|_| {
                PlatformError::Crypto("an RSA private key that is invalid or under 2048 bits")
            })
    }
}

/// A public key that verifies: its modulus and exponent, big-endian.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    n: Vec<u8>,
    e: Vec<u8>,
}

impl From<&RsaPublicKey> for PublicKey {
    fn from(key: &RsaPublicKey) -> Self {
        PublicKey {
            n: key.n().to_bytes_be(),
            e: key.e().to_bytes_be(),
        }
    }
}

/// An RSA private key from PEM (PKCS#8 or PKCS#1) or bare base64 DER, as Alipay's console
/// hands them out.
pub fn private_key(text: &str) -> Result<PrivateKey, PlatformError> {
    let text = text.trim();
    let parsed = if text.contains("-----BEGIN") {
        RsaPrivateKey::from_pkcs8_pem(text)
            .ok()
            .or_else(|| RsaPrivateKey::from_pkcs1_pem(text).ok())
    } else {
        let der = STANDARD.decode(strip_whitespace(text)).ok();
        der.and_then(|der| {
            RsaPrivateKey::from_pkcs8_der(&der)
                .ok()
                .or_else(|| RsaPrivateKey::from_pkcs1_der(&der).ok())
        })
    };
    let parsed = parsed.ok_or(PlatformError::Crypto(
        "not an RSA private key (PKCS#8 or PKCS#1, PEM or base64)",
    ))?;
    PrivateKey::try_from(&parsed)
}

/// An RSA public key from PEM (SPKI or PKCS#1) or bare base64 DER.
pub fn public_key(text: &str) -> Result<PublicKey, PlatformError> {
    let text = text.trim();
    let parsed = if text.contains("-----BEGIN") {
        RsaPublicKey::from_public_key_pem(text)
            .ok()
            .or_else(|| RsaPublicKey::from_pkcs1_pem(text).ok())
    } else {
        let der = STANDARD.decode(strip_whitespace(text)).ok();
        der.and_then(|der| {
            RsaPublicKey::from_public_key_der(&der)
                .ok()
                .or_else(|| RsaPublicKey::from_pkcs1_der(&der).ok())
        })
    };
    let key = parsed.ok_or(PlatformError::Crypto(
        "not an RSA public key (SPKI or PKCS#1, PEM or base64)",
    ))?;
    // Verifying refuses shorter keys: refused here, where configuring one can say so.
    if key.size() < 256 {
        return Err(PlatformError::Crypto("an RSA public key under 2048 bits"));
    }
    Ok(PublicKey::from(&key))
}

fn strip_whitespace(text: &str) -> String {
    text.chars().filter(|c| !c.is_whitespace()).collect()
}

/// Base64 of the SHA256withRSA (PKCS#1 v1.5) signature of `content`.
pub fn sign(key: &PrivateKey, content: &str) -> String {
    let mut signature = vec![0; key.0.public().modulus_len()];
    // PKCS#1 v1.5 padding is deterministic; `ring` only uses the generator for blinding, and
    // fails only when the operating system's generator does, which nothing here survives.
    match key.0.sign(
        &RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        content.as_bytes(),
        &mut signature,
    ) {
        Ok(()) => STANDARD.encode(signature),
        Err(_) => String::new(),
    }
}

/// Checks a base64 SHA256withRSA signature of `content`.
pub fn verify(key: &PublicKey, content: &str, signature: &str) -> bool {
    verify_bytes(key, content.as_bytes(), signature)
}

/// Checks a base64 SHA256withRSA signature of `content`, bytes as they came.
pub fn verify_bytes(key: &PublicKey, content: &[u8], signature: &str) -> bool {
    let Ok(signature) = STANDARD.decode(signature) else {
        return false;
    };
    RsaPublicKeyComponents {
        n: &key.n,
        e: &key.e,
    }
    .verify(&RSA_PKCS1_2048_8192_SHA256, content, &signature)
    .is_ok()
}

#[cfg(test)]
mod tests {
    use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};

    use super::*;

    #[test]
    fn keys_under_2048_bits_are_refused_and_2048_bit_ones_sign_and_verify() {
        let mut rng = rsa::rand_core::OsRng;
        let short = RsaPrivateKey::new(&mut rng, 1024).unwrap();
        let short_public = short
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        assert!(public_key(&short_public).is_err());
        assert!(private_key(&short.to_pkcs8_pem(LineEnding::LF).unwrap()).is_err());

        let key = RsaPrivateKey::new(&mut rng, 2048).unwrap();
        let signer = private_key(&key.to_pkcs8_pem(LineEnding::LF).unwrap()).unwrap();
        let verifier = public_key(
            &key.to_public_key()
                .to_public_key_pem(LineEnding::LF)
                .unwrap(),
        )
        .unwrap();
        let signature = sign(&signer, "a=1&b=2");
        assert!(verify(&verifier, "a=1&b=2", &signature));
        assert!(!verify(&verifier, "a=1&b=3", &signature));
        assert!(!verify(&verifier, "a=1&b=2", "not base64!"));
        assert!(!verify(&verifier, "a=1&b=2", &signature[4..]));
    }
}
