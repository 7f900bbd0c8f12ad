//! Watching: keep this proxy's HAProxy in step with the shared etcd inventory,
//! whichever proxy (or cron job) changed it.
//!
//! Changes are debounced like consul-template's wait timers: HAProxy is
//! updated once changes have been quiet for `--quiet-period`, or `--max-wait`
//! after the first one, so a batch of changes costs one update (through the
//! runtime API when only servers changed, else one reload). Every update
//! reads the whole inventory at one revision.
//!
//! A watch can fall silent without any error: a connection gone half-open (a
//! dropped NAT entry, a partition) delivers nothing and never closes, and
//! etcd's own progress notifications come only every ten minutes. So after
//! `--resync-interval` without news, watch reads the whole inventory again and
//! opens a fresh watch from there: a change waits at most that long. A failed
//! HAProxy update is retried with backoff until it works, not forgotten until
//! the next change. After losing etcd the watch resumes from the last revision
//! it read; while etcd cannot be read nothing is installed, so HAProxy keeps
//! its servers. An etcd whose revision went backwards was rebuilt or restored
//! from a backup: watch says so loudly and follows it, but does not let an
//! inventory without servers empty HAProxy until it has seen servers there
//! (nor at start: an etcd rebuilt empty looks just like an empty pool).
//! SIGTERM and SIGINT stop it between updates, never in the middle of one.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Result, bail};
use tokio::time::{Instant, sleep, sleep_until};

use super::{Context, backoff};
use crate::haproxy::Reload;
use crate::inventory::{EtcdInventory, InventoryChange, Store};
use crate::metrics;
use crate::model::Entry;
use crate::shutdown::Interrupted;

/// Longest pause between attempts to reach etcd again.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Longest pause between attempts at a HAProxy update that keeps failing.
const MAX_APPLY_BACKOFF: Duration = Duration::from_secs(30);

/// How `follow` paces itself: the debounce of changes, and the longest a
/// silently stalled watch may hide one.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Update HAProxy once no change has come for this long...
    pub quiet_period: Duration,
    /// ...or this long after the first change, whichever comes first.
    pub max_wait: Duration,
    /// With no news for this long, read the whole inventory again.
    pub resync_interval: Duration,
}

/// Keeps HAProxy in step with the etcd inventory until a signal asks to
/// stop, serving metrics on `metrics_listen` (else metrics_listen of the
/// config) meanwhile; returns that signal.
pub async fn follow(
    ctx: &Context,
    timing: &Timing,
    metrics_listen: Option<SocketAddr>,
) -> Result<Interrupted> {
    let Store::Etcd(etcd) = &ctx.store else {
        bail!(
            "watch follows an etcd inventory; set inventory_backend: etcd and etcd_endpoints in {}",
            ctx.config.path.display()
        );
    };
    let _metrics = ctx.serve_metrics(metrics_listen).await?;
    // The HTTPS certificate is kept alongside: renewed when due (one proxy
    // at a time), installed when another proxy renewed it.
    let followed = ctx
        .keeping_certificate(keep_in_step(Follower::new(ctx, etcd, timing)))
        .await;
    Ok(match followed {
        Err(stopped) => stopped,
        Ok(never) => match never {},
    })
}

/// Why the inventory is read in full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Read {
    Start,
    /// The watch reported changes.
    Change,
    /// The last HAProxy update failed.
    Retry,
    /// No news for --resync-interval.
    Resync,
    /// etcd compacted the history the watch needed.
    Compacted,
    /// The watch failed.
    Reconnect,
}

/// How a watch ended without failing.
enum Ended {
    Quiet,
    Compacted,
}

/// What the watch waited for.
enum Woken {
    News(InventoryChange),
    RetryDue,
    Quiet,
}

