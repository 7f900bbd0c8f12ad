//! `autoscale`: read the load, decide (scaling::autoscale::decide), act
//! through the same create and delete paths as `scale`, and record every
//! decision, and how acting on it went, with the store, where the cooldown
//! survives between cron runs. With a `heal:` section, each decision is
//! followed by one `heal` pass. Droplets still booting count toward the pool,
//! and create works out under the lock how many the pool still lacks, so a
//! decision taken while earlier ones boot never goes past `max`.

use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::create::{self, Count, CreateOptions};
use super::delete::{self, DeleteOptions};
use super::heal;
use super::{App, Report};
use crate::cli::AutoscaleArgs;
use crate::haproxy;
use crate::model::Entry;
use crate::scaling::autoscale::{
    Action, Decision, Metric, Policy, PoolSize, Reading, decide, metric_name,
};
use crate::scaling::rollout::pool_members;
use crate::scaling::{Pick, Selector};
use crate::text::Printable;

/// Where the state lives in the store.
const STATE: &str = "autoscale";
/// Decisions kept in the history.
const HISTORY: usize = 500;
/// CPU is averaged over this window; older samples are stale.
const CPU_WINDOW: Duration = Duration::from_secs(300);

/// What survives between runs.
#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    /// When the pool was last scaled (in or out), for the cooldown.
    last_scaled: Option<u64>,
    history: Vec<Record>,
}

/// One decision, as `autoscale --history` shows it. Kept in the store,
/// where whoever can write it can write text: read back as `Printable`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    at: Printable,
    readings: Vec<Reading>,
    #[serde(flatten)]
    decision: Decision,
    dry_run: bool,
    /// What acting on it gave: "done", or the error.
    #[serde(skip_serializing_if = "Option::is_none")]
    outcome: Option<Printable>,
}

pub async fn run(app: &App, args: &AutoscaleArgs) -> Result<Report> {
    let policy = app.config.autoscale.as_ref().with_context(|| {
        format!(
            "there is no autoscale section in {}; add one with min, max and a target (see doproxy.yml.example)",
            app.config.path.display()
        )
    })?;
    if args.history {
        let state = app.load_meta::<State>(STATE).await?;
        let text = state.history.iter().map(describe).collect();
        return Report::new(text, &state.history);
    }
    if args.once || args.dry_run {
        let (record, report) = step(app, policy, args).await?;
        let mut text = vec![describe(&record)];
        let mut json = json!({ "decision": record });
        let mut failures = Vec::new();
        if let Some(report) = report {
            text.extend(report.text);
            json["result"] = report.json;
            failures.extend(report.failure);
        }
        // After the scaling decision, one heal pass when the heal section asks for it.
        // A failed pass is one more failure: it must not hide the decision's.
        if let Some(heal_policy) = &app.config.heal {
            match heal::pass(app, heal_policy, &args.waits, args.dry_run).await {
                Ok(healed) => {
                    text.extend(healed.text.iter().map(|line| format!("heal: {line}")));
                    json["heal"] = healed.json;
                    failures.extend(healed.failure);
                }
                Err(err) => failures.push(err.context("the heal pass failed")),
            }
        }
        let report = Report::new(text, json)?;
        return Ok(match failures.len() {
            0 => report,
            1 => report.failed(failures.remove(0)),
            _ => {
                let all: Vec<String> = failures.iter().map(|f| format!("{f:#}")).collect();
                report.failed(anyhow::anyhow!("{}", all.join("; ")))
            }
        });
    }
    let settings = crate::metrics::Settings {
        listen: args.metrics_listen.or(app.config.metrics.listen),
        ..app.config.metrics.clone()
    };
    let _metrics = crate::metrics::serve(&settings, &app.shutdown).await?;
    tracing::info!(
        "autoscaling every {}",
        humantime::format_duration(policy.interval)
    );
    loop {
        let started = tokio::time::Instant::now();
        match step(app, policy, args).await {
            Ok((record, report)) => {
                tracing::info!("{}", describe(&record));
                if let Some(failure) = report.and_then(|r| r.failure) {
                    tracing::error!("{failure:#}");
                }
            }
            // A step a signal cut short says what it left; that ends the service.
            Err(err) if app.shutdown.check().is_err() => return Err(err),
            Err(err) => tracing::error!("autoscale step failed: {err:#}"),
        }
        if let Some(heal_policy) = &app.config.heal
            && app.shutdown.check().is_ok()
        {
            match heal::pass(app, heal_policy, &args.waits, false).await {
                Ok(report) => heal::log(&report),
                Err(err) if app.shutdown.check().is_err() => return Err(err),
                Err(err) => tracing::error!("heal pass failed: {err:#}"),
            }
        }
        tokio::select! {
            stopped = app.shutdown.signalled() => {
                tracing::info!("{stopped}; no decision is under way");
                return Report::stopped(&stopped);
            }
            () = tokio::time::sleep(policy.interval.saturating_sub(started.elapsed())) => {}
        }
    }
}

