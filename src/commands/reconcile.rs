//! `reconcile`: find where the inventory, DigitalOcean and the running
//! HAProxy disagree, and with `--apply` make them agree, so nothing a crash
//! or a failed call left behind keeps costing money or serving traffic
//! unseen.
//!
//! Droplets carrying the pool's tag but not named like the pool's
//! (`<hostname_prefix>-<n>`) belong to someone else sharing the tag: they
//! are reported as foreign and never adopted or pruned. An inventory entry
//! DigitalOcean does not show as the pool's (see `Pool::disowns`) is
//! never tagged or destroyed: `--apply` refuses it before changing
//! anything.
//!
//! `--apply` holds the pool's lock while it changes things, but never while
//! a person answers `--prune`'s question or droplets still boot: it lets the
//! lock go, asks or waits, then surveys again under the lock (and changes
//! nothing if the orphans it asked about are no longer the same).

use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::json;

use super::create;
use super::delete::{self, Leaving, Retire};
use super::{App, Report};
use crate::cli::ReconcileArgs;
use crate::digitalocean::Droplet;
use crate::haproxy;
use crate::inventory::StoreLock;
use crate::model::{Entry, Observed, Status, is_pool_name};
use crate::ops::droplet;
use crate::readiness;
use crate::scaling::{Drift, drift};

/// How long reconcile gives booted droplets to pass the health check.
const READY_PASS: Duration = Duration::from_secs(10);
/// What `--exit-code` exits with when drift was found: not 1 (a failure)
/// nor 2 (a usage error, as clap exits).
const DRIFT_FOUND: u8 = 3;

pub async fn run(app: &App, args: &ReconcileArgs) -> Result<Report> {
    let api = app.api()?;
    let tag = app.config.pool_tag();
    let (lock, found) = match args.apply {
        true => survey_to_apply(app, args).await?,
        false => (None, survey(app, None).await?),
    };
    // --apply lets go of the lock only when pruning was not agreed to.
    let prune_agreed = !args.apply || lock.is_some();
    let Survey {
        mut entries,
        existing,
        drift,
        foreign,
    } = found;
    let prefix = app.config.droplets.hostname_prefix.as_deref();
    let haproxy = haproxy::divergence(&app.config.haproxy, app.frontend_bind().await, &entries)
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
    let exit_code = if args.exit_code && !agree {
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
    if !prune_agreed {
        let report = Report::new(text, json!({ "drift": drift_json, "applied": false }))?;
        return Ok(report.failed(anyhow!(
            "reconcile --prune would destroy the {} droplet(s) listed above and was not confirmed, so nothing was changed; add --yes to go ahead",
            drift.orphans.len()
        )));
    }
    let lock = lock.as_ref().expect("--apply holds the lock");
    // Before anything changes: the inventory may list any droplet of the
    // account, and only the pool's are tagged or destroyed.
    let touched: Vec<u64> = drift
        .untagged
        .iter()
        .chain(&drift.unfinished_destroys)
        .map(|e| e.id)
        .collect();
    let touched: Vec<Droplet> = existing
        .into_iter()
        .filter(|d| touched.contains(&d.id))
        .collect();
    app.refuse_foreign(&touched)
        .await
        .context("reconcile --apply changed nothing")?;
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
    )?
    .exiting_with(exit_code);
    if retired.failures.is_empty() {
        crate::metrics::reconciled();
        return Ok(report);
    }
    Ok(report.failed(anyhow!(
        "could not destroy droplet {}; run doproxy reconcile --apply again",
        retired.failures.join("; droplet ")
    )))
}

/// The inventory, the droplets of the pool that exist, and how they differ.
struct Survey {
    entries: Vec<Entry>,
    existing: Vec<Droplet>,
    drift: Drift,
    /// Orphans not named like the pool's droplets, set apart from `drift`.
    foreign: Vec<Entry>,
}

