//! The layering docs/ARCHITECTURE.md draws holds: every path in every file
//! under src/ that reaches another top-level module (`crate::...`, or
//! `super::...` climbing out of its own) goes from a layer to one the
//! picture lets it import, every module of src/ has a layer and every
//! module of the picture exists; and the simulator's modules import each
//! other without a loop. The picture is read from the document itself, so
//! the two cannot drift apart.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The fenced block of docs/ARCHITECTURE.md that holds the picture.
const FENCE: &str = "```layers";

/// The layers, top to bottom: which modules each holds and which layers
/// each may import.
struct Picture {
    /// Module to layer.
    layer_of: BTreeMap<String, String>,
    /// Layer to the layers it may import.
    may_import: BTreeMap<String, BTreeSet<String>>,
}

/// One line of the picture: `layer: module module ... -> layer layer ...`
/// (`-> nothing` for the bottom).
fn picture() -> Picture {
    let path = Path::new(ROOT).join("docs/ARCHITECTURE.md");
    let text = fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    let block = text
        .split_once(FENCE)
        .and_then(|(_, rest)| rest.split_once("```"))
        .map(|(block, _)| block)
        .unwrap_or_else(|| panic!("{} has no {FENCE} block", path.display()));
    let mut picture = Picture {
        layer_of: BTreeMap::new(),
        may_import: BTreeMap::new(),
    };
    for line in block.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (layer, rest) = line
            .split_once(':')
            .unwrap_or_else(|| panic!("picture line without `layer:`: {line}"));
        let (modules, imports) = rest
            .split_once("->")
            .unwrap_or_else(|| panic!("picture line without `->`: {line}"));
        let layer = layer.trim().to_string();
        for module in modules.split_whitespace() {
            let module = module.trim_end_matches('/').trim_end_matches(".rs");
            let earlier = picture.layer_of.insert(module.to_string(), layer.clone());
            assert!(
                earlier.is_none(),
                "{module} is in two layers of the picture"
            );
        }
        let imports = imports
            .split_whitespace()
            .filter(|l| *l != "nothing")
            .map(str::to_string)
            .collect();
        picture.may_import.insert(layer, imports);
    }
    for (layer, imports) in &picture.may_import {
        for import in imports {
            assert!(
                picture.may_import.contains_key(import),
                "layer {layer} may import {import}, which is no layer of the picture"
            );
        }
    }
    picture
}

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut folders = vec![dir.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                folders.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The module path of a file under `src` (`ops/doctor/mod.rs` is
/// `[ops, doctor]`); the crate root (main.rs, lib.rs) is `[]`.
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(src).unwrap();
    let mut path: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let last = path.pop().unwrap();
    match last.trim_end_matches(".rs") {
        "mod" => {}
        "main" | "lib" if path.is_empty() => {}
        stem => path.push(stem.to_string()),
    }
    path
}

/// `text` with comments, string and character literals blanked out (line
/// breaks kept), so that what is left is code, on the same lines.
fn code_only(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut code = String::with_capacity(text.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < chars.len() {
        let rest = &chars[i..];
        let starts = |s: &str| rest.iter().take(s.chars().count()).copied().eq(s.chars());
        if starts("//") {
            while i < chars.len() && chars[i] != '\n' {
                code.push(' ');
                i += 1;
            }
        } else if starts("/*") {
            let mut depth = 0;
            loop {
                let rest = &chars[i..];
                if rest.starts_with(&['/', '*']) {
                    depth += 1;
                    code.push_str("  ");
                    i += 2;
                } else if rest.starts_with(&['*', '/']) {
                    depth -= 1;
                    code.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    code.push(blank(chars[i]));
                    i += 1;
                }
            }
        } else if let Some(hashes) = raw_string_start(rest) {
            // r"...", r#"..."#, br"...": no escapes, ends at `"` and the hashes.
            let prefix = rest.iter().position(|&c| c == '"').unwrap() + 1;
            let closing: Vec<char> = std::iter::once('"')
                .chain(std::iter::repeat_n('#', hashes))
                .collect();
            let mut j = i + prefix;
            while !chars[j..].starts_with(&closing) {
                j += 1;
            }
            for &c in &chars[i..j + closing.len()] {
                code.push(blank(c));
            }
            i = j + closing.len();
        } else if chars[i] == '"' || starts("b\"") {
            let mut j = i + if chars[i] == 'b' { 2 } else { 1 };
            while chars[j] != '"' {
                j += if chars[j] == '\\' { 2 } else { 1 };
            }
            for &c in &chars[i..=j] {
                code.push(blank(c));
            }
            i = j + 1;
        } else if chars[i] == '\'' {
            // A character literal ('x', '\n', '\u{7f}'), or a lifetime ('a).
            let end = match rest.get(1) {
                Some('\\') => rest[2..].iter().position(|&c| c == '\'').map(|p| p + 2),
                Some(_) if rest.get(2) == Some(&'\'') => Some(2),
                _ => None,
            };
            match end {
                Some(end) => {
                    code.push_str(&" ".repeat(end + 1));
                    i += end + 1;
                }
                None => {
                    code.push('\'');
                    i += 1;
                }
            }
        } else {
            code.push(chars[i]);
            i += 1;
        }
    }
    code
}

/// How many `#` a raw string starting here has, if one does.
fn raw_string_start(rest: &[char]) -> Option<usize> {
    let after_prefix = match rest {
        ['r', ..] => &rest[1..],
        ['b', 'r', ..] => &rest[2..],
        _ => return None,
    };
    let hashes = after_prefix.iter().take_while(|&&c| c == '#').count();
    (after_prefix.get(hashes) == Some(&'"')).then_some(hashes)
}

/// A token of code: an identifier, `::`, or one other character.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Ident(String),
    PathSep,
    Punct(char),
}

/// The tokens of `code` with their line numbers (from 1).
fn tokens(code: &str) -> Vec<(usize, Token)> {
    let chars: Vec<char> = code.chars().collect();
    let mut tokens = Vec::new();
    let (mut i, mut line) = (0, 1);
    while i < chars.len() {
        let c = chars[i];
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            tokens.push((line, Token::Ident(chars[start..i].iter().collect())));
        } else if c == ':' && chars.get(i + 1) == Some(&':') {
            tokens.push((line, Token::PathSep));
            i += 2;
        } else {
            tokens.push((line, Token::Punct(c)));
            i += 1;
        }
    }
    tokens
}

