//! The one expression language of filters and access rules, e.g.
//!
//! ```text
//! owner = @auth.id && (done = false || meta.priority >= 3) && title ~ 'milk'
//! ```
//!
//! An expression is [`parse`]d once into an [`Expr`] (every node knows its position in the
//! source), [`check`]ed against a collection's [`Schema`] (unknown fields and mismatched types
//! are errors with their position), and compiled by [`SqlBuilder`] to SQL for SQLite or
//! PostgreSQL in which every value is a bound parameter, never text in the SQL. Values that
//! depend on the request (`@auth.id`, `@now`, `@request.data.x`) stay symbolic ([`Param`]) so
//! that the compiled SQL can be cached per schema version and reused for every caller.
//!
//! This crate does no I/O.

mod ast;
mod check;
mod error;
mod eval;
mod parse;
mod predicate;
mod schema;
mod sql;

pub use ast::{CompareOp, Expr, Literal, Operand, Variable};
pub use check::check;
pub use error::{ErrorKind, QueryError};
pub use eval::Record;
pub use parse::{Limits, parse};
pub use predicate::{Bindings, Compiled, Predicate};
pub use schema::{FieldType, Schema};
pub use sql::{Dialect, Param, SqlBuilder, Value};
