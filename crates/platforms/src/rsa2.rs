//! SHA256withRSA (PKCS#1 v1.5), as Alipay (RSA2) and WeChat Pay (API v3) sign: keys from the
//! forms the platforms' consoles hand out, signatures in base64.
//!
//! Private-key operations use the `rsa` crate, whose implementation is not constant-time
//! (RUSTSEC-2023-0071); here they only sign this server's own requests to the platforms.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rsa::pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey};
use rsa::pkcs1v15::{Signature, SigningKey, VerifyingKey};
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey};
use rsa::signature::{SignatureEncoding, Signer, Verifier};
use rsa::{RsaPrivateKey, RsaPublicKey};
use sha2::Sha256;

use crate::PlatformError;

/// An RSA private key from PEM (PKCS#8 or PKCS#1) or bare base64 DER, as Alipay's console
/// hands them out.
pub fn private_key(text: &str) -> Result<RsaPrivateKey, PlatformError> {
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
    parsed.ok_or(PlatformError::Crypto(
        "not an RSA private key (PKCS#8 or PKCS#1, PEM or base64)",
    ))
}

/// An RSA public key from PEM (SPKI or PKCS#1) or bare base64 DER.
pub fn public_key(text: &str) -> Result<RsaPublicKey, PlatformError> {
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
    parsed.ok_or(PlatformError::Crypto(
        "not an RSA public key (SPKI or PKCS#1, PEM or base64)",
    ))
}

fn strip_whitespace(text: &str) -> String {
    text.chars().filter(|c| !c.is_whitespace()).collect()
}

/// Base64 of the SHA256withRSA (PKCS#1 v1.5) signature of `content`.
pub fn sign(key: &RsaPrivateKey, content: &str) -> String {
    let signature = SigningKey::<Sha256>::new(key.clone()).sign(content.as_bytes());
    STANDARD.encode(signature.to_bytes())
}

/// Checks a base64 SHA256withRSA signature of `content`.
pub fn verify(key: &RsaPublicKey, content: &str, signature: &str) -> bool {
    verify_bytes(key, content.as_bytes(), signature)
}

/// Checks a base64 SHA256withRSA signature of `content`, bytes as they came.
pub fn verify_bytes(key: &RsaPublicKey, content: &[u8], signature: &str) -> bool {
    let Ok(bytes) = STANDARD.decode(signature) else {
        return false;
    };
    let Ok(signature) = Signature::try_from(bytes.as_slice()) else {
        return false;
    };
    VerifyingKey::<Sha256>::new(key.clone())
        .verify(content, &signature)
        .is_ok()
}
