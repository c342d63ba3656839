//! Simple user templates rendered without Rego: modules whose every rule is one expression built
//! from `input` paths and literals, as Postee users write them:
//!
//! ```text
//! package custom.raw
//! title := "Event received"
//! result := input
//! url := "https://console.example/events"
//! result_severity := input.metadata.Properties.Severity
//! ```
//!
//! An expression is `input` or a path under it (`input.a.b`, `input["a-b"]`), a string, integer,
//! `true`/`false`/`null` literal, `sprintf("...", [expr, ...])` with `%s`/`%v`/`%d`/`%%`, or an
//! object (string keys) or array of expressions. Anything else — another rule read, a condition,
//! a function, an import other than `rego.v1`/`future.keywords` — leaves the template to Rego.
//!
//! Rendering an event either gives exactly what Rego gives (objects with keys sorted, undefined
//! paths leaving a rule undefined) or declines, and Rego renders that event: a number that is not
//! an integer (Rego may print it differently), a `sprintf` argument of a type the native
//! formatting does not print as Rego does. A test compares the two on every fixture and golden
//! input.

use serde_json::{Map, Value as Json};

use crate::event_json::EventJson;

mod print;

/// A template module of the simple shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Simple {
    rules: Vec<(String, Expr)>,
    /// Whether an expression reads `input` whole or its `postee`/`hooker` keys, which Hooker adds
    /// to the template input.
    reads_added_keys: bool,
}

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    /// `input` and the keys under it.
    Path(Vec<String>),
    Literal(Json),
    Sprintf(Vec<Piece>, Vec<Expr>),
    Object(Vec<(String, Expr)>),
    Array(Vec<Expr>),
}

/// A `sprintf` format: text, or the verb of the next argument.
#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Text(String),
    /// `%s` or `%v`.
    Value,
    /// `%d`.
    Integer,
}

/// The keys Hooker adds to an event for templates (`postee`, `hooker`), when absent from it.
pub type AddedKeys = Map<String, Json>;

impl Simple {
    /// The module's simple form, or None when any part of it is beyond it.
    pub fn parse(module: &str) -> Option<Simple> {
        let mut parser = Parser {
            text: module,
            at: 0,
        };
        parser.skip();
        if !parser.keyword("package") {
            return None;
        }
        parser.dotted()?;
        let mut rules: Vec<(String, Expr)> = Vec::new();
        loop {
            parser.skip();
            if parser.at == parser.text.len() {
                break;
            }
            if parser.keyword("import") {
                let imported = parser.dotted()?;
                if !(imported == "rego.v1" || imported.starts_with("future.keywords")) {
                    return None;
                }
                continue;
            }
            let name = parser.identifier()?;
            if matches!(name, "default" | "package" | "import" | "input" | "data") {
                return None;
            }
            parser.skip_inline();
            if !(parser.eat(":=") || (!parser.peek("==") && parser.eat("="))) {
                return None;
            }
            let expr = parser.expr()?;
            // The rule ends at the end of its line (a condition, `if`, `{` or `else` follow on it
            // in rules of other shapes).
            parser.skip_inline();
            if !(parser.at == parser.text.len() || parser.peek("\n") || parser.peek("#")) {
                return None;
            }
            if rules.iter().any(|(known, _)| known == name) {
                return None;
            }
            rules.push((name.to_string(), expr));
        }
        if !rules.iter().any(|(name, _)| name == "result") {
            return None;
        }
        let reads_added_keys = rules.iter().any(|(_, expr)| expr.reads_added_keys());
        Some(Simple {
            rules,
            reads_added_keys,
        })
    }

    /// Whether rendering needs the keys Hooker adds to the event.
    pub fn reads_added_keys(&self) -> bool {
        self.reads_added_keys
    }

    /// The template's rules for `event` as Rego's evaluation of the package gives them (the
    /// defined ones), or None when Rego must render this event. `added` are the `postee` and
    /// `hooker` values Hooker adds to the template input when the event has none.
    pub fn render(&self, event: &EventJson, added: &AddedKeys) -> Option<Map<String, Json>> {
        let input = Input { event, added };
        let mut out = Map::new();
        for (name, expr) in &self.rules {
            let value = match expr {
                // The message body is the result's text: printed straight from the event, not
                // copied into a sorted value first (`result := input` on a large event).
                Expr::Path(path) if name == "result" => input.text_of(path)?.map(Json::String),
                _ => expr.eval(&input)?,
            };
            if let Some(value) = value {
                out.insert(name.clone(), value);
            }
        }
        Some(out)
    }
}

