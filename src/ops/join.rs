//! Joining new droplets: wait (without the lock) until they are active and
//! pass the health check, destroy those stuck in their boot, then record
//! the outcome under the lock and update HAProxy with one reload. A signal
//! stops the waits at once; the droplets stay recorded as `new`, and the
//! error says what to run about them.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow};

use super::create::CreateOptions;
use super::{Context, droplet};
use crate::config::Config;
use crate::digitalocean::{Client, Droplet, list_requests};
use crate::haproxy::{Applied, Reload};
use crate::listing::abbreviated;
use crate::model::{Change, Entry, Kind, Severity, Status};
use crate::progress;
use crate::readiness;
use crate::shutdown::{Interrupted, Signal};

/// How often droplets under health checks are looked for, in case someone
/// destroyed them meanwhile.
const GONE_POLL: Duration = Duration::from_secs(2);

/// How a stopped create or join says what to run about the droplets it left.
#[derive(Debug, Clone, Copy)]
pub enum Resume {
    /// `reconcile --apply` adds them, `delete` destroys them.
    Reconcile,
    /// This command continues where it stopped (`doproxy rollout`).
    Run(&'static str),
}

/// How `join` went.
pub struct Joined {
    /// Passed the health check (or no wait was asked for): in HAProxy now.
    pub ready: Vec<u64>,
    /// Active, but never answered the health check.
    pub unready: Vec<u64>,
    /// Destroyed: stuck in their boot, or unready with destroy_unready.
    pub destroyed: Vec<u64>,
    /// One sentence each about what went wrong.
    pub failures: Vec<String>,
    /// The inventory as saved.
    pub entries: Vec<Entry>,
    pub applied: Applied,
}

/// Waits (without the lock) until `droplets`, recorded as `new`, are active
/// and pass the health check, destroys those stuck in their boot (and the
/// unready ones with `destroy_unready`), then records the outcome under the
/// lock and updates HAProxy with one reload. A signal stops the waits at
/// once, the droplets staying `new`; the error says what to run (`resume`).
pub async fn join(
    ctx: &Context,
    droplets: &[Droplet],
    options: &CreateOptions,
    resume: Resume,
) -> Result<Joined> {
    let config = &ctx.config;
    let api = ctx.api()?;
    let created: Vec<u64> = droplets.iter().map(|d| d.id).collect();
    let mut failures = Vec::new();

    // Without the lock, so other runs can create and delete while these boot.
    let mut boot = tokio::select! {
        stopped = ctx.shutdown.signalled() => {
            return Err(stopped_create(stopped.signal, Stage::Booting, &created, resume));
        }
        boot = wait_until_active(api, config.pool_tag(), droplets, options.timeout) => boot?,
    };
    let booted: Vec<(u64, Ipv4Addr)> = boot
        .active
        .iter()
        .filter_map(|d| Some((d.id, d.private_ipv4()?)))
        .collect();
    let gone = readiness::Gone::default();
    let ready = if options.ready_wait {
        let check = &config.health_check;
        let booted_ids: Vec<u64> = booted.iter().map(|(id, _)| *id).collect();
        tokio::select! {
            stopped = ctx.shutdown.signalled() => {
                return Err(stopped_create(stopped.signal, Stage::Readiness, &created, resume));
            }
            ready = readiness::wait_until_ready_unless_gone(check, &booted, check.ready_timeout, &gone) => ready?,
            never = notice_gone(api, config.pool_tag(), &booted_ids, &gone) => match never {},
        }
    } else {
        booted.iter().map(|(id, _)| *id).collect()
    };
    // Destroyed by someone while their health checks ran: gone like those
    // destroyed while they booted.
    let destroyed_meanwhile = gone.lock().unwrap_or_else(|e| e.into_inner()).clone();
    boot.active.retain(|d| {
        if destroyed_meanwhile.contains(&d.id) {
            boot.gone.push(d.clone());
            return false;
        }
        true
    });
    let booted: Vec<(u64, Ipv4Addr)> = booted
        .into_iter()
        .filter(|(id, _)| !destroyed_meanwhile.contains(id))
        .collect();
    let ready_set: HashSet<u64> = ready.iter().copied().collect();
    let unready: Vec<u64> = booted
        .iter()
        .map(|(id, _)| *id)
        .filter(|id| !ready_set.contains(id))
        .collect();
    if !boot.gone.is_empty() {
        let gone: Vec<String> = boot
            .gone
            .iter()
            .map(|d| format!("{} ({})", d.id, d.name))
            .collect();
        failures.push(format!(
            "droplet(s) {} no longer exist: another doproxy run or someone in the control panel destroyed them while this create waited for them to boot or answer the health check, so they are dropped from the inventory; run doproxy create again if the pool still needs them",
            abbreviated(&gone)
        ));
    }
    let mut doomed = boot.stuck.clone();
    if options.destroy_unready {
        doomed.extend(&unready);
    }
    // Droplets a rollout or heal resumes come from the inventory, which
    // may list any droplet of the account: only the pool's are destroyed,
    // and the others are named on their own.
    let destroying = destroyable(ctx, &doomed, &mut failures).await;
    let doomed_set: HashSet<u64> = doomed.iter().copied().collect();
    let destroying_set: HashSet<u64> = destroying.iter().copied().collect();
    let spared = |id: &u64| doomed_set.contains(id) && !destroying_set.contains(id);
    let stuck: Vec<u64> = boot
        .stuck
        .iter()
        .copied()
        .filter(|id| !spared(id))
        .collect();
    if !stuck.is_empty() {
        failures.push(format!(
            "droplet(s) {} did not become active within {}, so they were destroyed",
            abbreviated(&stuck),
            humantime::format_duration(options.timeout)
        ));
    }
    let unready_named: Vec<u64> = unready.iter().copied().filter(|id| !spared(id)).collect();
    if !unready_named.is_empty() {
        failures.push(unready_failure(
            config,
            &unready_named,
            options.destroy_unready,
        ));
    }
    let mut destroyed = Vec::new();
    for (id, outcome) in api.delete_droplets(&destroying).await {
        match outcome {
            Ok(_) => destroyed.push(id),
            Err(err) => failures.push(format!(
                "could not destroy droplet {id} ({err}); run doproxy reconcile --apply"
            )),
        }
    }

    // Under the lock again: record the outcome, then one reload for the
    // batch. A failure here must not hide the ones above.
    let earlier = |err: anyhow::Error| {
        if failures.is_empty() {
            err
        } else {
            err.context(format!("{}; then", failures.join("; ")))
        }
    };
    let lock = ctx
        .lock(options.lock_timeout)
        .await
        .map_err(|err| earlier(stopped_in(err, Stage::Recording, &created, resume)))?;
    let mut entries = ctx.entries(Some(&lock)).await.map_err(earlier)?;
    // Sets by ID: a batch of 1,000 is recorded in linear time.
    let leaving: HashSet<u64> = destroyed
        .iter()
        .copied()
        .chain(boot.gone.iter().map(|d| d.id))
        .collect();
    let created_set: HashSet<u64> = created.iter().copied().collect();
    let unready_set: HashSet<u64> = unready.iter().copied().collect();
    let active: HashMap<u64, &Droplet> = boot.active.iter().map(|d| (d.id, d)).collect();
    entries.retain(|e| !leaving.contains(&e.id));
    for entry in entries.iter_mut().filter(|e| created_set.contains(&e.id)) {
        if let Some(droplet) = active.get(&entry.id) {
            droplet::update(entry, droplet)?;
        }
        if ready_set.contains(&entry.id) {
            entry.status = Status::Active;
        } else if unready_set.contains(&entry.id) {
            entry.status = Status::Unready;
        }
    }
    ctx.store
        .save(&entries, &lock)
        .await
        .with_context(|| {
            format!(
                "droplet(s) {} are recorded as new, but how their boot went could not be saved; run doproxy reconcile --apply once this is fixed",
                abbreviated(&created)
            )
        })
        .map_err(earlier)?;
    let applied = ctx
        .apply(&entries, Reload::IfChanged, false)
        .await
        .context(
            "the droplets are active and recorded in the inventory, but HAProxy was not updated",
        )
        .map_err(earlier)?;

    crate::metrics::scaled(crate::metrics::Direction::Out, ready.len());
    lock.release().await;
    ctx.record(joined_changes(&ready, &unready, &destroyed))
        .await;
    Ok(Joined {
        ready,
        unready,
        destroyed,
        failures,
        entries,
        applied,
    })
}

/// What a join did: droplets in HAProxy; booted but never healthy (kept,
/// or destroyed with destroy_unready); destroyed, stuck in their boot.
fn joined_changes(ready: &[u64], unready: &[u64], destroyed: &[u64]) -> Vec<Change> {
    let kept_unready: Vec<u64> = unready
        .iter()
        .copied()
        .filter(|id| !destroyed.contains(id))
        .collect();
    let mut changes = Vec::new();
    if !ready.is_empty() {
        changes.push(Change::done(
            Kind::DropletJoined,
            ready.to_vec(),
            "passed the health check; in HAProxy",
        ));
    }
    if !kept_unready.is_empty() {
        changes.push(
            Change::done(
                Kind::DropletUnready,
                kept_unready,
                "active, but never answered the health check; kept out of HAProxy",
            )
            .with_severity(Severity::Warning),
        );
    }
    if !destroyed.is_empty() {
        changes.push(
            Change::done(
                Kind::DropletDestroyed,
                destroyed.to_vec(),
                "destroyed: stuck in its boot or never healthy",
            )
            .with_severity(Severity::Warning),
        );
    }
    changes
}

/// Of droplets `ids`, the ones that may be destroyed: those DigitalOcean
/// shows as the pool's, or no longer knows. Why the others are not
/// destroyed goes to `failures`.
async fn destroyable(ctx: &Context, ids: &[u64], failures: &mut Vec<String>) -> Vec<u64> {
    if ids.is_empty() {
        return Vec::new();
    }
    let pool_size = ctx.store.load().await.map_or(ids.len(), |e| e.len());
    let seen = match ctx.api() {
        Ok(api) => api
            .look_up(ctx.config.pool_tag(), ids, pool_size)
            .await
            .map_err(anyhow::Error::new),
        Err(err) => Err(err),
    };
    let refused = match seen {
        Ok(seen) => ctx.not_the_pools(&seen).await,
        Err(err) => {
            failures.push(format!(
                "droplet(s) {} were not destroyed, since DigitalOcean could not show that they are the pool's ({err:#}); run doproxy reconcile --apply",
                abbreviated(ids)
            ));
            return Vec::new();
        }
    };
    failures.extend(refused.iter().map(|(_, sentence)| {
        format!("{sentence}, so it was not destroyed; remove that entry from the inventory")
    }));
    let refused: HashSet<u64> = refused.iter().map(|(id, _)| *id).collect();
    ids.iter()
        .copied()
        .filter(|id| !refused.contains(id))
        .collect()
}

/// Where a create was when a signal stopped it.
#[derive(Debug, Clone, Copy)]
pub(super) enum Stage {
    /// The droplets were created (or none yet).
    Created,
    Booting,
    Readiness,
    /// Waiting for the lock to record how the wait went.
    Recording,
}

/// `err` as `stopped_create` says it, when a signal stopped a lock wait.
pub(super) fn stopped_in(
    err: anyhow::Error,
    stage: Stage,
    created: &[u64],
    resume: Resume,
) -> anyhow::Error {
    match err.downcast::<Interrupted>() {
        Ok(stopped) => stopped_create(stopped.signal, stage, created, resume),
        Err(err) => err,
    }
}

/// The one sentence a stopped create ends with: what it left behind, and
/// what to run about it.
pub(super) fn stopped_create(
    signal: Signal,
    stage: Stage,
    created: &[u64],
    resume: Resume,
) -> anyhow::Error {
    let stopped = format!("stopped by {signal}");
    if created.is_empty() {
        return anyhow!("{stopped} before any droplet was created; nothing changed");
    }
    let ids = abbreviated(created);
    let when = match stage {
        Stage::Created => format!("after creating droplet(s) {ids}"),
        Stage::Booting => format!("while droplet(s) {ids} booted"),
        Stage::Readiness => format!("while droplet(s) {ids} were checked for readiness"),
        Stage::Recording => format!("while droplet(s) {ids} waited for the inventory lock"),
    };
    let what_to_run = match resume {
        Resume::Reconcile => {
            let spaced: Vec<String> = created.iter().map(u64::to_string).collect();
            format!(
                "run doproxy reconcile --apply to add them once they answer the health check, or doproxy delete --id {} to destroy them",
                spaced.join(" ")
            )
        }
        Resume::Run(command) => format!("run {command} again to continue where it stopped"),
    };
    anyhow!(
        "{stopped} {when}; they are recorded in the inventory as new and kept out of HAProxy: {what_to_run}"
    )
}

fn unready_failure(config: &Config, unready: &[u64], destroyed: bool) -> String {
    let check = &config.health_check;
    let what = format!(
        "droplet(s) {} did not answer GET {} on port {} with {} within {}",
        abbreviated(unready),
        check.path,
        check.port,
        check.status,
        humantime::format_duration(check.ready_timeout)
    );
    if destroyed {
        format!(
            "{what}, so they were destroyed; check the user data (userdata_file) and the health check settings"
        )
    } else {
        format!(
            "{what}; they are kept out of HAProxy as unready: fix them and run doproxy reconcile --apply to add them, or delete them with doproxy delete --id {}",
            unready
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        )
    }
}

/// How the wait for new droplets ended.
pub struct Boot {
    /// Active, with a private address.
    pub active: Vec<Droplet>,
    /// Still not active when the time was up.
    pub stuck: Vec<u64>,
    /// Destroyed by someone else meanwhile (the API no longer knows them).
    gone: Vec<Droplet>,
}

/// While health checks run: looks for the droplets `ids` every few seconds
/// (one list of the pool) and puts those the API no longer knows in `gone`,
/// so their checks stop at once. Runs until dropped; a failed look is tried
/// again next time.
async fn notice_gone(
    api: &Client,
    tag: &str,
    ids: &[u64],
    gone: &readiness::Gone,
) -> std::convert::Infallible {
    loop {
        tokio::time::sleep(GONE_POLL).await;
        match api.list_pool(tag, ids).await {
            Ok(listed) => {
                let listed: HashSet<u64> = listed.iter().map(|d| d.id).collect();
                let mut gone = gone.lock().unwrap_or_else(|e| e.into_inner());
                gone.extend(ids.iter().filter(|id| !listed.contains(id)));
            }
            Err(err) => tracing::debug!("cannot look for the droplets being checked: {err}"),
        }
    }
}

/// Polls the pool's droplets (one list call per poll, whatever their number)
/// until every droplet of `created` is active with a private address or
/// gone, or `timeout` passes. A droplet the API no longer knows was
/// destroyed by someone, which is no reason to wait on.
pub(super) async fn wait_until_active(
    api: &Client,
    tag: &str,
    created: &[Droplet],
    timeout: Duration,
) -> Result<Boot> {
    let started = Instant::now();
    let mut pending: Vec<&Droplet> = created.iter().collect();
    let mut active = Vec::new();
    let mut gone = Vec::new();
    let mut status = progress::Status::new();
    // Requests the last list took (one per 200 droplets).
    let mut pages = list_requests(created.len());
    loop {
        status.show(&format!(
            "{} of {} droplet(s) active",
            active.len(),
            created.len()
        ));
        tokio::time::sleep(poll_interval(started.elapsed(), pages)).await;
        let ids: Vec<u64> = pending.iter().map(|d| d.id).collect();
        let seen = api
            .list_pool(tag, &ids)
            .await
            .context("cannot check on the new droplets")?;
        pages = list_requests(seen.len());
        let seen: HashMap<u64, &Droplet> = seen.iter().map(|d| (d.id, d)).collect();
        pending.retain(|new| match seen.get(&new.id) {
            None => {
                tracing::warn!(
                    "droplet {} ({}) no longer exists: another run or someone in the control panel destroyed it",
                    new.id,
                    new.name
                );
                gone.push((*new).clone());
                false
            }
            Some(droplet) => match (Status::from_api(&droplet.status), droplet.private_ipv4()) {
                (Status::Active, Some(ip)) => {
                    tracing::info!(
                        "droplet {} ({}) is active at {ip}",
                        droplet.id,
                        droplet.name
                    );
                    active.push((*droplet).clone());
                    false
                }
                _ => true,
            },
        });
        if pending.is_empty() || started.elapsed() >= timeout {
            return Ok(Boot {
                active,
                stuck: pending.iter().map(|d| d.id).collect(),
                gone,
            });
        }
    }
}

/// Short polls while a droplet may be about to come up (a boot takes
/// seconds), longer ones once it is clearly taking its time; a list of
/// `pages` requests (a large pool) waits as many times longer, so polling
/// 1,000 droplets costs no more requests a second than polling a few.
fn poll_interval(elapsed: Duration, pages: usize) -> Duration {
    let base = if elapsed < Duration::from_secs(10) {
        Duration::from_millis(250)
    } else {
        Duration::from_secs(2)
    };
    base * pages.max(1) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_are_short_during_boots_and_spaced_by_what_a_list_costs() {
        assert_eq!(poll_interval(Duration::ZERO, 1), Duration::from_millis(250));
        assert_eq!(
            poll_interval(Duration::from_secs(60), 1),
            Duration::from_secs(2)
        );
        // 1,000 droplets: five requests a list, a fifth as many lists.
        assert_eq!(
            poll_interval(Duration::ZERO, list_requests(1000)),
            Duration::from_millis(1250)
        );
    }
}
