//! SQL that every backend writes the same way for a collection's table: quoting, the table and
//! its indexes, the order of a listing and its keyset condition, in both dialects. NULLs sort
//! first ascending and last descending on every backend (SQLite's order; PostgreSQL is told
//! so), and text compares byte by byte (PostgreSQL's text columns are `COLLATE "C"`), so a
//! filter, a sort or a cursor means the same on either backend.

use cloudlet_query::Dialect;

use crate::records::{ColumnType, IndexDef, Select, SortKey, SqlValue, TableDef};

/// A listing as SQL of one dialect: the statement that counts (when asked) and the one that
/// reads the page, each with its values.
pub(crate) struct ListingSql {
    pub(crate) count: Option<(String, Vec<SqlValue>)>,
    pub(crate) page: (String, Vec<SqlValue>),
}

/// The SQL of `select` on `table` (quoted, and qualified where the backend needs it).
pub(crate) fn listing_sql(dialect: Dialect, table: &str, select: &Select) -> ListingSql {
    let (mut condition, mut values) = select.condition.to_sql(dialect, 0);
    let count = select.count.then(|| {
        (
            format!("SELECT count(*) FROM {table} WHERE {condition}"),
            values.clone(),
        )
    });
    if let Some((after, id)) = &select.after {
        let after = keyset_after(dialect, &select.sort, after, id, &mut values);
        condition = format!("{condition} AND {after}");
    }
    let order = order_by(dialect, &select.sort);
    values.push(SqlValue::Int(select.limit as i64));
    let limit = dialect.placeholder(values.len());
    values.push(SqlValue::Int(select.offset as i64));
    let offset = dialect.placeholder(values.len());
    let page = format!(
        "SELECT * FROM {table} WHERE {condition} ORDER BY {order} LIMIT {limit} OFFSET {offset}"
    );
    ListingSql {
        count,
        page: (page, values),
    }
}

/// A quoted identifier.
pub(crate) fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The table of collection `collection`.
pub(crate) fn table(collection: &str) -> String {
    quote(&format!("r_{collection}"))
}

/// A column's type in `dialect`.
pub(crate) fn column_type(dialect: Dialect, column_type: ColumnType) -> &'static str {
    match (dialect, column_type) {
        (Dialect::Sqlite, ColumnType::Text | ColumnType::Json) => "TEXT",
        (Dialect::Sqlite, ColumnType::Real) => "REAL",
        (Dialect::Sqlite, ColumnType::Integer | ColumnType::Bool) => "INTEGER",
        (Dialect::Postgres, ColumnType::Text) => "text COLLATE \"C\"",
        (Dialect::Postgres, ColumnType::Json) => "jsonb",
        (Dialect::Postgres, ColumnType::Real) => "float8",
        (Dialect::Postgres, ColumnType::Integer) => "bigint",
        (Dialect::Postgres, ColumnType::Bool) => "boolean",
    }
}

/// The statements that create collection `collection`'s table, `table` (quoted, and qualified
/// where the backend needs it), with its system indexes and declared ones.
pub(crate) fn create_table_sql(
    dialect: Dialect,
    table: &str,
    collection: &str,
    definition: &TableDef,
) -> Vec<String> {
    let text = column_type(dialect, ColumnType::Text);
    let integer = column_type(dialect, ColumnType::Integer);
    // Index and constraint names join the collection's with `:`, which no collection name
    // has, so that no collection's table can take the name of another's index.
    let name = format!("r_{collection}");
    let primary = match dialect {
        Dialect::Sqlite => String::new(),
        Dialect::Postgres => format!("CONSTRAINT {} ", quote(&format!("{name}:pk"))),
    };
    let mut columns = vec![
        format!("\"id\" {text} {primary}PRIMARY KEY"),
        format!("\"created_at\" {integer} NOT NULL"),
        format!("\"updated_at\" {integer} NOT NULL"),
        format!("\"owner\" {text}"),
    ];
    for column in &definition.columns {
        columns.push(format!(
            "{} {}",
            quote(&column.name),
            column_type(dialect, column.column_type)
        ));
    }
    let nulls = index_nulls(dialect);
    let mut statements = vec![
        format!("CREATE TABLE {table} ({})", columns.join(", ")),
        format!(
            "CREATE INDEX {} ON {table} (\"owner\"{nulls}, \"created_at\"{nulls}, \"id\"{nulls})",
            quote(&format!("{name}:owner")),
        ),
        format!(
            "CREATE INDEX {} ON {table} (\"created_at\"{nulls}, \"id\"{nulls})",
            quote(&format!("{name}:created")),
        ),
    ];
    // Unique columns are unique indexes, so that altering can add and drop them.
    let mut indexes: Vec<IndexDef> = definition
        .columns
        .iter()
        .filter(|c| c.unique)
        .map(|c| IndexDef {
            columns: vec![c.name.clone()],
            unique: true,
        })
        .collect();
    indexes.extend(definition.indexes.iter().cloned());
    statements.extend(index_sql(dialect, table, collection, &indexes));
    statements
}

/// How an index orders NULLs: as listings sort them (first ascending, last descending), so
/// that an index serves a sort in either direction. SQLite's indexes already do.
fn index_nulls(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Sqlite => "",
        Dialect::Postgres => " NULLS FIRST",
    }
}

