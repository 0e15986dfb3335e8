//! `fetch`: outbound HTTP for functions. Public addresses only unless the instance allows
//! private ones (the resolver refuses names that point inward, and literal addresses are checked
//! too), no redirects followed, no proxies, bounded time and size. Bodies cross as bytes both
//! ways (`fetch.js` turns strings, `URLSearchParams` and typed arrays into them, and the reply
//! into a `Response` that reads them as text, JSON or bytes).

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use cloudlet_core::apps::AppName;
use cloudlet_core::functions::{CallScope, Capability, HostFailure, HostReply};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use cloudlet_core::shares::AppShares;
use tokio::sync::Semaphore;

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
    app_fetches: Arc<AppShares>,
    /// Each app's share of the name lookups, held by lookup threads until they end, past their
    /// fetch.
    app_lookups: Arc<AppShares>,
}

/// Requests `fetch` makes at once across the instance; more wait their turn (within their
/// invocation's deadline).
pub const MAX_FETCHES: usize = 128;
/// Requests one app's functions make at once; more wait their turn.
pub const MAX_FETCHES_PER_APP: usize = 16;
/// Name lookups in flight at once. A lookup runs on a thread of its own (the system resolver
/// blocks), which goes on after its fetch gave up, so they are counted until they end.
const MAX_LOOKUPS: usize = 32;
/// Of those, one app's: an app whose functions start lookups that never answer (names under a
/// name server that keeps silent) and give up on them must not hold every app's lookups.
const MAX_LOOKUPS_PER_APP: usize = 8;

