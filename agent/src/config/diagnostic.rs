//! Configuration problems, each pointing at a file, a line, an item and a key.

use std::fmt;
use std::path::PathBuf;

/// Where a problem is: `cfg.yaml:12: action "jira", key "url"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: Option<PathBuf>,
    pub line: Option<u64>,
    /// `route "r1"`, `template "raw"`, `action "slack"`, or the top level.
    pub place: String,
    pub key: Option<String>,
    pub message: String,
}

impl Diagnostic {
    pub fn new(place: impl Into<String>, message: impl Into<String>) -> Self {
        Diagnostic {
            file: None,
            line: None,
            place: place.into(),
            key: None,
            message: message.into(),
        }
    }

    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    pub fn line(mut self, line: Option<u64>) -> Self {
        if line.is_some() {
            self.line = line;
        }
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, self.line) {
            (Some(file), Some(line)) => write!(f, "{}:{line}: ", file.display())?,
            (Some(file), None) => write!(f, "{}: ", file.display())?,
            (None, Some(line)) => write!(f, "line {line}: ")?,
            (None, None) => {}
        }
        f.write_str(&self.place)?;
        if let Some(key) = &self.key {
            write!(f, ", key `{key}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Everything found wrong (errors) or suspicious (warnings) in one config.
#[derive(Debug, Default, Clone)]
pub struct Diagnostics {
    pub errors: Vec<Diagnostic>,
    pub warnings: Vec<Diagnostic>,
}

impl Diagnostics {
    pub fn error(&mut self, diagnostic: Diagnostic) {
        self.errors.push(diagnostic);
    }

    pub fn warn(&mut self, diagnostic: Diagnostic) {
        self.warnings.push(diagnostic);
    }

    pub fn has_errors(&self) -> bool {
        !self.errors.is_empty()
    }

    /// Stamps the config file's path on every diagnostic that has none.
    pub fn with_file(mut self, file: Option<&std::path::Path>) -> Self {
        if let Some(file) = file {
            for d in self.errors.iter_mut().chain(self.warnings.iter_mut()) {
                d.file.get_or_insert_with(|| file.to_path_buf());
            }
        }
        self
    }

    pub fn extend(&mut self, other: Diagnostics) {
        self.errors.extend(other.errors);
        self.warnings.extend(other.warnings);
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for e in &self.errors {
            writeln!(f, "error: {e}")?;
        }
        for w in &self.warnings {
            writeln!(f, "warning: {w}")?;
        }
        Ok(())
    }
}

/// Why a config could not be loaded at all.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: invalid YAML: {message}", path.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "config".into()))]
    Yaml {
        path: Option<PathBuf>,
        message: String,
    },
    #[error("{} error(s) in config:\n{diagnostics}", diagnostics.errors.len())]
    Invalid { diagnostics: Diagnostics },
}
