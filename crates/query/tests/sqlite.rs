//! The compiled SQL run on a real SQLite database: each filter must return exactly the rows it
//! means, and hostile input must stay data.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use cloudlet_query::{Dialect, ErrorKind, Limits, Param, SqlBuilder, Value, parse};
use rusqlite::Connection;
use rusqlite::types::ToSqlOutput;

use common::schema;

fn database() -> Connection {
    let conn = Connection::open_in_memory().unwrap();
    let rows = common::ROWS.replace("false", "0").replace("true", "1");
    conn.execute_batch(&format!(
        "CREATE TABLE todos (id TEXT, created_at INTEGER, updated_at INTEGER, owner TEXT,
            title TEXT, done INTEGER, priority INTEGER, score REAL, meta TEXT, due INTEGER);
         INSERT INTO todos VALUES {rows};"
    ))
    .unwrap();
    conn
}

/// Resolves request parameters: alice is logged in, now is 1,750,000,000,000 ms.
fn bind(param: &Param) -> ToSqlOutput<'static> {
    use rusqlite::types::Value as Sql;
    let value = match param {
        Param::Value(Value::Null) => Sql::Null,
        Param::Value(Value::Bool(b)) => Sql::Integer(i64::from(*b)),
        Param::Value(Value::Int(i)) => Sql::Integer(*i),
        Param::Value(Value::Float(f)) => Sql::Real(*f),
        Param::Value(Value::Text(t)) => Sql::Text(t.clone()),
        Param::AuthId => Sql::Text(common::AUTH_ID.into()),
        Param::AuthProvider => Sql::Text(common::AUTH_PROVIDER.into()),
        Param::Now => Sql::Integer(common::NOW_MS),
        Param::RequestData(_) | Param::RequestDataLeftOut(_) => Sql::Null,
    };
    ToSqlOutput::Owned(value)
}

fn ids(filter: &str) -> Vec<String> {
    try_ids(filter).unwrap_or_else(|e| panic!("{filter}: {e}"))
}

