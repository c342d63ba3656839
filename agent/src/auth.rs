//! Intake authentication: bearer tokens on the TCP listeners (the Unix socket is protected by its
//! file mode and group). Tokens are compared in constant time and never logged.

use std::path::Path;

/// The accepted tokens.
pub struct Tokens(Vec<Vec<u8>>);

impl Tokens {
    /// From `HOOKER_AUTH_TOKEN` (comma-separated) and/or a file of one token per line.
    pub fn load(inline: Option<&str>, file: Option<&Path>) -> Result<Option<Tokens>, String> {
        let mut tokens: Vec<Vec<u8>> = Vec::new();
        if let Some(inline) = inline {
            tokens.extend(
                inline
                    .split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(|t| t.as_bytes().to_vec()),
            );
        }
        if let Some(file) = file {
            let text = std::fs::read_to_string(file)
                .map_err(|e| format!("cannot read token file {}: {e}", file.display()))?;
            tokens.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|t| !t.is_empty() && !t.starts_with('#'))
                    .map(|t| t.as_bytes().to_vec()),
            );
            if tokens.is_empty() {
                return Err(format!("token file {} holds no token", file.display()));
            }
        }
        Ok((!tokens.is_empty()).then_some(Tokens(tokens)))
    }

    /// Checks an `Authorization` header value (`Bearer <token>`).
    pub fn accepts(&self, header: Option<&str>) -> bool {
        let Some(token) = header.and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        }) else {
            return false;
        };
        let presented = token.trim().as_bytes();
        // Check every token, whatever matched, so timing does not reveal which or how much.
        self.0.iter().fold(false, |ok, accepted| {
            ok | constant_time_eq(accepted, presented)
        })
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_checked_exactly() {
        let tokens = Tokens::load(Some("alpha, beta"), None).unwrap().unwrap();
        assert!(tokens.accepts(Some("Bearer alpha")));
        assert!(tokens.accepts(Some("Bearer beta")));
        assert!(!tokens.accepts(Some("Bearer alph")));
        assert!(!tokens.accepts(Some("alpha")));
        assert!(!tokens.accepts(None));
        assert!(Tokens::load(None, None).unwrap().is_none());
    }
}
