//! Text that comes from outside doproxy. A file must be UTF-8, and where it
//! is not, the error names the line instead of blaming permissions or the
//! path. Free text that others can write and doproxy shows people (a
//! leader's or a lock holder's description in etcd, the reasons kept in a
//! history) is `Printable` from the moment it is read, so nothing written
//! there can drive the terminal it is shown on.

use std::fmt;
use std::ops::Deref;

use serde::{Deserialize, Deserializer, Serialize};

/// Bytes that are not UTF-8 text, and the line where they start.
#[derive(Debug, thiserror::Error)]
#[error(
    "is not UTF-8 text: line {line} holds bytes that are not UTF-8 (another encoding, or a damaged file)"
)]
pub struct NotUtf8 {
    pub line: usize,
}

/// `bytes` as text, or the line of the first bytes that are not UTF-8.
pub fn utf8(bytes: Vec<u8>) -> Result<String, NotUtf8> {
    String::from_utf8(bytes).map_err(|err| {
        let valid = &err.as_bytes()[..err.utf8_error().valid_up_to()];
        NotUtf8 {
            line: 1 + valid.iter().filter(|b| **b == b'\n').count(),
        }
    })
}

/// The most characters of free text shown: far more than a description or
/// a reason needs, few enough that a screenful stays a screenful.
const MAX_CHARS: usize = 1000;

/// Free text made safe to show: every control character (escape sequences,
/// newlines, bells) and every invisible formatting one (bidirectional
/// overrides, zero-width marks) written as its escape (`\u{1b}`, `\n`), and
/// anything past MAX_CHARS cut off, saying how much. Read from JSON, the
/// text is made so as it is read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Printable(String);

impl Printable {
    pub fn new(text: &str) -> Printable {
        let mut shown = String::with_capacity(text.len().min(MAX_CHARS));
        for (count, c) in text.chars().enumerate() {
            if count == MAX_CHARS {
                let rest = text.chars().count() - count;
                shown.push_str(&format!("... ({rest} more characters)"));
                break;
            }
            if is_unprintable(c) {
                shown.extend(c.escape_debug());
            } else {
                shown.push(c);
            }
        }
        Printable(shown)
    }
}

/// A character that acts on a terminal, or changes how the text around it
/// reads, instead of showing itself.
fn is_unprintable(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}'
        )
}

impl From<&str> for Printable {
    fn from(text: &str) -> Printable {
        Printable::new(text)
    }
}

impl From<String> for Printable {
    fn from(text: String) -> Printable {
        Printable::new(&text)
    }
}

impl Deref for Printable {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Printable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Printable {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Printable, D::Error> {
        String::deserialize(deserializer).map(Printable::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_that_are_not_utf8_are_named_at_their_line() {
        assert_eq!(utf8(b"caf\xc3\xa9\n".to_vec()).unwrap(), "café\n");
        let err = utf8(b"# caf\xc3\xa9\nok\ncaf\xe9\n".to_vec()).unwrap_err();
        assert_eq!(err.line, 3);
        assert!(
            err.to_string()
                .starts_with("is not UTF-8 text: line 3 holds")
        );
    }

    #[test]
    fn nothing_that_drives_a_terminal_stays_in_printable_text() {
        let plain = "pid 812 on proxy-a: scale_out, café 3 -> 4";
        assert_eq!(Printable::new(plain).to_string(), plain);
        let escapes = "a\u{1b}]2;owned\u{7}\u{1b}[2J\r\nb\u{9b}31m\u{202e}c\u{200b}d\u{7f}";
        assert_eq!(
            Printable::new(escapes).to_string(),
            r"a\u{1b}]2;owned\u{7}\u{1b}[2J\r\nb\u{9b}31m\u{202e}c\u{200b}d\u{7f}"
        );
        let read: Printable = serde_json::from_str(r#""x\u001b[2Jy""#).unwrap();
        assert_eq!(&*read, r"x\u{1b}[2Jy");
        assert_eq!(serde_json::to_string(&read).unwrap(), r#""x\\u{1b}[2Jy""#);
    }

    #[test]
    fn long_text_is_cut_saying_how_much() {
        let long = "é".repeat(MAX_CHARS + 5);
        let shown = Printable::new(&long);
        assert!(shown.starts_with(&"é".repeat(MAX_CHARS)));
        assert!(shown.ends_with("é... (5 more characters)"), "{shown}");
        assert_eq!(
            Printable::new(&"é".repeat(MAX_CHARS)).to_string(),
            "é".repeat(MAX_CHARS)
        );
    }
}
