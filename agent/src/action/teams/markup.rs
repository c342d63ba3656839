//! Text handling for Teams cards: HTML to the Markdown subset Adaptive Cards render, and
//! splitting long (HTML or Markdown) text into parts without cutting a tag, an entity or a character.

use crate::action::api_client;

/// Splits at line ends, else after a tag; never inside a tag, an entity or a character.
pub fn split(text: &str, limit: usize) -> Vec<String> {
    let mut parts = Vec::new();
    let mut rest = text;
    while rest.len() > limit {
        let window = api_client::truncate(rest, limit);
        let half = window.len() / 2;
        let mut cut = window
            .rfind('\n')
            .map(|at| at + 1)
            .filter(|&at| at > half)
            .or_else(|| window.rfind('>').map(|at| at + 1).filter(|&at| at > half))
            .unwrap_or(window.len());
        let head = &window[..cut];
        if let Some(open) = head.rfind('<')
            && !head[open..].contains('>')
            && open > 0
        {
            cut = open;
        }
        let head = &window[..cut];
        if let Some(amp) = head.rfind('&')
            && !head[amp..].contains(';')
            && head.len() - amp < 10
            && amp > 0
        {
            cut = amp;
        }
        let (head, tail) = rest.split_at(cut);
        parts.push(head.to_string());
        rest = tail;
    }
    if !rest.is_empty() || parts.is_empty() {
        parts.push(rest.to_string());
    }
    parts
}

/// HTML as the Markdown subset Adaptive Cards render: headings and `<b>` bold, `<i>` italic,
/// links, list items, table cells joined with `|`, line breaks kept, other tags dropped,
/// entities decoded. Text without tags is returned as is.
pub fn html_to_markdown(html: &str) -> String {
    let looks_like_html = html
        .match_indices('<')
        .any(|(at, _)| html[at + 1..].starts_with(|c: char| c.is_ascii_alphabetic() || c == '/'));
    if !looks_like_html {
        return html.to_string();
    }
    let mut out = String::with_capacity(html.len());
    let mut links: Vec<String> = Vec::new();
    let mut cells_in_row = 0usize;
    let mut preformatted = 0usize;
    let mut rest = html;
    while !rest.is_empty() {
        let Some(open) = rest.find('<') else {
            push_text(&mut out, rest, preformatted > 0);
            break;
        };
        push_text(&mut out, &rest[..open], preformatted > 0);
        let tail = &rest[open..];
        let Some(close) = tail.find('>') else {
            push_text(&mut out, tail, preformatted > 0);
            break;
        };
        let tag = &tail[1..close];
        rest = &tail[close + 1..];
        let closing = tag.starts_with('/');
        let name: String = tag
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_lowercase();
        match (name.as_str(), closing) {
            ("script" | "style", false) => {
                let end = format!("</{name}");
                let lower = rest.to_ascii_lowercase();
                rest = match lower.find(&end) {
                    Some(at) => rest[at..].find('>').map_or("", |gt| &rest[at + gt + 1..]),
                    None => "",
                };
            }
            ("h1" | "h2" | "h3" | "h4" | "h5" | "h6", false) => {
                new_paragraph(&mut out);
                out.push_str("**");
            }
            ("h1" | "h2" | "h3" | "h4" | "h5" | "h6", true) => {
                out.push_str("**");
                new_paragraph(&mut out);
            }
            ("b" | "strong", _) => out.push_str("**"),
            ("i" | "em", _) => out.push('_'),
            ("br", _) => out.push('\n'),
            ("p" | "div" | "table" | "ul" | "ol" | "tr" | "thead" | "tbody", _) => {
                if name == "tr" {
                    cells_in_row = 0;
                }
                new_line(&mut out);
            }
            ("pre", false) => {
                preformatted += 1;
                new_line(&mut out);
            }
            ("pre", true) => {
                preformatted = preformatted.saturating_sub(1);
                new_line(&mut out);
            }
            ("li", false) => {
                new_line(&mut out);
                out.push_str("- ");
            }
            ("td" | "th", false) => {
                if cells_in_row > 0 {
                    out.push_str(" | ");
                }
                cells_in_row += 1;
            }
            ("a", false) => {
                links.push(attribute(tag, "href").unwrap_or_default());
                out.push('[');
            }
            ("a", true) => {
                let href = links.pop().unwrap_or_default();
                if href.is_empty() {
                    out.push(']');
                } else {
                    out.push_str(&format!("]({href})"));
                }
            }
            _ => {}
        }
    }
    tidy(&out)
}

