//! `lib/trivy.rego`'s card in Rust: a Trivy JSON report (`ArtifactName`, `Metadata`,
//! `Results[].Vulnerabilities`) as facts, counts per severity and the worst vulnerabilities, for the
//! built-in `hooker.trivy.*` templates. A report of any size is read in place: only the
//! vulnerabilities a channel shows are copied.

use serde_json::{Map, Value};

use super::render::{Card, R, Unsupported, VULN_LEVELS, Vuln, Vulns, link_ok, one_line, text};

fn filled(value: Option<&Value>) -> Option<&str> {
    value.and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// `object.get(obj, key, "")` as text; `object.get` on something not an object is left to Rego.
fn text_of_key(obj: Option<&Value>, key: &str) -> R<String> {
    match obj {
        None => Ok(String::new()),
        Some(Value::Object(map)) => map.get(key).map_or(Ok(String::new()), text),
        Some(_) => Err(Unsupported),
    }
}

/// `render.vuln_level_of[severity]` (else "unknown"), as an index into [`VULN_LEVELS`]: the
/// lower-case, upper-case or capitalised spelling of a level (and of moderate, negligible).
fn vuln_level(severity: Option<&Value>) -> usize {
    let Some(word) = severity.and_then(Value::as_str) else {
        return 4;
    };
    let spellings = [
        ("critical", 0),
        ("high", 1),
        ("medium", 2),
        ("moderate", 2),
        ("low", 3),
        ("negligible", 3),
        ("unknown", 4),
    ];
    for (base, level) in spellings {
        let mut capital = base[..1].to_uppercase();
        capital.push_str(&base[1..]);
        if word == base || word == base.to_uppercase() || word == capital {
            return level;
        }
    }
    4
}

/// The card of `lib/trivy.rego` for a report, showing at most `limit` vulnerabilities.
pub fn card(input: &Value, limit: usize) -> R<Card> {
    let report = input.as_object().ok_or(Unsupported)?;
    let artifact = filled(report.get("ArtifactName")).unwrap_or("unknown artifact");
    let artifact_type = match report.get("ArtifactType") {
        Some(value) => text(value)?,
        None => String::new(),
    };
    let results: Vec<&Map<String, Value>> = match report.get("Results") {
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_object).collect(),
        _ => Vec::new(),
    };
    fn list<'a>(r: &'a Map<String, Value>, key: &str) -> &'a [Value] {
        match r.get(key) {
            Some(Value::Array(items)) => items.as_slice(),
            _ => &[],
        }
    }
    // `all_vulns`, as references with their level.
    let mut all: Vec<(&Map<String, Value>, usize)> = Vec::new();
    for r in &results {
        for v in list(r, "Vulnerabilities") {
            if let Some(v) = v.as_object() {
                all.push((v, vuln_level(v.get("Severity"))));
            }
        }
    }
    let mut counts = [0u64; 5];
    for (_, level) in &all {
        counts[*level] += 1;
    }
    let mut misconfigurations = 0u64;
    for r in &results {
        for m in list(r, "Misconfigurations") {
            let m = m.as_object().ok_or(Unsupported)?;
            if m.get("Status").is_none_or(|s| *s == "FAIL") {
                misconfigurations += 1;
            }
        }
    }
    let secrets: usize = results.iter().map(|r| list(r, "Secrets").len()).sum();
    let metadata = report.get("Metadata");
    let os = match metadata.and_then(|m| m.get("OS")) {
        Some(os @ Value::Object(fields)) => {
            let eosl = if fields.get("EOSL") == Some(&Value::Bool(true)) {
                "(end of life)"
            } else {
                ""
            };
            let family = text_of_key(Some(os), "Family")?;
            let name = text_of_key(Some(os), "Name")?;
            join_nonempty(&[&family, &name, eosl], " ")
        }
        _ => String::new(),
    };
    let scanner = match filled(report.get("Trivy").and_then(|t| t.get("Version"))) {
        Some(version) => format!("Trivy {version}"),
        None => String::new(),
    };
    let vuln_count = all.len();
    let vulns = Vulns {
        counts,
        shown: Vec::new(),
        left_out: 0,
    };
    let lead = if vuln_count > 0 {
        format!(
            "{vuln_count} vulnerabilities found: {}.",
            vulns.counts_line()
        )
    } else {
        "No vulnerabilities found.".to_string()
    };
    let finding = format!("trivy:{artifact}").replace(' ', "_");
    let count_text = |n: u64| if n == 0 { String::new() } else { n.to_string() };
    let facts: Vec<(String, String)> = [
        ("Artifact", artifact.to_string()),
        ("Type", artifact_type.clone()),
        ("OS", os),
        ("Image ID", text_of_key(metadata, "ImageID")?),
        ("Scanned", text_of_key(Some(input), "CreatedAt")?),
        ("Scanner", scanner),
        ("Misconfigurations", count_text(misconfigurations)),
        ("Secrets", count_text(secrets as u64)),
    ]
    .into_iter()
    .map(|(label, value)| (label.to_string(), one_line(&value)))
    .filter(|(_, value)| !value.is_empty())
    .collect();
    let url = text_of_key(metadata, "RepoURL")?;
    let url = if link_ok(&url) { url } else { String::new() };
    // `render.vulns_level`: the worst level found; unknown counts as info.
    let level = ["critical", "high", "medium", "low"]
        .into_iter()
        .zip(counts)
        .find(|(_, n)| *n > 0)
        .map_or("info", |(level, _)| level);
    // Worst first, in the report's order within a level; only the first `limit` are read.
    let mut shown = Vec::new();
    'levels: for (level, name) in VULN_LEVELS.into_iter().enumerate() {
        for (v, _) in all.iter().filter(|(_, l)| *l == level) {
            if shown.len() == limit {
                break 'levels;
            }
            let field = |key: &str| -> R<String> {
                Ok(one_line(&v.get(key).map_or(Ok(String::new()), text)?))
            };
            shown.push(Vuln {
                id: field("VulnerabilityID")?,
                severity: name,
                pkg: field("PkgName")?,
                installed: field("InstalledVersion")?,
                fixed: field("FixedVersion")?,
                title: field("Title")?,
                url: v.get("PrimaryURL").map_or(Ok(String::new()), text)?,
            });
        }
    }
    let left_out = vuln_count - shown.len();
    let tags = ["trivy", &artifact_type, level]
        .into_iter()
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect();
    Ok(Card {
        title: format!("{artifact} vulnerability scan report"),
        lead,
        url,
        vulns: Some(Vulns {
            shown,
            left_out,
            ..vulns
        }),
        facts,
        sections: Vec::new(),
        severity: level,
        finding,
        entity: artifact.to_string(),
        source: "trivy".to_string(),
        component: artifact_type,
        group: String::new(),
        class: "vulnerability scan".to_string(),
        tags,
    })
}

