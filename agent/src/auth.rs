//! Intake authentication: bearer tokens on the TCP listeners (the Unix socket is protected by its
//! file mode and group). Tokens are kept and compared as SHA-256 digests in constant time, so
//! neither a token's content nor its length shows in timing, and they are never logged.
//!
//! A token setting that is present but holds no token (`""`, `" "`, `","`, a file of comments)
//! is refused: it must never turn authentication off.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use ring::digest::{SHA256, SHA256_OUTPUT_LEN, digest};

/// The variable that holds tokens inline.
pub const TOKEN_ENV: &str = "HOOKER_AUTH_TOKEN";
/// The variable that names a token file.
pub const TOKEN_FILE_ENV: &str = "HOOKER_AUTH_TOKEN_FILE";

/// Why the token settings cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error(
        "{TOKEN_ENV} is set but holds no token (it is empty, blank or only commas); set one or more tokens, or unset it to run without authentication"
    )]
    EmptyInline,
    #[error(
        "{TOKEN_FILE_ENV} is set but empty; name a file of tokens, or unset it to run without authentication"
    )]
    EmptyFilePath,
    #[error("cannot read token file {path}: {message}")]
    Read { path: String, message: String },
    #[error(
        "token file {path} holds no token (only blank or comment lines); add one, or unset {TOKEN_FILE_ENV} to run without authentication"
    )]
    EmptyFile { path: String },
}

/// The token settings as given: a flag's value, else the environment's, where a variable set to
/// the empty string counts as given (clap may treat it as absent).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenSources {
    pub inline: Option<String>,
    pub file: Option<PathBuf>,
}

impl TokenSources {
    /// From the parsed settings, completed with `env` (the process environment in `run`): a
    /// variable present but empty becomes an empty value, which [`Tokens::load`] refuses.
    pub fn new(
        inline: Option<&str>,
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<std::ffi::OsString>,
    ) -> TokenSources {
        let set_but_empty = |name: &str| env(name).is_some_and(|value| value.is_empty());
        TokenSources {
            inline: inline
                .map(str::to_string)
                .or_else(|| set_but_empty(TOKEN_ENV).then(String::new)),
            file: file
                .map(Path::to_path_buf)
                .or_else(|| set_but_empty(TOKEN_FILE_ENV).then(PathBuf::new)),
        }
    }
}

/// The accepted tokens, as SHA-256 digests.
pub struct Tokens(Vec<[u8; SHA256_OUTPUT_LEN]>);

impl Tokens {
    /// From `HOOKER_AUTH_TOKEN` (comma-separated) and/or a file of one token per line (`#`
    /// comments). `None` when neither is set; an error when one is set and yields no token.
    pub fn load(sources: &TokenSources) -> Result<Option<Tokens>, TokenError> {
        let mut tokens: Vec<[u8; SHA256_OUTPUT_LEN]> = Vec::new();
        if let Some(inline) = &sources.inline {
            let before = tokens.len();
            tokens.extend(
                inline
                    .split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(|t| hash(t.as_bytes())),
            );
            if tokens.len() == before {
                return Err(TokenError::EmptyInline);
            }
        }
        if let Some(file) = &sources.file {
            if file.as_os_str() == OsStr::new("") {
                return Err(TokenError::EmptyFilePath);
            }
            let path = file.display().to_string();
            let text = std::fs::read_to_string(file).map_err(|e| TokenError::Read {
                path: path.clone(),
                message: e.to_string(),
            })?;
            let before = tokens.len();
            tokens.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|t| !t.is_empty() && !t.starts_with('#'))
                    .map(|t| hash(t.as_bytes())),
            );
            if tokens.len() == before {
                return Err(TokenError::EmptyFile { path });
            }
        }
        Ok((!tokens.is_empty()).then_some(Tokens(tokens)))
    }

    /// Checks an `Authorization` header value: `Bearer <token>`, the scheme in any case
    /// (RFC 9110 §11.1: auth schemes are case-insensitive).
    pub fn accepts(&self, header: Option<&str>) -> bool {
        let Some(token) = header.and_then(bearer_token) else {
            return false;
        };
        let presented = hash(token.as_bytes());
        // Check every token, whatever matched, so timing does not reveal which matched.
        self.0.iter().fold(false, |ok, accepted| {
            ok | constant_time_eq(accepted, &presented)
        })
    }
}