/// Every path in a file's `code` that reaches a module outside the file's
/// top-level one: (line, the top-level module reached). `module` is the
/// file's module path; `super::` climbs from it and from the inline modules
/// (`mod tests { ... }`) around the path.
fn reached_modules(code: &str, module: &[String]) -> Vec<(usize, String)> {
    let tokens = tokens(code);
    let ident = |i: usize| match tokens.get(i) {
        Some((_, Token::Ident(name))) => Some(name.as_str()),
        _ => None,
    };
    let is = |i: usize, token: &Token| tokens.get(i).map(|(_, t)| t) == Some(token);
    let mut reached = Vec::new();
    // Per open brace: the inline module it opens, if it does.
    let mut scopes: Vec<Option<String>> = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let (line, token) = &tokens[i];
        match token {
            Token::Punct('{') => {
                let opens_module = i >= 2 && ident(i - 2) == Some("mod");
                scopes.push(opens_module.then(|| ident(i - 1).unwrap().to_string()));
            }
            Token::Punct('}') => {
                scopes.pop();
            }
            Token::Ident(word)
                if (word == "crate" || word == "super") && is(i + 1, &Token::PathSep) =>
            {
                // Where the path starts: the crate root, or the module
                // `super` climbs to.
                let mut here: Vec<String> = module.to_vec();
                here.extend(scopes.iter().flatten().cloned());
                let mut j = i;
                if word == "crate" {
                    here.clear();
                    j += 2;
                } else {
                    while ident(j) == Some("super") && is(j + 1, &Token::PathSep) {
                        here.pop();
                        j += 2;
                    }
                }
                if here.is_empty() {
                    // At the crate root: what follows names top-level modules.
                    for name in first_segments(&tokens, j) {
                        reached.push((*line, name));
                    }
                }
                i = j;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    reached
}

/// The first segment of the path at `at`, or of each path of the group
/// `{a, b::c, ...}` there.
fn first_segments(tokens: &[(usize, Token)], at: usize) -> Vec<String> {
    match tokens.get(at).map(|(_, t)| t) {
        Some(Token::Ident(name)) => vec![name.clone()],
        Some(Token::Punct('{')) => {
            let mut names = Vec::new();
            let mut depth = 0;
            let mut expect_name = true;
            for (_, token) in &tokens[at..] {
                match token {
                    Token::Punct('{') => {
                        depth += 1;
                        expect_name = depth == 1;
                    }
                    Token::Punct('}') => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    Token::Punct(',') if depth == 1 => expect_name = true,
                    Token::Ident(name) if expect_name && depth == 1 => {
                        names.push(name.clone());
                        expect_name = false;
                    }
                    _ => {}
                }
            }
            names
        }
        _ => Vec::new(),
    }
}

#[test]
fn every_import_in_src_goes_down_the_layers_of_the_architecture() {
    let picture = picture();
    let src = Path::new(ROOT).join("src");
    let files = rust_files(&src);
    let mut problems = Vec::new();
    let mut present = BTreeSet::new();
    for file in &files {
        let module = module_path(&src, file);
        let own = module.first().map_or("main", String::as_str).to_string();
        let shown = file.strip_prefix(ROOT).unwrap().display().to_string();
        present.insert(own.clone());
        let Some(layer) = picture.layer_of.get(&own) else {
            problems.push(format!(
                "{shown}: module {own} is in no layer of docs/ARCHITECTURE.md"
            ));
            continue;
        };
        let allowed = &picture.may_import[layer];
        let text = fs::read_to_string(file).unwrap();
        for (line, reached) in reached_modules(&code_only(&text), &module) {
            if reached == own || reached == "self" {
                continue;
            }
            match picture.layer_of.get(&reached) {
                None => problems.push(format!(
                    "{shown}:{line}: {own} uses crate::{reached}, which is no module of the picture in docs/ARCHITECTURE.md"
                )),
                Some(theirs) if !allowed.contains(theirs) => problems.push(format!(
                    "{shown}:{line}: {own} (layer {layer}) imports {reached} (layer {theirs}), but layer {layer} may import only: {}",
                    allowed.iter().cloned().collect::<Vec<_>>().join(", ")
                )),
                Some(_) => {}
            }
        }
    }
    for module in picture.layer_of.keys() {
        if !present.contains(module) {
            problems.push(format!(
                "docs/ARCHITECTURE.md places {module} in a layer, but src/ has no module {module}"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "imports against the layers of docs/ARCHITECTURE.md:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_simulators_modules_import_each_other_without_a_loop() {
    let src = Path::new(ROOT).join("sim/src");
    let modules: BTreeSet<String> = rust_files(&src)
        .iter()
        .map(|file| module_path(&src, file))
        .filter_map(|path| path.first().cloned())
        .collect();
    let mut imports: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in rust_files(&src) {
        let module = module_path(&src, &file);
        let Some(own) = module.first() else {
            continue; // the crate root and the binary
        };
        let text = fs::read_to_string(&file).unwrap();
        for (_, reached) in reached_modules(&code_only(&text), &module) {
            if modules.contains(&reached) && reached != *own {
                imports.entry(own.clone()).or_default().insert(reached);
            }
        }
    }
    // Depth first: a module met again while its own imports are followed
    // closes a loop.
    fn visit(
        module: &str,
        imports: &BTreeMap<String, BTreeSet<String>>,
        trail: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = trail.iter().position(|m| m == module) {
            let mut cycle = trail[start..].to_vec();
            cycle.push(module.to_string());
            return Some(cycle);
        }
        if !done.insert(module.to_string()) {
            return None;
        }
        trail.push(module.to_string());
        for next in imports.get(module).into_iter().flatten() {
            if let Some(cycle) = visit(next, imports, trail, done) {
                return Some(cycle);
            }
        }
        trail.pop();
        None
    }
    let mut done = BTreeSet::new();
    for module in &modules {
        if let Some(cycle) = visit(module, &imports, &mut Vec::new(), &mut done) {
            panic!(
                "the simulator's modules import each other in a loop: {}",
                cycle.join(" -> ")
            );
        }
    }
}

#[test]
fn paths_are_found_in_code_and_nowhere_else() {
    let code = code_only(
        "use crate::ops::{self, Context};\n\
         // crate::in_a_comment\n\
         let s = \"crate::in_a_string {\"; let c = '{';\n\
         use super::{a, b::c};\n\
         pub(crate) fn f<'a>(x: &'a str) { crate::metrics::add(r#\"crate::raw\"#) }\n\
         mod tests { use super::*; use super::super::super::model::Entry; }\n",
    );
    let module = ["ops".to_string(), "create".to_string()];
    assert_eq!(
        reached_modules(&code, &module),
        [
            (1, "ops".to_string()),
            (5, "metrics".to_string()),
            (6, "model".to_string())
        ]
    );
    let root = reached_modules("use super::{haproxy, model::Entry};", &["ops".to_string()]);
    assert_eq!(root, [(1, "haproxy".to_string()), (1, "model".to_string())]);
}