/// The template input: the event with Hooker's keys added. The event is parsed only when a rule
/// reads a path of it (`result := input` prints from its text, see [`print`]).
struct Input<'a> {
    event: &'a EventJson,
    added: &'a AddedKeys,
}

impl Input<'_> {
    fn lookup(&self, path: &[String]) -> Option<&Json> {
        let (first, rest) = match path.split_first() {
            None => return Some(self.event.value()),
            Some(split) => split,
        };
        let map = self.event.value().as_object()?;
        let mut at = map.get(first).or_else(|| self.added.get(first))?;
        for key in rest {
            at = at.as_object()?.get(key)?;
        }
        Some(at)
    }

    /// The whole input, keys sorted, as Rego holds it.
    fn whole(&self) -> Option<Json> {
        serde_json::to_value(RegoText(self.event.value(), Some(self.added))).ok()
    }
}

impl Input<'_> {
    /// The message body a `result` rule reading `path` gives: a string as it is, anything else
    /// as the compact JSON of its [`rego_form`] (what `message_from` prints from the value).
    /// `Some(None)`: undefined; `None`: only Rego can tell.
    fn text_of(&self, path: &[String]) -> Option<Option<String>> {
        let printed = if path.is_empty() {
            let from_text = (!self.event.is_parsed())
                .then(|| print::input_text(self.event.text().get(), self.added))
                .flatten();
            match from_text {
                Some(text) => Ok(text),
                None => serde_json::to_string(&RegoText(self.event.value(), Some(self.added))),
            }
        } else {
            match self.lookup(path) {
                None => return Some(None),
                Some(Json::String(text)) => return Some(Some(text.clone())),
                Some(value) => serde_json::to_string(&RegoText(value, None)),
            }
        };
        printed.ok().map(Some)
    }
}

/// A value as Rego holds it, for serializing (to text, or to [`rego_form`]'s value): object keys
/// sorted, the added keys (when given) merged into the top object, and an error for a number
/// that is not an integer.
struct RegoText<'a>(&'a Json, Option<&'a AddedKeys>);

impl serde::Serialize for RegoText<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error, SerializeMap, SerializeSeq};
        match self.0 {
            Json::Number(n) if !(n.is_i64() || n.is_u64()) => {
                Err(S::Error::custom("a number that is not an integer"))
            }
            Json::Object(map) => {
                let mut entries: Vec<(&String, &Json)> = map.iter().collect();
                if let Some(added) = self.1 {
                    entries.extend(added.iter().filter(|(key, _)| !map.contains_key(*key)));
                }
                entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
                let mut out = serializer.serialize_map(Some(entries.len()))?;
                for (key, value) in entries {
                    out.serialize_entry(key, &RegoText(value, None))?;
                }
                out.end()
            }
            Json::Array(items) => {
                let mut out = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    out.serialize_element(&RegoText(item, None))?;
                }
                out.end()
            }
            other => other.serialize(serializer),
        }
    }
}

/// `value` as it comes out of Rego: object keys sorted; None for a number that is not an integer
/// (its text may change on the way through Rego).
fn rego_form(value: &Json) -> Option<Json> {
    serde_json::to_value(RegoText(value, None)).ok()
}

impl Expr {
    fn reads_added_keys(&self) -> bool {
        match self {
            Expr::Path(path) => path
                .first()
                .is_none_or(|key| key == "postee" || key == "hooker"),
            Expr::Literal(_) => false,
            Expr::Sprintf(_, args) | Expr::Array(args) => args.iter().any(Expr::reads_added_keys),
            Expr::Object(members) => members.iter().any(|(_, e)| e.reads_added_keys()),
        }
    }

