//! `autoscale`: read the load, decide and act (`ops::autoscale`), and
//! record every decision with the store, where the cooldown survives
//! between cron runs: one decision with `--once` (`--dry-run` only shows
//! it), else one every autoscale.interval, serving Prometheus metrics
//! meanwhile. With a `heal:` section, each decision is followed by one
//! heal pass.

use anyhow::{Context as _, Result};
use serde_json::json;

use super::report::{self, Report};
use super::{Context, Failing, waits};
use crate::cli::AutoscaleArgs;
use crate::ops::autoscale::{Acted, Record, history, step};
use crate::ops::heal;
use crate::scaling::autoscale::metric_name;

pub async fn run(ctx: &Context, args: &AutoscaleArgs) -> Result<Report> {
    let policy = ctx.config.autoscale.as_ref().with_context(|| {
        format!(
            "there is no autoscale section in {}; add one with min, max and a target (see doproxy.yml.example)",
            ctx.config.path.display()
        )
    })?;
    if args.history {
        let history = history(ctx).await?;
        let text = history.iter().map(describe).collect();
        return Report::new(text, &history);
    }
    let waits = waits(&args.waits);
    if args.once || args.dry_run {
        let stepped = step(ctx, policy, &waits, args.dry_run).await?;
        let mut text = vec![describe(&stepped.record)];
        let mut json = json!({ "decision": stepped.record });
        let mut failures = Vec::new();
        if let Some(acted) = &stepped.acted {
            let report = match acted {
                Acted::Created(created) => report::created(created)?,
                Acted::Deleted(deletion) => report::deleted(deletion)?,
            };
            text.extend(report.text);
            json["result"] = report.json;
        }
        failures.extend(stepped.failure);
        // After the scaling decision, one heal pass when the heal section asks for it.
        // A failed pass is one more failure: it must not hide the decision's.
        if let Some(heal_policy) = &ctx.config.heal {
            match heal::pass(ctx, heal_policy, &waits, args.dry_run).await {
                Ok(healed) => {
                    let healed = report::healed(&healed)?;
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
    let _metrics = ctx.serve_metrics(args.metrics_listen).await?;
    tracing::info!(
        "autoscaling every {}",
        humantime::format_duration(policy.interval)
    );
    let (mut deciding, mut healing) = (Failing::default(), Failing::default());
    // With a tls section the certificate is kept alongside, as watch and
    // failover do: with the file inventory (no watch), this service is what
    // renews it.
    ctx.keeping_certificate(async {
        loop {
            let started = tokio::time::Instant::now();
            match step(ctx, policy, &waits, false).await {
                Ok(stepped) => {
                    tracing::info!("{}", describe(&stepped.record));
                    if let Some(failure) = stepped.failure {
                        tracing::error!("{failure:#}");
                    }
                    deciding.step(ctx, Ok(())).await;
                }
                // A step a signal cut short says what it left; that ends the service.
                Err(err) if ctx.shutdown.check().is_err() => return Err(err),
                Err(err) => {
                    tracing::error!("autoscale step failed: {err:#}");
                    deciding.step(ctx, Err(&err)).await;
                }
            }
            if let Some(heal_policy) = &ctx.config.heal
                && ctx.shutdown.check().is_ok()
            {
                match heal::pass(ctx, heal_policy, &waits, false).await {
                    Ok(healed) => {
                        report::log_heal(&report::healed(&healed)?);
                        healing.step(ctx, Ok(())).await;
                    }
                    Err(err) if ctx.shutdown.check().is_err() => return Err(err),
                    Err(err) => {
                        tracing::error!("heal pass failed: {err:#}");
                        healing.step(ctx, Err(&err)).await;
                    }
                }
            }
            tokio::select! {
                stopped = ctx.shutdown.signalled() => {
                    tracing::info!("{stopped}; no decision is under way");
                    return Report::stopped(&stopped);
                }
                () = tokio::time::sleep(policy.interval.saturating_sub(started.elapsed())) => {}
            }
        }
    })
    .await
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
    if let Some(window) = &record.window {
        line.push_str(&format!(" [{window}]"));
    }
    if record.dry_run {
        line.push_str(" [dry run]");
    }
    if let Some(outcome) = &record.outcome {
        line.push_str(&format!(": {outcome}"));
    }
    line
}
