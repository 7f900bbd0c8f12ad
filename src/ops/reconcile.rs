//! Reconciling: find where the inventory, DigitalOcean and the running
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
use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, Result, bail};

use super::join::wait_until_active;
use super::ownership::listed_in;
use super::retire::{Leaving, Retire, retire};
use super::{Context, droplet};
use crate::digitalocean::Droplet;
use crate::haproxy::{self, Applied};
use crate::inventory::StoreLock;
use crate::listing::abbreviated;
use crate::model::{self, Entry, Kind, Observed, Severity, Status};
use crate::readiness;
use crate::scaling::{Drift, drift, take_foreign};

/// How long reconcile gives booted droplets to pass the health check.
const READY_PASS: Duration = Duration::from_secs(10);

/// What a reconcile is asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    /// Make the inventory, DigitalOcean and HAProxy agree.
    pub apply: bool,
    /// With `apply`: destroy orphans instead of adopting them.
    pub prune: bool,
    /// Prune without asking.
    pub yes: bool,
    /// With `apply`: how long after its creation to wait for a droplet still
    /// booting.
    pub timeout: Duration,
    /// How long open sessions may take to finish on servers leaving.
    pub drain_timeout: Duration,
    pub lock_timeout: Duration,
}

/// Where the inventory, DigitalOcean and HAProxy disagreed, and what was
/// done about it.
#[derive(Debug)]
pub struct Reconciled {
    pub drift: Drift,
    /// Orphans not named like the pool's droplets: left alone.
    pub foreign: Vec<Entry>,
    /// How HAProxy differs from what the inventory gives, if it does.
    pub haproxy: Option<String>,
    /// Entries DigitalOcean does not show as the pool's droplets, each
    /// with its sentence: never tagged nor destroyed, even by `apply`; a
    /// person removes them from the inventory or tags them.
    pub not_the_pools: Vec<(u64, String)>,
    /// What `apply` fixed; None when nothing was applied.
    pub fixed: Option<Fixed>,
    /// `prune` was not agreed to, so nothing changed.
    pub prune_declined: bool,
}

impl Reconciled {
    /// The inventory, DigitalOcean and HAProxy agree.
    pub fn agrees(&self) -> bool {
        self.drift.is_empty() && self.haproxy.is_none()
    }

    /// They agree, and nothing is left for a person to settle.
    pub fn settled(&self) -> bool {
        self.agrees() && self.not_the_pools.is_empty()
    }
}

/// What `apply` fixed beyond the drift itself.
#[derive(Debug)]
pub struct Fixed {
    /// Booted or adopted droplets that passed the health check and joined.
    pub ready: usize,
    /// Unfinished deletes and pruned orphans destroyed.
    pub destroyed: usize,
    pub applied: Applied,
    /// `<id>: <error>` of each destroy that failed.
    pub failures: Vec<String>,
}

/// Compares the inventory with DigitalOcean and HAProxy, and with
/// `options.apply` makes them agree. `ask` puts the question `--prune`
/// needs to a person (lines listing what happens, the question), never
/// while the lock is held.
pub async fn reconcile(
    ctx: &Context,
    options: &Options,
    ask: impl AsyncFn(&[String], &str) -> Result<bool>,
) -> Result<Reconciled> {
    let (lock, found) = match options.apply {
        true => survey_to_apply(ctx, options, ask).await?,
        false => (None, survey(ctx, None).await?),
    };
    let Survey {
        entries,
        existing,
        drift,
        foreign,
    } = found;
    let listed = listed_in(&entries, existing.iter().cloned());
    let not_the_pools = ctx.not_the_pools(&listed).await;
    let bind = ctx.frontend_bind().await;
    let haproxy = haproxy::divergence(&ctx.config.haproxy, bind, &entries)
        .await
        .unwrap_or_else(|err| {
            tracing::warn!("cannot compare HAProxy with the inventory: {err:#}");
            None
        });
    let mut reconciled = Reconciled {
        drift,
        foreign,
        haproxy,
        not_the_pools,
        fixed: None,
        prune_declined: false,
    };
    if reconciled.settled() {
        crate::metrics::reconciled();
    }
    if !options.apply || reconciled.agrees() {
        return Ok(reconciled);
    }
    // --apply lets go of the lock only when pruning was not agreed to.
    let Some(lock) = lock else {
        reconciled.prune_declined = true;
        return Ok(reconciled);
    };
    let fixed = fix(ctx, options, &lock, entries, existing, &reconciled.drift).await?;
    ctx.record([fixes(&reconciled, &fixed)]).await;
    reconciled.fixed = Some(fixed);
    Ok(reconciled)
}

