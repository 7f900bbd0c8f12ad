//! Validation of POST /v2/droplets bodies (the spec's droplet_single_create
//! and droplet_multi_create) the way the API answers them, so that a client
//! that sends something the real API rejects fails here too.

use serde_json::{Map, Value};

use crate::catalog::{self, Image, Size};
use crate::error::ApiError;
use crate::state::NewDroplets;

/// Most droplets one multi-create may ask for.
const MAX_NAMES: usize = 10;
const MAX_NAME_LEN: usize = 255;
const MAX_USER_DATA: usize = 64 * 1024;

/// Parses and validates a create body into what to create, and whether it
/// was a multi-create (`names`), which is answered with `droplets`.
/// `snapshots` are the account's own images, named by id.
pub(crate) fn parse(
    body: &[u8],
    snapshots: &[&'static Image],
) -> Result<(NewDroplets, bool), ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|_| ApiError::bad_request("error parsing request body"))?;
    let Value::Object(fields) = value else {
        return Err(ApiError::bad_request("error parsing request body"));
    };
    let body = Body(&fields);
    let multi = body.get("names").is_some();
    let names = names(&body)?;
    let region = match body.string("region")? {
        Some(slug) => catalog::region(slug).ok_or_else(|| invalid("region"))?,
        None => catalog::region("nyc3").expect("nyc3 is in the catalog"),
    };
    let size = size(&body)?;
    let image = image(&body, snapshots)?;
    ssh_keys(&body)?;
    let mut features = Vec::new();
    for feature in ["backups", "ipv6", "monitoring"] {
        if body.boolean(feature)? {
            features.push(feature);
        }
    }
    features.push("private_networking");
    for flag in [
        "private_networking",
        "with_droplet_agent",
        "public_networking",
    ] {
        body.boolean(flag)?;
    }
    if body
        .get("backup_policy")
        .is_some_and(|policy| !policy.is_object())
    {
        return Err(wrong_type("backup_policy", "an object"));
    }
    let tags = match body.get("tags") {
        None | Some(Value::Null) => Vec::new(),
        Some(_) => body.strings("tags")?,
    };
    if let Some(bad) = tags.iter().find(|t| !is_valid_tag(t)) {
        return Err(ApiError::unprocessable(format!(
            "Tag \"{bad}\" is invalid: tags may contain letters, numbers, colons, dashes, and underscores, at most {MAX_NAME_LEN} of them."
        )));
    }
    if body
        .string("user_data")?
        .is_some_and(|data| data.len() > MAX_USER_DATA)
    {
        return Err(ApiError::unprocessable(
            "user_data exceeds the maximum size of 64 KiB.",
        ));
    }
    if !body.strings("volumes")?.is_empty() {
        return Err(ApiError::unprocessable(
            "You specified an invalid volume for Droplet creation.",
        ));
    }
    let vpc_uuid = body.string("vpc_uuid")?.map(str::to_owned);
    if vpc_uuid.as_deref().is_some_and(|uuid| !is_uuid(uuid)) {
        return Err(invalid("VPC"));
    }
    let new = NewDroplets {
        names,
        region,
        size,
        image,
        tags,
        features,
        vpc_uuid,
        serve_http: true,
        instant: false,
    };
    Ok((new, multi))
}

/// `name` or `names`, exactly one of them.
fn names(body: &Body) -> Result<Vec<String>, ApiError> {
    let names = match (body.get("name"), body.get("names")) {
        (Some(_), Some(_)) => {
            return Err(ApiError::unprocessable(
                "Specify either name or names, not both.",
            ));
        }
        (None, None) => return Err(ApiError::unprocessable("name is required.")),
        (Some(_), None) => vec![body.string("name")?.unwrap_or_default().to_owned()],
        (None, Some(_)) => body.strings("names")?,
    };
    if names.is_empty() {
        return Err(ApiError::unprocessable("names must not be empty."));
    }
    if names.len() > MAX_NAMES {
        return Err(ApiError::unprocessable(format!(
            "You may only create up to {MAX_NAMES} Droplets at a time."
        )));
    }
    if let Some(bad) = names.iter().find(|n| !is_valid_name(n)) {
        return Err(ApiError::unprocessable(format!(
            "Name \"{bad}\" is invalid: only valid hostname characters are allowed (a-z, A-Z, 0-9, . and -), at most {MAX_NAME_LEN} of them, ending in a letter or digit."
        )));
    }
    Ok(names)
}

