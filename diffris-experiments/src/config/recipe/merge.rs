//! Variants override any field of a recipe: a RON value tree that keeps what serde's value
//! types lose (struct and enum variant names), and a deep merge of a variant's fields over the
//! base recipe.
//!
//! Merge rules: a struct merges field by field (fields the variant does not write keep the
//! base's value); a tuple or enum variant with the same name and arity merges item by item
//! (`pcmrd((hidden: 32))` over the base's PCMRD changes only its width); anything else (a
//! number, a list, another enum variant) replaces the base value whole. `Some(x)` in the base
//! merges with a bare value, as RON's `implicit_some` writes it.

use std::fmt::Write as _;

/// A parsed RON value.
#[derive(Clone, Debug, PartialEq)]
pub enum Node {
    /// `Name(field: value, ..)` or `(field: value, ..)`; `()` is an empty struct.
    Struct {
        name: Option<String>,
        fields: Vec<(String, Node)>,
    },
    /// `Name(a, ..)` or `(a, ..)`: enum variants with content, `Some(x)`, tuples.
    Tuple {
        name: Option<String>,
        items: Vec<Node>,
    },
    /// `[a, ..]`.
    List(Vec<Node>),
    /// `{k: v, ..}`.
    Map(Vec<(Node, Node)>),
    /// A number, string, char, boolean or bare identifier, as written.
    Atom(String),
}

/// A syntax error at a 1-based line and column.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{line}:{col}: {message}")]
pub struct SyntaxError {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

impl Node {
    /// Parses one RON value (leading `#![enable(..)]` attributes and comments are skipped).
    pub fn parse(text: &str) -> Result<Self, SyntaxError> {
        let mut p = Parser {
            chars: text.chars().collect(),
            pos: 0,
        };
        p.skip_attributes()?;
        let node = p.value()?;
        p.skip_ws()?;
        if p.pos < p.chars.len() {
            return Err(p.error("unexpected text after the value"));
        }
        Ok(node)
    }

