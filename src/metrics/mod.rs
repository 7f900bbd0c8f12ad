//! What doproxy did, for Prometheus: a small registry of counters and gauges
//! that the rest of the code bumps with one-line calls (passing numbers and
//! labels: this module knows nothing of droplets or decisions), written in
//! Prometheus' text exposition format. `watch` and `autoscale` serve it over
//! HTTP on a loopback address (metrics_listen); one-shot commands leave it in
//! a node-exporter textfile (metrics_textfile), replaced atomically, with
//! the counters of earlier runs added in, so cron jobs count up like a
//! service does.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Instant, SystemTime};

mod endpoint;
#[cfg(test)]
mod tests;
mod textfile;

pub use endpoint::{Serving, check_unauthenticated_listener, serve};
pub use textfile::leave_textfile;

/// Where the metrics go: metrics_listen, metrics_allow_remote and
/// metrics_textfile.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// Where `watch` and `autoscale` serve Prometheus metrics.
    pub listen: Option<SocketAddr>,
    /// The listen address, and HAProxy's stats bind, may be addresses other
    /// machines reach (see `check_unauthenticated_listener`).
    pub allow_remote: bool,
    /// Where one-shot commands leave their metrics for node-exporter.
    pub textfile: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

/// One metric, defined once: its name, help text, type and label names.
struct Family {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    labels: &'static [&'static str],
}

const fn counter(
    name: &'static str,
    labels: &'static [&'static str],
    help: &'static str,
) -> Family {
    Family {
        name,
        help,
        kind: Kind::Counter,
        labels,
    }
}

