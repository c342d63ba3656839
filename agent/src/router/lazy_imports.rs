//! Reads through an import alias made lazy: `tracee.title`, with `import data.hooker.lib.tracee`,
//! is rewritten to `data.hooker.lib.tracee.title` before the module is loaded.
//!
//! regorus evaluates a reference through an import alias by evaluating the imported package
//! whole — every rule of `data.hooker.lib.tracee`, its card among them, to read `title` — while a
//! full `data.` path evaluates only the rule it names. OPA evaluates lazily either way, so the
//! rewrite changes no result, only the cost: a template reading three helper rules through an
//! alias costs about a tenth (BENCHMARKS.md, "The Rego path").
//!
//! The rewrite is conservative. An alias is rewritten only when every use of it in the module is
//! `alias.name…` (so never a local variable, a function argument, a rule of the module or a value
//! on its own) and none starts a rule head (`alias.x := …` defines a rule of the module itself).
//! Function calls (`alias.f(…)`) are left as they are: regorus resolves them without evaluating
//! the package. Strings and comments are never touched. Anything else keeps the module as written.

use super::rego_text::{Token, ident_end, identifiers, is_ident_start};

/// The module with its import-alias reads made full `data.` paths; None when nothing changes.
pub fn rewrite(module: &str) -> Option<String> {
    let tokens = identifiers(module);
    let mut edits: Vec<(usize, usize, &str)> = Vec::new();
    for import in imports(module, &tokens) {
        let mut uses = Vec::new();
        let mut ok = true;
        for token in &tokens {
            if &module[token.start..token.end] != import.alias
                || module[..token.start].ends_with('.')
                || (import.span.0..import.span.1).contains(&token.start)
            {
                continue;
            }
            match use_of(module, token) {
                Use::Read => uses.push(token.start..token.end),
                Use::Call => {}
                Use::Other => {
                    ok = false;
                    break;
                }
            }
        }
        if ok {
            edits.extend(uses.into_iter().map(|r| (r.start, r.end, import.path)));
        }
    }
    if edits.is_empty() {
        return None;
    }
    edits.sort_unstable_by_key(|edit| edit.0);
    let mut out = String::with_capacity(module.len() + edits.len() * 32);
    let mut at = 0;
    for (start, end, path) in edits {
        out.push_str(&module[at..start]);
        out.push_str(path);
        at = end;
    }
    out.push_str(&module[at..]);
    Some(out)
}

/// `import data.a.b [as alias]`, for a path of plain identifiers.
struct Import<'a> {
    path: &'a str,
    alias: &'a str,
    /// The statement's bytes.
    span: (usize, usize),
}

enum Use {
    /// `alias.name…`, read as a value: rewritten.
    Read,
    /// `alias.name…(`: left as it is.
    Call,
    /// Anything else: the alias is left alone everywhere.
    Other,
}

fn imports<'a>(module: &'a str, tokens: &[Token]) -> Vec<Import<'a>> {
    let bytes = module.as_bytes();
    let skip_blank = |mut at: usize| {
        while at < bytes.len() && (bytes[at] == b' ' || bytes[at] == b'\t') {
            at += 1;
        }
        at
    };
    let mut found = Vec::new();
    for token in tokens {
        if !(token.depth == 0 && token.line_start && &module[token.start..token.end] == "import") {
            continue;
        }
        let start = skip_blank(token.end);
        let mut end = start;
        let mut last = start;
        while end < bytes.len() && is_ident_start(bytes[end]) {
            last = end;
            end = ident_end(bytes, end);
            if end + 1 < bytes.len() && bytes[end] == b'.' && is_ident_start(bytes[end + 1]) {
                end += 1;
            } else {
                break;
            }
        }
        let path = &module[start..end];
        // Only plain `data.` paths below the root; `data.x["y"]`, `input…` and `rego.v1` stay.
        if !path.starts_with("data.") || matches!(bytes.get(end), Some(b'[' | b'.' | b'"')) {
            continue;
        }
        let mut alias = &module[last..end];
        let mut stop = end;
        let after = skip_blank(end);
        if module[after..].starts_with("as")
            && bytes
                .get(after + 2)
                .is_some_and(|&b| b == b' ' || b == b'\t')
        {
            let name = skip_blank(after + 2);
            if !bytes.get(name).copied().is_some_and(is_ident_start) {
                continue;
            }
            stop = ident_end(bytes, name);
            alias = &module[name..stop];
        }
        if matches!(alias, "data" | "input" | "_") {
            continue;
        }
        found.push(Import {
            path,
            alias,
            span: (token.start, stop),
        });
    }
    found
}

