//! The compiled SQL run on a real PostgreSQL server, started by this test on a temporary data
//! directory and a loopback port (Debian's `postgresql` package), so that the scale-out backend
//! starts from a language that already works there. The filters and the rows are those of the
//! SQLite test: both databases must return the same rows for every filter.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use cloudlet_query::{Dialect, Limits, Param, SqlBuilder, Value, parse};
use cloudlet_store::postgres::testing::TestServer;

/// A parameter as a SQL literal, for `EXECUTE` in this test (the server binds it as a value).
fn literal(param: &Param) -> String {
    let text = |t: &str| format!("'{}'", t.replace('\'', "''"));
    match param {
        Param::Value(Value::Null) | Param::RequestData(_) | Param::RequestDataLeftOut(_) => {
            "NULL".into()
        }
        Param::Value(Value::Bool(b)) => b.to_string(),
        Param::Value(Value::Int(i)) => i.to_string(),
        Param::Value(Value::Float(f)) => format!("{f:?}"),
        Param::Value(Value::Text(t)) => text(t),
        Param::AuthId => text(common::AUTH_ID),
        Param::AuthProvider => text(common::AUTH_PROVIDER),
        Param::Now => common::NOW_MS.to_string(),
    }
}

/// Creates a table with `setup` in a fresh database, then runs each filter against `table` and
/// checks the ids it returns.
fn check_cases(setup: &str, table: &str, cases: &[(&str, &[&str])]) {
    let pg = TestServer::shared();
    let url = pg.database();
    let db = TestServer::database_name(&url);
    pg.sql(db, setup);
    for (n, (filter, expected)) in cases.iter().enumerate() {
        let expr = parse(filter, Limits::default()).unwrap();
        let mut sql = SqlBuilder::new(Dialect::Postgres);
        let condition = sql.compile(&expr, &common::schema()).unwrap();
        let arguments: Vec<String> = sql.params().iter().map(literal).collect();
        let execute = if arguments.is_empty() {
            format!("EXECUTE q{n}")
        } else {
            format!("EXECUTE q{n}({})", arguments.join(", "))
        };
        let out = pg.sql(
            db,
            &format!(
                "PREPARE q{n} AS SELECT id FROM {table} WHERE {condition} ORDER BY id; {execute};"
            ),
        );
        let ids: Vec<&str> = out.lines().filter(|l| !l.is_empty()).collect();
        assert_eq!(ids, *expected, "{filter}\n{condition}");
    }
}

#[test]
fn postgres_returns_the_same_rows_as_sqlite_for_every_filter() {
    check_cases(
        &format!(
            "CREATE TABLE todos (id text, created_at bigint, updated_at bigint, owner text,
                title text, done boolean, priority bigint, score float8, meta jsonb, due bigint);
             INSERT INTO todos VALUES {};",
            common::ROWS
        ),
        "todos",
        common::CASES,
    );
}

#[test]
fn json_values_compare_only_with_values_of_their_own_type() {
    check_cases(
        &format!(
            "CREATE TABLE notes (id text, meta jsonb); INSERT INTO notes VALUES {};",
            common::JSON_ROWS
        ),
        "notes",
        common::JSON_CASES,
    );
}

/// The in-memory evaluator against PostgreSQL over generated expressions and records (the
/// SQLite run of `eval.rs` checks many more): every case's rows in one table, every case's
/// query in one `psql` session.
#[test]
fn the_evaluator_agrees_with_postgres() {
    use cloudlet_query::Predicate;
    use common::generated::{bindings, expression, rows};
    use proptest::strategy::{Strategy, ValueTree};
    use proptest::test_runner::TestRunner;
    use std::sync::Arc;

    let mut runner = TestRunner::deterministic();
    let strategy = (expression(), rows(), proptest::bool::ANY);
    let cases: Vec<_> = (0..300)
        .map(|_| strategy.new_tree(&mut runner).unwrap().current())
        .collect();
    let pg = TestServer::shared();
    let url = pg.database();
    let db = TestServer::database_name(&url);
    let values: Vec<String> = cases
        .iter()
        .enumerate()
        .flat_map(|(n, (_, rows, _))| rows.iter().map(move |row| row.pg_values(n)))
        .collect();
    pg.sql(
        db,
        &format!(
            "CREATE TABLE todos (case_no int, id text, created_at bigint, updated_at bigint,
                owner text, title text, done boolean, priority bigint, score float8, meta jsonb,
                due bigint);
             INSERT INTO todos VALUES {};",
            values.join(", ")
        ),
    );
    let schema = Arc::new(common::schema());
    let mut script = String::new();
    let mut predicates = Vec::new();
    for (n, (filter, _, anonymous)) in cases.iter().enumerate() {
        let auth = (!anonymous).then_some(common::AUTH_ID);
        let predicate =
            Predicate::new(parse(filter, Limits::default()).unwrap(), schema.clone()).unwrap();
        let compiled = predicate.sql(Dialect::Postgres);
        let arguments: Vec<String> = compiled
            .params
            .iter()
            .map(|p| match (p, auth) {
                (Param::AuthId | Param::AuthProvider, None) => "NULL".to_owned(),
                _ => literal(p),
            })
            .collect();
        let execute = if arguments.is_empty() {
            format!("EXECUTE q{n}")
        } else {
            format!("EXECUTE q{n}({})", arguments.join(", "))
        };
        script.push_str(&format!(
            "PREPARE q{n} AS SELECT id FROM todos WHERE case_no = {n} AND {} ORDER BY id; \
             {execute}; SELECT 'end';\n",
            compiled.sql
        ));
        predicates.push((predicate, auth));
    }
    let out = pg.sql(db, &script);
    let answers: Vec<Vec<&str>> = out
        .split("end\n")
        .map(|block| block.lines().filter(|l| !l.is_empty()).collect())
        .collect();
    assert_eq!(answers.len(), cases.len() + 1, "one answer per case");
    let matching = answers.iter().filter(|ids| !ids.is_empty()).count();
    assert!(
        matching > cases.len() / 10,
        "the cases match something: {matching}"
    );
    for (n, ((filter, rows, _), (predicate, auth))) in cases.iter().zip(&predicates).enumerate() {
        let in_memory: Vec<&str> = {
            let mut ids: Vec<&str> = rows
                .iter()
                .filter(|row| predicate.matches(&row.record(), &bindings(*auth)))
                .map(|row| row.id.as_str())
                .collect();
            ids.sort_unstable();
            ids
        };
        assert_eq!(answers[n], in_memory, "{filter}\n{rows:#?}");
    }
}
