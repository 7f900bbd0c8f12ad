//! One droplet as the inventory remembers it, and the line format of the
//! inventory file: one droplet per line, the ID first, readable by people.
//!
//! ```text
//! # doproxy inventory: id name private_ip public_ip status created_at
//! 4202645 auto-nginx-0 10.132.0.5 203.0.113.7 active 2026-11-28T20:41:06Z
//! ```
//!
//! A line holding only an ID is the Ruby DOProxy format; it loads as an entry
//! whose details must be fetched from the API once.
//!
//! After the six fields come optional `key=value` fields: what the droplet
//! was built from (`image= size= region= user_data= tags= vpc=`), so `print`
//! and `rollout` can tell droplets that no longer match droplet_options, and
//! `replaces=<id>` on a droplet made to replace another (rollout, heal) until
//! that one is gone, so an interrupted replacement resumes instead of
//! starting over. Lines without them (older doproxy) load as before.
//!
//! Comment lines people write into the file survive doproxy's rewrites (see
//! `Comments`); blank lines do not.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use super::field::{DropletName, InvalidField, Slug, Timestamp};
use crate::digitalocean::Droplet;

const HEADER: &str = "# doproxy inventory: id name private_ip public_ip status created_at";
/// Written in place of a value not known yet.
const NONE: &str = "-";

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
#[derive(Debug, thiserror::Error)]
#[error(
    "droplet {id} at DigitalOcean cannot be recorded: its {field}; rename that droplet or destroy it, then retry"
)]
pub struct RefusedDroplet {
    pub id: u64,
    field: InvalidField,
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

    fn as_str(self) -> &'static str {
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
    /// A droplet the API just described; refused when its name or creation
    /// time is not what DigitalOcean itself allows.
    pub fn from_droplet(droplet: &Droplet) -> Result<Entry, RefusedDroplet> {
        let refused = |field| RefusedDroplet {
            id: droplet.id,
            field,
        };
        Ok(Entry {
            id: droplet.id,
            name: DropletName::parse("name", &droplet.name).map_err(refused)?,
            private_ip: droplet.private_ipv4(),
            public_ip: droplet.public_ipv4(),
            status: Status::from_api(&droplet.status),
            created_at: Some(Timestamp::parse("created_at", &droplet.created_at).map_err(refused)?),
            build: None,
            replaces: None,
        })
    }

    /// Takes the API's current view of this droplet; true if anything
    /// changed. Never puts a droplet into service: an entry being destroyed
    /// stays `destroying`, and one waiting for readiness (`new`, `unready`)
    /// keeps its status when the API says active, until it passes the
    /// readiness check. What doproxy alone knows (build, replaces) stays.
    /// A droplet `from_droplet` refuses leaves the entry as it was.
    pub fn update_from(&mut self, droplet: &Droplet) -> Result<bool, RefusedDroplet> {
        let mut updated = Entry {
            build: self.build.clone(),
            replaces: self.replaces,
            ..Entry::from_droplet(droplet)?
        };
        let waiting = matches!(self.status, Status::New | Status::Unready);
        if self.status == Status::Destroying || (waiting && updated.status == Status::Active) {
            updated.status = self.status;
        }
        let changed = *self != updated;
        *self = updated;
        Ok(changed)
    }

