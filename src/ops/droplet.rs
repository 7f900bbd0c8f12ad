//! What DigitalOcean shows of a droplet, as doproxy records it: the API's
//! droplet object mapped to an inventory entry, its text checked where it
//! enters (a name or creation time DigitalOcean itself would not allow is
//! refused, naming the droplet).

use crate::digitalocean::Droplet;
use crate::model::{DropletName, Entry, Observed, RefusedDroplet, Status, Timestamp};

/// The entry a droplet the API just described makes; refused when its name
/// or creation time is not what DigitalOcean itself allows.
pub fn entry_of(droplet: &Droplet) -> Result<Entry, RefusedDroplet> {
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

/// `droplet` as the pure comparisons (drift) take it.
pub fn observed(droplet: &Droplet) -> Observed {
    Observed {
        id: droplet.id,
        tags: droplet.tags.clone(),
        entry: entry_of(droplet),
    }
}

/// Brings `entry` up to date with the API's current view of its droplet
/// (see `Entry::update_from`); true if anything changed. A droplet
/// `entry_of` refuses leaves the entry as it was.
pub fn update(entry: &mut Entry, droplet: &Droplet) -> Result<bool, RefusedDroplet> {
    Ok(entry.update_from(&entry_of(droplet)?))
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn droplet(name: &str, created_at: &str) -> Droplet {
        serde_json::from_value(serde_json::json!({
            "id": 7, "name": name, "status": "active", "created_at": created_at,
            "networks": {"v4": [{"ip_address": "10.0.0.6", "type": "private"}]}
        }))
        .unwrap()
    }

    #[test]
    fn an_entry_takes_the_droplets_fields() {
        let entry = entry_of(&droplet("web-0", "2026-11-28T20:41:06Z")).unwrap();
        assert_eq!((entry.id, entry.name.as_str()), (7, "web-0"));
        assert_eq!(entry.private_ip, Some(Ipv4Addr::new(10, 0, 0, 6)));
        assert_eq!(entry.status, Status::Active);
        assert_eq!(entry.created_at.as_deref(), Some("2026-11-28T20:41:06Z"));
        let mut recorded = Entry {
            status: Status::New,
            ..Entry::named(7, "web-0")
        };
        assert!(update(&mut recorded, &droplet("web-0", "2026-11-28T20:41:06Z")).unwrap());
        assert_eq!(recorded.status, Status::New, "only readiness promotes");
    }

    #[test]
    fn a_droplet_the_api_names_badly_is_refused_naming_it() {
        let good = droplet("web-0", "2026-11-28T20:41:06Z");
        let injection =
            "web-1\n    server evil 203.0.113.66:80 check\nglobal\n    insecure-fork-wanted";
        for bad in [
            droplet(injection, "2026-11-28T20:41:06Z"),
            droplet("web-0", "2026-11-28\n"),
        ] {
            let err = entry_of(&bad).unwrap_err().to_string();
            assert!(
                err.starts_with("droplet 7 at DigitalOcean cannot be recorded: its "),
                "{err}"
            );
            assert!(!err.contains('\n'), "{err}");
            assert!(observed(&bad).entry.is_err());
        }
        let mut entry = entry_of(&good).unwrap();
        let before = entry.clone();
        assert!(update(&mut entry, &droplet(injection, "2026-11-28T20:41:06Z")).is_err());
        assert_eq!(entry, before, "a refused update changes nothing");
    }
}
