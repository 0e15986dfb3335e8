//! The capabilities a running function reaches outside its runtime, each one module here with
//! its JavaScript beside it (`<name>.js`), registered in [`all`], the one place that lists them.
//! A new one (`ctx.files`, `ctx.queue`, …) is a module that implements
//! `cloudlet_core::functions::Capability` and a line in [`all`]; the engine, the worker protocol
//! and the other capabilities do not change.

mod db;
mod fetch;
mod files;
mod messages;
mod pay;
mod queue;
mod realtime;

use cloudlet_core::data::Data;
use cloudlet_core::files::Files;
use cloudlet_core::functions::{Capabilities, HostFailure};
use cloudlet_core::messages::Messages;
use cloudlet_core::payments::Payments;
use cloudlet_core::queues::Queues;
use cloudlet_core::realtime::Hub;

pub use fetch::Fetcher;

use crate::error::ApiError;

/// Every capability of the instance.
pub fn all(
    data: Data,
    queues: Queues,
    messages: Messages,
    payments: Payments,
    files: Files,
    hub: Hub,
    fetcher: Fetcher,
) -> Capabilities {
    Capabilities::new()
        .with(db::Database { data })
        .with(files::FileAccess {
            files,
            reads: std::sync::Arc::new(tokio::sync::Semaphore::new(files::READS_IN_FLIGHT_BYTES)),
            app_reads: cloudlet_core::shares::AppShares::new(files::READS_IN_FLIGHT_BYTES_PER_APP),
        })
        .with(queue::Queue { queues })
        .with(realtime::Realtime { hub })
        .with(messages::SubscribeMessages { messages })
        .with(pay::Pay { payments })
        .with(fetcher)
}

/// A domain error as a host call's failure: the same code and message the HTTP API answers.
fn failure(error: impl Into<ApiError>) -> HostFailure {
    let error = error.into();
    HostFailure::new(error.code.as_str(), error.message)
}