    /// `Some(None)`: undefined; `None`: only Rego can tell.
    fn eval(&self, input: &Input<'_>) -> Option<Option<Json>> {
        Some(match self {
            Expr::Path(path) if path.is_empty() => Some(input.whole()?),
            Expr::Path(path) => match input.lookup(path) {
                None => None,
                Some(value) => Some(rego_form(value)?),
            },
            Expr::Literal(value) => Some(value.clone()),
            Expr::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    match item.eval(input)? {
                        Some(value) => out.push(value),
                        None => return Some(None),
                    }
                }
                Some(Json::Array(out))
            }
            Expr::Object(members) => {
                let mut entries = Vec::with_capacity(members.len());
                for (key, member) in members {
                    match member.eval(input)? {
                        Some(value) => entries.push((key, value)),
                        None => return Some(None),
                    }
                }
                entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
                Some(Json::Object(
                    entries.into_iter().map(|(k, v)| (k.clone(), v)).collect(),
                ))
            }
            Expr::Sprintf(pieces, args) => {
                let mut values = Vec::with_capacity(args.len());
                for arg in args {
                    match arg.eval(input)? {
                        Some(value) => values.push(value),
                        None => return Some(None),
                    }
                }
                Some(Json::String(sprintf(pieces, &values)?))
            }
        })
    }
}

/// Formats as Rego's `sprintf` does for the cases it is sure of: strings with `%s`/`%v`,
/// integers with `%v`/`%d`, as many arguments as verbs.
fn sprintf(pieces: &[Piece], args: &[Json]) -> Option<String> {
    let verbs = pieces
        .iter()
        .filter(|p| !matches!(p, Piece::Text(_)))
        .count();
    if verbs != args.len() {
        return None;
    }
    let mut out = String::new();
    let mut args = args.iter();
    for piece in pieces {
        match (piece, piece_arg(piece, &mut args)) {
            (Piece::Text(text), _) => out.push_str(text),
            (Piece::Value, Some(Json::String(s))) => out.push_str(s),
            (Piece::Value | Piece::Integer, Some(Json::Number(n))) if n.is_i64() || n.is_u64() => {
                out.push_str(&n.to_string())
            }
            _ => return None,
        }
    }
    Some(out)
}

fn piece_arg<'a>(piece: &Piece, args: &mut std::slice::Iter<'a, Json>) -> Option<&'a Json> {
    match piece {
        Piece::Text(_) => None,
        _ => args.next(),
    }
}

/// A `sprintf` format string in pieces; None for verbs beyond `%s`, `%v`, `%d`, `%%`.
fn format_pieces(format: &str) -> Option<Vec<Piece>> {
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            text.push(c);
            continue;
        }
        let piece = match chars.next()? {
            '%' => {
                text.push('%');
                continue;
            }
            's' | 'v' => Piece::Value,
            'd' => Piece::Integer,
            _ => return None,
        };
        if !text.is_empty() {
            pieces.push(Piece::Text(std::mem::take(&mut text)));
        }
        pieces.push(piece);
    }
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    Some(pieces)
}

