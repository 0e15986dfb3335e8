//! SQL that every backend writes the same way for a collection's table: quoting, the order of a
//! listing and its keyset condition, in both dialects. NULLs sort first ascending and last
//! descending on every backend (SQLite's order; PostgreSQL is told so), so a cursor taken on one
//! backend means the same on the other.

use cloudlet_query::Dialect;

use crate::records::{SortKey, SqlValue};

/// A quoted identifier.
pub(crate) fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The table of collection `collection`.
pub(crate) fn table(collection: &str) -> String {
    quote(&format!("r_{collection}"))
}

/// Ties are broken by `id` in the direction of the last sort key, so that an index on the sort
/// fields (which ends with `id`) yields rows in exactly the order asked, read forwards or
/// backwards.
fn ties_descending(sort: &[SortKey]) -> bool {
    sort.last().is_some_and(|key| key.descending)
}

/// `ORDER BY`'s list: the sort keys, then `id`.
pub(crate) fn order_by(dialect: Dialect, sort: &[SortKey]) -> String {
    let nulls = |descending: bool| match (dialect, descending) {
        (Dialect::Sqlite, _) => "",
        (Dialect::Postgres, false) => " NULLS FIRST",
        (Dialect::Postgres, true) => " NULLS LAST",
    };
    let mut order: Vec<String> = sort
        .iter()
        .map(|k| {
            let direction = if k.descending { "DESC" } else { "ASC" };
            format!("{} {direction}{}", quote(&k.column), nulls(k.descending))
        })
        .collect();
    order.push(if ties_descending(sort) {
        "\"id\" DESC".into()
    } else {
        "\"id\" ASC".into()
    });
    order.join(", ")
}

/// The keyset condition "after this record in this order", NULL-aware. Its values are appended
/// to `params`, its placeholders numbered after those already there.
pub(crate) fn keyset_after(
    dialect: Dialect,
    sort: &[SortKey],
    values: &[SqlValue],
    id: &str,
    params: &mut Vec<SqlValue>,
) -> String {
    let next = |value: &SqlValue, params: &mut Vec<SqlValue>| {
        params.push(value.clone());
        dialect.placeholder(params.len())
    };
    let mut keys: Vec<(String, bool, SqlValue)> = sort
        .iter()
        .zip(values)
        .map(|(key, value)| (quote(&key.column), key.descending, value.clone()))
        .collect();
    keys.push((
        "\"id\"".into(),
        ties_descending(sort),
        SqlValue::Text(id.to_owned()),
    ));
    let mut alternatives = Vec::new();
    for i in 0..keys.len() {
        let mut parts = Vec::new();
        for (column, _, value) in &keys[..i] {
            parts.push(match value {
                SqlValue::Null => format!("{column} IS NULL"),
                v => format!("{column} = {}", next(v, params)),
            });
        }
        let (column, descending, value) = &keys[i];
        parts.push(match (descending, value) {
            (false, SqlValue::Null) => format!("{column} IS NOT NULL"),
            (false, v) => format!("{column} > {}", next(v, params)),
            (true, SqlValue::Null) => "FALSE".to_owned(),
            (true, v) => format!("({column} < {} OR {column} IS NULL)", next(v, params)),
        });
        alternatives.push(format!("({})", parts.join(" AND ")));
    }
    format!("({})", alternatives.join(" OR "))
}
