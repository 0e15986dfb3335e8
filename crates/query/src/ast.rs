//! The syntax tree. Every node carries the byte position where it starts, for error messages.

/// A value written in the expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

/// A value that depends on the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Variable {
    /// `@auth.id`: the caller's user id, null when anonymous.
    AuthId,
    /// `@auth.provider`: how the caller logged in.
    AuthProvider,
    /// `@now`: the request's time.
    Now,
    /// `@request.data.field`: a field of the body being written.
    RequestData(String),
}

/// One side of a comparison.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    /// A record field, with a JSON path below it when there are more segments (`meta.tags`).
    Field {
        path: Vec<String>,
        at: usize,
    },
    Variable {
        variable: Variable,
        at: usize,
    },
    Literal {
        literal: Literal,
        at: usize,
    },
}

impl Operand {
    pub fn position(&self) -> usize {
        match self {
            Operand::Field { at, .. }
            | Operand::Variable { at, .. }
            | Operand::Literal { at, .. } => *at,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    /// `~`: text contains, or JSON array contains.
    Contains,
    /// `!~`
    NotContains,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>, usize),
    Compare {
        left: Operand,
        op: CompareOp,
        right: Operand,
        at: usize,
    },
    In {
        left: Operand,
        list: Vec<Operand>,
        at: usize,
    },
    /// A bare boolean operand: `done`, `true`.
    Truth(Operand),
}