fn try_ids(filter: &str) -> Result<Vec<String>, cloudlet_query::QueryError> {
    let expr = parse(filter, Limits::default())?;
    let mut sql = SqlBuilder::new(Dialect::Sqlite);
    let condition = sql.compile(&expr, &schema())?;
    let params: Vec<ToSqlOutput> = sql.params().iter().map(bind).collect();
    let conn = database();
    let mut statement = conn
        .prepare(&format!(
            "SELECT id FROM todos WHERE {condition} ORDER BY id"
        ))
        .unwrap_or_else(|e| panic!("{filter}: {condition}: {e}"));
    Ok(statement
        .query_map(rusqlite::params_from_iter(params.iter()), |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap())
}

#[test]
fn filters_return_exactly_the_rows_they_mean() {
    for (filter, expected) in common::CASES {
        assert_eq!(ids(filter), *expected, "{filter}");
    }
}

#[test]
fn injection_attempts_stay_values() {
    // Each is refused, or matches as plain data: never every row.
    for filter in [
        "title = 'x'' OR 1=1 --'",
        "title = 'x\\' OR 1=1 --'",
        "title = \"x\\\" OR 1=1 --\"",
        "title ~ '%\\' OR \\'1\\'=\\'1'",
        "meta.level = '1) OR (1=1'",
    ] {
        match try_ids(filter) {
            Ok(rows) => assert!(rows.len() <= 1, "{filter}: {rows:?}"),
            Err(e) => assert!(!e.message.is_empty(), "{filter}"),
        }
    }
    // Names can only be fields of the schema.
    let expr = parse("title = 'a'; DROP TABLE todos", Limits::default());
    assert!(expr.is_err());
    let expr = parse("\"title\" = 1", Limits::default()).unwrap();
    assert!(
        SqlBuilder::new(Dialect::Sqlite)
            .compile(&expr, &schema())
            .is_err()
    );
}

#[test]
fn checking_names_the_problem_and_where_it_is() {
    let check = |filter: &str| {
        let expr = parse(filter, Limits::default()).unwrap();
        SqlBuilder::new(Dialect::Sqlite)
            .compile(&expr, &schema())
            .unwrap_err()
    };
    for (filter, kind, at) in [
        ("nope = 1", ErrorKind::UnknownField, 0),
        (
            "title = 'x' && priority = 'high'",
            ErrorKind::TypeMismatch,
            24,
        ),
        ("done > true", ErrorKind::TypeMismatch, 5),
        ("title.x = 1", ErrorKind::TypeMismatch, 0),
        ("priority ~ 'x'", ErrorKind::TypeMismatch, 0),
        ("title ~ owner", ErrorKind::TypeMismatch, 8),
        ("title", ErrorKind::TypeMismatch, 0),
        ("priority in [1, null]", ErrorKind::TypeMismatch, 16),
        ("due < 'yesterday'", ErrorKind::TypeMismatch, 4),
        ("@request.data.nope = 1", ErrorKind::UnknownField, 0),
        ("priority > null", ErrorKind::TypeMismatch, 9),
    ] {
        let err = check(filter);
        assert_eq!((err.kind, err.position), (kind, at), "{filter}: {err}");
    }
}

#[test]
fn a_rule_and_a_filter_share_one_parameter_list() {
    let mut sql = SqlBuilder::new(Dialect::Sqlite);
    let rule = sql
        .compile(
            &parse("owner = @auth.id", Limits::default()).unwrap(),
            &schema(),
        )
        .unwrap();
    let filter = sql
        .compile(
            &parse("priority > 2", Limits::default()).unwrap(),
            &schema(),
        )
        .unwrap();
    assert_eq!(rule, "(\"owner\" = ?1)");
    assert_eq!(filter, "(\"priority\" > ?2)");
    assert_eq!(sql.params(), [Param::AuthId, Param::Value(Value::Int(2))]);

    let mut pg = SqlBuilder::new(Dialect::Postgres);
    let compiled = pg
        .compile(
            &parse(
                "owner = @auth.id && meta.level >= 3 && title ~ 'a'",
                Limits::default(),
            )
            .unwrap(),
            &schema(),
        )
        .unwrap();
    assert_eq!(
        compiled,
        "(((\"owner\" = $1::text) AND ((CASE WHEN jsonb_typeof((\"meta\" #> $2::text::text[])) = 'number' THEN (\"meta\" #> $2::text::text[]) END) >= to_jsonb($3::bigint))) AND (\"title\" ILIKE $4::text ESCAPE '\\'))"
    );
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever the input, the parser answers (an expression or an error) and never panics.
        #[test]
        fn the_parser_never_panics(src in ".{0,200}") {
            let _ = parse(&src, Limits::default());
        }

        /// Values never reach the SQL text: the SQL depends only on the filter's shape, and the
        /// values travel as parameters.
        #[test]
        fn values_are_always_bound(text in "[^\\\\'\\x00]{0,40}", n in any::<i64>()) {
            let shape = |text: &str, n: i64| {
                parse(&format!("title = '{text}' || priority = {n} || title ~ '{text}'"), Limits::default()).unwrap()
            };
            for dialect in [Dialect::Sqlite, Dialect::Postgres] {
                let mut with_values = SqlBuilder::new(dialect);
                let sql = with_values.compile(&shape(&text, n), &schema()).unwrap();
                let mut plain = SqlBuilder::new(dialect);
                prop_assert_eq!(&sql, &plain.compile(&shape("x", 0), &schema()).unwrap());
                prop_assert_eq!(&with_values.params()[0], &Param::Value(Value::Text(text.clone())));
                prop_assert_eq!(&with_values.params()[1], &Param::Value(Value::Int(n)));
            }
        }
    }
}

#[test]
fn a_filter_holding_nul_is_refused_with_its_place() {
    let err = parse("title = 'a\0b'", Limits::default()).unwrap_err();
    assert_eq!(err.kind.code(), "invalid_filter");
    assert_eq!(err.position, 10);
    assert!(err.to_string().contains("NUL"), "{err}");
}

