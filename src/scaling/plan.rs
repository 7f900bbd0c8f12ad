//! How to reach a pool size: how many droplets to add, or which to remove.

use serde::Serialize;

use super::rollout::pool_members;
use crate::model::Entry;

/// Which droplets go first when the pool shrinks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    Newest,
    Oldest,
}

/// The way from the current pool to the target size.
#[derive(Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "action")]
pub enum Plan {
    Stay { size: usize },
    Add { count: usize },
    Remove { ids: Vec<u64> },
}

/// The plan to bring the pool (every entry not already being destroyed, a
/// replacement under way and the droplet it replaces counting once) to
/// `target` droplets. Removal takes droplets that serve no traffic (booting,
/// unready) before serving ones, then the newest (or oldest) first, and
/// never a replacement under way.
pub fn plan(entries: &[Entry], target: usize, pick: Pick) -> Plan {
    let mut pool: Vec<&Entry> = pool_members(entries).collect();
    let size = pool.len();
    if target > size {
        return Plan::Add {
            count: target - size,
        };
    }
    if target == size {
        return Plan::Stay { size };
    }
    pool.sort_by(|a, b| {
        let age = (&a.created_at, a.id).cmp(&(&b.created_at, b.id));
        let age = if pick == Pick::Newest {
            age.reverse()
        } else {
            age
        };
        a.is_serving().cmp(&b.is_serving()).then(age)
    });
    Plan::Remove {
        ids: pool.iter().take(size - target).map(|e| e.id).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Status;

    fn entry(id: u64, created: &str, status: Status) -> Entry {
        Entry {
            private_ip: Some("10.0.0.1".parse().unwrap()),
            status,
            created_at: Some(created.into()),
            ..Entry::named(id, &format!("web-{id}"))
        }
    }

    fn pool() -> Vec<Entry> {
        vec![
            entry(1, "2026-01-01T00:00:00Z", Status::Active),
            entry(2, "2026-01-03T00:00:00Z", Status::Active),
            entry(3, "2026-01-02T00:00:00Z", Status::Active),
            entry(4, "2026-01-04T00:00:00Z", Status::Destroying),
        ]
    }

    #[test]
    fn grows_by_the_difference() {
        assert_eq!(plan(&pool(), 5, Pick::Newest), Plan::Add { count: 2 });
        assert_eq!(plan(&pool(), 3, Pick::Newest), Plan::Stay { size: 3 });
        assert_eq!(plan(&[], 2, Pick::Newest), Plan::Add { count: 2 });
    }

    #[test]
    fn shrinks_newest_or_oldest_first() {
        assert_eq!(
            plan(&pool(), 1, Pick::Newest),
            Plan::Remove { ids: vec![2, 3] }
        );
        assert_eq!(
            plan(&pool(), 2, Pick::Oldest),
            Plan::Remove { ids: vec![1] }
        );
        assert_eq!(
            plan(&pool(), 0, Pick::Oldest),
            Plan::Remove { ids: vec![1, 3, 2] }
        );
    }

    #[test]
    fn a_replacement_under_way_is_neither_counted_nor_removed() {
        let mut pool = pool();
        let mut replacing = entry(5, "2026-01-05T00:00:00Z", Status::New);
        replacing.replaces = Some(1);
        pool.push(replacing);
        assert_eq!(plan(&pool, 3, Pick::Newest), Plan::Stay { size: 3 });
        assert_eq!(plan(&pool, 2, Pick::Newest), Plan::Remove { ids: vec![2] });
    }

    #[test]
    fn droplets_that_serve_nothing_go_first() {
        let mut pool = pool();
        pool[0].status = Status::Unready;
        assert_eq!(plan(&pool, 2, Pick::Newest), Plan::Remove { ids: vec![1] });
    }
}
