//! Collections and records: each app's data, and the rules that say who may see and change it.
//!
//! A collection is declared with typed fields and five rules (`list`, `view`, `create`,
//! `update`, `delete`) in the filter language of `cloudlet-query`. Rules are compiled to SQL once
//! per schema version and applied inside the database: the list rule is ANDed into every
//! listing, the view, update and delete rules guard their statements, and the create rule is
//! checked on the inserted row before the write commits. A record a caller may not see answers
//! exactly as a missing one does. Every write records its event in the app's event log in the
//! same transaction, and rings ([`Data::rings`]) once it commits; the log is read back as
//! [`ChangeEvent`]s in commit order ([`Data::changes_after`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cloudlet_query::{Bindings, Expr, FieldType, Limits, Predicate, QueryError, Schema};
use cloudlet_store::{
    AppName, BatchOp, BatchOutcome, Bell, CollectionRow, ColumnDef, ColumnType, Condition, Emit,
    IndexDef, LogBounds, LogPosition, Record, RecordStore, Select, SortKey, SqlValue, StoreError,
    TableChange, TableDef, Topic, record_bytes,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};
use tokio::sync::broadcast;

use crate::access::Caller;
use crate::clock::{Clock, Timestamp};
use crate::queues::HintTicket;
use crate::random::Random;

/// The most writes in one batch.
pub const MAX_BATCH: usize = 100;
/// The most records one page returns.
pub const MAX_PAGE: usize = 500;
/// The largest record, as JSON.
pub const MAX_RECORD_BYTES: usize = 256 * 1024;
/// The stored bytes a page of records holds at most: the page ends early, with its cursor, at
/// the first record past them. A record's json values take many times their text in memory
/// (an array of zeros sixteen times), so five hundred records of 256 KiB would take gigabytes.
pub const MAX_PAGE_BYTES: usize = 4 << 20;
/// The stored bytes a page's expansions may read and copy into its records, all levels and
/// relations counted; a page whose expansions are more is refused (`invalid_expand`): ask for
/// fewer records at once.
pub const MAX_EXPAND_BYTES: usize = 16 << 20;
const MAX_FIELDS: usize = 100;
/// Declared indexes per collection, and collections per app: every table and index is a lock
/// a schema change takes and an entry in the database's catalog.
const MAX_INDEXES: usize = 32;
pub const MAX_COLLECTIONS: usize = 200;
const MAX_OFFSET: usize = 10_000;
const SYSTEM_FIELDS: [&str; 4] = ["id", "created_at", "updated_at", "owner"];

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{0}")]
    InvalidFileUrls(String),
    #[error("no collection named {0:?}")]
    CollectionNotFound(String),
    #[error("a collection named {0:?} exists already with another definition")]
    CollectionExists(String),
    #[error("invalid collection: {0}")]
    InvalidCollection(String),
    /// A rule of a collection's definition that does not parse or check: which, and where.
    #[error("invalid collection: {rule} rule: {error}")]
    InvalidRule {
        rule: &'static str,
        error: QueryError,
    },
    #[error("{0}; send \"force\": true to do it anyway")]
    DestructiveChange(String),
    #[error("no such record")]
    RecordNotFound,
    #[error("the {0} rule does not allow this")]
    Forbidden(&'static str),
    #[error("{0}")]
    InvalidFilter(QueryError),
    #[error("invalid sort: {0}")]
    InvalidSort(String),
    #[error("invalid cursor")]
    InvalidCursor,
    #[error("limit must be 1 to {MAX_PAGE}, offset 0 to {MAX_OFFSET}")]
    InvalidPage,
    #[error(
        "the page's records are over {} MiB: ask for fewer at once, or page with next_cursor",
        MAX_PAGE_BYTES >> 20
    )]
    PageTooLarge,
    #[error("no field named {0:?}")]
    UnknownField(String),
    #[error("{0} is set by the server")]
    ReadOnlyField(String),
    #[error("{0} is required")]
    MissingField(String),
    #[error("invalid value for {field}: {problem}")]
    InvalidValue { field: String, problem: String },
    #[error("another record has the same value in a unique field")]
    UniqueViolation,
    #[error("a record is at most {MAX_RECORD_BYTES} bytes of JSON")]
    RecordTooLarge,
    #[error("{0}")]
    InvalidBatch(String),
    #[error("invalid fields: {0}")]
    InvalidFields(String),
    #[error("invalid expand: {0}")]
    InvalidExpand(String),
    #[error("operation {index}: {source}")]
    InBatch {
        index: usize,
        source: Box<DataError>,
    },
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for DataError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict => DataError::UniqueViolation,
            StoreError::TooLarge => DataError::RecordTooLarge,
            other => DataError::Store(other),
        }
    }
}

// ---- definitions ------------------------------------------------------------------------

/// A field as declared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct FieldDef {
    pub name: String,
    #[serde(rename = "type")]
    pub field_type: FieldKind,
    #[serde(default, skip_serializing_if = "is_false")]
    pub required: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub unique: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Json>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_length: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    #[serde(default, rename = "enum", skip_serializing_if = "Option::is_none")]
    pub allowed: Option<Vec<Json>>,
    /// For relations: the collection the ids point into.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collection: Option<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum FieldKind {
    Text,
    Number,
    Integer,
    Bool,
    Datetime,
    Json,
    Relation,
    File,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct IndexInput {
    pub fields: Vec<String>,
    #[serde(default)]
    pub unique: bool,
}

/// A collection's definition: what `PUT …/collections/{name}` takes and `GET` shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CollectionDef {
    #[serde(default)]
    pub fields: Vec<FieldDef>,
    #[serde(default)]
    pub indexes: Vec<IndexInput>,
    /// Each rule: an expression; `""` lets everyone; `null` lets only the admin token and the
    /// app's secret key. A rule left out gets the default: only the owner.
    #[serde(default)]
    pub rules: BTreeMap<String, Option<String>>,
    /// Allows an alteration that loses data (dropping a field, changing its type).
    #[serde(default, skip_serializing)]
    pub force: bool,
    /// Only say what a `PUT` would do ([`Data::plan_collection`]).
    #[serde(default, skip_serializing)]
    pub dry_run: bool,
}

/// What putting a definition would do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Plan {
    Create,
    Alter,
    /// An alteration that loses data: it needs `force`.
    Destroy,
    Unchanged,
}

const ACTIONS: [&str; 5] = ["list", "view", "create", "update", "delete"];

fn default_rule(action: &str) -> &'static str {
    if action == "create" {
        "@auth.id != null"
    } else {
        "owner = @auth.id"
    }
}

pub(crate) fn valid_name(name: &str) -> bool {
    (1..=40).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn query_type(kind: FieldKind) -> FieldType {
    match kind {
        FieldKind::Text => FieldType::Text,
        FieldKind::Number => FieldType::Number,
        FieldKind::Integer => FieldType::Integer,
        FieldKind::Bool => FieldType::Bool,
        FieldKind::Datetime => FieldType::Datetime,
        FieldKind::Json => FieldType::Json,
        FieldKind::Relation => FieldType::Relation,
        FieldKind::File => FieldType::File,
    }
}

fn column_type(kind: FieldKind) -> ColumnType {
    match kind {
        FieldKind::Text | FieldKind::Relation | FieldKind::File => ColumnType::Text,
        FieldKind::Number => ColumnType::Real,
        FieldKind::Integer | FieldKind::Datetime => ColumnType::Integer,
        FieldKind::Bool => ColumnType::Bool,
        FieldKind::Json => ColumnType::Json,
    }
}

/// A collection's name, or why it cannot be one.
fn check_name(name: &str) -> Result<(), DataError> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(DataError::InvalidCollection(format!(
            "collection name {name:?}: 1 to 40 of a-z, 0-9 and _, starting with a letter"
        )))
    }
}

/// How a rule applies, compiled.
#[derive(Debug, Clone)]
enum RuleSql {
    /// Only the admin token and the app's secret key.
    Locked,
    /// Everyone.
    Open,
    /// Those the checked expression holds for.
    When(Arc<Predicate>),
}

/// A collection ready to serve: its definition, schema and compiled rules.
#[derive(Debug)]
struct Compiled {
    def: CollectionDef,
    version: i64,
    schema: Arc<Schema>,
    fields: BTreeMap<String, FieldDef>,
    rules: HashMap<&'static str, RuleSql>,
}

impl Compiled {
    fn new(mut def: CollectionDef, version: i64) -> Result<Self, DataError> {
        let invalid = |m: String| DataError::InvalidCollection(m);
        if def.fields.len() > MAX_FIELDS {
            return Err(invalid(format!("at most {MAX_FIELDS} fields")));
        }
        let mut schema = Schema::new();
        let mut fields = BTreeMap::new();
        for field in &def.fields {
            if !valid_name(&field.name) {
                return Err(invalid(format!(
                    "field name {:?}: 1 to 40 of a-z, 0-9 and _, starting with a letter",
                    field.name
                )));
            }
            if SYSTEM_FIELDS.contains(&field.name.as_str()) {
                return Err(invalid(format!("{} is a system field", field.name)));
            }
            if fields.insert(field.name.clone(), field.clone()).is_some() {
                return Err(invalid(format!("field {} is declared twice", field.name)));
            }
            if field.field_type == FieldKind::Relation
                && field.collection.as_deref().is_none_or(|c| !valid_name(c))
            {
                return Err(invalid(format!(
                    "relation {} needs \"collection\": the collection it points into",
                    field.name
                )));
            }
            if let Some(default) = &field.default {
                to_sql(field, default)
                    .map_err(|e| invalid(format!("default of {}: {e}", field.name)))?;
            }
            schema = schema.with(&field.name, query_type(field.field_type));
        }
        if def.indexes.len() > MAX_INDEXES {
            return Err(invalid(format!("at most {MAX_INDEXES} indexes")));
        }
        for index in &def.indexes {
            if index.fields.is_empty() || index.fields.len() > 8 {
                return Err(invalid("an index has 1 to 8 fields".into()));
            }
            for name in &index.fields {
                if schema.field(name).is_none() {
                    return Err(invalid(format!("index on unknown field {name:?}")));
                }
            }
        }
        for action in def.rules.keys() {
            if !ACTIONS.contains(&action.as_str()) {
                return Err(invalid(format!(
                    "unknown rule {action:?}; rules: {}",
                    ACTIONS.join(", ")
                )));
            }
        }
        let schema = Arc::new(schema);
        let mut rules = HashMap::new();
        for action in ACTIONS {
            let text = def
                .rules
                .entry(action.to_owned())
                .or_insert_with(|| Some(default_rule(action).to_owned()))
                .clone();
            let rule = match text {
                None => RuleSql::Locked,
                Some(text) if text.trim().is_empty() => RuleSql::Open,
                Some(text) => {
                    let invalid_rule = |error| DataError::InvalidRule {
                        rule: action,
                        error,
                    };
                    let expr =
                        cloudlet_query::parse(&text, Limits::default()).map_err(invalid_rule)?;
                    let predicate = Predicate::new(expr, schema.clone()).map_err(invalid_rule)?;
                    RuleSql::When(Arc::new(predicate))
                }
            };
            rules.insert(action, rule);
        }
        Ok(Compiled {
            def,
            version,
            schema,
            fields,
            rules,
        })
    }

