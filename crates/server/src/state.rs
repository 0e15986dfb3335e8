//! The state every handler shares: a cheap clone over one `Arc`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use cloudlet_core::access::Access;
use cloudlet_core::apps::Apps;
use cloudlet_core::random::Random;
use cloudlet_store::SystemStore;

use crate::metrics::Metrics;

#[derive(Clone)]
pub struct AppState(Arc<Shared>);

pub struct Shared {
    pub apps: Apps,
    pub access: Access,
    pub system: Arc<dyn SystemStore>,
    pub metrics: Metrics,
    pub random: Arc<dyn Random>,
    /// False once shutdown has begun, so that load balancers stop sending traffic.
    pub accepting: AtomicBool,
}

impl AppState {
    pub fn new(shared: Shared) -> Self {
        AppState(Arc::new(shared))
    }

    pub fn apps(&self) -> &Apps {
        &self.0.apps
    }

    pub fn access(&self) -> &Access {
        &self.0.access
    }

    pub fn system(&self) -> &dyn SystemStore {
        &*self.0.system
    }

    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    pub fn is_accepting(&self) -> bool {
        self.0.accepting.load(Ordering::SeqCst)
    }

    pub fn stop_accepting(&self) {
        self.0.accepting.store(false, Ordering::SeqCst);
    }

    /// 16 random bytes in hex.
    pub fn new_request_id(&self) -> String {
        let mut bytes = [0u8; 16];
        self.0.random.fill(&mut bytes);
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}
