//! Cloudlet's domain services. Each module owns one domain, its rules and its error type; the
//! HTTP layer in `cloudlet-server` maps those errors to stable codes.
//!
//! - [`apps`]: tenants: names, creation and deletion, secret keys, their databases.
//! - [`access`]: who is calling the admin API: the admin token or an app's secret key.
//! - [`console`]: the web console's people, their roles, sessions and audit log.
//! - [`auth`]: end users: login providers, sessions, access tokens, accounts.
//! - [`data`]: collections, records and the rules that guard them; change events.
//! - [`functions`]: deployed JavaScript, its versions, environment secrets, invocations, logs.
//! - [`messages`]: subscribe messages: the consent ledger, sending through a queue.
//! - [`payments`]: WeChat Pay: merchants, orders, verified callbacks, refunds, reconciliation.
//! - [`queues`]: durable queues: sends, claims with leases, retries, dead letters.
//! - [`sealing`]: secrets encrypted at rest under the instance's master key.
//! - [`clock`] and [`random`]: the one door for time and randomness, so tests can control both.
//! - [`secrets`]: generating, hashing and comparing bearer secrets.
//! - [`sites`]: each app's static site, served at `/sites/{app}/`.
//!
//! Services see storage only through the traits of `cloudlet-store`; they never name a driver.

pub mod access;
pub mod apps;
pub mod auth;
pub mod clock;
pub mod console;
pub mod data;
pub mod files;
pub mod functions;
pub mod messages;
pub mod passwords;
pub mod payments;
pub mod queues;
pub mod random;
pub mod realtime;
pub mod sealing;
pub mod secrets;
pub mod shares;
pub mod sites;
pub mod thumbs;
