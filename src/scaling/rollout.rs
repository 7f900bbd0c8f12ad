//! Rolling replacement, decided without I/O: which droplets a rollout
//! replaces and in what order, how many at a time, and which old droplets
//! of a step may leave before their replacements serve, so serving capacity
//! never drops below the floor.
//!
//! A replacement is an inventory entry with `replaces` set; while the
//! droplet it replaces is still in the pool, the pair counts as one
//! droplet of the pool (a surge), so `scale` and `autoscale` neither count
//! nor remove it.

use serde::{Deserialize, Serialize};

use crate::model::{Build, Entry, Status};
use crate::text::Printable;

/// How many droplets one step replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepSize {
    /// This many per step (`--batch N`).
    Batch(usize),
    /// As many per step as keep the pool at most this many droplets above
    /// its size, plus those the capacity above the floor lets go first
    /// (`--max-surge N`).
    MaxSurge(usize),
}

/// A rollout, fixed when it starts and kept in the store, so a rollout that
/// was stopped resumes the same plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollout {
    /// Shown when it resumes; read back from the store as `Printable`.
    pub started_at: Printable,
    /// The droplets to replace, in order (those that serve nothing first,
    /// then the oldest).
    pub olds: Vec<u64>,
    /// Serving droplets the pool keeps at all times.
    pub floor: usize,
    pub step: StepSize,
    pub min_healthy: u8,
    /// Only droplets whose build differs from the options (or is unknown)
    /// are replaced; a droplet that matches them by the time its turn comes
    /// is skipped.
    pub only_stale: bool,
}

/// What a rollout does next.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Every droplet of the plan is replaced (or gone).
    Done,
    /// Create one replacement for each of `replace`; `early` of them may be
    /// retired before their replacements serve (they serve nothing, or
    /// capacity above the floor allows).
    Step { replace: Vec<u64>, early: Vec<u64> },
    /// No step can keep capacity at the floor; the sentence says why.
    Blocked(String),
}

/// Whether `entry` replaces a droplet still in the pool (a surge).
fn is_surge(entry: &Entry, entries: &[Entry]) -> bool {
    entry.replaces.is_some_and(|old| {
        entries
            .iter()
            .any(|e| e.id == old && e.status != Status::Destroying)
    })
}

/// The pool as scaling counts it: every droplet not being destroyed, a
/// replacement and the droplet it replaces counting once.
pub fn pool_members(entries: &[Entry]) -> impl Iterator<Item = &Entry> {
    entries
        .iter()
        .filter(|e| e.status != Status::Destroying && !is_surge(e, entries))
}

/// Whether `entry` needs replacing to match `current`: its build differs,
/// or is unknown.
fn is_stale(entry: &Entry, current: &Build) -> bool {
    entry
        .build
        .as_ref()
        .is_none_or(|build| !build.differences(current).is_empty())
}

/// Why a rollout (of every droplet, or `only_stale`) replaces `entry`, in
/// words: how its build differs from `current`, that its build is unknown,
/// or that it matches but every droplet is replaced; and that it serves
/// nothing, which puts it first.
pub fn why_replaced(entry: &Entry, current: &Build, only_stale: bool) -> String {
    let build = match &entry.build {
        None => {
            "its build is unknown (made before doproxy recorded builds, or adopted)".to_string()
        }
        Some(build) => match build.differences(current) {
            differences if !differences.is_empty() => format!("stale: {}", differences.join(", ")),
            _ if only_stale => "stale when the rollout started".to_string(),
            _ => {
                "matches droplet_options, but a rollout without --only-stale replaces every droplet"
                    .to_string()
            }
        },
    };
    match (entry.is_serving(), entry.status) {
        (true, _) => build,
        (false, Status::Active) => format!("{build}; it has no private address, so it goes first"),
        (false, status) => format!("{build}; it serves nothing ({status}), so it goes first"),
    }
}

/// A new rollout of the pool `entries`: every member that does not boot
/// right now (only the stale ones with `only_stale`); an error sentence when
/// the settings cannot work.
pub fn start(
    entries: &[Entry],
    current: &Build,
    only_stale: bool,
    step: StepSize,
    min_healthy: u8,
    started_at: String,
) -> Result<Rollout, String> {
    let mut olds: Vec<&Entry> = pool_members(entries)
        .filter(|e| e.status != Status::New)
        .filter(|e| !only_stale || is_stale(e, current))
        .collect();
    olds.sort_by(|a, b| {
        a.is_serving()
            .cmp(&b.is_serving())
            .then((&a.created_at, a.id).cmp(&(&b.created_at, b.id)))
    });
    let capacity = serving(entries);
    let floor = floor(capacity, min_healthy);
    if step == StepSize::MaxSurge(0) && capacity <= floor && !olds.is_empty() {
        return Err(format!(
            "--max-surge 0 allows no droplet beyond the pool, but --min-healthy {min_healthy}% keeps all {capacity} serving droplet(s) serving; give --max-surge 1 or more, or a lower --min-healthy"
        ));
    }
    Ok(Rollout {
        started_at: started_at.into(),
        olds: olds.iter().map(|e| e.id).collect(),
        floor,
        step,
        min_healthy,
        only_stale,
    })
}

