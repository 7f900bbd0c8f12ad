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
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::atomic_file;
use crate::lockfile::LockFile;
use crate::shutdown::Shutdown;

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

/// Every metric, in the order they are written.
static FAMILIES: [&Family; 18] = [
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

/// The samples of a textfile this module wrote earlier; lines it cannot
/// read (another version's metrics) are left out.
fn parse(text: &str) -> Samples {
    let mut samples = Samples::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = match series.find('{') {
            Some(open) => series.split_at(open),
            None => (series, ""),
        };
        if let Some(family) = FAMILIES.iter().find(|f| f.name == name) {
            samples
                .entry(family.name)
                .or_default()
                .insert(labels.to_string(), value);
        }
    }
    samples
}

/// This run's samples on top of an earlier run's: counters add up, and a
/// gauge this run set replaces the earlier one with all its labels (a
/// status the pool no longer has is not left at its old count).
fn merge(earlier: Samples, now: &Samples) -> Samples {
    let mut merged = earlier;
    for (name, values) in now {
        let family = FAMILIES.iter().find(|f| f.name == *name).expect("known");
        let into = merged.entry(name).or_default();
        if family.kind == Kind::Gauge {
            *into = values.clone();
            continue;
        }
        for (labels, value) in values {
            *into.entry(labels.clone()).or_insert(0.0) += value;
        }
    }
    merged
}

/// Leaves this run's metrics in metrics_textfile, if set, added to what
/// earlier runs left there. A textfile that cannot be written costs only a
/// warning: the command's own outcome matters more.
pub async fn leave_textfile(settings: &Settings) {
    let Some(path) = &settings.textfile else {
        return;
    };
    if let Err(err) = write_textfile(path).await {
        tracing::warn!("{err:#}; this run's metrics are not in the textfile");
    }
}

async fn write_textfile(path: &Path) -> Result<()> {
    // Runs finishing together take turns, so no run's counts are lost.
    let lock = atomic_file::sibling(path, "lock");
    let _turn = LockFile::acquire(&lock, Duration::from_secs(10)).await?;
    let earlier = match std::fs::read_to_string(path) {
        Ok(text) => parse(&text),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Samples::new(),
        Err(err) => {
            return Err(err)
                .with_context(|| format!("cannot read metrics_textfile {}", path.display()));
        }
    };
    let merged = merge(earlier, &snapshot());
    // node-exporter reads it as its own user.
    atomic_file::write_for(
        path,
        encode(&merged).as_bytes(),
        atomic_file::Readers::Everyone,
    )
    .context("cannot write metrics_textfile")
}

/// How long one scrape may take, and the most of a request read.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_REQUEST: usize = 16 * 1024;

/// The metrics endpoint of a long-running command.
struct Endpoint {
    listener: TcpListener,
}

impl Endpoint {
    /// Listens on `address`: a loopback address, unless `allow_remote`
    /// (the endpoint has no authentication).
    async fn bind(address: SocketAddr, allow_remote: bool) -> Result<Endpoint> {
        check_unauthenticated_listener(
            "metrics_listen",
            &address.to_string(),
            address.ip().is_loopback(),
            allow_remote,
        )?;
        let listener = TcpListener::bind(address).await.with_context(|| {
            format!(
                "cannot serve metrics on {address}; choose a free address with metrics_listen (or --metrics-listen)"
            )
        })?;
        tracing::info!("serving Prometheus metrics on http://{address}/metrics");
        Ok(Endpoint { listener })
    }

