//! `lib/render.rego` in Rust, for the cards the native built-ins make: the value helpers (`text`,
//! `clip`, `one_line`), each channel's escaping, and the channel renderers (plain text, Slack
//! blocks, HTML, Teams, Jira, the PagerDuty/OpsGenie alert object).
//!
//! Every function copies its Rego twin's quirks, because the output must be byte-identical: regorus
//! counts a string in UTF-16 units (`count`) but cuts it in characters (`substring`), sorts object
//! keys bytewise, and prints integers plainly. Where a value would need a rule this file does not
//! copy (a fractional number), the caller gets [`Unsupported`] and renders through Rego instead.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{Map, Value};

/// The input needs something only the Rego module does exactly (a fractional number, say): render
/// the event through Rego.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsupported;

pub type R<T> = Result<T, Unsupported>;

/// A card as `prepare` leaves it: facts with a value, one line each; sections with at least one
/// row; a URL that passed `link_ok` (or ""); the vulnerabilities shown.
pub struct Card {
    pub title: String,
    pub lead: String,
    pub url: String,
    /// `counts` and the vulnerabilities within the channel's limit (vulnerability reports).
    pub vulns: Option<Vulns>,
    pub facts: Vec<(String, String)>,
    pub sections: Vec<Section>,
    /// One of `critical|high|medium|low|info`.
    pub severity: &'static str,
    pub finding: String,
    pub entity: String,
    pub source: String,
    pub component: String,
    pub group: String,
    pub class: String,
    pub tags: Vec<String>,
}

/// Severity levels of vulnerabilities, worst first (`render.vuln_levels`).
pub const VULN_LEVELS: [&str; 5] = ["critical", "high", "medium", "low", "unknown"];

pub struct Vulns {
    /// Per level of [`VULN_LEVELS`].
    pub counts: [u64; 5],
    pub shown: Vec<Vuln>,
    pub left_out: usize,
}

impl Vulns {
    /// `counts_text`: "1 critical, 2 high, 0 medium, 0 low, 0 unknown".
    pub fn counts_line(&self) -> String {
        VULN_LEVELS
            .iter()
            .zip(self.counts)
            .map(|(level, n)| format!("{n} {level}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// `shown_vuln`: every text on one line but the URL.
pub struct Vuln {
    pub id: String,
    /// One of [`VULN_LEVELS`].
    pub severity: &'static str,
    pub pkg: String,
    pub installed: String,
    pub fixed: String,
    pub title: String,
    pub url: String,
}

/// `render.link_ok`: http(s), no spaces, quotes or link delimiters.
pub fn link_ok(url: &str) -> bool {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    rest.is_some_and(|rest| {
        !rest.is_empty()
            && !rest.contains([' ', '\t', '\r', '\n', '"', '\'', '<', '>', '|', '[', ']'])
    })
}

pub struct Section {
    pub heading: String,
    pub rows: Vec<(String, String)>,
}

// === Values ===

/// `render.text`: strings as they are, null as "", anything else as compact JSON.
pub fn text(value: &Value) -> R<String> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Null => Ok(String::new()),
        other => {
            let mut out = String::new();
            marshal(other, &mut out)?;
            Ok(out)
        }
    }
}

/// `json.marshal` as regorus writes it: compact, object keys sorted bytewise.
fn marshal(value: &Value, out: &mut String) -> R<()> {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&integer(n)?.to_string()),
        Value::String(s) => out.push_str(&serde_json::to_string(s).map_err(|_| Unsupported)?),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                marshal(item, out)?;
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(key).map_err(|_| Unsupported)?);
                out.push(':');
                marshal(item, out)?;
            }
            out.push('}');
        }
    }
    Ok(())
}

/// An integer as regorus prints it (`%v`, `json.marshal`); a fractional number is left to Rego.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Integer {
    Signed(i64),
    Unsigned(u64),
}

impl std::fmt::Display for Integer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Integer::Signed(n) => write!(f, "{n}"),
            Integer::Unsigned(n) => write!(f, "{n}"),
        }
    }
}

pub fn integer(n: &serde_json::Number) -> R<Integer> {
    if let Some(i) = n.as_i64() {
        Ok(Integer::Signed(i))
    } else if let Some(u) = n.as_u64() {
        Ok(Integer::Unsigned(u))
    } else {
        Err(Unsupported)
    }
}

/// `count(s)`: regorus counts UTF-16 code units.
fn count(s: &str) -> usize {
    s.encode_utf16().count()
}

