//! The values of an inventory entry that arrive as text from outside (the
//! etcd store, the inventory file, the DigitalOcean API). Each is a type that
//! can only be built from text that passed its check, so whoever can write
//! the store cannot smuggle a newline, a HAProxy directive or a terminal
//! escape into the HAProxy config, the inventory file or doproxy's output:
//! only these types, never a bare string, leave an entry.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A value that failed its check: `name "web-1\n..." is not a hostname (...)`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {value} is not {rule}")]
pub struct InvalidField {
    field: &'static str,
    /// The value as Rust quotes it (newlines and escapes visible), cut short.
    value: String,
    rule: &'static str,
}

impl InvalidField {
    fn new(field: &'static str, value: &str, rule: &'static str) -> InvalidField {
        /// Enough of a value to recognise it; a long one is cut.
        const SHOWN: usize = 60;
        let value = match value.char_indices().nth(SHOWN) {
            Some((end, _)) => format!("{:?}...", &value[..end]),
            None => format!("{value:?}"),
        };
        InvalidField { field, value, rule }
    }
}

/// Declares a validated text type: built only through `parse` (or serde,
/// which calls it and names the value `$label` in errors), shown and
/// serialized as the text itself.
macro_rules! checked_text {
    ($(#[$doc:meta])* $name:ident, $label:literal, $check:path) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// `text` as this type, if it passes the check; `field` names
            /// it in the error.
            pub fn parse(field: &'static str, text: &str) -> Result<$name, InvalidField> {
                $check(text).map_err(|rule| InvalidField::new(field, text, rule))?;
                Ok($name(text.to_string()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidField;

            fn try_from(text: String) -> Result<$name, InvalidField> {
                $name::parse($label, &text)
            }
        }

        /// For tests: a literal known to pass the check.
        #[cfg(test)]
        impl From<&str> for $name {
            fn from(text: &str) -> $name {
                $name::parse($label, text).expect("a valid test value")
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;

            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                &self.0 == other
            }
        }
    };
}

checked_text!(
    /// A droplet's name as DigitalOcean allows it (hostname characters:
    /// letters, digits, `-` and `.`, at most 253, ending in a letter or
    /// digit), or empty while not known yet (a Ruby DOProxy ID-only
    /// line). The only droplet text that reaches the HAProxy config.
    DropletName,
    "name",
    check_hostname
);

checked_text!(
    /// One word of a droplet's build (an image, size or region slug, an
    /// image ID, a tag, a VPC UUID, the user data's digest): letters,
    /// digits, `-`, `_`, `.` and `:`, at most 255.
    Slug,
    "build value",
    check_slug
);

checked_text!(
    /// When a droplet was created, as the API writes it
    /// (`2026-11-28T20:41:06Z`): digits, letters, `-`, `:`, `.` and `+`,
    /// at most 64. Compares in time order for the API's UTC timestamps.
    Timestamp,
    "created_at",
    check_timestamp
);

/// The longest hostname DNS allows, and DigitalOcean's limit on names.
const MAX_HOSTNAME: usize = 253;
/// DigitalOcean's limit on a tag, the longest build word.
const MAX_SLUG: usize = 255;
const MAX_TIMESTAMP: usize = 64;

fn check_hostname(text: &str) -> Result<(), &'static str> {
    const RULE: &str =
        "a hostname (letters, digits, - and ., at most 253, ending in a letter or digit)";
    if text.is_empty() {
        return Ok(());
    }
    // DigitalOcean's own pattern for droplet names.
    let edges_ok = text.ends_with(|c: char| c.is_ascii_alphanumeric());
    let chars_ok = text
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'));
    if text.len() <= MAX_HOSTNAME && edges_ok && chars_ok {
        Ok(())
    } else {
        Err(RULE)
    }
}

fn check_slug(text: &str) -> Result<(), &'static str> {
    let chars_ok = text
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
    if (1..=MAX_SLUG).contains(&text.len()) && chars_ok {
        Ok(())
    } else {
        Err("a slug, ID or tag (letters, digits, -, _, . and :, at most 255)")
    }
}

fn check_timestamp(text: &str) -> Result<(), &'static str> {
    let chars_ok = text
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | ':' | '.' | '+'));
    if (1..=MAX_TIMESTAMP).contains(&text.len()) && chars_ok {
        Ok(())
    } else {
        Err("a timestamp such as 2026-11-28T20:41:06Z")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The name from issue 17: it passed `haproxy -c` and `watch` installed it.
    const INJECTION: &str =
        "web-1\n    server evil 203.0.113.66:80 check\nglobal\n    insecure-fork-wanted";

    #[test]
    fn names_are_hostnames_or_not_known_yet() {
        for good in ["auto-nginx-0", "web.example.com", "a", "A1", "-web", ""] {
            assert!(DropletName::parse("name", good).is_ok(), "{good:?}");
        }
        let long = "a".repeat(254);
        for bad in [
            INJECTION,
            "web 1",
            "-",
            "web-",
            "web.",
            "web_1",
            "wéb",
            "web\u{1b}]2;x\u{7}",
            "{{ x }}",
            long.as_str(),
        ] {
            assert!(DropletName::parse("name", bad).is_err(), "{bad:?}");
        }
        assert!(DropletName::parse("name", &"a".repeat(253)).is_ok());
    }

    #[test]
    fn errors_show_the_value_escaped_and_cut_short() {
        let err = DropletName::parse("name", INJECTION)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(r#"name "web-1\n    server evil 203.0.113.66:80 check\nglobal\n "#),
            "{err}"
        );
        assert!(err.contains("\"... is not a hostname"), "{err}");
        assert!(!err.contains('\n'), "one line: {err}");
    }

    #[test]
    fn build_words_and_timestamps_have_no_room_for_text() {
        for good in [
            "ubuntu-24-04-x64",
            "158244651",
            "doproxy:web_1",
            "sha256:88c95955b024402a",
            "760e09ef-dc84-11e8-981e-3cfdfeaae000",
        ] {
            assert!(Slug::parse("image", good).is_ok(), "{good:?}");
        }
        for bad in ["", "a b", "a,b", "a=b", "x\ny", "#"] {
            assert!(Slug::parse("image", bad).is_err(), "{bad:?}");
        }
        assert!(Timestamp::parse("created_at", "2026-11-28T20:41:06.123+00:00").is_ok());
        for bad in ["", "2026-11-28 20:41:06", "x\n1 evil", "now;"] {
            assert!(Timestamp::parse("created_at", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn serde_checks_too() {
        let name: DropletName = serde_json::from_str(r#""web-1""#).unwrap();
        assert_eq!(name, "web-1");
        assert_eq!(serde_json::to_string(&name).unwrap(), r#""web-1""#);
        let err = serde_json::from_str::<DropletName>(&serde_json::to_string(INJECTION).unwrap())
            .unwrap_err();
        assert!(err.to_string().contains("is not a hostname"), "{err}");
    }
}
