//! How the inventory and DigitalOcean disagree, worked out without I/O so
//! `reconcile` can report it, and fix it with `--apply`, from one comparison.
//! DigitalOcean's side comes as `Observed` droplets: the entries they make.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::model::{Entry, Observed, RefusedDroplet, Status, is_pool_name};

/// Every disagreement between the inventory and the droplets that exist.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct Drift {
    /// In the inventory, no longer at DigitalOcean.
    pub gone: Vec<Entry>,
    /// Carrying the pool's tag, missing from the inventory (a run killed
    /// between the API's answer and the inventory write).
    pub orphans: Vec<Entry>,
    /// In both, but the inventory's status or addresses are out of date.
    pub changed: Vec<Change>,
    /// `new` or `unready` in the inventory, active at DigitalOcean: to be
    /// checked for readiness before they join HAProxy.
    pub booted: Vec<Entry>,
    /// Marked `destroying`, still existing: a delete that did not finish.
    pub unfinished_destroys: Vec<Entry>,
    /// In both, but without the pool's tag (droplets made by the Ruby
    /// DOProxy), so a list by tag cannot see them.
    pub untagged: Vec<Entry>,
}

/// One entry the API sees differently.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Change {
    pub before: Entry,
    pub after: Entry,
}

impl Drift {
    pub fn is_empty(&self) -> bool {
        *self == Drift::default()
    }

    /// One line per disagreement, for people.
    pub fn lines(&self) -> Vec<String> {
        let describe = |e: &Entry| format!("{} {}", e.id, e.name);
        let mut lines = Vec::new();
        lines.extend(self.gone.iter().map(|e| {
            format!(
                "gone: {} is in the inventory but no longer exists",
                describe(e)
            )
        }));
        lines.extend(self.orphans.iter().map(|e| {
            format!(
                "orphan: {} carries the pool's tag but is not in the inventory",
                describe(e)
            )
        }));
        lines.extend(self.changed.iter().map(|c| {
            format!(
                "changed: {} {}",
                describe(&c.before),
                differences(&c.before, &c.after).join(", ")
            )
        }));
        lines.extend(self.booted.iter().map(|e| {
            format!(
                "booted: {} is active but not in HAProxy until it passes the health check",
                describe(e)
            )
        }));
        lines.extend(self.unfinished_destroys.iter().map(|e| {
            format!(
                "unfinished delete: {} is marked destroying but still exists",
                describe(e)
            )
        }));
        lines.extend(
            self.untagged
                .iter()
                .map(|e| format!("untagged: {} lacks the pool's tag", describe(e))),
        );
        lines
    }
}

/// Which fields differ, as `status new -> active`.
fn differences(before: &Entry, after: &Entry) -> Vec<String> {
    let ip = |ip: Option<std::net::Ipv4Addr>| ip.map_or("-".to_string(), |ip| ip.to_string());
    let mut out = Vec::new();
    if before.status != after.status {
        out.push(format!("status {} -> {}", before.status, after.status));
    }
    if before.private_ip != after.private_ip {
        out.push(format!(
            "private ip {} -> {}",
            ip(before.private_ip),
            ip(after.private_ip)
        ));
    }
    if before.public_ip != after.public_ip {
        out.push(format!(
            "public ip {} -> {}",
            ip(before.public_ip),
            ip(after.public_ip)
        ));
    }
    if before.name != after.name {
        out.push(format!("name {} -> {}", before.name, after.name));
    }
    if out.is_empty() {
        out.push("created_at".to_string());
    }
    out
}

/// Compares `entries` with `existing`: every droplet that exists among the
/// pool's tagged droplets and the inventory's own (looked up by ID).
/// A droplet whose name or creation time doproxy would not record is an
/// error naming it, once it is compared or adopted.
pub fn drift(entries: &[Entry], existing: &[Observed], tag: &str) -> Result<Drift, RefusedDroplet> {
    let mut drift = Drift::default();
    // By ID, so a comparison of 10,000 entries stays linear.
    let by_id: HashMap<u64, &Observed> = existing.iter().map(|d| (d.id, d)).collect();
    let listed: HashSet<u64> = entries.iter().map(|e| e.id).collect();
    for entry in entries {
        let Some(droplet) = by_id.get(&entry.id) else {
            drift.gone.push(entry.clone());
            continue;
        };
        if entry.status == Status::Destroying {
            drift.unfinished_destroys.push(entry.clone());
            continue;
        }
        let fresh = droplet.entry.clone()?;
        let mut after = entry.clone();
        if after.update_from(&fresh) {
            drift.changed.push(Change {
                before: entry.clone(),
                after: after.clone(),
            });
        }
        if entry.is_booted(&fresh) {
            drift.booted.push(after.clone());
        }
        if !droplet.tags.iter().any(|t| t == tag) {
            drift.untagged.push(after);
        }
    }
    drift.orphans = existing
        .iter()
        .filter(|d| d.tags.iter().any(|t| t == tag))
        .filter(|d| !listed.contains(&d.id))
        .map(|d| d.entry.clone())
        .collect::<Result<_, _>>()?;
    Ok(drift)
}