/// A cursor over the module text.
struct Parser<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Parser<'a> {
    fn rest(&self) -> &'a str {
        &self.text[self.at..]
    }

    fn peek(&self, token: &str) -> bool {
        self.rest().starts_with(token)
    }

    fn eat(&mut self, token: &str) -> bool {
        let found = self.peek(token);
        if found {
            self.at += token.len();
        }
        found
    }

    /// Skips whitespace (newlines included) and comments.
    fn skip(&mut self) {
        loop {
            let rest = self.rest();
            let trimmed = rest.trim_start();
            self.at += rest.len() - trimmed.len();
            if self.peek("#") {
                self.at += self.rest().find('\n').unwrap_or(self.rest().len());
            } else {
                return;
            }
        }
    }

    /// Skips spaces and tabs only.
    fn skip_inline(&mut self) {
        let rest = self.rest();
        let trimmed = rest.trim_start_matches([' ', '\t', '\r']);
        self.at += rest.len() - trimmed.len();
    }

    fn identifier(&mut self) -> Option<&'a str> {
        let rest = self.rest();
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let name = &rest[..end];
        if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
            return None;
        }
        self.at += end;
        Some(name)
    }

    fn keyword(&mut self, word: &str) -> bool {
        let start = self.at;
        match self.identifier() {
            Some(name) if name == word => true,
            _ => {
                self.at = start;
                false
            }
        }
    }

    /// `a.b.c` after optional spaces, up to the end of its line.
    fn dotted(&mut self) -> Option<String> {
        self.skip_inline();
        let mut out = self.identifier()?.to_string();
        while self.eat(".") {
            out.push('.');
            out.push_str(self.identifier()?);
        }
        self.skip_inline();
        (self.at == self.text.len() || self.peek("\n") || self.peek("#")).then_some(out)
    }

    fn expr(&mut self) -> Option<Expr> {
        self.skip();
        if self.peek("\"") || self.peek("`") {
            return Some(Expr::Literal(Json::String(self.string()?)));
        }
        if self.eat("{") {
            let mut members: Vec<(String, Expr)> = Vec::new();
            loop {
                self.skip();
                if self.eat("}") {
                    break;
                }
                let key = self.string()?;
                self.skip();
                if !self.eat(":") {
                    return None;
                }
                let value = self.expr()?;
                if members.iter().any(|(known, _)| *known == key) {
                    return None;
                }
                members.push((key, value));
                self.skip();
                if !self.eat(",") {
                    self.skip();
                    if !self.eat("}") {
                        return None;
                    }
                    break;
                }
            }
            return Some(Expr::Object(members));
        }
        if self.eat("[") {
            return Some(Expr::Array(self.list("]")?));
        }
        if self
            .rest()
            .starts_with(|c: char| c.is_ascii_digit() || c == '-')
        {
            let rest = self.rest();
            let end = rest[1..]
                .find(|c: char| !c.is_ascii_digit())
                .map_or(rest.len(), |end| end + 1);
            let number: i64 = rest[..end].parse().ok()?;
            // `1.5`, `1e3`: not an integer literal.
            if rest[end..].starts_with(['.', 'e', 'E']) {
                return None;
            }
            self.at += end;
            return Some(Expr::Literal(number.into()));
        }
        let name = self.identifier()?;
        match name {
            "true" => Some(Expr::Literal(true.into())),
            "false" => Some(Expr::Literal(false.into())),
            "null" => Some(Expr::Literal(Json::Null)),
            "input" => {
                let mut path = Vec::new();
                loop {
                    if self.eat(".") {
                        path.push(self.identifier()?.to_string());
                    } else if self.peek("[\"") {
                        self.at += 1;
                        path.push(self.string()?);
                        if !self.eat("]") {
                            return None;
                        }
                    } else if self.peek("[") {
                        return None;
                    } else {
                        break;
                    }
                }
                Some(Expr::Path(path))
            }
            "sprintf" => {
                if !self.eat("(") {
                    return None;
                }
                self.skip();
                let pieces = format_pieces(&self.string()?)?;
                self.skip();
                if !self.eat(",") {
                    return None;
                }
                self.skip();
                if !self.eat("[") {
                    return None;
                }
                let args = self.list("]")?;
                self.skip();
                if !self.eat(")") {
                    return None;
                }
                Some(Expr::Sprintf(pieces, args))
            }
            _ => None,
        }
    }

    /// Expressions separated by commas up to `close`.
    fn list(&mut self, close: &str) -> Option<Vec<Expr>> {
        let mut items = Vec::new();
        loop {
            self.skip();
            if self.eat(close) {
                return Some(items);
            }
            items.push(self.expr()?);
            self.skip();
            if !self.eat(",") {
                self.skip();
                return self.eat(close).then_some(items);
            }
        }
    }

    /// A `"..."` string (JSON escapes) or a `` `...` `` raw string.
    fn string(&mut self) -> Option<String> {
        if self.eat("`") {
            let end = self.rest().find('`')?;
            let text = self.rest()[..end].to_string();
            self.at += end + 1;
            return Some(text);
        }
        if !self.peek("\"") {
            return None;
        }
        let rest = self.rest();
        let mut escaped = false;
        for (i, c) in rest.char_indices().skip(1) {
            match c {
                '\n' => return None,
                '\\' if !escaped => escaped = true,
                '"' if !escaped => {
                    let text: String = serde_json::from_str(&rest[..=i]).ok()?;
                    self.at += i + 1;
                    return Some(text);
                }
                _ => escaped = false,
            }
        }
        None
    }
}

#[cfg(test)]
mod tests;
