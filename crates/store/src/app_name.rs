//! [`AppName`]: the one type an app's name has once it has been read from a request, a file or
//! the command line. Every store takes an `AppName`, never a string, because the name becomes a
//! directory of the data directory: a value of this type can only be a plain, single path
//! segment, so no request can make a store open, create or remove anything outside it.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;

/// A valid app name: 2 to 40 characters of `a-z`, `0-9` and `-`, starting and ending with a
/// letter or digit. Such a name is safe as a path segment (no `/`, no `..`, no NUL, never
/// absolute), as a URL segment, in a PostgreSQL identifier and on a command line (never a flag).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AppName(String);

/// Why a name is not an app name; the message is safe to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidAppName {
    #[error("it must be 2 to 40 characters long")]
    Length,
    #[error("only a-z, 0-9 and - are allowed")]
    Characters,
    #[error("it must start and end with a letter or digit")]
    Ends,
}

impl AppName {
    pub const MIN_LEN: usize = 2;
    pub const MAX_LEN: usize = 40;

    pub fn parse(name: &str) -> Result<Self, InvalidAppName> {
        if !(Self::MIN_LEN..=Self::MAX_LEN).contains(&name.len()) {
            return Err(InvalidAppName::Length);
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(InvalidAppName::Characters);
        }
        if name.starts_with('-') || name.ends_with('-') {
            return Err(InvalidAppName::Ends);
        }
        Ok(AppName(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Deref for AppName {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for AppName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for AppName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for AppName {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for AppName {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl PartialEq<AppName> for str {
    fn eq(&self, other: &AppName) -> bool {
        self == other.0
    }
}

impl PartialEq<AppName> for String {
    fn eq(&self, other: &AppName) -> bool {
        *self == other.0
    }
}

impl fmt::Display for AppName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for AppName {
    type Err = InvalidAppName;

    fn from_str(name: &str) -> Result<Self, InvalidAppName> {
        AppName::parse(name)
    }
}

impl From<AppName> for String {
    fn from(name: AppName) -> String {
        name.0
    }
}

impl rusqlite::ToSql for AppName {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        self.0.to_sql()
    }
}

impl serde::Serialize for AppName {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// Read from any serialized form through [`AppName::parse`]: a name never skips the check.
impl<'de> serde::Deserialize<'de> for AppName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        AppName::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// What [`AppName::parse`] takes, as a schema.
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for AppName {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(AppName::MIN_LEN))
            .max_length(Some(AppName::MAX_LEN))
            .pattern(Some("^[a-z0-9][a-z0-9-]*[a-z0-9]$"))
            .examples(["demo"])
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for AppName {}

/// Names read back from a database were valid when they were written; one that is not any more
/// is a damaged row, never used as a path.
impl rusqlite::types::FromSql for AppName {
    fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        let text = value.as_str()?;
        AppName::parse(text).map_err(|e| rusqlite::types::FromSqlError::Other(Box::new(e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_names_follow_the_slug_rule() {
        for ok in ["ab", "todo", "my-app-2", "0a", &"a".repeat(40)] {
            assert_eq!(AppName::parse(ok).unwrap().as_str(), ok);
        }
        for (bad, why) in [
            ("", InvalidAppName::Length),
            ("a", InvalidAppName::Length),
            (&"a".repeat(41), InvalidAppName::Length),
            ("Todo", InvalidAppName::Characters),
            ("my_app", InvalidAppName::Characters),
            ("a b", InvalidAppName::Characters),
            ("../x", InvalidAppName::Characters),
            ("..", InvalidAppName::Characters),
            ("a/b", InvalidAppName::Characters),
            ("/tmp", InvalidAppName::Characters),
            ("a\0b", InvalidAppName::Characters),
            ("a\nb", InvalidAppName::Characters),
            ("é1", InvalidAppName::Characters),
            ("-ab", InvalidAppName::Ends),
            ("ab-", InvalidAppName::Ends),
        ] {
            assert_eq!(AppName::parse(bad), Err(why), "{bad:?}");
        }
    }

    #[test]
    fn a_valid_name_is_always_one_plain_path_segment() {
        let base = std::path::Path::new("/data/apps");
        for name in ["ab", "x-1", "99"] {
            let joined = base.join(AppName::parse(name).unwrap().as_str());
            assert_eq!(joined.parent(), Some(base));
        }
    }
}
