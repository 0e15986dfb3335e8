//! How large and how slow a request may be, answered in the API's JSON shape: the request target
//! (`414 uri_too_long`), the headers (`431 headers_too_large`), and each route's body
//! (`413 payload_too_large`, refused on its `content-length` before a byte of it is read; a
//! body that pauses too long fails with `408 request_timeout`).
//!
//! hyper answers on its own, with an empty body, only what never reaches this code: a request
//! head larger than its read buffer (`431`, four times `http.max_header_bytes`), a target over
//! 65,534 bytes (`414`), more than 100 headers (`431`), and heads that are not HTTP (`400`).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::http::header::CONTENT_LENGTH;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::{ApiError, Code};

/// The body limits of the routes, from the configuration and the services' own maxima.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// JSON bodies (`http.max_body_bytes`).
    pub json: usize,
    /// A function deploy: its sources (up to 1 MiB) as JSON strings.
    pub deploy: usize,
    /// One file of a static site.
    pub site_file: usize,
    /// The stretch over which a body must average [`MIN_BODY_RATE`]
    /// (`http.body_read_timeout_secs`).
    pub rate_window: Duration,
}

/// The target and head limits checked before routing.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    pub max_uri_bytes: usize,
    pub max_header_bytes: usize,
}

/// Middleware: refuses a target or headers over their limits.
pub async fn check_head(limits: HeadLimits, request: Request, next: Next) -> Response {
    let target = request
        .uri()
        .path_and_query()
        .map_or(0, |p| p.as_str().len());
    if target > limits.max_uri_bytes {
        return ApiError::new(
            Code::UriTooLong,
            format!(
                "the request target is {target} bytes; the most is {} (http.max_uri_bytes)",
                limits.max_uri_bytes
            ),
        )
        .into_response();
    }
    let headers: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if headers > limits.max_header_bytes {
        return ApiError::new(
            Code::HeadersTooLarge,
            format!(
                "the request headers are {headers} bytes; the most is {} (http.max_header_bytes)",
                limits.max_header_bytes
            ),
        )
        .into_response();
    }
    next.run(request).await
}

/// Middleware for a group of routes whose bodies may be up to `bytes`: a declared length over it
/// is refused at once, before the body is read (the client need not send it), and a body that
/// grows past it while it is read fails its extractor with the same code.
pub async fn limit_body(bytes: usize, window: Duration, request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|length| length > bytes as u64) {
        return too_large(bytes).into_response();
    }
    let request = request.map(|body| {
        let paced = Paced {
            inner: body,
            window,
            since: Instant::now(),
            received: 0,
        };
        axum::body::Body::new(http_body_util::Limited::new(paced, bytes))
    });
    next.run(request).await
}

/// Bytes a second a body must average over every stretch of `http.body_read_timeout_secs` or
/// more: lenient enough for an upload over a poor mobile network, and enough to end a body sent
/// a byte at a time, which the timeout between chunks alone would let run for ever (and one sent
/// fast up to a point and then a byte at a time: each stretch is judged on its own).
pub const MIN_BODY_RATE: u64 = 1024;

/// A body that fails with [`TooSlow`] once a stretch of at least `window` averaged under
/// [`MIN_BODY_RATE`]. Stretches are measured from one chunk to another: a pause longer than the
/// window is the pause timeout's to end.
struct Paced<B> {
    inner: B,
    window: Duration,
    /// When the current stretch began.
    since: Instant,
    /// Bytes received in it.
    received: u64,
}

/// A request body that arrived too slowly.
#[derive(Debug, thiserror::Error)]
#[error("the request body arrived slower than {MIN_BODY_RATE} bytes a second")]
pub struct TooSlow;

impl<B> http_body::Body for Paced<B>
where
    B: http_body::Body<Data = axum::body::Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = axum::body::Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.received += data.len() as u64;
            let stretch = self.since.elapsed();
            if stretch >= self.window {
                let expected = u128::from(MIN_BODY_RATE) * stretch.as_millis() / 1000;
                if u128::from(self.received) < expected {
                    return Poll::Ready(Some(Err(Box::new(TooSlow))));
                }
                self.since = Instant::now();
                self.received = 0;
            }
        }
        polled.map(|frame| frame.map(|result| result.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// `routes` with their bodies limited to `bytes` (see [`limit_body`]).
pub fn with_body_limit(
    routes: crate::openapi::Routes,
    limits: &BodyLimits,
    bytes: usize,
) -> crate::openapi::Routes {
    let window = limits.rate_window;
    routes.route_layer(axum::middleware::from_fn(move |request, next| {
        limit_body(bytes, window, request, next)
    }))
}

/// What reading a body failed on, as the API says it: too large, or paused too long.
pub fn body_failure(error: &(dyn std::error::Error + 'static)) -> Option<ApiError> {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if error.is::<http_body_util::LengthLimitError>() {
            return Some(ApiError::new(
                Code::PayloadTooLarge,
                "the body is larger than this route accepts",
            ));
        }
        if error.is::<tower_http::timeout::TimeoutError>() {
            return Some(ApiError::new(
                Code::RequestTimeout,
                "the request body paused too long (http.body_read_timeout_secs)",
            ));
        }
        if error.is::<TooSlow>() {
            return Some(ApiError::new(Code::RequestTimeout, TooSlow.to_string()));
        }
        cause = error.source();
    }
    None
}

pub fn too_large(bytes: usize) -> ApiError {
    ApiError::new(
        Code::PayloadTooLarge,
        format!("the body is larger than this route accepts ({bytes} bytes)"),
    )
}