/// The state of a running `watch`.
struct Follower<'a> {
    ctx: &'a Context,
    etcd: &'a EtcdInventory,
    timing: &'a Timing,
    /// The revision of the last full read: the watch starts after it.
    revision: i64,
    /// What the last full read found, and when it happened.
    read: Option<Vec<Entry>>,
    read_at: Instant,
    /// What HAProxy was last updated from, successfully.
    applied: Option<Vec<Entry>>,
    /// HAProxy updates that failed in a row, and when to try again.
    apply_failures: u32,
    retry_at: Option<Instant>,
    /// Whether an inventory without servers may empty a HAProxy that has
    /// some: not until this watch has read one with servers, since it
    /// started or since it found etcd rebuilt.
    trust_empty: bool,
}

/// Follows the inventory until a signal asks to stop.
async fn keep_in_step(mut follower: Follower<'_>) -> Result<Infallible, Interrupted> {
    let mut read = Read::Start;
    let mut failures = 0;
    loop {
        follower.sync(read).await?;
        read = match follower.follow(read).await {
            Ok(Ended::Quiet) => {
                failures = 0;
                Read::Resync
            }
            Ok(Ended::Compacted) => {
                failures = 0;
                Read::Compacted
            }
            Err(err) => {
                let err = match err.downcast::<Interrupted>() {
                    Ok(stopped) => return Err(stopped),
                    Err(err) => err,
                };
                failures += 1;
                let pause = backoff(failures, MAX_BACKOFF);
                tracing::warn!(
                    "lost the etcd watch ({err:#}); reading the inventory again in {}",
                    humantime::format_duration(pause)
                );
                follower.pause_unless_stopped(pause).await?;
                Read::Reconnect
            }
        };
    }
}

