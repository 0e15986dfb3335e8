//! Password hashes (argon2id): making one, checking one, and how many are worked out at once.
//!
//! Each costs 19 MiB of memory and tens of milliseconds of a processor (argon2's defaults). A
//! flood of logins or sign-ups, each with another email from another address so that no rate
//! limit holds it, would otherwise take every blocking thread (512) and gigabytes of memory. So
//! a node works out at most four per processor at once, and one app (or the console) at most
//! one per processor of them, so that a flood against one app leaves the others their turns;
//! the rest wait for up to [`WAIT`], then are refused as [`PasswordWorkError::Busy`]. A turn is
//! held by the work itself, until it ends: a caller that goes away does not give it back early.

use std::sync::{Arc, LazyLock, OnceLock};
use std::time::Duration;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::shares::{Held, Shares};

/// How long a hash waits for its turn before it is refused.
const WAIT: Duration = Duration::from_secs(2);

/// Whose turns the console's logins take: no app's name (names have no `/`).
pub const CONSOLE: &str = "/console";

/// The node's turns.
static TURNS: LazyLock<Arc<Turns>> = LazyLock::new(|| {
    let processors = std::thread::available_parallelism().map_or(1, usize::from);
    Turns::new(processors * 4, processors)
});

/// Turns at once: `all` of them, and one app's share of them.
struct Turns {
    all: Arc<Semaphore>,
    apps: Arc<Shares<String>>,
}

/// An app's place among the turns: the node's (given back first) and its share's.
struct Turn {
    node: Option<OwnedSemaphorePermit>,
    _share: Held<String>,
}

impl Turns {
    fn new(all: usize, each: usize) -> Arc<Self> {
        Arc::new(Turns {
            all: Arc::new(Semaphore::new(all)),
            apps: Shares::new(each.clamp(1, all)),
        })
    }

    /// A turn of `whose`, once its share and the node have one free.
    async fn take(self: &Arc<Self>, whose: &str) -> Turn {
        let share = self.apps.take(&whose.to_owned(), 1).await;
        // Never closed, so acquiring only waits.
        let node = Arc::clone(&self.all).acquire_owned().await.ok();
        Turn {
            node,
            _share: share,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PasswordWorkError {
    #[error("too many passwords are being checked at once; try again")]
    Busy,
    #[error("password hashing failed: {0}")]
    Failed(String),
}

/// The argon2id hash of `password` under `salt`, in a turn of `whose` (an app, or
/// [`CONSOLE`]).
pub async fn hash(
    password: String,
    salt: [u8; 16],
    whose: &str,
) -> Result<String, PasswordWorkError> {
    let salt =
        SaltString::encode_b64(&salt).map_err(|e| PasswordWorkError::Failed(e.to_string()))?;
    in_turn(whose, move || {
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| PasswordWorkError::Failed(e.to_string()))
    })
    .await?
}

/// Whether `password` matches `hash`, in a turn of `whose`. Without a hash (an unknown email) a
/// hash made for no one is checked, so that the answer takes as long and timing does not tell
/// who has an account.
pub async fn matches(
    password: String,
    hash: Option<String>,
    whose: &str,
) -> Result<bool, PasswordWorkError> {
    in_turn(whose, move || {
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

/// Runs `work` on the blocking pool once a turn of `whose` is free.
async fn in_turn<T: Send + 'static>(
    whose: &str,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, PasswordWorkError> {
    in_turn_of(&TURNS, whose, WAIT, work).await
}

async fn in_turn_of<T: Send + 'static>(
    turns: &Arc<Turns>,
    whose: &str,
    wait: Duration,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, PasswordWorkError> {
    let turn = tokio::time::timeout(wait, turns.take(whose))
        .await
        .map_err(|_| PasswordWorkError::Busy)?;
    if turn.node.is_none() {
        return Err(PasswordWorkError::Busy);
    }
    // The work holds its turn: dropped with it, however the caller fares meanwhile.
    tokio::task::spawn_blocking(move || {
        let _turn = turn;
        work()
    })
    .await
    .map_err(|e| PasswordWorkError::Failed(e.to_string()))
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
    use std::sync::Mutex;

    use super::*;

    #[tokio::test]
    async fn a_hash_matches_its_password_only_and_no_hash_matches_nothing() {
        let made = hash("correct horse".into(), [7; 16], "shop")
            .await
            .expect("hashed");
        assert!(made.starts_with("$argon2id$"));
        let check = |password: &str, hash: Option<String>| matches(password.into(), hash, "shop");
        assert!(
            check("correct horse", Some(made.clone()))
                .await
                .expect("checked")
        );
        assert!(!check("wrong horse", Some(made)).await.expect("checked"));
        // Without a hash nothing matches, not even the password of the hash checked instead.
        assert!(
            !check("not a password anyone has", None)
                .await
                .expect("checked")
        );
        assert!(
            !check("x", Some("not a hash".into()))
                .await
                .expect("checked")
        );
    }

    #[tokio::test]
    async fn an_app_waits_for_its_share_others_get_theirs_and_busy_past_the_wait() {
        let turns = Turns::new(3, 2);
        let (started, mut running) = tokio::sync::mpsc::unbounded_channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let released = Arc::new(Mutex::new(released));
        // Two long works of one app take its share.
        let mut long = Vec::new();
        for _ in 0..2 {
            let (started, released) = (started.clone(), Arc::clone(&released));
            let turns = Arc::clone(&turns);
            long.push(tokio::spawn(async move {
                in_turn_of(&turns, "flood", Duration::from_secs(30), move || {
                    started.send(()).expect("the test listens");
                    let _ = released.lock().expect("a lock").recv();
                })
                .await
            }));
        }
        running.recv().await.expect("one runs");
        running.recv().await.expect("two run");
        // The app's third waits past its wait and is refused; another app gets its turn.
        let refused = in_turn_of(&turns, "flood", Duration::from_millis(50), || 0).await;
        assert!(
            matches!(refused, Err(PasswordWorkError::Busy)),
            "{refused:?}"
        );
        let other = in_turn_of(&turns, "calm", Duration::from_millis(500), || 1).await;
        assert_eq!(other.expect("ran"), 1);
        // A caller that goes away does not give its turn back while its work runs.
        long.remove(0).abort();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            turns.all.available_permits(),
            1,
            "both long works hold theirs"
        );
        release.send(()).expect("one listens");
        release.send(()).expect("the other listens");
        for work in long {
            work.await.expect("joined").expect("ran");
        }
        for _ in 0..100 {
            if turns.all.available_permits() == 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(turns.all.available_permits(), 3, "every turn is back");
        assert_eq!(turns.apps.apps(), 0, "no app is remembered");
    }
}