#[test]
fn json_values_compare_only_with_values_of_their_own_type() {
    let conn = Connection::open_in_memory().unwrap();
    conn.execute_batch(&format!(
        "CREATE TABLE notes (id TEXT, meta TEXT); INSERT INTO notes VALUES {};",
        common::JSON_ROWS
    ))
    .unwrap();
    for (filter, expected) in common::JSON_CASES {
        let expr = parse(filter, Limits::default()).unwrap();
        let mut sql = SqlBuilder::new(Dialect::Sqlite);
        let condition = sql.compile(&expr, &schema()).unwrap();
        let params: Vec<ToSqlOutput> = sql.params().iter().map(bind).collect();
        let mut statement = conn
            .prepare(&format!(
                "SELECT id FROM notes WHERE {condition} ORDER BY id"
            ))
            .unwrap();
        let found: Vec<String> = statement
            .query_map(rusqlite::params_from_iter(params.iter()), |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(found, *expected, "{filter}\n{condition}");
    }
}

/// A predicate's truth for an empty record and the body of `bindings`, in SQLite and in memory.
fn in_sql_and_in_memory(
    conn: &Connection,
    predicate: &cloudlet_query::Predicate,
    bindings: &cloudlet_query::Bindings,
) -> (bool, bool) {
    let compiled = predicate.sql(Dialect::Sqlite);
    let params: Vec<rusqlite::types::Value> = compiled
        .params
        .iter()
        .map(|param| match bindings.resolve(param) {
            Value::Text(t) => rusqlite::types::Value::Text(t),
            Value::Int(i) => rusqlite::types::Value::Integer(i),
            _ => rusqlite::types::Value::Null,
        })
        .collect();
    let in_sql: bool = conn
        .query_row(
            &format!("SELECT coalesce(({}), 0) <> 0", compiled.sql),
            rusqlite::params_from_iter(params.iter()),
            |r| r.get(0),
        )
        .unwrap_or_else(|e| panic!("{}: {e}", compiled.sql));
    let in_memory = predicate.matches(&cloudlet_query::Record::default(), bindings);
    (in_sql, in_memory)
}

#[test]
fn a_json_fields_request_value_compares_only_with_null_in_sql_and_in_memory() {
    use cloudlet_query::{Bindings, Predicate};
    use std::sync::Arc;
    let schema = Arc::new(schema());
    let conn = database();
    let body = Bindings {
        request_data: [("meta".to_owned(), Value::Text("\"admin\"".into()))].into(),
        ..Bindings::default()
    };
    for (rule, expected) in [
        ("@request.data.meta != 'admin'", false),
        ("@request.data.meta = 'admin'", false),
        ("@request.data.meta > 3", false),
        ("@request.data.meta in ['admin', 3]", false),
        ("!(@request.data.meta = 'admin')", false),
        ("@request.data.meta != null", true),
        ("@request.data.meta = null", false),
    ] {
        let predicate =
            Predicate::new(parse(rule, Limits::default()).unwrap(), schema.clone()).unwrap();
        assert_eq!(
            in_sql_and_in_memory(&conn, &predicate, &body),
            (expected, expected),
            "{rule}: {}",
            predicate.sql(Dialect::Sqlite).sql
        );
    }
}

/// `@request.data.x = null` is true only when the body leaves x out; `!= null` only when it gives
/// x a value: a body setting x to null passes neither, in SQL and in memory alike.
#[test]
fn a_request_field_set_to_null_is_neither_left_out_nor_a_value() {
    use cloudlet_query::{Bindings, Predicate};
    use std::sync::Arc;
    let schema = Arc::new(schema());
    let conn = database();
    let bodies = [
        ("left out", Bindings::default()),
        (
            "null",
            Bindings {
                request_data: [("priority".to_owned(), Value::Null)].into(),
                ..Bindings::default()
            },
        ),
        (
            "a value",
            Bindings {
                request_data: [("priority".to_owned(), Value::Int(2))].into(),
                ..Bindings::default()
            },
        ),
    ];
    for (rule, expected) in [
        ("@request.data.priority = null", [true, false, false]),
        ("null = @request.data.priority", [true, false, false]),
        ("@request.data.priority != null", [false, false, true]),
        ("!(@request.data.priority = null)", [false, true, true]),
    ] {
        let predicate =
            Predicate::new(parse(rule, Limits::default()).unwrap(), schema.clone()).unwrap();
        assert!(predicate.uses_request_data(), "{rule}");
        for ((body_name, body), expected) in bodies.iter().zip(expected) {
            assert_eq!(
                in_sql_and_in_memory(&conn, &predicate, body),
                (expected, expected),
                "{rule} with the field {body_name}: {}",
                predicate.sql(Dialect::Sqlite).sql
            );
        }
    }
}

/// On PostgreSQL two texts with no column between them order byte by byte (`COLLATE "C"`), as
/// a text column and SQLite do; a column keeps its own collation, and with it its index.
#[test]
fn texts_with_no_column_order_byte_by_byte_on_postgres() {
    let compile = |text: &str| {
        SqlBuilder::new(Dialect::Postgres)
            .compile(&parse(text, Limits::default()).unwrap(), &schema())
            .unwrap()
    };
    assert_eq!(
        compile("@request.data.title >= 'm'"),
        "($1::text COLLATE \"C\" >= $2::text)"
    );
    assert_eq!(compile("title >= 'm'"), "(\"title\" >= $1::text)");
    assert_eq!(compile("owner = @auth.id"), "(\"owner\" = $1::text)");
    assert_eq!(
        compile("@request.data.title = 'm'"),
        "($1::text = $2::text)"
    );
    // A time's text is its milliseconds beside a datetime: no collation there.
    assert!(!compile("'2026-01-01T00:00:00Z' <= @now").contains("COLLATE"));
    assert!(!compile("@request.data.due >= '2026-01-01T00:00:00Z'").contains("COLLATE"));
}

#[test]
fn a_predicate_says_whether_it_reads_the_body_being_written() {
    use cloudlet_query::Predicate;
    use std::sync::Arc;
    let schema = Arc::new(schema());
    let reads = |text: &str| {
        Predicate::new(parse(text, Limits::default()).unwrap(), schema.clone())
            .unwrap()
            .uses_request_data()
    };
    assert!(reads("@request.data.priority <= 5"));
    assert!(reads("owner = @auth.id || @request.data.title = 'x'"));
    assert!(!reads("owner = @auth.id && done"));
}
