//! Secret values (`user`, `password`, `token`, API keys): resolved at load, never printed.
//!
//! A value may be written literally, as `$NAME` or `${NAME}` (an environment variable, Postee's
//! rule), or as `${file:/path}` (the file's content with trailing newlines trimmed: Kubernetes
//! Secret volumes, Docker secrets).

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer};

/// A resolved secret. `Debug` and `Display` print `***`, so it cannot leak through logs or errors.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Resolves `$NAME`, `${NAME}` and `${file:/path}` references; anything else is literal.
    pub fn resolve(raw: &str) -> Result<Secret, String> {
        let Some(reference) = raw.strip_prefix('$') else {
            return Ok(Secret(raw.to_string()));
        };
        if let Some(inner) = reference
            .strip_prefix('{')
            .and_then(|r| r.strip_suffix('}'))
        {
            if let Some(path) = inner.strip_prefix("file:") {
                return std::fs::read_to_string(path)
                    .map(|content| Secret(content.trim_end_matches(['\n', '\r']).to_string()))
                    .map_err(|err| format!("cannot read secret file `{path}`: {err}"));
            }
            return from_env(inner);
        }
        from_env(reference)
    }
}

fn from_env(name: &str) -> Result<Secret, String> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!(
            "`${name}` is not a valid environment variable reference"
        ));
    }
    std::env::var(name)
        .map(Secret)
        .map_err(|_| format!("environment variable `{name}` is not set"))
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = match serde_json::Value::deserialize(deserializer)? {
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Null => String::new(),
            _ => return Err(de::Error::custom("expected a string")),
        };
        Secret::resolve(&raw).map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_prints_its_value() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?} {secret}"), "*** ***");
        assert_eq!(secret.expose(), "hunter2");
    }

    #[test]
    fn secret_reads_files_and_reports_missing_env() {
        let dir = std::env::temp_dir().join(format!("hooker-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        std::fs::write(&path, "s3cr3t\n").unwrap();
        let secret = Secret::resolve(&format!("${{file:{}}}", path.display())).unwrap();
        assert_eq!(secret.expose(), "s3cr3t");
        let err = Secret::resolve("$HOOKER_TEST_SURELY_UNSET_VARIABLE").unwrap_err();
        assert!(err.contains("HOOKER_TEST_SURELY_UNSET_VARIABLE"), "{err}");
        assert_eq!(Secret::resolve("plain").unwrap().expose(), "plain");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
