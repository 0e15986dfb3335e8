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
        if response
            .content_length()
            .is_some_and(|len| len > MAX_ANSWER_BYTES as u64)
        {
            return Err(PlatformError::BadAnswer("the answer is too large".into()));
        }
        let bytes = response.bytes().await?;
        if bytes.len() > MAX_ANSWER_BYTES {
            return Err(PlatformError::BadAnswer("the answer is too large".into()));
        }
        String::from_utf8(bytes.to_vec())
            .map_err(|_| PlatformError::BadAnswer("the answer is not UTF-8".into()))
    }

    /// Reads an answer as JSON whatever its content type says: WeChat's `jscode2session`
    /// famously answers JSON as `text/plain`.
    pub(crate) async fn json<T: DeserializeOwned>(
        response: reqwest::Response,
    ) -> Result<T, PlatformError> {
        let status = response.status();
        if response
            .content_length()
            .is_some_and(|len| len > MAX_ANSWER_BYTES as u64)
        {
            return Err(PlatformError::BadAnswer("the answer is too large".into()));
        }
        let bytes = response.bytes().await?;
        if bytes.len() > MAX_ANSWER_BYTES {
            return Err(PlatformError::BadAnswer("the answer is too large".into()));
        }
        serde_json::from_slice(&bytes).map_err(|e| {
            PlatformError::BadAnswer(format!("HTTP {status}, body is not the expected JSON: {e}"))
        })
    }
}
