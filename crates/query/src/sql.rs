//! Compiling checked expressions to SQL. Every value becomes a bound parameter; identifiers come
//! only from the schema and are quoted; JSON paths are built from checked segments and bound.
//!
//! Storage conventions the SQL relies on: one column per field, named as the field; bools as
//! 0/1 on SQLite and `boolean` on PostgreSQL; datetimes as Unix milliseconds (integer /
//! `bigint`); JSON as text on SQLite and `jsonb` on PostgreSQL.

use crate::ast::{CompareOp, Expr, Literal, Operand, Variable};
use crate::check::{Ty, check, datetime_ms, type_of};
use crate::error::QueryError;
use crate::schema::{FieldType, Schema};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// The placeholder of parameter `n` (from 1): every crate numbers placeholders through this.
    pub fn placeholder(self, n: usize) -> String {
        match self {
            // `$1` would be a *named* parameter in SQLite.
            Dialect::Sqlite => format!("?{n}"),
            Dialect::Postgres => format!("${n}"),
        }
    }
}

/// A value bound to a parameter.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

/// A parameter of compiled SQL: a value known now, or one the request supplies.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    Value(Value),
    /// The caller's user id (null when anonymous).
    AuthId,
    AuthProvider,
    /// The request's time, in Unix milliseconds.
    Now,
    /// A field of the body being written.
    RequestData(String),
    /// Null when the body being written leaves the field out, 1 when it has the field (even
    /// as `null`): `@request.data.field = null`.
    RequestDataLeftOut(String),
}

/// Compiles expressions into SQL fragments that share one list of parameters, so that a rule
/// and a filter can be ANDed into one statement.
#[derive(Debug, Clone)]
pub struct SqlBuilder {
    dialect: Dialect,
    params: Vec<Param>,
    /// Placeholders already used by SQL this builder's output joins.
    offset: usize,
}

/// The PostgreSQL type a parameter is cast to (PostgreSQL can not always infer it).
#[derive(Debug, Clone, Copy)]
enum Cast {
    Text,
    TextArray,
    BigInt,
    Float,
    Bool,
    /// JSON sent as its text.
    Json,
}

impl SqlBuilder {
    pub fn new(dialect: Dialect) -> Self {
        Self::after(dialect, 0)
    }

    /// A builder whose placeholders continue after `taken` others (those of SQL it will be
    /// joined with); its params list holds only its own.
    pub fn after(dialect: Dialect, taken: usize) -> Self {
        SqlBuilder {
            dialect,
            params: Vec::new(),
            offset: taken,
        }
    }

    pub fn params(&self) -> &[Param] {
        &self.params
    }

    pub fn into_params(self) -> Vec<Param> {
        self.params
    }

    /// Checks `expr` against `schema` and compiles it to a boolean SQL expression.
    pub fn compile(&mut self, expr: &Expr, schema: &Schema) -> Result<String, QueryError> {
        check(expr, schema)?;
        Ok(self.expr(expr, schema))
    }

    /// Compiles an expression already checked against `schema`.
    pub(crate) fn compile_checked(&mut self, expr: &Expr, schema: &Schema) -> String {
        self.expr(expr, schema)
    }

