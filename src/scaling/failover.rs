//! The decisions of `doproxy failover`, kept free of etcd, HAProxy and the
//! API so they can be tested on their own: when a proxy claims leadership,
//! when a leader acts, resigns or stops acting, and how the assignment
//! history and the leader's description are written.
//!
//! The rules: a proxy claims leadership only while its own HAProxy has
//! answered RISE checks in a row, and a leader resigns once it has failed
//! FALL in a row, so one odd answer moves nothing. A leader acts only on
//! leadership etcd has just confirmed; one that cannot confirm holds still.
//! A proxy that gave leadership up does not claim it again for the minimum
//! hold time, so a HAProxy failing on and off cannot bounce the reserved IP.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::text::Printable;

/// Passed checks in a row before a proxy may claim leadership.
pub const RISE: u32 = 2;
/// Failed checks in a row before a leader resigns.
pub const FALL: u32 = 2;
/// How many assignments the history keeps.
const HISTORY_LEN: usize = 20;

/// The recent answers of this proxy's HAProxy.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    passes: u32,
    fails: u32,
}

impl Health {
    pub fn record(&mut self, healthy: bool) {
        if healthy {
            self.passes = self.passes.saturating_add(1);
            self.fails = 0;
        } else {
            self.fails = self.fails.saturating_add(1);
            self.passes = 0;
        }
    }
}

/// What this proxy is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Not leading; when it last gave leadership up, if it ever did.
    Follower {
        stepped_down: Option<Instant>,
    },
    Leader,
}

/// What etcd said about leadership this round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Nobody leads.
    Vacant,
    /// Another proxy leads.
    Other,
    /// This proxy leads, confirmed just now.
    Ours,
    /// This proxy's leadership is gone (its lease ran out or was revoked).
    Lost,
    /// etcd did not answer.
    Unknown,
}

/// What to do this round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing: another leads, or this proxy may not claim leadership yet.
    Wait,
    /// Claim leadership.
    Campaign,
    /// Lead: keep the reserved IP on this droplet.
    Lead,
    /// Give leadership up: this proxy's HAProxy stopped answering.
    Resign,
    /// Leadership is gone: stop acting on it.
    StandDown,
    /// Leadership may hold but cannot be confirmed: do nothing until it can.
    Hold,
}

pub fn decide(role: Role, health: Health, seen: Seen, now: Instant, min_hold: Duration) -> Step {
    match role {
        Role::Leader if health.fails >= FALL => Step::Resign,
        Role::Leader => match seen {
            Seen::Ours => Step::Lead,
            Seen::Unknown => Step::Hold,
            Seen::Vacant | Seen::Other | Seen::Lost => Step::StandDown,
        },
        Role::Follower { stepped_down } => {
            let held_off = stepped_down.is_some_and(|at| now < at + min_hold);
            if seen == Seen::Vacant && health.passes >= RISE && !held_off {
                Step::Campaign
            } else {
                Step::Wait
            }
        }
    }
}

/// How a leader describes itself in the leader key. Whoever can write the
/// pool's etcd prefix can write it, so its text is read as `Printable`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub droplet_id: u64,
    pub name: Printable,
    pub pid: u32,
    /// RFC 3339, when it became leader.
    pub since: Printable,
}

impl Identity {
    /// `proxy-a (droplet 4202645, pid 812) since 2026-11-28T20:41:06Z`; a
    /// value written otherwise is shown as it is, made printable.
    pub fn describe(value: &str) -> String {
        match serde_json::from_str::<Identity>(value) {
            Ok(leader) => format!(
                "{} (droplet {}, pid {}) since {}",
                leader.name, leader.droplet_id, leader.pid, leader.since
            ),
            Err(_) => Printable::new(value).to_string(),
        }
    }
}

/// One move of the reserved IP, as the history keeps it (in etcd, so its
/// text is read as `Printable`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// RFC 3339, when the API confirmed it.
    pub at: Printable,
    pub reserved_ip: Printable,
    pub droplet_id: u64,
    pub name: Printable,
    /// The droplet that held the IP before, if any.
    pub previous: Option<u64>,
}

impl Assignment {
    pub fn line(&self) -> String {
        let from = self
            .previous
            .map_or("no droplet".to_string(), |id| format!("droplet {id}"));
        format!(
            "{} {} -> {} (droplet {}), from {from}",
            self.at, self.reserved_ip, self.name, self.droplet_id
        )
    }
}

/// The recorded history (oldest first); an unreadable one counts as empty.
pub fn parse_history(recorded: Option<&str>) -> Vec<Assignment> {
    recorded
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or_default()
}

