//! The HTTP client every platform client shares: rustls, bounded time, bounded answers.

use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::PlatformError;

/// The largest answer read from a platform.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// A shared HTTP client. Cheap to clone.
#[derive(Clone, Debug)]
pub struct PlatformHttp {
    client: reqwest::Client,
}

impl PlatformHttp {
    pub fn new(timeout: Duration) -> Result<Self, PlatformError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("cloudlet/", env!("CARGO_PKG_VERSION")))
            // The platforms do not redirect: one that seems to would send a signed body elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(PlatformHttp { client })
    }

    pub(crate) fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Reads an answer as text, refusing one over the size limit.
    pub(crate) async fn text(response: reqwest::Response) -> Result<String, PlatformError> {
        let bytes = Self::bounded(response).await?;
        String::from_utf8(bytes)
            .map_err(|_| PlatformError::BadAnswer("the answer is not UTF-8".into()))
    }

    /// The answer's body, read a chunk at a time and given up on as soon as it passes
    /// [`MAX_ANSWER_BYTES`], whatever its `content-length` said (a chunked one says nothing).
    async fn bounded(response: reqwest::Response) -> Result<Vec<u8>, PlatformError> {
        Self::bounded_to(response, MAX_ANSWER_BYTES).await
    }

    /// The answer's body, up to `limit` bytes.
    pub(crate) async fn bounded_to(
        mut response: reqwest::Response,
        limit: usize,
    ) -> Result<Vec<u8>, PlatformError> {
        let too_large = || PlatformError::BadAnswer("the answer is too large".into());
        if response
            .content_length()
            .is_some_and(|len| len > limit as u64)
        {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            if body.len() + chunk.len() > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// Reads an answer as JSON whatever its content type says: WeChat's `jscode2session`
    /// famously answers JSON as `text/plain`.
    pub(crate) async fn json<T: DeserializeOwned>(
        response: reqwest::Response,
    ) -> Result<T, PlatformError> {
        let status = response.status();
        let bytes = Self::bounded(response).await?;
        serde_json::from_slice(&bytes).map_err(|e| {
            PlatformError::BadAnswer(format!("HTTP {status}, body is not the expected JSON: {e}"))
        })
    }
}