/// The survey --apply works from, and the lock held since it was made.
/// While droplets still boot, or pruning waits for a yes, the lock is let
/// go; then it is taken again for a fresh survey, whose orphans must be
/// those the question listed. No lock when pruning was not agreed to:
/// nothing will change.
async fn survey_to_apply(app: &App, args: &ReconcileArgs) -> Result<(Option<StoreLock>, Survey)> {
    let lock = app.lock(args.lock.lock_timeout).await?;
    let found = survey(app, Some(&lock)).await?;
    let orphans = &found.drift.orphans;
    let must_ask = args.prune && !args.yes && !orphans.is_empty();
    let (booting, boot_wait) = booting(
        &found.entries,
        orphans,
        &found.existing,
        !args.prune,
        args.timeout,
        SystemTime::now(),
    );
    if booting.is_empty() && !must_ask {
        return Ok((Some(lock), found));
    }
    // Neither an answer nor a boot is awaited holding the pool's lock.
    lock.release().await;
    if must_ask {
        let question = format!("Destroy these {} droplet(s)?", orphans.len());
        if !super::confirmed(&prune_lines(orphans), &question).await? {
            return Ok((None, found));
        }
    }
    wait_for_boots(app, &booting, boot_wait).await?;
    let lock = app.lock(args.lock.lock_timeout).await?;
    let again = survey(app, Some(&lock)).await?;
    if must_ask && sorted_ids(orphans) != sorted_ids(&again.drift.orphans) {
        lock.release().await;
        bail!(
            "the pool's orphans changed while you were asked, so nothing was changed; run doproxy reconcile --apply --prune again to see them"
        );
    }
    Ok((Some(lock), again))
}

/// Reads the inventory (under `lock`, if held) and lists the pool's
/// droplets: one list request per 200.
async fn survey(app: &App, lock: Option<&StoreLock>) -> Result<Survey> {
    let tag = app.config.pool_tag();
    let entries = app.entries(lock).await?;
    let known: Vec<u64> = entries.iter().map(|e| e.id).collect();
    let existing = app
        .api()?
        .list_pool(tag, &known)
        .await
        .context("cannot list the pool's droplets")?;
    let observed: Vec<Observed> = existing.iter().map(droplet::observed).collect();
    let mut drift = drift(&entries, &observed, tag)?;
    let foreign = take_foreign(
        &mut drift.orphans,
        app.config.droplets.hostname_prefix.as_deref(),
    );
    Ok(Survey {
        entries,
        existing,
        drift,
        foreign,
    })
}

/// The droplets DigitalOcean still boots that --apply waits for, so that
/// one run joins them: those the inventory records as `new` (a create
/// stopped before they booted) and, when `adopting`, orphans. Each is
/// waited for until `boot_timeout` after its creation (one stuck longer
/// than that is not waited for again); the second value is how long that
/// takes, for the one with the most time left.
fn booting(
    entries: &[Entry],
    orphans: &[Entry],
    existing: &[Droplet],
    adopting: bool,
    boot_timeout: Duration,
    now: SystemTime,
) -> (Vec<Droplet>, Duration) {
    let time_left = |droplet: &Droplet| match humantime::parse_rfc3339(&droplet.created_at) {
        Ok(created) => (created + boot_timeout)
            .duration_since(now)
            .unwrap_or_default(),
        Err(_) => boot_timeout,
    };
    let waited_for = |droplet: &Droplet| {
        Status::from_api(&droplet.status) == Status::New
            && (entries
                .iter()
                .any(|e| e.id == droplet.id && e.status == Status::New)
                || (adopting && orphans.iter().any(|o| o.id == droplet.id)))
    };
    let booting: Vec<Droplet> = existing
        .iter()
        .filter(|d| waited_for(d) && !time_left(d).is_zero())
        .cloned()
        .collect();
    let wait = booting.iter().map(time_left).max().unwrap_or_default();
    (booting, wait)
}

