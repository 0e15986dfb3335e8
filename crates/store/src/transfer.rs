//! Copying an instance from SQLite to PostgreSQL (`cloudlet migrate`), one app at a time.
//!
//! Each app moves in one PostgreSQL transaction: its control-plane rows, its schema, every row of
//! every table, and the verification, so an interrupted migration leaves only whole apps behind
//! and a rerun skips (and verifies again) those already there. Rows are read in chunks by
//! `rowid`, converted to the target column's type, and hashed on both sides: a table is copied
//! when its row count and the sum of its rows' hashes (independent of order, hence of collation)
//! read back from PostgreSQL equal the source's. The source is only read.
//!
//! What a collection's table looks like (which columns are booleans or JSON) is the domain's
//! knowledge: the caller hands in each collection's [`TableDef`]; token-signing keys are sealed
//! by the caller before they are handed in.

use std::collections::BTreeMap;
use std::error::Error;

use bytes::{BufMut, BytesMut};
use deadpool_postgres::Transaction;
use futures_util::TryStreamExt;
use rusqlite::types::ValueRef;
use sha2::{Digest, Sha256};
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};

use crate::postgres::{
    APP_MIGRATIONS, Postgres, SYSTEM_SCHEMA, create_table_sql, migrate_in, schema,
};
use crate::sqlite::{SqliteSystemStore, SqliteTenants};
use crate::{AppName, CollectionRow, SigningKeyRow, StoreError, TableDef};

/// Rows read and written per statement, at most; and about how many bytes (a chunk stops at the
/// row that passes it), so that site files of megabytes do not make one huge statement.
const CHUNK: i64 = 500;
const CHUNK_BYTES: usize = 4 * 1024 * 1024;

/// JSON written the one way both sides agree on: parsed, negative zero as zero (PostgreSQL's
/// numbers have no negative zero), written again with sorted keys.
fn canonical_json(mut value: serde_json::Value) -> String {
    fn fix(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Number(n) if n.as_f64() == Some(0.0) && n.is_f64() => {
                *value = serde_json::json!(0.0);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(fix),
            serde_json::Value::Object(map) => map.values_mut().for_each(fix),
            _ => {}
        }
    }
    fix(&mut value);
    value.to_string()
}

/// App tables in an order that satisfies their foreign keys; the others follow by name.
const FIRST: &[&str] = &[
    "users",
    "identities",
    "sessions",
    "retired_session_secrets",
    "session_tombstones",
    "_pay_orders",
];

/// What one table's copy found: rows on each side and whether their hashes agree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableCheck {
    pub table: String,
    pub rows: u64,
    /// The order-independent sum of the rows' SHA-256 (first 128 bits), as hex.
    pub checksum: String,
}

/// What moving one app did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppTransfer {
    /// False when the app was there already (a rerun): then it was verified, not copied.
    pub copied: bool,
    pub tables: Vec<TableCheck>,
}

/// A value on its way: read from SQLite, converted to its PostgreSQL column's type.
#[derive(Debug, Clone, PartialEq)]
enum Cell {
    Null,
    Int(i64),
    Float(f64),
    Bool(bool),
    Text(String),
    /// JSON text, canonical (parsed and written again), so that `jsonb`'s own spacing and key
    /// order hash the same.
    Json(String),
    Bytes(Vec<u8>),
}

impl Cell {
    /// A SQLite value as a value of PostgreSQL type `ty`.
    fn convert(value: ValueRef<'_>, ty: &Type) -> Result<Cell, StoreError> {
        let refused = || {
            StoreError::Task(format!(
                "a {:?} value can not be stored as {ty}",
                value.data_type()
            ))
        };
        Ok(match (value, ty) {
            (ValueRef::Null, _) => Cell::Null,
            (ValueRef::Integer(i), &Type::INT8 | &Type::INT4) => Cell::Int(i),
            (ValueRef::Integer(i), &Type::FLOAT8) => Cell::Float(i as f64),
            (ValueRef::Real(f), &Type::FLOAT8) => Cell::Float(f),
            (ValueRef::Integer(i), &Type::BOOL) => Cell::Bool(i != 0),
            (ValueRef::Text(t), &Type::JSONB | &Type::JSON) => {
                let json: serde_json::Value =
                    serde_json::from_slice(t).map_err(|e| StoreError::Task(e.to_string()))?;
                Cell::Json(canonical_json(json))
            }
            (ValueRef::Text(t), &Type::TEXT | &Type::VARCHAR) => {
                Cell::Text(String::from_utf8(t.to_vec()).map_err(|_| refused())?)
            }
            (ValueRef::Blob(b) | ValueRef::Text(b), &Type::BYTEA) => Cell::Bytes(b.to_vec()),
            _ => return Err(refused()),
        })
    }

