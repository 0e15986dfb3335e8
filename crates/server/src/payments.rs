//! HTTP routes for payments: the merchant configuration and orders for admins (functions use
//! `ctx.pay`, the same calls), a user's orders (created through the app's `before` function,
//! read and confirmed), and the platforms' notifications, verified over their raw bytes.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use cloudlet_core::apps::AppName;
use cloudlet_core::functions::{PayEvent, Trigger};
use cloudlet_core::payments::{
    AlipayPayInput, BillDate, CallbackView, MAX_CALLBACKS_LISTED, MerchantView, NewOrder,
    NewRefund, NotifySignature, OrderDetail, OrderView, PayError, Provider, RefundView, Report,
    ReportSummary, WechatPayInput,
};
use cloudlet_store::OrderQuery;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::user;
use crate::bounds::{BodyLimits, with_body_limit};
use crate::error::{ApiError, Code};
use crate::extract::{AdminOf, BodyBytes, CallerOf, Json, Operator, Path, Query, TargetApp};
use crate::openapi::Routes;
use crate::state::AppState;

pub fn router(limits: &BodyLimits) -> Routes {
    let routes = OpenApiRouter::new()
        .routes(routes!(put_merchant, get_merchant))
        .routes(routes!(admin_create_order, list_orders))
        .routes(routes!(get_order))
        .routes(routes!(close_order))
        .routes(routes!(refund_order))
        .routes(routes!(list_callbacks))
        .routes(routes!(get_callback))
        .routes(routes!(replay_callback))
        .routes(routes!(reconcile, list_reports))
        .routes(routes!(get_report))
        .routes(routes!(create_order))
        .routes(routes!(my_order))
        .routes(routes!(confirm_order))
        .routes(routes!(notify));
    with_body_limit(routes, limits, limits.json)
}

impl From<PayError> for ApiError {
    fn from(e: PayError) -> Self {
        let e = match e {
            PayError::Auth(auth) => return auth.into(),
            other => other,
        };
        let code = match &e {
            PayError::UnknownProvider(_) => Code::UnknownPayProvider,
            PayError::NotConfigured(_) => Code::PayNotConfigured,
            PayError::InvalidConfig(_) => Code::InvalidMerchant,
            PayError::AddressNotAllowed => Code::Forbidden,
            PayError::Invalid(_) => Code::InvalidOrder,
            PayError::OrderNotFound => Code::OrderNotFound,
            PayError::RefundNotFound => Code::RefundNotFound,
            PayError::CallbackNotFound => Code::CallbackNotFound,
            PayError::ReportNotFound => Code::ReportNotFound,
            PayError::InvalidBillDate(_) => Code::InvalidBillDate,
            PayError::BillNotReady(_) => Code::BillNotReady,
            PayError::KeyReused => Code::OrderKeyReused,
            PayError::TradeNoTaken => Code::TradeNoTaken,
            PayError::OrderState(_) => Code::OrderState,
            PayError::RefundExceeds => Code::RefundExceeds,
            PayError::RefundReused => Code::RefundReused,
            PayError::NoIdentity(_) => Code::NoPlatformIdentity,
            PayError::Unverified(_) => Code::NotificationUnverified,
            PayError::Mismatch(_) => Code::NotificationMismatch,
            PayError::PlatformRefused(_) => Code::PaymentRefused,
            PayError::PlatformUnavailable(_) => {
                return ApiError::new(Code::PaymentUnavailable, e.to_string()).retry_after(5);
            }
            PayError::Unsettled(_) => Code::PaymentsUnsettled,
            PayError::Sealing => return ApiError::internal(&e),
            PayError::Store(store) => return ApiError::store(store, &e),
            PayError::Queue(_) | PayError::Auth(_) => return ApiError::internal(&e),
        };
        ApiError::new(code, e.to_string())
    }
}

/// A merchant configuration: WeChat Pay's or Alipay's, by the path's provider.
#[derive(ToSchema)]
#[allow(dead_code)] // Only its schema is used: the body is read by the provider's type.
enum MerchantInput {
    Wechat(WechatPayInput),
    Alipay(AlipayPayInput),
}

#[derive(Deserialize, IntoParams)]
struct ProviderPath {
    #[allow(dead_code)] // Read by `TargetApp`.
    app: String,
    /// `wechat`.
    provider: String,
}

impl ProviderPath {
    fn provider(&self) -> Result<Provider, ApiError> {
        Ok(Provider::parse(&self.provider)?)
    }
}

