//! The paths of `input` a set of Rego modules reads, when they read it only through static paths
//! (`input.metadata.Properties.Severity`, `input["podNamespace"]`, the collection of
//! `some a in input.args`): the router then converts only those parts of an event for Rego
//! routes (`Fields::to_rego`), not the whole event.
//!
//! A read's path ends where it stops being static (`input.args[0]` reads all of `args`), and the
//! whole value at a path's end is converted, so a module reading only those paths cannot tell the
//! difference. Any other use of `input` — on its own (`object.keys(input)`, `walk(input)`,
//! `with input as …`), with a computed key (`input[k]`), imported (`import input.x`) — and every
//! path is unknown: the whole event is converted.

use super::rego_text::{ident_end, identifiers, is_ident_start};

/// The `input` paths `modules` read (each a list of object keys, possibly empty = the whole
/// input), or None when they may read it otherwise.
pub fn input_paths<'a>(modules: impl IntoIterator<Item = &'a str>) -> Option<Vec<Vec<String>>> {
    let mut paths = Vec::new();
    for module in modules {
        let bytes = module.as_bytes();
        for token in identifiers(module) {
            if &module[token.start..token.end] != "input" || module[..token.start].ends_with('.') {
                continue;
            }
            let mut path = Vec::new();
            let mut at = token.end;
            loop {
                match bytes.get(at) {
                    Some(b'.') if bytes.get(at + 1).copied().is_some_and(is_ident_start) => {
                        let end = ident_end(bytes, at + 1);
                        path.push(module[at + 1..end].to_string());
                        at = end;
                    }
                    Some(b'[') => match bracket_key(module, at) {
                        Some((key, end)) => {
                            path.push(key);
                            at = end;
                        }
                        None => break,
                    },
                    _ => break,
                }
            }
            if path.is_empty() {
                return None;
            }
            paths.push(path);
        }
    }
    Some(paths)
}

/// `["key"]` at `at`: the key and the end of the brackets.
fn bracket_key(module: &str, at: usize) -> Option<(String, usize)> {
    let rest = module.get(at + 1..)?;
    let quoted = rest.strip_prefix('"')?;
    let mut end = 0;
    let bytes = quoted.as_bytes();
    while *bytes.get(end)? != b'"' {
        end += if bytes[end] == b'\\' { 2 } else { 1 };
    }
    let literal = &rest[..end + 2];
    let key: String = serde_json::from_str(literal).ok()?;
    (rest.as_bytes().get(end + 2) == Some(&b']')).then_some((key, at + 1 + end + 3))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(module: &str) -> Option<Vec<String>> {
        input_paths([module]).map(|paths| paths.iter().map(|p| p.join("/")).collect())
    }

    #[test]
    fn static_reads_are_paths() {
        assert_eq!(
            paths(
                "input.metadata.Properties.signatureID == \"TRC-1\"\nsome a in input.args\nstartswith(input[\"pod-ns\"], \"p\")\ncount(input.args[0].x) > 0\ninput[\"a\\\"b\"].c == 1\n"
            ),
            Some(vec![
                "metadata/Properties/signatureID".to_string(),
                "args".to_string(),
                "pod-ns".to_string(),
                "args".to_string(),
                "a\"b/c".to_string(),
            ])
        );
        // In strings and comments, and as a key, `input` is not a read.
        assert_eq!(
            paths("x := \"input\" # input\ny := `input`\nz := data.input\nw := {\"k\": input.k}\n"),
            Some(vec!["k".to_string()])
        );
    }

    #[test]
    fn any_other_read_is_the_whole_input() {
        for module in [
            "count(object.keys(input)) > 1\n",
            "some k\ninput[k] == 1\n",
            "x := input\n",
            "walk(input, [p, v])\n",
            "data.hooker.allow with input as {}\n",
            "import input\ninput.x == 1\n",
            "input[0] == 1\n",
        ] {
            assert_eq!(paths(module), None, "{module}");
        }
    }
}