    fn table(&self) -> TableDef {
        TableDef {
            columns: self
                .def
                .fields
                .iter()
                .map(|f| ColumnDef {
                    name: f.name.clone(),
                    column_type: column_type(f.field_type),
                    unique: f.unique,
                })
                .collect(),
            indexes: self
                .def
                .indexes
                .iter()
                .map(|i| IndexDef {
                    columns: i.fields.clone(),
                    unique: i.unique,
                })
                .collect(),
        }
    }

    fn field_kind(&self, name: &str) -> Option<FieldKind> {
        match name {
            "id" | "owner" => Some(FieldKind::Text),
            "created_at" | "updated_at" => Some(FieldKind::Datetime),
            _ => self.fields.get(name).map(|f| f.field_type),
        }
    }
}

// ---- values -------------------------------------------------------------------------------

/// A JSON value for `field`, checked against its type and constraints, as a column value.
fn to_sql(field: &FieldDef, value: &Json) -> Result<SqlValue, String> {
    if value.is_null() {
        return if field.required {
            Err("is required".into())
        } else {
            Ok(SqlValue::Null)
        };
    }
    if let Some(allowed) = &field.allowed
        && !allowed.contains(value)
    {
        return Err("is not one of the allowed values".into());
    }
    let range = |n: f64| {
        if field.min.is_some_and(|min| n < min) || field.max.is_some_and(|max| n > max) {
            Err("is out of range".to_owned())
        } else {
            Ok(())
        }
    };
    Ok(match field.field_type {
        FieldKind::Text | FieldKind::Relation | FieldKind::File => {
            let text = value.as_str().ok_or("must be text")?;
            if text.contains('\0') {
                return Err(NUL.into());
            }
            let len = text.chars().count();
            if field.min_length.is_some_and(|m| len < m)
                || field.max_length.is_some_and(|m| len > m)
            {
                return Err("has the wrong length".into());
            }
            SqlValue::Text(text.to_owned())
        }
        FieldKind::Number => {
            let n = value.as_f64().ok_or("must be a number")?;
            range(n)?;
            SqlValue::Float(n)
        }
        FieldKind::Integer => {
            let n = value.as_i64().ok_or("must be an integer")?;
            range(n as f64)?;
            SqlValue::Int(n)
        }
        FieldKind::Bool => SqlValue::Bool(value.as_bool().ok_or("must be true or false")?),
        FieldKind::Datetime => {
            let text = value.as_str().ok_or("must be an RFC 3339 time")?;
            let ms =
                time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                    .map_err(|_| "must be an RFC 3339 time")?
                    .unix_timestamp_nanos()
                    / 1_000_000;
            SqlValue::Int(ms as i64)
        }
        FieldKind::Json if has_nul(value) => return Err(NUL.into()),
        FieldKind::Json => SqlValue::Text(value.to_string()),
    })
}

/// A record id as the API takes it: 1 to 64 URL-safe characters (ids are made of 16). Any
/// other is a record that does not exist, refused before the database sees it.
fn record_id(id: &str) -> Result<(), DataError> {
    let ok = (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(DataError::RecordNotFound)
    }
}

/// Text may not hold NUL: PostgreSQL can store it neither in `text` nor in `jsonb`, and both
/// backends must accept the same records.
const NUL: &str = "must not contain the NUL character";

/// Whether any string or key of `value` holds NUL.
fn has_nul(value: &Json) -> bool {
    match value {
        Json::String(s) => s.contains('\0'),
        Json::Array(items) => items.iter().any(has_nul),
        Json::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

/// The table a stored collection has: what a copy to another backend must create before its
/// rows (`cloudlet migrate`).
pub fn table_of(row: &CollectionRow) -> Result<TableDef, DataError> {
    let def: CollectionDef = serde_json::from_str(&row.definition)
        .map_err(|e| DataError::Store(StoreError::Task(format!("stored definition: {e}"))))?;
    Ok(Compiled::new(def, row.version)?.table())
}

/// A record from its stored columns as an event holds them.
fn stored_record(columns: &Map<String, Json>) -> Record {
    columns
        .iter()
        .map(|(name, value)| {
            let value = match value {
                Json::Null => SqlValue::Null,
                Json::Bool(b) => SqlValue::Bool(*b),
                Json::Number(n) => match n.as_i64() {
                    Some(i) => SqlValue::Int(i),
                    None => SqlValue::Float(n.as_f64().unwrap_or_default()),
                },
                Json::String(s) => SqlValue::Text(s.clone()),
                other => SqlValue::Text(other.to_string()),
            };
            (name.clone(), value)
        })
        .collect()
}

/// A column value as JSON for `kind`.
fn to_json(kind: Option<FieldKind>, value: &SqlValue) -> Json {
    match (kind, value) {
        (_, SqlValue::Null) => Json::Null,
        (Some(FieldKind::Datetime), SqlValue::Int(ms)) => {
            Json::String(Timestamp::from_unix_ms(*ms).to_rfc3339())
        }
        (Some(FieldKind::Bool), SqlValue::Int(i)) => Json::Bool(*i != 0),
        (Some(FieldKind::Json), SqlValue::Text(t)) => serde_json::from_str(t).unwrap_or(Json::Null),
        (_, SqlValue::Bool(b)) => Json::Bool(*b),
        (_, SqlValue::Int(i)) => Json::from(*i),
        (_, SqlValue::Float(f)) => {
            serde_json::Number::from_f64(*f).map_or(Json::Null, Json::Number)
        }
        (_, SqlValue::Text(t)) => Json::String(t.clone()),
    }
}

/// What `actor` must satisfy for `action` on the collection: `None` when it may not at all (a
/// locked rule), `Some(None)` when nothing (the admin token, the app's key, an open rule), or
/// the rule's predicate. (The caller was checked against the app on the way in, see
/// `check_caller`.)
fn guard<'c>(
    compiled: &'c Compiled,
    action: &str,
    actor: &Caller,
) -> Option<Option<&'c Arc<Predicate>>> {
    if matches!(actor, Caller::Admin | Caller::AppKey(_)) {
        return Some(None);
    }
    match compiled.rules.get(action)? {
        RuleSql::Locked => None,
        RuleSql::Open => Some(None),
        RuleSql::When(predicate) => Some(Some(predicate)),
    }
}

fn record_json(compiled: &Compiled, record: &Record) -> Json {
    let mut object = Map::new();
    for (name, value) in record {
        object.insert(name.clone(), to_json(compiled.field_kind(name), value));
    }
    Json::Object(object)
}

// ---- callers and events -------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    Create,
    Update,
    Delete,
}

/// A committed write, as read from the event log.
#[derive(Debug, Clone, Serialize)]
pub struct ChangeEvent {
    pub app: AppName,
    pub collection: String,
    pub id: String,
    pub operation: Operation,
    pub old: Option<Json>,
    pub new: Option<Json>,
    /// 0 for a client's write; one more than its trigger's event for a write a triggered
    /// function made, so that triggers writing to each other stop at a bounded depth.
    pub depth: u8,
}

tokio::task_local! {
    /// Set around a triggered function's invocation: the depth its writes' events carry.
    pub static TRIGGER_DEPTH: u8;
}

/// One write of a batch, as the API takes it.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
pub enum Write {
    Create {
        collection: String,
        data: Map<String, Json>,
    },
    Update {
        collection: String,
        id: String,
        data: Map<String, Json>,
    },
    Delete {
        collection: String,
        id: String,
    },
}

impl Write {
    fn collection(&self) -> &str {
        match self {
            Write::Create { collection, .. }
            | Write::Update { collection, .. }
            | Write::Delete { collection, .. } => collection,
        }
    }
}

/// What a listing asks for, as the API takes it: the records route's query string, and the
/// same as an object from a function's `ctx.db`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::IntoParams),
    into_params(parameter_in = Query)
)]
pub struct ListRequest {
    pub filter: Option<String>,
    /// `title,meta.tags`: the fields to answer with (`id` always comes).
    pub fields: Option<String>,
    /// `author,author.team`: relations to answer with the records they point to.
    pub expand: Option<String>,
    pub sort: Option<String>,
    pub limit: Option<usize>,
    pub offset: Option<usize>,
    pub cursor: Option<String>,
    #[serde(default)]
    pub count: bool,
    /// `true`, or a thumbnail size (`200x200`): answer signed URLs of the files the page's
    /// `file` fields hold, under `file_urls`.
    pub file_urls: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RecordPage {
    pub items: Vec<Json>,
    pub next_cursor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<i64>,
    /// With `file_urls`: by file id, `{url, expires_at}`, or `null` for a file gone.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub file_urls: Option<Map<String, Json>>,
}

/// A collection as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CollectionView {
    pub name: String,
    pub version: i64,
    pub fields: Vec<FieldDef>,
    pub indexes: Vec<IndexInput>,
    pub rules: BTreeMap<String, Option<String>>,
}

