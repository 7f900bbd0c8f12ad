//! `watch`: keep this proxy's HAProxy in step with the shared etcd inventory,
//! whichever proxy (or cron job) changed it.
//!
//! Changes are debounced like consul-template's wait timers: HAProxy is
//! updated once changes have been quiet for `--quiet-period`, or `--max-wait` after
//! the first one, so a batch of changes costs one reload. After losing etcd
//! the watch resumes from the last revision it applied; while etcd cannot be
//! read nothing is installed, so HAProxy keeps its servers. SIGTERM and
//! SIGINT stop it between updates, never in the middle of one.

use std::time::Duration;

use anyhow::{Result, bail};
use serde_json::json;
use tokio::time::{Instant, sleep, sleep_until};

use super::{App, Report};
use crate::cli::WatchArgs;
use crate::haproxy::{self, Reload};
use crate::inventory::{EtcdInventory, InventoryChange, Store};
use crate::shutdown::Interrupted;

/// Longest pause between attempts to reach etcd again.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

pub async fn run(app: &App, args: &WatchArgs) -> Result<Report> {
    let Store::Etcd(etcd) = &app.store else {
        bail!(
            "watch follows an etcd inventory; set inventory_backend: etcd and etcd_endpoints in {}",
            app.config.path.display()
        );
    };
    let stopped = match keep_in_step(app, etcd, args).await {
        Err(err) => err,
        Ok(never) => match never {},
    };
    tracing::info!("{stopped}; HAProxy keeps the servers it has");
    Report::new(
        Vec::new(),
        json!({ "stopped_by": stopped.signal.to_string() }),
    )
}

/// Follows the inventory until a signal asks to stop.
async fn keep_in_step(
    app: &App,
    etcd: &EtcdInventory,
    args: &WatchArgs,
) -> Result<std::convert::Infallible, Interrupted> {
    let mut revision = sync(app, etcd).await?;
    let mut failures = 0;
    loop {
        match follow(app, etcd, args, &mut revision).await {
            Ok(()) => failures = 0,
            Err(err) => {
                let err = match err.downcast::<Interrupted>() {
                    Ok(stopped) => return Err(stopped),
                    Err(err) => err,
                };
                failures += 1;
                let pause = backoff(failures);
                tracing::warn!(
                    "lost the etcd inventory ({err:#}); trying again in {} from revision {revision}",
                    humantime::format_duration(pause)
                );
                pause_unless_stopped(app, pause).await?;
            }
        }
    }
}

/// Sleeps for `pause`, or less if a signal asks to stop.
async fn pause_unless_stopped(app: &App, pause: Duration) -> Result<(), Interrupted> {
    tokio::select! {
        stopped = app.shutdown.signalled() => Err(stopped),
        () = sleep(pause) => Ok(()),
    }
}

/// Watches from `revision` and applies each batch of changes, until the
/// watch ends (compaction, which resyncs) or fails (returned).
async fn follow(
    app: &App,
    etcd: &EtcdInventory,
    args: &WatchArgs,
    revision: &mut i64,
) -> Result<()> {
    let mut watch = etcd.watch(*revision).await?;
    tracing::info!("watching {} from revision {revision}", etcd.describe());
    loop {
        let next = tokio::select! {
            stopped = app.shutdown.signalled() => return Err(stopped.into()),
            next = watch.next() => next?,
        };
        if let InventoryChange::Compacted { compact_revision } = next {
            tracing::warn!(
                "etcd compacted its history to revision {compact_revision}; reading the inventory again"
            );
            *revision = sync(app, etcd).await?;
            return Ok(());
        }
        // Debounce: more changes may be on their way.
        let first = Instant::now();
        loop {
            let deadline = (Instant::now() + args.quiet_period).min(first + args.max_wait);
            tokio::select! {
                stopped = app.shutdown.signalled() => return Err(stopped.into()),
                next = watch.next() => match next? {
                    InventoryChange::Changed { .. } => continue,
                    InventoryChange::Compacted { .. } => break,
                },
                () = sleep_until(deadline) => break,
            }
        }
        *revision = sync(app, etcd).await?;
    }
}

/// Reads the inventory and updates HAProxy from it, trying until etcd
/// answers; returns the revision applied. An inventory that etcd really
/// holds empty empties HAProxy: that read is authoritative, not a failure.
/// A signal stops it between attempts, never during an update.
async fn sync(app: &App, etcd: &EtcdInventory) -> Result<i64, Interrupted> {
    let mut failures = 0;
    loop {
        match etcd.load_with_revision().await {
            Ok((entries, revision)) => {
                if let Err(err) =
                    haproxy::apply(&app.config, &entries, Reload::IfChanged, true).await
                {
                    tracing::error!("could not update HAProxy at revision {revision}: {err:#}");
                }
                return Ok(revision);
            }
            Err(err) => {
                failures += 1;
                let pause = backoff(failures);
                tracing::warn!(
                    "cannot read the etcd inventory ({err:#}); HAProxy keeps its servers; trying again in {}",
                    humantime::format_duration(pause)
                );
                pause_unless_stopped(app, pause).await?;
            }
        }
    }
}

/// 0.5 s, 1 s, 2 s, ... up to MAX_BACKOFF.
fn backoff(failures: u32) -> Duration {
    Duration::from_millis(500)
        .saturating_mul(1 << failures.saturating_sub(1).min(5))
        .min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_a_cap() {
        assert_eq!(backoff(1), Duration::from_millis(500));
        assert_eq!(backoff(2), Duration::from_secs(1));
        assert_eq!(backoff(20), MAX_BACKOFF);
    }
}
