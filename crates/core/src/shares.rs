//! Each app's share of something every app on the node draws on (the bytes of functions' file
//! reads in flight, `fetch`'s requests and name lookups, site files in answers, turns at
//! hashing passwords): a semaphore per app that holds some of it, forgotten when nobody holds,
//! waits for or keeps a handle on it, so that one app can take at most its share and never the
//! whole.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};

use cloudlet_store::AppName;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The shares of whoever draws (`K`: an app, say): `each` permits each.
pub struct Shares<K: Hash + Eq + Clone> {
    each: usize,
    apps: Mutex<HashMap<K, Arc<Semaphore>>>,
}

/// The apps' shares.
pub type AppShares = Shares<AppName>;

/// What one holder took of its app's share, given back when dropped.
pub struct Held<K: Hash + Eq + Clone = AppName> {
    shares: Arc<Shares<K>>,
    app: K,
    share: Arc<Semaphore>,
    permit: Option<OwnedSemaphorePermit>,
}

impl<K: Hash + Eq + Clone> Shares<K> {
    pub fn new(each: usize) -> Arc<Self> {
        Arc::new(Shares {
            each,
            apps: Mutex::new(HashMap::new()),
        })
    }

    /// Takes `n` of `app`'s share (at most the whole share), waiting until they are free.
    pub async fn take(self: &Arc<Self>, app: &K, n: usize) -> Held<K> {
        let share = self.share_of(app);
        let n = u32::try_from(n.min(self.each)).unwrap_or(u32::MAX);
        // Made before waiting, so that a wait given up forgets the app too.
        let mut held = Held {
            shares: Arc::clone(self),
            app: app.clone(),
            share: Arc::clone(&share),
            permit: None,
        };
        // Never closed, so acquiring only waits.
        held.permit = share.acquire_many_owned(n).await.ok();
        held
    }

    /// Takes `n` of `app`'s share (at most the whole share) if they are free now.
    pub fn try_take(self: &Arc<Self>, app: &K, n: usize) -> Option<Held<K>> {
        let share = self.share_of(app);
        let n = u32::try_from(n.min(self.each)).unwrap_or(u32::MAX);
        let permit = Arc::clone(&share).try_acquire_many_owned(n).ok();
        // Made either way, so that a refusal forgets the app too.
        let held = Held {
            shares: Arc::clone(self),
            app: app.clone(),
            share,
            permit,
        };
        held.permit.is_some().then_some(held)
    }

    fn share_of(&self, app: &K) -> Arc<Semaphore> {
        let mut apps = self.apps.lock().unwrap_or_else(PoisonError::into_inner);
        let each = self.each;
        Arc::clone(
            apps.entry(app.clone())
                .or_insert_with(|| Arc::new(Semaphore::new(each))),
        )
    }

    /// How many apps hold some now.
    #[cfg(test)]
    pub(crate) fn apps(&self) -> usize {
        self.apps
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl<K: Hash + Eq + Clone> Held<K> {
    /// The app's whole share, for work that takes from it on its own (a name lookup's thread,
    /// which may outlive this holder): the app is remembered while any handle lives.
    pub fn share(&self) -> Arc<Semaphore> {
        Arc::clone(&self.share)
    }
}

impl<K: Hash + Eq + Clone> Drop for Held<K> {
    fn drop(&mut self) {
        let mut apps = self
            .shares
            .apps
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        drop(self.permit.take());
        // Only the map and this holder have it, with every permit back: nobody else holds,
        // waits for or keeps a handle on this app's share.
        let unused = apps.get(&self.app).is_some_and(|share| {
            Arc::strong_count(share) == 2 && share.available_permits() == self.shares.each
        });
        if unused {
            apps.remove(&self.app);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_app_waits_for_its_own_share_and_others_do_not_wait_for_it() {
        let shares = AppShares::new(10);
        let (shop, blog) = (
            AppName::parse("shop").expect("a name"),
            AppName::parse("blog").expect("a name"),
        );
        let first = shares.take(&shop, 8).await;
        // Another app takes its whole share at once.
        let other = shares.take(&blog, 10).await;
        // The first app's next 8 wait until its first 8 are back.
        let waiting = shares.take(&shop, 8);
        tokio::pin!(waiting);
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(50), &mut waiting)
                .await
                .is_err()
        );
        drop(first);
        let second = waiting.await;
        // More than a share takes the whole share.
        drop(second);
        let all = shares.take(&shop, 1_000).await;
        drop((all, other));
        assert_eq!(shares.apps(), 0, "forgotten once nobody holds any");
        // A wait given up leaves nothing behind either, even when what it waited for was
        // given back first.
        let first = shares.take(&shop, 8).await;
        let mut waiting = Box::pin(shares.take(&shop, 8));
        let wait = std::time::Duration::from_millis(20);
        assert!(tokio::time::timeout(wait, &mut waiting).await.is_err());
        drop(first);
        drop(waiting);
        assert_eq!(shares.apps(), 0, "forgotten with the wait");
    }

    #[tokio::test]
    async fn a_handle_on_the_share_keeps_the_app_remembered_past_its_holder() {
        let shares = AppShares::new(2);
        let shop = AppName::parse("shop").expect("a name");
        let held = shares.take(&shop, 0).await;
        let share = held.share();
        // A lookup's thread takes from the share on its own, past its fetch.
        let lookup = Arc::clone(&share).try_acquire_owned().expect("a permit");
        drop(held);
        assert_eq!(shares.apps(), 1, "a share in use is not forgotten");
        // A new holder meets the same share, one permit short: forgetting it would have given
        // the app a whole new share while its lookup runs on.
        let again = shares.take(&shop, 0).await;
        assert_eq!(again.share().available_permits(), 1);
        drop((lookup, share));
        drop(again);
        assert_eq!(shares.apps(), 0, "forgotten once the last handle is gone");
    }

    #[tokio::test]
    async fn taking_without_waiting_gets_what_is_free_or_nothing() {
        let shares = AppShares::new(10);
        let (shop, blog) = (
            AppName::parse("shop").expect("a name"),
            AppName::parse("blog").expect("a name"),
        );
        let first = shares.try_take(&shop, 8).expect("free");
        assert!(
            shares.try_take(&shop, 8).is_none(),
            "the shop's share is spent"
        );
        let other = shares
            .try_take(&blog, 8)
            .expect("another app's share is its own");
        drop(first);
        let again = shares.try_take(&shop, 8).expect("free again");
        drop((again, other));
        assert!(shares.try_take(&shop, 100).is_some_and(drop_it));
        assert_eq!(
            shares.apps(),
            0,
            "a refusal and its holders leave nothing behind"
        );
        let held = shares.try_take(&shop, 10).expect("free");
        assert!(shares.try_take(&shop, 1).is_none());
        drop(held);
        assert_eq!(shares.apps(), 0);
    }

    fn drop_it(held: Held) -> bool {
        drop(held);
        true
    }
}
