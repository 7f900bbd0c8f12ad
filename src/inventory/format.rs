//! The line format of the inventory file: one droplet per line, the ID
//! first, readable by people.
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
use std::net::Ipv4Addr;

use crate::model::{Build, DropletName, Entry, InvalidField, Slug, Timestamp};

const HEADER: &str = "# doproxy inventory: id name private_ip public_ip status created_at";
/// Written in place of a value not known yet.
const NONE: &str = "-";

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
    // Sized once: growing a list of 10,000 entries step by step copies it
    // over and over.
    let lines = text.lines().count();
    let mut entries: Vec<Entry> = Vec::with_capacity(lines);
    // IDs seen so far: a check per line that stays constant-time at 10,000.
    let mut seen: HashSet<u64> = HashSet::with_capacity(lines);
    // One buffer for every line's fields.
    let mut fields: Vec<&str> = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fail = |reason: String| ParseError {
            line: index + 1,
            reason,
        };
        fields.clear();
        fields.extend(line.split_whitespace());
        let entry = parse_line(&fields).map_err(fail)?;
        if !seen.insert(entry.id) {
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

fn parse_line(fields: &[&str]) -> Result<Entry, String> {
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
    ] = *fields
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
    use crate::model::Status;
    use crate::model::samples::{build, entry};

    #[test]
    fn the_line_listing_a_droplet_is_found() {
        let text = "# doproxy inventory\n\n# 7 was here\n 12 web-0 - - new -\n7\n";
        assert_eq!(line_of(text, 12), Some(4));
        assert_eq!(line_of(text, 7), Some(5));
        assert_eq!(line_of(text, 1), None);
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
}
