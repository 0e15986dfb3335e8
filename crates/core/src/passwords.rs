//! Password hashes (argon2id): making one, checking one, and how many are worked out at once.
//!
//! Each costs 19 MiB of memory and tens of milliseconds of a processor (argon2's defaults). A
//! flood of logins or sign-ups, each with another email from another address so that no rate
//! limit holds it, would otherwise take every blocking thread (512) and gigabytes of memory. So
//! at most two per processor run at once; the rest wait their turn for up to [`WAIT`], then
//! are refused as [`PasswordWorkError::Busy`].

use std::sync::{LazyLock, OnceLock};
use std::time::Duration;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use tokio::sync::Semaphore;

/// How long a hash waits for its turn before it is refused.
const WAIT: Duration = Duration::from_secs(2);

/// The turns: two per processor, so that one processor's turns are never all waiting on
/// memory, and no more.
static TURNS: LazyLock<Semaphore> = LazyLock::new(|| {
    let processors = std::thread::available_parallelism().map_or(1, usize::from);
    Semaphore::new(processors * 2)
});

#[derive(Debug, thiserror::Error)]
pub enum PasswordWorkError {
    #[error("too many passwords are being checked at once; try again")]
    Busy,
    #[error("password hashing failed: {0}")]
    Failed(String),
}

/// The argon2id hash of `password` under `salt`.
pub async fn hash(password: String, salt: [u8; 16]) -> Result<String, PasswordWorkError> {
    let salt =
        SaltString::encode_b64(&salt).map_err(|e| PasswordWorkError::Failed(e.to_string()))?;
    in_turn(move || {
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| PasswordWorkError::Failed(e.to_string()))
    })
    .await?
}

/// Whether `password` matches `hash`. Without a hash (an unknown email) a hash made for no one
/// is checked, so that the answer takes as long and timing does not tell who has an account.
pub async fn matches(password: String, hash: Option<String>) -> Result<bool, PasswordWorkError> {
    in_turn(move || {
        let checked = hash.as_deref().unwrap_or_else(|| dummy_hash());
        let matched = PasswordHash::new(checked).is_ok_and(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        });
        matched && hash.is_some()
    })
    .await
}

/// Makes the hash for no one now, so that the first check of an unknown email takes no longer
/// than later ones.
pub fn warm() {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn_blocking(dummy_hash);
    }
}

/// Runs `work` on the blocking pool once a turn is free.
async fn in_turn<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, PasswordWorkError> {
    in_turn_of(&TURNS, WAIT, work).await
}

async fn in_turn_of<T: Send + 'static>(
    turns: &Semaphore,
    wait: Duration,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, PasswordWorkError> {
    let turn = tokio::time::timeout(wait, turns.acquire())
        .await
        .map_err(|_| PasswordWorkError::Busy)?
        .map_err(|_| PasswordWorkError::Busy)?;
    let done = tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| PasswordWorkError::Failed(e.to_string()));
    drop(turn);
    done
}

/// An argon2id hash of a password no one has. Made once.
fn dummy_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| {
        let salt =
            SaltString::encode_b64(b"cloudlet-dummy-salt").unwrap_or_else(|_| unreachable!());
        Argon2::default()
            .hash_password(b"not a password anyone has", &salt)
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_matches_its_password_only_and_no_hash_matches_nothing() {
        let made = hash("correct horse".into(), [7; 16]).await.expect("hashed");
        assert!(made.starts_with("$argon2id$"));
        assert!(
            matches("correct horse".into(), Some(made.clone()))
                .await
                .expect("checked")
        );
        assert!(
            !matches("wrong horse".into(), Some(made))
                .await
                .expect("checked")
        );
        // Without a hash nothing matches, not even the password of the hash checked instead.
        assert!(
            !matches("not a password anyone has".into(), None)
                .await
                .expect("checked")
        );
        assert!(
            !matches("x".into(), Some("not a hash".into()))
                .await
                .expect("checked")
        );
    }

    #[tokio::test]
    async fn work_waits_for_a_turn_and_is_refused_as_busy_when_none_comes() {
        let turns = Semaphore::new(1);
        let held = turns.acquire().await.expect("a turn");
        let refused = in_turn_of(&turns, Duration::from_millis(20), || 1).await;
        assert!(
            matches!(refused, Err(PasswordWorkError::Busy)),
            "{refused:?}"
        );
        // A turn given back within the wait is taken.
        let waiting = in_turn_of(&turns, Duration::from_secs(30), || 2);
        let (done, ()) = tokio::join!(waiting, async move { drop(held) });
        assert_eq!(done.expect("ran"), 2);
        assert_eq!(turns.available_permits(), 1, "the turn is given back");
    }
}
