//! The HTTP boundary's errors: one table of stable codes ([`Code`]), the JSON body every error
//! has, and the mapping of each domain's error enum onto it. Internal causes are logged with the
//! request id and never sent.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cloudlet_core::access::AccessError;
use cloudlet_core::apps::AppError;
use cloudlet_core::auth::AuthError;
use cloudlet_core::data::DataError;
use cloudlet_core::functions::FunctionError;
use cloudlet_query::ErrorKind;
use cloudlet_store::StoreError;
use serde_json::json;

use crate::request_id;

/// Every error code the API can answer with. Codes are part of the API: never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    RouteNotFound,
    MethodNotAllowed,
    InvalidJson,
    InvalidBody,
    InvalidQuery,
    InvalidPath,
    UnsupportedMediaType,
    PayloadTooLarge,
    MissingCredentials,
    InvalidCredentials,
    Forbidden,
    InvalidAppName,
    AppAlreadyExists,
    AppNotFound,
    UnknownProvider,
    ProviderNotEnabled,
    InvalidProviderConfig,
    InvalidLoginRequest,
    InvalidLoginCode,
    ProviderMisconfigured,
    PlatformUnavailable,
    InvalidEmail,
    WeakPassword,
    EmailTaken,
    InvalidLogin,
    InvalidToken,
    TokenAppMismatch,
    TokenExpired,
    SessionRevoked,
    InvalidSession,
    SessionReused,
    UserNotFound,
    InvalidProfile,
    InvalidPhoneCode,
    LoginBlocked,
    TooManyRequests,
    CollectionNotFound,
    CollectionExists,
    DestructiveChange,
    InvalidCollection,
    RecordNotFound,
    InvalidFilter,
    UnknownField,
    TypeMismatch,
    FilterTooLong,
    FilterTooDeep,
    InvalidSort,
    InvalidCursor,
    ReadOnlyField,
    MissingField,
    InvalidFieldValue,
    UniqueViolation,
    RecordTooLarge,
    InvalidBatch,
    InvalidFields,
    InvalidExpand,
    FunctionNotFound,
    VersionNotFound,
    InvalidFunction,
    FunctionSyntaxError,
    FunctionError,
    FunctionTimeout,
    FunctionMemoryLimit,
    FunctionResultTooLarge,
    FunctionOverloaded,
    InvalidEnv,
    InvalidSitePath,
    SiteFileNotFound,
    NotReady,
    InternalError,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::RouteNotFound => "route_not_found",
            Code::MethodNotAllowed => "method_not_allowed",
            Code::InvalidJson => "invalid_json",
            Code::InvalidBody => "invalid_body",
            Code::InvalidQuery => "invalid_query",
            Code::InvalidPath => "invalid_path",
            Code::UnsupportedMediaType => "unsupported_media_type",
            Code::PayloadTooLarge => "payload_too_large",
            Code::MissingCredentials => "missing_credentials",
            Code::InvalidCredentials => "invalid_credentials",
            Code::Forbidden => "forbidden",
            Code::InvalidAppName => "invalid_app_name",
            Code::AppAlreadyExists => "app_already_exists",
            Code::AppNotFound => "app_not_found",
            Code::UnknownProvider => "unknown_provider",
            Code::ProviderNotEnabled => "provider_not_enabled",
            Code::InvalidProviderConfig => "invalid_provider_config",
            Code::InvalidLoginRequest => "invalid_login_request",
            Code::InvalidLoginCode => "invalid_login_code",
            Code::ProviderMisconfigured => "provider_misconfigured",
            Code::PlatformUnavailable => "platform_unavailable",
            Code::InvalidEmail => "invalid_email",
            Code::WeakPassword => "weak_password",
            Code::EmailTaken => "email_taken",
            Code::InvalidLogin => "invalid_login",
            Code::InvalidToken => "invalid_token",
            Code::TokenAppMismatch => "token_app_mismatch",
            Code::TokenExpired => "token_expired",
            Code::SessionRevoked => "session_revoked",
            Code::InvalidSession => "invalid_session",
            Code::SessionReused => "session_reused",
            Code::UserNotFound => "user_not_found",
            Code::InvalidProfile => "invalid_profile",
            Code::InvalidPhoneCode => "invalid_phone_code",
            Code::LoginBlocked => "login_blocked",
            Code::TooManyRequests => "too_many_requests",
            Code::CollectionNotFound => "collection_not_found",
            Code::CollectionExists => "collection_exists",
            Code::DestructiveChange => "destructive_change",
            Code::InvalidCollection => "invalid_collection",
            Code::RecordNotFound => "record_not_found",
            Code::InvalidFilter => "invalid_filter",
            Code::UnknownField => "unknown_field",
            Code::TypeMismatch => "type_mismatch",
            Code::FilterTooLong => "filter_too_long",
            Code::FilterTooDeep => "filter_too_deep",
            Code::InvalidSort => "invalid_sort",
            Code::InvalidCursor => "invalid_cursor",
            Code::ReadOnlyField => "read_only_field",
            Code::MissingField => "missing_field",
            Code::InvalidFieldValue => "invalid_field_value",
            Code::UniqueViolation => "unique_violation",
            Code::RecordTooLarge => "record_too_large",
            Code::InvalidBatch => "invalid_batch",
            Code::InvalidFields => "invalid_fields",
            Code::InvalidExpand => "invalid_expand",
            Code::FunctionNotFound => "function_not_found",
            Code::VersionNotFound => "version_not_found",
            Code::InvalidFunction => "invalid_function",
            Code::FunctionSyntaxError => "function_syntax_error",
            Code::FunctionError => "function_error",
            Code::FunctionTimeout => "function_timeout",
            Code::FunctionMemoryLimit => "function_memory_limit",
            Code::FunctionResultTooLarge => "function_result_too_large",
            Code::FunctionOverloaded => "function_overloaded",
            Code::InvalidEnv => "invalid_env",
            Code::InvalidSitePath => "invalid_site_path",
            Code::SiteFileNotFound => "site_file_not_found",
            Code::NotReady => "not_ready",
            Code::InternalError => "internal_error",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            Code::RouteNotFound | Code::AppNotFound | Code::UserNotFound => StatusCode::NOT_FOUND,
            Code::UnknownProvider
            | Code::InvalidProviderConfig
            | Code::InvalidLoginRequest
            | Code::InvalidEmail
            | Code::WeakPassword
            | Code::InvalidProfile
            | Code::InvalidPhoneCode => StatusCode::BAD_REQUEST,
            Code::ProviderNotEnabled | Code::LoginBlocked => StatusCode::FORBIDDEN,
            Code::InvalidLoginCode
            | Code::InvalidLogin
            | Code::InvalidToken
            | Code::TokenAppMismatch
            | Code::TokenExpired
            | Code::SessionRevoked
            | Code::InvalidSession
            | Code::SessionReused => StatusCode::UNAUTHORIZED,
            Code::ProviderMisconfigured | Code::PlatformUnavailable => StatusCode::BAD_GATEWAY,
            Code::EmailTaken => StatusCode::CONFLICT,
            Code::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            Code::FunctionNotFound => StatusCode::NOT_FOUND,
            Code::VersionNotFound => StatusCode::NOT_FOUND,
            Code::InvalidFunction => StatusCode::BAD_REQUEST,
            Code::FunctionSyntaxError => StatusCode::BAD_REQUEST,
            Code::FunctionError => StatusCode::UNPROCESSABLE_ENTITY,
            Code::FunctionTimeout => StatusCode::GATEWAY_TIMEOUT,
            Code::FunctionMemoryLimit => StatusCode::UNPROCESSABLE_ENTITY,
            Code::FunctionResultTooLarge => StatusCode::UNPROCESSABLE_ENTITY,
            Code::FunctionOverloaded => StatusCode::TOO_MANY_REQUESTS,
            Code::InvalidEnv => StatusCode::BAD_REQUEST,
            Code::InvalidSitePath => StatusCode::BAD_REQUEST,
            Code::SiteFileNotFound => StatusCode::NOT_FOUND,
            Code::CollectionNotFound => StatusCode::NOT_FOUND,
            Code::CollectionExists => StatusCode::CONFLICT,
            Code::DestructiveChange => StatusCode::CONFLICT,
            Code::InvalidCollection => StatusCode::BAD_REQUEST,
            Code::RecordNotFound => StatusCode::NOT_FOUND,
            Code::InvalidFilter => StatusCode::BAD_REQUEST,
            Code::UnknownField => StatusCode::BAD_REQUEST,
            Code::TypeMismatch => StatusCode::BAD_REQUEST,
            Code::FilterTooLong => StatusCode::BAD_REQUEST,
            Code::FilterTooDeep => StatusCode::BAD_REQUEST,
            Code::InvalidSort => StatusCode::BAD_REQUEST,
            Code::InvalidCursor => StatusCode::BAD_REQUEST,
            Code::ReadOnlyField => StatusCode::BAD_REQUEST,
            Code::MissingField => StatusCode::BAD_REQUEST,
            Code::InvalidFieldValue => StatusCode::BAD_REQUEST,
            Code::UniqueViolation => StatusCode::CONFLICT,
            Code::RecordTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Code::InvalidBatch | Code::InvalidFields | Code::InvalidExpand => {
                StatusCode::BAD_REQUEST
            }
            Code::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Code::InvalidJson | Code::InvalidQuery | Code::InvalidPath | Code::InvalidAppName => {
                StatusCode::BAD_REQUEST
            }
            Code::InvalidBody => StatusCode::UNPROCESSABLE_ENTITY,
            Code::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Code::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Code::MissingCredentials | Code::InvalidCredentials => StatusCode::UNAUTHORIZED,
            Code::Forbidden => StatusCode::FORBIDDEN,
            Code::AppAlreadyExists => StatusCode::CONFLICT,
            Code::NotReady => StatusCode::SERVICE_UNAVAILABLE,
            Code::InternalError => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// An error as the client sees it: a code and a message that is safe to show.
