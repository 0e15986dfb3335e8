//! HTTP routes for subscribe messages: a user reports what they answered in
//! `wx.requestSubscribeMessage` and reads their grants; the admin sends a message (functions
//! send with `ctx.messages.send`, the same call).

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use cloudlet_core::apps::AppName;
use cloudlet_core::messages::{Answer, Grant, MessageError, MessageReceipt, NewMessage};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::user;
use crate::bounds::{BodyLimits, with_body_limit};
use crate::error::{ApiError, Code};
use crate::extract::{AdminOf, CallerOf, Json, TargetApp};
use crate::openapi::Routes;
use crate::state::AppState;

pub fn router(limits: &BodyLimits) -> Routes {
    let routes = OpenApiRouter::new()
        .routes(routes!(record_answers, list_grants))
        .routes(routes!(send));
    with_body_limit(routes, limits, limits.json)
}

impl From<MessageError> for ApiError {
    fn from(e: MessageError) -> Self {
        let code = match e {
            MessageError::Invalid(_) => Code::InvalidMessage,
            MessageError::NoIdentity(_) => Code::NoPlatformIdentity,
            MessageError::NoSubscription(_) => Code::NoSubscription,
            MessageError::Auth(e) => return e.into(),
            MessageError::Queue(e) => return e.into(),
        };
        ApiError::new(code, e.to_string())
    }
}

/// What `wx.requestSubscribeMessage` answered, per template.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Answers {
    /// The WeChat login provider of the mini program that asked (default: the one the user
    /// logged in with if it is WeChat's, else `wechat`).
    #[serde(default)]
    provider: Option<String>,
    /// Template id → `accept`, `reject`, `ban` or `filter`, as WeChat answers; 1 to 3.
    #[schema(value_type = Object)]
    answers: BTreeMap<String, Answer>,
}

#[derive(Serialize, ToSchema)]
struct Grants {
    grants: Vec<Grant>,
}

/// Records the user's answers to `wx.requestSubscribeMessage`: each `accept` allows one
/// message of that template. Answers the user's grants.
#[utoipa::path(post, path = "/v1/apps/{app}/messages/subscriptions", tag = "messages",
    params(("app" = AppName, Path)), request_body = Answers,
    responses((status = 200, body = Grants)))]
async fn record_answers(
    State(state): State<AppState>,
    TargetApp(_): TargetApp,
    CallerOf(caller): CallerOf,
    Json(body): Json<Answers>,
) -> Result<axum::Json<Grants>, ApiError> {
    let principal = user(caller)?;
    let grants = state
        .messages()
        .record_answers(&principal, body.provider.as_deref(), &body.answers)
        .await?;
    Ok(axum::Json(Grants { grants }))
}

/// The user's grants: what may still be sent to them, per mini program and template.
#[utoipa::path(get, path = "/v1/apps/{app}/messages/subscriptions", tag = "messages",
    params(("app" = AppName, Path)), responses((status = 200, body = Grants)))]
async fn list_grants(
    State(state): State<AppState>,
    TargetApp(_): TargetApp,
    CallerOf(caller): CallerOf,
) -> Result<axum::Json<Grants>, ApiError> {
    let principal = user(caller)?;
    let grants = state.messages().grants(&principal).await?;
    Ok(axum::Json(Grants { grants }))
}

/// Sends a subscribe message: takes one of the recipient's grants and queues the message on
/// `_messages`, which delivers it to WeChat with retries.
#[utoipa::path(post, path = "/v1/admin/apps/{app}/messages", tag = "messages",
    params(("app" = AppName, Path)), request_body = NewMessage,
    responses((status = 202, body = MessageReceipt)))]
async fn send(
    State(state): State<AppState>,
    AdminOf(app): AdminOf,
    Json(body): Json<NewMessage>,
) -> Result<(StatusCode, axum::Json<MessageReceipt>), ApiError> {
    let receipt = state.messages().send(&app, body).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(receipt)))
}
