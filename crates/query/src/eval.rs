//! Evaluating a checked expression in memory, over one record and one caller: the language's
//! second implementation. Realtime checks every change against every subscriber's rule and
//! filter, and a database read per subscriber and change would cost too much; this answers the
//! same question from the record itself.
//!
//! It means exactly what the compiled SQL means on both databases, three-valued logic included:
//! a comparison with a null is *unknown*, `!unknown` is unknown, and a record is matched only
//! when the whole expression is *true*. The tests compare it with the compiled SQL run on SQLite
//! over generated expressions and records (and with the rows PostgreSQL returns for the shared
//! cases): a disagreement would deliver a change to someone the rule refuses, or lose one.
//!
//! A record is given as its columns hold it ([`Record`]): text as strings, numbers as numbers,
//! bools as bools, datetimes as Unix milliseconds, JSON fields as their JSON value; a field
//! missing or `null` is null.

use std::cmp::Ordering;

use serde_json::Value as Json;

use crate::ast::{CompareOp, Expr, Literal, Operand, Variable};
use crate::check::{Ty, datetime_ms, type_of};
use crate::predicate::Bindings;
use crate::schema::{FieldType, Schema};
use crate::sql::{JsonKind, Value, json_kind};

/// A record's columns by field name, as stored (see the module's documentation).
pub type Record = serde_json::Map<String, Json>;

/// A value met while evaluating.
#[derive(Debug, Clone, Copy)]
enum V<'a> {
    Null,
    Text(&'a str),
    Int(i64),
    Float(f64),
    Bool(bool),
    /// A JSON field's value (or one below it); JSON `null` is [`V::Null`].
    Json(&'a Json),
}

/// Three-valued AND, OR and NOT, as SQL has them (`None` is unknown).
fn and(a: Option<bool>, b: Option<bool>) -> Option<bool> {
    match (a, b) {
        (Some(false), _) | (_, Some(false)) => Some(false),
        (Some(true), Some(true)) => Some(true),
        _ => None,
    }
}

fn or(a: Option<bool>, b: Option<bool>) -> Option<bool> {
    match (a, b) {
        (Some(true), _) | (_, Some(true)) => Some(true),
        (Some(false), Some(false)) => Some(false),
        _ => None,
    }
}

/// One evaluation: the schema, the record and the caller.
pub(crate) struct Eval<'a> {
    pub(crate) schema: &'a Schema,
    pub(crate) record: &'a Record,
    pub(crate) bindings: &'a Bindings,
}

impl<'a> Eval<'a> {
    /// The expression's truth for the record: `Some(true)` only when it holds.
    pub(crate) fn expr(&self, expr: &'a Expr) -> Option<bool> {
        match expr {
            Expr::And(a, b) => and(self.expr(a), self.expr(b)),
            Expr::Or(a, b) => or(self.expr(a), self.expr(b)),
            Expr::Not(inner, _) => self.expr(inner).map(|b| !b),
            Expr::Truth(operand) => self.compare_values(
                operand,
                CompareOp::Eq,
                &Operand::Literal {
                    literal: Literal::Bool(true),
                    at: 0,
                },
            ),
            Expr::Compare {
                left, op, right, ..
            } => self.compare(left, *op, right),
            Expr::In { left, list, .. } => self.within(left, list),
        }
    }

    fn ty(&self, operand: &Operand) -> Ty {
        type_of(operand, self.schema).unwrap_or(Ty::Null)
    }

    fn is_json(&self, operand: &Operand) -> bool {
        self.ty(operand) == Ty::Json
    }

