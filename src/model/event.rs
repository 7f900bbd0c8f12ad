//! Events: one typed record of every change doproxy makes or sees (a
//! droplet created, a scale decision, a reserved IP moved, ...), with who
//! made it and where. Operations report a `Change`; the one place that
//! records it stamps it into an `Event` (time, pool, proxy, command line,
//! user), which the audit trail keeps and notifications send. An event is
//! read back from the store, which others can write: every text field is
//! `Printable` as it is read, the kind and severity are closed sets, and
//! the time must parse.

use std::fmt;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::text::Printable;

/// What happened. Serialized as its `name` (`family.what`); `--kind`
/// filters on either part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "&'static str", try_from = "String")]
pub enum Kind {
    /// DigitalOcean accepted droplets doproxy asked for.
    DropletCreated,
    /// Droplets passed the health check and are in HAProxy.
    DropletJoined,
    /// Droplets booted but never answered the health check.
    DropletUnready,
    /// Droplets were taken out of HAProxy (drained, then the reload).
    DropletDrained,
    /// Droplets were destroyed at DigitalOcean.
    DropletDestroyed,
    /// autoscale decided to scale out or in.
    ScaleDecision,
    /// A rollout step: new droplets in, old ones out.
    RolloutStep,
    /// heal replaced dead droplets.
    HealReplaced,
    /// heal held back: too many DOWN at once (an outage), or the hourly limit.
    HealRefused,
    /// This proxy was elected to hold the reserved IP.
    FailoverElected,
    /// The reserved IP was assigned to this proxy's droplet.
    ReservedIpMoved,
    /// reconcile brought the inventory and DigitalOcean together.
    ReconcileFixed,
    /// An HTTPS certificate was renewed (emitted by the HTTPS renewals).
    CertificateRenewed,
    /// A command that changes the pool failed, whole or in part.
    CommandFailed,
}

impl Kind {
    /// Every kind, for help texts and tests.
    pub const ALL: [Kind; 14] = [
        Kind::DropletCreated,
        Kind::DropletJoined,
        Kind::DropletUnready,
        Kind::DropletDrained,
        Kind::DropletDestroyed,
        Kind::ScaleDecision,
        Kind::RolloutStep,
        Kind::HealReplaced,
        Kind::HealRefused,
        Kind::FailoverElected,
        Kind::ReservedIpMoved,
        Kind::ReconcileFixed,
        Kind::CertificateRenewed,
        Kind::CommandFailed,
    ];

    /// `droplet.created`, as written in the trail and in filters.
    pub fn name(self) -> &'static str {
        match self {
            Kind::DropletCreated => "droplet.created",
            Kind::DropletJoined => "droplet.joined",
            Kind::DropletUnready => "droplet.unready",
            Kind::DropletDrained => "droplet.drained",
            Kind::DropletDestroyed => "droplet.destroyed",
            Kind::ScaleDecision => "scale.decision",
            Kind::RolloutStep => "rollout.step",
            Kind::HealReplaced => "heal.replaced",
            Kind::HealRefused => "heal.refused",
            Kind::FailoverElected => "failover.elected",
            Kind::ReservedIpMoved => "failover.ip_moved",
            Kind::ReconcileFixed => "reconcile.fixed",
            Kind::CertificateRenewed => "certificate.renewed",
            Kind::CommandFailed => "command.failed",
        }
    }

    /// Whether `filter` names this kind or its family (`heal` matches
    /// `heal.replaced` and `heal.refused`).
    pub fn matches(self, filter: &str) -> bool {
        let name = self.name();
        name == filter
            || name
                .strip_prefix(filter)
                .is_some_and(|rest| rest.starts_with('.'))
    }

    /// Whether `filter` names any kind or family.
    pub fn is_filter(filter: &str) -> bool {
        Kind::ALL.iter().any(|kind| kind.matches(filter))
    }
}

impl From<Kind> for &'static str {
    fn from(kind: Kind) -> &'static str {
        kind.name()
    }
}

impl TryFrom<String> for Kind {
    type Error = String;

    fn try_from(name: String) -> Result<Kind, String> {
        Kind::ALL
            .into_iter()
            .find(|kind| kind.name() == name)
            .ok_or_else(|| "unknown event kind".to_string())
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How much it matters, least first: notifications filter on a minimum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        })
    }
}

/// What an operation reports: what happened to which droplets, and how it
/// ended ("done", or the error).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub kind: Kind,
    pub severity: Severity,
    #[serde(default)]
    pub droplets: Vec<u64>,
    pub outcome: Printable,
}

