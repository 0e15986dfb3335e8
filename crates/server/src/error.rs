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

/// Writes [`Code`] from one table: each code once, with its status and when it is answered.
/// `docs/api.md` lists the same table (a test compares them), and the OpenAPI document's error
/// schema enumerates [`Code::ALL`].
macro_rules! codes {
    ($($variant:ident = $code:literal, $status:literal, $when:literal;)*) => {
        /// Every error code the API can answer with. Codes are part of the API: never rename one.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Code {
            $($variant,)*
        }

        impl Code {
            /// Every code, in the table's order.
            pub const ALL: &[Code] = &[$(Code::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Code::$variant => $code,)*
                }
            }

            /// The HTTP status that goes with the code.
            pub fn status(self) -> StatusCode {
                let status: u16 = match self {
                    $(Code::$variant => $status,)*
                };
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            }

            /// When it is answered, as `docs/api.md` says.
            pub fn when(self) -> &'static str {
                match self {
                    $(Code::$variant => $when,)*
                }
            }
        }
    };
}

codes! {
    // The request itself.
    RouteNotFound = "route_not_found", 404, "no such route";
    MethodNotAllowed = "method_not_allowed", 405, "the route exists, not with this method";
    InvalidJson = "invalid_json", 400, "the body is not valid JSON";
    InvalidBody = "invalid_body", 422, "valid JSON of the wrong shape: not an object, a missing or unknown field, a wrong type";
    InvalidQuery = "invalid_query", 400, "a query parameter is unknown, malformed or out of range";
    UpgradeRequired = "upgrade_required", 426, "the route is a WebSocket: open it with a WebSocket handshake";
    InvalidPath = "invalid_path", 400, "a path segment does not decode (for example `%FF`)";
    UnsupportedMediaType = "unsupported_media_type", 415, "a body without `content-type: application/json`";
    PayloadTooLarge = "payload_too_large", 413, "the body is over the route's limit: said by its `content-length` (refused before it is read) or found while reading";
    UriTooLong = "uri_too_long", 414, "the request target is over `http.max_uri_bytes`";
    HeadersTooLarge = "headers_too_large", 431, "the request headers are over `http.max_header_bytes`";
    RequestTimeout = "request_timeout", 408, "the request body paused longer than `http.body_read_timeout_secs`, or averaged under 1 KiB/s over a stretch that long";
    ServerBusy = "server_busy", 503, "the server is at its connection limit, holds as many bytes of site files in answers as it may (256 MiB, 64 MiB of one app's), or checks as many passwords at once as it may (`retry-after` says when to try again)";
    // Who is calling.
    MissingCredentials = "missing_credentials", 401, "no `Authorization` header where the route needs one";
    InvalidCredentials = "invalid_credentials", 401, "not a bearer token, or no such token or key";
    Forbidden = "forbidden", 403, "a valid key or token used on another app, or on a route it may not use; an app's key setting a platform `base_url` other than the platform's own";
    // Apps.
    InvalidAppName = "invalid_app_name", 400, "a new app's name breaks the naming rule";
    AppAlreadyExists = "app_already_exists", 409, "the app name is taken";
    AppNotFound = "app_not_found", 404, "no such app (also for names that can not exist)";
    // Login and sessions.
    UnknownProvider = "unknown_provider", 400, "the provider id is not one Cloudlet knows";
    ProviderNotEnabled = "provider_not_enabled", 403, "the provider is not configured or turned off for this app";
    InvalidProviderConfig = "invalid_provider_config", 400, "a provider configuration is incomplete or malformed";
    InvalidLoginRequest = "invalid_login_request", 400, "the login body lacks what the provider needs";
    InvalidLoginCode = "invalid_login_code", 401, "the platform refused the code: made up, expired or used";
    ProviderMisconfigured = "provider_misconfigured", 502, "the platform refused the app's appid, secret or signature";
    PlatformUnavailable = "platform_unavailable", 502, "the platform did not answer, or not as its protocol says";
    InvalidEmail = "invalid_email", 400, "not an email address: one `@`, no control characters, at most 254 bytes";
    WeakPassword = "weak_password", 400, "a password too short, too common, too guessable or equal to the email";
    EmailTaken = "email_taken", 409, "sign-up with an email that has an account";
    InvalidLogin = "invalid_login", 401, "wrong email or password";
    InvalidToken = "invalid_token", 401, "a malformed or forged access token";
    TokenAppMismatch = "token_app_mismatch", 401, "an access token of another app";
    TokenExpired = "token_expired", 401, "the access token expired: refresh it";
    SessionRevoked = "session_revoked", 401, "the token's session was logged out, revoked or its user deleted";
    InvalidSession = "invalid_session", 401, "refresh with an unknown, expired or revoked session id";
    SessionReused = "session_reused", 401, "refresh with a spent session id; the session is now revoked";
    UserNotFound = "user_not_found", 404, "no such user";
    InvalidProfile = "invalid_profile", 400, "a profile change over 16 KiB or with a bad field name";
    InvalidPhoneCode = "invalid_phone_code", 400, "the phone-number code is made up, expired or used";
    LoginBlocked = "login_blocked", 403, "WeChat refuses this user's login (a high-risk account)";
    TooManyRequests = "too_many_requests", 429, "over a rate limit (`retry-after` says when to try again)";
    // Data.
    CollectionNotFound = "collection_not_found", 404, "no such collection";
    CollectionExists = "collection_exists", 409, "a collection of that name exists";
    DestructiveChange = "destructive_change", 409, "a collection change would lose data and was not forced";
    InvalidCollection = "invalid_collection", 400, "a collection definition breaks a rule";
    RecordNotFound = "record_not_found", 404, "no such record, or the caller may not see it";
    InvalidFilter = "invalid_filter", 400, "a filter does not parse";
    UnknownField = "unknown_field", 400, "a field the collection does not have";
    TypeMismatch = "type_mismatch", 400, "a filter compares a field with a value of another type";
    FilterTooLong = "filter_too_long", 400, "a filter over its length limit (bytes, `in` items, comparisons or `~` comparisons)";
    FilterTooDeep = "filter_too_deep", 400, "a filter nested too deep";
    InvalidSort = "invalid_sort", 400, "a sort on an unknown field or in a bad form";
    InvalidCursor = "invalid_cursor", 400, "a cursor that is not one this listing gave";
    ReadOnlyField = "read_only_field", 400, "a write to `id`, `owner`, `created_at` or `updated_at`";
    MissingField = "missing_field", 400, "a required field is missing or null";
    InvalidFieldValue = "invalid_field_value", 400, "a value breaks its field's type or constraints";
    UniqueViolation = "unique_violation", 409, "a value a unique field already has";
    RecordTooLarge = "record_too_large", 413, "a body over 256 KiB of JSON, or an update that would grow its record past 512 KiB stored";
    InvalidBatch = "invalid_batch", 400, "a batch that is empty or over 100 operations";
    InvalidFields = "invalid_fields", 400, "a `fields` projection names an unknown field, or more than 32 paths";
    InvalidExpand = "invalid_expand", 400, "an `expand` of a field that is not a relation, too deep, of more than 32 paths, or whose page would read and copy more than 16 MiB of records";
    // Functions.
    FunctionNotFound = "function_not_found", 404, "no such function (or it was deleted)";
    FunctionNotCallable = "function_not_callable", 403, "an end user called a function that triggers or schedules run, which was not deployed `callable`";
    VersionNotFound = "version_not_found", 404, "rollback to a version that does not exist";
    InvalidFunction = "invalid_function", 400, "a deploy breaks a rule of functions";
    FunctionSyntaxError = "function_syntax_error", 400, "a deploy does not compile";
    FunctionError = "function_error", 422, "the function threw or rejected; the message is its error's";
    FunctionTimeout = "function_timeout", 504, "it ran past its wall time";
    FunctionMemoryLimit = "function_memory_limit", 422, "it ran out of memory";
    FunctionResultTooLarge = "function_result_too_large", 422, "its JSON result is over the limit";
    FunctionInvalidResponse = "function_invalid_response", 502, "an HTTP function answered a status outside 200 to 599, a bad header or a bad base64 body";
    FunctionOverloaded = "function_overloaded", 429, "the app (or the function) has too many invocations in already";
    InvalidEnv = "invalid_env", 400, "an environment name or value breaks a rule";
    // Inside functions: the `code` of a host call's error (never an HTTP answer of its own).
    InvalidHostCall = "invalid_host_call", 400, "inside functions: a call of a capability the server does not have, or with arguments it does not take";
    HostCallTooLarge = "host_call_too_large", 413, "inside functions: a host call's arguments or answer over 16 MiB";
    TooManyHostCalls = "too_many_host_calls", 429, "inside functions: 16 host calls, or 16 MiB of them, already wait for answers";
    FetchRefused = "fetch_refused", 403, "inside functions: `fetch` to a non-public address or a scheme other than http(s)";
    FetchFailed = "fetch_failed", 502, "inside functions: `fetch` could not connect, timed out or got more than 10 MiB";
    Cancelled = "cancelled", 503, "inside functions: the caller went away before the host call was answered";
    // Queues.
    QueueNotFound = "queue_not_found", 404, "no such queue (also for names that can not be one)";
    InvalidQueue = "invalid_queue", 400, "a queue's name or settings break a rule";
    InvalidMessage = "invalid_message", 400, "a send, claim or settle breaks a rule: 1 to 100 messages, a delay of 0 to 7 days, a key of 1 to 256 bytes, a visibility timeout of 1 s to 12 h; or a subscribe message, or a report of a user's answers, breaks one (`docs/messages.md`)";
    MessageTooLarge = "message_too_large", 413, "a message payload over 256 KiB of JSON";
    StaleLease = "stale_lease", 409, "acknowledging, extending or failing with a lease that is not the message's current one: the claim expired and the message went to another consumer, or it was settled already";
    // Subscribe messages.
    NoPlatformIdentity = "no_platform_identity", 409, "the user has never logged in to the mini program of the login provider named (default `wechat`; a payment's merchant names its own, `alipay` for Alipay), so has no id there";
    NoSubscription = "no_subscription", 409, "the recipient has no grant left for the template: they have not allowed it in `wx.requestSubscribeMessage`, or every message they allowed was sent";
    // Payments.
    UnknownPayProvider = "unknown_pay_provider", 404, "a payment provider Cloudlet does not support (`wechat` and `alipay` are)";
    PayNotConfigured = "pay_not_configured", 404, "the app has no merchant configuration for the provider (`PUT /v1/admin/apps/{app}/pay/merchants/{provider}`)";
    InvalidMerchant = "invalid_merchant", 400, "a merchant configuration that breaks a rule: mchid, serial, keys that do not parse, an APIv3 key that is not 32 characters, a login provider that is not WeChat's";
    InvalidOrder = "invalid_order", 400, "an order or refund that breaks a rule (amount 1 to 100000000 fen, description 1 to 127 characters, order number, metadata, key), or a `before` function's answer that is not a price";
    ClientOrdersDisabled = "client_orders_disabled", 403, "a client asked for an order, and the app has no function with the trigger `{\"pay\": [\"before\"]}` to price it";
    OrderNotFound = "order_not_found", 404, "no such order (also another user's, and a notification about an order the app does not have)";
    RefundNotFound = "refund_not_found", 404, "no such refund (also a notification about one)";
    CallbackNotFound = "callback_not_found", 404, "no kept payment notification with that id";
    ReportNotFound = "report_not_found", 404, "no reconciliation report of that provider and day";
    InvalidBillDate = "invalid_bill_date", 400, "not a bill date: `YYYY-MM-DD`, a day that exists, at most 89 days ago (the platforms keep three months of bills)";
    BillNotReady = "bill_not_ready", 409, "the day's trade bill is not there yet: it is made after 10:00 the next day (China time), and a day still without one 3 days after it began is compared as a day without trades";
    OrderKeyReused = "order_key_reused", 409, "an order's idempotency key used again for another amount, user or provider";
    TradeNoTaken = "trade_no_taken", 409, "an `out_trade_no` another order of the app has";
    OrderState = "order_state", 409, "the order's state does not allow it: closing a paid order, refunding an unpaid one";
    RefundExceeds = "refund_exceeds", 409, "the refund with those already made or pending would pass what was paid";
    RefundReused = "refund_reused", 409, "an `out_refund_no` used before for another order or amount";
    NotificationUnverified = "notification_unverified", 401, "a payment notification whose signature, time (300 s), key serial or encryption does not verify, or a signature probe: nothing of it was read";
    NotificationMismatch = "notification_mismatch", 400, "a verified payment notification that does not match its order (merchant, app id, amount, order number): nothing changed";
    PaymentRefused = "payment_refused", 502, "the payment platform refused the request; the message has its code (for a refund, its amount is free again)";
    PaymentUnavailable = "payment_unavailable", 503, "the payment platform could not be reached or did not answer in time; try again (`retry-after`)";
    PaymentsUnsettled = "payments_unsettled", 409, "deleting an app with orders that may still be paid or refunds pending: wait until they settle or close them";
    // The console.
    ConsoleLoginRequired = "console_login_required", 401, "a console request without a live session: log in to the console";
    CsrfFailed = "csrf_failed", 403, "a console write without its session's `x-cloudlet-csrf` token, or a console request from another origin";
    AlreadySetUp = "already_set_up", 409, "the console's first owner exists: log in instead";
    PersonNotFound = "person_not_found", 404, "no such person in the console";
    PersonExists = "person_exists", 409, "a console person with that email exists";
    LastOwner = "last_owner", 409, "the change would leave the instance without a console owner";
    InvalidRole = "invalid_role", 400, "not a role: `owner` or `member` for the instance, `owner`, `developer` or `viewer` for an app";
    UnknownHost = "unknown_host", 421, "the console was asked for under a host name it does not serve: an IP address, `localhost` or a name of `[console] hosts`";
    InvalidPerson = "invalid_person", 400, "a person's name is empty, over 100 characters or holds control characters, or the instance has 1,000 people";
    // Sites.
    InvalidSitePath = "invalid_site_path", 400, "a site file path that breaks the path rule";
    SiteFull = "site_full", 403, "the site would hold more files or bytes than it may (`sites.max_files`, `sites.max_bytes`)";
    SiteFileNotFound = "site_file_not_found", 404, "no such file in the site";
    // Files.
    BucketNotFound = "bucket_not_found", 404, "no such bucket (also for names that can not be one)";
    InvalidBucket = "invalid_bucket", 400, "a bucket's name or settings break a rule";
    FileNotFound = "file_not_found", 404, "no such file, or the caller may not see it (the two answer alike)";
    FileTooLarge = "file_too_large", 413, "a file over its bucket's `max_bytes`: said by the request's `content-length` (refused before the body) or found while storing it";
    FileTypeNotAllowed = "file_type_not_allowed", 415, "the file's bytes are of a type the bucket does not take (the type is sniffed from the bytes, never taken from the name)";
    EmptyFile = "empty_file", 400, "a file of zero bytes";
    InvalidFileName = "invalid_file_name", 400, "a file name with control characters or NUL, or over 255 bytes";
    InvalidUpload = "invalid_upload", 400, "an upload's form is malformed: no boundary, no file part, a second file, text fields over 4 KiB or after the file, metadata that is not a JSON object";
    IncompleteUpload = "incomplete_upload", 400, "the upload's body ended before its file did (a truncated multipart body, a client gone)";
    QuotaExceeded = "quota_exceeded", 403, "the upload would pass the app's or the user's quota of bytes or files (`files.*` settings)";
    RangeNotSatisfiable = "range_not_satisfiable", 416, "a `Range` that starts past the file's end (`content-range: bytes */size` says its size)";
    InvalidSignature = "invalid_signature", 403, "a signed URL whose signature does not match its app, file, expiry and transform";
    UrlExpired = "url_expired", 403, "a signed URL past its expiry";
    InvalidThumb = "invalid_thumb", 400, "a thumbnail size the file's bucket does not declare in its `thumbs`";
    ThumbUnavailable = "thumb_unavailable", 422, "no thumbnail can be made of the file: it is no JPEG, PNG, GIF or WebP image, or its bytes do not decode";
    ImageTooLarge = "image_too_large", 422, "an image with more pixels than a thumbnail is made from (64 million for a JPEG, 25 million for the others), or over 64 MiB";
    // Realtime.
    InvalidRealtimeSettings = "invalid_realtime_settings", 400, "realtime settings that break a rule (a channel kind's name, a rule that does not check, a history over its limits); the message names the field";
    InvalidChannel = "invalid_channel", 400, "a channel name that is not `kind` or `kind:key` (1 to 32 lowercase letters, digits and `_`; a key of 1 to 128 letters, digits and `_ - . : @`)";
    ChannelNotFound = "channel_not_found", 404, "a channel of a kind the app's realtime settings do not declare";
    InvalidRecipient = "invalid_recipient", 400, "a direct message's recipient that is not a user id";
    TooManyChannels = "too_many_channels", 429, "the app holds as many channels in memory as it may (50,000, direct message streams included): a new one waits until some are forgotten";
    PresenceFull = "presence_full", 429, "the app's presence holds as many bytes as it may (16 MiB of states)";
    // The server.
    NotReady = "not_ready", 503, "from `/readyz` only: the server is starting or shutting down";
    QueryTimeout = "query_timeout", 503, "a database query ran past its 30 s and was stopped (a filter too costly for the data: narrow it, or index its fields); on SQLite and PostgreSQL alike";
    DatabaseUnavailable = "database_unavailable", 503, "the database can not be reached now, or every connection stayed busy past `database.pool_wait_secs` (`retry-after` says when to try again)";
    InternalError = "internal_error", 500, "a fault of the server; the details are in its log under the request id";
}