/// `render.clip`: at most `n` (by `count`); a cut keeps `n - 1` characters and adds "…".
pub fn clip(s: &str, n: usize) -> String {
    if count(s) <= n {
        return s.to_string();
    }
    let mut out: String = s.chars().take(n.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// `render.one_line`: CR LF, LF, CR and tab become spaces.
pub fn one_line(s: &str) -> String {
    if !s.contains(['\r', '\n', '\t']) {
        return s.to_string();
    }
    s.replace("\r\n", " ").replace(['\n', '\r', '\t'], " ")
}

// === Escaping ===

pub fn html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

pub fn slack(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

fn slack_code(s: &str) -> String {
    if s.is_empty() {
        return String::new();
    }
    format!("`{}`", slack(s).replace('`', "'"))
}

/// `render.jira`: backslashes become `&#92;` (so does U+E000, the Rego module's placeholder for
/// them), line breaks spaces, and markup characters are escaped with a backslash.
pub fn jira(s: &str) -> String {
    let line = one_line(s);
    let mut out = String::with_capacity(line.len());
    for c in line.chars() {
        match c {
            '\\' | '\u{E000}' => out.push_str("&#92;"),
            '|' | '{' | '}' | '[' | ']' | '!' | '*' | '_' | '^' | '~' | '#' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

fn jira_cell(s: &str) -> String {
    if s.is_empty() {
        " ".to_string()
    } else {
        jira(s)
    }
}

fn join_nonempty(parts: &[&str], separator: &str) -> String {
    let kept: Vec<&str> = parts.iter().copied().filter(|p| !p.is_empty()).collect();
    kept.join(separator)
}

// === Plain text ===

/// `render.plain`: the title, then the body.
pub fn plain(card: &Card) -> String {
    join_nonempty(&[&card.title, &text_of(card)], "\n")
}

/// `render.text_of`.
fn text_of(card: &Card) -> String {
    let facts = card
        .facts
        .iter()
        .map(|(label, value)| format!("{label}: {value}"))
        .collect::<Vec<_>>()
        .join("\n");
    let sections = card
        .sections
        .iter()
        .map(|s| {
            let mut out = format!("{}:", s.heading);
            for (label, value) in &s.rows {
                let _ = write!(out, "\n  {label}: {}", clip(value, 500));
            }
            out
        })
        .collect::<Vec<_>>()
        .join("\n\n");
    let vulns = card.vulns.as_ref().map(text_vulns).unwrap_or_default();
    let url = if card.url.is_empty() {
        String::new()
    } else {
        format!("Link: {}", card.url)
    };
    join_nonempty(&[&card.lead, &facts, &vulns, &sections, &url], "\n\n")
}

fn text_vulns(vulns: &Vulns) -> String {
    let mut out = format!("Vulnerabilities: {}", vulns.counts_line());
    for v in &vulns.shown {
        let fix = if v.fixed.is_empty() {
            "no fix yet".to_string()
        } else {
            format!("fixed in {}", v.fixed)
        };
        let _ = write!(
            out,
            "\n- {} {} {} {}, {fix}{}",
            v.severity.to_uppercase(),
            v.id,
            v.pkg,
            v.installed,
            prefixed(": ", &clip(&v.title, 120))
        );
    }
    if vulns.left_out > 0 {
        let _ = write!(out, "\n… and {} more", vulns.left_out);
    }
    out
}

/// `prefixed(p, s)`: "" for an empty `s`.
fn prefixed(p: &str, s: &str) -> String {
    if s.is_empty() {
        String::new()
    } else {
        format!("{p}{s}")
    }
}

// === Slack ===

fn mrkdwn(text: String) -> Value {
    let mut inner = Map::new();
    inner.insert("text".into(), Value::String(text));
    inner.insert("type".into(), "mrkdwn".into());
    Value::Object(inner)
}

fn slack_section(text: &str) -> Value {
    let mut block = Map::new();
    block.insert("text".into(), mrkdwn(clip(text, 3000)));
    block.insert("type".into(), "section".into());
    Value::Object(block)
}

/// `render.slack_blocks`: a JSON array of Block Kit blocks.
pub fn slack_blocks(card: &Card) -> Value {
    let mut blocks = Vec::new();
    if !card.lead.is_empty() {
        blocks.push(slack_section(&slack(&clip(&card.lead, 2900))));
    }
    let fields: Vec<Value> = card
        .facts
        .iter()
        .map(|(label, value)| {
            mrkdwn(clip(
                &format!("*{}*\n{}", slack(label), slack(&clip(value, 1500))),
                2000,
            ))
        })
        .collect();
    for chunk in fields.chunks(10) {
        let mut block = Map::new();
        block.insert("fields".into(), Value::Array(chunk.to_vec()));
        block.insert("type".into(), "section".into());
        blocks.push(Value::Object(block));
    }
    if let Some(vulns) = &card.vulns {
        slack_vulns(vulns, &mut blocks);
    }
    for s in &card.sections {
        let rows = s
            .rows
            .iter()
            .map(|(label, value)| {
                format!("{}: {}", slack_code(label), slack_code(&clip(value, 300)))
            })
            .collect::<Vec<_>>()
            .join("\n");
        blocks.push(slack_section(&format!("*{}*\n{rows}", slack(&s.heading))));
    }
    if !card.url.is_empty() {
        blocks.push(slack_section(&format!("<{}|Open in browser>", card.url)));
    }
    Value::Array(blocks)
}

fn slack_vulns(vulns: &Vulns, blocks: &mut Vec<Value>) {
    blocks.push(slack_section(&format!(
        "*Vulnerabilities:* {}",
        vulns.counts_line()
    )));
    for level in VULN_LEVELS {
        let group: Vec<String> = vulns
            .shown
            .iter()
            .filter(|v| v.severity == level)
            .map(slack_vuln_line)
            .collect();
        for lines in group.chunks(10) {
            blocks.push(slack_section(&format!(
                "*{}*\n{}",
                level.to_uppercase(),
                lines.join("\n")
            )));
        }
    }
    if vulns.left_out > 0 {
        let text = format!("… and {} more vulnerabilities", vulns.left_out);
        let mut block = Map::new();
        block.insert("elements".into(), Value::Array(vec![mrkdwn(text)]));
        block.insert("type".into(), "context".into());
        blocks.push(Value::Object(block));
    }
}

fn slack_vuln_line(v: &Vuln) -> String {
    let link = if link_ok(&v.url) {
        format!("<{}|{}>", v.url, slack(&v.id))
    } else {
        slack(&v.id)
    };
    let fixed = if v.fixed.is_empty() {
        "no fix"
    } else {
        &v.fixed
    };
    join_nonempty(
        &[
            "•",
            &link,
            &slack_code(&v.pkg),
            &format!("{} → {}", slack(&v.installed), slack(fixed)),
            &slack(&clip(&v.title, 100)),
        ],
        " ",
    )
}

// === HTML ===

fn html_lead(card: &Card) -> String {
    if card.lead.is_empty() {
        String::new()
    } else {
        format!("<p>{}</p>", html(&card.lead))
    }
}

fn html_rows<'a>(rows: impl Iterator<Item = (&'a str, String)>) -> String {
    let mut out = String::new();
    for (label, value) in rows {
        let _ = write!(
            out,
            "<tr><th align=\"left\" valign=\"top\">{}</th><td>{}</td></tr>",
            html(label),
            html(&value)
        );
    }
    out
}

/// `render.html_body`.
pub fn html_body(card: &Card) -> String {
    let mut out = html_lead(card);
    if !card.facts.is_empty() {
        let rows = html_rows(card.facts.iter().map(|(l, v)| (l.as_str(), v.clone())));
        let _ = write!(out, "<table cellpadding=\"4\">{rows}</table>");
    }
    if let Some(vulns) = &card.vulns {
        out.push_str("<h3>Vulnerabilities</h3><table cellpadding=\"4\"><tr>");
        for level in VULN_LEVELS {
            let _ = write!(out, "<th>{level}</th>");
        }
        out.push_str("</tr><tr>");
        for n in vulns.counts {
            let _ = write!(out, "<td align=\"center\">{n}</td>");
        }
        out.push_str("</tr></table>");
        if !vulns.shown.is_empty() {
            out.push_str("<table border=\"1\" cellpadding=\"4\" cellspacing=\"0\"><tr><th>Severity</th><th>Vulnerability</th><th>Package</th><th>Installed</th><th>Fixed in</th><th>Title</th></tr>");
            for v in &vulns.shown {
                let _ = write!(
                    out,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    html(v.severity),
                    html_link_text(&v.url, &v.id),
                    html(&v.pkg),
                    html(&v.installed),
                    html(&v.fixed),
                    html(&clip(&v.title, 200))
                );
            }
            out.push_str("</table>");
        }
        html_more(vulns, &mut out);
    }
    for s in &card.sections {
        let rows = html_rows(s.rows.iter().map(|(l, v)| (l.as_str(), clip(v, 500))));
        let _ = write!(
            out,
            "<h3>{}</h3><table cellpadding=\"4\">{rows}</table>",
            html(&s.heading)
        );
    }
    html_link(card, &mut out);
    out
}

fn html_more(vulns: &Vulns, out: &mut String) {
    if vulns.left_out > 0 {
        let _ = write!(out, "<p>… and {} more vulnerabilities</p>", vulns.left_out);
    }
}

fn html_link_text(url: &str, label: &str) -> String {
    if link_ok(url) {
        format!("<a href=\"{}\">{}</a>", html(url), html(label))
    } else {
        html(label)
    }
}

fn html_link(card: &Card, out: &mut String) {
    if !card.url.is_empty() {
        let _ = write!(
            out,
            "<p>See more: {}</p>",
            html_link_text(&card.url, &card.url)
        );
    }
}

// === Microsoft Teams ===

fn teams_lines(rows: &[(String, String)]) -> String {
    rows.iter()
        .map(|(label, value)| format!("<b>{}:</b> {}", html(label), html(&clip(value, 500))))
        .collect::<Vec<_>>()
        .join("<br>")
}

/// `render.teams_body`.
pub fn teams_body(card: &Card) -> String {
    let mut out = html_lead(card);
    if !card.facts.is_empty() {
        let _ = write!(out, "<p>{}</p>", teams_lines(&card.facts));
    }
    if let Some(vulns) = &card.vulns {
        let _ = write!(
            out,
            "<p><b>Vulnerabilities:</b> {}</p>",
            vulns.counts_line()
        );
        if !vulns.shown.is_empty() {
            out.push_str("<ul>");
            for v in &vulns.shown {
                let fixed = if v.fixed.is_empty() {
                    "no fix"
                } else {
                    &v.fixed
                };
                let _ = write!(
                    out,
                    "<li><b>{}</b> {} {} {} → {}{}</li>",
                    html(&v.severity.to_uppercase()),
                    html_link_text(&v.url, &v.id),
                    html(&v.pkg),
                    html(&v.installed),
                    html(fixed),
                    prefixed(": ", &html(&clip(&v.title, 120)))
                );
            }
            out.push_str("</ul>");
        }
        html_more(vulns, &mut out);
    }
    for s in &card.sections {
        let _ = write!(
            out,
            "<p><b>{}</b><br>{}</p>",
            html(&s.heading),
            teams_lines(&s.rows)
        );
    }
    html_link(card, &mut out);
    out
}

// === Jira ===

fn jira_rows(rows: &[(String, String)]) -> String {
    rows.iter()
        .map(|(label, value)| format!("||{}|{}|", jira_cell(label), jira_cell(&clip(value, 1000))))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `render.jira_body`.
pub fn jira_body(card: &Card) -> String {
    let sections = card
        .sections
        .iter()
        .map(|s| format!("h3. {}\n{}", jira(&s.heading), jira_rows(&s.rows)))
        .collect::<Vec<_>>()
        .join("\n\n");
    let vulns = card.vulns.as_ref().map(jira_vulns).unwrap_or_default();
    let link = if card.url.is_empty() {
        String::new()
    } else {
        format!("See more: [{}]", card.url)
    };
    join_nonempty(
        &[
            &jira(&card.lead),
            &jira_rows(&card.facts),
            &vulns,
            &sections,
            &link,
        ],
        "\n\n",
    )
}

fn jira_vulns(vulns: &Vulns) -> String {
    const COLORS: [&str; 5] = ["#c00000", "#e0443d", "#f79421", "#e1c930", "#505f79"];
    let mut lines = vec![
        "h3. Vulnerabilities".to_string(),
        format!("||{}||", VULN_LEVELS.map(str::to_uppercase).join("||")),
        format!(
            "|{}|",
            COLORS
                .iter()
                .zip(vulns.counts)
                .map(|(color, n)| format!("{{color:{color}}}{n}{{color}}"))
                .collect::<Vec<_>>()
                .join("|")
        ),
    ];
    if !vulns.shown.is_empty() {
        lines.push(String::new());
        lines.push("||Severity||Vulnerability||Package||Installed||Fixed in||Title||".to_string());
        for v in &vulns.shown {
            let link = if link_ok(&v.url) {
                format!("[{}|{}]", jira_cell(&v.id), v.url)
            } else {
                jira_cell(&v.id)
            };
            lines.push(format!(
                "|{}|{link}|{}|{}|{}|{}|",
                jira_cell(&v.severity.to_uppercase()),
                jira_cell(&v.pkg),
                jira_cell(&v.installed),
                jira_cell(&v.fixed),
                jira_cell(&clip(&v.title, 200))
            ));
        }
    }
    if vulns.left_out > 0 {
        lines.push(format!("_… and {} more vulnerabilities_", vulns.left_out));
    }
    lines.join("\n")
}

// === PagerDuty / OpsGenie ===

/// `render.alert`: one JSON object, keys in regorus' (sorted) order.
pub fn alert(card: &Card) -> Value {
    let (severity, priority) = match card.severity {
        "critical" => ("critical", "P1"),
        "high" => ("error", "P2"),
        "medium" => ("warning", "P3"),
        "low" => ("info", "P4"),
        _ => ("info", "P5"),
    };
    let finding = clip(&card.finding, 255);
    let source = if card.source.is_empty() {
        "hooker"
    } else {
        &card.source
    };
    let mut fields: BTreeMap<&str, Value> = BTreeMap::new();
    for (key, value) in [
        ("summary", clip(&one_line(&card.title), 1024)),
        ("description", clip(&text_of(card), 15000)),
        ("dedup_key", finding.clone()),
        ("alias", finding),
        ("entity", clip(&card.entity, 512)),
        ("source", clip(source, 255)),
        ("component", clip(&card.component, 255)),
        ("group", clip(&card.group, 255)),
        ("class", clip(&card.class, 255)),
        ("url", card.url.clone()),
    ] {
        if !value.is_empty() {
            fields.insert(key, Value::String(value));
        }
    }
    fields.insert("severity", severity.into());
    fields.insert("priority", priority.into());
    fields.insert("event_action", "trigger".into());
    let mut tags: Vec<String> = Vec::new();
    for tag in card.tags.iter().filter(|t| !t.is_empty()) {
        let tag = clip(&one_line(tag), 50);
        if !tags.contains(&tag) {
            tags.push(tag);
        }
    }
    tags.truncate(20);
    fields.insert(
        "tags",
        Value::Array(tags.into_iter().map(Value::String).collect()),
    );
    // Facts, then section rows as "<heading>.<label>"; the first value of a label wins.
    let mut details: BTreeMap<String, Value> = BTreeMap::new();
    let counts = card
        .vulns
        .as_ref()
        .map(|vulns| ("Vulnerabilities".to_string(), vulns.counts_line()));
    let rows = card
        .facts
        .iter()
        .map(|(l, v)| (l.clone(), v))
        .chain(counts.iter().map(|(l, v)| (l.clone(), v)))
        .chain(card.sections.iter().flat_map(|s| {
            s.rows
                .iter()
                .map(|(l, v)| (format!("{}.{l}", s.heading), v))
        }));
    for (label, value) in rows {
        details
            .entry(label)
            .or_insert_with(|| Value::String(clip(value, 500)));
    }
    fields.insert("details", Value::Object(details.into_iter().collect()));
    Value::Object(
        fields
            .into_iter()
            .map(|(key, value)| (key.to_string(), value))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_counts_utf16_units_and_cuts_characters() {
        assert_eq!(clip("abc", 3), "abc");
        assert_eq!(clip("abcd", 3), "ab…");
        // One emoji is two UTF-16 units: three count 6, and the cut keeps 4 characters (all 3).
        assert_eq!(clip("😀😀😀", 5), "😀😀😀…");
    }

    #[test]
    fn text_writes_compact_json_with_sorted_keys() {
        let value = serde_json::json!({"b": [1, null, "x\"y"], "a": {"d": true, "c": -2}});
        assert_eq!(
            text(&value).unwrap(),
            r#"{"a":{"c":-2,"d":true},"b":[1,null,"x\"y"]}"#
        );
        assert_eq!(text(&serde_json::json!(1.5)), Err(Unsupported));
    }

    #[test]
    fn jira_escapes_markup_and_backslashes() {
        assert_eq!(jira("a|b\\c\n*d*"), "a\\|b&#92;c \\*d\\*");
    }
}
