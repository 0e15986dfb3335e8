//! The embedded JavaScript engine: QuickJS (through `rquickjs`) in supervised worker processes.
//!
//! - [`protocol`]: the frames the server and a worker exchange over the worker's pipes.
//! - [`engine`]: inside a worker: compiling to bytecode, runtimes per function version, limits,
//!   the prelude (console, timers, fetch, URL, TextEncoder, atob, crypto) and host calls.
//! - [`worker`]: the `cloudlet worker` process loop.
//! - [`pool`]: inside the server: spawning, feeding and killing workers.
//!
//! Knows nothing of apps, users or storage: a host call is a method name and JSON, answered by
//! whoever holds the pool.

pub mod engine;
pub mod pool;
pub mod protocol;
pub mod worker;
