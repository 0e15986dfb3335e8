//! The state every handler shares: a cheap clone over one `Arc`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use cloudlet_core::access::Access;
use cloudlet_core::apps::Apps;
use cloudlet_core::auth::Auth;
use cloudlet_core::console::Console;
use cloudlet_core::data::Data;
use cloudlet_core::files::Files;
use cloudlet_core::functions::Functions;
use cloudlet_core::messages::Messages;
use cloudlet_core::payments::Payments;
use cloudlet_core::queues::Queues;
use cloudlet_core::random::Random;
use cloudlet_core::realtime::Hub;
use cloudlet_core::sites::Sites;
use cloudlet_store::{AppName, SystemStore};
use tokio_util::task::TaskTracker;

use crate::limits::AuthLimits;
use crate::metrics::Metrics;

/// Console writes that may run at once on a node; more are refused `429`.
const CONSOLE_WRITES: usize = 64;
/// Of those, one person's: a few at once is plenty for a person at a page, and one person (a
/// developer of one app, uploading slowly) must not hold every other person's.
const CONSOLE_WRITES_PER_PERSON: usize = 8;
/// The console's live sockets open at once on a node: each looks at its app every 2 seconds.
const CONSOLE_LIVE: usize = 64;
/// Of those, one person's: a few pages open, not the node's every place.
const CONSOLE_LIVE_PER_PERSON: usize = 4;

/// A node's places for one kind of console work, of which one person holds at most a few.
struct PersonPlaces {
    node: Arc<tokio::sync::Semaphore>,
    /// Each person's places held.
    people: Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
    per_person: usize,
}

impl PersonPlaces {
    fn new(node: usize, per_person: usize) -> Self {
        PersonPlaces {
            node: Arc::new(tokio::sync::Semaphore::new(node)),
            people: Arc::default(),
            per_person,
        }
    }

    /// A place for one more of `person`'s, if the node and they have one.
    fn take(&self, person: &str) -> Option<ConsolePlace> {
        let people = Arc::clone(&self.people);
        {
            let mut counts = people
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let held = counts.entry(person.to_owned()).or_default();
            if *held >= self.per_person {
                return None;
            }
            *held += 1;
        }
        // Counted now: if the node has no place, dropping this gives the person's back.
        let mut place = ConsolePlace {
            _permit: None,
            people,
            person: person.to_owned(),
        };
        place._permit = Some(Arc::clone(&self.node).try_acquire_owned().ok()?);
        Some(place)
    }
}

/// A person's place on the node for a console write or live socket, given back when dropped.
pub struct ConsolePlace {
    /// Held while the work runs.
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
    people: Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
    person: String,
}

impl Drop for ConsolePlace {
    fn drop(&mut self) {
        let mut counts = self
            .people
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(held) = counts.get_mut(&self.person) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                counts.remove(&self.person);
            }
        }
    }
}

#[derive(Clone)]
pub struct AppState(Arc<Shared>);

/// [`AppState`] without keeping it alive.
pub(crate) struct WeakState(std::sync::Weak<Shared>);

impl WeakState {
    pub(crate) fn upgrade(&self) -> Option<AppState> {
        self.0.upgrade().map(AppState)
    }
}

struct Shared {
    apps: Apps,
    auth: Auth,
    data: Data,
    functions: Functions,
    messages: Messages,
    payments: Payments,
    queues: Queues,
    sites: Sites,
    files: Files,
    realtime: Hub,
    console: Console,
    usage: crate::usage::Usage,
    app_limits: crate::apps::AppLimits,
    /// Console writes running at once (each runs to its end even if its client leaves).
    console_writes: PersonPlaces,
    /// The console's live sockets open, and each person's count of them.
    console_live: PersonPlaces,
    /// Whether the console's session cookie is marked `Secure`.
    console_secure_cookie: bool,
    /// How long the console's audit log keeps an entry; none: for ever.
    console_keep_audit: Option<std::time::Duration>,
    limits: AuthLimits,
    access: Access,
    system: Arc<dyn SystemStore>,
    /// The OpenAPI document, as served.
    contract: String,
    metrics: Metrics,
    /// Background work (trigger and schedule runs, the loops that start them, idle sweeps):
    /// joined at shutdown before the databases close.
    tasks: TaskTracker,
    /// Request ids are this random prefix and a counter: unique, and no syscall per request.
    request_id_prefix: String,
    requests: AtomicU64,
    /// False once shutdown has begun, so that load balancers stop sending traffic.
    accepting: AtomicBool,
    /// The places of queue consumers' runs on this node (the dispatcher's, and sends').
    places: crate::queues::Places,
}

/// The services every handler reaches.
pub struct Services {
    pub apps: Apps,
    pub auth: Auth,
    pub data: Data,
    pub functions: Functions,
    pub messages: Messages,
    pub payments: Payments,
    pub queues: Queues,
    pub sites: Sites,
    pub files: Files,
    pub realtime: Hub,
    pub console: Console,
    pub console_secure_cookie: bool,
    pub console_keep_audit: Option<std::time::Duration>,
    pub usage: crate::usage::Usage,
    pub app_limits: crate::apps::AppLimits,
    pub access: Access,
    pub system: Arc<dyn SystemStore>,
}

