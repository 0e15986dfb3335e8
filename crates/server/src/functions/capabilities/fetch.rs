//! `fetch`: outbound HTTP for functions. Public addresses only unless the instance allows
//! private ones (the resolver refuses names that point inward, and literal addresses are checked
//! too), no redirects followed, no proxies, bounded time and size. Bodies cross as bytes both
//! ways (`fetch.js` turns strings, `URLSearchParams` and typed arrays into them, and the reply
//! into a `Response` that reads them as text, JSON or bytes).

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use cloudlet_core::apps::AppName;
use cloudlet_core::functions::{CallScope, Capability, HostFailure, HostReply};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

fn failure(code: &str, message: impl Into<String>) -> HostFailure {
    HostFailure::new(code, message)
}

/// Outbound HTTP for functions: public addresses only (unless allowed), no redirects followed,
/// bounded time and size.
#[derive(Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    allow_private: bool,
    /// Requests in flight at once, instance-wide: each holds a socket, and sockets are
    /// descriptors the server has budgeted for (`config::RESERVED_DESCRIPTORS`).
    sockets: Arc<Semaphore>,
    /// Each app's share of them, so that one app fetching from slow servers can not hold every
    /// other app's requests up.
    apps: Arc<AppShares>,
}

/// Requests `fetch` makes at once across the instance; more wait their turn (within their
/// invocation's deadline).
pub const MAX_FETCHES: usize = 128;
/// Requests one app's functions make at once; more wait their turn.
pub const MAX_FETCHES_PER_APP: usize = 16;
/// Name lookups in flight at once. A lookup runs on a thread of its own (the system resolver
/// blocks), which goes on after its fetch gave up, so they are counted until they end.
const MAX_LOOKUPS: usize = 32;

const MAX_FETCH_BODY: usize = 10 * 1024 * 1024;
/// How the resolver says it refused a name.
const NOT_PUBLIC: &str = "resolves to no public address";

/// A request: its body is the call's bytes.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchCall {
    url: String,
    method: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// Whether there is a body (an empty one included).
    #[serde(default)]
    body: bool,
}

#[async_trait]
impl Capability for Fetcher {
    type Request = FetchCall;

    fn name(&self) -> &'static str {
        "fetch"
    }

    fn shim(&self) -> &'static str {
        include_str!("fetch.js")
    }

    async fn call(
        &self,
        scope: &CallScope,
        call: FetchCall,
        body: Vec<u8>,
    ) -> Result<HostReply, HostFailure> {
        self.fetch(&scope.app, call, body).await
    }
}

