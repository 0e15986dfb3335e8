//! Source text to [`Expr`]: a hand-written lexer and a recursive-descent parser, with limits on
//! length and nesting checked before any work is wasted on hostile input.
//!
//! ```text
//! expr       := and ("||" and)*
//! and        := unary ("&&" unary)*
//! unary      := "!" unary | "(" expr ")" | predicate
//! predicate  := operand [op operand | "in" "[" operand ("," operand)* "]"]
//! operand    := field ("." segment)* | "@auth.id" | "@auth.provider" | "@now"
//!             | "@request.data." field | 'text' | "text" | number | true | false | null
//! op         := "=" | "!=" | "<" | "<=" | ">" | ">=" | "~" | "!~"
//! ```

use crate::ast::{CompareOp, Expr, Literal, Operand, Variable};
use crate::error::{ErrorKind, QueryError};

/// Bounds on what is parsed.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The longest source, in bytes.
    pub max_length: usize,
    /// The deepest nesting of parentheses and `!`.
    pub max_depth: usize,
    /// The most items in an `in` list.
    pub max_list: usize,
    /// The most comparisons (`a = b`, `a in [...]`, a bare operand) in one expression: `&&` and
    /// `||` chain them without nesting, and a realtime filter is judged, comparison by
    /// comparison, against every change its subscriber may see.
    pub max_comparisons: usize,
    /// The most `~` and `!~` comparisons, each a search through a whole text.
    pub max_contains: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_length: 4096,
            max_depth: 16,
            max_list: 100,
            max_comparisons: 64,
            max_contains: 8,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Name(String),
    Variable(String),
    Text(String),
    Int(i64),
    Float(f64),
    Op(CompareOp),
    And,
    Or,
    Not,
    Open,
    Close,
    OpenList,
    CloseList,
    Comma,
    Dot,
    End,
}

struct Lexer<'a> {
    src: &'a str,
    pos: usize,
    /// The last token was a `.`: digits next are an array index (`meta.items.0.name`).
    after_dot: bool,
}

impl<'a> Lexer<'a> {
    fn error(&self, at: usize, message: impl Into<String>) -> QueryError {
        QueryError::new(ErrorKind::Syntax, at, message)
    }

    /// The next token and where it starts.
    fn next(&mut self) -> Result<(Token, usize), QueryError> {
        let after_dot = std::mem::take(&mut self.after_dot);
        let rest = &self.src[self.pos..];
        let trimmed = rest.trim_start();
        self.pos += rest.len() - trimmed.len();
        let at = self.pos;
        let mut chars = trimmed.chars();
        let Some(c) = chars.next() else {
            return Ok((Token::End, at));
        };
        let two = trimmed.get(..2).unwrap_or("");
        let (token, len) = match (c, two) {
            (_, "&&") => (Token::And, 2),
            (_, "||") => (Token::Or, 2),
            (_, "!=") => (Token::Op(CompareOp::Ne), 2),
            (_, "!~") => (Token::Op(CompareOp::NotContains), 2),
            (_, "<=") => (Token::Op(CompareOp::Le), 2),
            (_, ">=") => (Token::Op(CompareOp::Ge), 2),
            ('=', _) => (Token::Op(CompareOp::Eq), if two == "==" { 2 } else { 1 }),
            ('<', _) => (Token::Op(CompareOp::Lt), 1),
            ('>', _) => (Token::Op(CompareOp::Gt), 1),
            ('~', _) => (Token::Op(CompareOp::Contains), 1),
            ('!', _) => (Token::Not, 1),
            ('(', _) => (Token::Open, 1),
            (')', _) => (Token::Close, 1),
            ('[', _) => (Token::OpenList, 1),
            (']', _) => (Token::CloseList, 1),
            (',', _) => (Token::Comma, 1),
            ('.', _) => (Token::Dot, 1),
            ('\'' | '"', _) => return self.text(c, at),
            ('@', _) => {
                let name = word(&trimmed[1..]);
                if name.is_empty() {
                    return Err(self.error(at, "expected a variable name after @"));
                }
                (Token::Variable(name.to_owned()), 1 + name.len())
            }
            (c, _) if c.is_ascii_digit() && after_dot => return self.index(at),
            (c, _)
                if c.is_ascii_digit()
                    || (c == '-' && chars.next().is_some_and(|d| d.is_ascii_digit())) =>
            {
                return self.number(at);
            }
            (c, _) if c.is_ascii_alphabetic() || c == '_' => {
                let name = word(trimmed);
                (Token::Name(name.to_owned()), name.len())
            }
            (c, _) => return Err(self.error(at, format!("unexpected character {c:?}"))),
        };
        self.after_dot = token == Token::Dot;
        self.pos += len;
        Ok((token, at))
    }