#[derive(Deserialize, IntoParams)]
struct OrderPath {
    #[allow(dead_code)] // Read by `TargetApp`.
    app: String,
    id: String,
}

/// Sets the app's merchant configuration (a `WechatPayInput` for `wechat`, an `AlipayPayInput`
/// for `alipay`): secrets sealed, never shown back.
#[utoipa::path(put, path = "/v1/admin/apps/{app}/pay/merchants/{provider}", tag = "payments",
    params(ProviderPath), request_body = MerchantInput,
    responses((status = 200, body = MerchantView)))]
async fn put_merchant(
    State(state): State<AppState>,
    AdminOf(app): AdminOf,
    Operator(addresses): Operator,
    Path(path): Path<ProviderPath>,
    Json(body): Json<Value>,
) -> Result<axum::Json<MerchantView>, ApiError> {
    let provider = path.provider()?;
    Ok(axum::Json(
        state
            .payments()
            .configure(&app, provider, body, addresses)
            .await?,
    ))
}

/// The app's merchant configuration, without its secrets.
#[utoipa::path(get, path = "/v1/admin/apps/{app}/pay/merchants/{provider}", tag = "payments",
    params(ProviderPath), responses((status = 200, body = MerchantView)))]
async fn get_merchant(
    State(state): State<AppState>,
    AdminOf(app): AdminOf,
    Path(path): Path<ProviderPath>,
) -> Result<axum::Json<MerchantView>, ApiError> {
    let provider = path.provider()?;
    Ok(axum::Json(
        state.payments().merchant_view(&app, provider).await?,
    ))
}

/// Creates an order priced by the admin and places it with the platform.
#[utoipa::path(post, path = "/v1/admin/apps/{app}/pay/orders", tag = "payments",
    params(("app" = AppName, Path)), request_body = NewOrder,
    responses((status = 201, body = OrderView)))]
async fn admin_create_order(
    State(state): State<AppState>,
    AdminOf(app): AdminOf,
    Json(body): Json<NewOrder>,
) -> Result<(StatusCode, axum::Json<OrderView>), ApiError> {
    let order = state.payments().create_order(&app, body).await?;
    Ok((StatusCode::CREATED, axum::Json(order)))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct OrdersQuery {
    /// Only this user's.
    #[serde(default)]
    user: Option<String>,
    /// Only orders in this state.
    #[serde(default)]
    state: Option<String>,
    /// The `next_cursor` of the previous page.
    #[serde(default)]
    cursor: Option<String>,
    /// 1 to 200 (50 by default).
    #[serde(default)]
    limit: Option<usize>,
}

#[derive(Serialize, ToSchema)]
struct OrderPage {
    items: Vec<OrderView>,
    /// Where the next page starts; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

/// The app's orders, newest first.
#[utoipa::path(get, path = "/v1/admin/apps/{app}/pay/orders", tag = "payments",
    params(("app" = AppName, Path), OrdersQuery),
    responses((status = 200, body = OrderPage)))]
async fn list_orders(
    State(state): State<AppState>,
    AdminOf(app): AdminOf,
    Query(query): Query<OrdersQuery>,
) -> Result<axum::Json<OrderPage>, ApiError> {
    let limit = query.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::new(Code::InvalidQuery, "limit is 1 to 200"));
    }
    let short = |text: &Option<String>| text.as_ref().is_none_or(|t| t.len() <= 64);
    if !short(&query.user) || !short(&query.state) || !short(&query.cursor) {
        return Err(ApiError::new(
            Code::InvalidQuery,
            "user, state and cursor are at most 64 bytes",
        ));
    }
    let items = state
        .payments()
        .orders(
            &app,
            OrderQuery {
                user_id: query.user,
                state: query.state,
                before: query.cursor,
                limit: limit + 1,
            },
        )
        .await?;
    let mut items = items;
    let next_cursor = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|o| o.id.clone())
    } else {
        None
    };
    Ok(axum::Json(OrderPage { items, next_cursor }))
}

/// An order with its refunds and the events that moved it.
#[utoipa::path(get, path = "/v1/admin/apps/{app}/pay/orders/{id}", tag = "payments",
    params(OrderPath), responses((status = 200, body = OrderDetail)))]
async fn get_order(
    State(state): State<AppState>,
    AdminOf(app): AdminOf,
    Path(path): Path<OrderPath>,
) -> Result<axum::Json<OrderDetail>, ApiError> {
    Ok(axum::Json(state.payments().detail(&app, &path.id).await?))
}

