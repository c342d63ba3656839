//! A small lexer for Rego module text, enough to find identifiers outside strings and comments:
//! what `lazy_imports` and `input_paths` read modules with.

/// An identifier outside strings and comments.
pub struct Token {
    pub start: usize,
    pub end: usize,
    /// Inside how many brackets (`(`, `[`, `{`).
    pub depth: usize,
    /// The first thing on its line.
    pub line_start: bool,
}

pub fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

pub fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The end of the identifier starting at `at`.
pub fn ident_end(bytes: &[u8], at: usize) -> usize {
    bytes[at..]
        .iter()
        .position(|&b| !is_ident(b))
        .map_or(bytes.len(), |n| at + n)
}

pub fn identifiers(module: &str) -> Vec<Token> {
    let bytes = module.as_bytes();
    let mut tokens = Vec::new();
    let (mut at, mut depth, mut line_start) = (0, 0usize, true);
    while at < bytes.len() {
        let b = bytes[at];
        match b {
            b'\n' => line_start = true,
            b' ' | b'\t' | b'\r' => {}
            b'#' => {
                at = bytes[at..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(bytes.len(), |n| at + n);
                continue;
            }
            b'"' => {
                at += 1;
                while at < bytes.len() && bytes[at] != b'"' && bytes[at] != b'\n' {
                    at += if bytes[at] == b'\\' { 2 } else { 1 };
                }
                line_start = false;
            }
            b'`' => {
                at = bytes[at + 1..]
                    .iter()
                    .position(|&b| b == b'`')
                    .map_or(bytes.len(), |n| at + 1 + n);
                line_start = false;
            }
            b'(' | b'[' | b'{' => {
                depth += 1;
                line_start = false;
            }
            b')' | b']' | b'}' => {
                depth = depth.saturating_sub(1);
                line_start = false;
            }
            _ if is_ident_start(b) && (at == 0 || !is_ident(bytes[at - 1])) => {
                let end = ident_end(bytes, at);
                tokens.push(Token {
                    start: at,
                    end,
                    depth,
                    line_start,
                });
                line_start = false;
                at = end;
                continue;
            }
            _ => line_start = false,
        }
        at += 1;
    }
    tokens
}