/// The droplets that must keep serving: `min_healthy` percent of
/// `capacity`, rounded up, and at least one while any serves.
fn floor(capacity: usize, min_healthy: u8) -> usize {
    let share = (capacity * usize::from(min_healthy)).div_ceil(100);
    if capacity > 0 { share.max(1) } else { 0 }
}

/// The entry of droplet `id` if it can get a replacement now: in the
/// inventory, not being destroyed, and not replaced by another droplet
/// already.
pub fn replaceable(entries: &[Entry], id: u64) -> Option<&Entry> {
    if entries.iter().any(|e| e.replaces == Some(id)) {
        return None;
    }
    entries
        .iter()
        .find(|e| e.id == id && e.status != Status::Destroying)
}

/// The droplets of the plan still to replace: replaceable, and (with
/// only_stale) still stale.
pub fn remaining(rollout: &Rollout, entries: &[Entry], current: &Build) -> Vec<u64> {
    rollout
        .olds
        .iter()
        .copied()
        .filter(|id| {
            replaceable(entries, *id).is_some_and(|e| !rollout.only_stale || is_stale(e, current))
        })
        .collect()
}

/// The next step, from the inventory as it is now (replacements under way
/// already settled).
pub fn next_step(rollout: &Rollout, entries: &[Entry], current: &Build) -> Next {
    let remaining = remaining(rollout, entries, current);
    if remaining.is_empty() {
        return Next::Done;
    }
    let mut headroom = serving(entries).saturating_sub(rollout.floor);
    let size = match rollout.step {
        StepSize::Batch(n) => n,
        StepSize::MaxSurge(n) => n + headroom,
    }
    .min(remaining.len());
    if size == 0 {
        return Next::Blocked(format!(
            "only {} droplet(s) serve, the floor of --min-healthy {}%, and --max-surge 0 allows no droplet beyond the pool; bring the pool back up (doproxy reconcile shows what is wrong) and run doproxy rollout again",
            serving(entries),
            rollout.min_healthy
        ));
    }
    let replace = remaining[..size].to_vec();
    let mut early = Vec::new();
    for id in &replace {
        let serves = entries.iter().any(|e| e.id == *id && e.is_serving());
        if !serves {
            early.push(*id);
        } else if headroom > 0 {
            headroom -= 1;
            early.push(*id);
        }
    }
    Next::Step { replace, early }
}