    fn expr(&mut self, expr: &Expr, schema: &Schema) -> String {
        match expr {
            Expr::And(a, b) => format!("({} AND {})", self.expr(a, schema), self.expr(b, schema)),
            Expr::Or(a, b) => format!("({} OR {})", self.expr(a, schema), self.expr(b, schema)),
            // NOT of an unknown (NULL) comparison stays unknown: the row is not returned either
            // way, which is the safe answer for a rule.
            Expr::Not(inner, _) => format!("(NOT {})", self.expr(inner, schema)),
            Expr::Truth(operand) => {
                let literal = Operand::Literal {
                    literal: Literal::Bool(true),
                    at: operand.position(),
                };
                self.compare(operand, CompareOp::Eq, &literal, schema)
            }
            Expr::Compare {
                left, op, right, ..
            } => self.compare(left, *op, right, schema),
            Expr::In { left, list, .. } if self.is_json(left, schema) => {
                // Each item compares with a JSON value of its own type only.
                let mut groups: Vec<(JsonKind, Vec<&Operand>)> = Vec::new();
                for item in list {
                    let Some(kind) = json_kind(type_of(item, schema).unwrap_or(Ty::Null)) else {
                        continue;
                    };
                    match groups.iter_mut().find(|(k, _)| *k == kind) {
                        Some((_, items)) => items.push(item),
                        None => groups.push((kind, vec![item])),
                    }
                }
                if groups.is_empty() {
                    return "(NULL)".into();
                }
                let alternatives: Vec<String> = groups
                    .into_iter()
                    .map(|(kind, items)| {
                        let left_sql = self.json_guarded(left, kind);
                        let items: Vec<String> = items
                            .into_iter()
                            .map(|item| self.value_side(item, schema, true))
                            .collect();
                        format!("({left_sql} IN ({}))", items.join(", "))
                    })
                    .collect();
                format!("({})", alternatives.join(" OR "))
            }
            Expr::In { left, list, .. } => {
                let left_sql = self.operand(left, schema);
                // Beside a datetime, a time's text is its milliseconds, as in a comparison.
                let datetime = matches!(type_of(left, schema), Ok(Ty::Datetime));
                let items: Vec<String> = list
                    .iter()
                    .map(|item| self.side(item, schema, false, datetime))
                    .collect();
                format!("({left_sql} IN ({}))", items.join(", "))
            }
        }
    }

    fn is_json(&self, operand: &Operand, schema: &Schema) -> bool {
        matches!(type_of(operand, schema), Ok(Ty::Json))
    }

    fn compare(
        &mut self,
        left: &Operand,
        op: CompareOp,
        right: &Operand,
        schema: &Schema,
    ) -> String {
        let is_null = |o: &Operand| {
            matches!(
                o,
                Operand::Literal {
                    literal: Literal::Null,
                    ..
                }
            )
        };
        if is_null(left) || is_null(right) {
            let (other, null_both) = if is_null(left) {
                (right, is_null(right))
            } else {
                (left, false)
            };
            let test = if op == CompareOp::Eq {
                "IS NULL"
            } else {
                "IS NOT NULL"
            };
            if null_both {
                return format!("(NULL {test})");
            }
            // `@request.data.x = null` asks whether the body leaves x out: a body that sets it
            // to null sets it (to clear it), so a rule keeping x unchanged refuses that too.
            if let (
                CompareOp::Eq,
                Operand::Variable {
                    variable: Variable::RequestData(field),
                    ..
                },
            ) = (op, other)
            {
                let sql = self.param(Param::RequestDataLeftOut(field.clone()), Cast::BigInt);
                return format!("({sql} IS NULL)");
            }
            let sql = self.operand(other, schema);
            // A JSON `null` is null, as a missing key is (PostgreSQL's `#>` answers the JSON
            // value `null`, SQLite's `json_extract` SQL NULL).
            if self.dialect == Dialect::Postgres && self.is_json(other, schema) {
                return format!("(NULLIF({sql}, 'null'::jsonb) {test})");
            }
            return format!("({sql} {test})");
        }
        match op {
            CompareOp::Contains | CompareOp::NotContains => {
                let sql = self.contains(left, right, schema);
                if op == CompareOp::NotContains {
                    format!("(NOT {sql})")
                } else {
                    sql
                }
            }
            _ if self.is_json(left, schema) != self.is_json(right, schema) => {
                // A JSON value compares only with a value of its own type; any other (and JSON
                // null) makes the comparison unknown, on both databases alike.
                let (json_side, other) = if self.is_json(left, schema) {
                    (left, right)
                } else {
                    (right, left)
                };
                let Some(kind) = json_kind(type_of(other, schema).unwrap_or(Ty::Null)) else {
                    return "(NULL)".into();
                };
                let (l, r) = if std::ptr::eq(json_side, left) {
                    let l = self.json_guarded(left, kind);
                    (l, self.value_side(right, schema, true))
                } else {
                    let l = self.value_side(left, schema, true);
                    (l, self.json_guarded(right, kind))
                };
                format!("({l} {} {r})", symbol(op))
            }
            _ => {
                let json = self.is_json(left, schema) || self.is_json(right, schema);
                let datetime = matches!(type_of(left, schema), Ok(Ty::Datetime))
                    || matches!(type_of(right, schema), Ok(Ty::Datetime));
                let l = self.side(left, schema, json, datetime);
                let r = self.side(right, schema, json, datetime);
                // Two texts with no column to give their collation (`@request.data.title >=
                // 'm'`) order by the database's locale on PostgreSQL: byte by byte, as every
                // text column and SQLite. Only ordering: equality is the same in every locale
                // PostgreSQL sets a database to, and a column's own collation keeps its index.
                let field = |o: &Operand| matches!(o, Operand::Field { .. });
                let ordering = matches!(
                    op,
                    CompareOp::Lt | CompareOp::Le | CompareOp::Gt | CompareOp::Ge
                );
                let text = |o: &Operand| matches!(type_of(o, schema), Ok(Ty::Text));
                if self.dialect == Dialect::Postgres
                    && ordering
                    && !datetime
                    && !json
                    && !field(left)
                    && !field(right)
                    && text(left)
                    && text(right)
                {
                    return format!("({l} COLLATE \"C\" {} {r})", symbol(op));
                }
                format!("({l} {} {r})", symbol(op))
            }
        }
    }

