//! One droplet as doproxy knows it: its checked fields, its status, what
//! it was built from and what it replaces. The values every layer shares;
//! how they are stored (`inventory`) and where they come from (the API, in
//! `ops`) live elsewhere.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::field::{DropletName, InvalidField, Slug, Timestamp};

/// Every field is typed: text read from the store or the API is checked
/// where the entry is built (see `field`), so an entry holds nothing that
/// could break out of its place in the HAProxy config or the inventory file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub id: u64,
    pub name: DropletName,
    pub private_ip: Option<Ipv4Addr>,
    pub public_ip: Option<Ipv4Addr>,
    pub status: Status,
    pub created_at: Option<Timestamp>,
    /// What it was built from; None for droplets doproxy adopted or made
    /// before it recorded builds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<Build>,
    /// The droplet this one replaces (rollout, heal), until that one is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<u64>,
}

/// The droplet options a droplet was built from that only a new droplet can
/// change: when the options differ from a droplet's build, it is stale.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Build {
    /// The image slug or ID.
    pub image: Slug,
    pub size: Slug,
    pub region: Slug,
    /// `sha256:` and the first 16 hex digits of the user data's SHA-256;
    /// None without user data.
    pub user_data: Option<Slug>,
    pub tags: Vec<Slug>,
    /// None: the region's default VPC.
    pub vpc: Option<Slug>,
}

impl Build {
    /// The names of the fields in which this build differs from `current`
    /// (tags compare as a set); empty when it matches.
    pub fn differences(&self, current: &Build) -> Vec<&'static str> {
        let sorted = |tags: &[Slug]| {
            let mut tags = tags.to_vec();
            tags.sort();
            tags
        };
        [
            ("image", self.image != current.image),
            ("size", self.size != current.size),
            ("region", self.region != current.region),
            ("user_data", self.user_data != current.user_data),
            ("tags", sorted(&self.tags) != sorted(&current.tags)),
            ("vpc", self.vpc != current.vpc),
        ]
        .into_iter()
        .filter_map(|(name, differs)| differs.then_some(name))
        .collect()
    }
}

/// How the inventory records user data: `sha256:` and the first 16 hex
/// digits of its SHA-256 (compare with `sha256sum user-data.yml`).
pub fn user_data_digest(text: &str) -> Slug {
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    let hex: String = digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Slug::parse("user_data", &format!("sha256:{hex}")).expect("hex digits make a slug")
}

/// A droplet the API describes with a value doproxy will not record.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "droplet {id} at DigitalOcean cannot be recorded: its {field}; rename that droplet or destroy it, then retry"
)]
pub struct RefusedDroplet {
    pub id: u64,
    pub field: InvalidField,
}

/// A droplet as DigitalOcean shows it now: its ID, its tags, and the entry
/// it makes, or why doproxy will not record it (which stops only whoever
/// goes on to record or compare that entry).
#[derive(Debug, Clone)]
pub struct Observed {
    pub id: u64,
    pub tags: Vec<String>,
    pub entry: Result<Entry, RefusedDroplet>,
}

/// The droplet's state as doproxy knows it. `New`, `Off` and `Archive` are
/// the API's own; `Active` means active at DigitalOcean *and* ready (it
/// passed the health check, so it serves). `Unready` is active at
/// DigitalOcean but not answering the health check; `Destroying` marks a
/// droplet taken out of HAProxy whose destroy has not been confirmed;
/// `Unknown` is a legacy ID-only line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    New,
    Active,
    Off,
    Archive,
    Unready,
    Destroying,
    /// Also what a status written by a newer doproxy reads as.
    #[serde(other)]
    Unknown,
}

impl Status {
    const ALL: [Status; 7] = [
        Status::New,
        Status::Active,
        Status::Off,
        Status::Archive,
        Status::Unready,
        Status::Destroying,
        Status::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::New => "new",
            Status::Active => "active",
            Status::Off => "off",
            Status::Archive => "archive",
            Status::Unready => "unready",
            Status::Destroying => "destroying",
            Status::Unknown => "unknown",
        }
    }

    /// The API's status string; anything new to doproxy counts as unknown.
    pub fn from_api(status: &str) -> Status {
        status.parse().unwrap_or(Status::Unknown)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Status {
    type Err = String;

    fn from_str(s: &str) -> Result<Status, String> {
        Status::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| format!("unknown status {s:?}"))
    }
}