/// One decision: measure, decide, act (unless a dry run), record.
async fn step(
    app: &App,
    policy: &Policy,
    args: &AutoscaleArgs,
) -> Result<(Record, Option<Report>)> {
    // One decision at a time on this proxy (cron and a service may overlap).
    let _deciding = app
        .one_at_a_time("autoscale", args.waits.lock.lock_timeout)
        .await?;
    let entries = app.entries(None).await?;
    crate::ops::apply::count_pool(&entries);
    let serving: Vec<Entry> = entries.iter().filter(|e| e.is_serving()).cloned().collect();
    // A replacement under way (rollout, heal) and the droplet it replaces
    // count once: they are one droplet of the pool.
    let pool = PoolSize {
        total: pool_members(&entries).count(),
        serving: serving.len(),
    };
    let readings = read_metrics(app, policy, &serving).await;
    let now = SystemTime::now();
    let state = app.load_meta::<State>(STATE).await?;
    let last_scaled = state
        .last_scaled
        .and_then(|secs| SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs)));
    let decision = decide(policy, pool, &readings, last_scaled, now);
    crate::metrics::autoscale(
        decision.current,
        decision.desired,
        decision.target,
        decision.action.as_str(),
    );
    let mut record = Record {
        at: humantime::format_rfc3339_seconds(now).to_string().into(),
        readings,
        decision: decision.clone(),
        dry_run: args.dry_run,
        outcome: None,
    };
    if args.dry_run || decision.action == Action::Hold {
        save_record(app, &record, false).await?;
        return Ok((record, None));
    }
    let report = act(app, &decision, args).await;
    record.outcome = Some(Printable::new(&match &report {
        Ok(Report { failure: None, .. }) => "done".to_string(),
        Ok(Report {
            failure: Some(err), ..
        }) => format!("{err:#}"),
        Err(err) => format!("{err:#}"),
    }));
    // Recorded however acting went, failures and interruptions included;
    // a record that cannot be saved never hides what acting did.
    let Err(unsaved) = save_record(app, &record, true).await else {
        return Ok((record, Some(report?)));
    };
    let unsaved = format!("the decision could not be recorded ({unsaved:#})");
    let report = match report {
        Err(err) => return Err(err.context(unsaved)),
        Ok(mut report) => {
            let failure = match report.failure.take() {
                Some(failure) => failure.context(unsaved),
                None => anyhow::anyhow!(
                    "{unsaved}; the next decision may scale again sooner than the cooldown allows"
                ),
            };
            report.failed(failure)
        }
    };
    Ok((record, Some(report)))
}

/// Scales out with `create`, or in with `delete` (drain first, droplets
/// that serve nothing before the newest), each working out under the lock
/// what the pool as it is then needs to reach the target.
async fn act(app: &App, decision: &Decision, args: &AutoscaleArgs) -> Result<Report> {
    match decision.action {
        Action::ScaleOut => {
            let options = CreateOptions {
                count: Count::UpTo(decision.target),
                timeout: args.waits.timeout,
                lock_timeout: args.waits.lock.lock_timeout,
                ready_wait: true,
                destroy_unready: true,
                // The policy's max bounds it, and no one is there to ask.
                at_most: usize::MAX,
            };
            create::create(app, &options).await
        }
        Action::ScaleIn => {
            let options = DeleteOptions {
                selector: Selector::Surplus {
                    keep: decision.target,
                    pick: Pick::Newest,
                },
                drain_timeout: args.waits.drain_timeout,
                lock_timeout: args.waits.lock.lock_timeout,
                allow_empty: decision.target == 0,
            };
            delete::delete(app, &options).await
        }
        Action::Hold => unreachable!("holding does nothing"),
    }
}

