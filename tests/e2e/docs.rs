//! The manual against the binary, so README.md and docs/ stay true as
//! commands, flags and config keys change. What doproxy offers is read from
//! doproxy itself: its `--help` (each command's, all the way down) and, for
//! config keys, the error an unknown key gets, which lists every key doproxy
//! expected there. Every command, flag, argument and value must be in
//! docs/commands.md under that command; every config key in
//! docs/configuration.md and doproxy.yml.example, which name no other; an
//! example may use only flags its command has; and every relative link in
//! README.md and docs/ must lead to a file, and to an anchor that is there.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::PathBuf;

use crate::support::{Run, TempDir, doproxy, repo_file};

#[test]
fn every_command_flag_argument_and_value_is_in_the_command_reference() {
    let commands = commands();
    let reference = fs::read_to_string(repo_file("docs/commands.md")).unwrap();
    let sections = sections(&reference);
    let section = |title: &str| {
        sections
            .iter()
            .find(|s| s.title == title)
            .map(|s| s.body.as_str())
    };
    let mut missing = Vec::new();
    let global = &commands[0];
    let globals = section("Global flags").expect("docs/commands.md has no Global flags section");
    for name in global.flags.iter().chain(&global.values) {
        if !mentions(globals, name) {
            missing.push(format!("{name} (a global flag or value) in Global flags"));
        }
    }
    for command in &commands[1..] {
        let title = format!("doproxy {}", command.path.join(" "));
        let Some(body) = section(&title) else {
            missing.push(format!("a section titled {title:?}"));
            continue;
        };
        let own = command.flags.iter().filter(|f| !global.flags.contains(*f));
        let values = command
            .values
            .iter()
            .filter(|v| !global.values.contains(*v));
        for name in own.chain(&command.arguments).chain(values) {
            if !mentions(body, name) {
                missing.push(format!("{name} in the section {title:?}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "docs/commands.md lacks what doproxy --help shows:\n{}",
        missing.join("\n")
    );
}

#[test]
fn every_config_key_doproxy_knows_is_in_the_reference_and_the_example() {
    let known = config_keys();
    let reference = fs::read_to_string(repo_file("docs/configuration.md")).unwrap();
    let example = fs::read_to_string(repo_file("doproxy.yml.example")).unwrap();
    let mut wrong = Vec::new();
    for (file, keys) in [
        ("docs/configuration.md", reference_keys(&reference)),
        ("doproxy.yml.example", example_keys(&example)),
    ] {
        for key in known.difference(&keys) {
            wrong.push(format!("{file} lacks {key}"));
        }
        for key in keys.difference(&known) {
            wrong.push(format!("{file} names {key}, which doproxy refuses"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn examples_use_only_flags_their_command_has() {
    let commands = commands();
    let mut checked = 0;
    let mut wrong = Vec::new();
    for (file, text) in manual() {
        for code in split_code(&text).0 {
            for (path, flags) in invocations(&code, &commands) {
                let command = commands.iter().find(|c| c.path == path).unwrap();
                for flag in flags {
                    checked += 1;
                    if !command.flags.contains(&flag) && !commands[0].flags.contains(&flag) {
                        wrong.push(format!(
                            "{}: {flag} is no flag of doproxy {}",
                            file.display(),
                            path.join(" ")
                        ));
                    }
                }
            }
        }
    }
    assert!(checked > 50, "found only {checked} flags in examples");
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn relative_links_lead_to_files_and_anchors_that_exist() {
    let manual = manual();
    let mut broken = Vec::new();
    let mut linked_from: BTreeMap<&PathBuf, BTreeSet<PathBuf>> = BTreeMap::new();
    let mut checked = 0;
    for (file, text) in &manual {
        for target in links(text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let (path, anchor) = target.split_once('#').unwrap_or((&target, ""));
            let linked = match path {
                "" => file.clone(),
                path => file.parent().unwrap().join(path),
            };
            if !linked.exists() {
                broken.push(format!("{}: {target}: no such file", file.display()));
                continue;
            }
            let linked = linked.canonicalize().unwrap();
            if !anchor.is_empty() {
                let text = fs::read_to_string(&linked).unwrap_or_default();
                let anchors: Vec<String> =
                    sections(&text).iter().map(|s| s.anchor.clone()).collect();
                if !anchors.iter().any(|a| a == anchor) {
                    broken.push(format!(
                        "{}: {target}: no heading with that anchor in {}",
                        file.display(),
                        linked.display()
                    ));
                }
            }
            linked_from.entry(file).or_default().insert(linked);
        }
    }
    assert!(checked > 50, "found only {checked} relative links");
    let mut reached = BTreeSet::from([manual[0].0.clone()]);
    let mut pending = vec![manual[0].0.clone()];
    while let Some(page) = pending.pop() {
        for next in linked_from.get(&page).into_iter().flatten() {
            if reached.insert(next.clone()) {
                pending.push(next.clone());
            }
        }
    }
    for (file, _) in &manual {
        if !reached.contains(file) {
            broken.push(format!(
                "{}: no page links to it, so nobody finds it from README.md",
                file.display()
            ));
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

/// One command as its `--help` shows it: the flags it takes (global ones
/// too), which of them take a value, its positional arguments, the values
/// its flags and arguments accept, and its subcommands.
struct HelpedCommand {
    path: Vec<String>,
    flags: Vec<String>,
    flags_with_values: Vec<String>,
    arguments: Vec<String>,
    values: Vec<String>,
    subcommands: Vec<String>,
}

/// doproxy itself first, then every command and subcommand under it.
fn commands() -> Vec<HelpedCommand> {
    let mut found = Vec::new();
    let mut pending = vec![Vec::new()];
    while let Some(path) = pending.pop() {
        let command = helped(path);
        for sub in &command.subcommands {
            let mut deeper = command.path.clone();
            deeper.push(sub.clone());
            pending.push(deeper);
        }
        found.push(command);
    }
    found.sort_by(|a, b| a.path.cmp(&b.path));
    let names: Vec<String> = found.iter().map(|c| c.path.join(" ")).collect();
    for expected in ["", "create", "inventory import", "completions"] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected:?} in {names:?}"
        );
    }
    assert!(found[0].flags.iter().any(|f| f == "--config"));
    found
}

/// Reads `doproxy PATH... --help`: clap puts commands, arguments and flags
/// two spaces in (flags without a short form six), and their descriptions
/// further in.
fn helped(path: Vec<String>) -> HelpedCommand {
    let run = Run::from_output(doproxy().args(&path).arg("--help")).success();
    let mut command = HelpedCommand {
        path,
        flags: Vec::new(),
        flags_with_values: Vec::new(),
        arguments: Vec::new(),
        values: Vec::new(),
        subcommands: Vec::new(),
    };
    let mut heading = "";
    let mut listing_values = false;
    for line in run.stdout.lines() {
        if !line.starts_with(' ') && line.ends_with(':') {
            heading = line;
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let item = line.trim();
        match heading {
            "Commands:" if indent == 2 => {
                let name = item.split_whitespace().next().unwrap();
                if name != "help" {
                    command.subcommands.push(name.to_string());
                }
            }
            "Arguments:" if indent == 2 => {
                let name = item.split_whitespace().next().unwrap();
                command
                    .arguments
                    .push(name.trim_matches(|c| "[]<>.".contains(c)).to_string());
            }
            "Options:" if (indent == 2 || indent == 6) && item.starts_with('-') => {
                let head = item.split("  ").next().unwrap();
                for flag in head.split([',', ' ']).filter(|t| t.starts_with('-')) {
                    command.flags.push(flag.to_string());
                    if head.contains('<') {
                        command.flags_with_values.push(flag.to_string());
                    }
                }
            }
            _ => {}
        }
        // `[possible values: a, b]`, or `- a: ...` lines under `Possible values:`.
        if let Some(list) = item.strip_prefix("[possible values: ") {
            let list = list.trim_end_matches(']');
            command.values.extend(list.split(", ").map(str::to_string));
        }
        match item.strip_prefix("- ") {
            Some(value) if listing_values => {
                command
                    .values
                    .push(value.split(':').next().unwrap().to_string());
            }
            _ => listing_values = item == "Possible values:",
        }
    }
    command
}

/// Whether `text` names `name`, standing on its own: `--count` is not
/// named by `--count-all`, nor `-o` by `--output`. Values are looked for
/// in backticks, since `text` or `fish` are words too.
fn mentions(text: &str, name: &str) -> bool {
    let is_value = !name.starts_with('-') && name.chars().any(|c| c.is_ascii_lowercase());
    if is_value {
        return text.contains(&format!("`{name}`"));
    }
    let part_of_name = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    text.match_indices(name).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + name.len()..].chars().next();
        !before.is_some_and(part_of_name) && !after.is_some_and(part_of_name)
    })
}

/// Every key doproxy accepts in doproxy.yml, sections' keys as
/// `section.key`. A key far from every real one gets serde's error listing
/// all the keys expected where it stands (a close one would get a `did you
/// mean` instead); each top-level key is tried as a section the same way.
fn config_keys() -> BTreeSet<String> {
    let dir = TempDir::new("docs-keys");
    let unknown = "zz_no_such_key_zz";
    let expected = |yaml: &str, within: &str| -> Option<Vec<String>> {
        let file = dir.path().join("doproxy.yml");
        fs::write(&file, yaml).unwrap();
        let run = Run::from_output(doproxy().arg("--config").arg(&file).arg("print"));
        let prefix = if within.is_empty() {
            String::new()
        } else {
            format!("{within}: ")
        };
        let marker = format!("{prefix}unknown field `{unknown}`, expected ");
        let (_, rest) = run.stderr.split_once(&marker)?;
        let list = rest
            .split(" at line ")
            .next()
            .unwrap()
            .split(';')
            .next()
            .unwrap();
        Some(
            list.split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_string)
                .collect(),
        )
    };
    let top = expected(&format!("{unknown}: 1\n"), "")
        .expect("doproxy no longer lists the keys it expected after an unknown one");
    assert!(top.iter().any(|k| k == "token"), "{top:?}");
    let mut keys = BTreeSet::new();
    for key in &top {
        if let Some(inner) = expected(&format!("{key}:\n  {unknown}: 1\n"), key) {
            keys.extend(inner.iter().map(|k| format!("{key}.{k}")));
        }
        keys.insert(key.clone());
    }
    assert!(keys.contains("droplet_options.region"), "{keys:?}");
    keys
}

/// The keys docs/configuration.md documents: the first column of its
/// tables headed `key`, with the sections of `section.key` names.
fn reference_keys(text: &str) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let mut in_key_table = false;
    for line in text.lines() {
        if !line.starts_with('|') {
            in_key_table = false;
            continue;
        }
        let first = line
            .split(" | ")
            .next()
            .unwrap()
            .trim_start_matches('|')
            .trim();
        if first == "key" {
            in_key_table = true;
            continue;
        }
        if in_key_table && !first.starts_with("---") {
            keys.extend(first.split('`').skip(1).step_by(2).flat_map(with_sections));
        }
    }
    keys
}

/// The keys doproxy.yml.example shows, set or commented out (`# key:`),
/// nested ones by indentation under the last top-level key.
fn example_keys(text: &str) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let mut section = String::new();
    for line in text.lines() {
        let before_hash = line.len() - line.trim_start().len();
        let rest = line.trim_start();
        let (indent, rest) = match rest.strip_prefix('#') {
            Some(commented) => {
                let Some(commented) = commented.strip_prefix(' ') else {
                    continue;
                };
                let inner = commented.len() - commented.trim_start().len();
                (before_hash + inner, commented.trim_start())
            }
            None => (before_hash, rest),
        };
        let Some((key, _)) = rest.split_once(':') else {
            continue;
        };
        let is_key = !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && rest[key.len() + 1..]
                .chars()
                .next()
                .is_none_or(|c| c == ' ');
        if !is_key {
            continue;
        }
        if indent == 0 {
            section = key.to_string();
            keys.insert(section.clone());
        } else {
            keys.insert(format!("{section}.{key}"));
        }
    }
    keys
}

/// `a.b.c` and the sections it is in: `a`, `a.b`.
fn with_sections(key: &str) -> Vec<String> {
    let parts: Vec<&str> = key.split('.').collect();
    (1..=parts.len()).map(|n| parts[..n].join(".")).collect()
}

/// README.md and every page in docs/, with their text.
fn manual() -> Vec<(PathBuf, String)> {
    let mut files = vec![repo_file("README.md").canonicalize().unwrap()];
    let mut pages: Vec<PathBuf> = fs::read_dir(repo_file("docs"))
        .unwrap()
        .map(|entry| entry.unwrap().path().canonicalize().unwrap())
        .filter(|path| path.extension().is_some_and(|e| e == "md"))
        .collect();
    pages.sort();
    files.extend(pages);
    files
        .into_iter()
        .map(|path| {
            let text = fs::read_to_string(&path).unwrap();
            (path, text)
        })
        .collect()
}

/// A heading and what stands under it, up to the next heading of its level
/// or above.
struct Section {
    title: String,
    anchor: String,
    body: String,
}

/// Every heading outside code blocks, with the anchor GitHub gives it
/// (lower case; letters, digits, `-` and `_` kept, spaces made `-`, the
/// rest dropped; `-1`, `-2` after repeats).
fn sections(text: &str) -> Vec<Section> {
    let mut headings = Vec::new();
    for (number, line) in prose_lines(text) {
        let level = line.chars().take_while(|c| *c == '#').count();
        if (1..=6).contains(&level) && line[level..].starts_with(' ') {
            headings.push((number, level, line[level..].trim().to_string()));
        }
    }
    let lines: Vec<&str> = text.lines().collect();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut sections = Vec::new();
    for (i, (number, level, title)) in headings.iter().enumerate() {
        let end = headings[i + 1..]
            .iter()
            .find(|(_, l, _)| l <= level)
            .map_or(lines.len(), |(n, _, _)| *n);
        let slug: String = title
            .to_lowercase()
            .chars()
            .filter_map(|c| match c {
                ' ' => Some('-'),
                c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                _ => None,
            })
            .collect();
        let repeats = seen.entry(slug.clone()).or_insert(0);
        let anchor = match *repeats {
            0 => slug,
            n => format!("{slug}-{n}"),
        };
        *repeats += 1;
        sections.push(Section {
            title: title.clone(),
            anchor,
            body: lines[number + 1..end].join("\n"),
        });
    }
    sections
}

/// The lines outside fenced code blocks, with their index.
fn prose_lines(text: &str) -> Vec<(usize, &str)> {
    let mut fenced = false;
    let mut prose = Vec::new();
    for (number, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced {
            prose.push((number, line));
        }
    }
    prose
}

/// A page split into its code (each line of its fenced blocks, and each
/// inline code span, which may wrap across lines; ``` `` ``` spans hold
/// backticks) and the prose around it.
fn split_code(text: &str) -> (Vec<String>, String) {
    let mut fenced = false;
    let mut code = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if fenced {
            code.push(line.to_string());
        }
    }
    let lines: Vec<&str> = prose_lines(text).into_iter().map(|(_, l)| l).collect();
    let lines = lines.join("\n");
    let mut prose = String::new();
    let mut rest = lines.as_str();
    while let Some(start) = rest.find('`') {
        let ticks = rest[start..].chars().take_while(|c| *c == '`').count();
        let fence = "`".repeat(ticks);
        let inner = &rest[start + ticks..];
        let Some(end) = inner.find(&fence) else { break };
        prose.push_str(&rest[..start]);
        code.push(inner[..end].replace('\n', " "));
        rest = &inner[end + ticks..];
    }
    prose.push_str(rest);
    (code, prose)
}

/// The inline links' targets outside code: `[text](target)`.
fn links(text: &str) -> Vec<String> {
    let (_, prose) = split_code(text);
    prose
        .match_indices("](")
        .filter_map(|(at, _)| {
            let target = &prose[at + 2..];
            target.find(')').map(|end| target[..end].to_string())
        })
        .collect()
}

/// Each `doproxy ...` call in a piece of code: the command it names and the
/// long flags it passes, up to the end of the command (a pipe, a
/// redirection, a comment). `[a | b]` is a choice, not a pipe.
fn invocations(code: &str, commands: &[HelpedCommand]) -> Vec<(Vec<String>, Vec<String>)> {
    let spaced = code
        .replace("$(", " ")
        .replace('[', " [ ")
        .replace(']', " ] ")
        .replace("\\|", " | ");
    let tokens: Vec<&str> = spaced.split_whitespace().collect();
    let global = &commands[0];
    let mut calls = Vec::new();
    let starts = tokens
        .iter()
        .enumerate()
        .filter(|(_, t)| **t == "doproxy" || t.ends_with("/doproxy"));
    for (start, _) in starts {
        let mut path: Vec<String> = Vec::new();
        let mut flags = Vec::new();
        let mut depth = 0;
        let mut skip_value = false;
        let mut arguments_begun = false;
        for token in &tokens[start + 1..] {
            match *token {
                "[" => depth += 1,
                "]" => depth -= 1,
                "|" if depth > 0 => {}
                "|" | "||" | "&&" | ";" | ">" | ">>" | "<" | "2>" => break,
                _ if token.starts_with('#') || token.starts_with('$') => break,
                _ if skip_value => skip_value = false,
                _ if token.starts_with("--") && token.len() > 2 => {
                    let flag = token.split('=').next().unwrap();
                    let flag = flag.trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
                    skip_value = path.is_empty()
                        && global.flags_with_values.iter().any(|f| f == flag)
                        && !token.contains('=');
                    flags.push(flag.to_string());
                }
                "-o" if path.is_empty() => skip_value = true,
                _ if token.starts_with('-') => {}
                _ => {
                    let parent = commands.iter().find(|c| c.path == path).unwrap();
                    if !arguments_begun && parent.subcommands.iter().any(|s| s == token) {
                        path.push(token.to_string());
                    } else if path.is_empty() {
                        break;
                    } else {
                        arguments_begun = true;
                    }
                }
            }
        }
        if !path.is_empty() {
            calls.push((path, flags));
        }
    }
    calls
}

#[test]
fn the_checks_read_markdown_as_github_does() {
    let text = "# A `b` (c)\n\n```\n# not a heading\n```\n## A b c\n## A b c\ntext\n";
    let anchors: Vec<String> = sections(text).into_iter().map(|s| s.anchor).collect();
    assert_eq!(anchors, ["a-b-c", "a-b-c-1", "a-b-c-2"]);
    assert!(mentions("`--count N`", "--count"));
    assert!(!mentions("--count-all", "--count"));
    assert!(!mentions("--output", "-o"));
    assert!(!mentions("fish and chips", "fish"));
    assert_eq!(
        links("[a](x.md#y) `[b](z.md)`\n```\n[c](w.md)\n```\n"),
        ["x.md#y"]
    );
    let example = "# autoscale:\n#   min: 2\nheal:\n  # grace: 2m\n# Prose: not a key\n";
    let keys = ["autoscale", "autoscale.min", "heal", "heal.grace"];
    assert_eq!(example_keys(example), keys.map(String::from).into());
}
