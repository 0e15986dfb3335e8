//! Prometheus metrics: requests by route, method and status, latency histograms by route, open
//! app databases, function invocations by trigger and outcome, queue consumers' batches by who
//! claimed them and the runs going now, and thumbnails made. Routes are labelled by their template (`/v1/admin/apps/{app}`), never by
//! the concrete path, so the number of series stays bounded however many apps there are.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::error::ApiError;
use crate::state::AppState;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BatchLabels {
    by: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FunctionLabels {
    trigger: &'static str,
    outcome: &'static str,
}

type HistogramFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: HistogramFamily,
    open_apps: Gauge,
    functions: Family<FunctionLabels, Counter>,
    batches: Family<BatchLabels, Counter>,
    queue_runs: Gauge,
    thumbnails: Counter,
    thumbnail_failures: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("cloudlet");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, route and status",
            requests.clone(),
        );
        // 100 µs to about 3.3 s.
        let latency: HistogramFamily =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.0001, 2.0, 16)));
        registry.register(
            "http_request_duration_seconds",
            "Time to answer HTTP requests, by method and route",
            latency.clone(),
        );
        let open_apps = Gauge::default();
        registry.register("open_apps", "App databases open now", open_apps.clone());
        let functions = Family::<FunctionLabels, Counter>::default();
        registry.register(
            "function_invocations",
            "Function invocations, by trigger (call, http, data, schedule, queue) and outcome (ok or the error code)",
            functions.clone(),
        );
        let batches = Family::<BatchLabels, Counter>::default();
        registry.register(
            "queue_batches",
            "Batches queue consumers started, by who claimed them: the dispatcher's look (look), the send itself, for a consumer with a free place (send), or the consumer's run, after a full batch (run)",
            batches.clone(),
        );
        let queue_runs = Gauge::default();
        registry.register(
            "queue_runs",
            "Queue consumers' batches and Cloudlet's own deliveries (triggers, subscribe messages, payment checks) running now",
            queue_runs.clone(),
        );
        let thumbnails = Counter::default();
        registry.register(
            "thumbnails_made",
            "Thumbnails made (each an image decoded; a kept one is not counted again)",
            thumbnails.clone(),
        );
        let thumbnail_failures = Counter::default();
        registry.register(
            "thumbnail_failures",
            "Images a thumbnail could not be made of (each remembered: asking again decodes nothing)",
            thumbnail_failures.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            open_apps,
            functions,
            batches,
            queue_runs,
            thumbnails,
            thumbnail_failures,
        }
    }
}

impl Metrics {
    /// Counts a function invocation; both labels come from small fixed sets.
    pub fn function(&self, trigger: &'static str, outcome: &'static str) {
        self.functions
            .get_or_create(&FunctionLabels { trigger, outcome })
            .inc();
    }

    /// Counts a queue consumer's batch by who claimed it: `look`, `send` or `run`.
    pub fn queue_batch(&self, by: &'static str) {
        self.batches.get_or_create(&BatchLabels { by }).inc();
    }

    fn observe(&self, method: &str, route: &str, status: u16, seconds: f64) {
        let (method, route) = (method.to_owned(), route.to_owned());
        self.latency
            .get_or_create(&RouteLabels {
                method: method.clone(),
                route: route.clone(),
            })
            .observe(seconds);
        self.requests
            .get_or_create(&RequestLabels {
                method,
                route,
                status,
            })
            .inc();
    }
}

/// Middleware: records every request's metrics and writes the access log line.
pub async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    state
        .metrics()
        .observe(method_label(&method), &route, status, elapsed.as_secs_f64());
    // Deleting an app is not traffic of it (nor of a new app of the same name).
    let deleting = method == Method::DELETE && route == "/v1/admin/apps/{app}";
    if !deleting && let Some(app) = app_of(&route, &path) {
        state.usage().request(&app, status, elapsed);
    }
    tracing::info!(
        method = %method,
        path,
        route,
        status,
        micros = elapsed.as_micros() as u64,
        "request"
    );
    response
}

/// The standard methods by name, anything else as `other`: clients choose methods, and each
/// distinct label value would be a series that lives forever.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// `GET /metrics` in the OpenMetrics text format.
#[utoipa::path(get, path = "/metrics", tag = "server", responses((status = 200,
    description = "the metrics", content_type = "application/openmetrics-text")))]
pub async fn export(State(state): State<AppState>) -> Result<Response, ApiError> {
    let metrics = state.metrics();
    metrics.open_apps.set(state.apps().open_databases() as i64);
    metrics.queue_runs.set(state.places().running() as i64);
    // The files service counts; the counter shows its count (never less than before).
    metrics.thumbnails.inner().fetch_max(
        state.files().thumbnails_made(),
        std::sync::atomic::Ordering::Relaxed,
    );
    metrics.thumbnail_failures.inner().fetch_max(
        state.files().thumbnail_failures(),
        std::sync::atomic::Ordering::Relaxed,
    );
    let mut body = String::new();
    prometheus_client::encoding::text::encode(&mut body, &metrics.registry)
        .map_err(|e| ApiError::internal(&e))?;
    Ok((
        [(
            CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response())
}

/// The app a request was for: the path's segment where its route's template has `{app}`.
fn app_of(route: &str, path: &str) -> Option<cloudlet_core::apps::AppName> {
    let index = route.split('/').position(|s| s == "{app}")?;
    let raw = path.split('/').nth(index)?;
    let decoded = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .ok()?;
    cloudlet_core::apps::AppName::parse(&decoded).ok()
}
