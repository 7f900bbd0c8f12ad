//! `reconcile`: find where the inventory and DigitalOcean disagree, and with
//! `--apply` make them agree, so nothing a crash or a failed call left behind
//! keeps costing money or serving traffic unseen.

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::json;

use super::{App, Report};
use crate::cli::ReconcileArgs;
use crate::digitalocean::{ApiError, Client, Droplet};
use crate::haproxy::{self, Reload};
use crate::inventory::{Entry, Status, drift};
use crate::readiness;

/// How long reconcile gives booted droplets to pass the health check.
const READY_PASS: Duration = Duration::from_secs(10);

pub async fn run(app: &App, args: &ReconcileArgs) -> Result<Report> {
    let api = app.api()?;
    let tag = app.config.pool_tag();
    let lock = if args.apply {
        Some(app.store.lock(args.lock.lock_timeout).await?)
    } else {
        None
    };
    let mut entries = app.entries(lock.as_ref()).await?;
    let existing = existing_droplets(api, tag, &entries).await?;
    let drift = drift(&entries, &existing, tag);
    let mut text = drift.lines();
    if drift.is_empty() {
        text.push("No drift: the inventory matches DigitalOcean.".to_string());
    }
    if !args.apply || drift.is_empty() {
        return Report::new(text, json!({ "drift": drift, "applied": false }));
    }

    let lock = lock.as_ref().expect("--apply holds the lock");
    entries.retain(|e| !drift.gone.iter().any(|g| g.id == e.id));
    for change in &drift.changed {
        if let Some(entry) = entries.iter_mut().find(|e| e.id == change.after.id) {
            *entry = change.after.clone();
        }
    }
    let mut booted: Vec<(u64, Ipv4Addr)> = drift
        .booted
        .iter()
        .filter_map(|e| Some((e.id, e.private_ip?)))
        .collect();
    if !args.prune {
        // Adopted droplets join HAProxy only once ready, like new ones.
        for orphan in &drift.orphans {
            let mut entry = orphan.clone();
            if let (Status::Active, Some(ip)) = (entry.status, entry.private_ip) {
                entry.status = Status::New;
                booted.push((entry.id, ip));
            }
            entries.push(entry);
        }
    }
    // One short pass: a droplet still starting is simply checked next time.
    let check = &app.config.health_check;
    let ready =
        readiness::wait_until_ready(check, &booted, check.ready_timeout.min(READY_PASS)).await?;
    for entry in entries
        .iter_mut()
        .filter(|e| booted.iter().any(|(id, _)| *id == e.id))
    {
        entry.status = if ready.contains(&entry.id) {
            Status::Active
        } else {
            Status::Unready
        };
    }
    if !drift.untagged.is_empty() {
        let ids: Vec<u64> = drift.untagged.iter().map(|e| e.id).collect();
        lock.check().await?;
        api.tag_droplets(tag, &ids)
            .await
            .context("cannot tag the untagged droplets")?;
    }
    app.store.save(&entries, lock).await?;
    let applied = haproxy::apply(&app.config, &entries, Reload::IfChanged, false).await?;

    let mut doomed: Vec<u64> = drift.unfinished_destroys.iter().map(|e| e.id).collect();
    if args.prune {
        doomed.extend(drift.orphans.iter().map(|e| e.id));
    }
    let mut failures = Vec::new();
    lock.check().await?;
    for (id, outcome) in api.delete_droplets(&doomed).await {
        match outcome {
            Ok(_) => entries.retain(|e| e.id != id),
            Err(err) => failures.push(format!("{id}: {err}")),
        }
    }
    app.store.save(&entries, lock).await?;

    text.push(format!(
        "Fixed: dropped {}, {} {}, updated {}, added {} ready, destroyed {}, tagged {}.",
        drift.gone.len(),
        if args.prune { "pruned" } else { "adopted" },
        drift.orphans.len(),
        drift.changed.len(),
        ready.len(),
        doomed.len() - failures.len(),
        drift.untagged.len()
    ));
    let report = Report::new(
        text,
        json!({ "drift": drift, "applied": true, "haproxy": applied }),
    )?;
    if failures.is_empty() {
        return Ok(report);
    }
    Ok(report.failed(anyhow::anyhow!(
        "could not destroy droplet {}; run doproxy reconcile --apply again",
        failures.join("; droplet ")
    )))
}

/// The pool's tagged droplets (one paginated list), plus inventory droplets
/// missing from that list but still existing (untagged ones, from the Ruby
/// DOProxy), each confirmed by ID so none is taken for gone by mistake.
async fn existing_droplets(api: &Client, tag: &str, entries: &[Entry]) -> Result<Vec<Droplet>> {
    let mut existing = api
        .list_droplets(tag)
        .await
        .context("cannot list the pool's droplets")?;
    let missing: Vec<u64> = entries
        .iter()
        .map(|e| e.id)
        .filter(|id| !existing.iter().any(|d| d.id == *id))
        .collect();
    for id in missing {
        match api.get_droplet(id).await {
            Ok(droplet) => existing.push(droplet),
            Err(ApiError::NotFound) => {}
            Err(err) => {
                return Err(anyhow::Error::new(err).context(format!("cannot look up droplet {id}")));
            }
        }
    }
    Ok(existing)
}
