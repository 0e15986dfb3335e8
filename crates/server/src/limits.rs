//! Rate limits on the routes that attackers hammer: logins, sign-ups and refreshes, and the
//! payment routes a user may call (each order and each confirmation calls the platform). Token
//! buckets per client, per app and per password account: a burst of `per_minute` is allowed,
//! then `per_minute` requests a minute. In memory on a node alone with its database; in the
//! database when several nodes share it (`database.shared`), so that spreading requests over
//! the nodes does not multiply anyone's budget. A client is its IPv4 address (also when it
//! arrives IPv4-mapped on a dual-stack listener) or its IPv6 /64.
//!
//! Failed password logins are also counted per account, so that guesses spread over many
//! addresses are slowed as much as guesses from one. The account's owner is not locked out by
//! them: an address that has logged in to the account before (within [`KNOWN_FOR`]) is not held
//! to the account's bucket, only to its own.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;

use cloudlet_core::clock::Clock;
use cloudlet_store::{Rate, RateStore};

use crate::error::{ApiError, Code};
use crate::state::AppState;

/// A user's orders and confirmations a minute, per app.
const PAYER_PER_MINUTE: u32 = 30;

/// The most buckets kept before idle ones are dropped.
const MAX_BUCKETS: usize = 100_000;

struct Bucket {
    tokens: f64,
    updated: Instant,
}

pub struct RateLimiter {
    per_minute: u32,
    buckets: Mutex<HashMap<String, Bucket>>,
    /// The buckets of every node, in the database, when several nodes share it: this
    /// limiter's are named `{name}/{key}` there, on the clock of [`Shared`].
    shared: Option<(Shared, &'static str)>,
}

/// The store of the buckets several nodes share, the clock they are taken by (every node's
/// clock is taken to agree to well within a second), and a secret of the instance's that goes
/// into each bucket's name before the store hashes it, so that a stored name does not give
/// away the address or the account it counts (both are easy to guess from a plain hash).
#[derive(Clone)]
pub struct Shared {
    pub store: Arc<dyn RateStore>,
    pub clock: Arc<dyn Clock>,
    pub secret: [u8; 32],
}

impl Shared {
    /// The stored bucket `key` of limiter `name`.
    fn bucket(&self, name: &str, key: &str) -> String {
        let secret: String = self.secret.iter().map(|b| format!("{b:02x}")).collect();
        format!("{secret}/{name}/{key}")
    }

    /// Now, in microseconds since the Unix epoch.
    pub fn now_us(&self) -> i64 {
        self.clock.now().unix_ms().saturating_mul(1000)
    }
}

impl RateLimiter {
    pub fn new(per_minute: u32) -> Self {
        RateLimiter {
            per_minute,
            buckets: Mutex::new(HashMap::new()),
            shared: None,
        }
    }

    /// A limiter whose buckets are in `shared`, shared by the nodes, named `{name}/{key}`.
    pub fn shared(per_minute: u32, shared: Shared, name: &'static str) -> Self {
        RateLimiter {
            shared: Some((shared, name)),
            ..RateLimiter::new(per_minute)
        }
    }

    /// Takes one request from `key`'s bucket; `Err` with the time to wait when it is empty.
    pub async fn take(&self, key: &str) -> Result<(), Duration> {
        if let Some((shared, name)) = &self.shared {
            let rate = Rate {
                per_minute: self.per_minute,
            };
            let taken = shared
                .store
                .take(&shared.bucket(name, key), rate, shared.now_us())
                .await;
            match taken {
                Ok(None) => return Ok(()),
                Ok(Some(wait_us)) => {
                    return Err(Duration::from_micros(wait_us.unsigned_abs()));
                }
                // The database out of reach: this node's own count holds meanwhile, rather
                // than none or a refusal of everybody.
                Err(e) => tracing::warn!(error = %e, "the shared rate limits are out of reach"),
            }
        }
        self.draw(key, true)
    }

