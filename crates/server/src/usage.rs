//! Each app's recent traffic, for the console's overview: requests, server errors, client
//! errors, function invocations and latency, per minute over the last hour and per hour over
//! the last day. `/metrics` has no app labels on purpose (a series per app would grow without
//! bound in Prometheus); this keeps a small, fixed amount per app instead, in this node's memory.
//!
//! Bounded: at most [`MAX_APPS`] apps are tracked (when full, the least recently active tenth
//! makes room), each in 84 buckets of 72 bytes, about 6 KiB. Requests answered `404` are not
//! counted, and other errors (which anybody gets for any name) only for an app already tracked:
//! an app's entry starts with a request that succeeded, so names of apps that do not exist
//! cannot fill the table. A restart forgets the series; with several nodes, each shows its own traffic.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cloudlet_core::apps::AppName;
use cloudlet_core::clock::{Clock, Timestamp};
use serde::Serialize;

/// Apps tracked at most.
pub const MAX_APPS: usize = 2_000;
/// Upper bounds of the latency buckets, in milliseconds; the last bucket is everything above.
const LATENCY_MS: [u32; 11] = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000];

#[derive(Clone, Copy, Default)]
struct Bucket {
    /// The minute (or hour) since the epoch this bucket counts; another value means empty.
    at: i64,
    requests: u32,
    errors: u32,
    client_errors: u32,
    invocations: u32,
    latency: [u32; LATENCY_MS.len() + 1],
}

impl Bucket {
    /// The bucket for period `at`, emptied if it held an older period.
    fn at(&mut self, at: i64) -> &mut Bucket {
        if self.at != at {
            *self = Bucket {
                at,
                ..Bucket::default()
            };
        }
        self
    }

    /// The 99th percentile's bucket bound, in milliseconds (`None` without requests).
    fn p99_ms(&self) -> Option<u32> {
        let total: u64 = self.latency.iter().map(|&c| u64::from(c)).sum();
        if total == 0 {
            return None;
        }
        let rank = total - total / 100;
        let mut seen = 0;
        for (i, &count) in self.latency.iter().enumerate() {
            seen += u64::from(count);
            if seen >= rank {
                return Some(LATENCY_MS.get(i).copied().unwrap_or(u32::MAX));
            }
        }
        None
    }
}

struct Series {
    minutes: [Bucket; 60],
    hours: [Bucket; 24],
    last_minute: i64,
}

impl Series {
    fn new() -> Self {
        Series {
            minutes: [Bucket::default(); 60],
            hours: [Bucket::default(); 24],
            last_minute: 0,
        }
    }

    /// Both buckets of the minute `minute`, each emptied when it held an older period.
    fn buckets(&mut self, minute: i64) -> [&mut Bucket; 2] {
        self.last_minute = self.last_minute.max(minute);
        let hour = minute.div_euclid(60);
        let minutes = &mut self.minutes[minute.rem_euclid(60) as usize];
        let hours = &mut self.hours[hour.rem_euclid(24) as usize];
        [minutes.at(minute), hours.at(hour)]
    }
}

/// One period of an app's traffic, as the console draws it.
#[derive(Debug, Serialize, PartialEq, Eq)]
#[cfg_attr(test, derive(Clone))]
pub struct Point {
    /// When the period began.
    pub at: Timestamp,
    pub requests: u32,
    /// Answers `5xx`.
    pub errors: u32,
    /// Answers `4xx` other than `404`.
    pub client_errors: u32,
    pub invocations: u32,
    /// The bucket bound the slowest 1 % of requests reached, in ms; `null` without requests,
    /// and `4294967295` past the last bound (2 s).
    pub p99_ms: Option<u32>,
}

/// An app's last hour (60 minutes) and last day (24 hours), oldest first.
#[derive(Debug, Serialize)]
pub struct Recent {
    pub minutes: Vec<Point>,
    pub hours: Vec<Point>,
}

/// Every tracked app's series. Cheap to clone.
#[derive(Clone)]
pub struct Usage {
    apps: Arc<Mutex<HashMap<AppName, Box<Series>>>>,
    clock: Arc<dyn Clock>,
}