    /// Active at DigitalOcean with a private address, but not yet checked for
    /// readiness.
    pub fn is_booted(&self, droplet: &Droplet) -> bool {
        matches!(self.status, Status::New | Status::Unready)
            && Status::from_api(&droplet.status) == Status::Active
            && droplet.private_ipv4().is_some()
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
    fn legacy(id: u64) -> Entry {
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

/// A line of the inventory file that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct ParseError {
    pub line: usize,
    pub reason: String,
}

/// Reads the inventory file's text. Blank lines and `#` comments are skipped;
/// anything else must be a full line or a bare ID.
pub fn parse(text: &str) -> Result<Vec<Entry>, ParseError> {
    let mut entries: Vec<Entry> = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fail = |reason: String| ParseError {
            line: index + 1,
            reason,
        };
        let entry = parse_line(line).map_err(fail)?;
        if entries.iter().any(|e| e.id == entry.id) {
            return Err(fail(format!("droplet {} is listed twice", entry.id)));
        }
        entries.push(entry);
    }
    Ok(entries)
}

/// The line (counted from 1) of the inventory file's text that lists
/// droplet `id`, for messages that send people to it.
pub fn line_of(text: &str, id: u64) -> Option<usize> {
    let lists = |line: &str| {
        let line = line.trim();
        !line.starts_with('#') && line.split_whitespace().next().map(str::parse) == Some(Ok(id))
    };
    text.lines().position(lists).map(|index| index + 1)
}

fn parse_line(line: &str) -> Result<Entry, String> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let id = fields[0]
        .parse::<u64>()
        .map_err(|_| format!("{:?} is not a droplet ID", fields[0]))?;
    if fields.len() == 1 {
        return Ok(Entry::legacy(id));
    }
    let [
        _,
        name,
        private_ip,
        public_ip,
        status,
        created_at,
        ref extra @ ..,
    ] = fields[..]
    else {
        return Err(format!(
            "expected 6 fields (id name private_ip public_ip status created_at) or a bare ID, found {}",
            fields.len()
        ));
    };
    let (build, replaces) = parse_extra(extra)?;
    let text = |err: InvalidField| err.to_string();
    Ok(Entry {
        id,
        // `-`: a name not known yet, as written for an ID-only line.
        name: optional(name)
            .map(|name| DropletName::parse("name", name))
            .transpose()
            .map_err(text)?
            .unwrap_or_default(),
        private_ip: optional(private_ip).map(parse_ip).transpose()?,
        public_ip: optional(public_ip).map(parse_ip).transpose()?,
        status: status.parse()?,
        created_at: optional(created_at)
            .map(|time| Timestamp::parse("created_at", time))
            .transpose()
            .map_err(text)?,
        build,
        replaces,
    })
}

/// The `key=value` fields after the six: the build and `replaces`. Keys a
/// newer doproxy may write are skipped.
fn parse_extra(fields: &[&str]) -> Result<(Option<Build>, Option<u64>), String> {
    let mut values: HashMap<&str, &str> = HashMap::new();
    for field in fields {
        let Some((key, value)) = field.split_once('=') else {
            return Err(format!(
                "{field:?} after the 6 fields is not a key=value field such as image=ubuntu-24-04-x64"
            ));
        };
        values.insert(key, value);
    }
    let replaces = values
        .get("replaces")
        .map(|id| {
            id.parse::<u64>()
                .map_err(|_| format!("replaces={id} is not a droplet ID"))
        })
        .transpose()?;
    let build_keys = ["image", "size", "region", "user_data", "tags", "vpc"];
    if !build_keys.iter().any(|key| values.contains_key(key)) {
        return Ok((None, replaces));
    }
    // A field that is absent or `-`: None.
    let field = |key: &'static str| {
        values
            .get(key)
            .copied()
            .and_then(optional)
            .map(|value| Slug::parse(key, value).map_err(|err| err.to_string()))
            .transpose()
    };
    let required =
        |key: &'static str| field(key)?.ok_or_else(|| format!("the build fields lack {key}="));
    let tags = match values.get("tags").copied().and_then(optional) {
        Some(tags) => tags
            .split(',')
            .map(|tag| Slug::parse("tags", tag).map_err(|err| err.to_string()))
            .collect::<Result<_, _>>()?,
        None => Vec::new(),
    };
    let build = Build {
        image: required("image")?,
        size: required("size")?,
        region: required("region")?,
        user_data: field("user_data")?,
        tags,
        vpc: field("vpc")?,
    };
    Ok((Some(build), replaces))
}

fn optional(field: &str) -> Option<&str> {
    (field != NONE).then_some(field)
}

fn parse_ip(field: &str) -> Result<Ipv4Addr, String> {
    field
        .parse()
        .map_err(|_| format!("{field:?} is not an IPv4 address"))
}

/// The comment lines people wrote into an inventory file, and where they
/// stand, so that a rewrite keeps them: comments before the first droplet
/// stay at the top (under doproxy's header), comments between droplets stay
/// above the droplet below them and move with it, and comments after the
/// last droplet stay at the end. The comments above a droplet that leaves the
/// inventory pass to the next droplet that stays (or to the end): doproxy
/// never drops what people wrote.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Comments {
    top: Vec<String>,
    /// Every droplet of the file in file order, with the comments above it.
    above: Vec<(u64, Vec<String>)>,
    end: Vec<String>,
}

