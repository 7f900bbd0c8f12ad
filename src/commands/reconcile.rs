//! `reconcile`: find where the inventory, DigitalOcean and the running
//! HAProxy disagree, and with `--apply` make them agree (`ops::reconcile`),
//! so nothing a crash or a failed call left behind keeps costing money or
//! serving traffic unseen. `--prune` destroys orphans instead of adopting
//! them, after a yes asked here (or `--yes`).

use anyhow::{Result, anyhow};
use serde_json::json;

use super::{Context, Report, confirmed};
use crate::cli::ReconcileArgs;
use crate::ops::reconcile::{Options, prune_lines, reconcile};

/// What `--exit-code` exits with when drift was found: not 1 (a failure)
/// nor 2 (a usage error, as clap exits).
const DRIFT_FOUND: u8 = 3;

pub async fn run(ctx: &Context, args: &ReconcileArgs) -> Result<Report> {
    let options = Options {
        apply: args.apply,
        prune: args.prune,
        yes: args.yes,
        timeout: args.timeout,
        drain_timeout: args.drain_timeout,
        lock_timeout: args.lock.lock_timeout,
    };
    let found = reconcile(ctx, &options, confirmed).await?;
    let drift = &found.drift;
    let prefix = ctx.config.droplets.hostname_prefix.as_deref();
    let mut text = drift.lines();
    text.extend(found.foreign.iter().map(|e| {
        format!(
            "foreign: {} {} carries the pool's tag but is not named {}-<n>, so it is left alone",
            e.id,
            e.name,
            prefix.unwrap_or("<droplet_options.hostname_prefix>")
        )
    }));
    if let Some(reason) = &found.haproxy {
        text.push(format!("haproxy: {reason}"));
    }
    let settle = ctx.settle_not_the_pools();
    text.extend(
        found
            .not_the_pools
            .iter()
            .map(|(_, why)| format!("not the pool's: {why}; {settle}")),
    );
    let agree = found.agrees();
    if found.settled() {
        text.push("No drift: the inventory matches DigitalOcean.".to_string());
    }
    let mut drift_json = serde_json::to_value(drift)?;
    drift_json["foreign"] = serde_json::to_value(&found.foreign)?;
    drift_json["haproxy"] = found.haproxy.clone().into();
    drift_json["not_the_pools"] = found
        .not_the_pools
        .iter()
        .map(|(id, why)| json!({ "id": id, "why": why }))
        .collect();
    let exit_code = if args.exit_code && !found.settled() {
        DRIFT_FOUND
    } else {
        0
    };
    if !args.apply || agree {
        return Ok(
            Report::new(text, json!({ "drift": drift_json, "applied": false }))?
                .exiting_with(exit_code),
        );
    }

    if args.prune {
        text.extend(prune_lines(&drift.orphans));
    }
    let Some(fixed) = &found.fixed else {
        let report = Report::new(text, json!({ "drift": drift_json, "applied": false }))?;
        return Ok(report.failed(anyhow!(
            "reconcile --prune would destroy the {} droplet(s) listed above and was not confirmed, so nothing was changed; add --yes to go ahead",
            drift.orphans.len()
        )));
    };
    text.push(format!(
        "Fixed: dropped {}, {} {}, updated {}, added {} ready, destroyed {}, tagged {}.",
        drift.gone.len(),
        if args.prune { "pruned" } else { "adopted" },
        drift.orphans.len(),
        drift.changed.len(),
        fixed.ready,
        fixed.destroyed,
        drift.untagged.len()
    ));
    if found.haproxy.is_some() {
        let applied = &fixed.applied;
        if applied.reloaded {
            text.push("Fixed: HAProxy reloaded with the inventory's servers.".to_string());
        } else if applied.runtime_updated {
            text.push(
                "Fixed: HAProxy runs the inventory's servers, changed through its runtime API."
                    .to_string(),
            );
        }
    }
    let report = Report::new(
        text,
        json!({ "drift": drift_json, "applied": true, "haproxy": fixed.applied }),
    )?
    .exiting_with(exit_code);
    if fixed.failures.is_empty() {
        return Ok(report);
    }
    Ok(report.failed(anyhow!(
        "could not destroy droplet {}; run doproxy reconcile --apply again",
        fixed.failures.join("; droplet ")
    )))
}
