//! Liveness (`/healthz`: the process answers) and readiness (`/readyz`: the system database
//! answers and the server is not shutting down).

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::error::{ApiError, Code};
use crate::state::AppState;

pub async fn live() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

pub async fn ready(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
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
    Ok(Json(json!({ "status": "ready" })))
}