impl Comments {
    /// The comments of an inventory file's text. Other lines count only by
    /// their droplet ID, so this never fails.
    pub fn of(text: &str) -> Comments {
        let mut comments = Comments::default();
        let mut pending = Vec::new();
        for line in text.lines().map(str::trim) {
            if line.starts_with('#') {
                if line != HEADER {
                    pending.push(line.to_string());
                }
                continue;
            }
            let Some(id) = line.split_whitespace().next().and_then(|f| f.parse().ok()) else {
                continue;
            };
            if comments.above.is_empty() {
                comments.top = std::mem::take(&mut pending);
            }
            comments.above.push((id, std::mem::take(&mut pending)));
        }
        // In a file without droplets, every comment is a top one.
        if comments.above.is_empty() {
            comments.top = pending;
        } else {
            comments.end = pending;
        }
        comments
    }
}

/// The inventory file's text for `entries`, in order, with `comments` where
/// they belong.
pub fn render(entries: &[Entry], comments: &Comments) -> String {
    // The comments above each droplet that stays, including those passed on
    // by droplets that left.
    let staying: HashSet<u64> = entries.iter().map(|e| e.id).collect();
    let mut above: HashMap<u64, Vec<&str>> = HashMap::new();
    let mut passed_on: Vec<&str> = Vec::new();
    for (id, lines) in &comments.above {
        passed_on.extend(lines.iter().map(String::as_str));
        if staying.contains(id) {
            above.insert(*id, std::mem::take(&mut passed_on));
        }
    }
    let mut text = format!("{HEADER}\n");
    push_lines(&mut text, comments.top.iter().map(String::as_str));
    for e in entries {
        push_lines(&mut text, above.remove(&e.id).unwrap_or_default());
        let ip = |ip: Option<Ipv4Addr>| ip.map_or(NONE.to_string(), |ip| ip.to_string());
        text.push_str(&format!(
            "{} {} {} {} {} {}",
            e.id,
            if e.name.is_empty() {
                NONE
            } else {
                e.name.as_str()
            },
            ip(e.private_ip),
            ip(e.public_ip),
            e.status,
            e.created_at.as_deref().unwrap_or(NONE),
        ));
        if let Some(build) = &e.build {
            let or_none = |value: Option<&str>| value.unwrap_or(NONE).to_string();
            let tags = if build.tags.is_empty() {
                NONE.to_string()
            } else {
                let tags: Vec<&str> = build.tags.iter().map(Slug::as_str).collect();
                tags.join(",")
            };
            text.push_str(&format!(
                " image={} size={} region={} user_data={} tags={tags} vpc={}",
                build.image,
                build.size,
                build.region,
                or_none(build.user_data.as_deref()),
                or_none(build.vpc.as_deref()),
            ));
        }
        if let Some(replaced) = e.replaces {
            text.push_str(&format!(" replaces={replaced}"));
        }
        text.push('\n');
    }
    push_lines(&mut text, passed_on);
    push_lines(&mut text, comments.end.iter().map(String::as_str));
    text
}

