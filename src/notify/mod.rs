//! Notifications: events sent to webhooks (generic JSON, or Slack's
//! `{"text": ...}`), each hook filtered by kind and minimum severity.
//! Delivery is in the background, one task per hook with a bounded queue,
//! each request bounded by the hook's timeout and retried a bounded number
//! of times, so a hook that is down or hangs never slows or fails what
//! doproxy does; at exit a run waits at most `FLUSH_WAIT` for what is
//! still queued. A hook that gives up on an event is logged once per run
//! and told to the observer (the metrics).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::model::{Event, Severity};

/// How long a run waits at exit for notifications still queued.
pub const FLUSH_WAIT: Duration = Duration::from_secs(3);
/// Events queued per hook before new ones are dropped (and counted failed).
const QUEUE: usize = 256;

/// The body a hook takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The event as JSON (as `doproxy history -o json` prints it).
    Json,
    /// `{"text": "<the event's line>"}`, which Slack and Mattermost take.
    Slack,
}

/// One webhook, as the config checked it.
#[derive(Debug, Clone, PartialEq)]
pub struct Hook {
    pub url: reqwest::Url,
    pub format: Format,
    /// Kinds or families sent (none: all).
    pub kinds: Vec<String>,
    pub min_severity: Severity,
    /// For one request, connecting included.
    pub timeout: Duration,
    /// Attempts after the first one failed.
    pub retries: u32,
}

impl Hook {
    fn wants(&self, event: &Event) -> bool {
        event.change.severity >= self.min_severity
            && (self.kinds.is_empty()
                || self
                    .kinds
                    .iter()
                    .any(|filter| event.change.kind.matches(filter)))
    }

    fn body(&self, event: &Event) -> serde_json::Value {
        match self.format {
            Format::Json => serde_json::to_value(event).unwrap_or_default(),
            Format::Slack => {
                json!({ "text": format!("doproxy {}: {}", event.actor.pool, event.line()) })
            }
        }
    }

    /// The URL for messages: without its path and query, which may hold
    /// the hook's secret (Slack's do).
    fn shown(&self) -> String {
        let port = self.url.port().map(|p| format!(":{p}")).unwrap_or_default();
        format!(
            "{}://{}{port}",
            self.url.scheme(),
            self.url.host_str().unwrap_or_default()
        )
    }
}

/// Told of every delivery: true when the hook took it, false when it was
/// given up on.
pub type Observer = fn(bool);

/// The hooks of a run; sending starts their tasks on first use.
pub struct Notifier {
    hooks: Mutex<Vec<Queue>>,
    observer: Observer,
}

struct Queue {
    hook: Arc<Hook>,
    sender: Option<mpsc::Sender<Event>>,
    task: Option<JoinHandle<()>>,
    warned: Arc<AtomicBool>,
}

impl Notifier {
    pub fn new(hooks: &[Hook], observer: Observer) -> Notifier {
        let hooks = hooks
            .iter()
            .map(|hook| Queue {
                hook: Arc::new(hook.clone()),
                sender: None,
                task: None,
                warned: Arc::new(AtomicBool::new(false)),
            })
            .collect();
        Notifier {
            hooks: Mutex::new(hooks),
            observer,
        }
    }

    /// Queues `events` for the hooks that want them, at once; never waits.
    pub fn send(&self, events: &[Event]) {
        let observer = self.observer;
        let mut hooks = self.hooks.lock().unwrap_or_else(|e| e.into_inner());
        for queue in hooks.iter_mut() {
            for event in events.iter().filter(|e| queue.hook.wants(e)) {
                let sender = queue.sender.get_or_insert_with(|| {
                    let (sender, receiver) = mpsc::channel(QUEUE);
                    let task =
                        deliver_all(queue.hook.clone(), receiver, queue.warned.clone(), observer);
                    queue.task = Some(tokio::spawn(task));
                    sender
                });
                if sender.try_send(event.clone()).is_err() {
                    observer(false);
                    warn_once(&queue.warned, &queue.hook, "too many notifications queued");
                }
            }
        }
    }

    /// Lets the hooks finish what is queued, waiting at most FLUSH_WAIT in
    /// all; what is left then is dropped.
    pub async fn flush(&self) {
        let mut tasks: Vec<JoinHandle<()>> = self
            .hooks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter_mut()
            .filter_map(|queue| {
                // Without a sender the task ends once its queue is empty.
                queue.sender = None;
                queue.task.take()
            })
            .collect();
        if tasks.is_empty() {
            return;
        }
        let all = async {
            for task in tasks.iter_mut() {
                let _ = task.await;
            }
        };
        if tokio::time::timeout(FLUSH_WAIT, all).await.is_err() {
            tracing::warn!(
                "notifications still undelivered after {} were dropped",
                humantime::format_duration(FLUSH_WAIT)
            );
        }
        for task in tasks {
            task.abort();
        }
    }
}

