//! Self-healing, decided without I/O: which droplets are faulty (gone or
//! off at DigitalOcean, or DOWN in HAProxy for longer than the grace
//! period), which of them to replace now, and when to replace nothing.
//!
//! Two guards keep healing from making things worse. Most of the pool DOWN
//! at once is an application outage (a bad deploy, a database away), not
//! droplet faults: new droplets would fail the same way, so DOWN droplets
//! are then only reported. And no more than a share of the pool is
//! replaced per hour, so a fault that keeps coming back cannot churn
//! through the whole pool.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// The `heal:` section, with its defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// How long HAProxy must report a droplet DOWN before it is replaced.
    pub grace: Duration,
    /// Percent of the pool replaced per hour at most (at least one droplet).
    pub max_share_per_hour: u8,
    /// Percent of the pool DOWN at once beyond which nothing DOWN is
    /// replaced.
    pub outage_share: u8,
    /// Between passes of `doproxy heal` (autoscale uses its own interval).
    pub interval: Duration,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            grace: Duration::from_secs(120),
            max_share_per_hour: 20,
            outage_share: 50,
            interval: Duration::from_secs(30),
        }
    }
}

/// What DigitalOcean says of a droplet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Api {
    /// Active (or any status but off and archive).
    Running,
    /// `off` or `archive`.
    Stopped(String),
    /// The API no longer knows it.
    Gone,
}

/// One droplet of the pool as seen now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    pub id: u64,
    pub name: String,
    pub api: Api,
    /// Its server's state in HAProxy (UP, DOWN, UP 1/2, ...); None when
    /// unknown (no admin socket, not in HAProxy).
    pub haproxy: Option<String>,
    /// How long HAProxy has reported it UP or DOWN (whole seconds, as long
    /// as the worker has run), if it says.
    pub haproxy_for: Option<Duration>,
    /// A replacement for it is under way already.
    pub being_replaced: bool,
}

/// What survives between passes, kept in the store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Since when (Unix seconds) HAProxy has reported each droplet DOWN,
    /// as first seen by a pass.
    pub down_since: BTreeMap<u64, u64>,
    /// When (Unix seconds) each replacement was started, and of which
    /// droplet, for the per-hour limit.
    pub replacements: Vec<Replacement>,
    /// The droplets the last pass held back (an outage, the hourly
    /// limit), so a refusal is told once, not at every pass.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replacement {
    pub at: u64,
    pub id: u64,
}

/// One droplet's verdict and why, in words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub id: u64,
    pub name: String,
    pub why: String,
}

/// What a pass does.
#[derive(Debug, Default, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// Replace these now.
    pub replace: Vec<Verdict>,
    /// Faulty or suspect, but left alone for now (grace, hourly limit,
    /// outage, replacement under way).
    pub waiting: Vec<Verdict>,
    /// Most of the pool is DOWN: the sentence saying so.
    pub outage: Option<String>,
    /// Faulty, but held back by heal.max_share_per_hour.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub held_back: Vec<u64>,
    /// Droplets looked at.
    pub pool: usize,
}

/// Brings `record` up to date with `seen` at `now`: a droplet HAProxy
/// reports DOWN is noted the first time, and forgotten once it is UP again
/// (or gone from the pool). A transition such as `UP 1/2` (a server whose
/// checks start failing, and every server right after a reload) keeps what
/// was noted, so a reload does not restart the grace period.
pub fn observe(record: &mut Record, seen: &[Observation], now: SystemTime) {
    let now = secs(now);
    let still_down: HashSet<u64> = seen
        .iter()
        .filter(|o| {
            o.haproxy
                .as_deref()
                .is_some_and(|s| is_down(s) || is_transition(s))
        })
        .map(|o| o.id)
        .collect();
    record.down_since.retain(|id, _| still_down.contains(id));
    for o in seen {
        if o.haproxy.as_deref().is_some_and(is_down) {
            record.down_since.entry(o.id).or_insert(now);
        }
    }
    // Only the last hour counts; a day is kept for a look.
    record
        .replacements
        .retain(|r| now.saturating_sub(r.at) < 24 * 3600);
}