    /// An array index in a path: digits only, so that a `.` after them goes on with the path
    /// (where a number would read `0.` as a float).
    fn index(&mut self, at: usize) -> Result<(Token, usize), QueryError> {
        let rest = &self.src[at..];
        let len = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let text = &rest[..len];
        self.pos = at + len;
        text.parse::<i64>()
            .map(|i| (Token::Int(i), at))
            .map_err(|_| self.error(at, format!("{text} is not an array index in range")))
    }

    fn text(&mut self, quote: char, at: usize) -> Result<(Token, usize), QueryError> {
        let mut value = String::new();
        let mut chars = self.src[at + 1..].char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, escaped @ ('\\' | '\'' | '"'))) => value.push(escaped),
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, 't')) => value.push('\t'),
                    _ => return Err(self.error(at + 1 + i, "unknown escape in a string")),
                },
                c if c == quote => {
                    self.pos = at + 1 + i + 1;
                    return Ok((Token::Text(value), at));
                }
                c => value.push(c),
            }
        }
        Err(self.error(at, "unterminated string"))
    }

    fn number(&mut self, at: usize) -> Result<(Token, usize), QueryError> {
        let rest = &self.src[at..];
        let len = rest
            .char_indices()
            .find(|&(i, c)| !(c.is_ascii_digit() || c == '.' || (i == 0 && c == '-')))
            .map_or(rest.len(), |(i, _)| i);
        let text = &rest[..len];
        self.pos = at + len;
        if text.contains('.') {
            text.parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .map(|f| (Token::Float(f), at))
                .ok_or_else(|| self.error(at, format!("{text} is not a number")))
        } else {
            text.parse::<i64>()
                .map(|i| (Token::Int(i), at))
                .map_err(|_| self.error(at, format!("{text} is not a number in range")))
        }
    }
}

fn word(s: &str) -> &str {
    let len = s
        .char_indices()
        .find(|&(_, c)| !(c.is_ascii_alphanumeric() || c == '_'))
        .map_or(s.len(), |(i, _)| i);
    &s[..len]
}

struct Parser<'a> {
    lexer: Lexer<'a>,
    token: Token,
    at: usize,
    depth: usize,
    /// Comparisons, and `~` comparisons among them, read so far.
    comparisons: usize,
    contains: usize,
    limits: Limits,
}

/// Parses `src` into an expression.
pub fn parse(src: &str, limits: Limits) -> Result<Expr, QueryError> {
    if src.len() > limits.max_length {
        return Err(QueryError::new(
            ErrorKind::TooLong,
            limits.max_length,
            format!("a filter is at most {} bytes", limits.max_length),
        ));
    }
    // No database stores NUL in text alike (PostgreSQL refuses it): an expression holding one
    // is refused here, for both.
    if let Some(at) = src.find('\0') {
        return Err(QueryError::new(
            ErrorKind::Syntax,
            at,
            "a filter may not contain the NUL character",
        ));
    }
    let mut lexer = Lexer {
        src,
        pos: 0,
        after_dot: false,
    };
    let (token, at) = lexer.next()?;
    let mut parser = Parser {
        lexer,
        token,
        at,
        depth: 0,
        comparisons: 0,
        contains: 0,
        limits,
    };
    if parser.token == Token::End {
        return Err(QueryError::new(
            ErrorKind::Syntax,
            0,
            "the expression is empty",
        ));
    }
    let expr = parser.or()?;
    if parser.token != Token::End {
        return Err(parser.unexpected("&&, || or the end"));
    }
    Ok(expr)
}