    /// The value of a struct's field.
    pub fn field(&self, key: &str) -> Option<&Node> {
        match self {
            Node::Struct { fields, .. } => fields.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The items of a list.
    pub fn items(&self) -> &[Node] {
        match self {
            Node::List(items) => items,
            _ => &[],
        }
    }

    /// `over` merged into `self` (see the module docs).
    pub fn merged(self, over: &Node) -> Node {
        match (self, over) {
            (
                Node::Struct { name, mut fields },
                Node::Struct {
                    name: over_name,
                    fields: over_fields,
                },
            ) if over_name.is_none() || *over_name == name => {
                for (k, v) in over_fields {
                    match fields.iter_mut().find(|(key, _)| key == k) {
                        Some((_, slot)) => {
                            let base = std::mem::replace(slot, Node::Atom(String::new()));
                            *slot = base.merged(v);
                        }
                        None => fields.push((k.clone(), v.clone())),
                    }
                }
                Node::Struct { name, fields }
            }
            (
                Node::Tuple { name, items },
                Node::Tuple {
                    name: over_name,
                    items: over_items,
                },
            ) if *over_name == name && over_items.len() == items.len() => Node::Tuple {
                name,
                items: items
                    .into_iter()
                    .zip(over_items)
                    .map(|(b, o)| b.merged(o))
                    .collect(),
            },
            // `implicit_some`: a bare value over `Some(x)` merges with `x`.
            (Node::Tuple { name, items }, over)
                if name.as_deref() == Some("Some")
                    && items.len() == 1
                    && !matches!(over, Node::Atom(a) if a == "None")
                    && !matches!(over, Node::Tuple { name: Some(n), .. } if n == "Some") =>
            {
                let inner = items.into_iter().next().expect("one item");
                Node::Tuple {
                    name,
                    items: vec![inner.merged(over)],
                }
            }
            (_, over) => over.clone(),
        }
    }

    /// The value as RON text (comments are not kept).
    pub fn to_ron(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }

    fn write(&self, out: &mut String) {
        match self {
            Node::Struct { name, fields } => {
                out.push_str(name.as_deref().unwrap_or(""));
                joined(out, ('(', ')'), fields, |out, (k, v)| {
                    let _ = write!(out, "{k}: ");
                    v.write(out);
                });
            }
            Node::Tuple { name, items } => {
                out.push_str(name.as_deref().unwrap_or(""));
                joined(out, ('(', ')'), items, |out, n| n.write(out));
            }
            Node::List(items) => joined(out, ('[', ']'), items, |out, n| n.write(out)),
            Node::Map(entries) => joined(out, ('{', '}'), entries, |out, (k, v)| {
                k.write(out);
                out.push_str(": ");
                v.write(out);
            }),
            Node::Atom(a) => out.push_str(a),
        }
    }
}

/// `items` written by `item`, separated by `, ` between the two brackets.
fn joined<T>(
    out: &mut String,
    (open, close): (char, char),
    items: &[T],
    mut item: impl FnMut(&mut String, &T),
) {
    out.push(open);
    for (i, x) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        item(out, x);
    }
    out.push(close);
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
}

impl Parser {
    fn error(&self, message: &str) -> SyntaxError {
        let before = &self.chars[..self.pos.min(self.chars.len())];
        let line = before.iter().filter(|&&c| c == '\n').count() + 1;
        let col = before.iter().rev().take_while(|&&c| c != '\n').count() + 1;
        SyntaxError {
            line,
            col,
            message: message.to_string(),
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn peek_at(&self, k: usize) -> Option<char> {
        self.chars.get(self.pos + k).copied()
    }

    fn skip_ws(&mut self) -> Result<(), SyntaxError> {
        loop {
            match (self.peek(), self.peek_at(1)) {
                (Some(c), _) if c.is_whitespace() => self.pos += 1,
                (Some('/'), Some('/')) => {
                    while self.peek().is_some_and(|c| c != '\n') {
                        self.pos += 1;
                    }
                }
                (Some('/'), Some('*')) => {
                    let mut depth = 0usize;
                    loop {
                        match (self.peek(), self.peek_at(1)) {
                            (Some('/'), Some('*')) => {
                                depth += 1;
                                self.pos += 2;
                            }
                            (Some('*'), Some('/')) => {
                                depth -= 1;
                                self.pos += 2;
                                if depth == 0 {
                                    break;
                                }
                            }
                            (Some(_), _) => self.pos += 1,
                            (None, _) => return Err(self.error("unterminated block comment")),
                        }
                    }
                }
                _ => return Ok(()),
            }
        }
    }

    fn skip_attributes(&mut self) -> Result<(), SyntaxError> {
        loop {
            self.skip_ws()?;
            if self.peek() != Some('#') {
                return Ok(());
            }
            while self.peek().is_some_and(|c| c != ']') {
                self.pos += 1;
            }
            if self.peek().is_none() {
                return Err(self.error("unterminated attribute"));
            }
            self.pos += 1;
        }
    }

    fn expect(&mut self, c: char) -> Result<(), SyntaxError> {
        self.skip_ws()?;
        if self.peek() == Some(c) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.error(&format!("expected `{c}`")))
        }
    }

    fn ident(&mut self) -> String {
        let start = self.pos;
        if self.peek() == Some('r') && self.peek_at(1) == Some('#') {
            self.pos += 2;
        }
        while self.peek().is_some_and(|c| c.is_alphanumeric() || c == '_') {
            self.pos += 1;
        }
        self.chars[start..self.pos].iter().collect()
    }

    fn quoted(&mut self, quote: char) -> Result<String, SyntaxError> {
        let start = self.pos;
        self.pos += 1;
        loop {
            match self.peek() {
                Some('\\') => self.pos += 2,
                Some(c) if c == quote => {
                    self.pos += 1;
                    return Ok(self.chars[start..self.pos].iter().collect());
                }
                Some(_) => self.pos += 1,
                None => return Err(self.error("unterminated string")),
            }
        }
    }