/// Closes an unpaid order, on the platform first.
#[utoipa::path(post, path = "/v1/admin/apps/{app}/pay/orders/{id}/close", tag = "payments",
    params(OrderPath), responses((status = 200, body = OrderView)))]
async fn close_order(
    State(state): State<AppState>,
    AdminOf(app): AdminOf,
    Path(path): Path<OrderPath>,
) -> Result<axum::Json<OrderView>, ApiError> {
    Ok(axum::Json(state.payments().close(&app, &path.id).await?))
}

/// Refunds (part of) a paid order. The same `out_refund_no` again is the same refund; its
/// outcome arrives by the platform's notification or a query (`pending` until then).
#[utoipa::path(post, path = "/v1/admin/apps/{app}/pay/orders/{id}/refunds", tag = "payments",
    params(OrderPath), request_body = NewRefund,
    responses((status = 200, body = RefundView)))]
async fn refund_order(
    State(state): State<AppState>,
    AdminOf(app): AdminOf,
    Path(path): Path<OrderPath>,
    Json(body): Json<NewRefund>,
) -> Result<axum::Json<RefundView>, ApiError> {
    Ok(axum::Json(
        state.payments().refund(&app, &path.id, body).await?,
    ))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct CallbacksQuery {
    /// Only this order's.
    #[serde(default)]
    order: Option<String>,
    /// 1 to 200 (50 by default).
    #[serde(default)]
    limit: Option<usize>,
}

#[derive(Serialize, ToSchema)]
struct CallbackList {
    items: Vec<CallbackView>,
}

/// The platforms' notifications that verified, newest first (once per notification however
/// often it was retried), with what handling them did.
#[utoipa::path(get, path = "/v1/admin/apps/{app}/pay/callbacks", tag = "payments",
    params(("app" = AppName, Path), CallbacksQuery),
    responses((status = 200, body = CallbackList)))]
async fn list_callbacks(
    State(state): State<AppState>,
    AdminOf(app): AdminOf,
    Query(query): Query<CallbacksQuery>,
) -> Result<axum::Json<CallbackList>, ApiError> {
    let limit = query.limit.unwrap_or(50);
    if !(1..=MAX_CALLBACKS_LISTED).contains(&limit) {
        return Err(ApiError::new(Code::InvalidQuery, "limit is 1 to 200"));
    }
    if query.order.as_ref().is_some_and(|o| o.len() > 64) {
        return Err(ApiError::new(
            Code::InvalidQuery,
            "order is at most 64 bytes",
        ));
    }
    let items = state
        .payments()
        .callbacks(&app, query.order.as_deref(), limit)
        .await?;
    Ok(axum::Json(CallbackList { items }))
}

#[derive(Deserialize, IntoParams)]
struct CallbackPath {
    #[allow(dead_code)] // Read by `TargetApp`.
    app: String,
    id: String,
}

/// A kept notification, its body as it came.
#[utoipa::path(get, path = "/v1/admin/apps/{app}/pay/callbacks/{id}", tag = "payments",
    params(CallbackPath), responses((status = 200, body = CallbackView)))]
async fn get_callback(
    State(state): State<AppState>,
    AdminOf(app): AdminOf,
    Path(path): Path<CallbackPath>,
) -> Result<axum::Json<CallbackView>, ApiError> {
    Ok(axum::Json(state.payments().callback(&app, &path.id).await?))
}

/// Replays a kept notification: verified again with the merchant's keys as they are now (its
/// age aside), then applied as if it came now. Its `outcome` says what the replay did; the
/// replay is noted on the order's timeline.
#[utoipa::path(post, path = "/v1/admin/apps/{app}/pay/callbacks/{id}/replay", tag = "payments",
    params(CallbackPath), responses((status = 200, body = CallbackView)))]
async fn replay_callback(
    State(state): State<AppState>,
    AdminOf(app): AdminOf,
    CallerOf(caller): CallerOf,
    Path(path): Path<CallbackPath>,
) -> Result<axum::Json<CallbackView>, ApiError> {
    // Who asked, as far as a bearer token says: the instance's admin token or the app's key.
    let actor = match caller {
        cloudlet_core::access::Caller::Admin => "admin token",
        _ => "app key",
    };
    Ok(axum::Json(
        state.payments().replay(&app, &path.id, actor).await?,
    ))
}

/// A day to reconcile.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ReconcileBody {
    /// `wechat` (Alipay's bill is not read).
    provider: String,
    /// `YYYY-MM-DD`, a China-time day before today, within three months.
    date: String,
}

