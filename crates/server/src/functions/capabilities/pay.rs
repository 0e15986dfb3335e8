//! `ctx.pay`: payments from a function, in the app's name: creating an order priced by the
//! function, reading one, closing it, and refunding, with the same checks as the admin API.

use async_trait::async_trait;
use cloudlet_core::functions::{CallScope, Capability, HostFailure, HostReply};
use cloudlet_core::payments::{NewOrder, NewRefund, Payments};
use serde::Deserialize;

use super::failure;

pub struct Pay {
    pub payments: Payments,
}

/// One call of the shim.
#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum PayCall {
    CreateOrder { order: NewOrder },
    Order { id: String },
    Close { id: String },
    Refund { id: String, refund: NewRefund },
}

#[async_trait]
impl Capability for Pay {
    type Request = PayCall;

    fn name(&self) -> &'static str {
        "pay"
    }

    fn shim(&self) -> &'static str {
        include_str!("pay.js")
    }

    async fn call(
        &self,
        scope: &CallScope,
        call: PayCall,
        _bytes: Vec<u8>,
    ) -> Result<HostReply, HostFailure> {
        let payments = &self.payments;
        let app = &scope.app;
        let value = match call {
            PayCall::CreateOrder { order } => {
                serde_json::json!(payments.create_order(app, order).await.map_err(failure)?)
            }
            PayCall::Order { id } => {
                serde_json::json!(payments.detail(app, &id).await.map_err(failure)?)
            }
            PayCall::Close { id } => {
                serde_json::json!(payments.close(app, &id).await.map_err(failure)?)
            }
            PayCall::Refund { id, refund } => {
                serde_json::json!(payments.refund(app, &id, refund).await.map_err(failure)?)
            }
        };
        Ok(HostReply::json(value))
    }
}
