//! `rollout`: replace the pool's droplets with new ones built from the
//! options as they are now, step by step, never letting serving capacity
//! drop below the floor (`--min-healthy`); see `ops::rollout`. A rollout
//! stopped at any point resumes on the next run. `--dry-run` shows what
//! would be replaced, and how, without changing anything.

use anyhow::Result;
use serde_json::json;

use super::{Context, Report, waits};
use crate::cli::RolloutArgs;
use crate::ops::rollout::{Request, RolledOut, preview, roll_out};
use crate::scaling::rollout::StepSize;

pub async fn run(ctx: &Context, args: &RolloutArgs) -> Result<Report> {
    let request = Request {
        step: match (args.batch, args.max_surge) {
            (_, Some(surge)) => StepSize::MaxSurge(surge as usize),
            (batch, None) => StepSize::Batch(batch.unwrap_or(1) as usize),
        },
        min_healthy: args.min_healthy,
        only_stale: args.only_stale,
        max_unready: args.max_unready,
        waits: waits(&args.waits),
    };
    if args.dry_run {
        return dry_run(ctx, &request).await;
    }
    let outcome = roll_out(ctx, &request).await?;
    if outcome.nothing_to_do {
        let text = if args.only_stale {
            "Nothing to roll out: every droplet matches droplet_options."
        } else {
            "Nothing to roll out: the pool has no droplet to replace."
        };
        return Report::new(
            vec![text.to_string()],
            json!({ "replaced": [], "unready": [], "floor": outcome.floor, "resumed": false }),
        );
    }
    summary(outcome)
}

/// The final report: one line per replacement and a summary.
fn summary(outcome: RolledOut) -> Result<Report> {
    let replaced = &outcome.settled.replaced;
    let mut text: Vec<String> = replaced
        .iter()
        .map(|r| format!("Replaced {} with {}.", r.old, r.new))
        .collect();
    if outcome.done {
        text.push(format!(
            "Rollout done: {} droplet(s) replaced in {}, keeping at least {} serving.",
            replaced.len(),
            humantime::format_duration(std::time::Duration::from_secs(
                outcome.seconds.round() as u64
            )),
            outcome.floor
        ));
    }
    let report = Report::new(
        text,
        json!({
            "replaced": replaced,
            "unready": outcome.settled.unready,
            "floor": outcome.floor,
            "seconds": (outcome.seconds * 10.0).round() / 10.0,
            "resumed": outcome.resumed,
            "done": outcome.done,
        }),
    )?;
    Ok(report.failed_if(outcome.stop))
}

/// What a rollout would replace now, and how, without changing anything.
async fn dry_run(ctx: &Context, request: &Request) -> Result<Report> {
    let preview = preview(ctx, request).await?;
    let rollout = &preview.rollout;
    let per_step = match rollout.step {
        StepSize::Batch(n) => format!("{n} at a time"),
        StepSize::MaxSurge(n) => format!("at most {n} beyond the pool's size"),
    };
    let mut text = vec![if preview.resuming {
        format!(
            "A rollout started at {} is under way: {} droplet(s) left, {per_step}, keeping at least {} serving; doproxy rollout continues it.",
            rollout.started_at,
            preview.todo.len(),
            rollout.floor
        )
    } else {
        format!(
            "Would replace {} droplet(s), {per_step}, keeping at least {} serving (--min-healthy {}%).",
            preview.todo.len(),
            rollout.floor,
            rollout.min_healthy
        )
    }];
    let mut planned = Vec::new();
    for (entry, why) in &preview.replace {
        text.push(format!("  {} {}: {why}", entry.id, entry.name));
        planned.push(json!({ "id": entry.id, "name": entry.name, "why": why }));
    }
    let under_way: Vec<_> = preview
        .under_way
        .iter()
        .map(|(old, new)| json!({ "old": old, "new": new }))
        .collect();
    Report::new(
        text,
        json!({
            "dry_run": true,
            "resuming": preview.resuming,
            "floor": rollout.floor,
            "step": rollout.step,
            "replace": planned,
            "under_way": under_way,
        }),
    )
}