    /// About how many bytes the value takes.
    fn size(&self) -> usize {
        match self {
            Cell::Text(t) | Cell::Json(t) => t.len(),
            Cell::Bytes(b) => b.len(),
            _ => 8,
        }
    }

    /// Feeds the value, tagged and length-prefixed, to a hash.
    fn hash_into(&self, hash: &mut Sha256) {
        let (tag, bytes): (u8, Vec<u8>) = match self {
            Cell::Null => (0, Vec::new()),
            Cell::Int(i) => (1, i.to_be_bytes().to_vec()),
            Cell::Float(f) => (2, f.to_bits().to_be_bytes().to_vec()),
            Cell::Bool(b) => (3, vec![u8::from(*b)]),
            Cell::Text(t) => (4, t.as_bytes().to_vec()),
            Cell::Json(j) => (5, j.as_bytes().to_vec()),
            Cell::Bytes(b) => (6, b.clone()),
        };
        hash.update([tag]);
        hash.update((bytes.len() as u64).to_be_bytes());
        hash.update(bytes);
    }
}

impl ToSql for Cell {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        match self {
            Cell::Null => Ok(IsNull::Yes),
            Cell::Int(i) if *ty == Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
            Cell::Int(i) => i.to_sql(ty, out),
            Cell::Float(f) => f.to_sql(ty, out),
            Cell::Bool(b) => b.to_sql(ty, out),
            Cell::Text(t) => t.as_str().to_sql(ty, out),
            Cell::Json(j) if *ty == Type::JSONB => {
                out.put_u8(1);
                out.put_slice(j.as_bytes());
                Ok(IsNull::No)
            }
            Cell::Json(j) => j.as_str().to_sql(ty, out),
            Cell::Bytes(b) => b.as_slice().to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

impl<'a> FromSql<'a> for Cell {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn Error + Sync + Send>> {
        Ok(match *ty {
            Type::INT8 => Cell::Int(i64::from_sql(ty, raw)?),
            Type::INT4 => Cell::Int(i32::from_sql(ty, raw)?.into()),
            Type::FLOAT8 => Cell::Float(f64::from_sql(ty, raw)?),
            Type::BOOL => Cell::Bool(bool::from_sql(ty, raw)?),
            Type::BYTEA => Cell::Bytes(Vec::<u8>::from_sql(ty, raw)?),
            Type::JSONB | Type::JSON => {
                let text = match (ty, raw.split_first()) {
                    (&Type::JSONB, Some((1, rest))) => rest,
                    (&Type::JSONB, _) => return Err("unsupported jsonb version".into()),
                    _ => raw,
                };
                let json: serde_json::Value = serde_json::from_slice(text)?;
                Cell::Json(canonical_json(json))
            }
            _ => Cell::Text(String::from_sql(ty, raw)?),
        })
    }