/// A caller of another app never reaches its records: the server's extractor already pins keys
/// and tokens to the app a request names, and this keeps that true for every other way in.
fn admit(app: &AppName, caller: &Caller) -> Result<(), DataError> {
    let foreign = match caller {
        Caller::AppKey(own) => own != app,
        Caller::User(user) => user.app != *app,
        Caller::Admin | Caller::Anonymous => false,
    };
    if foreign {
        return Err(DataError::Forbidden("act for another app"));
    }
    Ok(())
}

// ---- the service --------------------------------------------------------------------------

/// One app's compiled collections by name.
type AppCollections = Arc<HashMap<String, Arc<Compiled>>>;

/// The data service. Cheap to clone.
#[derive(Clone)]
pub struct Data(Arc<Inner>);

struct Inner {
    records: Arc<dyn RecordStore>,
    clock: Arc<dyn Clock>,
    random: Arc<dyn Random>,
    /// Compiled collections per app, loaded on first use.
    cache: Mutex<HashMap<AppName, AppCollections>>,
    /// Moved on by every [`Data::forget_app`]: a load that read the store before it is not
    /// kept (it may hold what the forgetting replaced).
    generation: std::sync::atomic::AtomicU64,
    /// Rung with the app of every committed write ([`Data::rings`]).
    events: broadcast::Sender<AppName>,
    /// The other nodes' doorbell, set by the composition root.
    bell: std::sync::OnceLock<Arc<dyn Bell>>,
    /// Which functions a write triggers, set once the functions service exists.
    triggers: std::sync::OnceLock<Arc<dyn Triggers>>,
    /// Who may view which file, set once the files service exists.
    files: std::sync::OnceLock<Arc<dyn FileViews>>,
}

/// Whether a caller may view a stored file: what a record's `file` field may hold (the files
/// service answers; otherwise anyone could copy another user's file id into a record of their
/// own and read the file through the record's rules).
#[async_trait::async_trait]
pub trait FileViews: Send + Sync {
    async fn may_view(&self, app: &AppName, caller: &Caller, id: &str) -> Result<bool, StoreError>;

    /// Signed URLs of the files `ids` (`null` for a missing one), for a caller who may see
    /// the records that hold them; of thumbnail `thumb` when given.
    async fn urls_for_records(
        &self,
        app: &AppName,
        ids: &[String],
        thumb: Option<&str>,
    ) -> Result<Map<String, Json>, DataError>;
}

/// What routes a write to the functions it triggers (the composition root provides it: the
/// functions service knows the triggers, the queues deliver them).
#[async_trait::async_trait]
pub trait Triggers: Send + Sync {
    /// What a write to `collection` by `operation`, made `depth` triggers deep, records
    /// beside it: `None` when it triggers nothing; with the ticket of the hint taken for it.
    async fn emit_for(
        &self,
        app: &AppName,
        collection: &str,
        operation: Operation,
        depth: u8,
    ) -> Result<Option<(Emit, HintTicket)>, StoreError>;
    /// What an event of users' accounts (`auth.user_created`, …) records beside its write.
    async fn emit_for_auth(
        &self,
        app: &AppName,
        kind: &str,
        depth: u8,
    ) -> Result<Option<(Emit, HintTicket)>, StoreError>;
    /// What an event of a bucket's files (`files.upload`, `files.delete`) records beside its
    /// write.
    async fn emit_for_files(
        &self,
        app: &AppName,
        bucket: &str,
        kind: &str,
        depth: u8,
    ) -> Result<Option<(Emit, HintTicket)>, StoreError>;
    /// What an event of the app's realtime sockets (`realtime.connect`, …) records.
    async fn emit_for_realtime(
        &self,
        app: &AppName,
        kind: &str,
    ) -> Result<Option<(Emit, HintTicket)>, StoreError>;
    /// What a payment event (`pay.paid`, …) records beside the order's change.
    async fn emit_for_pay(
        &self,
        app: &AppName,
        kind: &str,
        depth: u8,
    ) -> Result<Option<(Emit, HintTicket)>, StoreError>;
    /// Called once a write that recorded deliveries is done.
    async fn emitted(&self, app: &AppName, ticket: HintTicket);
}

impl Data {
    pub fn new(
        records: Arc<dyn RecordStore>,
        clock: Arc<dyn Clock>,
        random: Arc<dyn Random>,
    ) -> Self {
        let (events, _) = broadcast::channel(1024);
        Data(Arc::new(Inner {
            records,
            clock,
            random,
            cache: Mutex::new(HashMap::new()),
            generation: std::sync::atomic::AtomicU64::new(0),
            events,
            bell: std::sync::OnceLock::new(),
            triggers: std::sync::OnceLock::new(),
            files: std::sync::OnceLock::new(),
        }))
    }

    /// Rings the other nodes on every write and collection change. Set once.
    pub fn set_bell(&self, bell: Arc<dyn Bell>) {
        let _ = self.0.bell.set(bell);
    }

    /// Connects `file` fields to the files service, which says who may view which file.
    pub fn set_files(&self, files: Arc<dyn FileViews>) {
        let _ = self.0.files.set(files);
    }

    /// Refuses a write that puts into a `file` field a file the writer may not view (the admin
    /// and the app's key may put any). A `file` field holds a file id.
    async fn check_file_fields(
        &self,
        app: &AppName,
        compiled: &Compiled,
        actor: &Caller,
        data: &Map<String, Json>,
    ) -> Result<(), DataError> {
        for (name, value) in data {
            let Some(field) = compiled.fields.get(name) else {
                continue;
            };
            if field.field_type != FieldKind::File {
                continue;
            }
            let Some(id) = value.as_str() else {
                continue;
            };
            let invalid = |problem: &str| DataError::InvalidValue {
                field: name.clone(),
                problem: problem.to_owned(),
            };
            if cloudlet_store::FileId::parse(id).is_none() {
                return Err(invalid("is not a file id"));
            }
            if matches!(actor, Caller::Admin | Caller::AppKey(_)) {
                continue;
            }
            let visible = match self.0.files.get() {
                Some(files) => files.may_view(app, actor, id).await?,
                None => false,
            };
            if !visible {
                return Err(invalid("is not a file the writer may view"));
            }
        }
        Ok(())
    }

    /// Connects writes to the functions they trigger. Set once; later calls are ignored.
    pub fn set_triggers(&self, triggers: Arc<dyn Triggers>) {
        let _ = self.0.triggers.set(triggers);
    }

    /// What a write records for its triggers, at the depth of the running trigger (0 outside
    /// one).
    ///
    /// Every write records its event, triggering or not: the log is also what realtime
    /// subscribers read, in commit order, and resume from.
    async fn emit(
        &self,
        app: &AppName,
        collection: &str,
        operation: Operation,
    ) -> Result<(Option<Emit>, Option<HintTicket>), DataError> {
        let depth = TRIGGER_DEPTH.try_with(|depth| *depth).unwrap_or(0);
        if let Some(triggers) = self.0.triggers.get()
            && let Some((emit, ticket)) =
                triggers.emit_for(app, collection, operation, depth).await?
        {
            return Ok((Some(emit), Some(ticket)));
        }
        let logged = Emit {
            depth: i64::from(depth),
            at_ms: self.0.clock.now().unix_ms(),
            deliveries: Vec::new(),
        };
        Ok((Some(logged), None))
    }

    /// Records an event no write causes (`realtime.connect`, `realtime.disconnect`) for the
    /// functions it triggers, if any: `payload` is what they receive besides `event` and
    /// `event_id`.
    pub async fn record_event(
        &self,
        app: &AppName,
        kind: &str,
        key: &str,
        payload: &Json,
    ) -> Result<(), DataError> {
        let Some(triggers) = self.0.triggers.get() else {
            return Ok(());
        };
        let Some((emit, ticket)) = triggers.emit_for_realtime(app, kind).await? else {
            return Ok(());
        };
        self.0
            .records
            .append_event(app, kind, key, &payload.to_string(), emit)
            .await?;
        triggers.emitted(app, ticket).await;
        Ok(())
    }

    /// Deletes the app's events recorded before `before_ms` (their deliveries have long run or
    /// died; the log is not an archive).
    pub async fn sweep_events(&self, app: &AppName, before_ms: i64) -> Result<u64, DataError> {
        Ok(self.0.records.sweep_events(app, before_ms).await?)
    }

    async fn emitted(&self, app: &AppName, tickets: Vec<HintTicket>) {
        if let Some(triggers) = self.0.triggers.get() {
            for ticket in tickets {
                triggers.emitted(app, ticket).await;
            }
        }
    }

