//! Generated records and expressions, for the tests that compare the in-memory evaluator with
//! the SQL each database runs.

use cloudlet_query::{Bindings, Record};
use proptest::prelude::*;
use rusqlite::types::Value as Sql;
use serde_json::{Value as Json, json};

/// One generated (or written) record: its columns as Rust values.
#[derive(Debug, Clone)]
pub struct Row {
    pub id: String,
    pub owner: Option<String>,
    pub title: Option<String>,
    pub done: Option<bool>,
    pub priority: Option<i64>,
    pub score: Option<f64>,
    pub meta: Option<Json>,
    pub due: Option<i64>,
}

impl Row {
    pub fn record(&self) -> Record {
        let mut record = Record::new();
        let mut put = |name: &str, value: Json| {
            record.insert(name.to_owned(), value);
        };
        put("id", json!(self.id));
        put("created_at", json!(1));
        put("updated_at", json!(1));
        put("owner", json!(self.owner));
        put("title", json!(self.title));
        put("done", json!(self.done));
        put("priority", json!(self.priority));
        put("score", json!(self.score));
        // A JSON column holding JSON null is stored as SQL NULL.
        put("meta", self.meta.clone().unwrap_or(Json::Null));
        put("due", json!(self.due));
        record
    }

    /// The row as a PostgreSQL `VALUES` tuple, after a `case_no` column.
    pub fn pg_values(&self, case_no: usize) -> String {
        let text = |t: &str| format!("'{}'", t.replace('\'', "''"));
        let or_null = |v: Option<String>| v.unwrap_or_else(|| "NULL".into());
        let values = [
            case_no.to_string(),
            text(&self.id),
            "1".into(),
            "1".into(),
            or_null(self.owner.as_deref().map(text)),
            or_null(self.title.as_deref().map(text)),
            or_null(self.done.map(|b| b.to_string())),
            or_null(self.priority.map(|n| n.to_string())),
            or_null(self.score.map(|f| format!("{f:?}"))),
            or_null(
                self.meta
                    .as_ref()
                    .filter(|m| !m.is_null())
                    .map(|m| format!("{}::jsonb", text(&m.to_string()))),
            ),
            or_null(self.due.map(|n| n.to_string())),
        ];
        format!("({})", values.join(", "))
    }

    /// The values of an SQLite row: bools as 0/1, JSON as its text.
    pub fn sql_values(&self) -> Vec<Sql> {
        let text = |t: &Option<String>| t.clone().map_or(Sql::Null, Sql::Text);
        vec![
            Sql::Text(self.id.clone()),
            Sql::Integer(1),
            Sql::Integer(1),
            text(&self.owner),
            text(&self.title),
            self.done.map_or(Sql::Null, |b| Sql::Integer(i64::from(b))),
            self.priority.map_or(Sql::Null, Sql::Integer),
            self.score.map_or(Sql::Null, Sql::Real),
            self.meta
                .as_ref()
                .filter(|m| !m.is_null())
                .map_or(Sql::Null, |m| Sql::Text(m.to_string())),
            self.due.map_or(Sql::Null, Sql::Integer),
        ]
    }
}

pub fn bindings(auth: Option<&str>) -> Bindings {
    Bindings {
        auth_id: auth.map(str::to_owned),
        auth_provider: auth.map(|_| super::AUTH_PROVIDER.to_owned()),
        now_ms: super::NOW_MS,
        request_data: Default::default(),
    }
}

const TEXTS: &[&str] = &[
    "", "a", "A", "milk", "MILK", "Milk é", "é", "É", "100%", "a_b", "zz",
];
const TIMES: &[&str] = &[
    "2023-11-14T22:13:20Z",
    "2025-06-15T00:00:00Z",
    "2030-01-01T00:00:00.5Z",
];
const MS: &[i64] = &[
    1_700_000_000_000,
    1_749_945_600_000,
    1_750_000_000_000,
    1_893_456_000_500,
];

fn text_literal() -> impl Strategy<Value = String> {
    prop::sample::select(TEXTS).prop_map(|t| format!("'{t}'"))
}

fn scalar_literal() -> impl Strategy<Value = String> {
    prop_oneof![
        text_literal(),
        (-2i64..4).prop_map(|n| n.to_string()),
        prop::sample::select(&[0.5f64, 1.5, 2.0, -1.25][..]).prop_map(|f| format!("{f:?}")),
        any::<bool>().prop_map(|b| b.to_string()),
    ]
}

fn order_op() -> impl Strategy<Value = &'static str> {
    prop::sample::select(&["=", "!=", "<", "<=", ">", ">="][..])
}

fn json_path() -> impl Strategy<Value = &'static str> {
    prop::sample::select(
        &[
            "meta.v",
            "meta.tags",
            "meta.a.b",
            "meta.tags.0",
            "meta.tags.1",
        ][..],
    )
}