    fn from_sql_null(_: &Type) -> Result<Self, Box<dyn Error + Sync + Send>> {
        Ok(Cell::Null)
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// Row count and order-independent hash sum of a table.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Tally {
    rows: u64,
    sum: u128,
}

impl Tally {
    fn add(&mut self, row: &[Cell]) {
        let mut hash = Sha256::new();
        for cell in row {
            cell.hash_into(&mut hash);
        }
        let digest = hash.finalize();
        let mut first = [0u8; 16];
        first.copy_from_slice(&digest[..16]);
        self.rows += 1;
        self.sum = self.sum.wrapping_add(u128::from_be_bytes(first));
    }
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The columns of a PostgreSQL table with their types, in order.
async fn target_columns(
    tx: &Transaction<'_>,
    schema_name: &str,
    table: &str,
) -> Result<Vec<(String, Type)>, StoreError> {
    let rows = tx
        .query(
            "SELECT a.attname, a.atttypid FROM pg_attribute a
             JOIN pg_class c ON c.oid = a.attrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped
             ORDER BY a.attnum",
            &[&schema_name, &table],
        )
        .await?;
    rows.iter()
        .map(|r| {
            let oid: u32 = r.get(1);
            let ty = Type::from_oid(oid)
                .ok_or_else(|| StoreError::Task(format!("unknown column type {oid}")))?;
            Ok((r.get(0), ty))
        })
        .collect()
}

/// Where a copy reads from: an app database, or the control plane's rows of one app.
#[derive(Clone, Copy)]
enum Source<'a> {
    App(&'a SqliteTenants, &'a AppName),
    System(&'a SqliteSystemStore),
}

impl Source<'_> {
    /// The rows of `table` after `rowid`, converted to `columns`' types, with the last rowid.
    async fn chunk(
        &self,
        table: &str,
        filter: &str,
        columns: &[(String, Type)],
        after: i64,
    ) -> Result<(Vec<Vec<Cell>>, i64), StoreError> {
        let list: Vec<String> = columns.iter().map(|(name, _)| quote(name)).collect();
        let sql = format!(
            "SELECT rowid, {} FROM {} WHERE rowid > ?1 {filter} ORDER BY rowid LIMIT {CHUNK}",
            list.join(", "),
            quote(table)
        );
        let types: Vec<Type> = columns.iter().map(|(_, ty)| ty.clone()).collect();
        let read = move |c: &rusqlite::Connection| {
            let mut statement = c.prepare(&sql)?;
            let mut rows = statement.query([after])?;
            let mut out = Vec::new();
            let mut last = after;
            let mut bytes = 0;
            while let Some(row) = rows.next()? {
                last = row.get(0)?;
                let mut cells = Vec::with_capacity(types.len());
                for (i, ty) in types.iter().enumerate() {
                    let cell = Cell::convert(row.get_ref(i + 1)?, ty)?;
                    bytes += cell.size();
                    cells.push(cell);
                }
                out.push(cells);
                if bytes >= CHUNK_BYTES {
                    break;
                }
            }
            Ok((out, last))
        };
        match self {
            Source::App(tenants, app) => tenants.read_app(app, read).await,
            Source::System(system) => system.database().read(read).await,
        }
    }
}

/// Copies `table` (all of it, or the rows `filter` keeps) into the same table of `target`,
/// then reads it back; returns both tallies.
async fn copy_table(
    tx: &Transaction<'_>,
    source: Source<'_>,
    target_schema: &str,
    table: &str,
    filter: &str,
) -> Result<TableCheck, StoreError> {
    let bare_schema = target_schema.trim_matches('"');
    let columns = target_columns(tx, bare_schema, table).await?;
    if columns.is_empty() {
        return Err(StoreError::Task(format!(
            "{target_schema}.{table} does not exist"
        )));
    }
    let names: Vec<String> = columns.iter().map(|(n, _)| quote(n)).collect();
    let identity = tx
        .query_opt(
            "SELECT a.attname FROM pg_attribute a
             JOIN pg_class c ON c.oid = a.attrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relname = $2 AND a.attidentity <> ''",
            &[&bare_schema, &table],
        )
        .await?
        .map(|r| r.get::<_, String>(0));
    let mut source_tally = Tally::default();
    let mut after = 0;
    loop {
        let (rows, last) = source.chunk(table, filter, &columns, after).await?;
        if rows.is_empty() {
            break;
        }
        after = last;
        let mut placeholders = Vec::with_capacity(rows.len());
        let mut params: Vec<&(dyn ToSql + Sync)> = Vec::new();
        for row in &rows {
            source_tally.add(row);
            let first = params.len();
            placeholders.push(format!(
                "({})",
                (1..=row.len())
                    .map(|i| format!("${}", first + i))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            params.extend(row.iter().map(|c| c as &(dyn ToSql + Sync)));
        }
        let sql = format!(
            "INSERT INTO {target_schema}.{} ({}) {}VALUES {}",
            quote(table),
            names.join(", "),
            if identity.is_some() {
                "OVERRIDING SYSTEM VALUE "
            } else {
                ""
            },
            placeholders.join(", ")
        );
        tx.execute(sql.as_str(), &params).await?;
    }
    if let Some(column) = identity {
        tx.execute(
            &format!(
                "SELECT setval(pg_get_serial_sequence($1, $2), max({0})) FROM {target_schema}.{1}
                 HAVING max({0}) IS NOT NULL",
                quote(&column),
                quote(table)
            ),
            &[&format!("{target_schema}.{}", quote(table)), &column],
        )
        .await?;
    }
    let target_tally = tally_target(tx, target_schema, table, &names, filter).await?;
    if target_tally != source_tally {
        return Err(StoreError::Task(format!(
            "{table}: {} rows copied, {} read back, or their checksums differ",
            source_tally.rows, target_tally.rows
        )));
    }
    Ok(TableCheck {
        table: table.to_owned(),
        rows: source_tally.rows,
        checksum: format!("{:032x}", source_tally.sum),
    })
}

/// The tally of a target table's rows.
async fn tally_target(
    tx: &Transaction<'_>,
    target_schema: &str,
    table: &str,
    names: &[String],
    filter: &str,
) -> Result<Tally, StoreError> {
    let sql = format!(
        "SELECT {} FROM {target_schema}.{} WHERE TRUE {filter}",
        names.join(", "),
        quote(table)
    );
    let mut tally = Tally::default();
    // Streamed: a table is read back row by row, never held whole.
    let rows = tx
        .query_raw(sql.as_str(), std::iter::empty::<&(dyn ToSql + Sync)>())
        .await?;
    futures_util::pin_mut!(rows);
    while let Some(row) = rows.try_next().await? {
        let mut cells = Vec::with_capacity(row.len());
        for i in 0..row.len() {
            cells.push(row.try_get::<_, Cell>(i)?);
        }
        tally.add(&cells);
    }
    Ok(tally)
}

/// `AND {column} = '{app}'`: app names are `a-z`, `0-9` and `-`, so the literal needs no
/// escaping and reads the same in both dialects.
fn app_filter(column: &str, app: &AppName) -> String {
    format!("AND {} = '{}'", quote(column), app.as_str())
}

/// Moves `app` into `target` in one transaction, or, when it is there already, verifies it.
/// `collections` are the app's collections with their tables; `signing_keys` its keys, sealed.
pub async fn transfer_app(
    system: &SqliteSystemStore,
    tenants: &SqliteTenants,
    target: &Postgres,
    app: &AppName,
    collections: &[(CollectionRow, TableDef)],
    signing_keys: &[SigningKeyRow],
) -> Result<AppTransfer, StoreError> {
    let app_schema = schema(app);
    let mut client = target.client().await?;
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&app_schema])
        .await?;
    let present = tx
        .query_opt(
            &format!("SELECT 1 FROM {SYSTEM_SCHEMA}.apps WHERE name = $1"),
            &[&app.as_str()],
        )
        .await?
        .is_some();
    let tables = app_tables(tenants, app).await?;
    if present {
        let mut checks = Vec::new();
        for table in &tables {
            checks.push(verify_table(&tx, Source::App(tenants, app), &app_schema, table).await?);
        }
        return Ok(AppTransfer {
            copied: false,
            tables: checks,
        });
    }
    let mut checks = Vec::new();
    let system_source = Source::System(system);
    checks.push(
        copy_table(
            &tx,
            system_source,
            SYSTEM_SCHEMA,
            "apps",
            &app_filter("name", app),
        )
        .await?,
    );
    for key in signing_keys {
        tx.execute(
            &format!(
                "INSERT INTO {SYSTEM_SCHEMA}.app_signing_keys (app, kid, secret, created_at)
                 VALUES ($1, $2, $3, $4)"
            ),
            &[&app.as_str(), &key.kid, &key.secret, &key.created_at_ms],
        )
        .await?;
    }
    for table in ["app_providers", "schedules"] {
        checks.push(
            copy_table(
                &tx,
                system_source,
                SYSTEM_SCHEMA,
                table,
                &app_filter("app", app),
            )
            .await?,
        );
    }
    migrate_in(&tx, &app_schema, APP_MIGRATIONS).await?;
    for (collection, table) in collections {
        for statement in create_table_sql(&app_schema, &collection.name, table) {
            tx.batch_execute(&statement).await?;
        }
    }
    for table in &tables {
        checks.push(copy_table(&tx, Source::App(tenants, app), &app_schema, table, "").await?);
    }
    tx.commit().await?;
    Ok(AppTransfer {
        copied: true,
        tables: checks,
    })
}

/// Compares a table already in the target with the source.
async fn verify_table(
    tx: &Transaction<'_>,
    source: Source<'_>,
    target_schema: &str,
    table: &str,
) -> Result<TableCheck, StoreError> {
    let columns = target_columns(tx, target_schema.trim_matches('"'), table).await?;
    let names: Vec<String> = columns.iter().map(|(n, _)| quote(n)).collect();
    let mut source_tally = Tally::default();
    let mut after = 0;
    loop {
        let (rows, last) = source.chunk(table, "", &columns, after).await?;
        if rows.is_empty() {
            break;
        }
        after = last;
        for row in &rows {
            source_tally.add(row);
        }
    }
    let target_tally = tally_target(tx, target_schema, table, &names, "").await?;
    if target_tally != source_tally {
        return Err(StoreError::Task(format!(
            "{table} differs from the source: {} rows there, {} here, or their checksums differ",
            target_tally.rows, source_tally.rows
        )));
    }
    Ok(TableCheck {
        table: table.to_owned(),
        rows: source_tally.rows,
        checksum: format!("{:032x}", source_tally.sum),
    })
}

/// The tables of an app's SQLite database to copy, foreign keys first.
async fn app_tables(tenants: &SqliteTenants, app: &AppName) -> Result<Vec<String>, StoreError> {
    let mut names: Vec<String> = tenants
        .read_app(app, |c| {
            let mut statement = c.prepare(
                "SELECT name FROM sqlite_master WHERE type = 'table'
                 AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name <> '_cloudlet_meta'",
            )?;
            let names = statement
                .query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(names)
        })
        .await?;
    let rank: BTreeMap<&str, usize> = FIRST.iter().enumerate().map(|(i, t)| (*t, i)).collect();
    names.sort_by_key(|name| {
        (
            rank.get(name.as_str()).copied().unwrap_or(FIRST.len()),
            name.clone(),
        )
    });
    Ok(names)
}

/// Copies the console's people, their roles and the audit log, once every app is there (roles
/// name apps); verifies them instead when they were copied before. Sessions are not copied:
/// people log in again on the new backend.
pub async fn transfer_console(
    system: &SqliteSystemStore,
    target: &Postgres,
) -> Result<Vec<TableCheck>, StoreError> {
    const TABLES: [&str; 3] = ["console_people", "console_roles", "console_audit"];
    let mut client = target.client().await?;
    let tx = client.transaction().await?;
    let s = SYSTEM_SCHEMA;
    tx.batch_execute(&format!(
        "LOCK TABLE {s}.console_people, {s}.console_roles, {s}.console_audit IN EXCLUSIVE MODE"
    ))
    .await?;
    let present = tx
        .query_opt(
            &format!("SELECT 1 FROM {SYSTEM_SCHEMA}.console_people LIMIT 1"),
            &[],
        )
        .await?
        .is_some();
    let mut checks = Vec::new();
    for table in TABLES {
        let source = Source::System(system);
        checks.push(if present {
            verify_table(&tx, source, SYSTEM_SCHEMA, table).await?
        } else {
            copy_table(&tx, source, SYSTEM_SCHEMA, table, "").await?
        });
    }
    tx.commit().await?;
    Ok(checks)
}

/// Copies the control plane's settings but the master-key check (the target keeps its own) and
/// SQLite's mark of an open database.
pub async fn transfer_settings(
    system: &SqliteSystemStore,
    target: &Postgres,
) -> Result<u64, StoreError> {
    let rows: Vec<(String, Vec<u8>)> = system
        .database()
        .read(|c| {
            let mut statement = c.prepare(
                "SELECT key, value FROM settings WHERE key NOT IN ('master-key-check', ?1)",
            )?;
            let rows = statement
                .query_map([super::sqlite::OPEN_MARK], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await?;
    let client = target.client().await?;
    for (key, value) in &rows {
        client
            .execute(
                &format!(
                    "INSERT INTO {SYSTEM_SCHEMA}.settings (key, value) VALUES ($1, $2)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value"
                ),
                &[key, value],
            )
            .await?;
    }
    Ok(rows.len() as u64)
}