/// How the alias at `token` is used.
fn use_of(module: &str, token: &Token) -> Use {
    let bytes = module.as_bytes();
    // `alias.x := …` at the start of a statement is a rule head of this module.
    if token.depth == 0 && token.line_start {
        return Use::Other;
    }
    let mut end = token.end;
    let mut names = 0;
    while bytes.get(end) == Some(&b'.') && bytes.get(end + 1).copied().is_some_and(is_ident_start) {
        end = ident_end(bytes, end + 1);
        names += 1;
    }
    match (names, bytes.get(end)) {
        (0, _) => Use::Other,
        (_, Some(b'(')) => Use::Call,
        _ => Use::Read,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_through_an_alias_become_full_paths() {
        let module = "package t\nimport data.lib.tracee\nimport data.lib.render as r\nimport rego.v1\n\ntitle := tracee.title\nresult := r.plain(tracee.card.facts, 50) if { tracee.ok; x := [y | some y in r.levels] }\n";
        assert_eq!(
            rewrite(module).unwrap(),
            "package t\nimport data.lib.tracee\nimport data.lib.render as r\nimport rego.v1\n\ntitle := data.lib.tracee.title\nresult := r.plain(data.lib.tracee.card.facts, 50) if { data.lib.tracee.ok; x := [y | some y in data.lib.render.levels] }\n"
        );
    }

    #[test]
    fn an_alias_used_any_other_way_is_left_alone() {
        for module in [
            // A local variable of the same name.
            "package t\nimport data.lib.tracee\nx := tracee.a\ny := [tracee.b | some tracee in input.xs]\n",
            // A function argument.
            "package t\nimport data.lib.tracee\nf(tracee) := tracee.a\ng := tracee.a\n",
            // The package read whole.
            "package t\nimport data.lib.tracee\nx := tracee\ny := tracee.a\n",
            // Read with brackets.
            "package t\nimport data.lib.tracee\nx := tracee[\"a\"]\ny := tracee.a\n",
            // A rule head with a ref: a rule of this module.
            "package t\nimport data.lib.tracee\ntracee.a := 1\ny := tracee.a\n",
        ] {
            assert_eq!(rewrite(module), None, "{module}");
        }
    }

    #[test]
    fn strings_comments_calls_and_other_imports_stay() {
        for module in [
            "package t\nimport data.lib.tracee\n# tracee.a\nx := \"tracee.a \\\" tracee.b\"\ny := `tracee.c`\n",
            "package t\nimport data.lib.tracee\nx := tracee.f(1)\ny := tracee.g.h(2)\n",
            "package t\nimport input.metadata as m\nimport data.lib[\"x-y\"] as q\nx := m.a\ny := q.b\nz := data.lib.tracee.a\n",
            "package t\nimport rego.v1\nimport future.keywords.in\nx := input.tracee.a\n",
        ] {
            assert_eq!(rewrite(module), None, "{module}");
        }
    }

    /// regorus evaluates the whole imported package when a rule is read through its alias (here a
    /// rule of it fails at evaluation), and only the rule read once the read is a full path.
    #[test]
    fn a_read_through_an_alias_evaluates_only_that_rule() {
        use crate::router::rego::{add_module, new_engine};
        let lib = "package lib.t\nimport rego.v1\nok := \"fine\"\nboom := x if { x := 1 }\nboom := x if { x := 2 }\n";
        let user = "package user\nimport data.lib.t\nimport rego.v1\nresult := t.ok\n";
        let mut engine = new_engine(&[]).unwrap();
        add_module(&mut engine, "lib", lib).unwrap();
        let mut plain = engine.clone();
        plain.add_policy("user".into(), user.into()).unwrap();
        assert!(plain.eval_rule("data.user.result".into()).is_err());
        add_module(&mut engine, "user", user).unwrap();
        assert_eq!(
            engine.eval_rule("data.user.result".into()).unwrap(),
            regorus::Value::from("fine")
        );
    }
}