/// An error as the client sees it: a code and a message that is safe to show.
#[derive(Debug)]
pub struct ApiError {
    pub code: Code,
    pub message: String,
    /// Seconds after which trying again may work: sent as `retry-after`.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// Says when to try again (`retry-after`, in seconds).
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs.max(1));
        self
    }

    /// A storage failure: the database out of reach is `503 database_unavailable` (try again),
    /// an app whose database is gone `404 app_not_found`, anything else internal.
    pub fn store(cause: &StoreError, whole: &dyn std::fmt::Display) -> Self {
        match cause {
            StoreError::Unavailable(why) => {
                tracing::warn!(cause = %why, "database unavailable");
                ApiError::new(
                    Code::DatabaseUnavailable,
                    "the database is unavailable; try again",
                )
                .retry_after(1)
            }
            StoreError::NoSuchTenant => ApiError::new(Code::AppNotFound, "no such app"),
            // A write's app key, checked in the write: answered as the key's lookup would.
            StoreError::KeyRefused => ApiError::from(AccessError::InvalidCredentials),
            StoreError::TimedOut => {
                tracing::warn!(error = %whole, "a query ran past its time");
                ApiError::new(
                    Code::QueryTimeout,
                    "the query ran past its time limit and was stopped",
                )
            }
            _ => ApiError::internal(whole),
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
        let mut response = (self.code.status(), Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}

impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        match &e {
            AppError::InvalidName { .. } => ApiError::new(Code::InvalidAppName, e.to_string()),
            AppError::AlreadyExists(_) => ApiError::new(Code::AppAlreadyExists, e.to_string()),
            AppError::NotFound(_) => ApiError::new(Code::AppNotFound, e.to_string()),
            AppError::InvalidPageSize(_) => ApiError::new(Code::InvalidQuery, e.to_string()),
            AppError::Store(cause) => ApiError::store(cause, cause),
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
            AccessError::Store(cause) => ApiError::store(cause, &e),
            AccessError::WeakAdminToken | AccessError::DottedAdminToken => ApiError::internal(&e),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        let code = match &e {
            AuthError::UnknownProvider(_) => Code::UnknownProvider,
            AuthError::ProviderNotEnabled(_) => Code::ProviderNotEnabled,
            AuthError::InvalidProviderConfig(_) => Code::InvalidProviderConfig,
            AuthError::AddressNotAllowed => Code::Forbidden,
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
            AuthError::InvalidEmail(_) => Code::InvalidEmail,
            AuthError::WeakPassword(_) => Code::WeakPassword,
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
            AuthError::Store(cause) => return ApiError::store(cause, &e),
            AuthError::Sealing => return ApiError::internal(&e),
            AuthError::Busy => {
                return ApiError::new(Code::ServerBusy, e.to_string()).retry_after(1);
            }
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
            DataError::InvalidCollection(_) | DataError::InvalidRule { .. } => {
                Code::InvalidCollection
            }
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
            DataError::InvalidPage | DataError::PageTooLarge | DataError::InvalidFileUrls(_) => {
                Code::InvalidQuery
            }
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
            DataError::Store(cause) => return ApiError::store(cause, &e),
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
            FunctionError::NotCallable => Code::FunctionNotCallable,
            FunctionError::Failed(_) => Code::FunctionError,
            FunctionError::Timeout => Code::FunctionTimeout,
            FunctionError::MemoryLimit => Code::FunctionMemoryLimit,
            FunctionError::ResultTooLarge(_) => Code::FunctionResultTooLarge,
            FunctionError::InvalidResponse(_) => Code::FunctionInvalidResponse,
            FunctionError::Overloaded => {
                return ApiError::new(Code::FunctionOverloaded, e.to_string()).retry_after(1);
            }
            FunctionError::InvalidEnv(_) => Code::InvalidEnv,
            FunctionError::Store(cause) => return ApiError::store(cause, &e),
            FunctionError::Engine(_) => return ApiError::internal(&e),
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

/// Answers a request whose handler panicked (a fault of ours): `500 internal_error` in the
/// usual shape, with the panic in the log under the request id, instead of a dropped
/// connection.
pub fn panicked(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned());
    ApiError::internal(&format_args!("a handler panicked: {message}")).into_response()
}

impl From<cloudlet_core::console::ConsoleError> for ApiError {
    fn from(e: cloudlet_core::console::ConsoleError) -> Self {
        use cloudlet_core::console::ConsoleError;
        let message = e.to_string();
        let code = match e {
            ConsoleError::LoginRequired => Code::ConsoleLoginRequired,
            ConsoleError::InvalidLogin => Code::InvalidLogin,
            ConsoleError::AlreadySetUp => Code::AlreadySetUp,
            ConsoleError::InvalidAdminToken => Code::InvalidCredentials,
            ConsoleError::Forbidden => Code::Forbidden,
            ConsoleError::PersonNotFound => Code::PersonNotFound,
            ConsoleError::AppNotFound(_) => Code::AppNotFound,
            ConsoleError::PersonExists => Code::PersonExists,
            ConsoleError::LastOwner => Code::LastOwner,
            ConsoleError::InvalidRole(_) => Code::InvalidRole,
            ConsoleError::InvalidName(_) => Code::InvalidPerson,
            ConsoleError::Account(inner) => return inner.into(),
            ConsoleError::Store(cause) => return ApiError::store(&cause, &message),
        };
        ApiError::new(code, message)
    }
}

#[cfg(test)]
mod tests {
    use super::Code;

    #[tokio::test]
    async fn a_panic_answers_internal_error_in_the_usual_shape() {
        let response = super::panicked(Box::new("index out of bounds"));
        assert_eq!(response.status(), 500);
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["code"], "internal_error");
        assert!(!body["error"]["message"].as_str().unwrap().contains("index"));
    }

    /// `docs/api.md` lists exactly the codes of the table, with their statuses and meanings.
    #[test]
    fn the_documented_codes_are_the_table() {
        let docs =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/api.md"))
                .expect("docs/api.md");
        let start = docs.find("<!-- codes:").expect("the codes' start marker");
        let end = docs
            .find("<!-- end of codes -->")
            .expect("the codes' end marker");
        let documented: Vec<&str> = docs[start..end]
            .lines()
            .filter(|line| line.starts_with("| ") && !line.starts_with("| status"))
            .collect();
        let table: Vec<String> = Code::ALL
            .iter()
            .map(|code| {
                format!(
                    "| {} | `{}` | {} |",
                    code.status().as_u16(),
                    code.as_str(),
                    code.when()
                )
            })
            .collect();
        assert_eq!(documented, table, "regenerate the table in docs/api.md");
    }

    #[test]
    fn codes_are_unique_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for code in Code::ALL {
            let text = code.as_str();
            assert!(seen.insert(text), "{text} twice");
            assert!(
                text.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{text}"
            );
        }
    }
}
