//! Which droplets are a pool's. Pools in one account tell their droplets
//! apart by tag (`doproxy:<pool>`) and by name (`<hostname_prefix>-<n>`);
//! an inventory that holds another pool's droplets routes traffic to them,
//! so `doctor` looks, and moving a pool out of a prefix it shared
//! (`inventory migrate`) takes its own droplets only. Whoever can write the
//! inventory can list any droplet of the account in it, so before a
//! droplet is destroyed or tagged, what DigitalOcean shows of it must say
//! it is the pool's (`disowns`), whatever the inventory claims.

use super::Entry;
use crate::text::Printable;

/// The tag every doproxy droplet carries, and the pool tag of droplets
/// built before pools had their own.
pub const SHARED_TAG: &str = "doproxy";

/// A pool, as its droplets show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    /// The tag that marks its droplets (the first of their tags).
    pub tag: String,
    /// New droplets are named `<hostname_prefix>-<n>`.
    pub hostname_prefix: Option<String>,
}

impl Pool {
    /// Whether `entry` is this pool's: built with its tag; or, built before
    /// pools had tags of their own (or with no build recorded), named like
    /// its droplets. When names cannot tell (no hostname_prefix, or a Ruby
    /// DOProxy line not filled in yet), the entry counts as the pool's.
    pub fn owns(&self, entry: &Entry) -> bool {
        match &entry.build {
            Some(build) if build.tags.iter().any(|tag| *tag == self.tag) => true,
            Some(build) if build.tags.first().is_some_and(|tag| tag != SHARED_TAG) => false,
            _ => {
                entry.needs_details()
                    || self
                        .hostname_prefix
                        .as_deref()
                        .is_none_or(|prefix| is_pool_name(&entry.name, prefix))
            }
        }
    }

    /// Why a droplet DigitalOcean shows named `name` and tagged `tags` is
    /// not this pool's, if it is not: it must carry the pool's tag, or,
    /// made before pools had tags (untagged by Ruby DOProxy, tagged only
    /// `doproxy` by an earlier doproxy), be named `<hostname_prefix>-<n>`.
    pub fn disowns(&self, name: &str, tags: &[String]) -> Option<String> {
        if tags.contains(&self.tag) {
            return None;
        }
        let prefix = self.hostname_prefix.as_deref();
        if !tags.iter().all(|tag| tag == SHARED_TAG) {
            return Some(format!(
                "tagged {}, not {}",
                Printable::new(&tags.join(", ")),
                self.tag
            ));
        }
        if prefix.is_some_and(|prefix| is_pool_name(name, prefix)) {
            return None;
        }
        let tagged = if tags.is_empty() {
            "untagged".to_string()
        } else {
            format!("tagged {SHARED_TAG} alone")
        };
        Some(format!(
            "{tagged} and not named {}-<n>",
            prefix.unwrap_or("<droplet_options.hostname_prefix>")
        ))
    }
}

/// Whether `name` is one a pool's `create` gives: `<prefix>-<n>`.
pub fn is_pool_name(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Build;

    #[test]
    fn pool_names_are_the_prefix_a_dash_and_a_number() {
        assert!(is_pool_name("auto-nginx-0", "auto-nginx"));
        assert!(is_pool_name("auto-nginx-12", "auto-nginx"));
        for other in [
            "auto-nginx-",
            "auto-nginx",
            "auto-nginx-web-1",
            "auto-nginx-1-0",
            "auto-nginx2-0",
            "auto-nginx-+1",
            "other-0",
            "stray-0",
        ] {
            assert!(!is_pool_name(other, "auto-nginx"), "{other}");
        }
        // A shorter prefix does not claim a longer pool's droplets.
        assert!(!is_pool_name("auto-nginx-0", "auto"));
    }

    #[test]
    fn droplets_are_the_pools_by_their_tag_or_from_before_tags_by_their_name() {
        let web = Pool {
            tag: "doproxy:web".to_string(),
            hostname_prefix: Some("web".to_string()),
        };
        let tags = |tags: &[&str]| -> Vec<String> { tags.iter().map(|t| t.to_string()).collect() };
        for (name, tags) in [
            ("web-0", tags(&["doproxy:web", "doproxy"])),
            ("anything", tags(&["doproxy:web"])),
            ("web-1", tags(&[])),
            ("web-2", tags(&["doproxy"])),
        ] {
            assert_eq!(web.disowns(name, &tags), None, "{name} {tags:?}");
        }
        let why = |name: &str, tags: &[String]| web.disowns(name, tags).unwrap();
        assert_eq!(
            why("web-3", &tags(&["shop"])),
            "tagged shop, not doproxy:web"
        );
        assert_eq!(
            why("web-3", &tags(&["doproxy:api", "doproxy"])),
            "tagged doproxy:api, doproxy, not doproxy:web"
        );
        assert_eq!(why("shop-0", &tags(&[])), "untagged and not named web-<n>");
        assert_eq!(
            why("api-0", &tags(&["doproxy"])),
            "tagged doproxy alone and not named web-<n>"
        );
        assert_eq!(
            why("web-4", &tags(&["a\u{1b}[2J"])),
            r"tagged a\u{1b}[2J, not doproxy:web"
        );
        let unnamed = Pool {
            hostname_prefix: None,
            ..web
        };
        assert_eq!(
            unnamed.disowns("web-1", &[]).unwrap(),
            "untagged and not named <droplet_options.hostname_prefix>-<n>"
        );
    }

    #[test]
    fn a_pools_droplets_are_known_by_their_tag_else_by_their_name() {
        let web = Pool {
            tag: "doproxy:web".to_string(),
            hostname_prefix: Some("web".to_string()),
        };
        let built = |name: &str, tags: &[&str]| Entry {
            build: Some(Build {
                image: "debian-12-x64".into(),
                size: "s-1vcpu-1gb".into(),
                region: "nyc3".into(),
                user_data: None,
                tags: tags.iter().map(|t| (*t).into()).collect(),
                vpc: None,
            }),
            ..Entry::named(1, name)
        };
        assert!(web.owns(&built("web-0", &["doproxy:web", "doproxy"])));
        assert!(!web.owns(&built("web-1", &["doproxy:api", "doproxy"])));
        // Built before pools had their own tags, or never recorded: by name.
        assert!(web.owns(&built("web-2", &["doproxy"])));
        assert!(!web.owns(&built("api-2", &["doproxy"])));
        assert!(web.owns(&Entry::named(3, "web-3")));
        assert!(!web.owns(&Entry::named(4, "api-0")));
        assert!(web.owns(&Entry::named(5, "")), "a Ruby line: cannot tell");
        let unnamed = Pool {
            hostname_prefix: None,
            ..web
        };
        assert!(unnamed.owns(&Entry::named(4, "api-0")));
    }
}