/// What `apply` fixed, as an event: the droplets that drifted, how many
/// joined and were destroyed; an error when destroys failed.
fn fixes(reconciled: &Reconciled, fixed: &Fixed) -> model::Change {
    let drift = &reconciled.drift;
    let droplets = [
        &drift.gone,
        &drift.orphans,
        &drift.booted,
        &drift.unfinished_destroys,
        &drift.untagged,
    ]
    .into_iter()
    .flatten()
    .chain(drift.changed.iter().map(|change| &change.after))
    .map(|entry| entry.id)
    .collect();
    let mut outcome = format!(
        "{} gone, {} orphan(s), {} changed, {} joined, {} destroyed",
        drift.gone.len(),
        drift.orphans.len(),
        drift.changed.len(),
        fixed.ready,
        fixed.destroyed
    );
    if reconciled.haproxy.is_some() {
        outcome.push_str("; HAProxy brought to the inventory");
    }
    let change = model::Change::done(Kind::ReconcileFixed, droplets, outcome);
    match fixed.failures.is_empty() {
        true => change,
        false => change.with_severity(Severity::Error),
    }
}

/// Makes the inventory `entries` agree with what DigitalOcean shows
/// (`existing`, compared in `drift`) and HAProxy with it, under `lock`.
async fn fix(
    ctx: &Context,
    options: &Options,
    lock: &StoreLock,
    mut entries: Vec<Entry>,
    existing: Vec<Droplet>,
    drift: &Drift,
) -> Result<Fixed> {
    let api = ctx.api()?;
    let tag = ctx.config.pool_tag();
    // Before anything changes: the inventory may list any droplet of the
    // account, and only the pool's are tagged or destroyed.
    let touched: HashSet<u64> = drift
        .untagged
        .iter()
        .chain(&drift.unfinished_destroys)
        .map(|e| e.id)
        .collect();
    let touched: Vec<Droplet> = existing
        .into_iter()
        .filter(|d| touched.contains(&d.id))
        .collect();
    ctx.refuse_foreign(&touched)
        .await
        .context("reconcile --apply changed nothing")?;
    let gone: HashSet<u64> = drift.gone.iter().map(|e| e.id).collect();
    entries.retain(|e| !gone.contains(&e.id));
    let changed: HashMap<u64, &Entry> = drift
        .changed
        .iter()
        .map(|c| (c.after.id, &c.after))
        .collect();
    for entry in entries.iter_mut() {
        if let Some(after) = changed.get(&entry.id) {
            *entry = (*after).clone();
        }
    }
    let mut booted: Vec<(u64, Ipv4Addr)> = drift
        .booted
        .iter()
        .filter_map(|e| Some((e.id, e.private_ip?)))
        .collect();
    if !options.prune {
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
    let check = &ctx.config.health_check;
    let ready = tokio::select! {
        stopped = ctx.shutdown.signalled() => {
            return Err(anyhow::Error::new(stopped).context(
                "reconcile changed nothing; run doproxy reconcile --apply again",
            ));
        }
        ready = readiness::wait_until_ready(check, &booted, check.ready_timeout.min(READY_PASS)) => ready?,
    };
    let booted_ids: HashSet<u64> = booted.iter().map(|(id, _)| *id).collect();
    let ready: HashSet<u64> = ready.into_iter().collect();
    for entry in entries.iter_mut().filter(|e| booted_ids.contains(&e.id)) {
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
    ctx.store.save(&entries, lock).await?;

    // Unfinished deletes, and pruned orphans, leave the way a delete does:
    // drained first, then out of HAProxy, then destroyed.
    let mut leaving: Vec<Leaving> = drift
        .unfinished_destroys
        .iter()
        .map(Leaving::listed)
        .collect();
    if options.prune {
        leaving.extend(drift.orphans.iter().map(|orphan| Leaving {
            entry: orphan.clone(),
            before: None,
        }));
    }
    let how = Retire {
        drain_timeout: options.drain_timeout,
        allow_empty: false,
        retry: "doproxy reconcile --apply",
    };
    let retired = retire(ctx, lock, &mut entries, &leaving, &how).await?;

    if retired.failures.is_empty() {
        crate::metrics::reconciled();
    }
    Ok(Fixed {
        ready: ready.len(),
        destroyed: retired.destroyed.len(),
        applied: retired.applied,
        failures: retired.failures,
    })
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
async fn survey_to_apply(
    ctx: &Context,
    options: &Options,
    ask: impl AsyncFn(&[String], &str) -> Result<bool>,
) -> Result<(Option<StoreLock>, Survey)> {
    let lock = ctx.lock(options.lock_timeout).await?;
    let found = survey(ctx, Some(&lock)).await?;
    let orphans = &found.drift.orphans;
    let must_ask = options.prune && !options.yes && !orphans.is_empty();
    let (booting, boot_wait) = booting(
        &found.entries,
        orphans,
        &found.existing,
        !options.prune,
        options.timeout,
        SystemTime::now(),
    );
    if booting.is_empty() && !must_ask {
        return Ok((Some(lock), found));
    }
    // Neither an answer nor a boot is awaited holding the pool's lock.
    lock.release().await;
    if must_ask {
        let question = format!("Destroy these {} droplet(s)?", orphans.len());
        if !ask(&prune_lines(orphans), &question).await? {
            return Ok((None, found));
        }
    }
    wait_for_boots(ctx, &booting, boot_wait).await?;
    let lock = ctx.lock(options.lock_timeout).await?;
    let again = survey(ctx, Some(&lock)).await?;
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
async fn survey(ctx: &Context, lock: Option<&StoreLock>) -> Result<Survey> {
    let tag = ctx.config.pool_tag();
    let entries = ctx.entries(lock).await?;
    let known: Vec<u64> = entries.iter().map(|e| e.id).collect();
    let existing = ctx
        .api()?
        .list_pool(tag, &known)
        .await
        .context("cannot list the pool's droplets")?;
    let observed: Vec<Observed> = existing.iter().map(droplet::observed).collect();
    let mut drift = drift(&entries, &observed, tag)?;
    let foreign = take_foreign(
        &mut drift.orphans,
        ctx.config.droplets.hostname_prefix.as_deref(),
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
async fn wait_for_boots(ctx: &Context, booting: &[Droplet], timeout: Duration) -> Result<()> {
    if booting.is_empty() {
        return Ok(());
    }
    tracing::info!(
        "waiting up to {} for {} droplet(s) still booting: {}",
        humantime::format_duration(timeout),
        booting.len(),
        abbreviated(&ids_of(booting))
    );
    let check = &ctx.config.health_check;
    let waited = async {
        let boot = wait_until_active(ctx.api()?, ctx.config.pool_tag(), booting, timeout).await?;
        if !boot.stuck.is_empty() {
            tracing::warn!(
                "droplet(s) {} did not become active within {}; reconcile leaves them as they are",
                abbreviated(&boot.stuck),
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
        stopped = ctx.shutdown.signalled() => Err(anyhow::Error::new(stopped).context(
            "reconcile changed nothing; run doproxy reconcile --apply again",
        )),
        waited = waited => waited.map(drop),
    }
}

/// `to prune: <id> <name>` for each orphan, as the question lists them.
pub fn prune_lines(orphans: &[Entry]) -> Vec<String> {
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

#[cfg(test)]
mod tests {
    use serde_json::json;

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
}
