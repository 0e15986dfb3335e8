//! The in-memory evaluator against the compiled SQL: over the shared cases (whose rows
//! PostgreSQL's test checks too) and over generated expressions and records run on a real
//! SQLite database. Any record one matches and the other does not would be a change delivered
//! to someone the rule refuses, or one lost.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use cloudlet_query::{Dialect, Limits, Param, Predicate, Value, parse};
use common::generated::{Row, bindings, expression, rows};
use proptest::prelude::*;
use rusqlite::Connection;
use rusqlite::types::{ToSqlOutput, Value as Sql};
use serde_json::{Value as Json, json};

fn bind(param: &Param, auth: Option<&str>) -> ToSqlOutput<'static> {
    let value = match param {
        Param::Value(Value::Null) | Param::RequestData(_) | Param::RequestDataLeftOut(_) => {
            Sql::Null
        }
        Param::Value(Value::Bool(b)) => Sql::Integer(i64::from(*b)),
        Param::Value(Value::Int(i)) => Sql::Integer(*i),
        Param::Value(Value::Float(f)) => Sql::Real(*f),
        Param::Value(Value::Text(t)) => Sql::Text(t.clone()),
        Param::AuthId => auth.map_or(Sql::Null, |a| Sql::Text(a.to_owned())),
        Param::AuthProvider => auth.map_or(Sql::Null, |_| Sql::Text(common::AUTH_PROVIDER.into())),
        Param::Now => Sql::Integer(common::NOW_MS),
    };
    ToSqlOutput::Owned(value)
}

/// The ids of `rows` the filter's SQL returns on SQLite, and those the evaluator matches.
fn both(filter: &str, rows: &[Row], auth: Option<&str>) -> (Vec<String>, Vec<String>) {
    let schema = Arc::new(common::schema());
    let predicate = Predicate::new(parse(filter, Limits::default()).unwrap(), schema).unwrap();
    let conn = Connection::open_in_memory().unwrap();
    conn.execute_batch(
        "CREATE TABLE todos (id TEXT, created_at INTEGER, updated_at INTEGER, owner TEXT,
            title TEXT, done INTEGER, priority INTEGER, score REAL, meta TEXT, due INTEGER)",
    )
    .unwrap();
    for row in rows {
        conn.execute(
            "INSERT INTO todos VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            rusqlite::params_from_iter(row.sql_values()),
        )
        .unwrap();
    }
    let compiled = predicate.sql(Dialect::Sqlite);
    let params: Vec<ToSqlOutput> = compiled.params.iter().map(|p| bind(p, auth)).collect();
    let sql = format!("SELECT id FROM todos WHERE {} ORDER BY id", compiled.sql);
    let mut statement = conn
        .prepare(&sql)
        .unwrap_or_else(|e| panic!("{filter}: {sql}: {e}"));
    let by_sql: Vec<String> = statement
        .query_map(rusqlite::params_from_iter(params.iter()), |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut in_memory: Vec<String> = rows
        .iter()
        .filter(|row| predicate.matches(&row.record(), &bindings(auth)))
        .map(|row| row.id.clone())
        .collect();
    in_memory.sort();
    (by_sql, in_memory)
}

/// The rows of `common::ROWS`, written out.
fn shared_rows() -> Vec<Row> {
    let row =
        |id: &str, owner: &str, title: &str, done, priority, score, meta: Option<Json>, due| Row {
            id: id.into(),
            owner: Some(owner.into()),
            title: Some(title.into()),
            done: Some(done),
            priority,
            score,
            meta,
            due,
        };
    vec![
        row(
            "a",
            "alice",
            "Buy milk",
            false,
            Some(3),
            Some(1.5),
            Some(json!({"tags": ["home", "food"], "level": 2})),
            Some(1_700_000_000_000),
        ),
        row(
            "b",
            "alice",
            "Pay 100% of rent_now",
            true,
            Some(1),
            Some(2.5),
            Some(json!({"tags": ["money"], "level": 5})),
            Some(1_800_000_000_000),
        ),
        row("c", "bob", "Walk the dog", false, None, None, None, None),
        row(
            "d",
            "bob",
            "it's \"quoted\"",
            true,
            Some(5),
            Some(0.0),
            Some(json!({"tags": []})),
            Some(1_600_000_000_000),
        ),
    ]
}

#[test]
fn the_shared_cases_match_the_rows_both_databases_return() {
    let rows = shared_rows();
    for (filter, expected) in common::CASES {
        let (by_sql, in_memory) = both(filter, &rows, Some(common::AUTH_ID));
        assert_eq!(in_memory, *expected, "{filter}");
        assert_eq!(by_sql, *expected, "{filter}");
    }
    let json_rows: Vec<Row> = [
        ("j1", json!({"v": 2})),
        ("j2", json!({"v": "2"})),
        ("j3", json!({"v": true})),
        ("j4", json!({"v": null})),
        ("j5", json!({"v": 1})),
        ("j6", json!({})),
        ("j7", json!({"v": "abc"})),
        ("j8", json!({"v": [1, 2]})),
        ("j9", json!({"null": 7})),
        ("j10", json!({"0": 1, "v": {"0": 1}})),
        ("j11", json!({"v": [5, {"w": [6]}]})),
    ]
    .into_iter()
    .map(|(id, meta)| Row {
        id: id.into(),
        owner: None,
        title: None,
        done: None,
        priority: None,
        score: None,
        meta: Some(meta),
        due: None,
    })
    .collect();
    for (filter, expected) in common::JSON_CASES {
        let (by_sql, in_memory) = both(filter, &json_rows, Some(common::AUTH_ID));
        assert_eq!(in_memory, *expected, "{filter}");
        assert_eq!(by_sql, *expected, "{filter}");
    }
}

#[test]
fn unknown_is_neither_true_nor_false() {
    let schema = Arc::new(common::schema());
    let predicate = |text: &str| {
        Predicate::new(parse(text, Limits::default()).unwrap(), schema.clone()).unwrap()
    };
    let row = Row {
        id: "x".into(),
        owner: None,
        title: None,
        done: None,
        priority: None,
        score: None,
        meta: None,
        due: None,
    }
    .record();
    let anonymous = bindings(None);
    assert_eq!(predicate("owner = @auth.id").eval(&row, &anonymous), None);
    assert_eq!(
        predicate("!(owner = @auth.id)").eval(&row, &anonymous),
        None
    );
    assert_eq!(predicate("owner = null").eval(&row, &anonymous), Some(true));
    assert_eq!(
        predicate("done || id = 'x'").eval(&row, &anonymous),
        Some(true)
    );
    assert_eq!(
        predicate("done && id = 'y'").eval(&row, &anonymous),
        Some(false)
    );
    assert!(!predicate("title !~ 'a'").matches(&row, &anonymous));
}

#[test]
fn json_values_are_compared_with_values_not_with_json() {
    let schema = common::schema().with("other", cloudlet_query::FieldType::Json);
    let err = Predicate::new(
        parse("meta.a = other.a", Limits::default()).unwrap(),
        Arc::new(schema),
    )
    .unwrap_err();
    assert_eq!(err.kind.code(), "type_mismatch");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// Every generated rule or filter matches, in memory, exactly the records SQLite returns
    /// for it, for a caller logged in and for an anonymous one.
    #[test]
    fn the_evaluator_agrees_with_sqlite(filter in expression(), rows in rows(), anonymous in any::<bool>()) {
        let auth = (!anonymous).then_some(common::AUTH_ID);
        let (by_sql, in_memory) = both(&filter, &rows, auth);
        prop_assert_eq!(by_sql, in_memory, "{}\n{:#?}", filter, rows);
    }
}