    /// The event `seq` of the app's log as a trigger receives it, and its depth: `{event,
    /// event_id, collection, id, operation, old, new}` for a write (the records as the API
    /// shows them), `{event, event_id, user, provider}` for an account's.
    pub async fn trigger_event(
        &self,
        app: &AppName,
        seq: i64,
    ) -> Result<Option<(Json, u8)>, DataError> {
        let Some(event) = self.0.records.event(app, seq).await? else {
            return Ok(None);
        };
        let mut payload: Json = serde_json::from_str(&event.payload)
            .map_err(|e| DataError::Store(StoreError::Task(format!("stored event: {e}"))))?;
        if event.kind.starts_with("files.") {
            // The file as the API shows one: its time as RFC 3339.
            if let Some(file) = payload.get_mut("file").and_then(Json::as_object_mut)
                && let Some(ms) = file.remove("created_at_ms").and_then(|ms| ms.as_i64())
            {
                let time = Timestamp::from_unix_ms(ms).to_rfc3339();
                file.insert("created_at".to_owned(), Json::from(time));
            }
        } else if event.kind.starts_with("realtime.") || event.kind.starts_with("pay.") {
            // As recorded: who, which socket; the order (and the refund) as the change left it.
        } else if event.kind.starts_with("auth.") {
            // The user as the API shows one: times as RFC 3339.
            if let Some(user) = payload.get_mut("user").and_then(Json::as_object_mut) {
                for (stored, shown) in [
                    ("created_at_ms", "created_at"),
                    ("last_login_at_ms", "last_login_at"),
                ] {
                    if let Some(ms) = user.remove(stored).and_then(|ms| ms.as_i64()) {
                        let time = Timestamp::from_unix_ms(ms).to_rfc3339();
                        user.insert(shown.to_owned(), Json::from(time));
                    }
                }
            }
        } else {
            let collection = payload["collection"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            // Stored columns as the API shows them, when the collection still exists.
            if let Ok(compiled) = self.collection(app, &collection).await {
                for side in ["old", "new"] {
                    if let Some(columns) = payload[side].as_object() {
                        let record = stored_record(columns);
                        payload[side] = record_json(&compiled, &record);
                    }
                }
            }
        }
        payload["event"] = Json::from(event.kind);
        payload["event_id"] = Json::from(event.seq);
        let depth = u8::try_from(event.depth).unwrap_or(u8::MAX);
        Ok(Some((payload, depth)))
    }

    /// The app of every committed write, as it happens: a ring to read the app's event log
    /// ([`Data::changes_after`]). A slow subscriber misses rings (it is told), never changes.
    pub fn rings(&self) -> broadcast::Receiver<AppName> {
        self.0.events.subscribe()
    }

    /// The app's record changes after `after` in the event log, in commit order, from at most
    /// `limit` events read (events of other kinds are passed over): each with its position,
    /// the records as the API shows them.
    pub async fn changes_after(
        &self,
        app: &AppName,
        after: LogPosition,
        limit: usize,
    ) -> Result<ChangesPage, DataError> {
        let page = self.0.records.events_after(app, after, limit).await?;
        let mut changes = ChangesPage {
            reached: page.events.last().map_or(after, |e| e.position()),
            full: page.events.len() >= limit,
            pending: page.pending,
            changes: Vec::new(),
        };
        for event in page.events {
            let operation = match event.kind.as_str() {
                "records.create" => Operation::Create,
                "records.update" => Operation::Update,
                "records.delete" => Operation::Delete,
                _ => continue,
            };
            let payload: Json = serde_json::from_str(&event.payload)
                .map_err(|e| DataError::Store(StoreError::Task(format!("stored event: {e}"))))?;
            let collection = payload["collection"].as_str().unwrap_or_default();
            // The records as the API shows them; as stored if the collection is gone (its
            // watchers' subscriptions end when the change is prepared).
            let compiled = self.collection(app, collection).await.ok();
            let side = |name: &str| {
                let columns = payload[name].as_object()?;
                Some(match &compiled {
                    // Only the fields the collection has now: a field dropped since is gone
                    // with its values, also from the log's copies.
                    Some(compiled) => {
                        let mut record = stored_record(columns);
                        record.retain(|(name, _)| compiled.field_kind(name).is_some());
                        record_json(compiled, &record)
                    }
                    None => Json::Object(columns.clone()),
                })
            };
            changes.changes.push((
                event.position(),
                ChangeEvent {
                    app: app.clone(),
                    collection: collection.to_owned(),
                    id: payload["id"].as_str().unwrap_or_default().to_owned(),
                    operation,
                    old: side("old"),
                    new: side("new"),
                    depth: u8::try_from(event.depth).unwrap_or(u8::MAX),
                },
            ));
        }
        Ok(changes)
    }

    /// Where the app's event log was swept to and where it ends.
    pub async fn log_bounds(&self, app: &AppName) -> Result<LogBounds, DataError> {
        Ok(self.0.records.event_bounds(app).await?)
    }

    /// Drops what is cached for an app: after its collections change (here or on another
    /// node), or it is deleted.
    pub fn forget_app(&self, app: &AppName) {
        let mut cache = self.0.cache.lock().unwrap_or_else(|p| p.into_inner());
        self.0.generation.fetch_add(1, Ordering::AcqRel);
        cache.remove(app);
    }

    /// Drops every app's cached collections (another node's changes may have been missed).
    pub fn forget_all(&self) {
        let mut cache = self.0.cache.lock().unwrap_or_else(|p| p.into_inner());
        self.0.generation.fetch_add(1, Ordering::AcqRel);
        cache.clear();
    }

    /// After a change of the app's collections here: forgotten, and the other nodes told.
    fn collections_changed(&self, app: &AppName) {
        self.forget_app(app);
        if let Some(bell) = self.0.bell.get() {
            bell.ring(app, Topic::Collections);
        }
    }

    /// The app's event log may have more than this node's readers read (another node wrote
    /// to it, or a reader starts following it): rings this node's readers, not other nodes.
    pub fn heard(&self, app: &AppName) {
        let _ = self.0.events.send(app.clone());
    }

    async fn collections_of(
        &self,
        app: &AppName,
    ) -> Result<Arc<HashMap<String, Arc<Compiled>>>, DataError> {
        let generation = {
            let cache = self.0.cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(cached) = cache.get(app) {
                return Ok(Arc::clone(cached));
            }
            self.0.generation.load(Ordering::Acquire)
        };
        let mut loaded = HashMap::new();
        for row in self.0.records.collections(app).await? {
            let def: CollectionDef = serde_json::from_str(&row.definition).map_err(|e| {
                DataError::Store(StoreError::Task(format!("stored definition: {e}")))
            })?;
            loaded.insert(row.name.clone(), Arc::new(Compiled::new(def, row.version)?));
        }
        let loaded = Arc::new(loaded);
        let mut cache = self.0.cache.lock().unwrap_or_else(|p| p.into_inner());
        // Kept only if nothing was forgotten since the read began: otherwise the read may
        // hold what a change replaced, and the next use reads again.
        if self.0.generation.load(Ordering::Acquire) == generation {
            cache.insert(app.to_owned(), Arc::clone(&loaded));
        }
        Ok(loaded)
    }

    async fn collection(&self, app: &AppName, name: &str) -> Result<Arc<Compiled>, DataError> {
        self.collections_of(app)
            .await?
            .get(name)
            .cloned()
            .ok_or_else(|| DataError::CollectionNotFound(name.to_owned()))
    }

    /// Creates a collection; the same definition again changes nothing.
    pub async fn put_collection(
        &self,
        app: &AppName,
        name: &str,
        def: CollectionDef,
    ) -> Result<(CollectionView, bool), DataError> {
        check_name(name)?;
        let force = def.force;
        let def = CollectionDef {
            force: false,
            dry_run: false,
            ..def
        };
        if let Some(existing) = self.collections_of(app).await?.get(name).cloned() {
            let compiled = Compiled::new(def, existing.version + 1)?;
            if existing.def == compiled.def {
                return Ok((view(name, &existing), false));
            }
            let change = alteration(&existing, &compiled, force)?;
            let definition = serde_json::to_string(&compiled.def)
                .map_err(|e| DataError::InvalidCollection(e.to_string()))?;
            let row = CollectionRow {
                name: name.to_owned(),
                definition,
                version: compiled.version,
            };
            let altered = self.0.records.alter_collection(app, row, change).await;
            self.collections_changed(app);
            altered?;
            return Ok((view(name, &compiled), false));
        }
        let compiled = Compiled::new(def, 1)?;
        if self.collections_of(app).await?.len() >= MAX_COLLECTIONS {
            return Err(DataError::InvalidCollection(format!(
                "an app has at most {MAX_COLLECTIONS} collections"
            )));
        }
        let definition = serde_json::to_string(&compiled.def)
            .map_err(|e| DataError::InvalidCollection(e.to_string()))?;
        let row = CollectionRow {
            name: name.to_owned(),
            definition,
            version: compiled.version,
        };
        let created = self
            .0
            .records
            .create_collection(app, row, compiled.table())
            .await;
        self.collections_changed(app);
        match created {
            Ok(()) => Ok((view(name, &compiled), true)),
            Err(StoreError::Conflict) => Err(DataError::CollectionExists(name.to_owned())),
            Err(e) => Err(e.into()),
        }
    }

    /// What [`Data::put_collection`] would do with `def`, changing nothing.
    pub async fn plan_collection(
        &self,
        app: &AppName,
        name: &str,
        def: CollectionDef,
    ) -> Result<Plan, DataError> {
        check_name(name)?;
        let def = CollectionDef {
            force: false,
            dry_run: false,
            ..def
        };
        match self.collections_of(app).await?.get(name).cloned() {
            None => {
                Compiled::new(def, 1)?;
                Ok(Plan::Create)
            }
            Some(existing) => {
                let compiled = Compiled::new(def, existing.version + 1)?;
                if existing.def == compiled.def {
                    return Ok(Plan::Unchanged);
                }
                match alteration(&existing, &compiled, false) {
                    Ok(_) => Ok(Plan::Alter),
                    Err(DataError::DestructiveChange(_)) => Ok(Plan::Destroy),
                    Err(e) => Err(e),
                }
            }
        }
    }

    pub async fn collections(&self, app: &AppName) -> Result<Vec<CollectionView>, DataError> {
        let all = self.collections_of(app).await?;
        let mut views: Vec<CollectionView> = all.iter().map(|(name, c)| view(name, c)).collect();
        views.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(views)
    }

    pub async fn collection_view(
        &self,
        app: &AppName,
        name: &str,
    ) -> Result<CollectionView, DataError> {
        Ok(view(name, &*self.collection(app, name).await?))
    }

    pub async fn drop_collection(&self, app: &AppName, name: &str) -> Result<(), DataError> {
        let dropped = self.0.records.drop_collection(app, name).await?;
        self.collections_changed(app);
        if dropped {
            Ok(())
        } else {
            Err(DataError::CollectionNotFound(name.to_owned()))
        }
    }

    // ---- records --------------------------------------------------------------------------

    /// The condition of `action` for `actor`, or `None` when the actor may not act at all.
    fn rule(
        &self,
        compiled: &Compiled,
        action: &'static str,
        actor: &Caller,
        data: Option<&Map<String, Json>>,
    ) -> Option<Condition> {
        let rule = guard(compiled, action, actor)?;
        // The body's values are converted only for a rule that reads them.
        let data = data.filter(|_| rule.is_some_and(|p| p.uses_request_data()));
        let all = Condition::with_bindings(self.bindings(compiled, actor, data));
        Some(match rule {
            Some(predicate) => all.and(predicate.clone()),
            None => all,
        })
    }

    /// What `@auth`, `@now` and `@request.data` stand for in this request.
    fn bindings(
        &self,
        compiled: &Compiled,
        actor: &Caller,
        data: Option<&Map<String, Json>>,
    ) -> Bindings {
        let (auth_id, auth_provider) = match actor {
            Caller::User(user) => (Some(user.user_id.clone()), Some(user.provider.clone())),
            _ => (None, None),
        };
        let request_data = data
            .into_iter()
            .flatten()
            .filter_map(|(name, value)| {
                let field = compiled.fields.get(name)?;
                Some((name.clone(), to_sql(field, value).ok()?))
            })
            .collect();
        Bindings {
            auth_id,
            auth_provider,
            now_ms: self.0.clock.now().unix_ms(),
            request_data,
        }
    }

    /// Checks a body: known, writable fields of the right types.
    fn values(
        &self,
        compiled: &Compiled,
        data: &Map<String, Json>,
        creating: bool,
    ) -> Result<Record, DataError> {
        if Json::Object(data.clone()).to_string().len() > MAX_RECORD_BYTES {
            return Err(DataError::RecordTooLarge);
        }
        let mut record = Vec::new();
        for (name, value) in data {
            if SYSTEM_FIELDS.contains(&name.as_str()) {
                return Err(DataError::ReadOnlyField(name.clone()));
            }
            let field = compiled
                .fields
                .get(name)
                .ok_or_else(|| DataError::UnknownField(name.clone()))?;
            if value.is_null() && field.required {
                return Err(DataError::MissingField(name.clone()));
            }
            let value = to_sql(field, value).map_err(|problem| DataError::InvalidValue {
                field: name.clone(),
                problem,
            })?;
            record.push((name.clone(), value));
        }
        if creating {
            for field in compiled.fields.values() {
                if data.contains_key(&field.name) {
                    continue;
                }
                match &field.default {
                    Some(default) => record.push((
                        field.name.clone(),
                        to_sql(field, default).map_err(|problem| DataError::InvalidValue {
                            field: field.name.clone(),
                            problem,
                        })?,
                    )),
                    None if field.required => {
                        return Err(DataError::MissingField(field.name.clone()));
                    }
                    None => {}
                }
            }
        }
        Ok(record)
    }

    /// A new record from `data`, with its id and the create rule to check on it.
    fn new_record(
        &self,
        compiled: &Compiled,
        actor: &Caller,
        data: &Map<String, Json>,
    ) -> Result<(String, Record, Condition), DataError> {
        let check = self
            .rule(compiled, "create", actor, Some(data))
            .ok_or(DataError::Forbidden("create"))?;
        let values = self.values(compiled, data, true)?;
        let now = self.0.clock.now().unix_ms();
        let mut id = [0u8; 12];
        self.0.random.fill(&mut id);
        let id = URL_SAFE_NO_PAD.encode(id);
        let owner = match actor {
            Caller::User(user) => SqlValue::Text(user.user_id.clone()),
            _ => SqlValue::Null,
        };
        let mut record: Record = vec![
            ("id".into(), SqlValue::Text(id.clone())),
            ("created_at".into(), SqlValue::Int(now)),
            ("updated_at".into(), SqlValue::Int(now)),
            ("owner".into(), owner),
        ];
        record.extend(values);
        Ok((id, record, check))
    }

    /// Whether the create rule lets `actor` create `record` (from `data`), judged in memory.
    /// The database checks the rule after the row is in, so a duplicate value of a unique
    /// field fails first: a refused create would answer `409` for a value that exists and
    /// `403` for one that does not, telling anyone whether it exists. A create the rule refuses
    /// answers `403` either way.
    fn may_create(
        &self,
        compiled: &Compiled,
        actor: &Caller,
        data: &Map<String, Json>,
        record: &Record,
    ) -> bool {
        match guard(compiled, "create", actor) {
            None => false,
            Some(None) => true,
            Some(Some(rule)) => self.holds(rule, compiled, actor, Some(data), record, "created_at"),
        }
    }

    /// Whether `rule` holds for `record` written by `actor` (from `data`), judged in memory,
    /// `@now` being the record's own time in column `at` (the clock its write read), not the
    /// time of this look, which may come long after.
    fn holds(
        &self,
        rule: &Predicate,
        compiled: &Compiled,
        actor: &Caller,
        data: Option<&Map<String, Json>>,
        record: &Record,
        at: &str,
    ) -> bool {
        let mut bindings = self.bindings(compiled, actor, data);
        if let Some((_, SqlValue::Int(ms))) = record.iter().find(|(name, _)| name == at) {
            bindings.now_ms = *ms;
        }
        columns_of(compiled, &record_json(compiled, record))
            .is_some_and(|columns| rule.matches(&columns, &bindings))
    }

    /// The update rule to guard with and the columns `data` sets.
    fn changes(
        &self,
        compiled: &Compiled,
        actor: &Caller,
        data: &Map<String, Json>,
    ) -> Result<(Condition, Record), DataError> {
        let condition = self
            .rule(compiled, "update", actor, Some(data))
            .ok_or(DataError::RecordNotFound)?;
        let mut set = self.values(compiled, data, false)?;
        set.push((
            "updated_at".into(),
            SqlValue::Int(self.0.clock.now().unix_ms()),
        ));
        Ok((condition, set))
    }

    /// Several writes in one transaction: all of them, or none. Each obeys its rules.
    pub async fn batch(
        &self,
        app: &AppName,
        actor: &Caller,
        operations: Vec<Write>,
    ) -> Result<Vec<Json>, DataError> {
        admit(app, actor)?;
        if operations.is_empty() || operations.len() > MAX_BATCH {
            return Err(DataError::InvalidBatch(format!(
                "a batch holds 1 to {MAX_BATCH} operations"
            )));
        }
        let mut prepared = Vec::with_capacity(operations.len());
        let mut collections = Vec::with_capacity(operations.len());
        // The creates their rule refuses: refused, not duplicates, if a unique field conflicts.
        let mut refused = HashSet::new();
        let mut tickets = Vec::new();
        for (index, operation) in operations.into_iter().enumerate() {
            let in_batch = |source: DataError| DataError::InBatch {
                index,
                source: Box::new(source),
            };
            let name = operation.collection().to_owned();
            let compiled = self.collection(app, &name).await.map_err(in_batch)?;
            let op = match operation {
                Write::Create { data, .. } => {
                    self.check_file_fields(app, &compiled, actor, &data)
                        .await
                        .map_err(in_batch)?;
                    let (_, record, check) =
                        self.new_record(&compiled, actor, &data).map_err(in_batch)?;
                    if !self.may_create(&compiled, actor, &data, &record) {
                        refused.insert(index);
                    }
                    let (emit, ticket) = self
                        .emit(app, &name, Operation::Create)
                        .await
                        .map_err(in_batch)?;
                    tickets.extend(ticket);
                    BatchOp::Insert {
                        collection: name,
                        record,
                        check,
                        emit,
                    }
                }
                Write::Update { id, data, .. } => {
                    record_id(&id).map_err(in_batch)?;
                    self.check_file_fields(app, &compiled, actor, &data)
                        .await
                        .map_err(in_batch)?;
                    let (condition, set) =
                        self.changes(&compiled, actor, &data).map_err(in_batch)?;
                    let (emit, ticket) = self
                        .emit(app, &name, Operation::Update)
                        .await
                        .map_err(in_batch)?;
                    tickets.extend(ticket);
                    BatchOp::Update {
                        collection: name,
                        id,
                        condition,
                        set,
                        emit,
                    }
                }
                Write::Delete { id, .. } => {
                    record_id(&id).map_err(in_batch)?;
                    let condition = self
                        .rule(&compiled, "delete", actor, None)
                        .ok_or(DataError::RecordNotFound)
                        .map_err(in_batch)?;
                    let (emit, ticket) = self
                        .emit(app, &name, Operation::Delete)
                        .await
                        .map_err(in_batch)?;
                    tickets.extend(ticket);
                    BatchOp::Delete {
                        collection: name,
                        id,
                        condition,
                        emit,
                    }
                }
            };
            prepared.push(op);
            collections.push(compiled);
        }
        let outcomes = self.0.records.batch(app, prepared).await;
        self.emitted(app, tickets).await;
        let outcomes = outcomes.map_err(|e| match e {
            StoreError::InBatch { index, source } => DataError::InBatch {
                index,
                source: Box::new(match *source {
                    StoreError::CheckFailed => DataError::Forbidden("create"),
                    StoreError::Conflict if refused.contains(&index) => {
                        DataError::Forbidden("create")
                    }
                    StoreError::NotFound => DataError::RecordNotFound,
                    other => DataError::from(other),
                }),
            },
            other => DataError::from(other),
        })?;
        self.ring(app);
        let mut results = Vec::with_capacity(outcomes.len());
        for (outcome, compiled) in outcomes.iter().zip(&collections) {
            match outcome {
                BatchOutcome::Inserted(record) => results.push(record_json(compiled, record)),
                BatchOutcome::Updated(_, record) => {
                    results.push(self.as_viewed(compiled, actor, record));
                }
                BatchOutcome::Deleted(old) => {
                    let id = record_json(compiled, old)["id"].clone();
                    results.push(serde_json::json!({ "id": id, "deleted": true }));
                }
            }
        }
        Ok(results)
    }

    pub async fn create(
        &self,
        app: &AppName,
        collection: &str,
        actor: &Caller,
        data: Map<String, Json>,
    ) -> Result<Json, DataError> {
        admit(app, actor)?;
        let compiled = self.collection(app, collection).await?;
        self.check_file_fields(app, &compiled, actor, &data).await?;
        let (_, record, check) = self.new_record(&compiled, actor, &data)?;
        let (emit, ticket) = self.emit(app, collection, Operation::Create).await?;
        match self
            .0
            .records
            .insert(app, collection, record.clone(), check, emit)
            .await
        {
            Ok(()) => {}
            Err(StoreError::CheckFailed) => return Err(DataError::Forbidden("create")),
            Err(StoreError::Conflict) if !self.may_create(&compiled, actor, &data, &record) => {
                return Err(DataError::Forbidden("create"));
            }
            Err(e) => return Err(e.into()),
        }
        self.emitted(app, ticket.into_iter().collect()).await;
        self.ring(app);
        Ok(record_json(&compiled, &record))
    }

    pub async fn get(
        &self,
        app: &AppName,
        collection: &str,
        actor: &Caller,
        id: &str,
        fields: Option<&str>,
        expand: Option<&str>,
    ) -> Result<Json, DataError> {
        admit(app, actor)?;
        let compiled = self.collection(app, collection).await?;
        record_id(id)?;
        let condition = self
            .rule(&compiled, "view", actor, None)
            .ok_or(DataError::RecordNotFound)?;
        let record = self
            .0
            .records
            .get(app, collection, id, condition)
            .await?
            .ok_or(DataError::RecordNotFound)?;
        let shape = Shape::parse(&compiled, fields, expand)?;
        let mut items = vec![record_json(&compiled, &record)];
        self.expand(app, &compiled, actor, &mut items, &shape.expand, &mut 0)
            .await?;
        Ok(items
            .pop()
            .map(|item| shape.project(item))
            .unwrap_or(Json::Null))
    }

    pub async fn update(
        &self,
        app: &AppName,
        collection: &str,
        actor: &Caller,
        id: &str,
        data: Map<String, Json>,
    ) -> Result<Json, DataError> {
        admit(app, actor)?;
        let compiled = self.collection(app, collection).await?;
        record_id(id)?;
        self.check_file_fields(app, &compiled, actor, &data).await?;
        let (condition, set) = self.changes(&compiled, actor, &data)?;
        let (emit, ticket) = self.emit(app, collection, Operation::Update).await?;
        let updated = self
            .0
            .records
            .update(app, collection, id, condition, set, emit)
            .await;
        self.emitted(app, ticket.into_iter().collect()).await;
        let (_, new) = updated?.ok_or(DataError::RecordNotFound)?;
        self.ring(app);
        Ok(self.as_viewed(&compiled, actor, &new))
    }

    /// A record just updated, as the caller's view rule shows it: whole when the caller may
    /// view it, otherwise its id alone. An update rule wider than the view rule (anyone may
    /// mark an open ticket done; only its owner reads it) must not read records out through
    /// the answer to an update, an empty one included. Judged in memory: rules read only the
    /// record and the caller.
    fn as_viewed(&self, compiled: &Compiled, actor: &Caller, record: &Record) -> Json {
        let json = record_json(compiled, record);
        let visible = match guard(compiled, "view", actor) {
            None => false,
            Some(None) => true,
            Some(Some(rule)) => self.holds(rule, compiled, actor, None, record, "updated_at"),
        };
        if visible {
            json
        } else {
            serde_json::json!({ "id": json["id"] })
        }
    }

    pub async fn delete(
        &self,
        app: &AppName,
        collection: &str,
        actor: &Caller,
        id: &str,
    ) -> Result<(), DataError> {
        admit(app, actor)?;
        let compiled = self.collection(app, collection).await?;
        record_id(id)?;
        let condition = self
            .rule(&compiled, "delete", actor, None)
            .ok_or(DataError::RecordNotFound)?;
        let (emit, ticket) = self.emit(app, collection, Operation::Delete).await?;
        let deleted = self
            .0
            .records
            .delete(app, collection, id, condition, emit)
            .await;
        self.emitted(app, ticket.into_iter().collect()).await;
        deleted?.ok_or(DataError::RecordNotFound)?;
        self.ring(app);
        Ok(())
    }

    pub async fn list(
        &self,
        app: &AppName,
        collection: &str,
        actor: &Caller,
        request: ListRequest,
    ) -> Result<RecordPage, DataError> {
        admit(app, actor)?;
        let compiled = self.collection(app, collection).await?;
        let Some(rule) = self.rule(&compiled, "list", actor, None) else {
            return Ok(RecordPage {
                items: Vec::new(),
                next_cursor: None,
                total: request.count.then_some(0),
                file_urls: request.file_urls.is_some().then(Map::new),
            });
        };
        let limit = request.limit.unwrap_or(20);
        // Paging by offset: a page ended early would skip records before the next offset.
        let by_offset = request.offset.is_some() && request.cursor.is_none();
        let offset = request.offset.unwrap_or(0);
        if !(1..=MAX_PAGE).contains(&limit) || offset > MAX_OFFSET {
            return Err(DataError::InvalidPage);
        }
        let mut condition = rule;
        if let Some(filter) = request.filter.as_deref().filter(|f| !f.trim().is_empty()) {
            let expr: Expr = cloudlet_query::parse(filter, Limits::default())
                .map_err(DataError::InvalidFilter)?;
            let filter =
                Predicate::new(expr, compiled.schema.clone()).map_err(DataError::InvalidFilter)?;
            condition = condition.and(Arc::new(filter));
        }
        let sort = parse_sort(request.sort.as_deref(), &compiled)?;
        let after = match &request.cursor {
            Some(cursor) => {
                let kinds: Vec<Option<FieldKind>> = sort
                    .iter()
                    .map(|k| compiled.field_kind(&k.column))
                    .collect();
                Some(decode_cursor(cursor, &kinds)?)
            }
            None => None,
        };
        let select = Select {
            condition: condition.clone(),
            sort: sort.clone(),
            after,
            limit,
            offset,
            count: request.count,
            max_bytes: MAX_PAGE_BYTES,
        };
        let (records, total) = self.0.records.select(app, collection, select).await?;
        // Full, or ended early at its bytes: there may be more after it.
        let mut cut = records.len() < limit
            && records.iter().map(record_bytes).sum::<usize>() >= MAX_PAGE_BYTES;
        if cut && by_offset {
            // Refused only if a record was left out: the page may just be the last.
            let next = Select {
                condition,
                sort: sort.clone(),
                after: None,
                limit: 1,
                offset: offset + records.len(),
                count: false,
                max_bytes: 1,
            };
            if !self
                .0
                .records
                .select(app, collection, next)
                .await?
                .0
                .is_empty()
            {
                return Err(DataError::PageTooLarge);
            }
            cut = false;
        }
        let more = records.len() == limit || cut;
        let next_cursor = more
            .then(|| records.last().map(|last| encode_cursor(&sort, last)))
            .flatten();
        let shape = Shape::parse(
            &compiled,
            request.fields.as_deref(),
            request.expand.as_deref(),
        )?;
        let mut items: Vec<Json> = records.iter().map(|r| record_json(&compiled, r)).collect();
        self.expand(app, &compiled, actor, &mut items, &shape.expand, &mut 0)
            .await?;
        let items: Vec<Json> = items.into_iter().map(|item| shape.project(item)).collect();
        let file_urls = match request.file_urls.as_deref() {
            None => None,
            Some(which) => Some(self.file_urls(app, &compiled, &items, which).await?),
        };
        Ok(RecordPage {
            items,
            next_cursor,
            total,
            file_urls,
        })
    }

    /// Signed URLs of the files the `file` fields of `items` hold: the originals (`which` is
    /// `true`) or thumbnails of size `which`.
    async fn file_urls(
        &self,
        app: &AppName,
        compiled: &Compiled,
        items: &[Json],
        which: &str,
    ) -> Result<Map<String, Json>, DataError> {
        let thumb = match which {
            "true" => None,
            size if crate::thumbs::ThumbSpec::parse(size).is_some() => Some(size),
            _ => {
                return Err(DataError::InvalidFileUrls(
                    "file_urls is true or a thumbnail size (200x200)".into(),
                ));
            }
        };
        let mut ids: Vec<String> = Vec::new();
        let mut seen: HashSet<&str> = HashSet::new();
        for (name, field) in &compiled.fields {
            if field.field_type != FieldKind::File {
                continue;
            }
            for item in items {
                if let Some(id) = item.get(name).and_then(Json::as_str)
                    && seen.insert(id)
                {
                    ids.push(id.to_owned());
                }
            }
        }
        match self.0.files.get() {
            Some(files) if !ids.is_empty() => files.urls_for_records(app, &ids, thumb).await,
            _ => Ok(Map::new()),
        }
    }

    /// Puts under `expand` of each record the records its relation fields point to, as far as
    /// the view rules of their collections let the actor see them.
    /// Expands `paths` on `items`; what it read and copied in is added to `spent` (stored bytes),
    /// which may not pass [`MAX_EXPAND_BYTES`]. Answers, for each of `items`, about how many
    /// bytes its expansions hold.
    fn expand<'a>(
        &'a self,
        app: &'a AppName,
        compiled: &'a Compiled,
        actor: &'a Caller,
        items: &'a mut [Json],
        paths: &'a [Vec<String>],
        spent: &'a mut usize,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Vec<usize>, DataError>> + Send + 'a>,
    > {
        Box::pin(async move {
            let mut held = vec![0; items.len()];
            let mut heads: Vec<&str> = paths.iter().map(|p| p[0].as_str()).collect();
            heads.sort_unstable();
            heads.dedup();
            for head in heads {
                let field = compiled
                    .fields
                    .get(head)
                    .ok_or_else(|| DataError::UnknownField(head.to_owned()))?;
                let target_name = field
                    .collection
                    .clone()
                    .ok_or_else(|| DataError::InvalidExpand(format!("{head} is not a relation")))?;
                let target = self.collection(app, &target_name).await?;
                let mut ids: Vec<String> = items
                    .iter()
                    .filter_map(|item| item[head].as_str().map(str::to_owned))
                    .collect();
                ids.sort_unstable();
                ids.dedup();
                // Each related record with about the bytes it holds, its own expansions in.
                let mut related: HashMap<String, (Json, usize)> = HashMap::new();
                if !ids.is_empty()
                    && let Some(condition) = self.rule(&target, "view", actor, None)
                {
                    let limit = ids.len();
                    let select = Select {
                        condition: condition.and_id_in(ids),
                        sort: Vec::new(),
                        after: None,
                        limit,
                        offset: 0,
                        count: false,
                        // Read past what is left to spend, it would be refused anyway.
                        max_bytes: MAX_EXPAND_BYTES.saturating_sub(*spent).saturating_add(1),
                    };
                    let (records, _) = self.0.records.select(app, &target_name, select).await?;
                    let sizes: Vec<usize> = records.iter().map(record_bytes).collect();
                    spend(spent, sizes.iter().sum())?;
                    let mut found: Vec<Json> =
                        records.iter().map(|r| record_json(&target, r)).collect();
                    drop(records);
                    let deeper: Vec<Vec<String>> = paths
                        .iter()
                        .filter(|p| p[0] == head && p.len() > 1)
                        .map(|p| p[1..].to_vec())
                        .collect();
                    let nested = match deeper.is_empty() {
                        true => vec![0; found.len()],
                        false => {
                            self.expand(app, &target, actor, &mut found, &deeper, spent)
                                .await?
                        }
                    };
                    for ((record, size), nested) in found.into_iter().zip(sizes).zip(nested) {
                        if let Some(id) = record["id"].as_str() {
                            related.insert(id.to_owned(), (record, size + nested));
                        }
                    }
                }
                for (item, held) in items.iter_mut().zip(held.iter_mut()) {
                    let Some((target, size)) = item[head]
                        .as_str()
                        .and_then(|id| related.get(id))
                        .map(|(target, size)| (target.clone(), *size))
                    else {
                        continue;
                    };
                    // Every copy counts: a thousand records pointing at one large record would
                    // hold a thousand copies of it.
                    spend(spent, size)?;
                    *held += size;
                    if let Some(object) = item.as_object_mut() {
                        let expand = object
                            .entry("expand")
                            .or_insert_with(|| Json::Object(Map::new()));
                        if let Some(expand) = expand.as_object_mut() {
                            expand.insert(head.to_owned(), target);
                        }
                    }
                }
            }
            Ok(held)
        })
    }

    /// Rings for the app's event log to be read: a write committed (its changes are in the
    /// log, which is what readers read).
    fn ring(&self, app: &AppName) {
        // No subscriber is fine: the realtime hub may not be running.
        let _ = self.0.events.send(app.clone());
        if let Some(bell) = self.0.bell.get() {
            bell.ring(app, Topic::Records);
        }
    }
}

// ---- watching: what a change is to one subscriber --------------------------------------------

/// A live view of a collection for one caller: the records its list rule lets the caller see,
/// narrowed by a filter. Each change is checked against it in memory ([`Data::judge`]), with
/// the collection's rules as they are at that change (a rule changed meanwhile applies at once).
#[derive(Debug)]
pub struct Watch {
    collection: String,
    caller: Caller,
    filter: Option<String>,
    /// The filter, compiled for the collection's version it was compiled against.
    compiled: (i64, Option<Arc<Predicate>>),
}

impl Watch {
    pub fn collection(&self) -> &str {
        &self.collection
    }