    /// Puts back one request taken from `key`'s bucket (one that turned out not to count).
    pub async fn give_back(&self, key: &str) {
        if let Some((shared, name)) = &self.shared {
            let rate = Rate {
                per_minute: self.per_minute,
            };
            if let Err(e) = shared
                .store
                .give_back(&shared.bucket(name, key), rate)
                .await
            {
                tracing::warn!(error = %e, "the shared rate limits are out of reach");
            }
            return;
        }
        let capacity = f64::from(self.per_minute);
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(bucket) = buckets.get_mut(key) {
            bucket.tokens = (bucket.tokens + 1.0).min(capacity);
        }
    }

    fn draw(&self, key: &str, take: bool) -> Result<(), Duration> {
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
            if take {
                bucket.tokens -= 1.0;
            }
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / per_sec))
        }
    }
}

/// How a password login ended, for the account's count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountOutcome {
    LoggedIn,
    WrongPassword,
    /// Refused before any password was checked (the provider is off, the app is gone, …).
    Other,
}

/// How long an address that logged in to an account stays known to it.
pub const KNOWN_FOR: Duration = Duration::from_secs(30 * 24 * 3600);
/// The most (account, address) pairs remembered.
const MAX_KNOWN: usize = 100_000;

/// The limiters of the auth routes.
pub struct AuthLimits {
    pub per_ip: RateLimiter,
    pub per_app: RateLimiter,
    /// Failed password logins per account, from addresses not known to it.
    pub per_account: RateLimiter,
    /// When each (app, account, client) pair last logged in.
    known: Mutex<HashMap<String, Instant>>,
    /// Whether to believe `x-forwarded-for` (only behind a proxy that sets it).
    pub trust_forwarded_for: bool,
    /// A user's orders and order confirmations, per app: each is a call to a payment platform.
    pub per_payer: RateLimiter,
}

impl AuthLimits {
    /// The limiters, in `shared` (the database several nodes share) when given, else in this
    /// node's memory.
    pub fn new(
        per_ip_per_minute: u32,
        per_app_per_minute: u32,
        failures_per_account_per_minute: u32,
        trust_forwarded_for: bool,
        shared: Option<Shared>,
    ) -> Self {
        let limiter = |per_minute, name| match &shared {
            Some(shared) => RateLimiter::shared(per_minute, shared.clone(), name),
            None => RateLimiter::new(per_minute),
        };
        AuthLimits {
            per_ip: limiter(per_ip_per_minute, "ip"),
            per_app: limiter(per_app_per_minute, "app"),
            per_account: limiter(failures_per_account_per_minute, "account"),
            known: Mutex::new(HashMap::new()),
            trust_forwarded_for,
            per_payer: limiter(PAYER_PER_MINUTE, "payer"),
        }
    }

    /// Charges a call of a platform (a login through it, a phone number bind) to the client and
    /// to the app, whose bucket protects the app's platform quota. What calls no platform (a
    /// password, anonymous or dev login, a sign-up, a refresh) is charged to the client only
    /// ([`AuthLimits::check_client`]): a flood of those from many addresses must not lock an
    /// app's users out.
    pub async fn check_platform_call(&self, app: &str, client: IpAddr) -> Result<(), ApiError> {
        self.check_client(client).await?;
        self.per_app.take(app).await.map_err(too_many)
    }

    /// Charges an order or a confirmation to the user: each calls a payment platform, whose
    /// limits are the merchant's.
    pub async fn check_payer(&self, app: &str, user: &str) -> Result<(), ApiError> {
        self.per_payer
            .take(&format!("{app}/{user}"))
            .await
            .map_err(|wait| {
                let secs = wait.as_secs() + 1;
                ApiError::new(
                    Code::TooManyRequests,
                    format!("too many orders and confirmations; try again in {secs} s"),
                )
                .retry_after(secs)
            })
    }

    /// Charges a request to the client.
    pub async fn check_client(&self, client: IpAddr) -> Result<(), ApiError> {
        self.per_ip
            .take(&client_key(client))
            .await
            .map_err(too_many)
    }

    /// Before a password is checked: takes one try from the account's bucket, refused while it
    /// is empty, unless the client has logged in to the account before (its own client bucket
    /// counts its tries). Taking before the check counts the guesses that run at once too.
    /// `Ok(true)` when a try was taken: [`AuthLimits::settle_account`] gives it back unless the
    /// password was wrong.
    pub async fn take_account(
        &self,
        app: &str,
        account: &str,
        client: IpAddr,
    ) -> Result<bool, ApiError> {
        if self.is_known(app, account, client) {
            return Ok(false);
        }
        self.per_account
            .take(&account_key(app, account))
            .await
            .map_err(too_many)?;
        Ok(true)
    }

