//! What an HTTP function may answer, read from its result: [`HttpAnswer`].
//!
//! A result with a numeric `status` is a response: `{status, headers, body, isBase64Encoded}`.
//! The status must be a whole number from 200 to 599 (1xx would leave the client waiting for the
//! real answer, and a switch of protocols is not the function's to make); header names must be
//! HTTP tokens and values printable; a string body is sent as it is (or decoded from base64,
//! the way API gateways carry binary bodies), any other body as JSON. A result without a
//! numeric `status` is sent whole as JSON with status 200. Anything else fails the invocation
//! (logged as its error, answered `502 function_invalid_response`).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::Value as Json;

/// The response headers a function may set, besides its own `x-` headers: what describes its
/// content, its caching and redirects. Anything else is dropped: the server owns the framing
/// (`content-length`, `connection`, …), and every app's functions answer on the API's origin,
/// where cookies, security policies, HSTS, reporting endpoints or `clear-site-data` would act on
/// every other app too. (`www-authenticate` is left out: the function never sees the
/// `authorization` header, so a challenge could only raise a browser's login prompt on the
/// API's origin.)
pub const ALLOWED_HEADERS: [&str; 15] = [
    "accept-ranges",
    "cache-control",
    "content-disposition",
    "content-encoding",
    "content-language",
    "content-range",
    "content-type",
    "etag",
    "expires",
    "last-modified",
    "link",
    "location",
    "retry-after",
    "vary",
    "age",
];

/// `x-` headers a function may not set: the server's own, and those a reverse proxy in front of
/// it would obey (an internal redirect to a file or location of the proxy's, forwarded client
/// addresses) or a browser would apply as a security policy of the origin.
const RESERVED_X_HEADERS: [&str; 5] = [
    "x-request-id",
    "x-content-type-options",
    "x-real-ip",
    "x-content-security-policy",
    "x-webkit-csp",
];
const RESERVED_X_PREFIXES: [&str; 5] = [
    "x-accel-",
    "x-sendfile",
    "x-lighttpd-",
    "x-litespeed-",
    "x-forwarded-",
];

/// Whether a function may set the header `name` (lower case).
pub fn may_set(name: &str) -> bool {
    ALLOWED_HEADERS.contains(&name)
        || (name.starts_with("x-")
            && !RESERVED_X_HEADERS.contains(&name)
            && !RESERVED_X_PREFIXES.iter().any(|p| name.starts_with(p)))
}

/// The most headers an answer may set.
pub const MAX_HEADERS: usize = 64;

/// An HTTP function's answer, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpAnswer {
    pub status: u16,
    /// Lower-case names, checked values, without the server-owned ones.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The body is JSON the server wrote (send `content-type: application/json` unless the
    /// function set a content type).
    pub json: bool,
}

impl HttpAnswer {
    /// Reads a function's result (JSON text).
    pub fn from_result(result: &str) -> Result<HttpAnswer, String> {
        let value: Json =
            serde_json::from_str(result).map_err(|e| format!("the result is not JSON: {e}"))?;
        let Some(status) = value.get("status").filter(|s| s.is_number()) else {
            return Ok(HttpAnswer {
                status: 200,
                headers: Vec::new(),
                body: result.as_bytes().to_vec(),
                json: true,
            });
        };
        let status = status
            .as_u64()
            .and_then(|s| u16::try_from(s).ok())
            .filter(|s| (200..=599).contains(s))
            .ok_or_else(|| format!("status {status} is not a whole number from 200 to 599"))?;
        let base64 = match value.get("isBase64Encoded") {
            None | Some(Json::Null) | Some(Json::Bool(false)) => false,
            Some(Json::Bool(true)) => true,
            Some(other) => return Err(format!("isBase64Encoded is {other}, not true or false")),
        };
        let (body, json) = match value.get("body") {
            None | Some(Json::Null) => (Vec::new(), false),
            Some(Json::String(text)) if base64 => (
                BASE64
                    .decode(text)
                    .map_err(|e| format!("the body is not base64: {e}"))?,
                false,
            ),
            Some(Json::String(text)) => (text.as_bytes().to_vec(), false),
            Some(other) => (other.to_string().into_bytes(), true),
        };
        // These statuses have no body (RFC 9110): one the function gave is dropped.
        let (body, json) = if matches!(status, 204 | 205 | 304) {
            (Vec::new(), false)
        } else {
            (body, json)
        };
        let headers = match value.get("headers") {
            None | Some(Json::Null) => Vec::new(),
            Some(Json::Object(headers)) => checked_headers(headers)?,
            Some(_) => return Err("headers must be an object of names to values".into()),
        };
        Ok(HttpAnswer {
            status,
            headers,
            body,
            json,
        })
    }
}