impl AppState {
    pub fn new(
        services: Services,
        limits: AuthLimits,
        contract: &utoipa::openapi::OpenApi,
        random: &dyn Random,
    ) -> Self {
        let Services {
            apps,
            auth,
            data,
            functions,
            messages,
            payments,
            queues,
            sites,
            files,
            realtime,
            console,
            console_secure_cookie,
            console_keep_audit,
            usage,
            app_limits,
            access,
            system,
        } = services;
        let mut prefix = [0u8; 8];
        random.fill(&mut prefix);
        AppState(Arc::new(Shared {
            apps,
            auth,
            data,
            functions,
            messages,
            payments,
            queues,
            sites,
            files,
            realtime,
            console,
            console_secure_cookie,
            console_keep_audit,
            usage,
            app_limits,
            console_writes: PersonPlaces::new(CONSOLE_WRITES, CONSOLE_WRITES_PER_PERSON),
            console_live: PersonPlaces::new(CONSOLE_LIVE, CONSOLE_LIVE_PER_PERSON),
            limits,
            access,
            system,
            contract: contract.to_json().unwrap_or_default(),
            metrics: Metrics::default(),
            tasks: TaskTracker::new(),
            request_id_prefix: prefix.iter().map(|b| format!("{b:02x}")).collect(),
            requests: AtomicU64::new(0),
            accepting: AtomicBool::new(true),
            places: crate::queues::Places::default(),
        }))
    }

    pub fn apps(&self) -> &Apps {
        &self.0.apps
    }

    pub fn auth(&self) -> &Auth {
        &self.0.auth
    }

    pub fn data(&self) -> &Data {
        &self.0.data
    }

    pub fn functions(&self) -> &Functions {
        &self.0.functions
    }

    pub fn messages(&self) -> &Messages {
        &self.0.messages
    }

    pub fn payments(&self) -> &Payments {
        &self.0.payments
    }

    pub fn queues(&self) -> &Queues {
        &self.0.queues
    }

    pub fn sites(&self) -> &Sites {
        &self.0.sites
    }

    pub fn files(&self) -> &Files {
        &self.0.files
    }

    pub fn realtime(&self) -> &Hub {
        &self.0.realtime
    }

    pub fn console(&self) -> &Console {
        &self.0.console
    }

    /// A place for one more live console socket of `person`, if the node and they have one.
    pub fn console_live(&self, person: &str) -> Option<ConsolePlace> {
        self.0.console_live.take(person)
    }

    /// A place for one more console write of `person`, if the node and they have one.
    pub fn console_write(&self, person: &str) -> Option<ConsolePlace> {
        self.0.console_writes.take(person)
    }

    pub fn usage(&self) -> &crate::usage::Usage {
        &self.0.usage
    }

    /// The limits every app runs under.
    pub fn app_limits(&self) -> &crate::apps::AppLimits {
        &self.0.app_limits
    }

    pub fn console_keep_audit(&self) -> Option<std::time::Duration> {
        self.0.console_keep_audit
    }

    pub fn console_secure_cookie(&self) -> bool {
        self.0.console_secure_cookie
    }

    pub fn limits(&self) -> &AuthLimits {
        &self.0.limits
    }

    pub fn access(&self) -> &Access {
        &self.0.access
    }

    pub fn system(&self) -> &dyn SystemStore {
        &*self.0.system
    }

    /// The OpenAPI document (JSON).
    pub fn contract(&self) -> &str {
        &self.0.contract
    }

    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    /// Drops what the services cached of an app whose database idled out: its collections
    /// and rules, buckets, functions, declared queues, keys and revocations (each read again
    /// on next use), so that a node's memory follows the apps in use, not every app it ever
    /// served.
    pub fn forget_idle(&self, app: &AppName) {
        self.data().forget_app(app);
        self.files().forget(app);
        self.functions().heard(app);
        self.queues().heard(app);
        self.auth().forget_idle(app);
    }

    /// Where background work is spawned, so that shutdown waits for it.
    pub(crate) fn places(&self) -> &crate::queues::Places {
        &self.0.places
    }

    /// A handle that does not keep the state alive (for what the state itself holds).
    pub(crate) fn downgrade(&self) -> WeakState {
        WeakState(Arc::downgrade(&self.0))
    }

    pub fn tasks(&self) -> &TaskTracker {
        &self.0.tasks
    }

    pub fn is_accepting(&self) -> bool {
        self.0.accepting.load(Ordering::SeqCst)
    }

    pub fn stop_accepting(&self) {
        self.0.accepting.store(false, Ordering::SeqCst);
    }

    /// 32 hex digits: the process's random prefix, then a counter.
    pub fn new_request_id(&self) -> String {
        let n = self.0.requests.fetch_add(1, Ordering::Relaxed);
        format!("{}{n:016x}", self.0.request_id_prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_person_holds_a_few_of_the_nodes_places_and_gives_them_back() {
        let places = PersonPlaces::new(5, 3);
        let mallory: Vec<ConsolePlace> = (0..3).map(|_| places.take("mallory").unwrap()).collect();
        assert!(
            places.take("mallory").is_none(),
            "a person's share is taken"
        );
        let alice = places.take("alice").unwrap();
        let _bob = places.take("bob").unwrap();
        assert!(
            places.take("carol").is_none(),
            "the node's places are taken"
        );
        assert!(places.take("mallory").is_none());
        drop(alice);
        let _carol = places.take("carol").unwrap();
        drop(mallory);
        assert!(
            places.take("mallory").is_some(),
            "dropped places are given back"
        );
        let counts = places
            .people
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        assert_eq!(
            counts.get("alice"),
            None,
            "a person holding nothing is forgotten"
        );
    }
}
