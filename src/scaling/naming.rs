//! Names for new droplets: `<hostname_prefix>-<n>`, never one the pool
//! already uses. The original used the inventory size as `n`, so a delete
//! followed by a create made two droplets with the same name.

use std::collections::HashSet;

/// `count` new names, taking the lowest numbers no name in `taken` uses.
pub fn next_names<'a>(
    prefix: &str,
    taken: impl IntoIterator<Item = &'a str>,
    count: usize,
) -> Vec<String> {
    let taken: HashSet<&str> = taken.into_iter().collect();
    (0..)
        .map(|n| format!("{prefix}-{n}"))
        .filter(|name| !taken.contains(name.as_str()))
        .take(count)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_names_count_from_zero_like_the_original() {
        assert_eq!(
            next_names("auto-nginx", [], 2),
            vec!["auto-nginx-0", "auto-nginx-1"]
        );
    }

    #[test]
    fn gaps_are_filled_and_used_names_skipped() {
        let taken = ["web-0", "web-2", "other-1"];
        assert_eq!(next_names("web", taken, 3), vec!["web-1", "web-3", "web-4"]);
    }
}