    /// A JSON operand as a value of `kind`, or NULL when it holds another type (or JSON null,
    /// or nothing).
    fn json_guarded(&mut self, operand: &Operand, kind: JsonKind) -> String {
        let Operand::Field { path, .. } = operand else {
            // The one JSON operand that is not a field: a JSON field's value in the body being
            // written, bound as its JSON text. As in memory, it compares with no value (only
            // with null): on SQLite the text `"admin"` would differ from 'admin' and order
            // after every number, so `@request.data.meta != 'admin'` held for "admin".
            return "(NULL)".into();
        };
        let column = quote(&path[0]);
        match self.dialect {
            Dialect::Sqlite => {
                let types = match kind {
                    JsonKind::Number => "'integer', 'real'",
                    JsonKind::Text => "'text'",
                    JsonKind::Bool => "'true', 'false'",
                };
                let p = if path.len() == 1 {
                    "'$'".to_owned()
                } else {
                    self.param(
                        Param::Value(Value::Text(sqlite_path(&path[1..]))),
                        Cast::Text,
                    )
                };
                format!(
                    "(CASE WHEN json_type({column}, {p}) IN ({types}) THEN json_extract({column}, {p}) END)"
                )
            }
            Dialect::Postgres => {
                let json_type = match kind {
                    JsonKind::Number => "number",
                    JsonKind::Text => "string",
                    JsonKind::Bool => "boolean",
                };
                let value = if path.len() == 1 {
                    column
                } else {
                    self.pg_at(&column, &path[1..])
                };
                format!("(CASE WHEN jsonb_typeof({value}) = '{json_type}' THEN {value} END)")
            }
        }
    }

    /// One side of a comparison: JSON values are compared as JSON on PostgreSQL, and text
    /// literals compared with datetimes become milliseconds.
    fn side(&mut self, operand: &Operand, schema: &Schema, json: bool, datetime: bool) -> String {
        if let Operand::Literal {
            literal: Literal::Text(text),
            ..
        } = operand
            && datetime
            && let Some(ms) = datetime_ms(text)
        {
            return self.param(Param::Value(Value::Int(ms)), Cast::BigInt);
        }
        if json && !self.is_json(operand, schema) {
            return self.value_side(operand, schema, true);
        }
        self.operand(operand, schema)
    }

    /// A non-JSON operand used where a JSON value is compared: wrapped as JSON on PostgreSQL.
    fn value_side(&mut self, operand: &Operand, schema: &Schema, json: bool) -> String {
        let sql = self.operand(operand, schema);
        if json && self.dialect == Dialect::Postgres && !self.is_json(operand, schema) {
            format!("to_jsonb({sql})")
        } else {
            sql
        }
    }

