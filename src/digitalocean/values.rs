//! The values the API takes from doproxy's settings: the token, the image
//! and SSH keys new droplets get. The client's own types, so nothing below
//! the settings needs to know where they were written.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The API token. Its Debug and Display never show the secret.
#[derive(Clone)]
pub struct Token(String);

impl Token {
    pub fn new(secret: String) -> Token {
        Token(secret)
    }

    pub fn secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<hidden>)")
    }
}

/// An SSH key as the API accepts it: a numeric ID or a fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum SshKey {
    Id(u64),
    Fingerprint(String),
}

/// An image as the API accepts it: a slug or a numeric image ID.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Image {
    Id(u64),
    Slug(String),
}

impl fmt::Display for Image {
    /// The slug, or the ID in digits, as the API's paths take it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Image::Id(id) => write!(f, "{id}"),
            Image::Slug(slug) => f.write_str(slug),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_never_shown() {
        let token = Token::new("dop_v1_secret".to_string());
        assert_eq!(format!("{token:?}"), "Token(<hidden>)");
        assert_eq!(token.secret(), "dop_v1_secret");
    }

    #[test]
    fn images_are_slugs_or_ids_as_written() {
        let images: Vec<Image> =
            serde_json::from_str(r#"["ubuntu-24-04-x64", 158244651]"#).unwrap();
        assert_eq!(
            images,
            [Image::Slug("ubuntu-24-04-x64".into()), Image::Id(158244651)]
        );
        assert_eq!(images[1].to_string(), "158244651");
        let keys: Vec<SshKey> = serde_json::from_str(r#"[163420, "3b:16:bf"]"#).unwrap();
        assert_eq!(
            keys,
            [SshKey::Id(163420), SshKey::Fingerprint("3b:16:bf".into())]
        );
    }
}
