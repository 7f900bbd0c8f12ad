//! Domain names a certificate is issued for, checked where they enter: they
//! go to the CA, into HAProxy's config and into file names, so only plain
//! DNS names an HTTP-01 challenge can prove get through.

use std::fmt;

/// A lower-case DNS name of two labels or more (`www.example.com`), each
/// label letters, digits and inner hyphens; no wildcard, no IP address.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Domain(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name:?} is not a domain name a certificate can be issued for: {why}")]
pub struct InvalidDomain {
    name: String,
    why: &'static str,
}

impl Domain {
    /// Checks `name` (any case; stored lower-case).
    pub fn parse(name: &str) -> Result<Domain, InvalidDomain> {
        let invalid = |why| InvalidDomain {
            name: name.to_string(),
            why,
        };
        let lower = name.to_ascii_lowercase();
        if lower.starts_with("*.") {
            return Err(invalid(
                "the HTTP-01 challenge cannot prove a wildcard; list each name instead",
            ));
        }
        if lower.is_empty() || lower.len() > 253 {
            return Err(invalid("a domain name has 1 to 253 characters"));
        }
        let labels: Vec<&str> = lower.split('.').collect();
        if labels.len() < 2 {
            return Err(invalid(
                "a public name has two labels or more, like example.com",
            ));
        }
        for label in &labels {
            if label.is_empty() || label.len() > 63 {
                return Err(invalid(
                    "each dot-separated label has 1 to 63 characters (no trailing dot)",
                ));
            }
            if !label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            {
                return Err(invalid(
                    "labels hold only letters, digits and hyphens (write IDNs as xn--)",
                ));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(invalid("a label neither starts nor ends with a hyphen"));
            }
        }
        if labels[labels.len() - 1].bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid("an IP address is not a domain name"));
        }
        Ok(Domain(lower))
    }

    #[cfg(test)]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `pattern`, a name from a certificate, stands for this domain:
    /// equal (case aside), or a wildcard `*.example.com` standing for one
    /// label in front of example.com (as TLS clients match it).
    pub fn matches(&self, pattern: &str) -> bool {
        let pattern = pattern.to_ascii_lowercase();
        match pattern.strip_prefix("*.") {
            Some(parent) => self
                .0
                .split_once('.')
                .is_some_and(|(_, rest)| rest == parent),
            None => pattern == self.0,
        }
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_pass_lower_cased() {
        for name in ["example.com", "www.Example.COM", "a-1.b2.xn--p1ai", "x.io"] {
            assert_eq!(Domain::parse(name).unwrap().as_str(), name.to_lowercase());
        }
    }

    #[test]
    fn names_a_challenge_cannot_prove_or_that_could_smuggle_text_are_refused() {
        let long_label = format!("{}.com", "a".repeat(64));
        let long_name = format!("{}com", "abcdefghi.".repeat(26));
        for (name, why) in [
            ("*.example.com", "wildcard"),
            ("", "1 to 253"),
            (&long_name, "1 to 253"),
            ("localhost", "two labels"),
            ("example.com.", "no trailing dot"),
            ("a..com", "1 to 63"),
            (&long_label, "1 to 63"),
            ("exa mple.com", "only letters"),
            ("example.com;reload", "only letters"),
            ("bücher.de", "xn--"),
            ("-a.com", "hyphen"),
            ("a-.com", "hyphen"),
            ("192.0.2.1", "IP address"),
        ] {
            let err = Domain::parse(name).unwrap_err().to_string();
            assert!(err.contains(why), "{name:?}: {err}");
        }
    }

    #[test]
    fn certificate_names_match_exactly_or_by_one_wildcard_label() {
        let domain = Domain::parse("www.example.com").unwrap();
        assert!(domain.matches("www.example.com"));
        assert!(domain.matches("WWW.example.com"));
        assert!(domain.matches("*.example.com"));
        assert!(!domain.matches("*.www.example.com"));
        assert!(!domain.matches("*.com"));
        assert!(!domain.matches("example.com"));
        assert!(
            !Domain::parse("example.com")
                .unwrap()
                .matches("*.example.com")
        );
    }
}
