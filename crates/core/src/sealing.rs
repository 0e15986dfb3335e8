//! Sealing secrets at rest: AES-256-GCM under the instance's master key, with a fresh random
//! nonce per seal and the secret's place (app, provider, …) as associated data, so that a sealed
//! value copied into another row does not open.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};

use cloudlet_store::{StoreError, SystemStore};

use crate::random::Random;

/// Where the master-key check is sealed.
const KEY_CHECK: &str = "master-key-check";

/// Why the master key can not be used with this database.
#[derive(Debug, thiserror::Error)]
pub enum KeyCheckError {
    #[error(
        "this database's secrets were sealed under another master key: give every node the \
         same key (CLOUDLET_MASTER_KEY or master_key_file)"
    )]
    Mismatch,
    #[error(transparent)]
    Store(#[from] StoreError),
}

const NONCE_LEN: usize = 12;

#[derive(Debug, thiserror::Error)]
#[error("a sealed secret did not open: wrong master key, or the value was moved or damaged")]
pub struct Unsealable;

/// Seals and opens secrets. Cheap to clone.
#[derive(Clone)]
pub struct Sealer {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

/// A key of its own for one use (`label`) of the master key: the master key is 32 uniformly
/// random bytes, so a hash of it with a label is unrelated to any other derived from it.
pub fn derive_key(master_key: &[u8; 32], label: &str) -> [u8; 32] {
    use sha2::Digest;
    let mut hash = sha2::Sha256::new();
    hash.update(label.as_bytes());
    hash.update([0]);
    hash.update(master_key);
    hash.finalize().into()
}

impl Sealer {
    pub fn new(master_key: &[u8; 32]) -> Self {
        Sealer {
            cipher: Aes256Gcm::new(master_key.into()),
        }
    }

    /// `nonce || ciphertext+tag`.
    pub fn seal(&self, secret: &[u8], place: &str, random: &dyn Random) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        random.fill(&mut nonce);
        let payload = Payload {
            msg: secret,
            aad: place.as_bytes(),
        };
        // Encryption fails only for inputs over 64 GiB.
        let sealed = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), payload)
            .unwrap_or_default();
        [nonce.as_slice(), &sealed].concat()
    }

    /// Refuses a master key other than the one this database's secrets are sealed under,
    /// before anything is written with it: the first start seals a check value, and every
    /// later start (of any node on the same database) must open it.
    pub async fn check_key(
        &self,
        system: &dyn SystemStore,
        random: &dyn Random,
    ) -> Result<(), KeyCheckError> {
        let proposed = self.seal(KEY_CHECK.as_bytes(), KEY_CHECK, random);
        let stored = system.settle_setting(KEY_CHECK, proposed).await?;
        match self.open(&stored, KEY_CHECK) {
            Ok(plain) if plain == KEY_CHECK.as_bytes() => Ok(()),
            _ => Err(KeyCheckError::Mismatch),
        }
    }

    pub fn open(&self, sealed: &[u8], place: &str) -> Result<Vec<u8>, Unsealable> {
        if sealed.len() < NONCE_LEN {
            return Err(Unsealable);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        self.cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: place.as_bytes(),
                },
            )
            .map_err(|_| Unsealable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::SeededRandom;

    #[test]
    fn sealed_secrets_open_only_in_their_place_and_under_their_key() {
        let random = SeededRandom::new(3);
        let sealer = Sealer::new(&[1; 32]);
        let sealed = sealer.seal(b"wx-secret", "app/wechat", &random);
        assert!(!sealed.windows(9).any(|w| w == b"wx-secret"));
        assert_eq!(sealer.open(&sealed, "app/wechat").unwrap(), b"wx-secret");
        assert!(sealer.open(&sealed, "other/wechat").is_err());
        assert!(Sealer::new(&[2; 32]).open(&sealed, "app/wechat").is_err());
        let mut damaged = sealed.clone();
        damaged[20] ^= 1;
        assert!(sealer.open(&damaged, "app/wechat").is_err());
        assert!(sealer.open(b"short", "app/wechat").is_err());
        assert_ne!(
            sealer.seal(b"wx-secret", "app/wechat", &random),
            sealed,
            "fresh nonces"
        );
    }
}
