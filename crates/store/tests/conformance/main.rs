//! The store's integration tests, one binary: the same scenarios through the traits on SQLite
//! and on PostgreSQL (`users`, `system`, `queues`), and what only PostgreSQL has (`postgres`).
//! One binary links the store once instead of four times, which keeps CI's disk and link time
//! small.

mod postgres;
mod queues;
mod system;
mod users;
