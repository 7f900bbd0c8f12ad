//! The one path out of the pool, for delete, scale, autoscale, heal,
//! rollout and reconcile alike: check that DigitalOcean shows the droplets
//! as the pool's, mark them, drain, reload, destroy, record.
//!
//! The order matters: a droplet still in the config when it dies turns into
//! failed requests. Entries are marked `destroying` (and so leave the config)
//! before the reload; only a confirmed destroy removes them, so a failure
//! leaves a record the next `delete` or `reconcile` completes.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use anyhow::{Context as _, Result};

use super::Context;
use crate::digitalocean::{ApiError, Deleted};
use crate::haproxy::{self, Applied, Reload};
use crate::inventory::StoreLock;
use crate::listing::abbreviated;
use crate::model::{Change, Entry, Kind, Severity, Status};

/// A droplet on its way out of the pool, and its inventory status before,
/// so a retire that does not go ahead can put it back.
pub struct Leaving {
    pub entry: Entry,
    /// None: it was not in the inventory (an orphan being pruned).
    pub before: Option<Status>,
}

impl Leaving {
    /// An inventory entry, leaving.
    pub fn listed(entry: &Entry) -> Leaving {
        Leaving {
            entry: entry.clone(),
            before: Some(entry.status),
        }
    }
}

/// How a retire goes.
pub struct Retire<'a> {
    pub drain_timeout: Duration,
    /// Leaving HAProxy without servers is meant.
    pub allow_empty: bool,
    /// The command that does it again, for messages.
    pub retry: &'a str,
}

/// What a retire did.
pub struct Retired {
    pub applied: Applied,
    pub destroyed: Vec<Entry>,
    /// `<id>: <error>` of each destroy that failed.
    pub failures: Vec<String>,
}

/// Takes `leaving` out of the pool: checks that DigitalOcean shows each
/// as the pool's (the inventory may list any droplet of the account; one
/// that is not the pool's is refused, with nothing drained or destroyed),
/// which also checks that the API accepts the token (a refused one would
/// leave them drained and billed), marks them `destroying` in the
/// inventory, drains their servers in the running HAProxy, reloads it
/// without them, then destroys the droplets and records the outcome.
/// `entries` is the whole inventory and ends as saved.
///
/// Until the reload, a failure or SIGTERM/SIGINT rolls back: statuses as
/// they were, servers that served back in rotation (droplets already
/// `destroying` before stay drained). A signal during the reload waits for
/// it, then stops before any destroy; destroys once sent are finished and
/// recorded.
pub async fn retire(
    ctx: &Context,
    lock: &StoreLock,
    entries: &mut Vec<Entry>,
    leaving: &[Leaving],
    how: &Retire<'_>,
) -> Result<Retired> {
    let api = ctx.api()?;
    if !leaving.is_empty() {
        let ids: Vec<u64> = leaving.iter().map(|l| l.entry.id).collect();
        let seen = api
            .look_up(ctx.config.pool_tag(), &ids, entries.len())
            .await
            .map_err(|err| {
                let why = match err {
                    ApiError::Unauthorized => "the API must accept the token",
                    _ => "DigitalOcean must show that they are the pool's",
                };
                anyhow::Error::new(err).context(format!(
                    "nothing was drained or destroyed, since {why} before droplets leave HAProxy"
                ))
            })?;
        ctx.refuse_foreign(&seen)
            .await
            .context("nothing was drained or destroyed")?;
    }
    for gone in leaving {
        match entries.iter_mut().find(|e| e.id == gone.entry.id) {
            Some(entry) => entry.status = Status::Destroying,
            None => entries.push(Entry {
                status: Status::Destroying,
                ..gone.entry.clone()
            }),
        }
    }
    if !leaving.is_empty() {
        ctx.store.save(entries, lock).await?;
    }
    let ids: Vec<u64> = leaving.iter().map(|l| l.entry.id).collect();
    let leave_haproxy = async {
        tokio::select! {
            // A stop asked for before the drain wins over one that is instant.
            biased;
            stopped = ctx.shutdown.signalled() => return Err(stopped.into()),
            drained = haproxy::drain(&ctx.config.haproxy, &ids, how.drain_timeout) => drained?,
        }
        ctx.apply(entries, Reload::IfChanged, how.allow_empty).await
    };
    let applied = match leave_haproxy.await {
        Ok(applied) => applied,
        Err(err) => {
            // The failure stays the error; a failed roll-back only adds to it.
            let back = roll_back(ctx, lock, entries, leaving)
                .await
                .unwrap_or_else(|back_err| {
                    format!(
                        "putting them back failed too ({back_err:#}), so they may stay marked {} and drained; run {} to finish the delete",
                        Status::Destroying,
                        how.retry
                    )
                });
            let stopped = err.downcast_ref::<crate::shutdown::Interrupted>().is_some();
            let context = if stopped {
                format!(
                    "nothing was deleted: {back}; run {} to try again",
                    how.retry
                )
            } else {
                format!("nothing was deleted ({back})")
            };
            return Err(err.context(context));
        }
    };
    if ids.is_empty() {
        return Ok(Retired {
            applied,
            destroyed: Vec::new(),
            failures: Vec::new(),
        });
    }
    if let Err(stopped) = ctx.shutdown.check() {
        return Err(anyhow::Error::new(stopped).context(format!(
            "droplet {} left HAProxy but was not destroyed; the inventory keeps it as {}, so run doproxy reconcile --apply to destroy it",
            abbreviated(&ids),
            Status::Destroying
        )));
    }

    let mut failures = Vec::new();
    let mut destroyed = Vec::new();
    lock.check().await?;
    let mut deleted = Vec::new();
    for (id, outcome) in api.delete_droplets(&ids).await {
        match outcome {
            Ok(outcome) => {
                if outcome == Deleted::AlreadyGone {
                    tracing::info!("droplet {id} was already gone");
                }
                deleted.push(id);
            }
            Err(err) => failures.push(format!("{id}: {err}")),
        }
    }
    // One pass over the inventory, whatever the number deleted.
    let gone: HashSet<u64> = deleted.iter().copied().collect();
    let mut removed: HashMap<u64, Entry> = HashMap::new();
    entries.retain(|e| {
        let leaves = gone.contains(&e.id);
        if leaves {
            removed.insert(e.id, e.clone());
        }
        !leaves
    });
    destroyed.extend(deleted.iter().filter_map(|id| removed.remove(id)));
    ctx.store.save(entries, lock).await?;
    super::apply::count_pool(entries);
    crate::metrics::scaled(crate::metrics::Direction::In, destroyed.len());
    ctx.record(retired_changes(&ids, &destroyed, &failures))
        .await;
    Ok(Retired {
        applied,
        destroyed,
        failures,
    })
}

