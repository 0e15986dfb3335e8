//! A checked expression that any backend can compile, and the request values its symbolic
//! parameters stand for. Domain code hands these to storage; each storage backend compiles them
//! for its own dialect, so no SQL of any dialect crosses the storage boundary.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use crate::ast::Expr;
use crate::check::check;
use crate::error::QueryError;
use crate::eval::{Eval, Record};
use crate::schema::Schema;
use crate::sql::{Dialect, Param, SqlBuilder, Value};

/// An expression checked against a schema. Compiling it cannot fail; the SQL of each dialect
/// with placeholders numbered from 1 is built once and kept.
#[derive(Debug)]
pub struct Predicate {
    expr: Expr,
    schema: Arc<Schema>,
    sqlite: OnceLock<Compiled>,
    postgres: OnceLock<Compiled>,
}

/// SQL of one dialect and the parameters its placeholders stand for, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Compiled {
    pub sql: String,
    pub params: Vec<Param>,
}

impl Predicate {
    /// Checks `expr` against `schema`.
    pub fn new(expr: Expr, schema: Arc<Schema>) -> Result<Self, QueryError> {
        check(&expr, &schema)?;
        Ok(Predicate {
            expr,
            schema,
            sqlite: OnceLock::new(),
            postgres: OnceLock::new(),
        })
    }

    /// Whether the expression refers to the body being written (`@request.data.…`), so that
    /// its bindings need the body's values.
    pub fn uses_request_data(&self) -> bool {
        self.sql(Dialect::Sqlite)
            .params
            .iter()
            .any(|p| matches!(p, Param::RequestData(_) | Param::RequestDataLeftOut(_)))
    }

    /// The expression's truth for `record` (its columns as stored, see [`Record`]) and the
    /// caller of `bindings`, in memory: `Some(true)`, `Some(false)`, or `None` for unknown (a
    /// comparison with a null decided it), exactly as the compiled SQL would answer.
    pub fn eval(&self, record: &Record, bindings: &Bindings) -> Option<bool> {
        Eval {
            schema: &self.schema,
            record,
            bindings,
        }
        .expr(&self.expr)
    }

    /// Whether `record` is one the compiled SQL would return: the expression is true for it.
    pub fn matches(&self, record: &Record, bindings: &Bindings) -> bool {
        self.eval(record, bindings) == Some(true)
    }

    /// The SQL for `dialect` with placeholders numbered from 1, built on first use.
    pub fn sql(&self, dialect: Dialect) -> &Compiled {
        let cell = match dialect {
            Dialect::Sqlite => &self.sqlite,
            Dialect::Postgres => &self.postgres,
        };
        cell.get_or_init(|| self.sql_after(dialect, 0))
    }

    /// The SQL for `dialect` with placeholders numbered after `taken` others.
    pub fn sql_after(&self, dialect: Dialect, taken: usize) -> Compiled {
        let mut builder = SqlBuilder::after(dialect, taken);
        let sql = builder.compile_checked(&self.expr, &self.schema);
        Compiled {
            sql,
            params: builder.into_params(),
        }
    }
}

/// What the symbolic parameters of a predicate stand for in one request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Bindings {
    /// The caller's user id; `None` when anonymous (every comparison with it is then unknown).
    pub auth_id: Option<String>,
    pub auth_provider: Option<String>,
    /// The request's time, in Unix milliseconds.
    pub now_ms: i64,
    /// The fields of the body being written, already converted to their columns' values.
    pub request_data: BTreeMap<String, Value>,
}

impl Bindings {
    /// The value `param` stands for.
    pub fn resolve(&self, param: &Param) -> Value {
        let text = |t: &Option<String>| t.clone().map_or(Value::Null, Value::Text);
        match param {
            Param::Value(value) => value.clone(),
            Param::AuthId => text(&self.auth_id),
            Param::AuthProvider => text(&self.auth_provider),
            Param::Now => Value::Int(self.now_ms),
            Param::RequestDataLeftOut(field) => match self.request_data.contains_key(field) {
                true => Value::Int(1),
                false => Value::Null,
            },
            Param::RequestData(field) => {
                self.request_data.get(field).cloned().unwrap_or(Value::Null)
            }
        }
    }
}