    /// An operand's value.
    fn value(&self, operand: &'a Operand) -> V<'a> {
        match operand {
            Operand::Field { path, .. } => {
                let Some(stored) = self.record.get(&path[0]) else {
                    return V::Null;
                };
                match self.schema.field(&path[0]) {
                    Some(FieldType::Json) => {
                        let mut at = stored;
                        for segment in &path[1..] {
                            let next = match at {
                                // A digit segment indexes an array, and only an array.
                                Json::Array(items) if is_index(segment) => {
                                    segment.parse::<usize>().ok().and_then(|i| items.get(i))
                                }
                                Json::Object(fields) if !is_index(segment) => fields.get(segment),
                                _ => None,
                            };
                            match next {
                                Some(next) => at = next,
                                None => return V::Null,
                            }
                        }
                        if at.is_null() { V::Null } else { V::Json(at) }
                    }
                    _ => scalar(stored),
                }
            }
            Operand::Variable { variable, .. } => match variable {
                Variable::AuthId => self.bindings.auth_id.as_deref().map_or(V::Null, V::Text),
                Variable::AuthProvider => self
                    .bindings
                    .auth_provider
                    .as_deref()
                    .map_or(V::Null, V::Text),
                Variable::Now => V::Int(self.bindings.now_ms),
                Variable::RequestData(field) => match self.bindings.request_data.get(field) {
                    None | Some(Value::Null) => V::Null,
                    Some(Value::Bool(b)) => V::Bool(*b),
                    Some(Value::Int(i)) => V::Int(*i),
                    Some(Value::Float(f)) => V::Float(*f),
                    Some(Value::Text(t)) => V::Text(t),
                },
            },
            Operand::Literal { literal, .. } => match literal {
                Literal::Null => V::Null,
                Literal::Bool(b) => V::Bool(*b),
                Literal::Int(i) => V::Int(*i),
                Literal::Float(f) => V::Float(*f),
                Literal::Text(t) => V::Text(t),
            },
        }
    }

    /// A value as compared beside a datetime: an RFC 3339 text literal is its milliseconds.
    fn beside_datetime(&self, operand: &'a Operand) -> V<'a> {
        if let Operand::Literal {
            literal: Literal::Text(text),
            ..
        } = operand
            && let Some(ms) = datetime_ms(text)
        {
            return V::Int(ms);
        }
        self.value(operand)
    }

    fn compare(&self, left: &'a Operand, op: CompareOp, right: &'a Operand) -> Option<bool> {
        let null_literal = |o: &Operand| {
            matches!(
                o,
                Operand::Literal {
                    literal: Literal::Null,
                    ..
                }
            )
        };
        if null_literal(left) || null_literal(right) {
            // `= null` is `IS NULL`; `!= null` (the only other operator the checker lets a
            // null take) is `IS NOT NULL`.
            let other = if null_literal(left) { right } else { left };
            // `@request.data.x = null`: whether the body leaves x out (as the SQL asks).
            if let (
                CompareOp::Eq,
                Operand::Variable {
                    variable: Variable::RequestData(field),
                    ..
                },
            ) = (op, other)
            {
                return Some(!self.bindings.request_data.contains_key(field));
            }
            let is_null = matches!(self.value(other), V::Null);
            return Some(if op == CompareOp::Eq {
                is_null
            } else {
                !is_null
            });
        }
        match op {
            CompareOp::Contains => self.contains(left, right),
            CompareOp::NotContains => self.contains(left, right).map(|b| !b),
            _ => self.compare_values(left, op, right),
        }
    }

    /// A comparison of two values, neither a null literal.
    fn compare_values(&self, left: &'a Operand, op: CompareOp, right: &'a Operand) -> Option<bool> {
        let (json_left, json_right) = (self.is_json(left), self.is_json(right));
        if json_left != json_right {
            let (json, other) = if json_left {
                (left, right)
            } else {
                (right, left)
            };
            let kind = json_kind(self.ty(other))?;
            let json_value = guarded(self.value(json), kind)?;
            let other_value = self.value(other);
            return if json_left {
                order(json_value, other_value).map(|o| holds(op, o))
            } else {
                order(other_value, json_value).map(|o| holds(op, o))
            };
        }
        if json_left {
            // Two JSON values: the checker refuses this; nothing is known of it.
            return None;
        }
        let datetime = self.ty(left) == Ty::Datetime || self.ty(right) == Ty::Datetime;
        let (l, r) = if datetime {
            (self.beside_datetime(left), self.beside_datetime(right))
        } else {
            (self.value(left), self.value(right))
        };
        order(l, r).map(|o| holds(op, o))
    }

    /// `left in [list]`: true when an item equals it; unknown when none does but one (or the
    /// left side) is null; false otherwise. A JSON value is compared, per item, only with the
    /// items of its own type.
    fn within(&self, left: &'a Operand, list: &'a [Operand]) -> Option<bool> {
        if self.is_json(left) {
            let mut answer = Some(false);
            let mut any = false;
            for kind in [JsonKind::Number, JsonKind::Text, JsonKind::Bool] {
                let items: Vec<&Operand> = list
                    .iter()
                    .filter(|item| json_kind(self.ty(item)) == Some(kind))
                    .collect();
                if items.is_empty() {
                    continue;
                }
                any = true;
                let group = guarded(self.value(left), kind)
                    .and_then(|value| any_equal(value, items.iter().map(|item| self.value(item))));
                answer = or(answer, group);
            }
            return if any { answer } else { None };
        }
        let datetime = self.ty(left) == Ty::Datetime;
        let side = |o: &'a Operand| {
            if datetime {
                self.beside_datetime(o)
            } else {
                self.value(o)
            }
        };
        let value = side(left);
        if matches!(value, V::Null) {
            return None;
        }
        any_equal(value, list.iter().map(side))
    }

    /// `field ~ value`: text that holds the value, ASCII letters in either case (SQL's `LIKE`
    /// and, on `COLLATE "C"`, `ILIKE`); or a JSON array with an element of the value's type
    /// equal to it (any other JSON value: false; nothing there: unknown).
    fn contains(&self, field: &'a Operand, value: &'a Operand) -> Option<bool> {
        let needle = self.value(value);
        if self.is_json(field) {
            let Operand::Field { path, .. } = field else {
                return None;
            };
            let stored = self.record.get(&path[0])?;
            let mut at = stored;
            for segment in &path[1..] {
                at = match at {
                    Json::Array(items) if is_index(segment) => {
                        items.get(segment.parse::<usize>().ok()?)?
                    }
                    Json::Object(fields) if !is_index(segment) => fields.get(segment)?,
                    _ => return None,
                };
            }
            if path.len() == 1 && at.is_null() {
                return None;
            }
            let Json::Array(items) = at else {
                return Some(false);
            };
            let kind = match needle {
                V::Int(_) | V::Float(_) => JsonKind::Number,
                V::Text(_) => JsonKind::Text,
                V::Bool(_) => JsonKind::Bool,
                V::Null | V::Json(_) => return None,
            };
            return Some(items.iter().any(|item| {
                guarded(V::Json(item), kind)
                    .and_then(|item| order(item, needle))
                    .is_some_and(|o| o == Ordering::Equal)
            }));
        }
        let (V::Text(haystack), V::Text(needle)) = (self.value(field), needle) else {
            return None;
        };
        Some(
            haystack
                .to_ascii_lowercase()
                .contains(&needle.to_ascii_lowercase()),
        )
    }
}

/// Whether a JSON path segment is an array index.
fn is_index(segment: &str) -> bool {
    !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit())
}