    /// The same view for the same user with a fresh token (a token refreshed on a socket).
    pub fn reauthorize(&mut self, caller: Caller) {
        self.caller = caller;
    }
}

/// What a change is to a watcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Seen {
    /// A record created that the watcher sees.
    Create,
    /// A record the watcher sees, updated; possibly one it did not see before (an upsert).
    Update,
    /// A record the watcher saw, deleted.
    Delete,
    /// A record the watcher saw, updated so that it no longer does: only its id is sent.
    Leave,
}

impl Data {
    /// A watch of `collection` for `caller`, its filter checked now (`invalid_filter`).
    pub async fn watch(
        &self,
        app: &AppName,
        caller: &Caller,
        collection: &str,
        filter: Option<&str>,
    ) -> Result<Watch, DataError> {
        admit(app, caller)?;
        let compiled = self.collection(app, collection).await?;
        let filter = filter.map(str::trim).filter(|f| !f.is_empty());
        let predicate = filter.map(|f| compile_filter(f, &compiled)).transpose()?;
        Ok(Watch {
            collection: collection.to_owned(),
            caller: caller.clone(),
            filter: filter.map(str::to_owned),
            compiled: (compiled.version, predicate),
        })
    }

    /// A change made ready to be judged for every watcher of its collection: the collection
    /// as it is now, and the record before and after as their columns (converted once).
    pub async fn prepare(&self, event: &ChangeEvent) -> Result<Prepared, DataError> {
        let compiled = self.collection(&event.app, &event.collection).await?;
        // A record that does not convert (a datetime out of range) is seen by nobody: never a
        // record the rule might refuse.
        let columns =
            |record: &Option<Json>| record.as_ref().and_then(|r| columns_of(&compiled, r));
        Ok(Prepared {
            old: columns(&event.old),
            new: columns(&event.new),
            operation: event.operation,
            collection: event.collection.clone(),
            now_ms: self.0.clock.now().unix_ms(),
            compiled,
        })
    }