    fn raw_string(&mut self) -> Result<String, SyntaxError> {
        let start = self.pos;
        self.pos += 1; // r
        let mut hashes = 0;
        while self.peek() == Some('#') {
            hashes += 1;
            self.pos += 1;
        }
        if self.peek() != Some('"') {
            return Err(self.error("expected `\"` of a raw string"));
        }
        self.pos += 1;
        loop {
            match self.peek() {
                Some('"') if (1..=hashes).all(|k| self.peek_at(k) == Some('#')) => {
                    self.pos += 1 + hashes;
                    return Ok(self.chars[start..self.pos].iter().collect());
                }
                Some(_) => self.pos += 1,
                None => return Err(self.error("unterminated raw string")),
            }
        }
    }

    fn number(&mut self) -> String {
        let start = self.pos;
        while let Some(c) = self.peek() {
            let prev = self.pos.checked_sub(1).map(|p| self.chars[p]);
            let sign_in_exponent =
                (c == '-' || c == '+') && matches!(prev, Some('e' | 'E')) && self.pos > start;
            let leading_sign = (c == '-' || c == '+') && self.pos == start;
            if c.is_alphanumeric() || c == '_' || c == '.' || sign_in_exponent || leading_sign {
                self.pos += 1;
            } else {
                break;
            }
        }
        self.chars[start..self.pos].iter().collect()
    }

    fn value(&mut self) -> Result<Node, SyntaxError> {
        self.skip_ws()?;
        match self.peek() {
            Some('(') => self.parens(None),
            Some('[') => {
                self.pos += 1;
                self.until(']', Self::value).map(Node::List)
            }
            Some('{') => {
                self.pos += 1;
                self.until('}', |p| {
                    let k = p.value()?;
                    p.expect(':')?;
                    Ok((k, p.value()?))
                })
                .map(Node::Map)
            }
            Some(q @ ('"' | '\'')) => self.quoted(q).map(Node::Atom),
            Some('r')
                if matches!(self.peek_at(1), Some('"') | Some('#'))
                    && !(self.peek_at(1) == Some('#')
                        && self
                            .peek_at(2)
                            .is_some_and(|c| c.is_alphabetic() || c == '_')) =>
            {
                self.raw_string().map(Node::Atom)
            }
            Some('b') if self.peek_at(1) == Some('"') => {
                self.pos += 1;
                self.quoted('"').map(|s| Node::Atom(format!("b{s}")))
            }
            Some(c) if c.is_alphabetic() || c == '_' => {
                let name = self.ident();
                let after = self.pos;
                self.skip_ws()?;
                if self.peek() == Some('(') {
                    self.parens(Some(name))
                } else {
                    self.pos = after;
                    Ok(Node::Atom(name))
                }
            }
            Some(c) if c.is_ascii_digit() || c == '-' || c == '+' || c == '.' => {
                Ok(Node::Atom(self.number()))
            }
            Some(_) => Err(self.error("expected a value")),
            None => Err(self.error("expected a value, found the end of the text")),
        }
    }

    /// After an item: `,` (then maybe `close`) or `close`; the closing char is left in place.
    fn comma_or(&mut self, close: char) -> Result<(), SyntaxError> {
        self.skip_ws()?;
        match self.peek() {
            Some(',') => {
                self.pos += 1;
                Ok(())
            }
            Some(c) if c == close => Ok(()),
            _ => Err(self.error(&format!("expected `,` or `{close}`"))),
        }
    }

    /// Whether an identifier followed by a single `:` starts here (a struct field).
    fn at_field(&self) -> bool {
        let mut k = self.pos;
        if !self
            .chars
            .get(k)
            .is_some_and(|c| c.is_alphabetic() || *c == '_')
        {
            return false;
        }
        while self
            .chars
            .get(k)
            .is_some_and(|c| c.is_alphanumeric() || *c == '_' || *c == '#')
        {
            k += 1;
        }
        while self.chars.get(k).is_some_and(|c| c.is_whitespace()) {
            k += 1;
        }
        self.chars.get(k) == Some(&':') && self.chars.get(k + 1) != Some(&':')
    }

