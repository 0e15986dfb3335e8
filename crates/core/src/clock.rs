//! The one door for wall-clock time. Everything that needs "now" takes a [`Clock`], so tests can
//! freeze or move time; `clippy.toml` forbids reading the system clock anywhere else.

use std::sync::atomic::{AtomicI64, Ordering};

use serde::{Serialize, Serializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A point in time, in Unix milliseconds; serialized as RFC 3339 UTC (`2026-11-21T20:15:45.123Z`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    pub const fn from_unix_ms(ms: i64) -> Self {
        Timestamp(ms)
    }

    pub const fn unix_ms(self) -> i64 {
        self.0
    }

    pub fn to_rfc3339(self) -> String {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000_000)
            .ok()
            .and_then(|t| t.format(&Rfc3339).ok())
            .unwrap_or_else(|| self.0.to_string())
    }
}

/// Unix microseconds as RFC 3339 UTC, always with six digits of fraction
/// (`2026-11-21T20:15:45.123400Z`), so that such times sort as text.
pub fn micros_to_rfc3339(us: i64) -> String {
    match OffsetDateTime::from_unix_timestamp(us.div_euclid(1_000_000)) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            us.rem_euclid(1_000_000)
        ),
        Err(_) => us.to_string(),
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_rfc3339())
    }
}

/// An RFC 3339 date and time, as [`Timestamp`] serializes.
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Timestamp {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Timestamp {}

pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // The one place that reads the system clock.
    fn now(&self) -> Timestamp {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp(since_epoch.as_millis() as i64)
    }
}

/// A clock that stands still until told to move; for tests.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn at(time: Timestamp) -> Self {
        ManualClock(AtomicI64::new(time.0))
    }

    pub fn advance_ms(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_serialize_as_rfc3339_utc() {
        let t = Timestamp::from_unix_ms(1_700_000_000_123);
        assert_eq!(t.to_rfc3339(), "2023-11-14T22:13:20.123Z");
        let clock = ManualClock::at(t);
        clock.advance_ms(877);
        assert_eq!(clock.now().to_rfc3339(), "2023-11-14T22:13:21Z");
    }

    #[test]
    fn microseconds_always_have_six_digits_of_fraction() {
        assert_eq!(
            micros_to_rfc3339(1_700_000_000_123_400),
            "2023-11-14T22:13:20.123400Z"
        );
        assert_eq!(
            micros_to_rfc3339(1_700_000_001_000_000),
            "2023-11-14T22:13:21.000000Z"
        );
        assert_eq!(micros_to_rfc3339(-1), "1969-12-31T23:59:59.999999Z");
    }
}