/// The spec's pattern `^[a-zA-Z0-9]?[a-z0-9A-Z.\-]*[a-z0-9A-Z]$`, max 255.
fn is_valid_name(name: &str) -> bool {
    let hostname_char = |c: char| c.is_ascii_alphanumeric() || c == '.' || c == '-';
    name.len() <= MAX_NAME_LEN
        && name.chars().all(hostname_char)
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// The spec's tag name pattern `^[a-zA-Z0-9_\-\:]+$`, max 255.
pub(crate) fn is_valid_tag(tag: &str) -> bool {
    let tag_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ':');
    (1..=MAX_NAME_LEN).contains(&tag.len()) && tag.chars().all(tag_char)
}

fn size(body: &Body) -> Result<&'static Size, ApiError> {
    let slug = body.string("size")?.ok_or_else(|| invalid("size"))?;
    catalog::size(slug).ok_or_else(|| invalid("size"))
}

/// A slug or a numeric id.
fn image(body: &Body, snapshots: &[&'static Image]) -> Result<&'static Image, ApiError> {
    let key = match body.get("image") {
        Some(Value::String(slug)) => slug.clone(),
        Some(Value::Number(id)) if id.is_u64() => id.to_string(),
        Some(_) => return Err(wrong_type("image", "a string or an integer")),
        None => return Err(invalid("image")),
    };
    catalog::image_in(&key, snapshots).ok_or_else(|| invalid("image"))
}

/// Each an id or a fingerprint of a key on the account.
fn ssh_keys(body: &Body) -> Result<(), ApiError> {
    let Some(keys) = body.get("ssh_keys") else {
        return Ok(());
    };
    let Value::Array(keys) = keys else {
        return Err(wrong_type("ssh_keys", "an array"));
    };
    for key in keys {
        let key = match key {
            Value::String(fingerprint) => fingerprint.clone(),
            Value::Number(id) if id.is_u64() => id.to_string(),
            _ => return Err(wrong_type("ssh_keys", "an array of strings or integers")),
        };
        if catalog::ssh_key(&key).is_none() {
            return Err(ApiError::unprocessable(format!(
                "You specified an invalid SSH key for Droplet creation: {key}."
            )));
        }
    }
    Ok(())
}

fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|g| g.chars().all(|c| c.is_ascii_hexdigit()))
}

/// "You specified an invalid size for Droplet creation." and its siblings.
fn invalid(what: &str) -> ApiError {
    ApiError::unprocessable(format!(
        "You specified an invalid {what} for Droplet creation."
    ))
}

fn wrong_type(field: &str, expected: &str) -> ApiError {
    ApiError::unprocessable(format!("{field} must be {expected}."))
}

/// Typed access to the body's fields: absent is fine, any other type
/// (null included) is an error.
struct Body<'a>(&'a Map<String, Value>);

