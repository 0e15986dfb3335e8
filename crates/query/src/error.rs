//! Errors of the language, each with a stable kind and the byte position it concerns.

/// What went wrong; each kind has a stable code for the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Not an expression of the language.
    Syntax,
    /// A name that is not a field of the collection.
    UnknownField,
    /// Two sides that can not be compared, or an operator a type does not have.
    TypeMismatch,
    /// Longer than the limit.
    TooLong,
    /// Nested deeper than the limit.
    TooDeep,
}

impl ErrorKind {
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::Syntax => "invalid_filter",
            ErrorKind::UnknownField => "unknown_field",
            ErrorKind::TypeMismatch => "type_mismatch",
            ErrorKind::TooLong => "filter_too_long",
            ErrorKind::TooDeep => "filter_too_deep",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (at character {position})")]
pub struct QueryError {
    pub kind: ErrorKind,
    pub message: String,
    /// Byte offset in the source, counted from 0.
    pub position: usize,
}

impl QueryError {
    pub(crate) fn new(kind: ErrorKind, position: usize, message: impl Into<String>) -> Self {
        QueryError {
            kind,
            message: message.into(),
            position,
        }
    }
}