/// Downloads the day's trade bill and compares it with the orders now; the report is kept
/// (replacing the day's earlier one).
#[utoipa::path(post, path = "/v1/admin/apps/{app}/pay/reconciliations", tag = "payments",
    params(("app" = AppName, Path)), request_body = ReconcileBody,
    responses((status = 200, body = Report)))]
async fn reconcile(
    State(state): State<AppState>,
    AdminOf(app): AdminOf,
    Json(body): Json<ReconcileBody>,
) -> Result<axum::Json<Report>, ApiError> {
    let provider = Provider::parse(&body.provider)?;
    let date = BillDate::parse(&body.date)?;
    Ok(axum::Json(
        state
            .payments()
            .reconcile(&app, provider, date, "admin")
            .await?,
    ))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct ReportsQuery {
    /// 1 to 400 (60 by default).
    #[serde(default)]
    limit: Option<usize>,
}

#[derive(Serialize, ToSchema)]
struct ReportList {
    items: Vec<ReportSummary>,
}

/// Kept reconciliation reports, newest day first.
#[utoipa::path(get, path = "/v1/admin/apps/{app}/pay/reconciliations", tag = "payments",
    params(("app" = AppName, Path), ReportsQuery),
    responses((status = 200, body = ReportList)))]
async fn list_reports(
    State(state): State<AppState>,
    AdminOf(app): AdminOf,
    Query(query): Query<ReportsQuery>,
) -> Result<axum::Json<ReportList>, ApiError> {
    let limit = query.limit.unwrap_or(60);
    if !(1..=400).contains(&limit) {
        return Err(ApiError::new(Code::InvalidQuery, "limit is 1 to 400"));
    }
    let items = state.payments().reports(&app, limit).await?;
    Ok(axum::Json(ReportList { items }))
}

#[derive(Deserialize, IntoParams)]
struct ReportPath {
    #[allow(dead_code)] // Read by `TargetApp`.
    app: String,
    /// `wechat`.
    provider: String,
    /// `YYYY-MM-DD`.
    date: String,
}

/// A kept reconciliation report, with its differences.
#[utoipa::path(get, path = "/v1/admin/apps/{app}/pay/reconciliations/{provider}/{date}",
    tag = "payments", params(ReportPath), responses((status = 200, body = Report)))]
async fn get_report(
    State(state): State<AppState>,
    AdminOf(app): AdminOf,
    Path(path): Path<ReportPath>,
) -> Result<axum::Json<Report>, ApiError> {
    let provider = Provider::parse(&path.provider)?;
    let date = BillDate::parse(&path.date)?;
    Ok(axum::Json(
        state.payments().report(&app, provider, date).await?,
    ))
}

/// What a client sends to ask for an order.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ClientOrder {
    /// Handed to the app's `before` function as is (what to buy, how many).
    #[serde(default)]
    #[schema(value_type = Object)]
    data: Value,
    /// An idempotency key: the same key again answers the same order.
    #[serde(default)]
    key: Option<String>,
}

/// What the `before` function answers: the order's price, decided on the server.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Priced {
    /// `wechat` (the default) or `alipay`: the function knows which mini program asks.
    #[serde(default)]
    provider: Option<String>,
    amount_fen: i64,
    description: String,
    #[serde(default)]
    metadata: Option<Value>,
    #[serde(default)]
    expires_in_secs: Option<u64>,
    #[serde(default)]
    out_trade_no: Option<String>,
}

/// A user asks for an order: the app's `before` function (the one whose trigger is
/// `{"pay": ["before"]}`) decides the price from `data`, or throws to refuse. Without one,
/// clients can not order.
#[utoipa::path(post, path = "/v1/apps/{app}/pay/orders", tag = "payments",
    params(("app" = AppName, Path)), request_body = ClientOrder,
    responses((status = 201, body = OrderView)))]
