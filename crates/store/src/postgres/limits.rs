//! [`RateStore`] on PostgreSQL: the control plane's `rate_buckets`, one row per key holding the
//! time its bucket is next full (GCRA). Taking is one upsert whose update only happens while the
//! bucket has room, so that concurrent takes on several nodes each see the others' writes. Keys
//! (addresses, accounts) are stored as their SHA-256, never in the clear.

use sha2::{Digest, Sha256};

use async_trait::async_trait;

use super::{Postgres, SYSTEM_SCHEMA, execute, row, rows};
use crate::StoreError;
use crate::limits::{Rate, RateStore};

/// The control plane's step that adds the buckets.
pub(super) const MIGRATION: &str = "
    CREATE TABLE {s}.rate_buckets (
        key  text COLLATE \"C\" PRIMARY KEY,
        tat  bigint NOT NULL
    );
";

/// The stored name of a bucket.
fn stored(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[async_trait]
impl RateStore for Postgres {
    async fn take(&self, key: &str, rate: Rate, now_us: i64) -> Result<Option<i64>, StoreError> {
        let key = stored(key);
        let client = self.client().await?;
        let (interval, window) = (rate.interval_us(), rate.window_us());
        // A new bucket (or one full again) starts at now; each request moves its time on by
        // one interval, and is refused when that would run more than a full bucket ahead.
        let sql = format!(
            "INSERT INTO {SYSTEM_SCHEMA}.rate_buckets AS b (key, tat)
             VALUES ($1, $2::bigint + $3::bigint)
             ON CONFLICT (key) DO UPDATE SET tat = GREATEST(b.tat, $2::bigint) + $3::bigint
             WHERE GREATEST(b.tat, $2::bigint) + $3::bigint - $2::bigint <= $4::bigint
             RETURNING tat"
        );
        let taken = rows(&client, &sql, &[&key, &now_us, &interval, &window]).await?;
        if !taken.is_empty() {
            return Ok(None);
        }
        let sql = format!("SELECT tat FROM {SYSTEM_SCHEMA}.rate_buckets WHERE key = $1");
        let tat: i64 = match row(&client, &sql, &[&key]).await? {
            Some(r) => r.try_get(0)?,
            None => now_us,
        };
        Ok(Some((tat + interval - window - now_us).max(1)))
    }

    async fn give_back(&self, key: &str, rate: Rate) -> Result<(), StoreError> {
        let key = stored(key);
        let client = self.client().await?;
        let sql = format!(
            "UPDATE {SYSTEM_SCHEMA}.rate_buckets SET tat = tat - $2::bigint WHERE key = $1"
        );
        execute(&client, &sql, &[&key, &rate.interval_us()]).await?;
        Ok(())
    }

    async fn sweep_buckets(&self, now_us: i64) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let sql = format!("DELETE FROM {SYSTEM_SCHEMA}.rate_buckets WHERE tat <= $1");
        execute(&client, &sql, &[&now_us]).await
    }
}