/// Every configured metric, averaged per serving droplet; a metric that
/// cannot be read has no value and says why.
async fn read_metrics(app: &App, policy: &Policy, serving: &[Entry]) -> Vec<Reading> {
    let ids: Vec<u64> = serving.iter().map(|e| e.id).collect();
    let needs_haproxy = policy.targets.iter().any(|(m, _)| *m != Metric::CpuPercent);
    let load = if needs_haproxy && !ids.is_empty() {
        Some(haproxy::pool_load(&app.config.haproxy, &ids).await)
    } else {
        None
    };
    let mut readings = Vec::new();
    for &(metric, target) in &policy.targets {
        let value: Result<f64> = if ids.is_empty() {
            Err(anyhow::anyhow!("no droplet serves"))
        } else {
            let n = ids.len() as f64;
            match (metric, &load) {
                (Metric::CpuPercent, _) => cpu_percent(app, &ids).await,
                (_, Some(Err(err))) => Err(anyhow::anyhow!("{err:#}")),
                (Metric::SessionsPerServer, Some(Ok(load))) => Ok(load.sessions as f64 / n),
                (Metric::RequestRatePerServer, Some(Ok(load))) => Ok(load.rate as f64 / n),
                (Metric::QueuedPerServer, Some(Ok(load))) => Ok(load.queued as f64 / n),
                (_, None) => unreachable!("HAProxy is read when a HAProxy metric is configured"),
            }
        };
        readings.push(match value {
            Ok(value) => Reading {
                metric,
                target,
                value: Some(value),
                problem: None,
            },
            Err(err) => Reading {
                metric,
                target,
                value: None,
                problem: Some(format!("{err:#}").into()),
            },
        });
    }
    readings
}

/// Mean CPU utilization of the droplets that report fresh data.
async fn cpu_percent(app: &App, ids: &[u64]) -> Result<f64> {
    let api = app.api()?;
    let now = SystemTime::now();
    let mut samples = Vec::new();
    for &id in ids {
        if let Some((percent, newest)) = api.droplet_cpu(id, CPU_WINDOW, now).await?
            && now.duration_since(newest).unwrap_or_default() <= CPU_WINDOW
        {
            samples.push(percent);
        }
    }
    anyhow::ensure!(
        !samples.is_empty(),
        "no droplet reported CPU in the last {}",
        humantime::format_duration(CPU_WINDOW)
    );
    Ok(samples.iter().sum::<f64>() / samples.len() as f64)
}

/// Appends `record` to the history (and restarts the cooldown if the pool
/// was scaled), under the store's lock.
async fn save_record(app: &App, record: &Record, scaled: bool) -> Result<()> {
    let lock = app.lock(Duration::from_secs(300)).await?;
    let mut state = app.load_meta::<State>(STATE).await?;
    if scaled {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        state.last_scaled = Some(now.as_secs());
    }
    state.history.push(record.clone());
    let excess = state.history.len().saturating_sub(HISTORY);
    state.history.drain(..excess);
    app.save_meta(STATE, &state, &lock).await?;
    lock.release().await;
    Ok(())
}

/// `2026-11-28T21:00:00Z scale_out 1 -> 3 (sessions_per_server 6.0/2) the metrics ask for more`
fn describe(record: &Record) -> String {
    let readings: Vec<String> = record
        .readings
        .iter()
        .map(|r| match (r.value, &r.problem) {
            (Some(value), _) => format!("{} {value:.1}/{}", metric_name(r.metric), r.target),
            (None, problem) => format!(
                "{} -/{}: {}",
                metric_name(r.metric),
                r.target,
                problem.as_deref().unwrap_or("no data")
            ),
        })
        .collect();
    let d = &record.decision;
    let action = d.action.as_str();
    let mut line = format!(
        "{} {action} {} -> {} (desired {}; {}) {}",
        record.at,
        d.current,
        d.target,
        d.desired,
        readings.join(", "),
        d.reason
    );
    if record.dry_run {
        line.push_str(" [dry run]");
    }
    if let Some(outcome) = &record.outcome {
        line.push_str(&format!(": {outcome}"));
    }
    line
}