/// The decision for `seen`, the pool's droplets, given what `record` noted.
pub fn decide(policy: &Policy, seen: &[Observation], record: &Record, now: SystemTime) -> Decision {
    let now_secs = secs(now);
    let pool = seen.len();
    let mut decision = Decision {
        pool,
        ..Decision::default()
    };
    let down: Vec<&Observation> = seen
        .iter()
        .filter(|o| o.api == Api::Running && o.haproxy.as_deref().is_some_and(is_down))
        .collect();
    if down.len() * 100 > usize::from(policy.outage_share) * pool {
        decision.outage = Some(format!(
            "{} of {pool} droplet(s) are DOWN in HAProxy at once, more than heal.outage_share ({}%): that looks like an application outage, not droplet faults, so none of them is replaced; fix the application (or health_check_path), or replace droplets yourself",
            down.len(),
            policy.outage_share
        ));
    }
    let mut faulty: Vec<Verdict> = Vec::new();
    for o in seen {
        let verdict = |why: String| Verdict {
            id: o.id,
            name: o.name.clone(),
            why,
        };
        let fault = match &o.api {
            Api::Gone => Some("DigitalOcean no longer knows it".to_string()),
            Api::Stopped(status) => Some(format!("DigitalOcean reports it {status}")),
            Api::Running if o.haproxy.as_deref().is_some_and(is_down) => {
                // The record counts from the first pass that saw it DOWN,
                // HAProxy from its verdict (but only since its last reload):
                // the longer of the two, so a first pass or a dry run knows.
                let since = record.down_since.get(&o.id).copied().unwrap_or(now_secs);
                let down_for = Duration::from_secs(now_secs.saturating_sub(since))
                    .max(o.haproxy_for.unwrap_or_default());
                let grace = humantime::format_duration(policy.grace);
                if decision.outage.is_some() {
                    decision
                        .waiting
                        .push(verdict("DOWN during an outage".into()));
                    None
                } else if down_for < policy.grace {
                    decision.waiting.push(verdict(format!(
                        "DOWN in HAProxy for {}, {} left of the {grace} grace period",
                        humantime::format_duration(down_for),
                        humantime::format_duration(policy.grace - down_for)
                    )));
                    None
                } else {
                    Some(format!(
                        "DOWN in HAProxy for {} (grace period {grace})",
                        humantime::format_duration(down_for)
                    ))
                }
            }
            Api::Running => None,
        };
        match fault {
            Some(why) if o.being_replaced => {
                decision
                    .waiting
                    .push(verdict(format!("{why}; its replacement is under way")));
            }
            Some(why) => faulty.push(verdict(why)),
            None => {}
        }
    }
    let allowed = (pool * usize::from(policy.max_share_per_hour) / 100).max(1);
    let recent = record
        .replacements
        .iter()
        .filter(|r| now_secs.saturating_sub(r.at) < 3600)
        .count();
    let room = allowed.saturating_sub(recent);
    for (n, verdict) in faulty.into_iter().enumerate() {
        if n < room {
            decision.replace.push(verdict);
        } else {
            decision.held_back.push(verdict.id);
            decision.waiting.push(Verdict {
                why: format!(
                    "{}; held back: heal.max_share_per_hour ({}%) allows {allowed} replacement(s) per hour in this pool of {pool}, and {} were started in the last hour",
                    verdict.why,
                    policy.max_share_per_hour,
                    recent + n.min(room)
                ),
                ..verdict
            });
        }
    }
    decision
}

/// Notes that `ids` are being replaced now, for the hourly limit.
pub fn note_replacements(record: &mut Record, ids: &[u64], now: SystemTime) {
    let at = secs(now);
    record
        .replacements
        .extend(ids.iter().map(|&id| Replacement { at, id }));
}

fn is_down(state: &str) -> bool {
    state.starts_with("DOWN")
}

/// `UP 1/2`, `DOWN 1/2`: a server between states.
fn is_transition(state: &str) -> bool {
    state.contains('/')
}