    /// What a prepared change is to `watch`: nothing, or what to tell the watcher. A record
    /// counts as seen when the collection's list rule and the watch's filter hold for it,
    /// decided as the database would decide them ([`Predicate::eval`]), before and after the
    /// change. In memory: no database read, nothing awaited.
    pub fn judge(&self, change: &Prepared, watch: &mut Watch) -> Result<Option<Seen>, DataError> {
        if change.collection != watch.collection {
            return Ok(None);
        }
        let compiled = &change.compiled;
        if watch.compiled.0 != compiled.version {
            // The collection changed: its filter is compiled again (or no longer holds).
            let predicate = watch
                .filter
                .as_deref()
                .map(|f| compile_filter(f, compiled))
                .transpose()?;
            watch.compiled = (compiled.version, predicate);
        }
        let Some(rule) = guard(compiled, "list", &watch.caller) else {
            return Ok(None);
        };
        let filter = watch.compiled.1.as_ref();
        // One `@now` for every watcher of the change.
        let bindings = Bindings {
            now_ms: change.now_ms,
            ..self.bindings(compiled, &watch.caller, None)
        };
        let sees = |record: Option<&cloudlet_query::Record>| {
            record.is_some_and(|stored| {
                rule.is_none_or(|p| p.matches(stored, &bindings))
                    && filter.is_none_or(|p| p.matches(stored, &bindings))
            })
        };
        let (before, after) = (sees(change.old.as_ref()), sees(change.new.as_ref()));
        Ok(match (change.operation, before, after) {
            (Operation::Create, _, true) => Some(Seen::Create),
            (Operation::Update, _, true) => Some(Seen::Update),
            (Operation::Update, true, false) => Some(Seen::Leave),
            (Operation::Delete, true, _) => Some(Seen::Delete),
            _ => None,
        })
    }
}

