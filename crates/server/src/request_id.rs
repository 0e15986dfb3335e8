//! The request id: taken from a well-formed incoming `x-request-id` (so ids follow a request
//! through proxies) or made here, kept in a task-local for the error bodies and the logs, and
//! returned on every response.

use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use crate::state::AppState;

pub const HEADER: &str = "x-request-id";

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The id of the request being served, or `""` outside of one.
pub fn current() -> String {
    REQUEST_ID.try_with(Clone::clone).unwrap_or_default()
}

/// `work` under the current request's id and span, for work spawned off the request's task.
pub fn carried<F: std::future::Future>(work: F) -> impl std::future::Future<Output = F::Output> {
    REQUEST_ID.scope(current(), work.in_current_span())
}

pub async fn assign(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_well_formed(v))
        .map(str::to_owned)
        .unwrap_or_else(|| state.new_request_id());
    let span = tracing::info_span!("request", id = %id);
    let mut response = REQUEST_ID
        .scope(id.clone(), next.run(request).instrument(span))
        .await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(HEADER, value);
    }
    response
}

fn is_well_formed(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_short_plain_ids_are_taken_from_clients() {
        assert!(super::is_well_formed("abc-123_x.y:z"));
        assert!(!super::is_well_formed(""));
        assert!(!super::is_well_formed("a b"));
        assert!(!super::is_well_formed(&"a".repeat(65)));
    }
}
