//! Lists of servers and droplets in log lines and messages: a few named, the
//! rest counted, so scaling to 100 droplets does not write 100 names on one
//! line. The whole list stays where it is the result (JSON, `Success:`
//! lines) or a command to copy (`doproxy delete --id ...`).

use std::fmt::Display;

/// Lists this long are written out whole.
const WHOLE: usize = 4;
/// Longer ones name this many, then count the rest.
const NAMED: usize = 3;

/// `a, b, c`, or `a, b, c and 97 more` for a longer list.
pub fn abbreviated<T: Display>(items: &[T]) -> String {
    let named = if items.len() <= WHOLE {
        items.len()
    } else {
        NAMED
    };
    let mut text = items[..named]
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > named {
        text.push_str(&format!(" and {} more", items.len() - named));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lists_name_a_few_and_count_the_rest() {
        assert_eq!(abbreviated::<u64>(&[]), "");
        assert_eq!(abbreviated(&[7]), "7");
        assert_eq!(abbreviated(&["a", "b", "c", "d"]), "a, b, c, d");
        assert_eq!(
            abbreviated(&["a", "b", "c", "d", "e"]),
            "a, b, c and 2 more"
        );
        let hundred: Vec<String> = (0..100).map(|n| format!("www-{n}")).collect();
        assert_eq!(abbreviated(&hundred), "www-0, www-1, www-2 and 97 more");
    }
}
