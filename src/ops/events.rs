//! Recording what happened: the one place where the changes operations
//! report (`model::Change`) become events, stamped with who made them and
//! where, appended to the store's audit trail and handed to the
//! notifications (`notify`, in the background). Recording never fails an operation: a trail that cannot
//! be written is logged (once per run) and counted, and the change itself
//! stands.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use anyhow::Result;

use super::Context;
use crate::inventory::Trail;
use crate::model::{Actor, Change, Event, EventTime, Kind};
use crate::text::Printable;

/// Stamps and records changes; one per run.
pub struct Recorder {
    actor: Actor,
    /// Whether a failed append was logged already.
    warned: AtomicBool,
}

impl Recorder {
    pub fn new(pool: &str) -> Recorder {
        let user = std::env::var("SUDO_USER")
            .ok()
            .filter(|user| !user.is_empty())
            .or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| "unknown".to_string());
        // args_os: an argument that is not UTF-8 must not stop the run.
        let command: Vec<String> = std::env::args_os()
            .map(|arg| arg.to_string_lossy().into_owned())
            .collect();
        Recorder {
            actor: Actor {
                pool: Printable::new(pool),
                proxy: Printable::new(&host_name()),
                command: Printable::new(&command.join(" ")),
                user: Printable::new(&user),
            },
            warned: AtomicBool::new(false),
        }
    }

    fn stamp(&self, change: Change) -> Event {
        Event {
            at: EventTime::now(),
            change,
            actor: self.actor.clone(),
        }
    }
}

/// This machine's host name, or `unknown`.
fn host_name() -> String {
    let mut buffer = [0u8; 256];
    // SAFETY: gethostname writes at most buffer.len() bytes into the buffer.
    let done = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) } == 0;
    let end = buffer.iter().position(|&b| b == 0).unwrap_or(buffer.len());
    match done {
        true if end > 0 => String::from_utf8_lossy(&buffer[..end]).into_owned(),
        _ => "unknown".to_string(),
    }
}

impl Context {
    /// Records `changes` (none: nothing to do): appended to the trail and
    /// sent to the notifications, logged on stderr.
    pub async fn record(&self, changes: impl IntoIterator<Item = Change>) {
        let events: Vec<Event> = changes
            .into_iter()
            .map(|change| self.recorder.stamp(change))
            .collect();
        if events.is_empty() {
            return;
        }
        for event in &events {
            tracing::debug!("event: {}", event.line());
        }
        if let Err(err) = self.store.append_events(&events).await {
            crate::metrics::event_not_recorded(events.len());
            if !self.recorder.warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "cannot append to the audit trail in {} ({err:#}); what happened is done, but not in doproxy history",
                    self.store.describe()
                );
            }
        }
        self.notifier.send(&events);
    }
}

/// What `history` shows.
pub struct Filter {
    /// Only events this recent.
    pub since: Option<Duration>,
    /// Only these kinds or families (none: all).
    pub kinds: Vec<String>,
}

/// The trail, oldest first, as `filter` narrows it.
pub async fn history(ctx: &Context, filter: &Filter) -> Result<Trail> {
    let mut trail = ctx.store.events().await?;
    let now = SystemTime::now();
    trail.events.retain(|event| shown(event, filter, now));
    // Events from several proxies arrive in about the order they happened;
    // a stable sort keeps one run's events as they were recorded.
    trail.events.sort_by_key(|event| event.at);
    Ok(trail)
}

fn shown(event: &Event, filter: &Filter, now: SystemTime) -> bool {
    let recent = filter.since.is_none_or(|since| {
        now.duration_since(event.at.time())
            .is_ok_and(|age| age <= since)
            || event.at.time() > now
    });
    let kind: Kind = event.change.kind;
    recent && (filter.kinds.is_empty() || filter.kinds.iter().any(|k| kind.matches(k)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_keeps_recent_events_of_the_kinds_asked_for() {
        let recorder = Recorder::new("doproxy:web");
        let now = SystemTime::now();
        let mut old = recorder.stamp(Change::done(Kind::HealReplaced, vec![1], "done"));
        old.at = EventTime::at(now - Duration::from_secs(7200));
        let new = recorder.stamp(Change::done(Kind::HealRefused, vec![], "outage"));
        let other = recorder.stamp(Change::done(Kind::DropletCreated, vec![2], "done"));
        let filter = Filter {
            since: Some(Duration::from_secs(3600)),
            kinds: vec!["heal".into()],
        };
        assert!(!shown(&old, &filter, now));
        assert!(shown(&new, &filter, now));
        assert!(!shown(&other, &filter, now));
        let all = Filter {
            since: None,
            kinds: vec![],
        };
        assert!(shown(&old, &all, now) && shown(&other, &all, now));
    }

    #[test]
    fn the_actor_has_a_host_and_a_user() {
        let recorder = Recorder::new("doproxy:web");
        assert!(!recorder.actor.proxy.is_empty());
        assert!(!recorder.actor.user.is_empty());
        assert_eq!(&*recorder.actor.pool, "doproxy:web");
    }
}