/// Waits, without the lock, until `booting` are active (at most `timeout`)
/// and answer the health check (at most ready_timeout), so the survey
/// after finds them ready to join. A signal ends the wait, nothing changed.
async fn wait_for_boots(app: &App, booting: &[Droplet], timeout: Duration) -> Result<()> {
    if booting.is_empty() {
        return Ok(());
    }
    tracing::info!(
        "waiting up to {} for {} droplet(s) still booting: {}",
        humantime::format_duration(timeout),
        booting.len(),
        listed(&ids_of(booting))
    );
    let check = &app.config.health_check;
    let waited = async {
        let boot =
            create::wait_until_active(app.api()?, app.config.pool_tag(), booting, timeout).await?;
        if !boot.stuck.is_empty() {
            tracing::warn!(
                "droplet(s) {} did not become active within {}; reconcile leaves them as they are",
                listed(&boot.stuck),
                humantime::format_duration(timeout)
            );
        }
        let booted: Vec<(u64, Ipv4Addr)> = boot
            .active
            .iter()
            .filter_map(|d| Some((d.id, d.private_ipv4()?)))
            .collect();
        readiness::wait_until_ready(check, &booted, check.ready_timeout).await
    };
    tokio::select! {
        stopped = app.shutdown.signalled() => Err(anyhow::Error::new(stopped).context(
            "reconcile changed nothing; run doproxy reconcile --apply again",
        )),
        waited = waited => waited.map(drop),
    }
}

/// `to prune: <id> <name>` for each orphan, as the question lists them.
fn prune_lines(orphans: &[Entry]) -> Vec<String> {
    orphans
        .iter()
        .map(|e| format!("to prune: {} {}", e.id, e.name))
        .collect()
}

fn sorted_ids(entries: &[Entry]) -> Vec<u64> {
    let mut ids: Vec<u64> = entries.iter().map(|e| e.id).collect();
    ids.sort_unstable();
    ids
}

fn ids_of(droplets: &[Droplet]) -> Vec<u64> {
    droplets.iter().map(|d| d.id).collect()
}

/// `1, 2, 3`, for messages.
fn listed(ids: &[u64]) -> String {
    ids.iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(", ")
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

    fn droplet(id: u64, status: &str, created_at: &str) -> Droplet {
        serde_json::from_value(json!({
            "id": id, "name": format!("web-{id}"), "status": status,
            "created_at": created_at, "networks": {"v4": []}, "tags": ["pool"]
        }))
        .unwrap()
    }

    #[test]
    fn apply_waits_for_recorded_and_adopted_boots_within_the_boot_timeout() {
        let now = humantime::parse_rfc3339("2026-11-28T12:00:00Z").unwrap();
        let minute_ago = "2026-11-28T11:59:00Z";
        let existing = [
            droplet(1, "new", minute_ago),
            droplet(2, "active", minute_ago),
            droplet(3, "new", minute_ago),
            droplet(4, "new", "2026-11-28T11:00:00Z"),
            droplet(5, "new", "not a time"),
        ];
        let recorded = |id| Entry {
            status: Status::New,
            ..Entry::named(id, "web")
        };
        let entries = [recorded(1), recorded(2), recorded(4), recorded(5)];
        let orphans = [droplet::entry_of(&existing[2]).unwrap()];
        let ten_minutes = Duration::from_secs(600);
        let waited = |adopting| {
            let (droplets, wait) =
                booting(&entries, &orphans, &existing, adopting, ten_minutes, now);
            (ids_of(&droplets), wait)
        };
        // 2 booted already; 4 has been stuck for an hour; 5's age is unknown.
        assert_eq!(waited(true), (vec![1, 3, 5], ten_minutes));
        assert_eq!(
            waited(false),
            (vec![1, 5], ten_minutes),
            "pruned, not adopted"
        );
        let (droplets, wait) = booting(&entries[..1], &[], &existing, true, ten_minutes, now);
        assert_eq!(ids_of(&droplets), [1]);
        assert_eq!(wait, Duration::from_secs(540));
    }

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
