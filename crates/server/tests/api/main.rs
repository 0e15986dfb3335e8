//! Integration tests of the HTTP API, through real sockets against the real server with real
//! SQLite databases in a temporary data directory. One test binary (link time matters on small
//! machines); one module per area.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod apps;
mod auth;
mod channels;
mod connections;
mod console;
mod data;
mod errors;
mod files;
mod hostile;
mod http;
mod lifecycle;
mod messages;
mod payments;
mod postgres;
mod queues;
mod realtime;
mod sites;
mod support;
