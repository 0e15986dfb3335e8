//! The store's integration tests, one binary: the same scenarios through the traits on SQLite
//! and on PostgreSQL (`users`, `system`, `queues`, `files`, `payments`, `events`), what only PostgreSQL has
//! (`postgres`), and the blob stores on a local directory and on a real S3 server (`blobs`).
//! One binary links the store once instead of four times, which keeps CI's disk and link time
//! small.

mod backends;
mod blobs;
mod console;
mod events;
mod files;
mod payments;
mod postgres;
mod queues;
mod system;
mod users;
