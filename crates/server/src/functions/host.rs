//! What a running function may ask of the server: [`Host`] answers its host calls, `ctx.db`
//! through the data service under the caller's rules (or none, for `ctx.admin.db`) and `fetch`
//! through the [`Fetcher`].

use async_trait::async_trait;
use cloudlet_core::access::Caller;
use cloudlet_core::apps::AppName;
use cloudlet_core::data::{Data, ListRequest, Write};
use cloudlet_core::functions::{HostCalls, HostFailure};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::Fetcher;
use crate::error::ApiError;

/// The host calls of one invocation.
pub struct Host {
    data: Data,
    app: AppName,
    caller: Caller,
    fetch: Fetcher,
}

impl Host {
    pub fn new(data: Data, app: AppName, caller: Caller, fetch: Fetcher) -> Self {
        Host {
            data,
            app,
            caller,
            fetch,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DbCall {
    admin: bool,
    op: String,
    collection: Option<String>,
    id: Option<String>,
    data: Option<Map<String, Value>>,
    #[serde(default)]
    query: Map<String, Value>,
    operations: Option<Vec<Write>>,
}

pub(super) fn failure(code: &str, message: impl Into<String>) -> HostFailure {
    HostFailure {
        code: code.to_owned(),
        message: message.into(),
    }
}

#[async_trait]
impl HostCalls for Host {
    async fn call(&self, method: &str, args: Value) -> Result<Value, HostFailure> {
        match method {
            "db" => self.db(args).await,
            "fetch" => self.fetch.fetch(args).await,
            other => Err(failure(
                "unknown_host_call",
                format!("no host call {other:?}"),
            )),
        }
    }
}

impl Host {
    async fn db(&self, args: Value) -> Result<Value, HostFailure> {
        let call: DbCall =
            serde_json::from_value(args).map_err(|e| failure("invalid_body", e.to_string()))?;
        let actor = if call.admin {
            Caller::Admin
        } else {
            self.caller.clone()
        };
        let data = &self.data;
        let app = &self.app;
        let collection = || {
            call.collection
                .clone()
                .ok_or_else(|| failure("invalid_body", "a collection name is needed"))
        };
        let id = || {
            call.id
                .clone()
                .ok_or_else(|| failure("invalid_body", "a record id is needed"))
        };
        let query = list_request(&call.query)?;
        let answer = match call.op.as_str() {
            "get" => {
                data.get(
                    app,
                    &collection()?,
                    &actor,
                    &id()?,
                    query.fields.as_deref(),
                    query.expand.as_deref(),
                )
                .await
            }
            "create" => {
                let record = call.data.clone().unwrap_or_default();
                data.create(app, &collection()?, &actor, record).await
            }
            "update" => {
                let changes = call.data.clone().unwrap_or_default();
                data.update(app, &collection()?, &actor, &id()?, changes)
                    .await
            }
            "delete" => data
                .delete(app, &collection()?, &actor, &id()?)
                .await
                .map(|()| Value::Null),
            "list" => data
                .list(app, &collection()?, &actor, query)
                .await
                .map(|page| serde_json::to_value(page).unwrap_or(Value::Null)),
            "batch" => data
                .batch(app, &actor, call.operations.clone().unwrap_or_default())
                .await
                .map(|results| json!({ "results": results })),
            other => {
                return Err(failure(
                    "invalid_body",
                    format!("no db operation {other:?}"),
                ));
            }
        };
        answer.map_err(|e| {
            let api = ApiError::from(e);
            failure(api.code.as_str(), api.message)
        })
    }
}

/// `{filter, sort, limit, offset, cursor, count, fields, expand}`, as the records API takes them.
fn list_request(query: &Map<String, Value>) -> Result<ListRequest, HostFailure> {
    let text = |key: &str| -> Result<Option<String>, HostFailure> {
        match query.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(failure("invalid_query", format!("{key} is a string"))),
        }
    };
    let number = |key: &str| -> Result<Option<usize>, HostFailure> {
        match query.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| failure("invalid_query", format!("{key} is a whole number"))),
        }
    };
    for key in query.keys() {
        let known = [
            "filter", "sort", "limit", "offset", "cursor", "count", "fields", "expand",
        ];
        if !known.contains(&key.as_str()) {
            return Err(failure(
                "invalid_query",
                format!("unknown parameter {key:?}"),
            ));
        }
    }
    Ok(ListRequest {
        filter: text("filter")?,
        fields: text("fields")?,
        expand: text("expand")?,
        sort: text("sort")?,
        limit: number("limit")?,
        offset: number("offset")?,
        cursor: text("cursor")?,
        count: query.get("count").and_then(Value::as_bool).unwrap_or(false),
    })
}
