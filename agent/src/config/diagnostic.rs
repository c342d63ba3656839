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
        for e in by_line(&self.errors) {
            writeln!(f, "error: {e}")?;
        }
        for w in by_line(&self.warnings) {
            writeln!(f, "warning: {w}")?;
        }
        Ok(())
    }
}

/// Diagnostics in the order of the config file (those without a line last), each kind of check
/// having found its problems in its own pass.
pub fn by_line(list: &[Diagnostic]) -> Vec<&Diagnostic> {
    let mut sorted: Vec<&Diagnostic> = list.iter().collect();
    sorted.sort_by_key(|d| (d.file.clone(), d.line.is_none(), d.line));
    sorted
}

/// The candidate `word` is most likely a misspelling of: the nearest by edit distance
/// (transpositions count once, case is ignored), when it is near enough.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let lower = word.to_lowercase();
    let limit = match lower.chars().count() {
        0..=3 => 1,
        4..=7 => 2,
        _ => 3,
    };
    candidates
        .into_iter()
        .filter(|candidate| *candidate != word && !candidate.is_empty())
        .map(|candidate| {
            let distance = strsim::damerau_levenshtein(&lower, &candidate.to_lowercase());
            (distance, candidate)
        })
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// `; did you mean `x`?` for a misspelled key, or nothing.
pub fn suggest_key<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    closest(word, candidates)
        .map(|key| format!("; did you mean `{key}`?"))
        .unwrap_or_default()
}

/// The keys a derived struct reads, as serde names them (after renames); empty for a type that
/// is not a struct.
pub fn fields_of<T: serde::de::DeserializeOwned>() -> &'static [&'static str] {
    let mut fields = None;
    let _ = T::deserialize(FieldNames(&mut fields));
    fields.unwrap_or(&[])
}

/// A deserializer that only records the field names a struct asks for.
struct FieldNames<'a>(&'a mut Option<&'static [&'static str]>);

impl<'de> serde::Deserializer<'de> for FieldNames<'_> {
    type Error = serde::de::value::Error;

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(serde::de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: serde::de::Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = Some(fields);
        Err(serde::de::Error::custom("field names recorded"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
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