    /// After a password login: a wrong password keeps the try it took; anything else gives it
    /// back, and a success makes the client known to the account.
    pub async fn settle_account(
        &self,
        app: &str,
        account: &str,
        client: IpAddr,
        took: bool,
        outcome: AccountOutcome,
    ) {
        if took && outcome != AccountOutcome::WrongPassword {
            self.per_account.give_back(&account_key(app, account)).await;
        }
        if outcome == AccountOutcome::LoggedIn {
            self.logged_in(app, account, client);
        }
    }

    /// The client is known to the account from now on (it logged in, or signed the account up).
    pub fn logged_in(&self, app: &str, account: &str, client: IpAddr) {
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        if known.len() >= MAX_KNOWN {
            known.retain(|_, at| at.elapsed() < KNOWN_FOR);
        }
        if known.len() >= MAX_KNOWN {
            // Forget the tenth seen longest ago, not everyone at once.
            let mut times: Vec<Instant> = known.values().copied().collect();
            times.sort_unstable();
            let cutoff = times[MAX_KNOWN / 10];
            known.retain(|_, at| *at > cutoff);
        }
        known.insert(known_key(app, account, client), Instant::now());
    }

    fn is_known(&self, app: &str, account: &str, client: IpAddr) -> bool {
        self.known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&known_key(app, account, client))
            .is_some_and(|at| at.elapsed() < KNOWN_FOR)
    }

    /// The client's address: the peer's, or, behind a trusted proxy, the last `x-forwarded-for`
    /// entry: the one that proxy appended (entries before it are the client's to write). The
    /// last entry of the last such header: a proxy may add a header line of its own rather
    /// than append to the client's (HAProxy does), and an entry may carry a port.
    pub fn client_ip(&self, headers: &HeaderMap, peer: Option<SocketAddr>) -> IpAddr {
        let forwarded = self
            .trust_forwarded_for
            .then(|| headers.get_all("x-forwarded-for").iter().next_back())
            .flatten()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .and_then(|v| forwarded_ip(v.trim()));
        forwarded
            .or(peer.map(|p| p.ip()))
            .unwrap_or(IpAddr::from([0, 0, 0, 0]))
    }
}

/// An `x-forwarded-for` entry's address: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1` or
/// `[2001:db8::1]:5678`.
fn forwarded_ip(entry: &str) -> Option<IpAddr> {
    entry
        .parse()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| {
            entry
                .strip_prefix('[')
                .and_then(|rest| rest.strip_suffix(']'))
                .and_then(|inner| inner.parse().ok())
        })
}

