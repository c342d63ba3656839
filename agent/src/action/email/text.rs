//! The two bodies of a message: HTML as the template rendered it (or plain text wrapped in
//! `<pre>`), and a plain-text version derived from it for clients that do not show HTML.

/// Whether `body` looks like HTML rather than plain text.
pub fn looks_like_html(body: &str) -> bool {
    let lower = body.to_ascii_lowercase();
    [
        "<html", "<body", "<p", "<div", "<br", "<table", "<h1", "<h2", "<h3", "<ul", "<span",
        "<a ", "<pre", "<b>", "<i>", "<tr",
    ]
    .iter()
    .any(|tag| lower.contains(tag))
}

/// (text, html) for `body`.
pub fn bodies(body: &str) -> (String, String) {
    if looks_like_html(body) {
        (html_to_text(body), body.to_string())
    } else {
        (
            body.to_string(),
            format!("<html><body><pre>{}</pre></body></html>", escape(body)),
        )
    }
}

pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A readable text rendering of HTML: block elements become line breaks, list items `- `,
/// table cells are separated by ` | `, links keep their target, entities are decoded, and
/// `<style>`, `<script>` and `<head>` contents are dropped.
pub fn html_to_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut rest = html;
    let mut pending_href: Option<String> = None;
    let mut in_pre = false;
    while let Some(open) = rest.find('<') {
        push_text(&mut out, &rest[..open], in_pre);
        let after = &rest[open..];
        let Some(close) = after.find('>') else {
            push_text(&mut out, after, in_pre);
            rest = "";
            break;
        };
        let tag = &after[1..close];
        rest = &after[close + 1..];
        let name = tag_name(tag);
        match name.as_str() {
            "style" | "script" | "head" | "title" => {
                let end = format!("</{name}");
                let lower = rest.to_ascii_lowercase();
                rest = match lower.find(&end) {
                    Some(at) => rest[at..].find('>').map_or("", |gt| &rest[at + gt + 1..]),
                    None => "",
                };
            }
            "br" | "/p" | "/div" | "/h1" | "/h2" | "/h3" | "/h4" | "/h5" | "/h6" | "/tr"
            | "/table" | "/ul" | "/ol" | "hr" | "/li" | "/pre" | "/blockquote" => {
                if name == "/pre" {
                    in_pre = false;
                }
                out.push('\n');
            }
            "p" | "div" | "h1" | "h2" | "h3" | "h4" | "h5" | "h6" | "table" | "blockquote" => {
                newline(&mut out);
            }
            "pre" => {
                newline(&mut out);
                in_pre = true;
            }
            "li" => {
                newline(&mut out);
                out.push_str("- ");
            }
            "td" | "th" if !out.ends_with('\n') && !out.is_empty() => out.push_str(" | "),
            "a" => pending_href = attribute(tag, "href"),
            "/a" => {
                if let Some(href) = pending_href.take()
                    && !href.starts_with('#')
                    && !out.ends_with(&href)
                {
                    out.push_str(&format!(" <{href}>"));
                }
            }
            _ => {}
        }
    }
    push_text(&mut out, rest, in_pre);
    tidy(&out)
}

fn tag_name(tag: &str) -> String {
    let tag = tag.trim_start();
    let (slash, tag) = match tag.strip_prefix('/') {
        Some(rest) => ("/", rest.trim_start()),
        None => ("", tag),
    };
    let name: String = tag
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_ascii_lowercase();
    format!("{slash}{name}")
}

fn attribute(tag: &str, name: &str) -> Option<String> {
    let lower = tag.to_ascii_lowercase();
    let at = lower.find(&format!("{name}="))?;
    let value = &tag[at + name.len() + 1..];
    let value = match value.chars().next()? {
        quote @ ('"' | '\'') => value[1..].split(quote).next()?,
        _ => value.split(|c: char| c.is_whitespace()).next()?,
    };
    Some(decode_entities(value))
}

fn newline(out: &mut String) {
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
}

/// Appends text, collapsing HTML whitespace (except inside `<pre>`).
fn push_text(out: &mut String, text: &str, in_pre: bool) {
    let decoded = decode_entities(text);
    if in_pre {
        out.push_str(&decoded);
        return;
    }
    let mut last_space = out.ends_with([' ', '\n']) || out.is_empty();
    for c in decoded.chars() {
        if c.is_whitespace() && c != '\u{a0}' {
            if !last_space {
                out.push(' ');
                last_space = true;
            }
        } else {
            out.push(if c == '\u{a0}' { ' ' } else { c });
            last_space = false;
        }
    }
}

/// Trims each line's trailing spaces and keeps at most one blank line in a row.
fn tidy(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut blank = 0;
    for line in text.lines() {
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
    out.trim().to_string() + "\n"
}

fn decode_entities(text: &str) -> String {
    if !text.contains('&') {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let end = after
            .find(';')
            .filter(|&end| end <= 10 && !after[..end].contains([' ', '&']));
        let decoded = end.and_then(|end| entity(&after[..end]).map(|c| (c, end)));
        match decoded {
            Some((c, end)) => {
                out.push(c);
                rest = &after[end + 1..];
            }
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn entity(name: &str) -> Option<char> {
    if let Some(number) = name.strip_prefix('#') {
        let code = match number.strip_prefix(['x', 'X']) {
            Some(hex) => u32::from_str_radix(hex, 16).ok()?,
            None => number.parse().ok()?,
        };
        return char::from_u32(code);
    }
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        "nbsp" => '\u{a0}',
        "copy" => '©',
        "mdash" => '—',
        "ndash" => '–',
        "hellip" => '…',
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(html: &str, text: &str) {
        assert_eq!(html_to_text(html), text, "{html}");
    }

    #[test]
    fn html_becomes_readable_text() {
        check(
            "<p>Hello <b>world</b></p><p>second &amp; last</p>",
            "Hello world\nsecond & last\n",
        );
        check(
            "<html><head><style>p{color:red}</style></head><body><h1>Title</h1>\n<ul><li>one</li><li>two</li></ul></body></html>",
            "Title\n- one\n- two\n",
        );
        check(
            "<table><tr><th>CVE</th><th>Sev</th></tr><tr><td>CVE-1</td><td>HIGH</td></tr></table>",
            "CVE | Sev\nCVE-1 | HIGH\n",
        );
        check(
            "See <a href=\"https://e.x/a?b=1&amp;c=2\">details</a>.",
            "See details <https://e.x/a?b=1&c=2>.\n",
        );
        check(
            "a<br>b<br/>c &#8212; &#x41;&nbsp;&unknown; &",
            "a\nb\nc — A &unknown; &\n",
        );
        check("<pre>  keep\n    this</pre>", "keep\n    this\n");
    }

    #[test]
    fn plain_text_gets_an_escaped_html_twin() {
        let (text, html) = bodies("a < b\nline 2");
        assert_eq!(text, "a < b\nline 2");
        assert_eq!(
            html,
            "<html><body><pre>a &lt; b\nline 2</pre></body></html>"
        );
        assert!(looks_like_html("<p>x</p>"));
        assert!(!looks_like_html("x < y and y > z"));
    }
}
