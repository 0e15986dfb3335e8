//! `ctx.messages`: sending subscribe messages from a function, in the app's name: the same
//! checks, grant and queue as the admin API's `POST …/messages`.

use async_trait::async_trait;
use cloudlet_core::functions::{CallScope, Capability, HostFailure, HostReply};
use cloudlet_core::messages::{Messages, NewMessage};

use super::failure;

pub struct SubscribeMessages {
    pub messages: Messages,
}

#[async_trait]
impl Capability for SubscribeMessages {
    type Request = NewMessage;

    fn name(&self) -> &'static str {
        "messages"
    }

    fn shim(&self) -> &'static str {
        include_str!("messages.js")
    }

    async fn call(
        &self,
        scope: &CallScope,
        message: NewMessage,
        _bytes: Vec<u8>,
    ) -> Result<HostReply, HostFailure> {
        let receipt = self
            .messages
            .send(&scope.app, message)
            .await
            .map_err(failure)?;
        Ok(HostReply::json(serde_json::json!(receipt)))
    }
}