impl Change {
    /// A change that went as meant.
    pub fn done(kind: Kind, droplets: Vec<u64>, outcome: impl Into<String>) -> Change {
        Change {
            kind,
            severity: Severity::Info,
            droplets,
            outcome: Printable::new(&outcome.into()),
        }
    }

    /// The same, at `severity`.
    pub fn with_severity(self, severity: Severity) -> Change {
        Change { severity, ..self }
    }
}

/// Who made a change, and where: the same for every event of one run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// The pool's tag.
    pub pool: Printable,
    /// The host name of the proxy doproxy ran on.
    pub proxy: Printable,
    /// The command line, as typed.
    pub command: Printable,
    /// $SUDO_USER, else $USER.
    pub user: Printable,
}

/// A change as the trail keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub at: EventTime,
    #[serde(flatten)]
    pub change: Change,
    #[serde(flatten)]
    pub actor: Actor,
}

impl Event {
    /// One line for people: `2026-12-07T03:40:00Z droplet.created [info] 4201 4202: done (by alice on proxy-1: doproxy create --count 2)`.
    pub fn line(&self) -> String {
        let ids: Vec<String> = self.change.droplets.iter().map(u64::to_string).collect();
        let droplets = if ids.is_empty() {
            String::new()
        } else {
            format!(" {}", ids.join(" "))
        };
        format!(
            "{} {} [{}]{droplets}: {} (by {} on {}: {})",
            self.at,
            self.change.kind,
            self.change.severity,
            self.change.outcome,
            self.actor.user,
            self.actor.proxy,
            self.actor.command,
        )
    }
}

/// When an event happened, to the millisecond: RFC 3339 in UTC in the
/// trail; a text that does not parse makes the event unreadable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct EventTime(SystemTime);

impl EventTime {
    pub fn now() -> EventTime {
        EventTime::at(SystemTime::now())
    }

    /// `time`, to the millisecond (as the trail keeps it).
    pub fn at(time: SystemTime) -> EventTime {
        let since = time
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        EventTime(SystemTime::UNIX_EPOCH + Duration::from_millis(since.as_millis() as u64))
    }

    pub fn time(self) -> SystemTime {
        self.0
    }
}

impl fmt::Display for EventTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_rfc3339_millis(self.0))
    }
}

impl Serialize for EventTime {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for EventTime {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<EventTime, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_rfc3339(&text)
            .map(EventTime::at)
            .map_err(|_| serde::de::Error::custom("the time is no RFC 3339 time in UTC"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> Event {
        Event {
            at: EventTime::at(SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123)),
            change: Change::done(Kind::DropletCreated, vec![7, 8], "done"),
            actor: Actor {
                pool: "doproxy:web".into(),
                proxy: "proxy-1".into(),
                command: "doproxy create --count 2".into(),
                user: "alice".into(),
            },
        }
    }

    #[test]
    fn an_event_reads_back_as_written() {
        let text = serde_json::to_string(&event()).unwrap();
        assert!(text.contains(r#""kind":"droplet.created""#), "{text}");
        assert!(
            text.contains(r#""at":"2023-11-14T22:13:20.123Z""#),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<Event>(&text).unwrap(), event());
    }

    #[test]
    fn text_from_the_store_is_made_printable() {
        let text = serde_json::to_string(&event())
            .unwrap()
            .replace("alice", "al\\u001b[2Jice\\n");
        let read: Event = serde_json::from_str(&text).unwrap();
        assert_eq!(&*read.actor.user, "al\\u{1b}[2Jice\\n");
        assert!(!read.line().contains('\u{1b}'));
    }

    #[test]
    fn unknown_kinds_severities_and_times_are_refused() {
        let good = serde_json::to_string(&event()).unwrap();
        for bad in [
            good.replace("droplet.created", "droplet.exploded"),
            good.replace(r#""info""#, r#""loud""#),
            good.replace("2023-11-14T22:13:20.123Z", "yesterday"),
        ] {
            assert!(serde_json::from_str::<Event>(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn kinds_filter_by_name_or_family() {
        assert!(Kind::HealRefused.matches("heal"));
        assert!(Kind::HealRefused.matches("heal.refused"));
        assert!(!Kind::HealRefused.matches("hea"));
        assert!(!Kind::HealReplaced.matches("heal.refused"));
        assert!(Kind::is_filter("failover"));
        assert!(!Kind::is_filter("nothing"));
        for kind in Kind::ALL {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.name()));
        }
    }

    #[test]
    fn severities_order_least_first() {
        assert!(Severity::Info < Severity::Warning && Severity::Warning < Severity::Error);
    }
}