fn checked_headers(
    headers: &serde_json::Map<String, Json>,
) -> Result<Vec<(String, String)>, String> {
    if headers.len() > MAX_HEADERS {
        return Err(format!("{} headers; at most {MAX_HEADERS}", headers.len()));
    }
    let mut checked = Vec::with_capacity(headers.len());
    for (name, value) in headers {
        let lower = name.to_ascii_lowercase();
        if !is_token(&lower) {
            return Err(format!("{name:?} is not a header name"));
        }
        let value = match value {
            Json::String(text) => text.clone(),
            Json::Number(n) => n.to_string(),
            Json::Bool(b) => b.to_string(),
            _ => {
                return Err(format!(
                    "header {name}: a value is a string, number or boolean"
                ));
            }
        };
        if !is_field_value(&value) {
            return Err(format!(
                "header {name}: the value holds a control character"
            ));
        }
        if may_set(&lower) {
            checked.push((lower, value));
        }
    }
    Ok(checked)
}

/// RFC 9110 `token`: what a field name may be.
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// RFC 9110 field value: visible characters, spaces and tabs; no CR, LF, NUL or other controls.
fn is_field_value(value: &str) -> bool {
    value.len() <= 8192
        && value
            .bytes()
            .all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_numeric_status_makes_a_response_and_anything_else_is_json() {
        let answer =
            HttpAnswer::from_result(r#"{"status":201,"headers":{"X-A":"1","x-n":2},"body":"hi"}"#)
                .unwrap();
        assert_eq!(answer.status, 201);
        assert_eq!(
            answer.headers,
            [
                ("x-a".to_owned(), "1".to_owned()),
                ("x-n".into(), "2".into())
            ]
        );
        assert_eq!(answer.body, b"hi");
        assert!(!answer.json);
        let plain = HttpAnswer::from_result(r#"{"status":"ok","items":[]}"#).unwrap();
        assert_eq!((plain.status, plain.json), (200, true));
        assert_eq!(plain.body, br#"{"status":"ok","items":[]}"#);
        let object = HttpAnswer::from_result(r#"{"status":200,"body":{"a":1}}"#).unwrap();
        assert_eq!(
            (object.body.as_slice(), object.json),
            (&br#"{"a":1}"#[..], true)
        );
        let binary =
            HttpAnswer::from_result(r#"{"status":200,"body":"AP8A","isBase64Encoded":true}"#)
                .unwrap();
        assert_eq!(binary.body, [0, 255, 0]);
        let dropped = HttpAnswer::from_result(
            r#"{"status":200,"headers":{"Set-Cookie":"a=b","NEL":"{}","Strict-Transport-Security":"max-age=1","X-Content-Type-Options":"none","Clear-Site-Data":"*","Content-Length":"3","X-Mine":"1","Cache-Control":"no-store","WWW-Authenticate":"Basic","X-Accel-Redirect":"/internal/secrets","X-Sendfile":"/etc/passwd","X-Forwarded-For":"1.2.3.4","X-Real-IP":"1.2.3.4","X-WebKit-CSP":"none"}}"#,
        )
        .unwrap();
        assert_eq!(
            dropped.headers,
            [
                ("cache-control".to_owned(), "no-store".to_owned()),
                ("x-mine".into(), "1".into())
            ]
        );
        let empty = HttpAnswer::from_result(r#"{"status":204,"body":"not empty"}"#).unwrap();
        assert!(empty.body.is_empty());
    }

    #[test]
    fn statuses_outside_200_to_599_and_bad_headers_are_refused() {
        for bad in [
            r#"{"status":100}"#,
            r#"{"status":101}"#,
            r#"{"status":199}"#,
            r#"{"status":600}"#,
            r#"{"status":999}"#,
            r#"{"status":-1}"#,
            r#"{"status":200.5}"#,
            r#"{"status":70000}"#,
            r#"{"status":200,"headers":{"a b":"1"}}"#,
            r#"{"status":200,"headers":{"":"1"}}"#,
            r#"{"status":200,"headers":{"x":"a\r\nb"}}"#,
            r#"{"status":200,"headers":{"x":"a\u0000"}}"#,
            r#"{"status":200,"headers":{"x":{"y":1}}}"#,
            r#"{"status":200,"headers":"x"}"#,
            r#"{"status":200,"body":"%%","isBase64Encoded":true}"#,
            r#"{"status":200,"isBase64Encoded":"yes"}"#,
        ] {
            assert!(HttpAnswer::from_result(bad).is_err(), "{bad}");
        }
        let many: serde_json::Map<String, Json> =
            (0..65).map(|i| (format!("x-{i}"), Json::from(i))).collect();
        let result = serde_json::json!({ "status": 200, "headers": many }).to_string();
        assert!(HttpAnswer::from_result(&result).is_err());
    }
}
