//! `ctx.db` and `ctx.admin.db`: records through the data service, under the caller's rules, or
//! as the admin. The requests are the records API's, typed.

use async_trait::async_trait;
use cloudlet_core::access::Caller;
use cloudlet_core::data::{Data, ListRequest, Write};
use cloudlet_core::functions::{CallScope, Capability, HostFailure, HostReply};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::failure;

pub struct Database {
    pub data: Data,
}

/// One call: as the admin (`ctx.admin.db`) or as the caller, and what it asks.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DbCall {
    admin: bool,
    request: DbRequest,
}

#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
enum DbRequest {
    Get {
        collection: String,
        id: String,
        #[serde(default)]
        query: ListRequest,
    },
    Create {
        collection: String,
        #[serde(default)]
        data: Map<String, Value>,
    },
    Update {
        collection: String,
        id: String,
        #[serde(default)]
        data: Map<String, Value>,
    },
    Delete {
        collection: String,
        id: String,
    },
    List {
        collection: String,
        #[serde(default)]
        query: ListRequest,
    },
    Batch {
        operations: Vec<Write>,
    },
}

#[async_trait]
impl Capability for Database {
    type Request = DbCall;

    fn name(&self) -> &'static str {
        "db"
    }

    fn shim(&self) -> &'static str {
        include_str!("db.js")
    }

    async fn call(
        &self,
        scope: &CallScope,
        call: DbCall,
        _bytes: Vec<u8>,
    ) -> Result<HostReply, HostFailure> {
        let caller = if call.admin {
            &Caller::Admin
        } else {
            &scope.caller
        };
        let (data, app) = (&self.data, &scope.app);
        let answer = match call.request {
            DbRequest::Get {
                collection,
                id,
                query,
            } => {
                data.get(
                    app,
                    &collection,
                    caller,
                    &id,
                    query.fields.as_deref(),
                    query.expand.as_deref(),
                )
                .await
            }
            DbRequest::Create {
                collection,
                data: record,
            } => data.create(app, &collection, caller, record).await,
            DbRequest::Update {
                collection,
                id,
                data: changes,
            } => data.update(app, &collection, caller, &id, changes).await,
            DbRequest::Delete { collection, id } => data
                .delete(app, &collection, caller, &id)
                .await
                .map(|()| Value::Null),
            DbRequest::List { collection, query } => data
                .list(app, &collection, caller, query)
                .await
                .map(|page| serde_json::to_value(page).unwrap_or(Value::Null)),
            DbRequest::Batch { operations } => data
                .batch(app, caller, operations)
                .await
                .map(|results| json!({ "results": results })),
        };
        answer.map(HostReply::json).map_err(failure)
    }
}
