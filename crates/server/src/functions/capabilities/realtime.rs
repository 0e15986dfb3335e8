//! `ctx.realtime`: publishing to the app's channels, sending direct messages to its users and
//! reading a channel's presence from a function, as the server (its channels' rules are the
//! clients'; a function's messages come `from: null`, whoever called it).

use async_trait::async_trait;
use cloudlet_core::access::Caller;
use cloudlet_core::functions::{CallScope, Capability, HostFailure, HostReply};
use cloudlet_core::realtime::{Hub, MAX_PRESENCE_PAGE};
use serde::Deserialize;
use serde_json::{Value as Json, json};

use super::failure;
use crate::error::{ApiError, Code};
use crate::realtime::{MAX_SERVER_MESSAGE, channel_name};

pub struct Realtime {
    pub hub: Hub,
}

/// One call.
#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum RealtimeCall {
    Publish {
        channel: String,
        data: Json,
    },
    Send {
        user: String,
        data: Json,
    },
    Presence {
        channel: String,
        #[serde(default)]
        after: Option<String>,
        #[serde(default)]
        limit: Option<usize>,
    },
}

fn fits(data: &Json) -> Result<(), HostFailure> {
    if data.to_string().len() > MAX_SERVER_MESSAGE {
        return Err(failure(ApiError::new(
            Code::PayloadTooLarge,
            format!("a message's data is at most {MAX_SERVER_MESSAGE} bytes of JSON"),
        )));
    }
    Ok(())
}

#[async_trait]
impl Capability for Realtime {
    type Request = RealtimeCall;

    fn name(&self) -> &'static str {
        "realtime"
    }

    fn shim(&self) -> &'static str {
        include_str!("realtime.js")
    }

    async fn call(
        &self,
        scope: &CallScope,
        call: RealtimeCall,
        _bytes: Vec<u8>,
    ) -> Result<HostReply, HostFailure> {
        let server = Caller::AppKey(scope.app.clone());
        let value = match call {
            RealtimeCall::Publish { channel, data } => {
                let channel = channel_name(&channel).map_err(failure)?;
                fits(&data)?;
                let seq = self
                    .hub
                    .publish(&scope.app, &server, &channel, &data)
                    .await
                    .map_err(failure)?;
                json!({ "seq": seq })
            }
            RealtimeCall::Send { user, data } => {
                fits(&data)?;
                let seq = self
                    .hub
                    .send_direct(&scope.app, &server, &user, &data)
                    .await
                    .map_err(failure)?;
                json!({ "seq": seq })
            }
            RealtimeCall::Presence {
                channel,
                after,
                limit,
            } => {
                let channel = channel_name(&channel).map_err(failure)?;
                let limit = limit.unwrap_or(100).clamp(1, MAX_PRESENCE_PAGE);
                let page = self
                    .hub
                    .presence(&scope.app, &server, &channel, after.as_deref(), limit)
                    .await
                    .map_err(failure)?;
                serde_json::to_value(page).unwrap_or(Json::Null)
            }
        };
        Ok(HostReply::json(value))
    }
}
