//! `delete`: take droplets out of HAProxy, then destroy them.
//!
//! The order matters: a droplet still in the config when it dies turns into
//! failed requests. Entries are marked `destroying` (and so leave the config)
//! before the reload; only a confirmed destroy removes them, so a failure
//! leaves a record the next `delete` or `reconcile` completes.

use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use serde_json::json;

use super::{App, Report};
use crate::cli::DeleteArgs;
use crate::digitalocean::Deleted;
use crate::haproxy::{self, Reload};
use crate::inventory::{Entry, Status};
use crate::scaling::{Selector, select};

/// What a delete asks for; `scale` builds one too.
pub struct DeleteOptions {
    pub selector: Selector,
    pub drain_timeout: Duration,
    pub lock_timeout: Duration,
    pub allow_empty: bool,
}

pub async fn run(app: &App, args: &DeleteArgs) -> Result<Report> {
    let selector = if !args.id.is_empty() {
        Selector::Ids(args.id.clone())
    } else if !args.name.is_empty() {
        Selector::Names(args.name.clone())
    } else {
        Selector::Lines(args.lines.clone())
    };
    let options = DeleteOptions {
        selector,
        drain_timeout: args.drain_timeout,
        lock_timeout: args.lock.lock_timeout,
        allow_empty: args.allow_empty,
    };
    delete(app, &options).await
}

pub async fn delete(app: &App, options: &DeleteOptions) -> Result<Report> {
    let api = app.api()?;
    let lock = app.store.lock(options.lock_timeout).await?;
    let mut entries = app.entries(Some(&lock)).await?;
    let targets = select(&entries, &options.selector)?;
    let serving_after = entries
        .iter()
        .enumerate()
        .filter(|(i, e)| e.is_serving() && !targets.contains(i))
        .count();
    if serving_after == 0 && entries.iter().any(Entry::is_serving) && !options.allow_empty {
        bail!(
            "this would remove the last server from HAProxy, which would then answer every request with 503; add --allow-empty to delete it on purpose"
        );
    }
    let mut ids: Vec<u64> = targets.iter().map(|&i| entries[i].id).collect();
    // Deletes an earlier run could not finish are completed along the way.
    let unfinished: Vec<&Entry> = entries
        .iter()
        .filter(|e| e.status == Status::Destroying && !ids.contains(&e.id))
        .collect();
    for entry in unfinished {
        tracing::info!(
            "completing the unfinished delete of droplet {} ({})",
            entry.id,
            entry.name
        );
        ids.push(entry.id);
    }

    let before: Vec<Status> = targets.iter().map(|&i| entries[i].status).collect();
    for &i in &targets {
        entries[i].status = Status::Destroying;
    }
    app.store.save(&entries, &lock).await?;
    let leave_haproxy = async {
        haproxy::drain(&app.config, &ids, options.drain_timeout).await?;
        haproxy::apply(
            &app.config,
            &entries,
            Reload::IfChanged,
            options.allow_empty,
        )
        .await
    };
    let applied = match leave_haproxy.await {
        Ok(applied) => applied,
        Err(err) => {
            haproxy::undrain(&app.config, &ids);
            for (&i, status) in targets.iter().zip(before) {
                entries[i].status = status;
            }
            app.store.save(&entries, &lock).await?;
            return Err(err.context("nothing was deleted"));
        }
    };

    let mut failures = Vec::new();
    let mut deleted: Vec<Entry> = Vec::new();
    lock.check().await?;
    for (id, outcome) in api.delete_droplets(&ids).await {
        match outcome {
            Ok(outcome) => {
                if outcome == Deleted::AlreadyGone {
                    tracing::info!("droplet {id} was already gone");
                }
                let position = entries
                    .iter()
                    .position(|e| e.id == id)
                    .expect("target is in the inventory");
                deleted.push(entries.remove(position));
            }
            Err(err) => failures.push(format!("{id}: {err}")),
        }
    }
    app.store.save(&entries, &lock).await?;

    let text: Vec<String> = deleted
        .iter()
        .map(|e| format!("Success: {} deleted and removed from backend.", e.id))
        .collect();
    let report = Report::new(text, json!({ "deleted": deleted, "haproxy": applied }))?;
    if failures.is_empty() {
        return Ok(report);
    }
    Ok(report.failed(anyhow!(
        "could not destroy droplet {}; it is out of HAProxy and stays in the inventory as {}, so run doproxy delete --id again",
        failures.join("; droplet "),
        Status::Destroying
    )))
}