    /// `~`: text contains (case-insensitive), or JSON array contains.
    fn contains(&mut self, field: &Operand, value: &Operand, schema: &Schema) -> String {
        let Operand::Literal { literal, .. } = value else {
            unreachable!("checked: ~ takes a literal");
        };
        if self.is_json(field, schema) {
            let (param, cast) = literal_param(literal);
            return match self.dialect {
                Dialect::Sqlite => {
                    // As PostgreSQL's `@>` of a one-element array: only an array contains,
                    // and only an element of the value's own JSON type; any other JSON value
                    // (null included) does not; nothing there is unknown.
                    let Operand::Field { path, .. } = field else {
                        unreachable!("checked: a field");
                    };
                    let column = quote(&path[0]);
                    let json_path = if path.len() > 1 {
                        self.param(
                            Param::Value(Value::Text(sqlite_path(&path[1..]))),
                            Cast::Text,
                        )
                    } else {
                        "'$'".to_owned()
                    };
                    let types = match literal {
                        Literal::Int(_) | Literal::Float(_) => "'integer', 'real'",
                        Literal::Bool(_) => "'true', 'false'",
                        _ => "'text'",
                    };
                    let p = self.param(param, cast);
                    // (`?N` may stand twice for one parameter.)
                    let json_type = format!("json_type({column}, {json_path})");
                    format!(
                        "(CASE WHEN {json_type} IS NULL THEN NULL WHEN {json_type} = 'array' \
                         THEN EXISTS (SELECT 1 FROM json_each({column}, {json_path}) \
                         WHERE type IN ({types}) AND value = {p}) ELSE 0 END)"
                    )
                }
                Dialect::Postgres => {
                    let column = self.operand(field, schema);
                    let p = self.param(param, cast);
                    format!("({column} @> jsonb_build_array({p}))")
                }
            };
        }
        let Literal::Text(text) = literal else {
            unreachable!("checked: text for a text field");
        };
        let column = self.operand(field, schema);
        let pattern = format!("%{}%", escape_like(text));
        let p = self.param(Param::Value(Value::Text(pattern)), Cast::Text);
        match self.dialect {
            Dialect::Sqlite => format!("({column} LIKE {p} ESCAPE '\\')"),
            Dialect::Postgres => format!("({column} ILIKE {p} ESCAPE '\\')"),
        }
    }

    fn operand(&mut self, operand: &Operand, schema: &Schema) -> String {
        match operand {
            Operand::Field { path, .. } => {
                let column = quote(&path[0]);
                if path.len() == 1 {
                    return column;
                }
                match self.dialect {
                    Dialect::Sqlite => {
                        let p = self.param(
                            Param::Value(Value::Text(sqlite_path(&path[1..]))),
                            Cast::Text,
                        );
                        format!("json_extract({column}, {p})")
                    }
                    Dialect::Postgres => self.pg_at(&column, &path[1..]),
                }
            }
            Operand::Variable { variable, .. } => match variable {
                Variable::AuthId => self.param(Param::AuthId, Cast::Text),
                Variable::AuthProvider => self.param(Param::AuthProvider, Cast::Text),
                Variable::Now => self.param(Param::Now, Cast::BigInt),
                Variable::RequestData(field) => {
                    let cast = match schema.field(field) {
                        Some(FieldType::Number) => Cast::Float,
                        Some(FieldType::Integer | FieldType::Datetime) => Cast::BigInt,
                        Some(FieldType::Bool) => Cast::Bool,
                        Some(FieldType::Json) => Cast::Json,
                        _ => Cast::Text,
                    };
                    self.param(Param::RequestData(field.clone()), cast)
                }
            },
            Operand::Literal { literal, .. } => {
                let (param, cast) = literal_param(literal);
                self.param(param, cast)
            }
        }
    }

