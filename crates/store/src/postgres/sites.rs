//! placeholder

pub(super) const MIGRATION: &str = "";