/// Droplets serving now, surges included: what HAProxy balances across.
fn serving(entries: &[Entry]) -> usize {
    entries.iter().filter(|e| e.is_serving()).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_droplet_gets_its_own_reason() {
        let current = build("debian-12-x64");
        let entry = |id, image: Option<&str>, status| Entry {
            build: image.map(build),
            status,
            private_ip: Some("10.0.0.1".parse().unwrap()),
            ..Entry::named(id, &format!("web-{id}"))
        };
        let why = |e: &Entry, only_stale| why_replaced(e, &current, only_stale);
        let stale = entry(1, Some("ubuntu-24-04-x64"), Status::Active);
        assert_eq!(why(&stale, true), "stale: image");
        let unknown = entry(2, None, Status::Active);
        assert!(why(&unknown, true).starts_with("its build is unknown"));
        let current_one = entry(3, Some("debian-12-x64"), Status::Active);
        assert_eq!(
            why(&current_one, false),
            "matches droplet_options, but a rollout without --only-stale replaces every droplet"
        );
        let unready = entry(4, Some("ubuntu-24-04-x64"), Status::Unready);
        assert_eq!(
            why(&unready, true),
            "stale: image; it serves nothing (unready), so it goes first"
        );
    }

    fn build(image: &str) -> Build {
        Build {
            image: image.into(),
            size: "s-1vcpu-1gb".into(),
            region: "nyc3".into(),
            user_data: None,
            tags: vec!["doproxy".into()],
            vpc: None,
        }
    }

    fn entry(id: u64, status: Status, image: Option<&str>) -> Entry {
        Entry {
            private_ip: Some("10.0.0.1".parse().unwrap()),
            status,
            created_at: Some(format!("2026-01-{:02}T00:00:00Z", 10 - id).as_str().into()),
            build: image.map(build),
            ..Entry::named(id, &format!("web-{id}"))
        }
    }

    /// Six serving droplets on the old image, the newest (1) first.
    fn pool() -> Vec<Entry> {
        (1..=6)
            .map(|id| entry(id, Status::Active, Some("old")))
            .collect()
    }

    fn start_with(entries: &[Entry], step: StepSize, min_healthy: u8) -> Rollout {
        start(entries, &build("new"), false, step, min_healthy, "t".into()).unwrap()
    }

    #[test]
    fn the_default_surges_one_at_a_time_and_keeps_every_server() {
        let rollout = start_with(&pool(), StepSize::Batch(1), 100);
        assert_eq!(rollout.floor, 6);
        assert_eq!(rollout.olds, [6, 5, 4, 3, 2, 1], "oldest first");
        assert_eq!(
            next_step(&rollout, &pool(), &build("new")),
            Next::Step {
                replace: vec![6],
                early: vec![]
            }
        );
    }

    #[test]
    fn a_lower_floor_lets_old_droplets_go_first() {
        let rollout = start_with(&pool(), StepSize::Batch(3), 50);
        assert_eq!(rollout.floor, 3);
        assert_eq!(
            next_step(&rollout, &pool(), &build("new")),
            Next::Step {
                replace: vec![6, 5, 4],
                early: vec![6, 5, 4]
            }
        );
        let rollout = start_with(&pool(), StepSize::MaxSurge(1), 67);
        assert_eq!(rollout.floor, 5, "ceil(6 × 67%)");
        // One may go before its replacement serves, one more may surge.
        assert_eq!(
            next_step(&rollout, &pool(), &build("new")),
            Next::Step {
                replace: vec![6, 5],
                early: vec![6]
            }
        );
    }

    #[test]
    fn no_surge_at_a_full_floor_is_refused_or_blocked() {
        let err = start(
            &pool(),
            &build("new"),
            false,
            StepSize::MaxSurge(0),
            100,
            "t".into(),
        )
        .unwrap_err();
        assert!(err.contains("--max-surge 1 or more"), "{err}");
        let rollout = start_with(&pool(), StepSize::MaxSurge(0), 80);
        let mut entries = pool();
        entries[0].status = Status::Off;
        assert!(matches!(
            next_step(&rollout, &entries, &build("new")),
            Next::Blocked(reason) if reason.contains("bring the pool back up")
        ));
    }

    #[test]
    fn droplets_that_serve_nothing_go_first_and_early() {
        let mut entries = pool();
        entries[2].status = Status::Unready;
        entries.push(entry(7, Status::New, Some("old")));
        let rollout = start_with(&entries, StepSize::Batch(2), 100);
        assert_eq!(
            rollout.olds,
            [3, 6, 5, 4, 2, 1],
            "booting ones are left alone"
        );
        assert_eq!(rollout.floor, 5);
        assert_eq!(
            next_step(&rollout, &entries, &build("new")),
            Next::Step {
                replace: vec![3, 6],
                early: vec![3]
            }
        );
    }

    #[test]
    fn only_stale_replaces_what_differs_or_is_unknown_and_skips_what_matches_by_then() {
        let mut entries = pool();
        entries[0].build = Some(build("new"));
        entries[1].build = None;
        let rollout = start(
            &entries,
            &build("new"),
            true,
            StepSize::Batch(1),
            100,
            "t".into(),
        )
        .unwrap();
        assert_eq!(rollout.olds, [6, 5, 4, 3, 2]);
        // The options went back to the old image: nothing is stale any more
        // but droplet 2, whose build is unknown.
        assert_eq!(remaining(&rollout, &entries, &build("old")), [2]);
    }

    #[test]
    fn progress_is_read_from_the_inventory() {
        let rollout = start_with(&pool(), StepSize::Batch(2), 100);
        let mut entries = pool();
        // 6 is replaced and gone; 5 is being replaced by 8; 4 is on its way out.
        entries.retain(|e| e.id != 6);
        let mut replacing = entry(8, Status::New, Some("new"));
        replacing.replaces = Some(5);
        entries.push(replacing);
        let by_id = |entries: &[Entry], id| entries.iter().position(|e| e.id == id).unwrap();
        let four = by_id(&entries, 4);
        entries[four].status = Status::Destroying;
        assert_eq!(remaining(&rollout, &entries, &build("new")), [3, 2, 1]);
        assert!(is_surge(&entries[by_id(&entries, 8)], &entries));
        assert_eq!(pool_members(&entries).count(), 4, "8 and 5 count once");
        entries.retain(|e| ![3, 2, 1, 5].contains(&e.id));
        assert!(
            !is_surge(&entries[by_id(&entries, 8)], &entries),
            "5 is gone: 8 is a member"
        );
        assert_eq!(next_step(&rollout, &entries, &build("new")), Next::Done);
    }

    #[test]
    fn a_droplet_gets_one_replacement_at_most() {
        let entry = |id, status, replaces| Entry {
            status,
            replaces,
            ..Entry::named(id, &format!("web-{id}"))
        };
        let entries = [
            entry(1, Status::Active, None),
            entry(2, Status::Active, None),
            entry(3, Status::Destroying, None),
            entry(4, Status::New, Some(2)),
        ];
        // 2 is being replaced by 4, 3 is on its way out, 9 is gone.
        let replaceable: Vec<u64> = [1, 2, 3, 9]
            .into_iter()
            .filter(|id| replaceable(&entries, *id).is_some())
            .collect();
        assert_eq!(replaceable, vec![1]);
    }

    #[test]
    fn the_floor_rounds_up_and_keeps_one_server() {
        assert_eq!(floor(6, 100), 6);
        assert_eq!(floor(6, 50), 3);
        assert_eq!(floor(5, 50), 3);
        assert_eq!(floor(6, 0), 1);
        assert_eq!(floor(0, 100), 0);
    }
}
