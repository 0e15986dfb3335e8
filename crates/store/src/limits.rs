//! Rate limits kept in the database, so that several nodes count one budget ([`RateStore`]):
//! a token bucket written as its "theoretical arrival time" (GCRA), one timestamp per key, so
//! that taking from it is one conditional upsert, with no read before the write for another
//! node's write to slip between.

use async_trait::async_trait;

use crate::StoreError;

/// A bucket's refill: `per_minute` requests a minute, and at most `per_minute` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_minute: u32,
}

impl Rate {
    /// The time one request adds, in microseconds.
    pub fn interval_us(self) -> i64 {
        60_000_000 / i64::from(self.per_minute.max(1))
    }

    /// How far ahead of now a bucket's time may run: a full bucket's worth.
    pub fn window_us(self) -> i64 {
        self.interval_us() * i64::from(self.per_minute.max(1))
    }
}

/// Token buckets shared by every node of a database.
#[async_trait]
pub trait RateStore: Send + Sync {
    /// Takes one request from `key`'s bucket at `now_us`: `None` when taken, or how long until
    /// one would be, in microseconds, when it is empty.
    async fn take(&self, key: &str, rate: Rate, now_us: i64) -> Result<Option<i64>, StoreError>;
    /// Puts back one request taken from `key`'s bucket.
    async fn give_back(&self, key: &str, rate: Rate) -> Result<(), StoreError>;
    /// Deletes the buckets that are full again at `now_us`; returns how many.
    async fn sweep_buckets(&self, now_us: i64) -> Result<u64, StoreError>;
}