async fn create_order(
    State(state): State<AppState>,
    TargetApp(app): TargetApp,
    CallerOf(caller): CallerOf,
    Json(body): Json<ClientOrder>,
) -> Result<(StatusCode, axum::Json<OrderView>), ApiError> {
    let principal = user(caller.clone())?;
    state
        .limits()
        .check_payer(app.as_str(), &principal.user_id)
        .await?;
    let before = state
        .functions()
        .triggered_by_pay(&app, PayEvent::Before)
        .await?;
    let Some(function) = before.into_iter().next() else {
        return Err(ApiError::new(
            Code::ClientOrdersDisabled,
            "this app takes no orders from clients: it has no function with the trigger {\"pay\": [\"before\"]}",
        ));
    };
    let event = json!({
        "event": "pay.before",
        "user": { "id": principal.user_id },
        "data": body.data,
    });
    let request_id = state.new_request_id();
    let answer = crate::functions::run(
        &state,
        &app,
        &function,
        caller,
        Trigger::Pay,
        &request_id,
        crate::functions::raw(&event)?,
    )
    .await?;
    let priced: Priced = serde_json::from_str(answer.get()).map_err(|e| {
        ApiError::new(
            Code::InvalidOrder,
            format!(
                "the before function must answer {{amount_fen, description, provider?, metadata?}}: {e}"
            ),
        )
    })?;
    let order = NewOrder {
        provider: priced.provider,
        amount_fen: priced.amount_fen,
        description: priced.description,
        user: principal.user_id,
        out_trade_no: priced.out_trade_no,
        metadata: priced.metadata,
        key: body.key,
        expires_in_secs: priced.expires_in_secs,
    };
    let order = state.payments().create_order(&app, order).await?;
    Ok((StatusCode::CREATED, axum::Json(order)))
}

/// One of the user's own orders (another user's is not found).
#[utoipa::path(get, path = "/v1/apps/{app}/pay/orders/{id}", tag = "payments",
    params(OrderPath), responses((status = 200, body = OrderView)))]
async fn my_order(
    State(state): State<AppState>,
    TargetApp(app): TargetApp,
    CallerOf(caller): CallerOf,
    Path(path): Path<OrderPath>,
) -> Result<axum::Json<OrderView>, ApiError> {
    let principal = user(caller)?;
    Ok(axum::Json(
        state
            .payments()
            .order_of_user(&app, &principal.user_id, &path.id)
            .await?,
    ))
}

/// After `wx.requestPayment` said "ok" (a hint only): asks the platform about the user's order
/// and answers it as it then is.
#[utoipa::path(post, path = "/v1/apps/{app}/pay/orders/{id}/confirm", tag = "payments",
    params(OrderPath), responses((status = 200, body = OrderView)))]
async fn confirm_order(
    State(state): State<AppState>,
    TargetApp(app): TargetApp,
    CallerOf(caller): CallerOf,
    Path(path): Path<OrderPath>,
) -> Result<axum::Json<OrderView>, ApiError> {
    let principal = user(caller)?;
    state
        .limits()
        .check_payer(app.as_str(), &principal.user_id)
        .await?;
    Ok(axum::Json(
        state
            .payments()
            .confirm(&app, &principal.user_id, &path.id)
            .await?,
    ))
}

/// A payment platform's notification (WeChat Pay: `TRANSACTION.SUCCESS`, `REFUND.*`; Alipay: the
/// trade's form). Verified over its raw bytes before anything is read; once its change is
/// durable, the platform's success form (WeChat Pay `204`, Alipay `200 success`), which tells
/// it to stop retrying; anything else makes it retry.
#[utoipa::path(post, path = "/v1/apps/{app}/pay/{provider}/notify", tag = "payments",
    params(ProviderPath), request_body(content = String, content_type = "application/json"),
    responses((status = 204, description = "taken (WeChat Pay)"),
        (status = 200, description = "taken (Alipay: the body is `success`)")))]
async fn notify(
    State(state): State<AppState>,
    TargetApp(app): TargetApp,
    Path(path): Path<ProviderPath>,
    headers: HeaderMap,
    BodyBytes(body): BodyBytes,
) -> Result<Response, ApiError> {
    let provider = path.provider()?;
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    let signed = NotifySignature {
        timestamp: header("wechatpay-timestamp"),
        nonce: header("wechatpay-nonce"),
        signature: header("wechatpay-signature"),
        serial: header("wechatpay-serial"),
    };
    match state.payments().notify(&app, provider, signed, &body).await {
        Ok(()) => Ok(match provider {
            Provider::Wechat => StatusCode::NO_CONTENT.into_response(),
            Provider::Alipay => (StatusCode::OK, "success").into_response(),
        }),
        // Forgeries are the caller's to make as many of as they like: not one log line each.
        Err(e @ PayError::Unverified(_)) => {
            tracing::debug!(app = %app, error = %e, "a payment notification did not verify");
            Err(e.into())
        }
        Err(e) => {
            tracing::warn!(app = %app, error = %e, "a payment notification was refused");
            Err(e.into())
        }
    }
}
