//! `reconcile`: find where the inventory, DigitalOcean and the running
//! HAProxy disagree, and with `--apply` make them agree, so nothing a crash
//! or a failed call left behind keeps costing money or serving traffic
//! unseen.
//!
//! Droplets carrying the pool's tag but not named like the pool's
//! (`<hostname_prefix>-<n>`) belong to someone else sharing the tag: they
//! are reported as foreign and never adopted or pruned.

use std::io::{IsTerminal, Write};
use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use serde_json::json;

use super::delete::{self, Leaving, Retire};
use super::{App, Report};
use crate::cli::ReconcileArgs;
use crate::haproxy;
use crate::inventory::{Entry, Status, drift, is_pool_name};
use crate::readiness;

/// How long reconcile gives booted droplets to pass the health check.
const READY_PASS: Duration = Duration::from_secs(10);

pub async fn run(app: &App, args: &ReconcileArgs) -> Result<Report> {
    let api = app.api()?;
    let tag = app.config.pool_tag();
    let lock = if args.apply {
        Some(app.lock(args.lock.lock_timeout).await?)
    } else {
        None
    };
    let mut entries = app.entries(lock.as_ref()).await?;
    let known: Vec<u64> = entries.iter().map(|e| e.id).collect();
    let existing = api
        .list_pool(tag, &known)
        .await
        .context("cannot list the pool's droplets")?;
    let mut drift = drift(&entries, &existing, tag);
    let prefix = app.config.hostname_prefix.as_deref();
    let foreign = take_foreign(&mut drift.orphans, prefix);
    let haproxy = haproxy::divergence(&app.config, &entries)
        .await
        .unwrap_or_else(|err| {
            tracing::warn!("cannot compare HAProxy with the inventory: {err:#}");
            None
        });
    let mut text = drift.lines();
    text.extend(foreign.iter().map(|e| {
        format!(
            "foreign: {} {} carries the pool's tag but is not named {}-<n>, so it is left alone",
            e.id,
            e.name,
            prefix.unwrap_or("<droplet_options.hostname_prefix>")
        )
    }));
    if let Some(reason) = &haproxy {
        text.push(format!("haproxy: {reason}"));
    }
    let agree = drift.is_empty() && haproxy.is_none();
    if agree {
        text.push("No drift: the inventory matches DigitalOcean.".to_string());
    }
    let mut drift_json = serde_json::to_value(&drift)?;
    drift_json["foreign"] = serde_json::to_value(&foreign)?;
    drift_json["haproxy"] = haproxy.clone().into();
    if agree {
        crate::metrics::reconciled();
    }
    if !args.apply || agree {
        return Report::new(text, json!({ "drift": drift_json, "applied": false }));
    }

    let lock = lock.as_ref().expect("--apply holds the lock");
    if args.prune && !drift.orphans.is_empty() {
        let doomed: Vec<String> = drift
            .orphans
            .iter()
            .map(|e| format!("to prune: {} {}", e.id, e.name))
            .collect();
        let go_ahead = args.yes || confirmed(&doomed).await?;
        text.extend(doomed);
        if !go_ahead {
            let report = Report::new(text, json!({ "drift": drift_json, "applied": false }))?;
            return Ok(report.failed(anyhow!(
                "reconcile --prune would destroy the {} droplet(s) listed above and was not confirmed, so nothing was changed; add --yes to go ahead",
                drift.orphans.len()
            )));
        }
    }
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
    let ready = tokio::select! {
        stopped = app.shutdown.signalled() => {
            return Err(anyhow::Error::new(stopped).context(
                "reconcile changed nothing; run doproxy reconcile --apply again",
            ));
        }
        ready = readiness::wait_until_ready(check, &booted, check.ready_timeout.min(READY_PASS)) => ready?,
    };
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

    // Unfinished deletes, and pruned orphans, leave the way a delete does:
    // drained first, then out of HAProxy, then destroyed.
    let mut leaving: Vec<Leaving> = drift
        .unfinished_destroys
        .iter()
        .map(Leaving::listed)
        .collect();
    if args.prune {
        leaving.extend(drift.orphans.iter().map(|orphan| Leaving {
            entry: orphan.clone(),
            before: None,
        }));
    }
    let how = Retire {
        drain_timeout: args.drain_timeout,
        allow_empty: false,
        retry: "doproxy reconcile --apply",
    };
    let retired = delete::retire(app, lock, &mut entries, &leaving, &how).await?;

    text.push(format!(
        "Fixed: dropped {}, {} {}, updated {}, added {} ready, destroyed {}, tagged {}.",
        drift.gone.len(),
        if args.prune { "pruned" } else { "adopted" },
        drift.orphans.len(),
        drift.changed.len(),
        ready.len(),
        retired.destroyed.len(),
        drift.untagged.len()
    ));
    if haproxy.is_some() {
        let applied = &retired.applied;
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
        json!({ "drift": drift_json, "applied": true, "haproxy": retired.applied }),
    )?;
    if retired.failures.is_empty() {
        crate::metrics::reconciled();
        return Ok(report);
    }
    Ok(report.failed(anyhow!(
        "could not destroy droplet {}; run doproxy reconcile --apply again",
        retired.failures.join("; droplet ")
    )))
}

/// Asks on the terminal whether to destroy the droplets `doomed` lists;
/// false without a terminal to ask on.
async fn confirmed(doomed: &[String]) -> Result<bool> {
    if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
        return Ok(false);
    }
    let question = format!(
        "{}\nDestroy these {} droplet(s)? [y/N] ",
        doomed.join("\n"),
        doomed.len()
    );
    let answer = tokio::task::spawn_blocking(move || {
        let mut stderr = std::io::stderr();
        stderr.write_all(question.as_bytes())?;
        stderr.flush()?;
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        Ok::<_, std::io::Error>(answer)
    })
    .await
    .context("cannot ask on the terminal")?
    .context("cannot ask on the terminal")?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

/// Takes the orphans not named like this pool's droplets out of `orphans`
/// and returns them; without a hostname_prefix no name is the pool's.
fn take_foreign(orphans: &mut Vec<Entry>, prefix: Option<&str>) -> Vec<Entry> {
    let (own, foreign) = orphans
        .drain(..)
        .partition(|e| prefix.is_some_and(|prefix| is_pool_name(&e.name, prefix)));
    *orphans = own;
    foreign
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn foreign_orphans_are_set_apart() {
        let entry = Entry::named;
        let mut orphans = vec![entry(1, "web-3"), entry(2, "shop-0"), entry(3, "web-x")];
        let foreign = take_foreign(&mut orphans, Some("web"));
        assert_eq!(orphans, vec![entry(1, "web-3")]);
        assert_eq!(foreign, vec![entry(2, "shop-0"), entry(3, "web-x")]);
        let foreign = take_foreign(&mut orphans, None);
        assert_eq!((orphans.len(), foreign.len()), (0, 1));
    }
}