fn push_text(out: &mut String, text: &str, preformatted: bool) {
    let decoded = decode_entities(text);
    if preformatted {
        out.push_str(&decoded);
        return;
    }
    let mut last_space = out.ends_with([' ', '\n']) || out.is_empty();
    for c in decoded.chars() {
        if c.is_whitespace() {
            if !last_space {
                out.push(' ');
                last_space = true;
            }
        } else {
            out.push(c);
            last_space = false;
        }
    }
}

fn new_line(out: &mut String) {
    while out.ends_with(' ') {
        out.pop();
    }
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
}

fn new_paragraph(out: &mut String) {
    new_line(out);
    if !out.is_empty() && !out.ends_with("\n\n") {
        out.push('\n');
    }
}

/// Trailing spaces trimmed, at most one blank line in a row.
fn tidy(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut blank = 0;
    for line in text.trim().lines() {
        let line = line.trim_end();
        if line.is_empty() {
            blank += 1;
            if blank > 1 {
                continue;
            }
        } else {
            blank = 0;
        }
        out.push_str(line);
        out.push('\n');
    }
    out.trim_end().to_string()
}

fn attribute(tag: &str, name: &str) -> Option<String> {
    let lower = tag.to_ascii_lowercase();
    let at = lower.find(&format!("{name}="))? + name.len() + 1;
    let value = &tag[at..];
    let value = match value.chars().next()? {
        quote @ ('"' | '\'') => value[1..].split(quote).next()?,
        _ => value.split(char::is_whitespace).next()?,
    };
    Some(decode_entities(value))
}

fn decode_entities(text: &str) -> String {
    if !text.contains('&') {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        let entity = tail
            .find(';')
            .filter(|&semi| semi <= 10)
            .map(|semi| &tail[1..semi]);
        let decoded = entity.and_then(|name| match name {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" | "#39" => Some('\''),
            "nbsp" => Some(' '),
            other => other
                .strip_prefix("#x")
                .or_else(|| other.strip_prefix("#X"))
                .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                .or_else(|| other.strip_prefix('#').and_then(|n| n.parse().ok()))
                .and_then(char::from_u32),
        });
        match (decoded, entity) {
            (Some(c), Some(name)) => {
                out.push(c);
                rest = &tail[name.len() + 2..];
            }
            _ => {
                out.push('&');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_becomes_adaptive_card_markdown() {
        let html = "<h2>Tracee &amp; co</h2>\n<p>Pod <b>web-1</b> in <i>prod</i>:</p><table><tr><th>CVE</th><th>Sev</th></tr>\n<tr><td>CVE-1</td><td>HIGH</td></tr></table><ul><li>one</li><li>two &lt;3</li></ul><a href=\"https://x.io/?a=1&amp;b=2\">report</a><br/><pre>{\n  \"a\": 1\n}</pre><script>ignored()</script>end";
        assert_eq!(
            html_to_markdown(html),
            "**Tracee & co**\n\nPod **web-1** in _prod_:\nCVE | Sev\nCVE-1 | HIGH\n- one\n- two <3\n[report](https://x.io/?a=1&b=2)\n{\n  \"a\": 1\n}\nend"
        );
        assert_eq!(html_to_markdown("plain a < b text"), "plain a < b text");
    }

    #[test]
    fn long_html_is_split_outside_tags_and_entities() {
        let row = "<tr><td>CVE-2024-0001</td><td>openssl &amp; friends</td></tr>";
        let html = format!("<table>{}</table>", row.repeat(400));
        let pieces = split(&html, 1000);
        assert!(pieces.len() > 1);
        assert_eq!(pieces.concat(), html, "splitting loses nothing");
        for piece in &pieces {
            assert!(piece.len() <= 1000);
            assert!(
                piece.rfind('<') < piece.rfind('>'),
                "cut inside a tag: {piece}"
            );
        }
    }
}