/// Record changes read from the event log ([`Data::changes_after`]).
#[derive(Debug)]
pub struct ChangesPage {
    /// The changes, each with its place in the log.
    pub changes: Vec<(LogPosition, ChangeEvent)>,
    /// The position of the last event read (of any kind), or where the read started.
    pub reached: LogPosition,
    /// As many events were read as asked for: there may be more.
    pub full: bool,
    /// Later events are committed but not yet in order: read again shortly.
    pub pending: bool,
}

/// A change ready to be judged for each watcher ([`Data::prepare`]).
pub struct Prepared {
    compiled: Arc<Compiled>,
    collection: String,
    operation: Operation,
    old: Option<cloudlet_query::Record>,
    new: Option<cloudlet_query::Record>,
    /// `@now` for every watcher of this change.
    now_ms: i64,
}

fn compile_filter(filter: &str, compiled: &Compiled) -> Result<Arc<Predicate>, DataError> {
    let expr: Expr =
        cloudlet_query::parse(filter, Limits::default()).map_err(DataError::InvalidFilter)?;
    Predicate::new(expr, compiled.schema.clone())
        .map(Arc::new)
        .map_err(DataError::InvalidFilter)
}

/// A record as the API shows it, as its columns hold it (datetimes as milliseconds), for
/// [`Predicate::eval`]; `None` if a value does not convert back.
fn columns_of(compiled: &Compiled, record: &Json) -> Option<cloudlet_query::Record> {
    let rfc3339 = &time::format_description::well_known::Rfc3339;
    record
        .as_object()?
        .iter()
        .map(|(name, value)| {
            let stored = match (compiled.field_kind(name), value) {
                (Some(FieldKind::Datetime), Json::String(text)) => {
                    let time = time::OffsetDateTime::parse(text, rfc3339).ok()?;
                    Json::from((time.unix_timestamp_nanos() / 1_000_000) as i64)
                }
                (Some(FieldKind::Datetime), Json::Null) => Json::Null,
                (Some(FieldKind::Datetime), _) => return None,
                _ => value.clone(),
            };
            Some((name.clone(), stored))
        })
        .collect()
}

/// How the table changes from `old` to `new`: new fields become columns (no row is rewritten);
/// dropped fields and changed types lose values, so they need `force`.
fn alteration(old: &Compiled, new: &Compiled, force: bool) -> Result<TableChange, DataError> {
    let mut change = TableChange::default();
    let destructive = |what: String| {
        if force {
            Ok(())
        } else {
            Err(DataError::DestructiveChange(what))
        }
    };
    for (name, field) in &old.fields {
        match new.fields.get(name) {
            None => {
                destructive(format!("dropping field {name} deletes its values"))?;
                change.drop.push(name.clone());
            }
            Some(now) if now.field_type != field.field_type => {
                destructive(format!("changing the type of {name} deletes its values"))?;
                change.drop.push(name.clone());
                change.add.push(column(now));
            }
            Some(_) => {}
        }
    }
    for (name, field) in &new.fields {
        if !old.fields.contains_key(name) {
            change.add.push(column(field));
        }
    }
    change.indexes = new
        .def
        .fields
        .iter()
        .filter(|f| f.unique)
        .map(|f| IndexDef {
            columns: vec![f.name.clone()],
            unique: true,
        })
        .chain(new.table().indexes)
        .collect();
    Ok(change)
}

