//! Type checking against a schema: every field must exist, and both sides of every comparison
//! must be comparable. Errors carry the position of the operand at fault.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::ast::{CompareOp, Expr, Literal, Operand, Variable};
use crate::error::{ErrorKind, QueryError};
use crate::schema::{FieldType, Schema};

/// The type of an operand, as far as comparisons care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ty {
    Text,
    Number,
    Bool,
    Datetime,
    /// A JSON value (a JSON field, or a path into one): comparable with anything.
    Json,
    Null,
}

impl Ty {
    fn name(self) -> &'static str {
        match self {
            Ty::Text => "text",
            Ty::Number => "a number",
            Ty::Bool => "a bool",
            Ty::Datetime => "a datetime",
            Ty::Json => "json",
            Ty::Null => "null",
        }
    }
}

fn of_field(field_type: FieldType) -> Ty {
    match field_type {
        FieldType::Text | FieldType::Relation | FieldType::File => Ty::Text,
        FieldType::Number | FieldType::Integer => Ty::Number,
        FieldType::Bool => Ty::Bool,
        FieldType::Datetime => Ty::Datetime,
        FieldType::Json => Ty::Json,
    }
}

/// Parses an RFC 3339 time to Unix milliseconds.
pub(crate) fn datetime_ms(text: &str) -> Option<i64> {
    OffsetDateTime::parse(text, &Rfc3339)
        .ok()
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// The type of `operand`, checking that it names something that exists.
pub(crate) fn type_of(operand: &Operand, schema: &Schema) -> Result<Ty, QueryError> {
    match operand {
        Operand::Field { path, at } => {
            let field = schema.field(&path[0]).ok_or_else(|| {
                QueryError::new(
                    ErrorKind::UnknownField,
                    *at,
                    format!("no field named {:?}", path[0]),
                )
            })?;
            if path.len() > 1 && field != FieldType::Json {
                return Err(QueryError::new(
                    ErrorKind::TypeMismatch,
                    *at,
                    format!(
                        "{} is not a json field: it has no path {}",
                        path[0],
                        path.join(".")
                    ),
                ));
            }
            Ok(of_field(field))
        }
        Operand::Variable { variable, at } => Ok(match variable {
            Variable::AuthId | Variable::AuthProvider => Ty::Text,
            Variable::Now => Ty::Datetime,
            Variable::RequestData(field) => of_field(schema.field(field).ok_or_else(|| {
                QueryError::new(
                    ErrorKind::UnknownField,
                    *at,
                    format!("no field named {field:?}"),
                )
            })?),
        }),
        Operand::Literal { literal, .. } => Ok(match literal {
            Literal::Null => Ty::Null,
            Literal::Bool(_) => Ty::Bool,
            Literal::Int(_) | Literal::Float(_) => Ty::Number,
            Literal::Text(_) => Ty::Text,
        }),
    }
}

/// Whether `a` and `b` can be compared with `=`. A text literal compares with a datetime when
/// it is an RFC 3339 time.
fn comparable(a: (&Operand, Ty), b: (&Operand, Ty)) -> bool {
    let datetime_text = |(operand, ty): (&Operand, Ty)| {
        ty == Ty::Text
            && matches!(operand, Operand::Literal { literal: Literal::Text(t), .. } if datetime_ms(t).is_some())
    };
    a.1 == b.1
        || a.1 == Ty::Json
        || b.1 == Ty::Json
        || a.1 == Ty::Null
        || b.1 == Ty::Null
        || (a.1 == Ty::Datetime && datetime_text(b))
        || (b.1 == Ty::Datetime && datetime_text(a))
}

fn mismatch(at: usize, message: String) -> QueryError {
    QueryError::new(ErrorKind::TypeMismatch, at, message)
}

/// `field ~ value`: a text or json field on the left, a value on the right (text for text).
fn check_contains(left: (&Operand, Ty), right: (&Operand, Ty)) -> Result<(), QueryError> {
    if !matches!(left.0, Operand::Field { .. }) || !matches!(left.1, Ty::Text | Ty::Json) {
        return Err(mismatch(
            left.0.position(),
            "~ looks inside a text or json field; put the field on the left".into(),
        ));
    }
    let value = matches!(right.0, Operand::Literal { .. }) && right.1 != Ty::Null;
    if !value || (left.1 == Ty::Text && right.1 != Ty::Text) {
        return Err(mismatch(
            right.0.position(),
            "~ takes a value on its right (text for a text field)".into(),
        ));
    }
    Ok(())
}

/// Checks `expr` against `schema`.
pub fn check(expr: &Expr, schema: &Schema) -> Result<(), QueryError> {
    match expr {
        Expr::And(a, b) | Expr::Or(a, b) => {
            check(a, schema)?;
            check(b, schema)
        }
        Expr::Not(inner, _) => check(inner, schema),
        Expr::Truth(operand) => match type_of(operand, schema)? {
            Ty::Bool | Ty::Json => Ok(()),
            other => Err(mismatch(
                operand.position(),
                format!(
                    "{} is not a condition; compare it with something",
                    other.name()
                ),
            )),
        },
        Expr::Compare {
            left,
            op,
            right,
            at,
        } => {
            let (l, r) = (type_of(left, schema)?, type_of(right, schema)?);
            if matches!(op, CompareOp::Contains | CompareOp::NotContains) {
                return check_contains((left, l), (right, r));
            }
            if !comparable((left, l), (right, r)) {
                return Err(mismatch(
                    *at,
                    format!("can not compare {} with {}", l.name(), r.name()),
                ));
            }
            if l == Ty::Json && r == Ty::Json {
                // The databases compare JSON with JSON each their own way.
                return Err(mismatch(
                    *at,
                    "compare a json value with a value, not with another json value".into(),
                ));
            }
            let null = l == Ty::Null || r == Ty::Null;
            match op {
                CompareOp::Eq | CompareOp::Ne => Ok(()),
                _ if null => Err(mismatch(*at, "null only goes with = and !=".into())),
                CompareOp::Lt | CompareOp::Le | CompareOp::Gt | CompareOp::Ge => {
                    if l == Ty::Bool || r == Ty::Bool {
                        return Err(mismatch(*at, "bools have no order".into()));
                    }
                    Ok(())
                }
                CompareOp::Contains | CompareOp::NotContains => unreachable!("handled above"),
            }
        }
        Expr::In { left, list, at } => {
            let l = type_of(left, schema)?;
            for item in list {
                let r = type_of(item, schema)?;
                if r == Ty::Null {
                    return Err(mismatch(
                        item.position(),
                        "null can not be in a list; use = null".into(),
                    ));
                }
                if !comparable((left, l), (item, r)) {
                    return Err(mismatch(
                        *at,
                        format!("can not compare {} with {}", l.name(), r.name()),
                    ));
                }
            }
            Ok(())
        }
    }
}