/// A stored column's value.
fn scalar(stored: &Json) -> V<'_> {
    match stored {
        Json::Null => V::Null,
        Json::Bool(b) => V::Bool(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => V::Int(i),
            None => n.as_f64().map_or(V::Null, V::Float),
        },
        Json::String(s) => V::Text(s),
        // Not a column's value for any field but a JSON one.
        Json::Array(_) | Json::Object(_) => V::Json(stored),
    }
}

/// A JSON value as a value of `kind`, or `None` when it is of another type (or null).
fn guarded(value: V<'_>, kind: JsonKind) -> Option<V<'_>> {
    match (value, kind) {
        (V::Json(Json::Number(_)), JsonKind::Number)
        | (V::Json(Json::String(_)), JsonKind::Text)
        | (V::Json(Json::Bool(_)), JsonKind::Bool) => match value {
            V::Json(json) => Some(scalar(json)),
            other => Some(other),
        },
        _ => None,
    }
}

/// The order of two values of one type; `None` when either is null or they do not compare.
fn order(a: V<'_>, b: V<'_>) -> Option<Ordering> {
    match (a, b) {
        (V::Text(a), V::Text(b)) => Some(a.as_bytes().cmp(b.as_bytes())),
        (V::Int(a), V::Int(b)) => Some(a.cmp(&b)),
        (V::Int(a), V::Float(b)) => (a as f64).partial_cmp(&b),
        (V::Float(a), V::Int(b)) => a.partial_cmp(&(b as f64)),
        (V::Float(a), V::Float(b)) => a.partial_cmp(&b),
        (V::Bool(a), V::Bool(b)) => Some(a.cmp(&b)),
        _ => None,
    }
}

fn holds(op: CompareOp, ordering: Ordering) -> bool {
    match op {
        CompareOp::Eq => ordering == Ordering::Equal,
        CompareOp::Ne => ordering != Ordering::Equal,
        CompareOp::Lt => ordering == Ordering::Less,
        CompareOp::Le => ordering != Ordering::Greater,
        CompareOp::Gt => ordering == Ordering::Greater,
        CompareOp::Ge => ordering != Ordering::Less,
        CompareOp::Contains | CompareOp::NotContains => false,
    }
}

/// SQL's `IN` over values: true if one equals `value`, else unknown if one is null, else false.
fn any_equal<'v>(value: V<'v>, items: impl Iterator<Item = V<'v>>) -> Option<bool> {
    let mut answer = Some(false);
    for item in items {
        match order(value, item) {
            Some(Ordering::Equal) => return Some(true),
            Some(_) => {}
            None if matches!(item, V::Null) => answer = None,
            // Values of different types are never equal (the checker keeps them apart).
            None => {}
        }
    }
    answer
}
