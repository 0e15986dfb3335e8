//! What the SQLite and PostgreSQL tests share: the schema, the rows, and the filters with the
//! rows each must return. Both databases must agree on every one.

#![allow(dead_code)]

pub mod generated;

use cloudlet_query::{FieldType, Schema};

pub fn schema() -> Schema {
    Schema::new()
        .with("title", FieldType::Text)
        .with("done", FieldType::Bool)
        .with("priority", FieldType::Integer)
        .with("score", FieldType::Number)
        .with("meta", FieldType::Json)
        .with("due", FieldType::Datetime)
}

/// The rows, as SQL values that both databases read (bools as the words true/false are
/// rewritten for SQLite by the caller).
pub const ROWS: &str = "
    ('a', 1, 1, 'alice', 'Buy milk', false, 3, 1.5, '{\"tags\":[\"home\",\"food\"],\"level\":2}', 1700000000000),
    ('b', 2, 2, 'alice', 'Pay 100% of rent_now', true, 1, 2.5, '{\"tags\":[\"money\"],\"level\":5}', 1800000000000),
    ('c', 3, 3, 'bob', 'Walk the dog', false, NULL, NULL, NULL, NULL),
    ('d', 4, 4, 'bob', 'it''s \"quoted\"', true, 5, 0.0, '{\"tags\":[]}', 1600000000000)";

/// The caller of the tests: alice, logged in with WeChat, at 1,750,000,000,000 ms.
pub const AUTH_ID: &str = "alice";
pub const AUTH_PROVIDER: &str = "wechat";
pub const NOW_MS: i64 = 1_750_000_000_000;

pub const CASES: &[(&str, &[&str])] = &[
    ("owner = @auth.id", &["a", "b"]),
    ("owner != @auth.id", &["c", "d"]),
    ("done", &["b", "d"]),
    ("!done", &["a", "c"]),
    ("done = false && owner = 'bob'", &["c"]),
    ("priority >= 3", &["a", "d"]),
    ("priority < 3 || priority = null", &["b", "c"]),
    ("score > 1.0 && score <= 2.5", &["a", "b"]),
    ("title ~ 'MILK'", &["a"]),
    ("title ~ '100%'", &["b"]),
    ("title ~ '_now'", &["b"]),
    ("title ~ '%'", &["b"]),
    ("title !~ 'a'", &["a", "d"]),
    ("title = 'it\\'s \"quoted\"'", &["d"]),
    ("id in ['a', 'c', 'zzz']", &["a", "c"]),
    ("meta.level > 3", &["b"]),
    ("meta.level = 2", &["a"]),
    ("meta.tags ~ 'food'", &["a"]),
    ("meta.tags.0 = 'money'", &["b"]),
    ("meta = null", &["c"]),
    ("due < @now", &["a", "d"]),
    ("due > '2026-01-01T00:00:00Z'", &["b"]),
    (
        "due in ['2023-11-14T22:13:20Z', '2020-01-01T00:00:00Z']",
        &["a"],
    ),
    (
        "(owner = 'alice' || owner = 'bob') && !(done || priority = null)",
        &["a"],
    ),
    (
        "@auth.provider = 'wechat' && owner = @auth.id && done",
        &["b"],
    ),
];

/// Rows of a table `notes (id, meta)` whose `meta.v` holds a value of every JSON type, for the
/// comparisons where SQLite's and PostgreSQL's own JSON semantics differ: both must return what
/// the language means. A JSON value compares only with a value of its own type (a number with
/// a number, a string with a string, a boolean with a boolean); otherwise, and for JSON `null`
/// or a missing key, the comparison is unknown and the row is not returned.
pub const JSON_ROWS: &str = r#"
    ('j1', '{"v": 2}'), ('j2', '{"v": "2"}'), ('j3', '{"v": true}'), ('j4', '{"v": null}'),
    ('j5', '{"v": 1}'), ('j6', '{}'), ('j7', '{"v": "abc"}'), ('j8', '{"v": [1, 2]}'),
    ('j9', '{"null": 7}'), ('j10', '{"0": 1, "v": {"0": 1}}'), ('j11', '{"v": [5, {"w": [6]}]}')"#;

pub const JSON_CASES: &[(&str, &[&str])] = &[
    ("meta.v = 2", &["j1"]),
    ("meta.v = '2'", &["j2"]),
    ("meta.v = true", &["j3"]),
    ("meta.v", &["j3"]),
    ("!meta.v", &[]),
    ("meta.v = null", &["j4", "j6", "j9"]),
    // A key spelled like a keyword is a key like any other.
    ("meta.null = 7", &["j9"]),
    // A digit indexes an array, and only an array (never an object's key "0").
    ("meta.0 = 1", &[]),
    ("meta.v.0 = 1", &["j8"]),
    ("meta.v.0 = 5", &["j11"]),
    // A path goes on after an index.
    ("meta.v.1.w.0 = 6", &["j11"]),
    (
        "meta.v.1.w = null",
        &["j1", "j10", "j2", "j3", "j4", "j5", "j6", "j7", "j8", "j9"],
    ),
    (
        "meta.v != null",
        &["j1", "j10", "j11", "j2", "j3", "j5", "j7", "j8"],
    ),
    ("meta.v < 5", &["j1", "j5"]),
    ("meta.v >= 1.5", &["j1"]),
    ("meta.v > 'a'", &["j7"]),
    ("meta.v != 2", &["j5"]),
    ("meta.v in [1, 2]", &["j1", "j5"]),
    ("meta.v in ['2', 'abc']", &["j2", "j7"]),
    // `~` on JSON: an array with an element of the value's type equal to it; any other value
    // (JSON null included) does not contain it; nothing there is unknown.
    ("meta.v ~ 1", &["j8"]),
    ("meta.v ~ '1'", &[]),
    (
        "meta.v !~ 1",
        &["j1", "j10", "j11", "j2", "j3", "j4", "j5", "j7"],
    ),
];
