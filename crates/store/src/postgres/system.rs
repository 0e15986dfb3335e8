//! placeholder
pub(crate) const MIGRATIONS: &[&str] = &[];
