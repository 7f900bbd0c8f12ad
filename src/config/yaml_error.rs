//! doproxy.yml errors people can act on. serde lists every key it expected
//! after an unknown one (some fifty at the top level); a key close to one of
//! them is named instead (`did you mean`). And serde_yaml_ng places a
//! duplicate key at the mapping that holds it (at the top level nowhere),
//! so the duplicate's own line is looked up in the text.

/// The sentence for `message`, serde_yaml_ng's error about `text`.
pub fn explain(message: &str, text: &str) -> String {
    unknown_key(message)
        .or_else(|| duplicate_key(message, text))
        .unwrap_or_else(|| message.to_string())
}

/// `heal: unknown field `graze` at line 2 column 3; did you mean `grace`?`
/// for serde's `unknown field `graze`, expected one of `grace`, ...`, when
/// one expected key is close; None otherwise.
fn unknown_key(message: &str) -> Option<String> {
    let (before, rest) = message.split_once("unknown field `")?;
    let (unknown, rest) = rest.split_once('`')?;
    let (expected, location) = match rest.split_once(" at line ") {
        Some((expected, location)) => (expected, format!(" at line {location}")),
        None => (rest, String::new()),
    };
    let candidates: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    let suggestion = did_you_mean(unknown, &candidates)?;
    Some(format!(
        "{before}unknown field `{unknown}`{location}; did you mean `{suggestion}`?"
    ))
}

/// The candidate closest to `unknown`, if one is close enough to be a
/// typo of it: a few letters apart, fewer for short names.
fn did_you_mean<'a>(unknown: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let unknown = unknown.to_ascii_lowercase();
    let most = (unknown.chars().count() / 4).clamp(1, 3);
    candidates
        .iter()
        .map(|c| (edit_distance(&unknown, c), *c))
        .filter(|(distance, _)| *distance <= most)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// Levenshtein distance: the fewest letters inserted, removed or changed
/// to turn `a` into `b`.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let replaced = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = replaced.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

/// `droplet_options: duplicate field `region` at line 4 (first at line 2)`
/// for serde's `droplet_options: duplicate field `region` at line 1 column
/// 1`, when the text has the key twice in block style; None otherwise.
fn duplicate_key(message: &str, text: &str) -> Option<String> {
    let (before, rest) = message.split_once("duplicate field `")?;
    let (key, _) = rest.split_once('`')?;
    let path: Vec<&str> = match before.strip_suffix(": ") {
        Some(path) => path.split('.').collect(),
        None => Vec::new(),
    };
    match key_lines(text, &path, key)[..] {
        [first, second, ..] => Some(format!(
            "{before}duplicate field `{key}` at line {second} (first at line {first})"
        )),
        _ => None,
    }
}

/// The lines (from 1) where `key` is written in the block mapping at
/// `path`, e.g. `region` under `droplet_options`.
fn key_lines(text: &str, path: &[&str], key: &str) -> Vec<usize> {
    let mut open: Vec<(usize, &str)> = Vec::new();
    let mut lines = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let content = line.trim_start();
        let indent = line.len() - content.len();
        let Some((name, _)) = content.split_once(':') else {
            continue;
        };
        if content.starts_with(['#', '-']) || name.is_empty() || name.contains([' ', '{', '"']) {
            continue;
        }
        while open.last().is_some_and(|(depth, _)| *depth >= indent) {
            open.pop();
        }
        if name == key && open.iter().map(|(_, k)| *k).eq(path.iter().copied()) {
            lines.push(number + 1);
        }
        open.push((indent, name));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typo_gets_the_key_it_resembles() {
        let keys = ["haproxy_cfg_file", "haproxy_cfg_path", "token", "pool"];
        assert_eq!(
            did_you_mean("haproxy_cfg_pth", &keys),
            Some("haproxy_cfg_path")
        );
        assert_eq!(did_you_mean("Token", &keys), Some("token"));
        assert_eq!(did_you_mean("tokn", &keys), Some("token"));
        assert_eq!(did_you_mean("colour", &keys), None);
        assert_eq!(did_you_mean("pools", &keys), Some("pool"));
        assert_eq!(edit_distance("graze", "grace"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn unknown_keys_name_the_likely_one_instead_of_all() {
        let message = "heal: unknown field `graze`, expected one of `grace`, `max_share_per_hour`, `outage_share`, `interval` at line 2 column 3";
        assert_eq!(
            explain(message, ""),
            "heal: unknown field `graze` at line 2 column 3; did you mean `grace`?"
        );
        let two = "unknown field `mix`, expected `min` or `max`";
        assert_eq!(explain(two, ""), "unknown field `mix`; did you mean `min`?");
        let far = "unknown field `colour`, expected one of `grace`, `interval` at line 1 column 1";
        assert_eq!(explain(far, ""), far, "nothing close: the whole list");
    }

    #[test]
    fn a_duplicate_key_is_named_at_its_own_line() {
        let text = "inventory_file: inventory\nbackend_port: 80\n\n# again\nbackend_port: 81\n";
        assert_eq!(
            explain("duplicate field `backend_port`", text),
            "duplicate field `backend_port` at line 5 (first at line 2)"
        );
        let nested = "droplet_options:\n  region: nyc3\n  size: x\n  region: nyc1\nregion: top\n";
        assert_eq!(
            explain(
                "droplet_options: duplicate field `region` at line 2 column 3",
                nested
            ),
            "droplet_options: duplicate field `region` at line 4 (first at line 2)"
        );
        let flow = "droplet_options: {region: a, region: b}\n";
        let message = "droplet_options: duplicate field `region` at line 1 column 18";
        assert_eq!(explain(message, flow), message);
    }
}