impl Usage {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Usage {
            apps: Arc::new(Mutex::new(HashMap::new())),
            clock,
        }
    }

    /// Counts a request to one of `app`'s routes. Only an answer that succeeded makes an entry
    /// for an app not yet tracked: anybody can get an error (a 400, a 401, a 405) for any name,
    /// and names of apps that do not exist must not fill the table.
    pub fn request(&self, app: &AppName, status: u16, elapsed: Duration) {
        if status == 404 {
            return;
        }
        let anybody = status >= 400;
        let ms = elapsed.as_millis();
        let slot = LATENCY_MS
            .iter()
            .position(|bound| ms <= u128::from(*bound))
            .unwrap_or(LATENCY_MS.len());
        self.with(app, !anybody, |bucket| {
            bucket.requests = bucket.requests.saturating_add(1);
            match status {
                500.. => bucket.errors = bucket.errors.saturating_add(1),
                400..500 => bucket.client_errors = bucket.client_errors.saturating_add(1),
                _ => {}
            }
            bucket.latency[slot] = bucket.latency[slot].saturating_add(1);
        });
    }

    /// Counts an invocation of one of `app`'s functions, whatever triggered it.
    pub fn invocation(&self, app: &AppName) {
        self.with(app, true, |bucket| {
            bucket.invocations = bucket.invocations.saturating_add(1);
        });
    }

    /// `app`'s last hour and day; empty periods where it had no traffic (or is not tracked).
    pub fn recent(&self, app: &AppName) -> Recent {
        let minute = self.minute();
        let hour = minute.div_euclid(60);
        let apps = self.apps.lock().unwrap_or_else(|p| p.into_inner());
        let series = apps.get(app);
        let point = |bucket: Option<&Bucket>, at: i64, unit_ms: i64| {
            let bucket = bucket.filter(|b| b.at == at);
            Point {
                at: Timestamp::from_unix_ms(at * unit_ms),
                requests: bucket.map_or(0, |b| b.requests),
                errors: bucket.map_or(0, |b| b.errors),
                client_errors: bucket.map_or(0, |b| b.client_errors),
                invocations: bucket.map_or(0, |b| b.invocations),
                p99_ms: bucket.and_then(Bucket::p99_ms),
            }
        };
        Recent {
            minutes: (minute - 59..=minute)
                .map(|m| {
                    let bucket = series.map(|s| &s.minutes[m.rem_euclid(60) as usize]);
                    point(bucket, m, 60_000)
                })
                .collect(),
            hours: (hour - 23..=hour)
                .map(|h| {
                    let bucket = series.map(|s| &s.hours[h.rem_euclid(24) as usize]);
                    point(bucket, h, 3_600_000)
                })
                .collect(),
        }
    }

    /// Forgets an app (deleted).
    pub fn forget(&self, app: &AppName) {
        self.apps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(app);
    }

    fn minute(&self) -> i64 {
        self.clock.now().unix_ms().div_euclid(60_000)
    }

    fn with(&self, app: &AppName, may_add: bool, count: impl Fn(&mut Bucket)) {
        let minute = self.minute();
        let mut apps = self.apps.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(series) = apps.get_mut(app) {
            for bucket in series.buckets(minute) {
                count(bucket);
            }
            return;
        }
        if !may_add {
            return;
        }
        if apps.len() >= MAX_APPS {
            // The least recently active tenth makes room at once: one sort per 200 newcomers,
            // not a scan per newcomer.
            let mut quiet: Vec<(i64, AppName)> = apps
                .iter()
                .map(|(name, series)| (series.last_minute, name.clone()))
                .collect();
            quiet.sort_unstable();
            for (_, name) in quiet.into_iter().take(MAX_APPS / 10) {
                apps.remove(&name);
            }
        }
        let series = apps
            .entry(app.clone())
            .or_insert_with(|| Box::new(Series::new()));
        for bucket in series.buckets(minute) {
            count(bucket);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicI64, Ordering};

    struct TestClock(AtomicI64);

    impl Clock for TestClock {
        fn now(&self) -> Timestamp {
            Timestamp::from_unix_ms(self.0.load(Ordering::Relaxed))
        }
    }

    fn app(name: &str) -> AppName {
        AppName::parse(name).unwrap()
    }

    /// The start of an hour (500,000 hours after the epoch).
    const T0: i64 = 500_000 * 3_600_000;

    #[test]
    fn requests_fall_in_their_minute_and_hour_and_old_periods_are_emptied() {
        let clock = Arc::new(TestClock(AtomicI64::new(T0 + 30_000)));
        let usage = Usage::new(clock.clone());
        let shop = app("shop");
        for _ in 0..98 {
            usage.request(&shop, 200, Duration::from_millis(3));
        }
        usage.request(&shop, 500, Duration::from_millis(150));
        usage.request(&shop, 403, Duration::from_millis(1_500));
        usage.request(&shop, 404, Duration::from_millis(1));
        usage.invocation(&shop);

        let recent = usage.recent(&shop);
        assert_eq!((recent.minutes.len(), recent.hours.len()), (60, 24));
        let now = recent.minutes.last().unwrap();
        assert_eq!(now.at, Timestamp::from_unix_ms(T0));
        assert_eq!(
            (now.requests, now.errors, now.client_errors, now.invocations),
            (100, 1, 1, 1)
        );
        // 98 of 100 at 5 ms or less, the 99th in the 200 ms bucket.
        assert_eq!(now.p99_ms, Some(200));
        assert_eq!(recent.hours.last().unwrap().requests, 100);
        assert_eq!(recent.minutes[58].requests, 0);
        assert_eq!(recent.minutes[58].p99_ms, None);

        // Two minutes on, the same hour: a new minute, the hour goes on counting.
        clock.0.store(T0 + 150_000, Ordering::Relaxed);
        usage.request(&shop, 200, Duration::from_millis(1));
        let recent = usage.recent(&shop);
        assert_eq!(recent.minutes[59].requests, 1);
        assert_eq!(recent.minutes[57].requests, 100);
        assert_eq!(recent.hours[23].requests, 101);

        // An hour and more later, the minute's slot is reused: the old count is not shown.
        clock.0.store(T0 + 3_600_000 + 30_000, Ordering::Relaxed);
        usage.request(&shop, 200, Duration::from_secs(5));
        let recent = usage.recent(&shop);
        assert_eq!(recent.minutes[59].requests, 1);
        assert_eq!(recent.minutes[59].p99_ms, Some(u32::MAX));
        assert!(
            recent.minutes[..59]
                .iter()
                .all(|p| p.requests == 0 || p.at > Timestamp::from_unix_ms(T0 + 60_000))
        );
        assert_eq!(recent.hours[22].requests, 101);
        assert_eq!(recent.hours[23].requests, 1);

        // A day later, nothing of that remains.
        clock.0.store(T0 + 30 * 3_600_000, Ordering::Relaxed);
        let recent = usage.recent(&shop);
        assert!(recent.hours.iter().all(|p| p.requests == 0));
        assert!(recent.minutes.iter().all(|p| p.requests == 0));
    }

    #[test]
    fn the_table_holds_at_most_max_apps_and_the_quietest_makes_room() {
        let clock = Arc::new(TestClock(AtomicI64::new(T0)));
        let usage = Usage::new(clock.clone());
        for i in 0..MAX_APPS {
            usage.request(&app(&format!("app{i}")), 200, Duration::ZERO);
        }
        clock.0.store(T0 + 60_000, Ordering::Relaxed);
        usage.request(&app("app0"), 200, Duration::ZERO);
        usage.request(&app("newcomer"), 200, Duration::ZERO);
        let apps = usage.apps.lock().unwrap();
        assert_eq!(apps.len(), MAX_APPS - MAX_APPS / 10 + 1);
        assert!(apps.contains_key(&app("app0")) && apps.contains_key(&app("newcomer")));
        drop(apps);
        // Not found is not counted, and what anybody may get for any name makes no entry.
        for status in [400, 401, 403, 404, 405, 413] {
            usage.request(&app("nothing-here"), status, Duration::ZERO);
        }
        assert!(
            !usage
                .apps
                .lock()
                .unwrap()
                .contains_key(&app("nothing-here"))
        );
        usage.request(&app("app0"), 401, Duration::ZERO);
        assert_eq!(usage.recent(&app("app0")).minutes[59].client_errors, 1);
    }
}