tokio::task_local! {
    /// The lookups the app whose fetch is being sent may start: set around the send, read by
    /// [`PublicOnly`] (the resolver is the client's, shared by every app).
    static APP_LOOKUPS: Arc<Semaphore>;
}

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
                lookup: system_lookup,
            }))
            // No idle sockets kept: a function can reach any number of hosts, and each idle
            // socket would be a descriptor outside the budget.
            .pool_max_idle_per_host(0)
            .build()?;
        Ok(Fetcher {
            client,
            allow_private,
            sockets: Arc::new(Semaphore::new(MAX_FETCHES)),
            app_fetches: AppShares::new(MAX_FETCHES_PER_APP),
            app_lookups: AppShares::new(MAX_LOOKUPS_PER_APP),
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
        if let Some(ip) = literal.filter(|ip| !self.allow_private && !reachable(*ip)) {
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
        let _share = self.app_fetches.take(app, 1).await;
        let lookups = self.app_lookups.take(app, 0).await;
        let app_lookups = lookups.share();
        let _socket = self
            .sockets
            .acquire()
            .await
            .map_err(|_| failure("fetch_failed", "the server is shutting down"))?;
        let mut response = APP_LOOKUPS
            .scope(app_lookups, request.send())
            .await
            .map_err(|e| {
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
            .map_err(|e| failure("fetch_failed", e.without_url().to_string()))?
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

/// Resolves names, keeping only public addresses (unless private ones are allowed), so that a
/// name pointing at loopback, a private network or a cloud metadata address is refused.
struct PublicOnly {
    allow_private: bool,
    /// Lookups in flight, each holding its permit until its thread ends.
    lookups: Arc<Semaphore>,
    /// The lookup itself (blocking): the system resolver's.
    lookup: fn(&str) -> std::io::Result<Vec<SocketAddr>>,
}

fn system_lookup(host: &str) -> std::io::Result<Vec<SocketAddr>> {
    Ok((host, 0).to_socket_addrs()?.collect())
}

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        let lookups = Arc::clone(&self.lookups);
        let lookup = self.lookup;
        // Read where the fetch is sent (a connection finished in the background, when another
        // answered first, counts against the node's lookups alone).
        let app_lookups = APP_LOOKUPS.try_with(Arc::clone).ok();
        Box::pin(async move {
            let app_permit = match app_lookups {
                Some(app_lookups) => Some(app_lookups.acquire_owned().await?),
                None => None,
            };
            let permit = lookups.acquire_owned().await?;
            let host = name.as_str().to_owned();
            // The permits go with the thread: a lookup its fetch gave up on still counts.
            let resolved = tokio::task::spawn_blocking(move || {
                let _permits = (permit, app_permit);
                lookup(&host)
            })
            .await??;
            let found: Vec<SocketAddr> = resolved
                .into_iter()
                .filter(|a| allow_private || reachable(a.ip()))
                .collect();
            if found.is_empty() {
                return Err(format!("{} {NOT_PUBLIC}", name.as_str()).into());
            }
            Ok(Box::new(found.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Whether a function may reach an address: a public one, and none of this machine's own (also
/// not as an IPv4-mapped IPv6 address, which reaches the IPv4 one).
fn reachable(ip: IpAddr) -> bool {
    reachable_beside(ip, &own_addresses())
}

/// Whether `ip` is public and none of `own`.
fn reachable_beside(ip: IpAddr, own: &HashSet<IpAddr>) -> bool {
    is_public(ip) && !own.contains(&ip.to_canonical())
}

/// How long the machine's addresses are taken to stay the same.
const OWN_ADDRESSES_FOR: Duration = Duration::from_secs(60);

/// The addresses of this machine's interfaces, read again a minute after they were last read
/// (a DHCP lease or an IPv6 temporary address changes them). A public address of the machine
/// itself routes locally, past any firewall in front of it, to whatever listens on all
/// interfaces (the API, the console, another service).
fn own_addresses() -> Arc<HashSet<IpAddr>> {
    static OWN: Mutex<Option<(std::time::Instant, Arc<HashSet<IpAddr>>)>> = Mutex::new(None);
    let mut own = OWN.lock().unwrap_or_else(PoisonError::into_inner);
    match &*own {
        Some((read, addresses)) if read.elapsed() < OWN_ADDRESSES_FOR => Arc::clone(addresses),
        _ => {
            let addresses = Arc::new(interface_addresses());
            *own = Some((std::time::Instant::now(), Arc::clone(&addresses)));
            addresses
        }
    }
}

/// The addresses of this machine's interfaces, as they are now.
fn interface_addresses() -> HashSet<IpAddr> {
    let mut own = HashSet::new();
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: `getifaddrs` gives a list that is only read here, each address as the structure
    // its family names, and then freed once.
    #[allow(unsafe_code)]
    unsafe {
        if libc::getifaddrs(&mut list) != 0 {
            tracing::warn!(
                "could not read this machine's addresses; fetch refuses only non-public ones"
            );
            return own;
        }
        let mut at = list;
        while !at.is_null() {
            let address = (*at).ifa_addr;
            if !address.is_null() {
                match i32::from((*address).sa_family) {
                    libc::AF_INET => {
                        let v4 = &*address.cast::<libc::sockaddr_in>();
                        own.insert(IpAddr::from(u32::from_be(v4.sin_addr.s_addr).to_be_bytes()));
                    }
                    libc::AF_INET6 => {
                        let v6 = &*address.cast::<libc::sockaddr_in6>();
                        own.insert(IpAddr::from(v6.sin6_addr.s6_addr).to_canonical());
                    }
                    _ => {}
                }
            }
            at = (*at).ifa_next;
        }
        libc::freeifaddrs(list);
    }
    own
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
            // translated (`::ffff:0:a.b.c.d`), compatible (`::a.b.c.d`), NAT64
            // (`64:ff9b::a.b.c.d`) and 6to4 (`2002:a.b.c.d::`).
            if let Some(v4) = ip.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            if segments[..6] == [0, 0, 0, 0, 0xffff, 0] {
                return is_public(embedded(12));
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
                || (first & 0xffc0) == 0xfec0
                // NAT64 for local use (`64:ff9b:1::/48`), whose IPv4 side is a local network's.
                || segments[..3] == [0x64, 0xff9b, 1]
                // Teredo (its IPv4 side is hidden), documentation, discard-only.
                || segments[..2] == [0x2001, 0]
                || segments[..2] == [0x2001, 0xdb8]
                || segments[..4] == [0x100, 0, 0, 0])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::dns::Resolve;

    /// Held by a test: lookups of names starting with `stuck` wait for it, as under a name
    /// server that keeps silent.
    static SILENT: Mutex<()> = Mutex::new(());

    fn gated_lookup(host: &str) -> std::io::Result<Vec<SocketAddr>> {
        if host.starts_with("stuck") {
            drop(SILENT.lock().unwrap_or_else(PoisonError::into_inner));
        }
        Ok(vec!["93.184.216.34:0".parse().unwrap()])
    }

    /// Whether `host` resolves within `ms` for the app of `app_lookups`.
    async fn resolves_in(
        ms: u64,
        resolver: &PublicOnly,
        app_lookups: &Arc<Semaphore>,
        host: &str,
    ) -> bool {
        let name: reqwest::dns::Name = host.parse().unwrap();
        APP_LOOKUPS
            .scope(Arc::clone(app_lookups), async {
                tokio::time::timeout(Duration::from_millis(ms), resolver.resolve(name)).await
            })
            .await
            .is_ok_and(|found| found.is_ok())
    }

    async fn resolves(resolver: &PublicOnly, app_lookups: &Arc<Semaphore>, host: &str) -> bool {
        resolves_in(500, resolver, app_lookups, host).await
    }

    // The guard is held across awaits on purpose: it stands for a silent name server, and the
    // lookup threads, not the runtime, wait on it.
    #[allow(clippy::await_holding_lock)]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_app_giving_up_on_silent_lookups_holds_its_own_share_of_them_alone() {
        let resolver = PublicOnly {
            allow_private: false,
            lookups: Arc::new(Semaphore::new(MAX_LOOKUPS)),
            lookup: gated_lookup,
        };
        let (a, b) = (
            Arc::new(Semaphore::new(MAX_LOOKUPS_PER_APP)),
            Arc::new(Semaphore::new(MAX_LOOKUPS_PER_APP)),
        );
        let silent = SILENT.lock().unwrap_or_else(PoisonError::into_inner);
        // App A asks for as many lookups as the node has, giving up on each.
        for i in 0..MAX_LOOKUPS {
            assert!(!resolves_in(20, &resolver, &a, &format!("stuck{i}.example")).await);
        }
        assert_eq!(
            resolver.lookups.available_permits(),
            MAX_LOOKUPS - MAX_LOOKUPS_PER_APP,
            "only A's share of threads is stuck"
        );
        assert!(
            resolves(&resolver, &b, "fine.example").await,
            "B still looks names up"
        );
        assert!(
            !resolves(&resolver, &a, "fine.example").await,
            "A waits for its own"
        );
        drop(silent);
        for _ in 0..100 {
            if resolver.lookups.available_permits() == MAX_LOOKUPS {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            resolves(&resolver, &a, "fine.example").await,
            "A's come back"
        );
    }

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
            "::ffff:0:7f00:1",
            "::ffff:0:a9fe:a9fe",
            "64:ff9b:1::a00:1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "2001:db8::1",
            "100::1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        // This machine's own addresses are its interfaces' (loopback's among them), and none
        // is reachable.
        assert!(own_addresses().contains(&"127.0.0.1".parse::<IpAddr>().unwrap()));
        assert!(own_addresses().iter().all(|own| !reachable(*own)));
        // A machine with a public address of its own: neither it nor its IPv4-mapped form.
        let own: HashSet<IpAddr> = ["93.184.216.34".parse().unwrap()].into();
        for refused in ["93.184.216.34", "::ffff:93.184.216.34"] {
            assert!(
                !reachable_beside(refused.parse().unwrap(), &own),
                "{refused}"
            );
        }
        assert!(reachable_beside("1.1.1.1".parse().unwrap(), &own));
        for public in [
            "1.1.1.1",
            "93.184.216.34",
            "2606:4700::1111",
            "::ffff:0:101:101",
            "2001:4860:4860::8888",
        ] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }
}
