//! Rate limits on the routes that attackers hammer: logins, sign-ups and refreshes. Token
//! buckets per client IP and per app, in memory on this node: a burst of `per_minute` is
//! allowed, then `per_minute` requests a minute.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;

use crate::error::{ApiError, Code};
use crate::state::AppState;

/// The most buckets kept before idle ones are dropped.
const MAX_BUCKETS: usize = 100_000;

struct Bucket {
    tokens: f64,
    updated: Instant,
}

pub struct RateLimiter {
    per_minute: u32,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    pub fn new(per_minute: u32) -> Self {
        RateLimiter {
            per_minute,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request from `key`'s bucket; `Err` with the time to wait when it is empty.
    pub fn take(&self, key: &str) -> Result<(), Duration> {
        let capacity = f64::from(self.per_minute);
        let per_sec = capacity / 60.0;
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_BUCKETS {
            // Full buckets carry no state worth keeping.
            buckets
                .retain(|_, b| b.tokens + b.updated.elapsed().as_secs_f64() * per_sec < capacity);
        }
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: capacity,
            updated: now,
        });
        let refill = now.duration_since(bucket.updated).as_secs_f64() * per_sec;
        bucket.tokens = (bucket.tokens + refill).min(capacity);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / per_sec))
        }
    }
}

/// The limiters of the auth routes.
pub struct AuthLimits {
    pub per_ip: RateLimiter,
    pub per_app: RateLimiter,
    /// Whether to believe `x-forwarded-for` (only behind a proxy that sets it).
    pub trust_forwarded_for: bool,
}

impl AuthLimits {
    /// Charges a login or sign-up to the client and to the app. (The app's bucket protects its
    /// platform quota; refreshes, which call no platform, are charged to the client only, so
    /// that nobody can lock an app's users out of their sessions.)
    pub fn check_login(&self, app: &str, client: IpAddr) -> Result<(), ApiError> {
        self.check_client(client)?;
        self.per_app.take(app).map_err(too_many)
    }

    /// Charges a request to the client: its IPv4 address, or its IPv6 /64 (one subscriber's
    /// network, which hands out addresses freely).
    pub fn check_client(&self, client: IpAddr) -> Result<(), ApiError> {
        let key = match client {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        };
        self.per_ip.take(&key).map_err(too_many)
    }

    /// The client's address: the peer's, or, behind a trusted proxy, the last `x-forwarded-for`
    /// entry: the one that proxy appended (entries before it are the client's to write).
    pub fn client_ip(&self, headers: &HeaderMap, peer: Option<SocketAddr>) -> IpAddr {
        let forwarded = self
            .trust_forwarded_for
            .then(|| headers.get("x-forwarded-for"))
            .flatten()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .and_then(|v| v.trim().parse().ok());
        forwarded
            .or(peer.map(|p| p.ip()))
            .unwrap_or(IpAddr::from([0, 0, 0, 0]))
    }
}

fn too_many(wait: Duration) -> ApiError {
    ApiError::new(
        Code::TooManyRequests,
        format!(
            "too many login attempts; try again in {} s",
            wait.as_secs() + 1
        ),
    )
}

/// The client's IP address (see [`AuthLimits::client_ip`]).
pub struct ClientIp(pub IpAddr);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| *addr);
        Ok(ClientIp(state.limits().client_ip(&parts.headers, peer)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_refuses_with_a_wait() {
        let limiter = RateLimiter::new(3);
        for _ in 0..3 {
            limiter.take("a").unwrap();
        }
        let wait = limiter.take("a").unwrap_err();
        assert!(
            wait > Duration::from_secs(10) && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
        limiter.take("b").unwrap();
    }
}