/// Takes the orphans not named like this pool's droplets out of `orphans`
/// and returns them; without a hostname_prefix no name is the pool's.
pub fn take_foreign(orphans: &mut Vec<Entry>, prefix: Option<&str>) -> Vec<Entry> {
    let (own, foreign) = orphans
        .drain(..)
        .partition(|e| prefix.is_some_and(|prefix| is_pool_name(&e.name, prefix)));
    *orphans = own;
    foreign
}

#[cfg(test)]
mod tests {
    use super::*;

    fn droplet(id: u64, status: &str, ip: Option<&str>, tags: &[&str]) -> Observed {
        let entry = Entry {
            private_ip: ip.map(|ip| ip.parse().unwrap()),
            status: Status::from_api(status),
            created_at: Some("2026-11-28T00:00:00Z".into()),
            ..Entry::named(id, &format!("web-{id}"))
        };
        Observed {
            id,
            tags: tags.iter().map(|t| t.to_string()).collect(),
            entry: Ok(entry),
        }
    }

    #[test]
    fn every_kind_of_drift_is_found() {
        let api = [
            droplet(1, "active", Some("10.0.0.1"), &["pool"]),
            droplet(2, "active", Some("10.0.0.2"), &["pool"]),
            droplet(4, "active", Some("10.0.0.4"), &["pool"]),
            droplet(5, "new", None, &["pool"]),
            droplet(6, "active", Some("10.0.0.6"), &[]),
        ];
        let gone = droplet(3, "active", Some("10.0.0.3"), &["pool"]);
        let mut entries: Vec<Entry> = [&api[0], &api[1], &gone, &api[2], &api[4]]
            .into_iter()
            .map(|d| d.entry.clone().unwrap())
            .collect();
        // 2 has booted since it was recorded; 4's delete was cut short.
        entries[1].status = Status::New;
        entries[1].private_ip = None;
        entries[3].status = Status::Destroying;

        let drift = drift(&entries, &api, "pool").unwrap();
        let ids = |v: &[Entry]| v.iter().map(|e| e.id).collect::<Vec<_>>();
        assert_eq!(ids(&drift.gone), [3]);
        assert_eq!(ids(&drift.orphans), [5]);
        assert_eq!(drift.changed.len(), 1);
        assert_eq!(
            drift.changed[0].after.status,
            Status::New,
            "only readiness promotes"
        );
        assert_eq!(ids(&drift.booted), [2]);
        assert_eq!(ids(&drift.unfinished_destroys), [4]);
        assert_eq!(ids(&drift.untagged), [6]);
        let lines = drift.lines();
        assert!(
            lines.contains(&"changed: 2 web-2 private ip - -> 10.0.0.2".to_string()),
            "{lines:?}"
        );
    }

    #[test]
    fn matching_inventory_has_no_drift() {
        let api = [droplet(1, "active", Some("10.0.0.1"), &["pool"])];
        let entries = vec![api[0].entry.clone().unwrap()];
        assert!(drift(&entries, &api, "pool").unwrap().is_empty());
    }

    #[test]
    fn foreign_orphans_are_set_apart() {
        let entry = Entry::named;
        let mut orphans = vec![entry(1, "web-3"), entry(2, "shop-0"), entry(3, "web-x")];
        let foreign = take_foreign(&mut orphans, Some("web"));
        assert_eq!(orphans, vec![entry(1, "web-3")]);
        assert_eq!(foreign, vec![entry(2, "shop-0"), entry(3, "web-x")]);
        let foreign = take_foreign(&mut orphans, None);
        assert_eq!((orphans.len(), foreign.len()), (0, 1));
    }
}