impl Entry {
    /// Takes `fresh`, the entry DigitalOcean's current view of this droplet
    /// makes; true if anything changed. Never puts a droplet into service:
    /// an entry being destroyed stays `destroying`, and one waiting for
    /// readiness (`new`, `unready`) keeps its status when the API says
    /// active, until it passes the readiness check. What doproxy alone
    /// knows (build, replaces) stays.
    pub fn update_from(&mut self, fresh: &Entry) -> bool {
        let mut updated = Entry {
            build: self.build.clone(),
            replaces: self.replaces,
            ..fresh.clone()
        };
        let waiting = matches!(self.status, Status::New | Status::Unready);
        if self.status == Status::Destroying || (waiting && updated.status == Status::Active) {
            updated.status = self.status;
        }
        let changed = *self != updated;
        *self = updated;
        changed
    }

    /// Active at DigitalOcean with a private address (as `fresh`, the
    /// entry its current view makes, says), but not yet checked for
    /// readiness.
    pub fn is_booted(&self, fresh: &Entry) -> bool {
        matches!(self.status, Status::New | Status::Unready)
            && fresh.status == Status::Active
            && fresh.private_ip.is_some()
    }

    /// An active droplet that is only a name: the placeholder of one about
    /// to be made, or a start for tests to fill in.
    pub fn named(id: u64, name: &str) -> Entry {
        Entry {
            name: DropletName::parse("name", name).expect("a test name is a hostname"),
            status: Status::Active,
            ..Entry::legacy(id)
        }
    }

    /// A Ruby DOProxy line: only the ID is known.
    pub fn legacy(id: u64) -> Entry {
        Entry {
            id,
            name: DropletName::default(),
            private_ip: None,
            public_ip: None,
            status: Status::Unknown,
            created_at: None,
            build: None,
            replaces: None,
        }
    }

    /// True for a legacy line whose details have not been fetched yet.
    pub fn needs_details(&self) -> bool {
        self.name.is_empty()
    }

    /// Whether HAProxy should send traffic to this droplet.
    pub fn is_serving(&self) -> bool {
        self.status == Status::Active && self.private_ip.is_some()
    }
}

/// Entries and builds as tests of the model and its stores write them.
#[cfg(test)]
pub mod samples {
    use std::net::Ipv4Addr;

    use super::{Build, Entry, Status, user_data_digest};

    /// A droplet with an address and a creation time.
    pub fn entry(id: u64, name: &str, status: Status) -> Entry {
        Entry {
            private_ip: Some(Ipv4Addr::new(10, 0, 0, 5)),
            status,
            created_at: Some("2026-11-28T20:41:06Z".into()),
            ..Entry::named(id, name)
        }
    }

    /// What a droplet of pool `web` is built from.
    pub fn build() -> Build {
        Build {
            image: "ubuntu-24-04-x64".into(),
            size: "s-1vcpu-1gb".into(),
            region: "nyc3".into(),
            user_data: Some(user_data_digest("#cloud-config\n")),
            tags: vec!["doproxy:web".into(), "doproxy".into()],
            vpc: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::samples::{build, entry};
    use super::*;

    #[test]
    fn a_build_differs_by_the_fields_that_changed() {
        let recorded = build();
        assert!(recorded.differences(&build()).is_empty());
        let reordered = Build {
            tags: vec!["doproxy".into(), "doproxy:web".into()],
            ..build()
        };
        assert!(
            recorded.differences(&reordered).is_empty(),
            "tags are a set"
        );
        let current = Build {
            image: "debian-12-x64".into(),
            user_data: None,
            vpc: Some("x".into()),
            ..build()
        };
        assert_eq!(
            recorded.differences(&current),
            ["image", "user_data", "vpc"]
        );
    }

    #[test]
    fn user_data_is_recorded_by_its_sha256() {
        // printf '#cloud-config\n' | sha256sum
        assert_eq!(
            user_data_digest("#cloud-config\n"),
            "sha256:88c95955b024402a"
        );
    }

    #[test]
    fn what_the_api_does_not_know_survives_an_update() {
        let mut entry = entry(1, "web-0", Status::New);
        entry.build = Some(build());
        entry.replaces = Some(9);
        let fresh = Entry {
            private_ip: Some(Ipv4Addr::new(10, 0, 0, 6)),
            ..Entry::named(1, "web-0")
        };
        assert!(entry.is_booted(&fresh));
        assert!(entry.update_from(&fresh));
        assert_eq!(entry.private_ip, Some(Ipv4Addr::new(10, 0, 0, 6)));
        assert_eq!(entry.status, Status::New, "only readiness promotes");
        assert_eq!(
            (entry.build.clone(), entry.replaces),
            (Some(build()), Some(9))
        );
        assert!(
            !entry.update_from(&fresh),
            "nothing changed the second time"
        );
    }

    #[test]
    fn only_active_droplets_with_an_address_serve() {
        assert!(entry(1, "a", Status::Active).is_serving());
        assert!(!entry(1, "a", Status::New).is_serving());
        assert!(!entry(1, "a", Status::Destroying).is_serving());
    }
}