/// What a retire did: `ids` left HAProxy, `destroyed` are gone, and the
/// destroys that failed.
fn retired_changes(ids: &[u64], destroyed: &[Entry], failures: &[String]) -> Vec<Change> {
    let mut changes = vec![Change::done(
        Kind::DropletDrained,
        ids.to_vec(),
        "drained and out of HAProxy",
    )];
    if !destroyed.is_empty() {
        changes.push(Change::done(
            Kind::DropletDestroyed,
            destroyed.iter().map(|e| e.id).collect(),
            "destroyed",
        ));
    }
    if !failures.is_empty() {
        let failed: Vec<u64> = ids
            .iter()
            .copied()
            .filter(|id| !destroyed.iter().any(|e| e.id == *id))
            .collect();
        changes.push(
            Change::done(
                Kind::DropletDestroyed,
                failed,
                format!("could not destroy: {}", failures.join("; ")),
            )
            .with_severity(Severity::Error),
        );
    }
    changes
}

/// Puts `leaving` back as they were before `retire` marked them; says what
/// became of them.
async fn roll_back(
    ctx: &Context,
    lock: &StoreLock,
    entries: &mut Vec<Entry>,
    leaving: &[Leaving],
) -> Result<String> {
    for gone in leaving {
        match gone.before {
            Some(status) => {
                if let Some(entry) = entries.iter_mut().find(|e| e.id == gone.entry.id) {
                    entry.status = status;
                }
            }
            None => entries.retain(|e| e.id != gone.entry.id),
        }
    }
    ctx.store.save(entries, lock).await?;
    let ids = |keep: fn(&Leaving) -> bool| -> Vec<u64> {
        leaving
            .iter()
            .filter(|l| keep(l))
            .map(|l| l.entry.id)
            .collect()
    };
    let served = ids(|l| l.before.is_some() && l.entry.is_serving());
    let marked = ids(|l| l.before == Some(Status::Destroying));
    let served_list = abbreviated(&served);
    let mut outcome = Vec::new();
    if !served.is_empty() {
        outcome.push(match haproxy::undrain(&ctx.config.haproxy, &served).await {
            Ok(()) => format!("droplet {served_list} is back in rotation and in the inventory as it was"),
            Err(err) => {
                tracing::warn!("could not put the servers back into rotation: {err:#}");
                format!(
                    "droplet {served_list} is in the inventory as it was but may still be drained in HAProxy (see doproxy print --health)"
                )
            }
        });
    }
    if !marked.is_empty() {
        outcome.push(format!(
            "droplet {} stays marked {}",
            abbreviated(&marked),
            Status::Destroying
        ));
    }
    if outcome.is_empty() {
        outcome.push("HAProxy was left as it was".to_string());
    }
    Ok(outcome.join(" and "))
}