/// Sends what arrives on `receiver` to `hook`, one event at a time, in order.
async fn deliver_all(
    hook: Arc<Hook>,
    mut receiver: mpsc::Receiver<Event>,
    warned: Arc<AtomicBool>,
    observer: Observer,
) {
    let client = match crate::http::api_builder().timeout(hook.timeout).build() {
        Ok(client) => client,
        Err(err) => {
            warn_once(
                &warned,
                &hook,
                &format!("cannot set up the HTTP client: {err}"),
            );
            return;
        }
    };
    while let Some(event) = receiver.recv().await {
        match deliver(&client, &hook, &event).await {
            Ok(()) => observer(true),
            Err(why) => {
                observer(false);
                warn_once(&warned, &hook, &why);
            }
        }
    }
}

/// One event to one hook: any 2xx is taken. Failures that may pass (no
/// answer in time, no connection, a 5xx, 429 Too Many Requests) are tried
/// again up to `retries` times, 0.5 s, 1 s, 2 s, ... apart; any other answer
/// (a 4xx: a wrong URL, a revoked hook) would be the same next time.
async fn deliver(client: &reqwest::Client, hook: &Hook, event: &Event) -> Result<(), String> {
    let body = hook.body(event);
    let mut attempt = 0;
    loop {
        let why = match client.post(hook.url.clone()).json(&body).send().await {
            Ok(response) if response.status().is_success() => return Ok(()),
            Ok(response)
                if !(response.status().is_server_error()
                    || response.status() == reqwest::StatusCode::TOO_MANY_REQUESTS) =>
            {
                return Err(format!("it answered {}", response.status()));
            }
            Ok(response) => format!("it answered {}", response.status()),
            Err(err) if err.is_timeout() => format!(
                "it did not answer within {}",
                humantime::format_duration(hook.timeout)
            ),
            Err(err) => crate::http::root_cause(&err),
        };
        if attempt >= hook.retries {
            return Err(format!("{why} ({} attempt(s))", attempt + 1));
        }
        tokio::time::sleep(Duration::from_millis(500) * 2u32.pow(attempt.min(6))).await;
        attempt += 1;
    }
}

fn warn_once(warned: &AtomicBool, hook: &Hook, why: &str) {
    if !warned.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            "cannot notify webhook {}: {why}; doproxy goes on, and counts further failures in doproxy_notifications_total",
            hook.shown()
        );
    } else {
        tracing::debug!("cannot notify webhook {}: {why}", hook.shown());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Actor, Change, EventTime, Kind};

    fn hook(kinds: &[&str], min_severity: Severity, format: Format) -> Hook {
        Hook {
            url: "https://hooks.example.com/services/SECRET".parse().unwrap(),
            format,
            kinds: kinds.iter().map(|k| k.to_string()).collect(),
            min_severity,
            timeout: Duration::from_secs(5),
            retries: 2,
        }
    }

    fn event(kind: Kind, severity: Severity) -> Event {
        Event {
            at: EventTime::now(),
            change: Change::done(kind, vec![1], "done").with_severity(severity),
            actor: Actor {
                pool: "doproxy:web".into(),
                proxy: "proxy".into(),
                command: "doproxy heal".into(),
                user: "alice".into(),
            },
        }
    }

    #[test]
    fn hooks_take_the_kinds_and_severities_they_ask_for() {
        let heal_warnings = hook(&["heal"], Severity::Warning, Format::Json);
        assert!(heal_warnings.wants(&event(Kind::HealRefused, Severity::Warning)));
        assert!(!heal_warnings.wants(&event(Kind::HealReplaced, Severity::Info)));
        assert!(!heal_warnings.wants(&event(Kind::CommandFailed, Severity::Error)));
        let all = hook(&[], Severity::Info, Format::Json);
        assert!(all.wants(&event(Kind::DropletCreated, Severity::Info)));
    }

    #[test]
    fn slack_gets_one_line_of_text_and_messages_hide_the_secret() {
        let slack = hook(&[], Severity::Info, Format::Slack);
        let body = slack.body(&event(Kind::HealReplaced, Severity::Info));
        let text = body["text"].as_str().unwrap();
        assert!(text.starts_with("doproxy doproxy:web: ") && text.contains("heal.replaced"));
        assert_eq!(slack.shown(), "https://hooks.example.com");
        let json = hook(&[], Severity::Info, Format::Json);
        assert_eq!(
            json.body(&event(Kind::HealReplaced, Severity::Info))["kind"],
            "heal.replaced"
        );
    }
}