#[derive(Debug)]
pub struct ApiError {
    pub code: Code,
    pub message: String,
}

impl ApiError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
        }
    }

    /// Logs `cause` with the request id and answers with a generic message.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        ApiError::new(
            Code::InternalError,
            "internal error; the server log has details",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "error": {
                "code": self.code.as_str(),
                "message": self.message,
                "request_id": request_id::current(),
            }
        });
        (self.code.status(), Json(body)).into_response()
    }
}

impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        match &e {
            AppError::InvalidName { .. } => ApiError::new(Code::InvalidAppName, e.to_string()),
            AppError::AlreadyExists(_) => ApiError::new(Code::AppAlreadyExists, e.to_string()),
            AppError::NotFound(_) => ApiError::new(Code::AppNotFound, e.to_string()),
            AppError::InvalidPageSize(_) => ApiError::new(Code::InvalidQuery, e.to_string()),
            AppError::Store(cause) => ApiError::internal(cause),
        }
    }
}

impl From<AccessError> for ApiError {
    fn from(e: AccessError) -> Self {
        match &e {
            AccessError::MissingCredentials => {
                ApiError::new(Code::MissingCredentials, e.to_string())
            }
            AccessError::InvalidCredentials => {
                ApiError::new(Code::InvalidCredentials, e.to_string())
            }
            AccessError::Forbidden => ApiError::new(Code::Forbidden, e.to_string()),
            AccessError::WeakAdminToken | AccessError::Store(_) => ApiError::internal(&e),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        let code = match &e {
            AuthError::UnknownProvider(_) => Code::UnknownProvider,
            AuthError::ProviderNotEnabled(_) => Code::ProviderNotEnabled,
            AuthError::InvalidProviderConfig(_) => Code::InvalidProviderConfig,
            AuthError::InvalidLoginRequest(_) => Code::InvalidLoginRequest,
            AuthError::InvalidLoginCode => Code::InvalidLoginCode,
            AuthError::ProviderMisconfigured(_) => Code::ProviderMisconfigured,
            AuthError::PlatformUnavailable(cause) => {
                tracing::warn!(cause = %cause, "platform call failed");
                return ApiError::new(
                    Code::PlatformUnavailable,
                    "the platform did not answer as expected; try again",
                );
            }
            AuthError::InvalidEmail => Code::InvalidEmail,
            AuthError::WeakPassword => Code::WeakPassword,
            AuthError::EmailTaken => Code::EmailTaken,
            AuthError::InvalidLogin => Code::InvalidLogin,
            AuthError::MissingToken => Code::MissingCredentials,
            AuthError::InvalidToken => Code::InvalidToken,
            AuthError::TokenForOtherApp => Code::TokenAppMismatch,
            AuthError::TokenExpired => Code::TokenExpired,
            AuthError::SessionRevoked => Code::SessionRevoked,
            AuthError::InvalidSession => Code::InvalidSession,
            AuthError::SessionReused => Code::SessionReused,
            AuthError::UserNotFound => Code::UserNotFound,
            AuthError::InvalidProfile(_) => Code::InvalidProfile,
            AuthError::InvalidPhoneCode => Code::InvalidPhoneCode,
            AuthError::LoginBlocked => Code::LoginBlocked,
            AuthError::PlatformRateLimited => Code::TooManyRequests,
            AuthError::Store(StoreError::NoSuchTenant) => {
                return ApiError::new(Code::AppNotFound, "no such app");
            }
            AuthError::Store(_) | AuthError::Sealing => return ApiError::internal(&e),
        };
        ApiError::new(code, e.to_string())
    }
}

impl From<DataError> for ApiError {
    fn from(e: DataError) -> Self {
        // A failed batch answers with its failing operation's code, and says which it was.
        let e = match e {
            DataError::InBatch { index, source } => {
                let inner = ApiError::from(*source);
                return ApiError::new(inner.code, format!("operation {index}: {}", inner.message));
            }
            other => other,
        };
        let code = match &e {
            DataError::CollectionNotFound(_) => Code::CollectionNotFound,
            DataError::CollectionExists(_) => Code::CollectionExists,
            DataError::InvalidCollection(_) => Code::InvalidCollection,
            DataError::DestructiveChange(_) => Code::DestructiveChange,
            DataError::RecordNotFound => Code::RecordNotFound,
            DataError::Forbidden(_) => Code::Forbidden,
            DataError::InvalidFilter(q) => match q.kind {
                ErrorKind::Syntax => Code::InvalidFilter,
                ErrorKind::UnknownField => Code::UnknownField,
                ErrorKind::TypeMismatch => Code::TypeMismatch,
                ErrorKind::TooLong => Code::FilterTooLong,
                ErrorKind::TooDeep => Code::FilterTooDeep,
            },
            DataError::InvalidSort(_) => Code::InvalidSort,
            DataError::InvalidCursor => Code::InvalidCursor,
            DataError::InvalidPage => Code::InvalidQuery,
            DataError::UnknownField(_) => Code::UnknownField,
            DataError::ReadOnlyField(_) => Code::ReadOnlyField,
            DataError::MissingField(_) => Code::MissingField,
            DataError::InvalidValue { .. } => Code::InvalidFieldValue,
            DataError::UniqueViolation => Code::UniqueViolation,
            DataError::RecordTooLarge => Code::RecordTooLarge,
            DataError::InvalidBatch(_) => Code::InvalidBatch,
            DataError::InvalidFields(_) => Code::InvalidFields,
            DataError::InvalidExpand(_) => Code::InvalidExpand,
            DataError::InBatch { .. } => unreachable!("taken apart above"),
            DataError::Store(StoreError::NoSuchTenant) => {
                return ApiError::new(Code::AppNotFound, "no such app");
            }
            DataError::Store(_) => return ApiError::internal(&e),
        };
        ApiError::new(code, e.to_string())
    }
}

impl From<FunctionError> for ApiError {
    fn from(e: FunctionError) -> Self {
        let code = match &e {
            FunctionError::NotFound(_) => Code::FunctionNotFound,
            FunctionError::VersionNotFound(_) => Code::VersionNotFound,
            FunctionError::Invalid(_) => Code::InvalidFunction,
            FunctionError::Syntax(failure) => {
                return ApiError::new(
                    Code::FunctionSyntaxError,
                    format!(
                        "{}:{}:{}: {}",
                        failure.file, failure.line, failure.column, failure.message
                    ),
                );
            }
            FunctionError::Unauthenticated => Code::MissingCredentials,
            FunctionError::Failed(_) => Code::FunctionError,
            FunctionError::Timeout => Code::FunctionTimeout,
            FunctionError::MemoryLimit => Code::FunctionMemoryLimit,
            FunctionError::ResultTooLarge(_) => Code::FunctionResultTooLarge,
            FunctionError::Overloaded => Code::FunctionOverloaded,
            FunctionError::InvalidEnv(_) => Code::InvalidEnv,
            FunctionError::Store(StoreError::NoSuchTenant) => {
                return ApiError::new(Code::AppNotFound, "no such app");
            }
            FunctionError::Engine(_) | FunctionError::Store(_) => return ApiError::internal(&e),
        };
        ApiError::new(code, e.to_string())
    }
}

/// Answers requests no route matches.
pub async fn route_not_found() -> ApiError {
    ApiError::new(Code::RouteNotFound, "no such route; see docs/api.md")
}

/// Answers requests whose route exists but not with this method.
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        Code::MethodNotAllowed,
        "this route does not take that method",
    )
}