/// A client's bucket: its IPv4 address (an IPv4-mapped IPv6 address is its IPv4 one), or its
/// IPv6 /64 (one subscriber's network, which hands out addresses freely).
fn client_key(client: IpAddr) -> String {
    match client.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

fn account_key(app: &str, account: &str) -> String {
    format!("{app}\0{}", account_digest(account))
}

fn known_key(app: &str, account: &str, client: IpAddr) -> String {
    format!("{app}\0{}\0{}", account_digest(account), client_key(client))
}

/// An account as it goes into a key: its SHA-256, so that what a key holds does not grow with
/// what a client sent as an email (anything, up to the body's limit, when it is no email).
fn account_digest(account: &str) -> String {
    let digest = cloudlet_core::secrets::SecretHash::of(account);
    digest
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn too_many(wait: Duration) -> ApiError {
    let secs = wait.as_secs() + 1;
    ApiError::new(
        Code::TooManyRequests,
        format!("too many login attempts; try again in {secs} s"),
    )
    .retry_after(secs)
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

/// The address of the connection itself, whatever `x-forwarded-for` says: for the console,
/// whose address is not the API's, so that trusting the API's proxy does not let anybody who
/// reaches the console directly choose the address their login tries are counted against.
pub struct PeerIp(pub IpAddr);

impl FromRequestParts<AppState> for PeerIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::from([0, 0, 0, 0]), |ConnectInfo(addr)| addr.ip());
        Ok(PeerIp(peer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_bucket_allows_its_burst_then_refuses_with_a_wait() {
        let limiter = RateLimiter::new(3);
        for _ in 0..3 {
            limiter.take("a").await.unwrap();
        }
        let wait = limiter.take("a").await.unwrap_err();
        assert!(
            wait > Duration::from_secs(10) && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
        limiter.take("b").await.unwrap();
    }

    #[test]
    fn ipv4_mapped_clients_share_their_ipv4_bucket_and_ipv6_goes_by_64() {
        let v4: IpAddr = "203.0.113.7".parse().unwrap();
        let mapped: IpAddr = "::ffff:203.0.113.7".parse().unwrap();
        let other: IpAddr = "::ffff:203.0.113.8".parse().unwrap();
        assert_eq!(client_key(v4), client_key(mapped));
        assert_ne!(client_key(mapped), client_key(other));
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
    }

    #[test]
    fn the_client_behind_a_proxy_is_the_last_entry_of_the_last_forwarded_header() {
        let limits = AuthLimits::new(1000, 1000, 2, true, None);
        let peer: SocketAddr = "10.0.0.2:40000".parse().unwrap();
        let ip = |lines: &[&str]| {
            let mut headers = HeaderMap::new();
            for line in lines {
                headers.append("x-forwarded-for", line.parse().unwrap());
            }
            limits.client_ip(&headers, Some(peer)).to_string()
        };
        // The client's own line first, the proxy's line after it (HAProxy's way).
        assert_eq!(ip(&["6.6.6.6", "203.0.113.9"]), "203.0.113.9");
        assert_eq!(ip(&["6.6.6.6, 203.0.113.9"]), "203.0.113.9");
        assert_eq!(ip(&["203.0.113.9:5678"]), "203.0.113.9");
        assert_eq!(ip(&["[2001:db8::7]:5678"]), "2001:db8::7");
        assert_eq!(ip(&["2001:db8::7"]), "2001:db8::7");
        assert_eq!(ip(&["[2001:db8::7]"]), "2001:db8::7");
        assert_eq!(ip(&["not an address"]), "10.0.0.2");
        assert_eq!(ip(&[]), "10.0.0.2");
        // Not trusted, the header is not read at all.
        let untrusting = AuthLimits::new(1000, 1000, 2, false, None);
        let mut headers = HeaderMap::new();
        headers.append("x-forwarded-for", "203.0.113.9".parse().unwrap());
        assert_eq!(
            untrusting.client_ip(&headers, Some(peer)).to_string(),
            "10.0.0.2"
        );
    }

    #[tokio::test]
    async fn failures_slow_an_account_for_strangers_but_not_for_known_addresses() {
        let limits = AuthLimits::new(1000, 1000, 2, false, None);
        let owner: IpAddr = "198.51.100.1".parse().unwrap();
        limits.logged_in("shop", "ann@example.com", owner);
        // Two guesses in flight at once both take their try before either is checked.
        let mut guesses = Vec::new();
        for i in 0..2 {
            let stranger = IpAddr::from([10, 0, 0, i]);
            guesses.push(
                limits
                    .take_account("shop", "ann@example.com", stranger)
                    .await
                    .unwrap(),
            );
        }
        assert_eq!(guesses, [true, true]);
        let next = IpAddr::from([10, 0, 0, 9]);
        let refused = limits
            .take_account("shop", "ann@example.com", next)
            .await
            .unwrap_err();
        assert_eq!(refused.code, Code::TooManyRequests);
        assert!(refused.retry_after.is_some());
        // The owner's address is not held to the account's bucket.
        assert!(
            !limits
                .take_account("shop", "ann@example.com", owner)
                .await
                .unwrap()
        );
        // A try that checked no password is given back.
        for _ in 0..3 {
            let took = limits
                .take_account("shop", "bob@example.com", next)
                .await
                .unwrap();
            limits
                .settle_account("shop", "bob@example.com", next, took, AccountOutcome::Other)
                .await;
        }
    }
}