/// One comparison of the language, over every field type and operator.
fn atom() -> impl Strategy<Value = String> {
    prop_oneof![
        (
            prop::sample::select(&["title", "owner"][..]),
            order_op(),
            text_literal()
        )
            .prop_map(|(f, op, v)| format!("{f} {op} {v}")),
        (prop::sample::select(&["~", "!~"][..]), text_literal())
            .prop_map(|(op, v)| format!("title {op} {v}")),
        prop::sample::select(
            &[
                "owner = @auth.id",
                "owner != @auth.id",
                "@auth.id = owner",
                "done",
                "!done",
                "done = true",
                "done != false",
                "done = null",
                "done != null",
                "priority = null",
                "score != null",
                "meta = null",
                "meta != null",
                "meta.v = null",
                "meta.v",
                "due < @now",
                "due >= @now",
                "@now > due",
                "id in ['r0', 'r2', 'zz']",
                "owner in [@auth.id, 'bob']",
                "@auth.provider = 'wechat'",
                "meta.tags ~ 'a'",
                "meta ~ 1",
                "meta.tags !~ 2",
                "meta.tags ~ true",
                "meta.v ~ 'a'",
            ][..]
        )
        .prop_map(str::to_owned),
        (
            prop::sample::select(&["priority", "score"][..]),
            order_op(),
            -2i64..4,
            any::<bool>()
        )
            .prop_map(|(f, op, n, half)| if half {
                format!("{f} {op} {n}.5")
            } else {
                format!("{f} {op} {n}")
            }),
        (
            prop::sample::select(&["priority", "score"][..]),
            prop::collection::vec(-2i64..4, 1..4)
        )
            .prop_map(|(f, items)| format!(
                "{f} in [{}]",
                items
                    .iter()
                    .map(i64::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        (order_op(), prop::sample::select(TIMES)).prop_map(|(op, t)| format!("due {op} '{t}'")),
        prop::collection::vec(prop::sample::select(TIMES), 1..3).prop_map(|ts| format!(
            "due in [{}]",
            ts.iter()
                .map(|t| format!("'{t}'"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
        (json_path(), order_op(), scalar_literal()).prop_filter_map(
            "bools have no order",
            |(p, op, v)| {
                let ordered = !matches!(op, "=" | "!=");
                (!(ordered && (v == "true" || v == "false"))).then(|| format!("{p} {op} {v}"))
            }
        ),
        (
            json_path(),
            prop::sample::select(&["~", "!~"][..]),
            scalar_literal()
        )
            .prop_map(|(p, op, v)| format!("{p} {op} {v}")),
        (json_path(), prop::collection::vec(scalar_literal(), 1..4))
            .prop_map(|(p, items)| format!("{p} in [{}]", items.join(", "))),
        (
            json_path(),
            prop::sample::select(&["due", "@now"][..]),
            order_op()
        )
            .prop_map(|(p, d, op)| format!("{p} {op} {d}")),
    ]
}

pub fn expression() -> impl Strategy<Value = String> {
    atom().prop_recursive(3, 12, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} && {b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} || {b})")),
            inner.prop_map(|a| format!("!({a})")),
        ]
    })
}

fn json_scalar() -> impl Strategy<Value = Json> {
    prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::from),
        (-2i64..4).prop_map(Json::from),
        prop::sample::select(&[0.5f64, 1.5, 2.0, -1.25][..]).prop_map(Json::from),
        prop::sample::select(TEXTS).prop_map(Json::from),
    ]
}

fn json_value() -> impl Strategy<Value = Json> {
    json_scalar().prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Json::Array),
            prop::collection::btree_map(
                prop::sample::select(&["v", "tags", "a", "b"][..]).prop_map(str::to_owned),
                inner,
                0..3
            )
            .prop_map(|m| Json::Object(m.into_iter().collect())),
        ]
    })
}

fn meta() -> impl Strategy<Value = Option<Json>> {
    prop_oneof![
        Just(None),
        json_value().prop_map(Some),
        (
            json_scalar(),
            prop::collection::vec(json_scalar(), 0..4),
            json_value()
        )
            .prop_map(|(v, tags, a)| Some(json!({"v": v, "tags": tags, "a": a}))),
    ]
}

fn row(id: usize) -> impl Strategy<Value = Row> {
    (
        prop::option::of(prop::sample::select(&["alice", "bob"][..])),
        prop::option::of(prop::sample::select(TEXTS)),
        prop::option::of(any::<bool>()),
        prop::option::of(-2i64..4),
        prop::option::of(prop::sample::select(&[0.5f64, 1.5, 2.0, -1.25][..])),
        meta(),
        prop::option::of(prop::sample::select(MS)),
    )
        .prop_map(
            move |(owner, title, done, priority, score, meta, due)| Row {
                id: format!("r{id}"),
                owner: owner.map(str::to_owned),
                title: title.map(str::to_owned),
                done,
                priority,
                score,
                meta,
                due,
            },
        )
}

pub fn rows() -> impl Strategy<Value = Vec<Row>> {
    (0..8usize).map(row).collect::<Vec<_>>()
}
