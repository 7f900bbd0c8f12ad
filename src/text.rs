//! Text that comes from outside doproxy: a file must be UTF-8, and where it
//! is not, the error names the line instead of blaming permissions or the
//! path.

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
}
