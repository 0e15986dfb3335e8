//! Liveness (`/healthz`: the process answers) and readiness (`/readyz`: the system database
//! answers and the server is not shutting down).

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, Code};
use crate::openapi::Routes;
use crate::state::AppState;

/// The probes: liveness, readiness and the metrics.
pub fn routes() -> Routes {
    OpenApiRouter::new()
        .routes(routes!(live))
        .routes(routes!(ready))
        .routes(routes!(crate::metrics::export))
}

#[derive(Serialize, ToSchema)]
pub struct Status {
    /// `ok` (live) or `ready`.
    status: &'static str,
}

/// The process answers.
#[utoipa::path(get, path = "/healthz", tag = "server", responses((status = 200, body = Status)))]
pub async fn live() -> Json<Status> {
    Json(Status { status: "ok" })
}

/// The system database answers and the server is not shutting down (`503 not_ready` otherwise).
#[utoipa::path(get, path = "/readyz", tag = "server", responses((status = 200, body = Status)))]
pub async fn ready(State(state): State<AppState>) -> Result<Json<Status>, ApiError> {
    if !state.is_accepting() {
        return Err(ApiError::new(Code::NotReady, "the server is shutting down"));
    }
    if let Err(e) = state.system().ping().await {
        tracing::warn!(error = %e, "readiness check failed");
        return Err(ApiError::new(
            Code::NotReady,
            "the system database does not answer",
        ));
    }
    Ok(Json(Status { status: "ready" }))
}