/// The token of a `Bearer` credential, `None` for another scheme or an empty token.
fn bearer_token(header: &str) -> Option<&str> {
    let header = header.trim_start();
    let (scheme, token) = header.split_once([' ', '\t'])?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn hash(token: &[u8]) -> [u8; SHA256_OUTPUT_LEN] {
    let mut out = [0u8; SHA256_OUTPUT_LEN];
    out.copy_from_slice(digest(&SHA256, token).as_ref());
    out
}

/// Compares two digests in time that depends only on their (fixed) length.
fn constant_time_eq(a: &[u8; SHA256_OUTPUT_LEN], b: &[u8; SHA256_OUTPUT_LEN]) -> bool {
    let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(difference) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inline(text: &str) -> TokenSources {
        TokenSources {
            inline: Some(text.into()),
            file: None,
        }
    }

    #[test]
    fn bearer_tokens_are_checked_exactly() {
        let tokens = Tokens::load(&inline("alpha, beta")).unwrap().unwrap();
        assert!(tokens.accepts(Some("Bearer alpha")));
        assert!(tokens.accepts(Some("Bearer beta")));
        assert!(!tokens.accepts(Some("Bearer alph")));
        assert!(!tokens.accepts(Some("Bearer alphx")));
        assert!(!tokens.accepts(Some("Bearer alphaa")));
        assert!(!tokens.accepts(Some("Bearer ")));
        assert!(!tokens.accepts(Some("Basic alpha")));
        assert!(!tokens.accepts(Some("alpha")));
        assert!(!tokens.accepts(None));
        assert!(Tokens::load(&TokenSources::default()).unwrap().is_none());
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        let tokens = Tokens::load(&inline("alpha")).unwrap().unwrap();
        for header in [
            "bearer alpha",
            "BEARER alpha",
            "BeArEr  alpha",
            "Bearer\talpha",
        ] {
            assert!(tokens.accepts(Some(header)), "{header}");
        }
        // The token itself is compared exactly.
        assert!(!tokens.accepts(Some("Bearer ALPHA")));
    }

    #[test]
    fn a_token_setting_without_a_token_is_refused() {
        for text in ["", " ", ",", " , ,", "\t"] {
            assert_eq!(
                Tokens::load(&inline(text)).err(),
                Some(TokenError::EmptyInline),
                "{text:?}"
            );
        }
        let dir = std::env::temp_dir().join(format!("hooker-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("tokens");
        std::fs::write(&file, "# none yet\n\n   \n").unwrap();
        let from_file = TokenSources {
            inline: None,
            file: Some(file.clone()),
        };
        assert!(matches!(
            Tokens::load(&from_file),
            Err(TokenError::EmptyFile { .. })
        ));
        // A good inline token does not excuse an empty file, nor the reverse.
        let both = TokenSources {
            inline: Some("alpha".into()),
            file: Some(file.clone()),
        };
        assert!(matches!(
            Tokens::load(&both),
            Err(TokenError::EmptyFile { .. })
        ));
        std::fs::write(&file, "from-file\n").unwrap();
        let both = TokenSources {
            inline: Some(",".into()),
            file: Some(file),
        };
        assert_eq!(Tokens::load(&both).err(), Some(TokenError::EmptyInline));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_variable_set_to_empty_counts_as_set() {
        let env = |name: &str| (name == TOKEN_ENV || name == TOKEN_FILE_ENV).then(Default::default);
        let sources = TokenSources::new(None, None, env);
        assert_eq!(sources.inline.as_deref(), Some(""));
        assert_eq!(sources.file.as_deref(), Some(Path::new("")));
        assert_eq!(Tokens::load(&sources).err(), Some(TokenError::EmptyInline));
        let sources = TokenSources {
            inline: None,
            ..sources
        };
        assert_eq!(
            Tokens::load(&sources).err(),
            Some(TokenError::EmptyFilePath)
        );
        // Unset stays unset; a flag's value wins over the environment.
        assert_eq!(
            TokenSources::new(None, None, |_| None),
            TokenSources::default()
        );
        let flag = TokenSources::new(Some("alpha"), None, env);
        assert_eq!(flag.inline.as_deref(), Some("alpha"));
    }
}