fn push_lines<'a>(text: &mut String, lines: impl IntoIterator<Item = &'a str>) {
    for line in lines {
        text.push_str(line);
        text.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_listing_a_droplet_is_found() {
        let text = "# doproxy inventory\n\n# 7 was here\n 12 web-0 - - new -\n7\n";
        assert_eq!(line_of(text, 12), Some(4));
        assert_eq!(line_of(text, 7), Some(5));
        assert_eq!(line_of(text, 1), None);
    }

    fn entry(id: u64, name: &str, status: Status) -> Entry {
        Entry {
            private_ip: Some(Ipv4Addr::new(10, 0, 0, 5)),
            status,
            created_at: Some("2026-11-28T20:41:06Z".into()),
            ..Entry::named(id, name)
        }
    }

    fn build() -> Build {
        Build {
            image: "ubuntu-24-04-x64".into(),
            size: "s-1vcpu-1gb".into(),
            region: "nyc3".into(),
            user_data: Some(user_data_digest("#cloud-config\n")),
            tags: vec!["doproxy:web".into(), "doproxy".into()],
            vpc: None,
        }
    }

    #[test]
    fn builds_and_replacements_round_trip_after_the_six_fields() {
        let mut built = entry(1, "web-0", Status::Active);
        built.build = Some(build());
        let mut replacing = entry(2, "web-1", Status::New);
        replacing.build = Some(Build {
            tags: Vec::new(),
            user_data: None,
            vpc: Some("760e09ef-dc84-11e8-981e-3cfdfeaae000".into()),
            image: "158244651".into(),
            ..build()
        });
        replacing.replaces = Some(1);
        let entries = vec![built, replacing, entry(3, "web-2", Status::Active)];
        let text = render(&entries, &Comments::default());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[1],
            "1 web-0 10.0.0.5 - active 2026-11-28T20:41:06Z image=ubuntu-24-04-x64 size=s-1vcpu-1gb region=nyc3 user_data=sha256:88c95955b024402a tags=doproxy:web,doproxy vpc=-"
        );
        assert!(
            lines[2].ends_with(
                " image=158244651 size=s-1vcpu-1gb region=nyc3 user_data=- tags=- vpc=760e09ef-dc84-11e8-981e-3cfdfeaae000 replaces=1"
            ),
            "{}",
            lines[2]
        );
        assert_eq!(
            lines[3], "3 web-2 10.0.0.5 - active 2026-11-28T20:41:06Z",
            "no build, no extra fields"
        );
        assert_eq!(parse(&text).unwrap(), entries);
        // Keys a newer doproxy writes are skipped; a field that is not
        // key=value is an error naming it.
        let newer = parse("4 w - - new - image=a size=b region=c later=x\n").unwrap();
        assert_eq!(newer[0].build.as_ref().unwrap().image, "a");
        let err = parse("4 w - - new - image\n").unwrap_err();
        assert!(err.reason.contains("key=value"), "{err}");
        let err = parse("4 w - - new - size=b\n").unwrap_err();
        assert!(err.reason.contains("image="), "{err}");
        let err = parse("4 w - - new - replaces=x\n").unwrap_err();
        assert!(err.reason.contains("replaces=x"), "{err}");
    }

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
        let droplet: Droplet = serde_json::from_value(serde_json::json!({
            "id": 1, "name": "web-0", "status": "active", "created_at": "2026-11-28T20:41:06Z",
            "networks": {"v4": [{"ip_address": "10.0.0.6", "type": "private"}]}
        }))
        .unwrap();
        assert!(entry.update_from(&droplet).unwrap());
        assert_eq!(entry.private_ip, Some(Ipv4Addr::new(10, 0, 0, 6)));
        assert_eq!(
            (entry.build.clone(), entry.replaces),
            (Some(build()), Some(9))
        );
        assert!(
            !entry.update_from(&droplet).unwrap(),
            "nothing changed the second time"
        );
    }

    #[test]
    fn round_trips() {
        let entries = vec![
            entry(1, "web-0", Status::Active),
            entry(2, "web-1", Status::New),
        ];
        let text = render(&entries, &Comments::default());
        assert!(text.contains("1 web-0 10.0.0.5 - active 2026-11-28T20:41:06Z\n"));
        assert_eq!(parse(&text).unwrap(), entries);
    }

    #[test]
    fn comments_survive_a_rewrite_where_they_stood() {
        let text = format!(
            "{HEADER}\n# web tier of shop.example.com\n1 web-0 10.0.0.5 - active 2026-11-28T20:41:06Z\n# the canary\n2 web-1 10.0.0.5 - new 2026-11-28T20:41:06Z\n# end of file\n"
        );
        let entries = parse(&text).unwrap();
        assert_eq!(render(&entries, &Comments::of(&text)), text);
        // A new droplet goes after the last one, before the closing comment.
        let mut more = entries.clone();
        more.push(entry(3, "web-2", Status::New));
        let rewritten = render(&more, &Comments::of(&text));
        assert!(
            rewritten.ends_with("2 web-1 10.0.0.5 - new 2026-11-28T20:41:06Z\n3 web-2 10.0.0.5 - new 2026-11-28T20:41:06Z\n# end of file\n"),
            "{rewritten}"
        );
    }

    #[test]
    fn comments_above_a_droplet_that_leaves_pass_to_the_next() {
        let text = "5\n# about 6\n6\n# about 7\n7\n";
        let entries = parse(text).unwrap();
        let comments = Comments::of(text);
        let without_6: Vec<Entry> = entries.iter().filter(|e| e.id != 6).cloned().collect();
        let rendered = render(&without_6, &comments);
        let lines: Vec<&str> = rendered.lines().skip(1).collect();
        assert_eq!(lines[0].split(' ').next(), Some("5"));
        assert_eq!(lines[1..3], ["# about 6", "# about 7"]);
        assert_eq!(lines[3].split(' ').next(), Some("7"));
        let only_5 = render(&entries[..1], &comments);
        assert!(only_5.ends_with("# about 6\n# about 7\n"), "{only_5}");
        // The Ruby DOProxy file had no header: one is added, once.
        assert_eq!(only_5.matches(HEADER).count(), 1);
        assert_eq!(Comments::of(&only_5).above.len(), 1);
        // Comments of a file without droplets stay above the first ones.
        let first = render(&entries[..1], &Comments::of("# pool of shop\n"));
        assert_eq!(first.lines().nth(1), Some("# pool of shop"));
    }

    #[test]
    fn ruby_doproxy_id_lines_load() {
        let entries = parse("4202645\n4202646\n\n").unwrap();
        assert_eq!(entries.len(), 2);
        assert!(entries.iter().all(Entry::needs_details));
        assert!(!entries[0].is_serving());
    }

    #[test]
    fn corrupt_lines_are_named() {
        let err = parse("# header\n1 web-0 10.0.0.5 - active -\n2 web-1 10.0.0\n").unwrap_err();
        assert_eq!(err.line, 3);
        let err = parse("x1\n").unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
        let err = parse("1 a - - running -\n").unwrap_err();
        assert!(err.reason.contains("running"), "{err}");
        let err = parse("1 a 10.0.0.999 - active -\n").unwrap_err();
        assert!(err.reason.contains("IPv4"), "{err}");
        let err = parse("1\n1\n").unwrap_err();
        assert_eq!(err.line, 2);
    }

    #[test]
    fn lines_with_text_that_is_no_name_slug_or_time_are_refused() {
        for (line, needle) in [
            (
                "1 web\u{1b}]2;x\u{7} 10.0.0.5 - active -",
                "name \"web\\u{1b}]2;x\\u{7}\"",
            ),
            (
                "1 web-0 10.0.0.5 - active $(reboot)",
                "created_at \"$(reboot)\"",
            ),
            (
                "1 web-0 - - new - image=a\"b size=s region=r",
                "image \"a\\\"b\"",
            ),
            (
                "1 web-0 - - new - image=a size=s region=r tags=x,{y}",
                "tags \"{y}\"",
            ),
        ] {
            let err = parse(&format!("# doproxy\n{line}\n")).unwrap_err();
            assert_eq!(err.line, 2, "{line}");
            assert!(err.reason.contains(needle), "{line}: {err}");
        }
        // `-` is a name not known yet, as written for an ID-only line.
        let entries = parse("7 - - - unknown -\n").unwrap();
        assert!(entries[0].needs_details());
    }

    #[test]
    fn a_droplet_the_api_names_badly_is_refused_naming_it() {
        let droplet = |name: &str, created_at: &str| -> Droplet {
            serde_json::from_value(serde_json::json!({
                "id": 7, "name": name, "status": "active", "created_at": created_at,
            }))
            .unwrap()
        };
        let good = droplet("web-0", "2026-11-28T20:41:06Z");
        assert_eq!(Entry::from_droplet(&good).unwrap().name, "web-0");
        let injection =
            "web-1\n    server evil 203.0.113.66:80 check\nglobal\n    insecure-fork-wanted";
        for bad in [
            droplet(injection, "2026-11-28T20:41:06Z"),
            droplet("web-0", "2026-11-28\n"),
        ] {
            let err = Entry::from_droplet(&bad).unwrap_err().to_string();
            assert!(
                err.starts_with("droplet 7 at DigitalOcean cannot be recorded: its "),
                "{err}"
            );
            assert!(!err.contains('\n'), "{err}");
        }
        let mut entry = Entry::from_droplet(&good).unwrap();
        let before = entry.clone();
        assert!(
            entry
                .update_from(&droplet(injection, "2026-11-28T20:41:06Z"))
                .is_err()
        );
        assert_eq!(entry, before, "a refused update changes nothing");
    }

    #[test]
    fn only_active_droplets_with_an_address_serve() {
        assert!(entry(1, "a", Status::Active).is_serving());
        assert!(!entry(1, "a", Status::New).is_serving());
        assert!(!entry(1, "a", Status::Destroying).is_serving());
    }
}