fn secs(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn seen(id: u64, api: Api, haproxy: &str) -> Observation {
        Observation {
            id,
            name: format!("web-{id}"),
            api,
            haproxy: Some(haproxy.to_string()),
            haproxy_for: None,
            being_replaced: false,
        }
    }

    /// Five droplets, all UP.
    fn pool() -> Vec<Observation> {
        (1..=5).map(|id| seen(id, Api::Running, "UP")).collect()
    }

    fn ids(verdicts: &[Verdict]) -> Vec<u64> {
        verdicts.iter().map(|v| v.id).collect()
    }

    #[test]
    fn a_droplet_down_longer_than_the_grace_period_is_replaced() {
        let policy = Policy::default();
        let mut record = Record::default();
        let mut pool = pool();
        pool[1].haproxy = Some("DOWN".into());
        observe(&mut record, &pool, at(NOW));
        let d = decide(&policy, &pool, &record, at(NOW + 60));
        assert_eq!((ids(&d.replace), ids(&d.waiting)), (vec![], vec![2]));
        assert_eq!(
            d.waiting[0].why,
            "DOWN in HAProxy for 1m, 1m left of the 2m grace period"
        );
        // A reload shows it `UP 1/2` for a moment: the grace runs on.
        pool[1].haproxy = Some("UP 1/2".into());
        observe(&mut record, &pool, at(NOW + 100));
        pool[1].haproxy = Some("DOWN".into());
        observe(&mut record, &pool, at(NOW + 110));
        let d = decide(&policy, &pool, &record, at(NOW + 130));
        assert_eq!(ids(&d.replace), vec![2]);
        assert!(
            d.replace[0].why.contains("DOWN in HAProxy for 2m 10s"),
            "{d:?}"
        );
        // UP again: forgotten.
        pool[1].haproxy = Some("UP".into());
        observe(&mut record, &pool, at(NOW + 140));
        assert!(record.down_since.is_empty());
    }

    #[test]
    fn how_long_haproxy_reports_a_droplet_down_counts_before_any_pass_noted_it() {
        let policy = Policy::default();
        let mut pool = pool();
        pool[1].haproxy = Some("DOWN".into());
        pool[1].haproxy_for = Some(Duration::from_secs(100));
        // A dry run records nothing: HAProxy's word is all there is.
        let d = decide(&policy, &pool, &Record::default(), at(NOW));
        assert_eq!(
            d.waiting[0].why,
            "DOWN in HAProxy for 1m 40s, 20s left of the 2m grace period"
        );
        pool[1].haproxy_for = Some(Duration::from_secs(130));
        let d = decide(&policy, &pool, &Record::default(), at(NOW));
        assert_eq!(ids(&d.replace), vec![2]);
        // After a reload HAProxy counts afresh; the record remembers.
        let mut record = Record::default();
        observe(&mut record, &pool, at(NOW - 110));
        pool[1].haproxy_for = Some(Duration::from_secs(5));
        let d = decide(&policy, &pool, &record, at(NOW));
        assert!(d.waiting[0].why.starts_with("DOWN in HAProxy for 1m 50s"));
    }

    #[test]
    fn gone_and_off_droplets_are_replaced_at_once() {
        let mut pool = pool();
        pool[0].api = Api::Gone;
        pool[3].api = Api::Stopped("off".into());
        pool[3].haproxy = Some("DOWN".into());
        let policy = Policy {
            max_share_per_hour: 40,
            ..Policy::default()
        };
        let d = decide(&policy, &pool, &Record::default(), at(NOW));
        assert_eq!(ids(&d.replace), vec![1, 4]);
        assert_eq!(d.replace[1].why, "DigitalOcean reports it off");
    }

    #[test]
    fn most_of_the_pool_down_at_once_is_an_outage_and_nothing_down_is_replaced() {
        let mut pool = pool();
        for o in &mut pool[..4] {
            o.haproxy = Some("DOWN".into());
        }
        let mut record = Record::default();
        observe(&mut record, &pool, at(NOW - 3600));
        let d = decide(&Policy::default(), &pool, &record, at(NOW));
        assert!(d.replace.is_empty(), "{d:?}");
        assert_eq!(ids(&d.waiting), vec![1, 2, 3, 4]);
        let outage = d.outage.unwrap();
        assert!(outage.starts_with("4 of 5 droplet(s) are DOWN"), "{outage}");
        // Half is not most: 2 and 3 of 2 to 5.
        pool[3].haproxy = Some("UP".into());
        let two_of_four = &pool[1..];
        let d = decide(&Policy::default(), two_of_four, &record, at(NOW));
        assert_eq!(d.outage, None);
    }

    #[test]
    fn the_hourly_limit_holds_back_what_is_beyond_it() {
        let mut pool = pool();
        for o in &mut pool[..2] {
            o.api = Api::Gone;
        }
        let mut record = Record::default();
        // 20% of 5: one per hour.
        let d = decide(&Policy::default(), &pool, &record, at(NOW));
        assert_eq!((ids(&d.replace), ids(&d.waiting)), (vec![1], vec![2]));
        assert!(
            d.waiting[0]
                .why
                .contains("allows 1 replacement(s) per hour"),
            "{d:?}"
        );
        note_replacements(&mut record, &[1], at(NOW));
        let d = decide(&Policy::default(), &pool[1..], &record, at(NOW + 3599));
        assert!(d.replace.is_empty());
        let d = decide(&Policy::default(), &pool[1..], &record, at(NOW + 3600));
        assert_eq!(ids(&d.replace), vec![2]);
        observe(&mut record, &pool, at(NOW + 25 * 3600));
        assert!(record.replacements.is_empty(), "a day is kept");
    }

    #[test]
    fn a_droplet_being_replaced_is_left_to_its_replacement() {
        let mut pool = pool();
        pool[0].api = Api::Gone;
        pool[0].being_replaced = true;
        let d = decide(&Policy::default(), &pool, &Record::default(), at(NOW));
        assert!(d.replace.is_empty());
        assert!(d.waiting[0].why.ends_with("its replacement is under way"));
    }
}