/// `recorded` with `assignment` added, keeping the newest HISTORY_LEN.
pub fn append_history(recorded: Option<&str>, assignment: Assignment) -> String {
    let mut history = parse_history(recorded);
    history.push(assignment);
    let excess = history.len().saturating_sub(HISTORY_LEN);
    history.drain(..excess);
    serde_json::to_string(&history).expect("assignments encode as JSON")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(checks: &[bool]) -> Health {
        let mut health = Health::default();
        for &ok in checks {
            health.record(ok);
        }
        health
    }

    const HOLD: Duration = Duration::from_secs(30);

    #[test]
    fn a_follower_claims_a_vacant_leadership_only_with_a_healthy_haproxy() {
        let now = Instant::now();
        let fresh = Role::Follower { stepped_down: None };
        let steady = health(&[true, true]);
        assert_eq!(
            decide(fresh, steady, Seen::Vacant, now, HOLD),
            Step::Campaign
        );
        for seen in [Seen::Other, Seen::Unknown] {
            assert_eq!(decide(fresh, steady, seen, now, HOLD), Step::Wait);
        }
        // One answer after a failure is not enough.
        let shaky = health(&[true, false, true]);
        assert_eq!(decide(fresh, shaky, Seen::Vacant, now, HOLD), Step::Wait);
        assert_eq!(
            decide(fresh, health(&[]), Seen::Vacant, now, HOLD),
            Step::Wait
        );
    }

    #[test]
    fn a_proxy_that_stepped_down_waits_out_the_minimum_hold() {
        let now = Instant::now();
        let recent = Role::Follower {
            stepped_down: Some(now),
        };
        let steady = health(&[true, true, true]);
        assert_eq!(decide(recent, steady, Seen::Vacant, now, HOLD), Step::Wait);
        let later = now + HOLD;
        assert_eq!(
            decide(recent, steady, Seen::Vacant, later, HOLD),
            Step::Campaign
        );
    }

    #[test]
    fn a_leader_acts_only_on_confirmed_leadership_and_resigns_when_haproxy_fails() {
        let now = Instant::now();
        let steady = health(&[true, true]);
        assert_eq!(
            decide(Role::Leader, steady, Seen::Ours, now, HOLD),
            Step::Lead
        );
        assert_eq!(
            decide(Role::Leader, steady, Seen::Unknown, now, HOLD),
            Step::Hold
        );
        for seen in [Seen::Lost, Seen::Vacant, Seen::Other] {
            assert_eq!(
                decide(Role::Leader, steady, seen, now, HOLD),
                Step::StandDown
            );
        }
        // One failed check is not yet a reason; two are, whatever etcd says.
        let blip = health(&[true, false]);
        assert_eq!(
            decide(Role::Leader, blip, Seen::Ours, now, HOLD),
            Step::Lead
        );
        let down = health(&[true, false, false]);
        for seen in [Seen::Ours, Seen::Unknown, Seen::Lost] {
            assert_eq!(decide(Role::Leader, down, seen, now, HOLD), Step::Resign);
        }
    }

    #[test]
    fn the_history_keeps_the_newest_assignments() {
        let assignment = |n: u64| Assignment {
            at: format!("2026-01-01T00:00:{n:02}Z").into(),
            reserved_ip: "203.0.113.7".into(),
            droplet_id: n,
            name: format!("proxy-{n}").into(),
            previous: n.checked_sub(1),
        };
        let mut recorded = None;
        for n in 0..25 {
            recorded = Some(append_history(recorded.as_deref(), assignment(n)));
        }
        let history = parse_history(recorded.as_deref());
        assert_eq!(history.len(), HISTORY_LEN);
        assert_eq!(history[0].droplet_id, 5);
        assert_eq!(history.last(), Some(&assignment(24)));
        assert_eq!(
            assignment(0).line(),
            "2026-01-01T00:00:00Z 203.0.113.7 -> proxy-0 (droplet 0), from no droplet"
        );
        assert!(parse_history(Some("not json")).is_empty());
    }

    #[test]
    fn a_leader_is_described_by_name_and_droplet() {
        let identity = Identity {
            droplet_id: 7,
            name: "proxy-a".into(),
            pid: 42,
            since: "2026-01-01T00:00:00Z".into(),
        };
        let value = serde_json::to_string(&identity).unwrap();
        assert_eq!(
            Identity::describe(&value),
            "proxy-a (droplet 7, pid 42) since 2026-01-01T00:00:00Z"
        );
        assert_eq!(Identity::describe("something else"), "something else");
        // Written by whoever can write etcd: shown, but never as escapes.
        let forged = r#"{"droplet_id": 7, "name": "a\u001b[2J", "pid": 1, "since": "\u0007"}"#;
        assert_eq!(
            Identity::describe(forged),
            r"a\u{1b}[2J (droplet 7, pid 1) since \u{7}"
        );
        assert_eq!(Identity::describe("b\u{1b}]2;x"), r"b\u{1b}]2;x");
    }
}