/// The declared indexes of a collection's table, named `r_{collection}:i{n}` (tables made before
/// names had `:` have `r_{collection}_i{n}`; see [`declared_index_prefixes`]). A non-unique
/// index ends with `id`, the tie-break of every sort, so that a list sorted on the index's fields
/// reads its page straight from the index instead of sorting every matching row.
pub(crate) fn index_sql(
    dialect: Dialect,
    table: &str,
    collection: &str,
    indexes: &[IndexDef],
) -> Vec<String> {
    let nulls = index_nulls(dialect);
    indexes
        .iter()
        .enumerate()
        .map(|(i, index)| {
            let mut columns: Vec<String> = index.columns.iter().map(|c| quote(c)).collect();
            if !index.unique && index.columns.last().map(String::as_str) != Some("id") {
                columns.push(quote("id"));
            }
            let columns: Vec<String> = columns.into_iter().map(|c| format!("{c}{nulls}")).collect();
            format!(
                "CREATE {}INDEX {} ON {table} ({})",
                if index.unique { "UNIQUE " } else { "" },
                quote(&format!("r_{collection}:i{i}")),
                columns.join(", ")
            )
        })
        .collect()
}

/// The prefixes of the names of a collection's declared indexes: today's, and the one of
/// tables made before names had `:`.
pub(crate) fn declared_index_prefixes(collection: &str) -> [String; 2] {
    [format!("r_{collection}:i"), format!("r_{collection}_i")]
}

/// Ties are broken by `id` in the direction of the last sort key, so that an index on the sort
/// fields (which ends with `id`) yields rows in exactly the order asked, read forwards or
/// backwards.
fn ties_descending(sort: &[SortKey]) -> bool {
    sort.last().is_some_and(|key| key.descending)
}

/// `ORDER BY`'s list: the sort keys, then `id`.
fn order_by(dialect: Dialect, sort: &[SortKey]) -> String {
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
    // `id` is never NULL, but PostgreSQL matches an index to an order by its NULLs too: said
    // as the index has them, or the page is sorted from every row of its sort keys' last value.
    let descending = ties_descending(sort);
    order.push(format!(
        "\"id\" {}{}",
        if descending { "DESC" } else { "ASC" },
        nulls(descending)
    ));
    order.join(", ")
}

/// The keyset condition "after this record in this order", NULL-aware. Its values are appended
/// to `params`, its placeholders numbered after those already there.
fn keyset_after(
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
    // The alternatives below are exact, but no index seeks an OR of them: where the first key
    // is never null, a bound on it alone lets the database start at the cursor rather than
    // walk every row before it.
    let bound = match (sort.first(), values.first()) {
        (Some(key), Some(value)) if key.never_null && !matches!(value, SqlValue::Null) => {
            let op = if key.descending { "<=" } else { ">=" };
            Some(format!(
                "{} {op} {}",
                quote(&key.column),
                next(value, params)
            ))
        }
        _ => None,
    };
    // SQLite would answer an OR of conditions on an indexed column by looking each up in the
    // index and sorting all that is left (every row to the end of the listing, for a page near
    // its start); a unary `+` keeps the index for the order, walked from where the listing
    // starts (or from the bound) to the cursor and read a page on, never sorted.
    let keys: Vec<(String, bool, SqlValue)> = match dialect {
        Dialect::Sqlite => keys
            .into_iter()
            .map(|(column, descending, value)| (format!("+{column}"), descending, value))
            .collect(),
        Dialect::Postgres => keys,
    };
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
    match bound {
        Some(bound) => format!("({bound} AND ({}))", alternatives.join(" OR ")),
        None => format!("({})", alternatives.join(" OR ")),
    }
}

#[cfg(all(test, feature = "testing"))]
mod tests {
    use super::*;
    use crate::postgres::testing::TestServer;
    use crate::records::{ColumnDef, Condition};

    /// On PostgreSQL a page sorted on an indexed field, either way, is read from the index in
    /// order, its `id` tie-break too: no sort of the rows that share the last sort value.
    #[test]
    fn a_page_sorted_on_an_indexed_field_is_read_from_the_index_either_way() {
        let pg = TestServer::shared();
        let url = pg.database();
        let db = TestServer::database_name(&url);
        let definition = TableDef {
            columns: vec![ColumnDef {
                name: "priority".into(),
                column_type: ColumnType::Integer,
                unique: false,
            }],
            indexes: vec![IndexDef {
                columns: vec!["priority".into()],
                unique: false,
            }],
        };
        let table = super::table("todos");
        let mut setup = create_table_sql(Dialect::Postgres, &table, "todos", &definition);
        // Five priorities: a page of 20 is inside the rows of one.
        setup.push(format!(
            "INSERT INTO {table} (id, created_at, updated_at, owner, priority)
             SELECT 'r' || g, g, g, 'u', g % 5 FROM generate_series(1, 5000) AS g"
        ));
        setup.push(format!("ANALYZE {table}"));
        pg.sql(db, &(setup.join(";\n") + ";"));
        for descending in [true, false] {
            let select = Select {
                condition: Condition::always(),
                sort: vec![SortKey {
                    column: "priority".into(),
                    descending,
                    never_null: false,
                }],
                after: None,
                limit: 20,
                offset: 0,
                count: false,
                max_bytes: usize::MAX,
            };
            let (sql, values) = listing_sql(Dialect::Postgres, &table, &select).page;
            assert_eq!(values, [SqlValue::Int(20), SqlValue::Int(0)]);
            let sql = sql.replace("$1", "20").replace("$2", "0");
            let plan = pg.sql(db, &format!("SET enable_seqscan = off; EXPLAIN {sql}"));
            assert!(plan.contains("Index Scan"), "{sql}\n{plan}");
            assert!(!plan.contains("Sort"), "{sql}\n{plan}");
        }
    }
}
