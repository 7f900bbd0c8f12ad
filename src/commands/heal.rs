//! `heal`: replace droplets that died after joining the pool — DOWN in
//! HAProxy for longer than the grace period, or off or gone at
//! DigitalOcean — the way a rollout replaces them: the new droplet first,
//! then the old one drained and destroyed. Decisions are
//! scaling::heal's (grace, hourly limit, outage guard); its record (since
//! when each droplet is DOWN, replacements of the last hours) lives with
//! the inventory, so passes from cron, the `heal` service and the
//! `autoscale` loop share it.

use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, anyhow};
use serde_json::json;

use super::create;
use super::rollout::{self, Replaced};
use super::{App, Report};
use crate::cli::{HealArgs, ScaleWaits};
use crate::haproxy;
use crate::model::{Entry, Status};
use crate::scaling::heal::{self, Api, Observation, Policy, Record};
use crate::scaling::rollout::pool_members;

/// Where the record lives in the store.
const STATE: &str = "heal";
/// What to run to continue a stopped pass.
const RESUME: &str = "doproxy heal";

pub async fn run(app: &App, args: &HealArgs) -> Result<Report> {
    let policy = app.config.heal.clone().unwrap_or_default();
    if args.once || args.dry_run {
        return pass(app, &policy, &args.waits, args.dry_run).await;
    }
    tracing::info!(
        "healing every {}",
        humantime::format_duration(policy.interval)
    );
    loop {
        let started = tokio::time::Instant::now();
        match pass(app, &policy, &args.waits, false).await {
            Ok(report) => log(&report),
            // A pass a signal cut short says what it left; that ends the service.
            Err(err) if app.shutdown.check().is_err() => return Err(err),
            Err(err) => tracing::error!("heal pass failed: {err:#}"),
        }
        tokio::select! {
            stopped = app.shutdown.signalled() => {
                tracing::info!("{stopped}; no heal pass is under way");
                return Report::stopped(&stopped);
            }
            () = tokio::time::sleep(policy.interval.saturating_sub(started.elapsed())) => {}
        }
    }
}

/// A pass's report on stderr, for the loops of `heal` and `autoscale`.
pub fn log(report: &Report) {
    for line in &report.text {
        tracing::info!("heal: {line}");
    }
    if let Some(failure) = &report.failure {
        tracing::error!("heal: {failure:#}");
    }
}

/// One pass: finishes replacements under way, looks at the pool, decides,
/// records, and replaces (unless a dry run).
pub async fn pass(app: &App, policy: &Policy, waits: &ScaleWaits, dry_run: bool) -> Result<Report> {
    let mut replaced: Vec<Replaced> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    if !dry_run {
        collect(
            rollout::settle(app, waits, RESUME).await?,
            &mut replaced,
            &mut failures,
        );
    }
    let entries = app.entries(None).await?;
    let seen = observe(app, &entries).await?;
    let now = SystemTime::now();
    let before = app.load_meta::<Record>(STATE).await?;
    let mut record = before.clone();
    let mut decision = judge(&mut record, policy, &seen, now);
    if !dry_run && record != before {
        // Again under the lock, from the record as it is then: passes
        // running at once (cron, the heal service, the autoscale loop,
        // another proxy) each count the replacements the others noted.
        // Noted before the create, so a run killed right after still
        // counts toward the hourly limit.
        let lock = app.lock(waits.lock.lock_timeout).await?;
        let mut record = app.load_meta::<Record>(STATE).await?;
        decision = judge(&mut record, policy, &seen, now);
        app.save_meta(STATE, &record, &lock).await?;
        lock.release().await;
    }
    let doomed: Vec<u64> = decision.replace.iter().map(|v| v.id).collect();
    if !dry_run && !doomed.is_empty() {
        let made = create::create_replacements(app, doomed.clone(), waits, RESUME).await?;
        failures.extend(made.failures);
        collect(
            rollout::settle(app, waits, RESUME).await?,
            &mut replaced,
            &mut failures,
        );
    }

    let would = if dry_run {
        "Would replace"
    } else {
        "Replacing"
    };
    let mut text: Vec<String> = decision
        .replace
        .iter()
        .map(|v| format!("{would} {} ({}): {}.", v.id, v.name, v.why))
        .collect();
    text.extend(
        decision
            .waiting
            .iter()
            .map(|v| format!("Waiting on {} ({}): {}.", v.id, v.name, v.why)),
    );
    text.extend(
        replaced
            .iter()
            .map(|r| format!("Replaced {} with {}.", r.old, r.new)),
    );
    if text.is_empty() && decision.outage.is_none() {
        text.push(format!("All {} droplet(s) are healthy.", decision.pool));
    }
    let report = Report::new(
        text,
        json!({ "decision": decision, "replaced": replaced, "dry_run": dry_run }),
    )?;
    let mut problems: Vec<String> = decision.outage.into_iter().collect();
    if !failures.is_empty() {
        problems.push(format!(
            "{}; the droplets they were to replace are left as they are, and the next pass tries again",
            failures.join("; ")
        ));
    }
    if problems.is_empty() {
        return Ok(report);
    }
    Ok(report.failed(anyhow!("{}", problems.join("; "))))
}

