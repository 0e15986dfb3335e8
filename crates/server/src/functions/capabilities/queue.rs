//! `ctx.queue`: sending messages to the app's queues from a function, in the app's name (a
//! function's sends are the app's, whoever called it).

use async_trait::async_trait;
use cloudlet_core::functions::{CallScope, Capability, HostFailure, HostReply};
use cloudlet_core::queues::{Outgoing, Queues};
use serde::Deserialize;
use serde_json::json;

use super::failure;

pub struct Queue {
    pub queues: Queues,
}

/// One call: messages to one queue.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueCall {
    queue: String,
    messages: Vec<Outgoing>,
}

#[async_trait]
impl Capability for Queue {
    type Request = QueueCall;

    fn name(&self) -> &'static str {
        "queue"
    }

    fn shim(&self) -> &'static str {
        include_str!("queue.js")
    }

    async fn call(
        &self,
        scope: &CallScope,
        call: QueueCall,
        _bytes: Vec<u8>,
    ) -> Result<HostReply, HostFailure> {
        let sent = self
            .queues
            .send(&scope.app, &call.queue, call.messages)
            .await
            .map_err(failure)?;
        Ok(HostReply::json(json!({ "sent": sent })))
    }
}