impl Parser<'_> {
    fn advance(&mut self) -> Result<(), QueryError> {
        let (token, at) = self.lexer.next()?;
        self.token = token;
        self.at = at;
        Ok(())
    }

    fn unexpected(&self, expected: &str) -> QueryError {
        let found = match &self.token {
            Token::End => "the end".to_owned(),
            other => format!("{other:?}"),
        };
        QueryError::new(
            ErrorKind::Syntax,
            self.at,
            format!("expected {expected}, found {found}"),
        )
    }

    fn nest(&mut self) -> Result<(), QueryError> {
        self.depth += 1;
        if self.depth > self.limits.max_depth {
            return Err(QueryError::new(
                ErrorKind::TooDeep,
                self.at,
                format!("expressions nest at most {} deep", self.limits.max_depth),
            ));
        }
        Ok(())
    }

    fn or(&mut self) -> Result<Expr, QueryError> {
        let mut left = self.and()?;
        while self.token == Token::Or {
            self.advance()?;
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, QueryError> {
        let mut left = self.unary()?;
        while self.token == Token::And {
            self.advance()?;
            left = Expr::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, QueryError> {
        match self.token {
            Token::Not => {
                let at = self.at;
                self.nest()?;
                self.advance()?;
                let inner = self.unary()?;
                self.depth -= 1;
                Ok(Expr::Not(Box::new(inner), at))
            }
            Token::Open => {
                self.nest()?;
                self.advance()?;
                let inner = self.or()?;
                if self.token != Token::Close {
                    return Err(self.unexpected(")"));
                }
                self.advance()?;
                self.depth -= 1;
                Ok(inner)
            }
            _ => self.predicate(),
        }
    }

    /// Counts one comparison (a search through text when `contains`) against the limits.
    fn count(&mut self, at: usize, contains: bool) -> Result<(), QueryError> {
        self.comparisons += 1;
        self.contains += usize::from(contains);
        let limits = &self.limits;
        let over = [
            (self.comparisons, limits.max_comparisons, ""),
            (self.contains, limits.max_contains, " ~ and !~"),
        ]
        .into_iter()
        .find(|&(count, max, _)| count > max);
        match over {
            Some((_, max, kind)) => Err(QueryError::new(
                ErrorKind::TooLong,
                at,
                format!("an expression holds at most {max}{kind} comparisons"),
            )),
            None => Ok(()),
        }
    }

    fn predicate(&mut self) -> Result<Expr, QueryError> {
        let start = self.at;
        let left = self.operand()?;
        match self.token.clone() {
            Token::Op(op) => {
                let at = self.at;
                self.count(
                    at,
                    matches!(op, CompareOp::Contains | CompareOp::NotContains),
                )?;
                self.advance()?;
                let right = self.operand()?;
                Ok(Expr::Compare {
                    left,
                    op,
                    right,
                    at,
                })
            }
            Token::Name(name) if name == "in" => {
                let at = self.at;
                self.count(at, false)?;
                self.advance()?;
                if self.token != Token::OpenList {
                    return Err(self.unexpected("[ after in"));
                }
                self.advance()?;
                let mut list = Vec::new();
                loop {
                    list.push(self.operand()?);
                    if list.len() > self.limits.max_list {
                        return Err(QueryError::new(
                            ErrorKind::TooLong,
                            self.at,
                            format!("an in list holds at most {} items", self.limits.max_list),
                        ));
                    }
                    match self.token {
                        Token::Comma => self.advance()?,
                        Token::CloseList => break,
                        _ => return Err(self.unexpected(", or ]")),
                    }
                }
                self.advance()?;
                Ok(Expr::In { left, list, at })
            }
            _ => {
                self.count(start, false)?;
                Ok(Expr::Truth(left))
            }
        }
    }

    fn operand(&mut self) -> Result<Operand, QueryError> {
        let at = self.at;
        let operand = match self.token.clone() {
            Token::Text(text) => Operand::Literal {
                literal: Literal::Text(text),
                at,
            },
            Token::Int(i) => Operand::Literal {
                literal: Literal::Int(i),
                at,
            },
            Token::Float(f) => Operand::Literal {
                literal: Literal::Float(f),
                at,
            },
            Token::Name(name) => match name.as_str() {
                "true" => Operand::Literal {
                    literal: Literal::Bool(true),
                    at,
                },
                "false" => Operand::Literal {
                    literal: Literal::Bool(false),
                    at,
                },
                "null" => Operand::Literal {
                    literal: Literal::Null,
                    at,
                },
                _ => {
                    self.advance()?;
                    let path = self.path(name)?;
                    return Ok(Operand::Field { path, at });
                }
            },
            Token::Variable(name) => {
                self.advance()?;
                let path = self.path(name)?;
                let variable = match path.iter().map(String::as_str).collect::<Vec<_>>()[..] {
                    ["auth", "id"] => Variable::AuthId,
                    ["auth", "provider"] => Variable::AuthProvider,
                    ["now"] => Variable::Now,
                    ["request", "data", field] => Variable::RequestData(field.to_owned()),
                    _ => {
                        return Err(QueryError::new(
                            ErrorKind::Syntax,
                            at,
                            format!(
                                "unknown variable @{}; known: @auth.id, @auth.provider, @now, @request.data.<field>",
                                path.join(".")
                            ),
                        ));
                    }
                };
                return Ok(Operand::Variable { variable, at });
            }
            _ => return Err(self.unexpected("a field, a variable or a value")),
        };
        self.advance()?;
        Ok(operand)
    }

    /// `first` and the `.segment`s after it.
    fn path(&mut self, first: String) -> Result<Vec<String>, QueryError> {
        let mut path = vec![first];
        while self.token == Token::Dot {
            self.advance()?;
            match self.token.clone() {
                Token::Name(segment) => path.push(segment),
                Token::Int(index) if index >= 0 => path.push(index.to_string()),
                _ => return Err(self.unexpected("a name after .")),
            }
            self.advance()?;
            if path.len() > 8 {
                return Err(QueryError::new(
                    ErrorKind::TooDeep,
                    self.at,
                    "paths have at most 8 segments",
                ));
            }
        }
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(src: &str) -> Result<Expr, QueryError> {
        parse(src, Limits::default())
    }

    #[test]
    fn precedence_is_not_then_and_then_or() {
        let expr = p("a = 1 || !b = 2 && c = 'x'").unwrap();
        let Expr::Or(left, right) = expr else {
            panic!()
        };
        assert!(matches!(*left, Expr::Compare { .. }));
        let Expr::And(not, _) = *right else { panic!() };
        assert!(matches!(*not, Expr::Not(..)));
    }

    #[test]
    fn operands_literals_variables_and_paths() {
        let expr =
            p(r#"meta.tags.0 ~ "it's" && owner = @auth.id && n in [1, -2.5, null]"#).unwrap();
        let text = format!("{expr:?}");
        assert!(text.contains(r#"path: ["meta", "tags", "0"]"#), "{text}");
        assert!(text.contains("Text(\"it's\")"), "{text}");
        assert!(text.contains("AuthId"), "{text}");
        assert!(text.contains("Float(-2.5)"), "{text}");
        assert!(matches!(
            p("@request.data.owner = @auth.id"),
            Ok(Expr::Compare { .. })
        ));
        assert!(matches!(p("done"), Ok(Expr::Truth(_))));
    }

    #[test]
    fn syntax_errors_say_where() {
        for (src, at) in [
            ("", 0),
            ("a =", 3),
            ("a = 'x", 4),
            ("(a = 1", 6),
            ("a = 1 b", 6),
            ("a # 1", 2),
            ("@me = 1", 0),
            ("a in 1", 5),
            ("a = 'bad \\q'", 9),
            ("n = 99999999999999999999", 4),
        ] {
            let err = p(src).unwrap_err();
            assert_eq!(
                (err.kind, err.position),
                (ErrorKind::Syntax, at),
                "{src}: {err}"
            );
        }
    }

    #[test]
    fn limits_hold() {
        let long = format!("a = '{}'", "x".repeat(5000));
        assert_eq!(p(&long).unwrap_err().kind, ErrorKind::TooLong);
        let deep = format!("{}a = 1{}", "(".repeat(20), ")".repeat(20));
        assert_eq!(p(&deep).unwrap_err().kind, ErrorKind::TooDeep);
        let nots = format!("{}a", "!".repeat(20));
        assert_eq!(p(&nots).unwrap_err().kind, ErrorKind::TooDeep);
        let list = format!("a in [{}]", vec!["1"; 101].join(","));
        assert_eq!(p(&list).unwrap_err().kind, ErrorKind::TooLong);
    }

    #[test]
    fn a_path_goes_on_after_an_array_index() {
        let path = |src: &str| match p(src).unwrap() {
            Expr::Compare {
                left: Operand::Field { path, .. },
                ..
            } => path,
            other => panic!("{other:?}"),
        };
        let expected = ["meta", "items", "0", "name"].map(String::from).to_vec();
        assert_eq!(path("meta.items.0.name = 1"), expected);
        assert_eq!(path("meta.items. 0.name = 1"), expected);
        assert_eq!(path("meta.a.0.1 = 1.5").len(), 4, "an index after an index");
        assert!(
            p("meta.items.0 = 1.5 && a = -2.5").is_ok(),
            "numbers stay numbers"
        );
        assert!(p("meta.-1 = 1").is_err());
    }

    #[test]
    fn chains_of_comparisons_are_bounded_without_nesting() {
        let chain = |term: &str, n: usize| vec![term; n].join(" || ");
        assert!(p(&chain("a = 1", 64)).is_ok());
        let long = p(&chain("a = 1", 65)).unwrap_err();
        assert_eq!(long.kind, ErrorKind::TooLong, "{long}");
        assert!(long.message.contains("64 comparisons"), "{long}");
        assert!(p(&chain("a", 64)).is_ok());
        assert_eq!(p(&chain("a", 65)).unwrap_err().kind, ErrorKind::TooLong);
        assert!(p(&chain("a in [1, 2]", 64)).is_ok());
        assert_eq!(
            p(&chain("a in [1]", 65)).unwrap_err().kind,
            ErrorKind::TooLong
        );
        // `~` searches are bounded apart, more tightly, whichever way they are chained.
        assert!(p(&chain("t ~ 'zq'", 8)).is_ok());
        let searches = p(&format!("{} && t !~ 'q'", chain("t ~ 'zq'", 8))).unwrap_err();
        assert_eq!(searches.kind, ErrorKind::TooLong, "{searches}");
        assert!(searches.message.contains("8 ~"), "{searches}");
        let nested = format!("({}) && ({})", chain("t ~ 'a'", 4), chain("t ~ 'b'", 5));
        assert_eq!(p(&nested).unwrap_err().kind, ErrorKind::TooLong);
    }
}