/// Brings `record` up to date with `seen`, decides, and notes the
/// replacements decided on.
fn judge(
    record: &mut Record,
    policy: &Policy,
    seen: &[Observation],
    now: SystemTime,
) -> heal::Decision {
    heal::observe(record, seen, now);
    let decision = heal::decide(policy, seen, record, now);
    let doomed: Vec<u64> = decision.replace.iter().map(|v| v.id).collect();
    heal::note_replacements(record, &doomed, now);
    decision
}

fn collect(settled: rollout::Settled, replaced: &mut Vec<Replaced>, failures: &mut Vec<String>) {
    replaced.extend(settled.replaced);
    failures.extend(settled.unready_failures);
    failures.extend(settled.failures);
}

/// The pool's serving droplets (and those the inventory knows as off) as
/// DigitalOcean (one list of the pool's droplets, plus a lookup of each one
/// missing from it) and HAProxy (its admin socket, when set) see them.
async fn observe(app: &App, entries: &[Entry]) -> Result<Vec<Observation>> {
    let api = app.api()?;
    let members: Vec<&Entry> = pool_members(entries)
        .filter(|e| matches!(e.status, Status::Active | Status::Off | Status::Archive))
        .collect();
    let ids: Vec<u64> = members.iter().map(|e| e.id).collect();
    let listed = api
        .list_pool(app.config.pool_tag(), &ids)
        .await
        .context("cannot look up the pool's droplets")?;
    let states = match &app.config.haproxy.socket {
        None => None,
        Some(_) => match haproxy::server_states(&app.config.haproxy).await {
            Ok(states) => Some(states),
            Err(err) => {
                tracing::warn!(
                    "cannot read HAProxy's view ({err:#}); only droplets DigitalOcean reports off or gone are healed this time"
                );
                None
            }
        },
    };
    let mut seen = Vec::new();
    for entry in members {
        let status = listed
            .iter()
            .find(|d| d.id == entry.id)
            .map(|d| d.status.as_str());
        let api = match status {
            None => Api::Gone,
            Some(status @ ("off" | "archive")) => Api::Stopped(status.to_string()),
            Some(_) => Api::Running,
        };
        let server = states.as_ref().and_then(|s| s.get(&entry.id));
        seen.push(Observation {
            id: entry.id,
            name: entry.name.to_string(),
            api,
            haproxy: server.map(|s| s.status.clone()),
            haproxy_for: server.and_then(|s| s.last_change).map(Duration::from_secs),
            being_replaced: entries.iter().any(|e| e.replaces == Some(entry.id)),
        });
    }
    Ok(seen)
}
