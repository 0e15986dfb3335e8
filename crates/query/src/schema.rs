//! What the checker and compiler know of a collection: its fields and their types.

use std::collections::BTreeMap;

/// The type of a field, as declared on its collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    Text,
    Number,
    Integer,
    Bool,
    /// Stored as Unix milliseconds; compared with RFC 3339 strings and `@now`.
    Datetime,
    /// Any JSON; reached into with paths (`meta.tags`).
    Json,
    /// The id of a record of another collection.
    Relation,
    /// The name of a stored file.
    File,
}

/// A collection's fields, system fields (`id`, `created_at`, `updated_at`, `owner`) included.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Schema {
    fields: BTreeMap<String, FieldType>,
}

impl Schema {
    /// A schema with the system fields every record has.
    pub fn new() -> Self {
        let mut schema = Schema::default();
        schema.fields.insert("id".into(), FieldType::Text);
        schema
            .fields
            .insert("created_at".into(), FieldType::Datetime);
        schema
            .fields
            .insert("updated_at".into(), FieldType::Datetime);
        schema.fields.insert("owner".into(), FieldType::Text);
        schema
    }

    pub fn with(mut self, name: &str, field_type: FieldType) -> Self {
        self.fields.insert(name.to_owned(), field_type);
        self
    }

    pub fn field(&self, name: &str) -> Option<FieldType> {
        self.fields.get(name).copied()
    }
}