    /// The JSON value at `segments` below `column` on PostgreSQL. A digit segment indexes an
    /// array and only an array, as on SQLite and in memory: `#>` alone would also read it as an
    /// object's key (`meta.0` finding `{"0": 1}`), so each one is guarded.
    fn pg_at(&mut self, column: &str, segments: &[String]) -> String {
        let mut guards = Vec::new();
        for (at, segment) in segments.iter().enumerate() {
            if !segment.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let parent = if at == 0 {
                column.to_owned()
            } else {
                let p = self.param(
                    Param::Value(Value::Text(pg_path(&segments[..at]))),
                    Cast::TextArray,
                );
                format!("({column} #> {p})")
            };
            guards.push(format!("jsonb_typeof({parent}) = 'array'"));
        }
        let p = self.param(
            Param::Value(Value::Text(pg_path(segments))),
            Cast::TextArray,
        );
        let value = format!("({column} #> {p})");
        if guards.is_empty() {
            value
        } else {
            format!("(CASE WHEN {} THEN {value} END)", guards.join(" AND "))
        }
    }

    fn param(&mut self, param: Param, cast: Cast) -> String {
        self.params.push(param);
        let placeholder = self.dialect.placeholder(self.offset + self.params.len());
        match self.dialect {
            Dialect::Sqlite => placeholder,
            Dialect::Postgres => {
                let ty = match cast {
                    Cast::Text => "text",
                    // Sent as the text of an array literal (`{a,b}`, word characters only)
                    // and cast by the server, so every parameter is a scalar on the wire.
                    Cast::TextArray => "text::text[]",
                    Cast::BigInt => "bigint",
                    Cast::Float => "float8",
                    Cast::Bool => "boolean",
                    Cast::Json => "text::jsonb",
                };
                format!("{placeholder}::{ty}")
            }
        }
    }
}

/// The JSON types a JSON value may compare with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JsonKind {
    Number,
    Text,
    Bool,
}

/// The JSON type a value of type `ty` compares with; none for JSON itself and null.
pub(crate) fn json_kind(ty: Ty) -> Option<JsonKind> {
    match ty {
        Ty::Number | Ty::Datetime => Some(JsonKind::Number),
        Ty::Text => Some(JsonKind::Text),
        Ty::Bool => Some(JsonKind::Bool),
        Ty::Json | Ty::Null => None,
    }
}

/// The SQL of a comparison operator.
fn symbol(op: CompareOp) -> &'static str {
    match op {
        CompareOp::Eq => "=",
        CompareOp::Ne => "<>",
        CompareOp::Lt => "<",
        CompareOp::Le => "<=",
        CompareOp::Gt => ">",
        CompareOp::Ge => ">=",
        CompareOp::Contains | CompareOp::NotContains => unreachable!("`~` compiles on its own"),
    }
}

fn literal_param(literal: &Literal) -> (Param, Cast) {
    match literal {
        Literal::Null => (Param::Value(Value::Null), Cast::Text),
        Literal::Bool(b) => (Param::Value(Value::Bool(*b)), Cast::Bool),
        Literal::Int(i) => (Param::Value(Value::Int(*i)), Cast::BigInt),
        Literal::Float(f) => (Param::Value(Value::Float(*f)), Cast::Float),
        Literal::Text(t) => (Param::Value(Value::Text(t.clone())), Cast::Text),
    }
}

/// A quoted identifier. Names come from the schema; quotes are doubled all the same.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A JSON path as PostgreSQL's `text[]` literal, for `#>`. Every segment is quoted: unquoted,
/// a segment spelled `null` (in any case) would be the array's NULL, and the path would find
/// nothing (segments are words, so a quote or backslash never needs escaping).
fn pg_path(segments: &[String]) -> String {
    let quoted: Vec<String> = segments.iter().map(|s| format!("\"{s}\"")).collect();
    format!("{{{}}}", quoted.join(","))
}

/// `$.a.b[0]` from checked segments (word characters only).
fn sqlite_path(segments: &[String]) -> String {
    let mut path = String::from("$");
    for segment in segments {
        if segment.bytes().all(|b| b.is_ascii_digit()) {
            path.push_str(&format!("[{segment}]"));
        } else {
            path.push('.');
            path.push_str(segment);
        }
    }
    path
}

/// Escapes LIKE's wildcards so that the text matches literally.
fn escape_like(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}