fn column(field: &FieldDef) -> ColumnDef {
    ColumnDef {
        name: field.name.clone(),
        column_type: column_type(field.field_type),
        unique: field.unique,
    }
}

/// How far relations expand: `a.b` is two levels.
pub const MAX_EXPAND_DEPTH: usize = 2;

/// Which fields to answer with, and which relations to expand.
struct Shape {
    fields: Option<Vec<Vec<String>>>,
    expand: Vec<Vec<String>>,
}

/// The most paths a `fields` or `expand` parameter may name.
const MAX_SHAPE_PATHS: usize = 32;

impl Shape {
    fn parse(
        compiled: &Compiled,
        fields: Option<&str>,
        expand: Option<&str>,
    ) -> Result<Shape, DataError> {
        // Each path once (a repeat would copy its value again for every record), at most
        // MAX_SHAPE_PATHS of them.
        let split = |text: &str, what: fn(String) -> DataError| {
            let mut paths: Vec<Vec<String>> = text
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(|p| p.split('.').map(str::to_owned).collect())
                .collect();
            paths.sort();
            paths.dedup();
            if paths.len() > MAX_SHAPE_PATHS {
                return Err(what(format!("at most {MAX_SHAPE_PATHS} paths")));
            }
            Ok(paths)
        };
        let fields = match fields.filter(|f| !f.trim().is_empty()) {
            None => None,
            Some(text) => {
                let paths = split(text, DataError::InvalidFields)?;
                for path in &paths {
                    let head = path[0].as_str();
                    let known = head == "expand" || compiled.field_kind(head).is_some();
                    if !known || path.iter().any(|s| s.is_empty()) || path.len() > 8 {
                        return Err(DataError::InvalidFields(format!(
                            "no field {:?}",
                            path.join(".")
                        )));
                    }
                    if path.len() > 1
                        && head != "expand"
                        && compiled.field_kind(head) != Some(FieldKind::Json)
                    {
                        return Err(DataError::InvalidFields(format!(
                            "{head} is not json: it has no paths"
                        )));
                    }
                }
                // A path inside another asked-for one comes with it: every value is copied
                // once.
                let inside = |path: &Vec<String>| {
                    paths
                        .iter()
                        .any(|outer| outer.len() < path.len() && path.starts_with(outer))
                };
                Some(paths.iter().filter(|p| !inside(p)).cloned().collect())
            }
        };
        let expand = match expand {
            Some(text) => split(text, DataError::InvalidExpand)?,
            None => Vec::new(),
        };
        for path in &expand {
            if path.len() > MAX_EXPAND_DEPTH {
                return Err(DataError::InvalidExpand(format!(
                    "relations expand at most {MAX_EXPAND_DEPTH} levels deep"
                )));
            }
            if compiled
                .fields
                .get(&path[0])
                .is_none_or(|f| f.field_type != FieldKind::Relation)
            {
                return Err(DataError::InvalidExpand(format!(
                    "{} is not a relation",
                    path[0]
                )));
            }
        }
        Ok(Shape { fields, expand })
    }

    /// Keeps only the asked-for fields (and `id`).
    fn project(&self, item: Json) -> Json {
        let Some(paths) = &self.fields else {
            return item;
        };
        let mut out = Map::new();
        out.insert("id".into(), item["id"].clone());
        for path in paths {
            let mut value = &item;
            for segment in path {
                value = match value {
                    Json::Array(items) => segment
                        .parse::<usize>()
                        .ok()
                        .and_then(|i| items.get(i))
                        .unwrap_or(&Json::Null),
                    other => other.get(segment).unwrap_or(&Json::Null),
                };
            }
            insert_path(&mut out, path, value.clone());
        }
        Json::Object(out)
    }
}

/// Adds `bytes` to what a page's expansions have `spent`, refusing the page past
/// [`MAX_EXPAND_BYTES`].
fn spend(spent: &mut usize, bytes: usize) -> Result<(), DataError> {
    *spent += bytes;
    match *spent > MAX_EXPAND_BYTES {
        true => Err(DataError::InvalidExpand(format!(
            "the expansions are over {} MiB: ask for fewer records at once",
            MAX_EXPAND_BYTES >> 20
        ))),
        false => Ok(()),
    }
}

/// Sets `value` at `path` in `map`, making the objects on the way.
fn insert_path(map: &mut Map<String, Json>, path: &[String], value: Json) {
    match path {
        [] => {}
        [last] => {
            map.insert(last.clone(), value);
        }
        [head, rest @ ..] => {
            let entry = map
                .entry(head.clone())
                .or_insert_with(|| Json::Object(Map::new()));
            if !entry.is_object() {
                *entry = Json::Object(Map::new());
            }
            if let Some(inner) = entry.as_object_mut() {
                insert_path(inner, rest, value);
            }
        }
    }
}

fn view(name: &str, compiled: &Compiled) -> CollectionView {
    let def = compiled.def.clone();
    CollectionView {
        name: name.to_owned(),
        version: compiled.version,
        fields: def.fields,
        indexes: def.indexes,
        rules: def.rules,
    }
}

/// `-created_at,title` → sort keys, checked against the schema (json fields do not sort).
fn parse_sort(sort: Option<&str>, compiled: &Compiled) -> Result<Vec<SortKey>, DataError> {
    let Some(sort) = sort.filter(|s| !s.trim().is_empty()) else {
        return Ok(vec![SortKey {
            column: "created_at".into(),
            descending: false,
            never_null: true,
        }]);
    };
    let mut keys = Vec::new();
    for part in sort.split(',') {
        let part = part.trim();
        let (descending, name) = match part.strip_prefix('-') {
            Some(name) => (true, name),
            None => (false, part.strip_prefix('+').unwrap_or(part)),
        };
        match compiled.field_kind(name) {
            None => return Err(DataError::InvalidSort(format!("no field named {name:?}"))),
            Some(FieldKind::Json) => {
                return Err(DataError::InvalidSort(format!(
                    "{name} is json and does not sort"
                )));
            }
            Some(_) => keys.push(SortKey {
                column: name.to_owned(),
                descending,
                never_null: matches!(name, "id" | "created_at" | "updated_at"),
            }),
        }
        if keys.len() > 4 {
            return Err(DataError::InvalidSort("at most 4 sort fields".into()));
        }
    }
    Ok(keys)
}

fn cursor_value(value: &SqlValue) -> Json {
    match value {
        SqlValue::Null => Json::Null,
        SqlValue::Bool(b) => Json::Bool(*b),
        SqlValue::Int(i) => serde_json::json!({ "i": i }),
        SqlValue::Float(f) => serde_json::json!({ "f": f }),
        SqlValue::Text(t) => Json::String(t.clone()),
    }
}

fn encode_cursor(sort: &[SortKey], record: &Record) -> String {
    let value_of = |column: &str| {
        record
            .iter()
            .find(|(name, _)| name == column)
            .map_or(Json::Null, |(_, v)| cursor_value(v))
    };
    let mut values: Vec<Json> = sort.iter().map(|k| value_of(&k.column)).collect();
    values.push(value_of("id"));
    URL_SAFE_NO_PAD.encode(Json::Array(values).to_string())
}

/// The sort values and id of a cursor, each of the type of its sort key's field (a cursor is
/// the client's to send back, so a forged one is checked like any input).
fn decode_cursor(
    cursor: &str,
    kinds: &[Option<FieldKind>],
) -> Result<(Vec<SqlValue>, String), DataError> {
    let keys = kinds.len();
    let bytes = URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| DataError::InvalidCursor)?;
    let values: Vec<Json> = serde_json::from_slice(&bytes).map_err(|_| DataError::InvalidCursor)?;
    if values.len() != keys + 1 {
        return Err(DataError::InvalidCursor);
    }
    let mut sql = Vec::new();
    for (value, kind) in values[..keys].iter().zip(kinds) {
        let value = match value {
            Json::Null => SqlValue::Null,
            Json::Bool(b) => SqlValue::Bool(*b),
            Json::String(s) if s.contains('\0') => return Err(DataError::InvalidCursor),
            Json::String(s) => SqlValue::Text(s.clone()),
            Json::Object(o) => match (
                o.get("i").and_then(Json::as_i64),
                o.get("f").and_then(Json::as_f64),
            ) {
                (Some(i), _) => SqlValue::Int(i),
                (None, Some(f)) => SqlValue::Float(f),
                _ => return Err(DataError::InvalidCursor),
            },
            _ => return Err(DataError::InvalidCursor),
        };
        use FieldKind as K;
        sql.push(match (kind, value) {
            (_, SqlValue::Null) => SqlValue::Null,
            (Some(K::Text | K::Relation | K::File), text @ SqlValue::Text(_)) => text,
            (Some(K::Integer | K::Datetime), int @ SqlValue::Int(_)) => int,
            (Some(K::Number), float @ SqlValue::Float(_)) => float,
            (Some(K::Number), SqlValue::Int(i)) => SqlValue::Float(i as f64),
            (Some(K::Bool), bool @ SqlValue::Bool(_)) => bool,
            // SQLite keeps booleans as 0 and 1.
            (Some(K::Bool), SqlValue::Int(i @ (0 | 1))) => SqlValue::Bool(i == 1),
            _ => return Err(DataError::InvalidCursor),
        });
    }
    let id = values[keys]
        .as_str()
        .filter(|id| record_id(id).is_ok())
        .ok_or(DataError::InvalidCursor)?
        .to_owned();
    Ok((sql, id))
}