const fn gauge(name: &'static str, labels: &'static [&'static str], help: &'static str) -> Family {
    Family {
        name,
        help,
        kind: Kind::Gauge,
        labels,
    }
}

static BUILD_INFO: Family = gauge(
    "doproxy_build_info",
    &["version"],
    "Always 1; the doproxy version that serves these metrics.",
);
static POOL: Family = gauge(
    "doproxy_pool_droplets",
    &["status"],
    "Droplets in the inventory, by status (new, active, unready, off, archive, destroying).",
);
static SCALE_EVENTS: Family = counter(
    "doproxy_scale_events_total",
    &["direction"],
    "Runs that added (out) or removed (in) droplets.",
);
static SCALED_DROPLETS: Family = counter(
    "doproxy_scaled_droplets_total",
    &["direction"],
    "Droplets added to (out) or removed from (in) the pool.",
);
static API_REQUESTS: Family = counter(
    "doproxy_api_requests_total",
    &["method", "status"],
    "DigitalOcean API requests, by method and HTTP status (none: no answer came).",
);
static API_ERRORS: Family = counter(
    "doproxy_api_errors_total",
    &["status"],
    "DigitalOcean API requests that failed, by HTTP status (none: no answer came).",
);
static API_RETRIES: Family = counter(
    "doproxy_api_retries_total",
    &[],
    "DigitalOcean API requests sent again after a transient failure.",
);
static RELOADS: Family = counter(
    "doproxy_haproxy_reloads_total",
    &[],
    "HAProxy reloads that a new worker confirmed.",
);
static RUNTIME_UPDATES: Family = counter(
    "doproxy_haproxy_runtime_updates_total",
    &[],
    "HAProxy updates made through its runtime API, without a reload.",
);
static RUNTIME_FALLBACKS: Family = counter(
    "doproxy_haproxy_runtime_fallbacks_total",
    &[],
    "Runtime API updates HAProxy refused, so it was reloaded instead.",
);
static RELOAD_FAILURES: Family = counter(
    "doproxy_haproxy_reload_failures_total",
    &[],
    "HAProxy reloads that failed, so the previous live config was put back.",
);
static LOCK_WAITS: Family = counter(
    "doproxy_lock_waits_total",
    &[],
    "Times the inventory lock was asked for.",
);
static LOCK_WAIT_SECONDS: Family = counter(
    "doproxy_lock_wait_seconds_total",
    &[],
    "Time spent waiting for the inventory lock.",
);
static LAST_RECONCILE: Family = gauge(
    "doproxy_last_reconcile_success_timestamp_seconds",
    &[],
    "When HAProxy and the inventory were last brought in step (watch) or reconcile last succeeded, in Unix time.",
);
static AUTOSCALE_CURRENT: Family = gauge(
    "doproxy_autoscale_current_droplets",
    &[],
    "The pool's size (booting droplets included) at the last autoscale decision.",
);
static AUTOSCALE_DESIRED: Family = gauge(
    "doproxy_autoscale_desired_droplets",
    &[],
    "What the metrics asked for at the last autoscale decision, within min and max.",
);
static AUTOSCALE_TARGET: Family = gauge(
    "doproxy_autoscale_target_droplets",
    &[],
    "The size the last autoscale decision set out to reach.",
);
static AUTOSCALE_DECISIONS: Family = counter(
    "doproxy_autoscale_decisions_total",
    &["action"],
    "Autoscale decisions, by action (hold, scale_out, scale_in).",
);

static CERTIFICATE_EXPIRY: Family = gauge(
    "doproxy_certificate_expiry_timestamp_seconds",
    &["domain"],
    "When the HTTPS certificate served for each domain expires, in Unix time.",
);
static CERTIFICATE_RENEWALS: Family = counter(
    "doproxy_certificate_renewals_total",
    &[],
    "HTTPS certificates issued by the ACME CA.",
);
static CERTIFICATE_FAILURES: Family = counter(
    "doproxy_certificate_renewal_failures_total",
    &[],
    "Attempts to have an HTTPS certificate issued that failed.",
);

static EVENTS_UNRECORDED: Family = counter(
    "doproxy_events_unrecorded_total",
    &[],
    "Events that could not be appended to the audit trail.",
);
static NOTIFICATIONS: Family = counter(
    "doproxy_notifications_total",
    &["result"],
    "Webhook notifications, by result (sent, failed: given up after the retries).",
);

/// Every metric, in the order they are written.
static FAMILIES: [&Family; 23] = [
    &BUILD_INFO,
    &POOL,
    &SCALE_EVENTS,
    &SCALED_DROPLETS,
    &API_REQUESTS,
    &API_ERRORS,
    &API_RETRIES,
    &RELOADS,
    &RUNTIME_UPDATES,
    &RUNTIME_FALLBACKS,
    &RELOAD_FAILURES,
    &LOCK_WAITS,
    &LOCK_WAIT_SECONDS,
    &LAST_RECONCILE,
    &AUTOSCALE_CURRENT,
    &AUTOSCALE_DESIRED,
    &AUTOSCALE_TARGET,
    &AUTOSCALE_DECISIONS,
    &CERTIFICATE_EXPIRY,
    &CERTIFICATE_RENEWALS,
    &CERTIFICATE_FAILURES,
    &EVENTS_UNRECORDED,
    &NOTIFICATIONS,
];

/// Sample values by family name, then by the rendered label set
/// (`{a="x",b="y"}`, or empty): only what this process touched.
type Samples = BTreeMap<&'static str, BTreeMap<String, f64>>;

static REGISTRY: Mutex<Samples> = Mutex::new(BTreeMap::new());

fn update(family: &Family, labels: &[&str], change: impl FnOnce(&mut f64)) {
    debug_assert_eq!(labels.len(), family.labels.len(), "{}", family.name);
    let rendered = render_labels(family.labels, labels);
    let mut registry = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    change(
        registry
            .entry(family.name)
            .or_default()
            .entry(rendered)
            .or_insert(0.0),
    );
}

fn add(family: &Family, labels: &[&str], amount: f64) {
    update(family, labels, |value| *value += amount);
}

fn set(family: &Family, labels: &[&str], to: f64) {
    update(family, labels, |value| *value = to);
}

/// `{method="GET",status="200"}`, values escaped as the format wants.
fn render_labels(names: &[&str], values: &[&str]) -> String {
    if names.is_empty() {
        return String::new();
    }
    let pairs: Vec<String> = names
        .iter()
        .zip(values)
        .map(|(name, value)| {
            let value = value
                .replace('\\', r"\\")
                .replace('"', "\\\"")
                .replace('\n', r"\n");
            format!("{name}=\"{value}\"")
        })
        .collect();
    format!("{{{}}}", pairs.join(","))
}

/// Whether a scaling run added or removed droplets.
#[derive(Debug, Clone, Copy)]
pub enum Direction {
    Out,
    In,
}

/// One DigitalOcean API request and its HTTP status (None: no answer).
pub fn api_request(method: &str, status: Option<u16>) {
    let status = status.map_or("none".to_string(), |s| s.to_string());
    add(&API_REQUESTS, &[method, &status], 1.0);
    if !status.starts_with(['1', '2', '3']) {
        add(&API_ERRORS, &[&status], 1.0);
    }
}

/// One API request sent again.
pub fn api_retry() {
    add(&API_RETRIES, &[], 1.0);
}

/// `lock`, the wait for the inventory lock, timed.
pub async fn lock_wait<T>(lock: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let locked = lock.await;
    add(&LOCK_WAITS, &[], 1.0);
    add(&LOCK_WAIT_SECONDS, &[], started.elapsed().as_secs_f64());
    locked
}

/// A run that added or removed `droplets` droplets (none: no event).
pub fn scaled(direction: Direction, droplets: usize) {
    if droplets == 0 {
        return;
    }
    let direction = match direction {
        Direction::Out => "out",
        Direction::In => "in",
    };
    add(&SCALE_EVENTS, &[direction], 1.0);
    add(&SCALED_DROPLETS, &[direction], droplets as f64);
}

/// The pool's droplets, counted by status: a status seen before and now
/// gone reads 0, not stale, and `active` is always there.
pub fn pool(by_status: &[(&str, usize)]) {
    let mut counts: BTreeMap<String, f64> = BTreeMap::new();
    for (status, count) in by_status {
        *counts.entry(status.to_string()).or_default() += *count as f64;
    }
    counts.entry("active".to_string()).or_default();
    let mut registry = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    let samples = registry.entry(POOL.name).or_default();
    samples.values_mut().for_each(|value| *value = 0.0);
    for (status, count) in counts {
        samples.insert(render_labels(POOL.labels, &[&status]), count);
    }
}

/// How doproxy brought HAProxy to a new config.
#[derive(Debug, Clone, Copy)]
pub enum HaproxyUpdate {
    Reloaded,
    AtRuntime,
    /// The runtime API refused a step; a reload follows.
    RuntimeRefused,
    ReloadFailed,
}

pub fn haproxy(update: HaproxyUpdate) {
    let family = match update {
        HaproxyUpdate::Reloaded => &RELOADS,
        HaproxyUpdate::AtRuntime => &RUNTIME_UPDATES,
        HaproxyUpdate::RuntimeRefused => &RUNTIME_FALLBACKS,
        HaproxyUpdate::ReloadFailed => &RELOAD_FAILURES,
    };
    add(family, &[], 1.0);
}

/// HAProxy and the inventory agree, as of now.
pub fn reconciled() {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    set(&LAST_RECONCILE, &[], now.as_secs_f64().floor());
}

/// An autoscale decision: the pool's size (`current`), what the metrics
/// asked for (`desired`), the size it sets out to reach (`target`), and its
/// action (`hold`, `scale_out`, `scale_in`).
pub fn autoscale(current: usize, desired: usize, target: usize, action: &str) {
    set(&AUTOSCALE_CURRENT, &[], current as f64);
    set(&AUTOSCALE_DESIRED, &[], desired as f64);
    set(&AUTOSCALE_TARGET, &[], target as f64);
    add(&AUTOSCALE_DECISIONS, &[action], 1.0);
}

/// The certificate served for `domains` expires at `not_after` (Unix
/// seconds).
pub fn certificate_expiry(domains: &[String], not_after: u64) {
    for domain in domains {
        set(&CERTIFICATE_EXPIRY, &[domain], not_after as f64);
    }
}

/// An attempt to have a certificate issued: it succeeded or failed.
pub fn certificate_issuance(succeeded: bool) {
    let family = if succeeded {
        &CERTIFICATE_RENEWALS
    } else {
        &CERTIFICATE_FAILURES
    };
    add(family, &[], 1.0);
}

/// `events` events that could not be appended to the audit trail.
pub fn event_not_recorded(events: usize) {
    add(&EVENTS_UNRECORDED, &[], events as f64);
}

/// One webhook notification delivered (`sent`) or given up on.
pub fn notification(sent: bool) {
    add(&NOTIFICATIONS, &[if sent { "sent" } else { "failed" }], 1.0);
}

/// What this process recorded, with the build info.
fn snapshot() -> Samples {
    set(&BUILD_INFO, &[env!("CARGO_PKG_VERSION")], 1.0);
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// `samples` in the text exposition format (version 0.0.4). A metric
/// without labels that nothing touched reads 0.
fn encode(samples: &Samples) -> String {
    let mut text = String::new();
    for family in FAMILIES {
        let kind = match family.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        text.push_str(&format!(
            "# HELP {} {}\n# TYPE {} {kind}\n",
            family.name,
            family.help.replace('\\', r"\\").replace('\n', r"\n"),
            family.name
        ));
        let untouched = BTreeMap::from([(String::new(), 0.0)]);
        let values = match samples.get(family.name) {
            Some(values) => values,
            None if family.labels.is_empty() => &untouched,
            None => continue,
        };
        for (labels, value) in values {
            text.push_str(&format!("{}{labels} {}\n", family.name, number(*value)));
        }
    }
    text
}

/// A sample value as the format writes it.
fn number(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_string()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else {
        format!("{value}")
    }
}
