//! What can go wrong talking to a platform. A platform's own refusal keeps its numeric code, so
//! that callers can tell a bad login code (retry with a new one) from a bad secret (fix config).

#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    /// The platform answered with an error code of its own.
    #[error("the platform refused: {code} {message}")]
    Refused { code: i64, message: String },
    /// The platform could not be reached, or did not answer in time.
    #[error("could not reach the platform: {0}")]
    Unreachable(String),
    /// The answer was not what the protocol promises.
    #[error("unexpected answer from the platform: {0}")]
    BadAnswer(String),
    /// Data that should decrypt or verify did not.
    #[error("{0}")]
    Crypto(&'static str),
    /// A payment platform refused a request: its HTTP status, its code and message.
    #[error("the payment platform refused ({status}): {code} {message}")]
    PayRefused {
        status: u16,
        code: String,
        message: String,
    },
}

impl From<reqwest::Error> for PlatformError {
    fn from(e: reqwest::Error) -> Self {
        PlatformError::Unreachable(e.without_url().to_string())
    }
}