    /// Answers scrapes until a stop is asked for; each in its own task,
    /// bounded in time, so a slow client holds up nothing.
    async fn serve(self, shutdown: &Shutdown) {
        let mut scrapes = JoinSet::new();
        loop {
            tokio::select! {
                _ = shutdown.signalled() => return,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        scrapes.spawn(tokio::time::timeout(SCRAPE_TIMEOUT, answer(stream)));
                    }
                    Err(err) => {
                        // Out of file descriptors, say: try again shortly.
                        tracing::warn!("cannot accept a metrics connection: {err}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(_) = scrapes.join_next(), if !scrapes.is_empty() => {}
            }
        }
    }
}

/// Refuses to let an endpoint without authentication (doproxy's metrics,
/// HAProxy's stats page and exporter) listen where other machines reach
/// it, unless metrics_allow_remote says so; `key` and `address` name it.
pub fn check_unauthenticated_listener(
    key: &str,
    address: &str,
    loopback: bool,
    allow_remote: bool,
) -> Result<()> {
    if !loopback && !allow_remote {
        bail!(
            "{key} {address} is not a loopback address, and what listens there has no authentication; listen on 127.0.0.1 and let Prometheus reach it through a tunnel or a proxy, or set metrics_allow_remote: true"
        );
    }
    Ok(())
}

/// The endpoint of a long-running command, serving in a task of its own
/// until a stop is asked for or this is dropped.
pub struct Serving(tokio::task::JoinHandle<()>);

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Serves metrics on the listen address of `settings`; None when it has
/// none.
pub async fn serve(settings: &Settings, shutdown: &Shutdown) -> Result<Option<Serving>> {
    let Some(address) = settings.listen else {
        return Ok(None);
    };
    let endpoint = Endpoint::bind(address, settings.allow_remote).await?;
    let shutdown = shutdown.clone();
    Ok(Some(Serving(tokio::spawn(async move {
        endpoint.serve(&shutdown).await
    }))))
}

/// Reads one HTTP request and answers it: the metrics for GET (or HEAD)
/// /metrics, 404 or 405 otherwise.
async fn answer(mut stream: TcpStream) -> std::io::Result<()> {
    let mut request = Vec::new();
    let mut buffer = [0u8; 2048];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < MAX_REQUEST {
        let read = stream.read(&mut buffer).await?;
        if read == 0 {
            break;
        }
        request.extend_from_slice(&buffer[..read]);
    }
    let head = String::from_utf8_lossy(&request);
    let mut words = head.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, content_type, body) = match (method, path) {
        ("GET" | "HEAD", "/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            encode(&snapshot()),
        ),
        ("GET" | "HEAD", _) => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "doproxy serves its metrics on /metrics\n".to_string(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "only GET and HEAD\n".to_string(),
        ),
    };
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if method != "HEAD" {
        response.push_str(&body);
    }
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_written_in_the_text_format() {
        let mut samples = Samples::new();
        samples
            .entry(API_REQUESTS.name)
            .or_default()
            .insert(render_labels(API_REQUESTS.labels, &["GET", "200"]), 3.0);
        samples
            .entry(POOL.name)
            .or_default()
            .insert(render_labels(POOL.labels, &["a\"b\\c\nd"]), 2.0);
        samples
            .entry(LOCK_WAIT_SECONDS.name)
            .or_default()
            .insert(String::new(), 0.25);
        let text = encode(&samples);
        assert!(text.contains(
            "# TYPE doproxy_api_requests_total counter\ndoproxy_api_requests_total{method=\"GET\",status=\"200\"} 3\n"
        ));
        assert!(text.contains("doproxy_pool_droplets{status=\"a\\\"b\\\\c\\nd\"} 2\n"));
        assert!(text.contains("doproxy_lock_wait_seconds_total 0.25\n"));
        assert!(
            text.contains("doproxy_api_retries_total 0\n"),
            "untouched reads 0"
        );
        assert!(
            !text.contains("doproxy_scale_events_total{"),
            "no label set yet"
        );
        assert_eq!(
            (number(f64::INFINITY), number(f64::NAN)),
            ("+Inf".into(), "NaN".into())
        );
    }

    #[tokio::test]
    async fn scrapes_get_the_metrics_and_nothing_else() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        for (request, status, body) in [
            ("GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n", "200", true),
            ("HEAD /metrics HTTP/1.1\r\n\r\n", "200", false),
            ("GET / HTTP/1.1\r\n\r\n", "404", true),
            ("POST /metrics HTTP/1.1\r\n\r\n", "405", true),
        ] {
            let client = async {
                let mut stream = TcpStream::connect(address).await.unwrap();
                stream.write_all(request.as_bytes()).await.unwrap();
                let mut answer = String::new();
                stream.read_to_string(&mut answer).await.unwrap();
                answer
            };
            let server = async { answer(listener.accept().await.unwrap().0).await };
            let (answer, served) = tokio::join!(client, server);
            served.unwrap();
            let (head, rest) = answer.split_once("\r\n\r\n").unwrap();
            assert!(head.starts_with(&format!("HTTP/1.1 {status} ")), "{answer}");
            assert_eq!(!rest.is_empty(), body, "{request}: {answer}");
            if body {
                let length = format!("Content-Length: {}", rest.len());
                assert!(head.contains(&length), "{head}");
            }
            if status == "200" {
                assert!(head.contains("text/plain; version=0.0.4"), "{head}");
            }
        }
    }

    #[test]
    fn a_textfile_adds_up_counters_and_keeps_the_latest_gauges() {
        let mut earlier = Samples::new();
        earlier
            .entry(RELOADS.name)
            .or_default()
            .insert(String::new(), 2.0);
        earlier
            .entry(AUTOSCALE_TARGET.name)
            .or_default()
            .insert(String::new(), 5.0);
        earlier
            .entry(LAST_RECONCILE.name)
            .or_default()
            .insert(String::new(), 100.0);
        let text = encode(&earlier) + "some_other_metric 7\n";
        let read = parse(&text);
        assert_eq!(read[RELOADS.name][""], 2.0);
        assert!(!read.contains_key("some_other_metric"));
        let mut now = Samples::new();
        now.entry(RELOADS.name)
            .or_default()
            .insert(String::new(), 1.0);
        now.entry(LAST_RECONCILE.name)
            .or_default()
            .insert(String::new(), 200.0);
        let merged = merge(read, &now);
        assert_eq!(merged[RELOADS.name][""], 3.0);
        assert_eq!(merged[LAST_RECONCILE.name][""], 200.0);
        assert_eq!(merged[AUTOSCALE_TARGET.name][""], 5.0);
    }

    #[test]
    fn a_gauge_this_run_set_drops_the_labels_it_no_longer_has() {
        let status = |s: &str| render_labels(POOL.labels, &[s]);
        let mut earlier = Samples::new();
        let pool = earlier.entry(POOL.name).or_default();
        pool.insert(status("active"), 2.0);
        pool.insert(status("destroying"), 1.0);
        let mut now = Samples::new();
        now.entry(POOL.name)
            .or_default()
            .insert(status("active"), 1.0);
        let merged = merge(earlier, &now);
        assert_eq!(merged[POOL.name].len(), 1);
        assert_eq!(merged[POOL.name][&status("active")], 1.0);
    }
}