fn join_nonempty(parts: &[&str], separator: &str) -> String {
    let kept: Vec<&str> = parts.iter().copied().filter(|p| !p.is_empty()).collect();
    kept.join(separator)
}

/// What a pruned parse of a report keeps: a member read whole, or an object's listed members
/// (each element of an array is pruned alike; any other value is kept whole).
enum Node {
    Whole,
    Keys(&'static [(&'static str, Node)]),
}

/// Every part of a report the card and the templates read.
const REPORT: Node = Node::Keys(&[
    ("ArtifactName", Node::Whole),
    ("ArtifactType", Node::Whole),
    ("CreatedAt", Node::Whole),
    ("Trivy", Node::Keys(&[("Version", Node::Whole)])),
    (
        "Metadata",
        Node::Keys(&[
            ("OS", Node::Whole),
            ("ImageID", Node::Whole),
            ("RepoURL", Node::Whole),
        ]),
    ),
    (
        "Results",
        Node::Keys(&[
            (
                "Vulnerabilities",
                Node::Keys(&[
                    ("VulnerabilityID", Node::Whole),
                    ("Severity", Node::Whole),
                    ("PkgName", Node::Whole),
                    ("InstalledVersion", Node::Whole),
                    ("FixedVersion", Node::Whole),
                    ("Title", Node::Whole),
                    ("PrimaryURL", Node::Whole),
                ]),
            ),
            ("Misconfigurations", Node::Keys(&[("Status", Node::Whole)])),
            ("Secrets", Node::Keys(&[])),
        ]),
    ),
    ("application_scope_owners", Node::Whole),
]);

/// A report from its (checked) JSON text, holding only what [`card`] reads: a 10 MB report's
/// descriptions, CVSS vectors and references are skipped, never built. At every path the card
/// reads it holds what the full parse holds.
pub fn pruned(text: &str) -> Result<Value, serde_json::Error> {
    use serde::de::DeserializeSeed;
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let value = Seed(&REPORT).deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(value)
}

struct Seed(&'static Node);

impl<'de> serde::de::DeserializeSeed<'de> for Seed {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        match self.0 {
            Node::Whole => serde::Deserialize::deserialize(deserializer),
            Node::Keys(_) => deserializer.deserialize_any(self),
        }
    }
}

impl<'de> serde::de::Visitor<'de> for Seed {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let Node::Keys(keys) = self.0 else {
            return Err(serde::de::Error::custom("a whole value is not pruned"));
        };
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            match keys.iter().find(|(name, _)| *name == key) {
                Some((_, child)) => {
                    let value = map.next_value_seed(Seed(child))?;
                    out.insert(key, value);
                }
                None => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(Value::Object(out))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(Seed(self.0))? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_bool<E>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Value, E> {
        Ok(Value::Number(value.into()))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Value, E> {
        Ok(Value::Number(value.into()))
    }

    fn visit_f64<E>(self, value: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, value: &str) -> Result<Value, E> {
        Ok(Value::String(value.to_owned()))
    }

    fn visit_string<E>(self, value: String) -> Result<Value, E> {
        Ok(Value::String(value))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severities_are_read_in_the_three_spellings_rego_knows() {
        let level = |s: &str| VULN_LEVELS[vuln_level(Some(&Value::from(s)))];
        assert_eq!(level("HIGH"), "high");
        assert_eq!(level("Moderate"), "medium");
        assert_eq!(level("negligible"), "low");
        assert_eq!(level("hIgh"), "unknown");
        assert_eq!(VULN_LEVELS[vuln_level(Some(&Value::from(3)))], "unknown");
    }
}