    fn parens(&mut self, name: Option<String>) -> Result<Node, SyntaxError> {
        self.expect('(')?;
        self.skip_ws()?;
        if self.peek() == Some(')') {
            self.pos += 1;
            return Ok(Node::Struct {
                name,
                fields: vec![],
            });
        }
        if self.at_field() {
            let fields = self.until(')', |p| {
                if !p.at_field() {
                    return Err(p.error("expected `field: value`"));
                }
                let key = p.ident();
                p.expect(':')?;
                Ok((key, p.value()?))
            })?;
            return Ok(Node::Struct { name, fields });
        }
        let items = self.until(')', Self::value)?;
        Ok(Node::Tuple { name, items })
    }

    /// Items read by `item`, separated by commas (a trailing one allowed), up to and including
    /// `close` (the opening bracket is already read).
    fn until<T>(
        &mut self,
        close: char,
        mut item: impl FnMut(&mut Self) -> Result<T, SyntaxError>,
    ) -> Result<Vec<T>, SyntaxError> {
        let mut items = Vec::new();
        loop {
            self.skip_ws()?;
            if self.peek() == Some(close) {
                self.pos += 1;
                return Ok(items);
            }
            items.push(item(self)?);
            self.comma_or(close)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn merged(base: &str, over: &str) -> String {
        Node::parse(base)
            .unwrap()
            .merged(&Node::parse(over).unwrap())
            .to_ron()
    }

    #[test]
    fn round_trips_every_kind_of_value() {
        let text = r##"(a: 1e-4, b: -3, c: "x, \"y\"", d: Some((e: [1, 2], f: {"k": 'c'})), g: lmp(()), h: (1, 2), i: None, j: r#"raw"#)"##;
        assert_eq!(Node::parse(text).unwrap().to_ron(), text);
    }

    #[test]
    fn comments_and_attributes_are_skipped() {
        let text = "#![enable(implicit_some)]\n// a comment\n( /* inline */ a: 1, // end\n )";
        assert_eq!(Node::parse(text).unwrap().to_ron(), "(a: 1)");
    }

    #[test]
    fn structs_merge_field_by_field() {
        assert_eq!(
            merged(
                "(model: (timestep: 1.0, adapter: (heads: 8, rank: 8)), train: (lr: 0.0001))",
                "(model: (adapter: (rank: 4)), train: (lr: 0.001, epochs: 3))"
            ),
            "(model: (timestep: 1.0, adapter: (heads: 8, rank: 4)), train: (lr: 0.001, epochs: 3))"
        );
    }

    #[test]
    fn the_same_enum_variant_merges_and_another_replaces() {
        let base = "(decoder: pcmrd((hidden: 256, stages: 3)))";
        assert_eq!(
            merged(base, "(decoder: pcmrd((hidden: 32)))"),
            "(decoder: pcmrd((hidden: 32, stages: 3)))"
        );
        assert_eq!(merged(base, "(decoder: lmp(()))"), "(decoder: lmp(()))");
    }

    #[test]
    fn lists_and_atoms_replace_and_implicit_some_merges() {
        assert_eq!(merged("(a: [1, 2, 3])", "(a: [4])"), "(a: [4])");
        assert_eq!(merged("(a: Some(3))", "(a: 5)"), "(a: Some(5))");
        assert_eq!(merged("(a: Some(3))", "(a: None)"), "(a: None)");
        assert_eq!(merged("(a: None)", "(a: 5)"), "(a: 5)");
    }

    #[test]
    fn syntax_errors_carry_line_and_column() {
        let err = Node::parse("(\n  a: 1,\n  b: ]\n)").unwrap_err();
        assert_eq!((err.line, err.col), (3, 6), "{err}");
    }
}