impl Body<'_> {
    fn get(&self, field: &str) -> Option<&Value> {
        self.0.get(field)
    }

    fn string(&self, field: &str) -> Result<Option<&str>, ApiError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(wrong_type(field, "a string")),
        }
    }

    fn boolean(&self, field: &str) -> Result<bool, ApiError> {
        match self.get(field) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(wrong_type(field, "a boolean")),
        }
    }

    /// An array of strings; absent is empty.
    fn strings(&self, field: &str) -> Result<Vec<String>, ApiError> {
        let Some(value) = self.get(field) else {
            return Ok(Vec::new());
        };
        value
            .as_array()
            .and_then(|items| {
                items
                    .iter()
                    .map(|item| item.as_str().map(str::to_owned))
                    .collect()
            })
            .ok_or_else(|| wrong_type(field, "an array of strings"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_json(body: Value) -> Result<NewDroplets, String> {
        parse(body.to_string().as_bytes(), &[])
            .map(|(new, _)| new)
            .map_err(|e| format!("{e:?}"))
    }

    #[test]
    fn names_follow_the_spec_pattern() {
        for good in ["web-1", "a", "example.com", "-x", "A.b-9"] {
            assert!(is_valid_name(good), "{good}");
        }
        for bad in ["", "web-", "web.", "web_1", "wéb", &"a".repeat(256)] {
            assert!(!is_valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn accepts_a_full_single_create() {
        let new = parse_json(serde_json::json!({
            "name": "web-1", "region": "nyc3", "size": "s-1vcpu-1gb",
            "image": "ubuntu-24-04-x64", "ssh_keys": [163420, "3b:16:bf:e4:8b:00:8b:b8:59:8c:a9:d3:f0:19:45:fa"],
            "backups": false, "ipv6": true, "monitoring": true, "tags": ["doproxy"],
            "user_data": "#cloud-config\n", "vpc_uuid": "760e09ef-dc84-11e8-981e-3cfdfeaae000",
            "unknown_field": {"ignored": true}
        }))
        .unwrap();
        assert_eq!(new.names, ["web-1"]);
        assert_eq!(new.features, ["ipv6", "monitoring", "private_networking"]);
        assert_eq!(new.tags, ["doproxy"]);
    }

    #[test]
    fn rejects_what_the_api_rejects() {
        let base = serde_json::json!({"size": "s-1vcpu-1gb", "image": "ubuntu-24-04-x64"});
        let with = |extra: Value| {
            let mut body = base.clone();
            body.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            parse_json(body).err().unwrap_or_default()
        };
        let cases = [
            (serde_json::json!({}), "name is required"),
            (serde_json::json!({"name": "a", "names": ["b"]}), "not both"),
            (
                serde_json::json!({"names": (0..11).map(|i| format!("n{i}")).collect::<Vec<_>>()}),
                "up to 10",
            ),
            (serde_json::json!({"name": "bad_name"}), "is invalid"),
            (
                serde_json::json!({"name": "a", "size": "huge"}),
                "invalid size",
            ),
            (
                serde_json::json!({"name": "a", "region": "mars1"}),
                "invalid region",
            ),
            (
                serde_json::json!({"name": "a", "image": "windows"}),
                "invalid image",
            ),
            (
                serde_json::json!({"name": "a", "ssh_keys": [1]}),
                "invalid SSH key",
            ),
            (
                serde_json::json!({"name": "a", "user_data": "x".repeat(65_537)}),
                "64 KiB",
            ),
            (
                serde_json::json!({"name": "a", "user_data": null}),
                "user_data must be a string",
            ),
            (
                serde_json::json!({"name": "a", "vpc_uuid": null}),
                "vpc_uuid must be a string",
            ),
            (
                serde_json::json!({"name": "a", "monitoring": "yes"}),
                "monitoring must be a boolean",
            ),
            (serde_json::json!({"name": 5}), "name must be a string"),
            (
                serde_json::json!({"name": "a", "tags": ["env:prod", "two words"]}),
                "Tag \\\"two words\\\" is invalid",
            ),
            (
                serde_json::json!({"name": "a", "tags": "web"}),
                "tags must be an array of strings",
            ),
        ];
        for (extra, expected) in cases {
            let error = with(extra.clone());
            assert!(error.contains(expected), "{extra}: {error}");
            assert!(
                error.contains("UNPROCESSABLE_ENTITY") || error.contains("422"),
                "{error}"
            );
        }
        assert!(with(serde_json::json!({"name": "a", "tags": null})).is_empty());
    }
}