impl Fetcher {
    pub fn new(allow_private: bool) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            // A proxy would resolve names itself, past the resolver's check.
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(5))
            .dns_resolver(Arc::new(PublicOnly {
                allow_private,
                lookups: Arc::new(Semaphore::new(MAX_LOOKUPS)),
            }))
            // No idle sockets kept: a function can reach any number of hosts, and each idle
            // socket would be a descriptor outside the budget.
            .pool_max_idle_per_host(0)
            .build()?;
        Ok(Fetcher {
            client,
            allow_private,
            sockets: Arc::new(Semaphore::new(MAX_FETCHES)),
            apps: Arc::default(),
        })
    }

    async fn fetch(
        &self,
        app: &AppName,
        call: FetchCall,
        body: Vec<u8>,
    ) -> Result<HostReply, HostFailure> {
        let url = reqwest::Url::parse(&call.url)
            .map_err(|e| failure("fetch_failed", format!("not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(failure("fetch_refused", "only http and https URLs"));
        }
        // Literal addresses are not resolved, so the resolver's check does not see them.
        let literal = url
            .host_str()
            .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
            .and_then(|h| h.parse::<IpAddr>().ok());
        if let Some(ip) = literal.filter(|ip| !self.allow_private && !is_public(*ip)) {
            return Err(failure(
                "fetch_refused",
                format!("{ip} is not a public address"),
            ));
        }
        let method = reqwest::Method::from_bytes(call.method.as_bytes())
            .map_err(|e| failure("fetch_failed", e.to_string()))?;
        let mut request = self.client.request(method, url);
        for (name, value) in &call.headers {
            request = request.header(name, value);
        }
        if call.body {
            request = request.body(body);
        }
        // The app's share first, so that an app at its share waits without holding a socket.
        let _share = AppShares::take(&self.apps, app).await;
        let _socket = self
            .sockets
            .acquire()
            .await
            .map_err(|_| failure("fetch_failed", "the server is shutting down"))?;
        let mut response = request.send().await.map_err(|e| {
            // The resolver's refusal comes back wrapped in the connection error.
            let mut source: Option<&dyn std::error::Error> = Some(&e);
            while let Some(error) = source {
                if error.to_string().contains(NOT_PUBLIC) {
                    return failure("fetch_refused", error.to_string());
                }
                source = error.source();
            }
            // Without the URL: its query may hold a key the caller must not see.
            failure("fetch_failed", e.without_url().to_string())
        })?;
        let status = response.status().as_u16();
        let final_url = response.url().to_string();
        let headers: Map<String, Value> = response
            .headers()
            .iter()
            .filter_map(|(k, v)| {
                Some((
                    k.as_str().to_owned(),
                    Value::String(v.to_str().ok()?.to_owned()),
                ))
            })
            .collect();
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| failure("fetch_failed", e.to_string()))?
        {
            if body.len() + chunk.len() > MAX_FETCH_BODY {
                return Err(failure(
                    "fetch_failed",
                    format!("the response is over {MAX_FETCH_BODY} bytes"),
                ));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(HostReply {
            value: json!({ "status": status, "headers": headers, "url": final_url }),
            bytes: body,
        })
    }
}

/// Each app's share of the requests in flight: a semaphore per app that has requests in flight,
/// forgotten when its last one ends.
#[derive(Default)]
struct AppShares {
    apps: Mutex<HashMap<AppName, Arc<Semaphore>>>,
}

/// One request's place in its app's share.
struct Share {
    shares: Arc<AppShares>,
    app: AppName,
    permit: Option<OwnedSemaphorePermit>,
}

impl AppShares {
    async fn take(shares: &Arc<AppShares>, app: &AppName) -> Share {
        let semaphore = {
            let mut apps = shares.apps.lock().unwrap_or_else(PoisonError::into_inner);
            let semaphore = apps
                .entry(app.clone())
                .or_insert_with(|| Arc::new(Semaphore::new(MAX_FETCHES_PER_APP)));
            Arc::clone(semaphore)
        };
        // Never closed, so acquiring only waits.
        let permit = semaphore.acquire_owned().await.ok();
        Share {
            shares: Arc::clone(shares),
            app: app.clone(),
            permit,
        }
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        let mut apps = self
            .shares
            .apps
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        drop(self.permit.take());
        // Only the map holds it, with every permit back: nobody fetches or waits for this app.
        let unused = apps.get(&self.app).is_some_and(|semaphore| {
            Arc::strong_count(semaphore) == 1
                && semaphore.available_permits() == MAX_FETCHES_PER_APP
        });
        if unused {
            apps.remove(&self.app);
        }
    }
}

/// Resolves names, keeping only public addresses (unless private ones are allowed), so that a
/// name pointing at loopback, a private network or a cloud metadata address is refused.
struct PublicOnly {
    allow_private: bool,
    /// Lookups in flight, each holding its permit until its thread ends.
    lookups: Arc<Semaphore>,
}

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        let lookups = Arc::clone(&self.lookups);
        Box::pin(async move {
            let permit = lookups.acquire_owned().await?;
            let host = name.as_str().to_owned();
            // The permit goes with the thread: a lookup its fetch gave up on still counts.
            let resolved = tokio::task::spawn_blocking(move || {
                let _permit = permit;
                (host.as_str(), 0).to_socket_addrs()
            })
            .await??;
            let found: Vec<SocketAddr> = resolved
                .filter(|a| allow_private || is_public(a.ip()))
                .collect();
            if found.is_empty() {
                return Err(format!("{} {NOT_PUBLIC}", name.as_str()).into());
            }
            Ok(Box::new(found.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Whether an address is on the public internet: not loopback, private, link-local (cloud
/// metadata lives there), shared, unspecified, multicast or documentation space.
fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => {
            let [a, b, c, _] = ip.octets();
            !(ip.is_loopback()
                || ip.is_private()
                || ip.is_link_local()
                || ip.is_unspecified()
                || ip.is_broadcast()
                || ip.is_multicast()
                || ip.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (b == 18 || b == 19))
                || (a == 192 && b == 0 && c == 0)
                || a >= 240)
        }
        IpAddr::V6(ip) => {
            let segments = ip.segments();
            let octets = ip.octets();
            let embedded = |at: usize| {
                IpAddr::V4(std::net::Ipv4Addr::new(
                    octets[at],
                    octets[at + 1],
                    octets[at + 2],
                    octets[at + 3],
                ))
            };
            // Addresses that carry an IPv4 address are judged by it: mapped (`::ffff:a.b.c.d`),
            // compatible (`::a.b.c.d`), NAT64 (`64:ff9b::a.b.c.d`) and 6to4 (`2002:a.b.c.d::`).
            if let Some(v4) = ip.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let compatible = segments[..6].iter().all(|s| *s == 0);
            if compatible && !ip.is_loopback() && !ip.is_unspecified() {
                return is_public(embedded(12));
            }
            if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                return is_public(embedded(12));
            }
            if segments[0] == 0x2002 {
                return is_public(embedded(2));
            }
            let first = segments[0];
            !(ip.is_loopback()
                || ip.is_unspecified()
                || ip.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || (first & 0xffc0) == 0xfec0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "fec0::1",
            "240.0.0.1",
            "192.0.0.8",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["1.1.1.1", "93.184.216.34", "2606:4700::1111"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }
}