impl<'a> Follower<'a> {
    fn new(ctx: &'a Context, etcd: &'a EtcdInventory, timing: &'a Timing) -> Follower<'a> {
        Follower {
            ctx,
            etcd,
            timing,
            revision: 0,
            read: None,
            read_at: Instant::now(),
            applied: None,
            apply_failures: 0,
            retry_at: None,
            trust_empty: false,
        }
    }

    /// Watches from the last full read and updates HAProxy after each batch
    /// of changes (and retries a failed update when due), until the watch
    /// has been quiet for --resync-interval, etcd compacted its history, or
    /// the watch failed (returned).
    async fn follow(&mut self, after: Read) -> Result<Ended> {
        let mut watch = self.etcd.watch(self.revision).await?;
        if matches!(after, Read::Start | Read::Reconnect) {
            tracing::info!(
                "watching {} from revision {}",
                self.etcd.describe(),
                self.revision
            );
        } else {
            tracing::debug!("watching afresh from revision {}", self.revision);
        }
        loop {
            let resync_at = self.read_at + self.timing.resync_interval;
            let retry_at = self.retry_at.filter(|&at| at < resync_at);
            let woken = tokio::select! {
                stopped = self.ctx.shutdown.signalled() => return Err(stopped.into()),
                next = watch.next() => Woken::News(next?),
                () = sleep_until(retry_at.unwrap_or(resync_at)) => match retry_at {
                    Some(_) => Woken::RetryDue,
                    None => Woken::Quiet,
                },
            };
            match woken {
                Woken::Quiet => return Ok(Ended::Quiet),
                Woken::RetryDue => self.sync(Read::Retry).await?,
                Woken::News(InventoryChange::Compacted { compact_revision }) => {
                    tracing::warn!(
                        "etcd compacted its history to revision {compact_revision}; reading the inventory again"
                    );
                    return Ok(Ended::Compacted);
                }
                Woken::News(InventoryChange::Changed { .. }) => {
                    // Debounce: more changes may be on their way.
                    let first = Instant::now();
                    loop {
                        let deadline = (Instant::now() + self.timing.quiet_period)
                            .min(first + self.timing.max_wait);
                        tokio::select! {
                            stopped = self.ctx.shutdown.signalled() => return Err(stopped.into()),
                            next = watch.next() => match next? {
                                InventoryChange::Changed { .. } => continue,
                                // The full read after it covers these changes.
                                InventoryChange::Compacted { .. } => return Ok(Ended::Compacted),
                            },
                            () = sleep_until(deadline) => break,
                        }
                    }
                    self.sync(Read::Change).await?;
                }
            }
        }
    }

    /// Reads the whole inventory (trying until etcd answers) and updates
    /// HAProxy if it differs from what HAProxy was last updated from. An
    /// inventory that etcd really holds empty empties HAProxy: that read is
    /// authoritative, not a failure; but not before this watch has seen
    /// servers in it, so a watch (re)started against an etcd rebuilt empty
    /// leaves HAProxy alone and says so.
    async fn sync(&mut self, why: Read) -> Result<(), Interrupted> {
        let (entries, revision) = self.read_all().await?;
        self.read_at = Instant::now();
        let news = self.read.as_ref() != Some(&entries);
        if revision < self.revision {
            tracing::error!(
                "etcd's revision went back from {} to {revision}, so the etcd cluster was rebuilt or restored from a backup; following it from here, but an inventory there without servers will not empty HAProxy (restore it with doproxy inventory import)",
                self.revision
            );
            self.trust_empty = false;
        } else if why == Read::Resync && news {
            tracing::warn!(
                "the inventory changed without the etcd watch reporting it (its connection may have stalled); updating HAProxy from a full read at revision {revision}"
            );
        }
        if entries.iter().any(Entry::is_serving) {
            self.trust_empty = true;
        }
        self.revision = revision;
        self.read = Some(entries.clone());
        if self.applied.as_ref() == Some(&entries) {
            self.retry_at = None;
            metrics::reconciled();
            return Ok(());
        }
        // A failed update is tried again on its own schedule, unless the
        // inventory changed meanwhile.
        if self.retry_at.is_some() && !news && why != Read::Retry {
            return Ok(());
        }
        let applied = self
            .ctx
            .apply(&entries, Reload::IfChanged, self.trust_empty)
            .await;
        match applied {
            Ok(_) => {
                if self.apply_failures > 0 {
                    tracing::info!("HAProxy is up to date with revision {revision} again");
                }
                metrics::reconciled();
                self.applied = Some(entries);
                self.apply_failures = 0;
                self.retry_at = None;
            }
            Err(err) => {
                self.apply_failures += 1;
                let pause = backoff(self.apply_failures, MAX_APPLY_BACKOFF);
                tracing::error!(
                    "could not update HAProxy at revision {revision} ({err:#}); trying again in {}",
                    humantime::format_duration(pause)
                );
                self.retry_at = Some(Instant::now() + pause);
            }
        }
        Ok(())
    }

    /// All entries and their revision, trying until etcd answers; a signal
    /// stops it between (or during) attempts, which change nothing.
    async fn read_all(&self) -> Result<(Vec<Entry>, i64), Interrupted> {
        let mut failures = 0;
        loop {
            let read = tokio::select! {
                stopped = self.ctx.shutdown.signalled() => return Err(stopped),
                read = self.etcd.load_with_revision() => read,
            };
            match read {
                Ok(read) => return Ok(read),
                Err(err) => {
                    failures += 1;
                    let pause = backoff(failures, MAX_BACKOFF);
                    tracing::warn!(
                        "cannot read the etcd inventory ({err:#}); HAProxy keeps its servers; trying again in {}",
                        humantime::format_duration(pause)
                    );
                    self.pause_unless_stopped(pause).await?;
                }
            }
        }
    }

    /// Sleeps for `pause`, or less if a signal asks to stop.
    async fn pause_unless_stopped(&self, pause: Duration) -> Result<(), Interrupted> {
        tokio::select! {
            stopped = self.ctx.shutdown.signalled() => Err(stopped),
            () = sleep(pause) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_a_cap() {
        assert_eq!(backoff(1, MAX_BACKOFF), Duration::from_millis(500));
        assert_eq!(backoff(2, MAX_BACKOFF), Duration::from_secs(1));
        assert_eq!(backoff(20, MAX_BACKOFF), MAX_BACKOFF);
        assert_eq!(backoff(20, MAX_APPLY_BACKOFF), MAX_APPLY_BACKOFF);
    }
}
